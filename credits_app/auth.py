"""Who is calling. Authentication lands in its own issue (JWT, roles); until then every
caller is the same anonymous actor. This is the single place it will plug in: views ask
`current_actor()` and nothing else."""

ANONYMOUS = "anonymous"


def current_actor():
    """The subject recorded on ledger rows and used to scope Idempotency-Keys."""
    return ANONYMOUS
