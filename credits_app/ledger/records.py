"""What the ledger hands out: an entry, the outcome of a change, a balance."""
from dataclasses import dataclass
from datetime import date, datetime

from ..types import UTCDateTime


UTC = UTCDateTime()  # also applied to rows read through the driver directly
# The entry's fields, in the API's and the export's order (new fields go at the end).
ENTRY_COLUMNS = ("id, user_id, kind, amount, balance_after, reason, actor, idempotency_key, grant_date, created_at, "
                 "reverses, hold_id")


@dataclass(frozen=True)
class Entry:
    id: int
    user_id: int
    kind: str
    amount: int
    balance_after: int
    reason: str | None
    actor: str
    idempotency_key: str | None
    grant_date: date | None
    created_at: datetime
    reverses: int | None = None  # a reversal's original entry
    hold_id: int | None = None  # a capture's hold


@dataclass(frozen=True)
class Change:
    """The outcome of a balance change. `replayed` is true when an Idempotency-Key matched
    an earlier request and the original outcome is returned unchanged."""

    entry: Entry
    replayed: bool = False

    @property
    def user_id(self):
        return self.entry.user_id

    @property
    def credits(self):
        return self.entry.balance_after

    @property
    def last_updated(self):
        return self.entry.created_at


@dataclass(frozen=True)
class Balance:
    user_id: int
    credits: int
    last_updated: datetime | None  # None for a seed-era user who never had a credits row
    held: int = 0  # open holds not yet past their time: available = credits - held

    @property
    def available(self):
        return self.credits - self.held


def iso(value):
    return None if value is None else value.isoformat()


def entry_json(e):
    """An entry as the API answers it (EntryOut documents it), written out: a schema's dump()
    walks the fields one by one on every answer."""
    return {"id": e.id, "user_id": e.user_id, "kind": e.kind, "amount": e.amount, "balance_after": e.balance_after,
            "reason": e.reason, "actor": e.actor, "idempotency_key": e.idempotency_key,
            "grant_date": iso(e.grant_date), "created_at": iso(e.created_at), "reverses": e.reverses,
            "hold_id": e.hold_id}


def entry_from_row(row):
    grant_date = row.grant_date
    if isinstance(grant_date, str):  # SQLite returns DATE as text from raw SQL
        grant_date = date.fromisoformat(grant_date)
    return Entry(row.id, row.user_id, row.kind, row.amount, row.balance_after, row.reason, row.actor,
                 row.idempotency_key, grant_date, UTC.process_result_value(row.created_at, None), row.reverses,
                 row.hold_id)
