"""Events: what happened, written in the transaction of its cause, for webhooks and polling.

Two sources, one vocabulary (catalog.py):
- a `credits.changed` event IS its ledger entry (kinds add, deduct, reset, reversal,
  capture), id `evt_entry_<entry id>`: the ledger already is an append-only log written in
  the change's transaction with stable ids, so a second row per change would only copy it;
- every other type is a row of `events` (hold.*, balance.*, grant.run.completed,
  schema.applied), id `evt_<id>`, written by the statement or transaction of its cause.

A delivery (webhook_deliveries) is written in the same transaction for each enabled endpoint
subscribed to the event's type (outbox.py), and holds the delivery state; the webhooks
package delivers it. No change without its event and no event without its change: they
commit together or not at all. Events carry no ordering promise; a payload names its entry
and the balance after it.
"""
from .catalog import CHANGE_KINDS, EVENT_TYPES, event_id, parse_event_id, render

__all__ = ["CHANGE_KINDS", "EVENT_TYPES", "event_id", "parse_event_id", "render"]
