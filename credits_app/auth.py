"""Who is calling and what they may do. Authentication lands in its own issue (JWT, roles);
until then every caller is the same anonymous actor and every permission is granted.
This is the single place it plugs in: views declare `@require("<permission>")` and record
`current_actor()`; nothing else in the code knows about tokens."""
from functools import wraps

ANONYMOUS = "anonymous"


def current_actor():
    """The subject recorded on ledger rows and used to scope Idempotency-Keys."""
    return ANONYMOUS


def require(permission):
    """Decorate a view: the caller must hold `permission` (e.g. "credits:deduct")."""
    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            return view(*args, **kwargs)
        wrapper.permission = permission
        return wrapper
    return decorate
