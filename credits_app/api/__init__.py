"""One blueprint module per resource."""
from . import auth, credits, grants, ledger, users
from . import schema


def register(api):
    api.register_blueprint(users.blp)
    api.register_blueprint(credits.blp)
    api.register_blueprint(ledger.blp)
    api.register_blueprint(auth.blp)
    api.register_blueprint(grants.blp)
    api.register_blueprint(schema.blp)


def document_limits(api, config):
    """Publish limits that are configuration, not code, in the OpenAPI document."""
    amount = api.spec.components.schemas["AmountIn"]["properties"]["amount"]
    amount["maximum"] = config["MAX_AMOUNT"]
