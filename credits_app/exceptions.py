"""Domain errors, raised by the core and turned into the JSON error shape by web/errors.py."""


class DomainError(Exception):
    status = 400
    code = "bad_request"
    headers = {}

    def __init__(self, message, **details):
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(DomainError):
    status, code = 404, "not_found"


class UserNotFound(NotFound):
    code = "user_not_found"

    def __init__(self, user_id):
        super().__init__(f"user {user_id} does not exist", user_id=user_id)


class MalformedJSON(DomainError):
    status, code = 400, "malformed_json"

    def __init__(self, reason):
        super().__init__("the request body is not valid JSON", reason=reason)


class UnsupportedMediaType(DomainError):
    status, code = 415, "unsupported_media_type"

    def __init__(self, content_type):
        super().__init__("send the body as application/json", content_type=content_type)


class EntryNotFound(NotFound):
    code = "entry_not_found"

    def __init__(self, user_id, entry_id):
        super().__init__(f"user {user_id} has no ledger entry {entry_id}", user_id=user_id, entry_id=entry_id)


class Unauthorized(DomainError):
    """No usable token (401); `code` says why: missing_token, invalid_token, token_expired..."""

    status, code = 401, "unauthorized"

    def __init__(self, code, message, **details):
        super().__init__(message, **details)
        self.code = code
        self.headers = {"WWW-Authenticate": f'Bearer error="{"invalid_request" if code == "missing_token" else "invalid_token"}"'}


class Forbidden(DomainError):
    status, code = 403, "forbidden"


class InvalidRequest(DomainError):
    status, code = 422, "validation_error"

    def __init__(self, message, field=None, **details):
        # `field` names the input at fault: details.fields says so, in the shape the schemas'
        # own 422s have ({"fields": {name: [message]}}), whichever layer refused it.
        if field is not None:
            details["fields"] = {field: [message]}
        super().__init__(message, **details)


class Conflict(DomainError):
    status, code = 409, "conflict"
    replayed = False  # true when an Idempotency-Key replays an earlier refusal


class InsufficientCredits(Conflict):
    """A debit larger than what is available: the balance less what open holds keep."""

    code = "insufficient_credits"

    def __init__(self, balance, requested, held=0):
        available = balance - held
        super().__init__(f"available {available} (balance {balance}, {held} held) is less than the requested "
                         f"{requested}" if held else f"balance {balance} is less than the requested {requested}",
                         balance=balance, held=held, available=available, requested=requested)


class BalanceLimitExceeded(Conflict):
    code = "balance_limit_exceeded"

    def __init__(self, balance, requested, max_balance):
        super().__init__(f"adding {requested} to {balance} would exceed the maximum balance {max_balance}",
                         balance=balance, requested=requested, max_balance=max_balance)


class ReversalExceedsRemaining(Conflict):
    code = "reversal_exceeds_remaining"

    def __init__(self, entry_id, remaining, requested):
        asked = "all that remains" if requested is None else requested
        super().__init__(f"entry {entry_id} has {remaining} left to reverse, less than the requested {asked}"
                         if remaining else f"entry {entry_id} has nothing left to reverse",
                         entry_id=entry_id, remaining=remaining, requested=requested)


class NotReversible(DomainError):
    status, code = 422, "not_reversible"

    def __init__(self, entry_id, kind):
        super().__init__(f"entry {entry_id} is a {kind}: a reversal is not reversed (add or deduct instead)",
                         entry_id=entry_id, kind=kind)


class HoldNotFound(NotFound):
    code = "hold_not_found"

    def __init__(self, hold_id):
        super().__init__(f"hold {hold_id} does not exist", hold_id=hold_id)


class HoldNotOpen(Conflict):
    """The hold was captured, released or has expired: it can no longer be captured or released."""

    code = "hold_not_open"

    def __init__(self, hold_id, status):
        super().__init__(f"hold {hold_id} is {status}, no longer open", hold_id=hold_id, status=status)
        if status == "expired":
            self.code = "hold_expired"


class CaptureExceedsHold(Conflict):
    code = "capture_exceeds_hold"

    def __init__(self, hold_id, amount, requested):
        super().__init__(f"hold {hold_id} holds {amount}, less than the requested {requested}",
                         hold_id=hold_id, amount=amount, requested=requested)


class EmailTaken(Conflict):
    code = "email_taken"

    def __init__(self, email):
        super().__init__("a user with this email already exists", email=email)


class ConstraintViolation(Conflict):
    code = "constraint_violation"

    def __init__(self, constraint):
        super().__init__(f"the change breaks the database rule {constraint or '(unnamed)'}", constraint=constraint)


class IdempotencyMismatch(DomainError):
    status, code = 422, "idempotency_key_reused"

    def __init__(self, key):
        super().__init__("this Idempotency-Key was already used for a different request", idempotency_key=key)


class IdempotencyKeyExpired(DomainError):
    status, code = 422, "idempotency_key_expired"

    def __init__(self, key):
        super().__init__("this Idempotency-Key took effect before and its record has expired; use a new key",
                         idempotency_key=key)
