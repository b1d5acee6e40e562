"""Fixtures: every API test runs twice, on SQLite (the embedded default) and on a real
throwaway PostgreSQL cluster started here. Each test gets its own database, cloned from
a template that the real migrations built."""
import itertools
import os
import shutil
import tempfile
import threading

import pytest
from flask.testing import FlaskClient
from flask_migrate import upgrade
from werkzeug.serving import make_server

from credits_app import create_app
from credits_app.auth import tokens
from credits_app.extensions import db
from tests import services
from tests.services import Postgres

_names = itertools.count()

# Fixtures for Redis and RQ processes live in their own plugin module.
pytest_plugins = ["tests.redis_fixtures", "tests.chaos_fixtures"]


TEST_SECRET = "test-only-secret-key-of-sufficient-length-0123456789"


def make_app(url, **env):
    base = {"DATABASE_URL": url, "TESTING": "true", "JWT_SECRET_KEY": TEST_SECRET, "RATELIMIT_ENABLED": "false"}
    return create_app({**base, **env})


def token_for(app, role="admin", sub=None, user_id=None, ttl_seconds=None):
    with app.app_context():
        return tokens.issue(role, sub or f"test-{role}", user_id=user_id, ttl_seconds=ttl_seconds,
                            user_must_exist=False)[0]


class TokenClient(FlaskClient):
    """A test client that sends `self.token` as a bearer token unless the call sets its own
    Authorization header."""

    token = None

    def open(self, *args, **kwargs):
        if self.token:
            headers = dict(kwargs.pop("headers", None) or {})
            headers.setdefault("Authorization", f"Bearer {self.token}")
            kwargs["headers"] = headers
        return super().open(*args, **kwargs)


def client_as(app, role="admin", **kwargs):
    app.test_client_class = TokenClient
    client = app.test_client()
    client.token = token_for(app, role, **kwargs)
    return client


def _migrate(url):
    app = make_app(url)
    with app.app_context():
        upgrade()
        db.engine.dispose()


def pytest_configure(config):
    """A private TMPDIR for this run, inherited by every server and process it starts: what a
    test looks for in the temp dir (a benchmark's leftovers) is then this run's alone, never
    another process's on the same machine. Readable by all, so that the PostgreSQL cluster,
    run as the `postgres` OS user under root, can reach its own directory inside it."""
    private = tempfile.mkdtemp(prefix="credits-tests-")
    os.chmod(private, 0o755)
    config._credits_tmpdir = private
    os.environ["TMPDIR"] = tempfile.tempdir = private


def pytest_unconfigure(config):
    private = getattr(config, "_credits_tmpdir", None)
    if private:
        shutil.rmtree(private, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _web_logs_in_pytest_temp(tmp_path_factory):
    services.WEB_LOG_DIR = str(tmp_path_factory.mktemp("web-logs"))


@pytest.fixture(scope="session")
def pg_server():
    server = Postgres().start()
    server.createdb("template_credits")
    _migrate(server.url("template_credits"))
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    _migrate(f"sqlite:///{path}")
    return path


def _fresh_url(backend, request, tmp_path):
    if backend == "sqlite":
        path = tmp_path / "credits.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    server = request.getfixturevalue("pg_server")
    name = f"t{os.getpid()}_{next(_names)}"
    server.psql("postgres", f"CREATE DATABASE {name} TEMPLATE template_credits")
    return server.url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    return request.param


@pytest.fixture
def app_env():
    """Extra environment for the app under test; override in a module to change config."""
    return {}


@pytest.fixture
def app(backend, request, tmp_path, app_env):
    app = make_app(_fresh_url(backend, request, tmp_path), **app_env)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def pg_app(request, tmp_path, app_env):
    """PostgreSQL only: for concurrency and SQL-specific tests."""
    app = make_app(_fresh_url("postgresql", request, tmp_path), **app_env)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    """An admin client: every route is allowed, so tests focus on behaviour."""
    return client_as(app, "admin")


@pytest.fixture
def anon(app):
    """A client with no token at all."""
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield


class LiveServer:
    """A real threaded HTTP server around the app, for tests that need true concurrency."""

    def __init__(self, app, token=None):
        self.token = token
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()


def new_user(client, email="ann@example.com", name="Ann"):
    response = client.post("/api/users", json={"email": email, "name": name})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["user_id"]
