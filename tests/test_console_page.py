"""/console as files: the page and its assets are served with the console's security headers,
the page has nothing inline and loads only the console's own assets, and a missing asset is
the API's JSON 404. (tests/test_console_browser.py drives the page in a real browser.)"""
import os
import re
from html.parser import HTMLParser

import pytest

from credits_app.console import SECURITY_HEADERS, blp
from tests.conftest import make_app

STATIC = blp.static_folder
ASSETS = sorted(os.path.relpath(os.path.join(d, f), STATIC).replace(os.sep, "/")
                for d, _, files in os.walk(STATIC) for f in files)


@pytest.fixture
def app(sqlite_template, tmp_path):
    """The console is files only: one backend is enough."""
    return make_app(f"sqlite:///{sqlite_template}")


def assert_console_headers(response):
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.headers)


class Page(HTMLParser):
    """The tags and attributes of the page, and whatever text sits inside <script>/<style>."""

    def __init__(self):
        super().__init__()
        self.tags, self.inline, self._open = [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._open = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag):
        self._open = None

    def handle_data(self, data):
        if self._open and data.strip():
            self.inline.append((self._open, data))


def test_the_page_is_served_with_the_security_headers(client):
    response = client.get("/console")
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert_console_headers(response)
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_console_slash_redirects_to_the_page_without_an_html_body(client):
    response = client.get("/console/")
    assert response.status_code == 308 and response.headers["Location"] == "/console"
    assert response.data == b"" and "Content-Type" not in response.headers
    assert_console_headers(response)


@pytest.mark.parametrize("asset", ASSETS)
def test_every_asset_is_served_with_its_type_and_the_headers(client, asset):
    response = client.get(f"/console/static/{asset}")
    assert response.status_code == 200
    assert_console_headers(response)
    expected = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}[os.path.splitext(asset)[1]]
    assert response.mimetype == expected  # nosniff: a module script with another type would not run


def test_the_page_has_nothing_inline_and_loads_only_console_assets(client):
    page = Page()
    page.feed(client.get("/console").get_data(as_text=True))
    assert page.inline == []
    handlers = [(tag, name) for tag, attrs in page.tags for name in attrs if name.startswith("on")]
    assert handlers == []
    assert [tag for tag, attrs in page.tags if "style" in attrs] == []
    references = [attrs.get("src") or attrs.get("href") for tag, attrs in page.tags
                  if tag in ("script", "link", "img", "iframe")]
    assert references and all(ref.startswith("/console/static/") for ref in references), references
    for ref in references:
        assert client.get(ref).status_code == 200, ref


def test_scripts_import_only_console_modules_and_never_write_html():
    """Every module import is a relative path inside /console/static, and no script writes
    markup: API text reaches the page through textContent and createElement only."""
    scripts = [a for a in ASSETS if a.endswith(".js")]
    assert {"console.js", "api.js"} <= set(scripts)
    for name in scripts:
        with open(os.path.join(STATIC, name)) as f:
            source = f.read()
        for module in re.findall(r"""^import .* from "([^"]+)";$""", source, re.M):
            assert module.startswith("./") or module.startswith("../"), (name, module)
            assert os.path.normpath(os.path.join(os.path.dirname(name), module)) in scripts, (name, module)
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in source, (name, sink)


@pytest.mark.parametrize("path", ["/console/static/nope.js", "/console/static/../__init__.py", "/console/nope"])
def test_an_unknown_console_path_is_a_json_404_with_the_headers(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.is_json and response.get_json()["error"]["code"] == "not_found"
    assert b"<" not in response.data and b"Traceback" not in response.data
    assert_console_headers(response)


def test_the_console_headers_stay_off_the_api_and_the_docs(client):
    for path in ("/docs", "/api/auth/whoami", "/healthz"):
        response = client.get(path)
        assert "Content-Security-Policy" not in response.headers, path
