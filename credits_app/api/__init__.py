"""One blueprint module per resource."""
from . import auth, credits, events, grants, holds, ledger, queues, users, webhooks
from . import schema
from .webhook_schemas import document_events


def register(api):
    api.register_blueprint(users.blp)
    api.register_blueprint(credits.blp)
    api.register_blueprint(holds.blp)
    api.register_blueprint(ledger.blp)
    api.register_blueprint(auth.blp)
    api.register_blueprint(grants.blp)
    api.register_blueprint(schema.blp)
    api.register_blueprint(webhooks.blp)
    api.register_blueprint(events.blp)
    api.register_blueprint(queues.blp)
    document_events(api.spec)


def document_limits(api, config):
    """Publish limits that are configuration, not code, in the OpenAPI document."""
    amount = api.spec.components.schemas["AmountIn"]["properties"]["amount"]
    amount["maximum"] = config["MAX_AMOUNT"]
    hold = api.spec.components.schemas["HoldIn"]["properties"]
    hold["amount"]["maximum"] = config["MAX_AMOUNT"]
    hold["ttl_seconds"]["maximum"] = config["HOLD_MAX_TTL_SECONDS"]
