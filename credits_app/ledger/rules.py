"""What a change may do, decided on the locked, newest balance (the package docstring has
the rules), and what the caller hears when it may not."""
import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app

from ..config import BIGINT_MAX
from ..exceptions import BalanceLimitExceeded, InsufficientCredits, InvalidRequest, UserNotFound
from ..types import utcnow


def check_user_id(user_id):
    # Ids outside BIGINT cannot exist; refusing them here keeps the driver from overflowing.
    if not isinstance(user_id, int) or isinstance(user_id, bool) or not 1 <= user_id <= BIGINT_MAX:
        raise UserNotFound(user_id)


def check_amount(amount):
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise InvalidRequest("amount must be an integer", field="amount")
    if amount <= 0:
        raise InvalidRequest("amount must be positive", field="amount", amount=amount)
    maximum = current_app.config["MAX_AMOUNT"]
    if amount > maximum:
        raise InvalidRequest(f"amount must be at most {maximum}", field="amount", maximum=maximum)


# An Idempotency-Key: visible ASCII (no space, CR/LF or NUL) except the comma, 1-255 long.
# Servers join repeated header fields with commas, so "a,b" may be two keys, and which one
# the caller meant cannot be known. The API and the CLI take keys by this one rule.
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x2b\x2d-\x7e]{1,255}$")


def request_hash(kind, user_id, amount, reason):
    return hashlib.sha256(repr((kind, user_id, amount, reason)).encode()).hexdigest()


@dataclass
class Op:
    kind: str
    user_id: int
    delta: int | None  # None for reset: the delta is minus the locked balance
    amount: int | None  # what the caller asked for (positive), for error details
    actor: str
    reason: str | None
    key: str | None
    request_hash: str | None
    max_balance: int


# What each kind checks, on the locked balance: a credit may not pass MAX_BALANCE, a debit may
# not go below zero, a reset always applies. The cap limits what an add may reach and nothing
# else, so lowering it below existing balances never blocks spending them.
# A debit spends what is available: the balance less what open holds keep (ledger/holds.py).
ALLOWED = {"add": "AND cur.credits + :delta <= :max_balance",
           "deduct": "AND cur.credits - cur.held + :delta >= 0", "reset": ""}


def allowed(kind, current, held, delta, max_balance):
    """ALLOWED in Python, for SQLite, where BEGIN IMMEDIATE makes `current` the newest balance."""
    if kind == "add":
        return current + delta <= max_balance
    if kind == "deduct":
        return current - held + delta >= 0
    return True


def refusal(op, current_balance, held=0):
    """The refusal of `op`, reporting the balance (and what was held) the decision was made on."""
    if op.kind == "deduct":
        return InsufficientCredits(current_balance, op.amount, held or 0)
    return BalanceLimitExceeded(current_balance, op.amount, op.max_balance)


# The time rule: an entry's time is the clock when its balance row is written, under the
# row's lock, and at least a microsecond after the user's previous change (the balance row's
# last_updated). So within a user, entry order and time order agree and no two entries share
# a time, which is what makes "the balance as of T" (the last entry at or before T) exact.
# PostgreSQL reads its own clock, one clock for every web and worker host; SQLite is
# in-process and BEGIN IMMEDIATE holds the lock, so the process's clock serves.
PG_ENTRY_TIME = "GREATEST(clock_timestamp(), {previous} + interval '1 microsecond')"
TICK = timedelta(microseconds=1)


def entry_time(previous):
    """PG_ENTRY_TIME for SQLite: now, or a microsecond after `previous` if the clock is not past it."""
    now = utcnow()
    return now if previous is None or now > previous else previous + TICK
