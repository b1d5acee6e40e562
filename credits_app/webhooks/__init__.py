"""Webhooks: endpoints, and the delivery of events to them, signed as Standard Webhooks says.

Where things are:
- endpoints.py, urls.py: the receivers (URL, event types, secret and its rotation) and which
  URLs may receive; deliveries.py: deliveries as operators see them, retry and replay.
- dispatcher.py: the loop that claims due deliveries under a lease and sends each
  endpoint's batch on a thread of its own; delivery.py: one attempt (render, sign, POST,
  record, back off, dead letter); signing.py: the headers; prune.py: retention.
- worker/jobs.py runs `dispatch_webhooks` and `prune_events` on WEBHOOKS_QUEUE (never the
  grant's queue), in the worker process `python -m worker --queue webhooks`; worker/schedule.py
  registers their cron entries.

How delivery works: the outbox (credits_app/events) writes a pending delivery per subscribed
endpoint in the transaction of the event's cause. The delivery state (status, attempts,
next attempt, the attempts' history) lives in the database only, so a Redis flush loses
nothing: Redis carries the cron entries and the dispatcher job, which the scheduler puts
back. Every minute a dispatcher run claims due deliveries for about a minute and sends
them; a 2xx delivers, anything else is tried again with exponential backoff and jitter
until WEBHOOKS_MAX_ATTEMPTS, then kept as `dead`. Delivery is at least once: a worker that
dies mid-send leaves its claims due again when their lease ends, and every attempt at an
event carries the event's one id (`webhook-id`), so receivers de-duplicate by it. There is
no ordering promise: payloads name their ledger entry and the balance after it.
"""
