"""credits: a credit-management service. `create_app()` is the only way to build the app."""
import os

from . import config, console
from .auth import access, tokens
from .extensions import configure_sqlite, db, migrate, openapi, ping_idle_connections
from .ledger import thread_connections
from .web import errors, health, logs, metrics, rate_limit
from .web.framework import CreditsFlask


def create_app(env=None):
    """Build the app from `env` (default: os.environ). Connects to nothing."""
    env = os.environ if env is None else env
    app = CreditsFlask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.update(config.load(env, app.instance_path))

    db.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(app.root_path), "migrations"))
    with app.app_context():
        if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
            configure_sqlite(db.engine)
        else:
            ping_idle_connections(db.engine, app.config["DB_PING_IDLE_SECONDS"])
            thread_connections.watch(db.engine)
    openapi.init_app(app)
    errors.init_app(app)  # after the Api, whose own HTTP error handler it replaces
    logs.init_app(app)
    metrics.init_app(app)  # before auth, so refused requests are counted and timed too
    health.init_app(app)
    console.init_app(app)  # /console: a page over the same JSON API, under its own CSP
    tokens.init_app(app)
    access.init_app(app)  # before the limiter: limits are counted per authenticated subject
    rate_limit.init_app(app)

    from .api import document_limits, register
    register(openapi)
    document_limits(openapi, app.config)

    from . import cli
    cli.init_app(app)  # every `flask` command group
    return app
