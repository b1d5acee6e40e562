"""Every error, whatever raised it, leaves as one JSON shape:
{"error": {"code", "message", "details"}, plus an X-Request-ID header}."""
import logging
import re

from flask import current_app, g, jsonify, request
from psycopg2 import errorcodes
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException, NotFound

from ..exceptions import DomainError
from .request_ids import new_request_id

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
    414: "uri_too_long", 415: "unsupported_media_type", 417: "expectation_failed", 422: "validation_error",
    429: "rate_limited", 431: "request_header_fields_too_large", 500: "internal_error", 501: "not_implemented",
    503: "service_unavailable",
}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def error_body(code, message, details=None):
    """The one error shape (also written by gunicorn.conf.py for what never reaches the app)."""
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_response(status, code, message, details=None, headers=None):
    response = jsonify(error_body(code, message, details))
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _domain(e):
    return error_response(e.status, e.code, e.message, e.details, e.headers)


def _http(e):
    data = getattr(e, "data", None) or {}
    details = {}
    message = e.description if isinstance(e.description, str) else HTTP_CODES.get(e.code, "error")
    if "messages" in data:  # webargs/marshmallow validation: {"json": {"field": [...]}} (one location)
        messages = data["messages"]
        location = next(iter(messages)) if isinstance(messages, dict) and len(messages) == 1 else None
        details = {"fields": messages[location] if location else messages}
        message = _INVALID.get(location, "the request is invalid") + _summary(details["fields"])
    if e.code == 404 and e is request.routing_exception:
        message, details = _no_route()
    elif e.code == 404 and e.description == NotFound.description:  # e.g. a static file that is not there
        message = f"not found: {_clip(request.method, 20)} {_clip(request.path, 100)}"
    headers = {}
    if e.code == 405 and getattr(e, "valid_methods", None):
        allowed = sorted(e.valid_methods)
        headers["Allow"] = ", ".join(allowed)
        message = (f"method {_clip(request.method, 20)} is not allowed on {_clip(request.path, 100)} "
                   f"(allowed: {headers['Allow']})")
        details = {"allowed": allowed}
    return error_response(e.code or 500, HTTP_CODES.get(e.code, "error"), message, details, headers)


def _no_route():
    """The message for a URL that matches no route: the method and path, and when the path
    has the shape of a route that takes this method but a parameter is of the wrong form,
    what that parameter must be. It tells what the route table (public in the OpenAPI
    document) tells, the same to every caller, and nothing about what exists."""
    message = f"no such endpoint: {_clip(request.method, 20)} {_clip(request.path, 100)}"
    for methods, shape, converters in _route_shapes(current_app):
        match = shape.fullmatch(request.path) if request.method in methods else None
        if match is None:
            continue
        for name, converter in converters.items():
            if not re.fullmatch(converter.regex, match[name]):
                expected = getattr(converter, "description", None)
                problem = f"{name} must be {expected}" if expected else f"{name} is not valid here"
                return f"{message} ({problem})", {"parameter": name}
    return message, {}


_PARAMETER = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


def _route_shapes(app):
    """Every route with parameters as (its methods, a pattern that takes any text without a
    slash for each parameter, {parameter: its converter class}). Built at the first 404,
    once every blueprint is registered."""
    shapes = app.extensions.get("credits.route_shapes")
    if shapes is None:
        shapes = []
        for rule in app.url_map.iter_rules():
            pattern, converters, end = "", {}, 0
            for parameter in _PARAMETER.finditer(rule.rule):
                pattern += re.escape(rule.rule[end:parameter.start()]) + f"(?P<{parameter[2]}>[^/]*)"
                converters[parameter[2]] = app.url_map.converters[parameter[1] or "default"]
                end = parameter.end()
            if converters:
                shapes.append((rule.methods or set(), re.compile(pattern + re.escape(rule.rule[end:])), converters))
        app.extensions["credits.route_shapes"] = shapes
    return shapes


def _clip(text, limit):
    """The caller's own text, echoed in a message: cut so that no input makes it long."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


_INVALID = {"json": "the request body is invalid", "query": "the query string is invalid"}
# A message names a few fields and counts the rest: details.fields has them all, and a body
# with thousands of unknown keys must not make a message of thousands of names.
_FIELDS_NAMED = 3


def _summary(fields):
    """": amount (must be ...), reason (not a valid string) and 2 more fields": the first
    problem of the first few fields, in the order the schema reports them."""
    if not isinstance(fields, dict) or not fields:
        return ""
    parts = []
    for name, problems in list(fields.items())[:_FIELDS_NAMED]:
        path, problem = _first_problem(problems)
        name = ".".join(str(p) for p in ([] if name == "_schema" else [name]) + path)
        parts.append(f"{_clip(name, 40)} ({problem})" if name else problem)
    more = len(fields) - len(parts)
    return ": " + ", ".join(parts) + (f" and {more} more field{'s' if more > 1 else ''}" if more else "")


def _first_problem(problems):
    """(the path inside a nested field, its first message, in lower case, without a full stop)."""
    path = []
    while isinstance(problems, dict) and problems:
        key, problems = next(iter(problems.items()))
        if key != "_schema":
            path.append(key)
    while isinstance(problems, (list, tuple)) and problems:
        problems = problems[0]
    text = _clip(str(problems).rstrip("."), 80)
    if text[:1].isupper() and not text[1:2].isupper():  # "Not a valid string", not "NUL ..."
        text = text[0].lower() + text[1:]
    return path, text


def _database_down(e):
    log.warning("database unavailable: %s", e)
    return error_response(503, "database_unavailable", "the database is unavailable; retry later")


# SQLSTATEs meaning the database cannot be reached or is going away: connection exceptions
# (class 08), shutdown, crash recovery and start-up (57P01-57P03), no connection slot left.
_UNREACHABLE = ("08", "57P01", "57P02", "57P03", "53300")
# A statement ran past statement_timeout (or was cancelled), or waited past lock_timeout.
_TIMEOUT = ("57014", "55P03")
# The server itself failed: out of resources (class 53), system error (58), internal error (XX).
_SERVER_FAILURE = ("53", "58", "XX")


def _database_error(e):
    """A database error, classified by its SQLSTATE. Only a database that cannot be reached
    is `database_unavailable`; a statement the database refuses (a constraint, a limit, bad
    data) is a 409 `database_refused` naming the SQLSTATE, because retrying the same
    request later will not help. In every case the request's transaction was rolled back."""
    code = getattr(e.orig, "pgcode", None)
    lost = e.connection_invalidated or (code is None and isinstance(e, (sa_exc.OperationalError,
                                                                          sa_exc.InterfaceError)))
    if lost or (code or "").startswith(_UNREACHABLE):
        return _database_down(e)
    details = {"sqlstate": code, "condition": _condition(code)}
    log.warning("database error %s on %s %s: %s", code, request.method, request.path, _primary(e))
    if code in _TIMEOUT:
        return error_response(503, "database_timeout", "the database did not answer in time (a statement or lock "
                              "timeout); nothing was changed, retry later", details)
    if code is not None and code.startswith("40"):
        return error_response(409, "database_conflict", "the request collided with a concurrent one (serialization "
                              "failure or deadlock); nothing was changed, retry it", details)
    if code is not None and code.startswith(_SERVER_FAILURE):
        return error_response(503, "database_failure", "the database failed to run this request; nothing was "
                              "changed, retry later", details)
    return error_response(409, "database_refused", "the database refused a statement this request needs; "
                          "nothing was changed", details)


def _condition(code):
    try:
        return errorcodes.lookup(code).lower()
    except KeyError:  # no SQLSTATE (SQLite) or one newer than the driver
        return None


def _primary(e):
    diag = getattr(e.orig, "diag", None)
    return getattr(diag, "message_primary", None) or str(e.orig).strip()


def _unexpected(e):
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal_error", "an unexpected error occurred; it has been logged")


def init_app(app):
    @app.before_request
    def _request_id():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else new_request_id()

    @app.after_request
    def _echo_request_id(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        return response

    app.register_error_handler(DomainError, _domain)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(sa_exc.DBAPIError, _database_error)
    app.register_error_handler(sa_exc.TimeoutError, _database_down)  # pool exhausted
    app.register_error_handler(Exception, _unexpected)
