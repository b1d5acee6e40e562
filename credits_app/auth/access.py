"""Who is calling and what they may do.

Every /api view declares one permission with `@require("<permission>")`; a before_request
hook authenticates the bearer JWT and checks the permission against RULES, the single rule
table (the README shows it, tests/test_auth.py derives its role matrix from it). An /api
view without a permission is refused (fail closed). Views never look at tokens: they call
`current_actor()` for the subject recorded on ledger rows and scoping Idempotency-Keys."""
import functools
import re

from flask import current_app, g, request
from flask_jwt_extended import get_jwt, verify_jwt_in_request
from flask_jwt_extended.exceptions import JWTExtendedException, NoAuthorizationError, RevokedTokenError
from jwt import ExpiredSignatureError, PyJWTError

from . import claims as claim_rules, tokens
from ..exceptions import Forbidden, Unauthorized
from .roles import ROLES

# permission -> roles that hold it. `user` tokens only ever read their own user id; `support`
# tokens read any user's and change nothing.
RULES = {
    "users:create": {"admin", "service"},
    "users:read": {"admin", "service", "support"},
    "users:update": {"admin", "service"},
    "credits:read": {"admin", "service", "user", "support"},
    "credits:add": {"admin", "service"},
    "credits:deduct": {"admin", "service"},
    "credits:reset": {"admin"},  # + service when AUTH_SERVICE_CAN_RESET=true
    "credits:reverse": {"admin"},  # + service when AUTH_SERVICE_CAN_REVERSE=true
    "credits:alerts": {"admin", "service"},  # a user's low-balance threshold
    "holds:create": {"admin", "service"},
    "holds:capture": {"admin", "service"},
    "holds:release": {"admin", "service"},
    "holds:read": {"admin", "service", "user", "support"},  # a user's own holds (api/holds.py checks a hold's owner)
    "ledger:export": {"admin"},
    "grants:read": {"admin", "support"},
    "grants:run": {"admin"},
    "schema:read": {"admin"},
    "schema:apply": {"admin"},
    "tokens:issue": {"admin"},
    "tokens:revoke": {"admin"},
    "auth:whoami": {"admin", "service", "user", "support"},
    "webhooks:manage": {"admin"},
    "webhooks:read": {"admin", "support"},
    "events:read": {"admin", "service"},
    "queues:read": {"admin"},  # the job queues, their workers, the scheduler's entries, failed jobs
    "jobs:requeue": {"admin"},
}
SELF_SCOPED = {"credits:read", "holds:read", "auth:whoami"}  # what a `user` token may do, for its own id only


# permission -> the setting that grants it to `service` tokens too
SERVICE_SWITCHES = {"credits:reset": "AUTH_SERVICE_CAN_RESET", "credits:reverse": "AUTH_SERVICE_CAN_REVERSE"}


def roles_for(permission, config=None):
    """The roles that hold `permission` under `config` (the app's; None: the defaults)."""
    roles = set(RULES[permission])
    switch = SERVICE_SWITCHES.get(permission)
    if switch and config and config.get(switch):
        roles.add("service")
    return roles


def permissions_of(role, config=None):
    """The sorted permissions `role` holds under `config` (the app's; None: the defaults)."""
    return sorted(permission for permission in RULES if role in roles_for(permission, config))


def require(permission):
    """Mark a view as needing `permission`; enforced by `authenticate()` before the view runs
    (and before its body is parsed, so an anonymous caller learns nothing from a 422)."""
    if permission not in RULES:
        raise ValueError(f"unknown permission {permission!r}")

    def decorate(view):
        view.permission = permission
        return view
    return decorate


def current_actor():
    """The authenticated subject of this request."""
    return g.actor


def current_claims():
    return g.claims


def authenticate():
    """before_request for /api: 401 for any token problem, 403 for a role that may not."""
    # The objects behind the proxies, looked up once (docs/stock.md, 5).
    req, app = request._get_current_object(), current_app._get_current_object()
    if not req.path.startswith("/api/") or req.method == "OPTIONS":
        return  # Flask's automatic OPTIONS answer carries only `Allow` (and CORS preflights no token)
    view = app.view_functions.get(req.endpoint) if req.endpoint else None
    if view is None or req.routing_exception is not None:
        return  # 404/405 answer by themselves
    permission = getattr(view, "permission", None)
    if permission is None:
        raise Forbidden("this endpoint declares no permission")
    claims = _verified_claims(req, app)
    role = claims["role"]
    if role not in ROLES:
        raise Forbidden(f"unknown role {role!r}", role=role)
    # Known from here, also when the permission checks below refuse: the rate limiter counts
    # a refused request against its subject too.
    g.actor = claims["sub"]
    g.claims = claims
    # RULES first (the common case, no set built); roles_for adds what configuration grants.
    if role not in RULES[permission] and role not in roles_for(permission, app.config):
        raise Forbidden(f"role {role!r} may not {permission}", role=role, permission=permission)
    view_args = req.view_args or {}
    if role == "user" and "user_id" in view_args and view_args["user_id"] != claims["user_id"]:
        raise Forbidden("a user token may only read its own user", role=role)


def _verified_claims(req, app):
    name = app.config["JWT_HEADER_NAME"]
    authorization = req.headers.get(name)
    scheme = app.config["JWT_HEADER_TYPE"]
    if authorization and scheme and not authorization.startswith(scheme + " "):
        canonical = canonical_authorization(authorization, scheme)
        if canonical != authorization:
            # The seam: flask-jwt-extended compares the scheme case-sensitively and has no
            # setting for it, so a header that only spells it differently is rewritten in the
            # WSGI environ (which its request.headers reads) before it parses the header. The
            # verified-token cache is then keyed by that one spelling too.
            req.environ["HTTP_" + name.upper().replace("-", "_")] = authorization = canonical
    claims = tokens.recall(authorization)
    if claims is not None:  # verified before by the path below; only the clock and revocation can differ
        if tokens.is_revoked(claims["jti"]):
            raise Unauthorized("token_revoked", "the token has been revoked")
        return claims
    try:
        verify_jwt_in_request()
    except NoAuthorizationError:
        raise Unauthorized("missing_token", "send a bearer token: Authorization: Bearer <jwt>") from None
    except ExpiredSignatureError:
        raise Unauthorized("token_expired", "the token has expired") from None
    except RevokedTokenError:
        raise Unauthorized("token_revoked", "the token has been revoked") from None
    except (JWTExtendedException, PyJWTError, ValueError) as e:
        raise Unauthorized("invalid_token", "the token is not valid", reason=str(e)[:200]) from None
    claims = get_jwt()
    problem = claim_rules.problem(claims)
    if problem is not None:
        claim, message = problem
        raise Unauthorized("invalid_token", f"the token's {claim} claim {message}", claim=claim)
    tokens.remember(authorization, claims)
    return claims


# RFC 7235: the scheme is case-insensitive. Only a header holding exactly one credential in
# the plain form (the scheme, spaces or tabs, a token68) is recognised here; anything else
# is left for flask-jwt-extended to accept or refuse as it always has.
_CREDENTIALS = r"[ \t]*{scheme}[ \t]+([A-Za-z0-9._~+/-]+=*)[ \t]*"


@functools.lru_cache(maxsize=4)
def _credentials(scheme):
    return re.compile(_CREDENTIALS.format(scheme=re.escape(scheme)), re.IGNORECASE)


def canonical_authorization(authorization, scheme):
    """`<scheme> <token>` as configured for a header that holds one bearer credential with
    the scheme in any case; any other header unchanged."""
    match = _credentials(scheme).fullmatch(authorization)
    return f"{scheme} {match.group(1)}" if match else authorization


def init_app(app):
    app.before_request(authenticate)
