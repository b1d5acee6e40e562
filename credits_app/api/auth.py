"""/api/auth: who am I, and token revocation."""
from flask import current_app
from marshmallow import Schema, fields, validate

from ..auth import tokens
from ..auth.access import ROLES, current_actor, current_claims, permissions_of, require
from ..auth.claims import JTI_MAX, SUBJECT_MAX
from .common import Blueprint
from .schemas import NO_NUL, ErrorOut, StrictInteger

blp = Blueprint("auth", __name__, url_prefix="/api/auth", description="Tokens: inspect and revoke")


class IssueIn(Schema):
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    sub = fields.String(required=True, validate=[validate.Length(min=1, max=SUBJECT_MAX), NO_NUL])
    user_id = StrictInteger(allow_none=True, validate=validate.Range(min=1, max=2**63 - 1))
    ttl_seconds = StrictInteger(load_default=None, validate=validate.Range(min=tokens.MIN_TTL, max=tokens.MAX_TTL))


class IssueOut(Schema):
    token = fields.String()
    jti = fields.String()
    role = fields.String()
    sub = fields.String()
    user_id = fields.Integer(allow_none=True)
    expires_at = fields.Integer(metadata={"description": "unix time"})


class RevokeIn(Schema):
    jti = fields.String(required=True, validate=[validate.Length(min=1, max=JTI_MAX), NO_NUL])
    reason = fields.String(allow_none=True, validate=[validate.Length(max=500), NO_NUL])
    expires_at = StrictInteger(
        load_default=None, allow_none=True, validate=validate.Range(min=0, max=tokens.MAX_EXPIRES_AT),
        metadata={"description": "the token's exp (unix time), if known: the revocation is purged once the token "
                                 "has expired; without it, after the longest lifetime of a token issued here"})


class RevokeOut(Schema):
    jti = fields.String()
    revoked = fields.Boolean()
    already_revoked = fields.Boolean()


class WhoAmIOut(Schema):
    sub = fields.String()
    role = fields.String()
    user_id = fields.Integer(allow_none=True)
    jti = fields.String()
    iat = fields.Integer(metadata={"description": "issued at (unix time); absent when the token has no iat"})
    exp = fields.Integer(metadata={"description": "expires at (unix time)"})
    permissions = fields.List(fields.String(), metadata={
        "description": "the permissions the token's role holds under this service's configuration, sorted (a user "
                       "token's reads are of its own user only)"})


@blp.route("/whoami", methods=["GET"])
@require("auth:whoami")
@blp.response(200, WhoAmIOut)
def whoami():
    """The claims of the calling token, and what its role may do here: a client can hide
    what the role lacks (the API decides every request all the same)."""
    claims = current_claims()
    return {**claims, "permissions": permissions_of(claims["role"], current_app.config)}


@blp.route("/tokens", methods=["POST"])
@require("tokens:issue")
@blp.arguments(IssueIn())
@blp.response(201, IssueOut)
@blp.alt_response(422, schema=ErrorOut)
def issue(body):
    """Mint a token (HS256), as `flask auth issue-token` does. Revoke it by its jti."""
    token, claims = tokens.issue(body["role"], body["sub"], user_id=body.get("user_id"),
                                 ttl_seconds=body["ttl_seconds"])
    return {"token": token, "jti": claims["jti"], "role": claims["role"], "sub": claims["sub"],
            "user_id": claims.get("user_id"), "expires_at": claims["exp"]}


@blp.route("/revoke", methods=["POST"])
@require("tokens:revoke")
@blp.arguments(RevokeIn())
@blp.response(200, RevokeOut)
def revoke(body):
    """Revoke a token by its jti; it is refused from then on (see REVOCATION_CACHE_SECONDS)."""
    fresh = tokens.revoke(body["jti"], actor=current_actor(), reason=body.get("reason"), expires_at=body["expires_at"])
    return {"jti": body["jti"], "revoked": True, "already_revoked": not fresh}
