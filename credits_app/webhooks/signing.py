"""Standard Webhooks headers; the `standardwebhooks` package computes every signature.

What is signed is `<webhook-id>.<webhook-timestamp>.<body>`. The id is the event's, the same
on every attempt and every replay, so a receiver can drop what it already has; the
timestamp is the send's, because receivers refuse one older than their tolerance (five
minutes in the reference library), so each attempt is signed afresh. While a rotated
endpoint's previous secret is within its overlap, the header carries one signature by each
secret, so a receiver that holds either one verifies.
"""
from datetime import timezone

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

USER_AGENT = "credits-webhooks/1 (Standard Webhooks)"


def secrets_in_force(secret, previous_secret, previous_secret_until, now):
    """The secrets that sign at `now`: the current one, then the previous one until its end."""
    if previous_secret and previous_secret_until is not None and previous_secret_until > now:
        return [secret, previous_secret]
    return [secret]


def headers(msg_id, body, secrets, at):
    """The request headers for `body` (str, the exact bytes sent once encoded as UTF-8),
    sent at `at` (an aware datetime) and signed by each of `secrets` ("whsec_..." strings).
    Raises ValueError for an empty or malformed secret."""
    at = at.astimezone(timezone.utc).replace(microsecond=0)  # the header has whole seconds
    try:
        signatures = " ".join(Webhook(secret).sign(msg_id, at, body) for secret in secrets)
    except (EmptyWebhookSecretError, RuntimeError, ValueError) as e:  # binascii.Error is a ValueError
        raise ValueError(f"endpoint secret unusable: {type(e).__name__}") from None
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
