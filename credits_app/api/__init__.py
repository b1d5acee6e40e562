"""One blueprint module per resource."""
from . import auth, credits, grants, users
from . import schema


def register(api):
    api.register_blueprint(users.blp)
    api.register_blueprint(credits.blp)
    api.register_blueprint(auth.blp)
    api.register_blueprint(grants.blp)
    api.register_blueprint(schema.blp)
