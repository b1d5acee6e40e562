"""Low-balance alerts: where a user's available balance stands against their threshold, kept
on the balance row (`credits.alert_state`) and moved by the statement or transaction that
changes the balance, under its lock.

States, for the available balance A (credits - held) and the threshold T (the user's own,
else the LOW_BALANCE_THRESHOLD setting): `depleted` when A = 0, `low` when 0 < A < T, `ok`
when A >= T; NULL when T = 0 (alerts off).

Events fire when the STORED state moves, so each crossing fires once, whatever the order
of concurrent changes (each decides on the locked row):
- ok -> low or depleted: balance.low
- ok or low -> depleted: balance.depleted (with balance.low when it came from ok)
- low or depleted -> ok: balance.recovered
- from NULL, nothing: the first change after alerts are turned on for a user (or after
  their threshold is set) records where the balance stands and announces nothing.
The daily grant moves states only for the users it lifts to `ok` (grant.py).
"""
from flask import current_app
from sqlalchemy import text

from ..config import BIGINT_MAX
from ..events import outbox
from ..exceptions import InvalidRequest
from ..extensions import db
from .rules import check_user_id

STATES = ("ok", "low", "depleted")
FIRES = (("balance.low", ("ok",), ("low", "depleted")),
         ("balance.depleted", ("ok", "low"), ("depleted",)),
         ("balance.recovered", ("low", "depleted"), ("ok",)))


def default_threshold():
    return current_app.config["LOW_BALANCE_THRESHOLD"]


def state(available, threshold):
    if threshold <= 0:
        return None
    if available <= 0:
        return "depleted"
    return "low" if available < threshold else "ok"


def fired(old, new):
    """The event types a move of the stored state from `old` to `new` fires, in that order."""
    return [event for event, before, after in FIRES if old in before and new in after]


def event_data(user_id, credits, held, threshold, *, entry_id=None, hold_id=None):
    return {"user_id": user_id, "credits": credits, "held": held, "available": credits - held,
            "threshold": threshold, "entry_id": entry_id, "hold_id": hold_id}


_STATE = text("SELECT alert_state, low_balance_threshold FROM credits WHERE user_id = :uid")
_SET_STATE = text("UPDATE credits SET alert_state = :state WHERE user_id = :uid")


def record(conn, user_id, credits, held, *, at, entry_id=None, hold_id=None):
    """Move the user's stored state for their new balance (`credits`, `held`) and write the
    events it fires. For the transactions that change a balance in several statements, under
    the balance row's lock (taken earlier in the transaction), so the state read here is the
    newest; PostgreSQL's one-statement change does the same in SQL (pg_state, pg_fired)."""
    row = conn.execute(_STATE, {"uid": user_id}).one()
    threshold = effective(row.low_balance_threshold)
    new = state(credits - held, threshold)
    if new == row.alert_state:
        return
    conn.execute(_SET_STATE, {"uid": user_id, "state": new})
    for event in fired(row.alert_state, new):
        outbox.emit(conn, event, event_data(user_id, credits, held, threshold, entry_id=entry_id, hold_id=hold_id),
                    at=at, user_id=user_id)


def effective(own_threshold):
    return default_threshold() if own_threshold is None else own_threshold


# ---- PostgreSQL: the same rule in SQL, for the one-statement change ------------------------

def pg_state(available, threshold):
    """state() as an SQL expression of two SQL expressions."""
    return (f"CASE WHEN {threshold} <= 0 THEN NULL WHEN {available} <= 0 THEN 'depleted' "
            f"WHEN {available} < {threshold} THEN 'low' ELSE 'ok' END")


def _in(column, states):
    return f"{column} IN ({', '.join(repr(s) for s in states)})"


def pg_fired(old, new):
    """fired() as rows: a VALUES list of (event_type, fires) for the old and new state columns."""
    return "(VALUES " + ", ".join(f"('{event}', {_in(old, before)} AND {_in(new, after)})"
                                  for event, before, after in FIRES) + ") AS fired (event_type, fires)"


# ---- a user's threshold ---------------------------------------------------------------------

_OWN = text("SELECT low_balance_threshold, alert_state FROM credits WHERE user_id = :uid")
_LOCKED = {"postgresql": text("SELECT credits, held FROM credits WHERE user_id = :uid FOR UPDATE"),
           "sqlite": text("SELECT credits, held FROM credits WHERE user_id = :uid")}
_SET_OWN = text("UPDATE credits SET low_balance_threshold = :own, alert_state = :state WHERE user_id = :uid")


def settings(user_id):
    """A user's alert settings: {user_id, low_balance_threshold (their own, or None),
    threshold (the one in force), alert_state, available}. Raises UserNotFound."""
    from . import reads

    available = reads.balance(user_id).available
    with db.engine.connect() as conn:
        row = conn.execute(_OWN, {"uid": user_id}).first()
    own, current = (row.low_balance_threshold, row.alert_state) if row else (None, None)
    return _settings(user_id, own, current, available)


def set_threshold(user_id, threshold):
    """Set the user's own threshold (None: the LOW_BALANCE_THRESHOLD setting's again) and
    return settings(). A new threshold is not a balance change: the stored state is set for
    it silently, under the row's lock, and later changes fire from there. Raises
    UserNotFound, InvalidRequest."""
    from . import changes, holds  # both write alerts through this module

    check_user_id(user_id)
    if threshold is not None and (not isinstance(threshold, int) or isinstance(threshold, bool)
                                  or not 0 <= threshold <= BIGINT_MAX):
        raise InvalidRequest(f"low_balance_threshold must be null or an integer from 0 to {BIGINT_MAX}",
                             field="low_balance_threshold")
    engine = db.engine
    for _ in range(2):
        with engine.begin() as conn:
            row = conn.execute(_LOCKED[conn.dialect.name], {"uid": user_id}).first()
            if row is not None:
                if row.held and holds.expire_overdue(conn, user_id):  # past their time, they no longer count
                    row = conn.execute(_LOCKED[conn.dialect.name], {"uid": user_id}).one()
                current = state(row.credits - row.held, effective(threshold))
                conn.execute(_SET_OWN, {"uid": user_id, "own": threshold, "state": current})
                return _settings(user_id, threshold, current, row.credits - row.held)
        changes.ensure_credits_row(user_id)  # raises UserNotFound
    raise RuntimeError("credits row for user %s vanished" % user_id)


def _settings(user_id, own, current, available):
    return {"user_id": user_id, "low_balance_threshold": own, "threshold": effective(own), "alert_state": current,
            "available": available}
