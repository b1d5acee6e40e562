"""/api/auth: who am I, and token revocation."""
from marshmallow import Schema, fields, validate

from .. import tokens
from ..auth import current_actor, current_claims, require
from .common import Blueprint

blp = Blueprint("auth", __name__, url_prefix="/api/auth", description="Tokens: inspect and revoke")


class RevokeIn(Schema):
    jti = fields.String(required=True, validate=validate.Length(min=1, max=128))
    reason = fields.String(allow_none=True, validate=validate.Length(max=500))


class RevokeOut(Schema):
    jti = fields.String()
    revoked = fields.Boolean()
    already_revoked = fields.Boolean()


class WhoAmIOut(Schema):
    sub = fields.String()
    role = fields.String()
    user_id = fields.Integer(allow_none=True)
    jti = fields.String()
    exp = fields.Integer()


@blp.route("/whoami", methods=["GET"])
@require("auth:whoami")
@blp.response(200, WhoAmIOut)
def whoami():
    """The claims of the calling token."""
    return current_claims()


@blp.route("/revoke", methods=["POST"])
@require("tokens:revoke")
@blp.arguments(RevokeIn)
@blp.response(200, RevokeOut)
def revoke(body):
    """Revoke a token by its jti; it is refused from then on (see REVOCATION_CACHE_SECONDS)."""
    fresh = tokens.revoke(body["jti"], actor=current_actor(), reason=body.get("reason"))
    return {"jti": body["jti"], "revoked": True, "already_revoked": not fresh}
