"""Pruning: what delivery keeps is kept for EVENTS_RETENTION_DAYS, then deleted.

Deleted: deliveries that are delivered or dead (with their attempts, by cascade) created
before the retention window, then `events` rows from before it that no pending delivery
still needs (their finished deliveries go with them, by cascade). A pending delivery and
its event are kept whatever their age: it is still owed. Ledger entries are never deleted;
a credits.changed event stays readable for as long as its entry exists.

Each statement deletes at most BATCH rows in its own short transaction, so pruning a large
backlog never holds locks for long and writers go on between batches.
"""
import functools

from ..extensions import db
from .delivery import clock, sql

BATCH = 5000
# The start of the retention window: {later} is the database's clock plus :delay seconds.
_CUTOFF = "{later}"


@functools.cache
def _statements(dialect):
    return {
        "deliveries": sql(dialect, (
            "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries "
            "WHERE created_at < " + _CUTOFF + " AND status IN ('delivered', 'dead') LIMIT :batch)")),
        "events": sql(dialect, (
            "DELETE FROM events WHERE id IN (SELECT ev.id FROM events ev WHERE ev.created_at < " + _CUTOFF + " "
            "AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = ev.id AND d.status = 'pending') "
            "ORDER BY ev.created_at, ev.id LIMIT :batch)")),
    }


def prune(retention_days, batch=BATCH):
    """Delete what is older than `retention_days` (see the module docstring). Returns
    {"deliveries": n, "events": m}: the rows deleted, not counting those gone by cascade."""
    engine = db.engine
    counts = {}
    for what in ("deliveries", "events"):
        statement = _statements(engine.dialect.name)[what]
        counts[what] = 0
        while True:
            with engine.begin() as conn:
                deleted = conn.execute(statement, {"batch": batch, **clock(-retention_days * 86400)}).rowcount
            counts[what] += deleted
            if deleted < batch:
                break
    return counts
