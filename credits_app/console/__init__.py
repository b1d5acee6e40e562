"""/console: the operator console, one HTML page and its own scripts and styles.

The page is a client of the JSON API and nothing else: it holds no server-side session and
renders no data, so every read and change goes through the API's authentication, rule table,
rate limits and Idempotency-Keys. Its responses carry a Content-Security-Policy that allows
only this origin's files (no inline script or style, no framing), so text from the API (a
ledger reason is user input) can never run as code even if a view mishandled it."""
import os

from flask import Blueprint, Response, request, send_from_directory

blp = Blueprint("console", __name__, url_prefix="/console", static_folder="static", static_url_path="/static")

PAGE_DIR = os.path.join(os.path.dirname(__file__), "page")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@blp.route("", methods=["GET"])
def page():
    """The console's one page; the views are client-side (hash routes)."""
    return send_from_directory(PAGE_DIR, "console.html", mimetype="text/html", max_age=0)


@blp.route("/", methods=["GET"])
def page_with_slash():
    # Without werkzeug's redirect page: the service answers no request with an HTML error or
    # notice, only the console page itself.
    response = Response(status=308, headers={"Location": "/console"})
    del response.headers["Content-Type"]
    return response


def is_console_path(path):
    return path == "/console" or path.startswith("/console/")


@blp.after_app_request
def _security_headers(response):
    # On every answer under /console (a 404 for an unknown asset too), and nowhere else:
    # /docs and /api keep their own headers.
    if is_console_path(request.path):
        response.headers.update(SECURITY_HEADERS)
    return response


def init_app(app):
    app.register_blueprint(blp)
