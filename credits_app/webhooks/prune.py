"""Pruning: what delivery keeps is kept for EVENTS_RETENTION_DAYS, then deleted.

Deleted: deliveries created before the retention window (with their attempts, by cascade),
then `events` rows from before it. A delivery still pending then is given up and counted
as `undelivered` (logged): retries end after about a day and a half, so only an endpoint
that stayed disabled or kept failing keeps one that long, and keeping it would let an
abandoned endpoint grow the table without bound; a replay cannot reach back past the window
either. Ledger entries are never deleted; a credits.changed event stays readable for as
long as its entry exists.

Each statement deletes at most BATCH rows in its own short transaction, so pruning a large
backlog never holds locks for long and writers go on between batches.
"""
import functools
import logging

from ..extensions import db
from .delivery import clock, sql

log = logging.getLogger("credits.webhooks")

BATCH = 5000
# The start of the retention window: {later} is the database's clock plus :delay seconds.
_CUTOFF = "{later}"


@functools.cache
def _statements(dialect):
    old_deliveries = ("DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries "
                      "WHERE created_at < " + _CUTOFF + " AND status {status} LIMIT :batch)")
    return {
        "deliveries": sql(dialect, old_deliveries.replace("{status}", "IN ('delivered', 'dead')")),
        "undelivered": sql(dialect, old_deliveries.replace("{status}", "= 'pending'")),
        "events": sql(dialect, (
            "DELETE FROM events WHERE id IN (SELECT ev.id FROM events ev WHERE ev.created_at < " + _CUTOFF + " "
            "ORDER BY ev.created_at, ev.id LIMIT :batch)")),
    }


def prune(retention_days, batch=BATCH):
    """Delete what is older than `retention_days` (see the module docstring). Returns
    {"deliveries": n, "undelivered": u, "events": m}: the rows deleted, not counting those
    gone by cascade."""
    engine = db.engine
    counts = {}
    for what in ("deliveries", "undelivered", "events"):
        statement = _statements(engine.dialect.name)[what]
        counts[what] = 0
        while True:
            with engine.begin() as conn:
                deleted = conn.execute(statement, {"batch": batch, **clock(-retention_days * 86400)}).rowcount
            counts[what] += deleted
            if deleted < batch:
                break
    if counts["undelivered"]:
        log.warning("gave up %d webhook deliveries not delivered within %d days", counts["undelivered"],
                    retention_days)
    return counts
