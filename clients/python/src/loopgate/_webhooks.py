"""Webhook verification per Standard Webhooks (https://www.standardwebhooks.com)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Mapping, Optional, Union

from ._errors import WebhookVerificationError
from ._models import Event

#: How far a webhook's timestamp may be from now, in seconds (either way).
TOLERANCE = 5 * 60


def verify_webhook(
    payload: Union[bytes, str],
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance: int = TOLERANCE,
    now: Optional[float] = None,
) -> Event:
    """Check a webhook delivery and return its event.

    ``payload`` is the raw request body (bytes as received: not re-serialized JSON), ``headers``
    the request's headers (any capitalization), ``secret`` the endpoint's ``whsec_...`` secret.
    Raises ``WebhookVerificationError`` when a header is missing, no ``v1`` signature matches
    ``HMAC-SHA256(id.timestamp.body)``, or the timestamp is more than ``tolerance`` seconds
    (5 minutes) away from now, which stops replays of old deliveries. Deliveries are
    at-least-once: use ``webhook-id`` (the same on every retry) to drop duplicates.
    """
    body = payload.encode() if isinstance(payload, str) else bytes(payload)
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError(
            "missing webhook-id, webhook-timestamp or webhook-signature header"
        )
    try:
        ts = int(stamp)
    except ValueError:
        raise WebhookVerificationError(f"bad webhook-timestamp {stamp!r}") from None
    now = time.time() if now is None else now
    if ts < now - tolerance:
        raise WebhookVerificationError("the webhook's timestamp is too old (a replay?)")
    if ts > now + tolerance:
        raise WebhookVerificationError("the webhook's timestamp is in the future")

    key = _secret_bytes(secret)
    signed = f"{msg_id}.{ts}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for candidate in signatures.split():
        version, _, sig = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(sig, expected):
            break
    else:
        raise WebhookVerificationError("no valid signature: the body or headers were changed, or the secret is wrong")

    try:
        return Event.from_json(json.loads(body))
    except (ValueError, KeyError, TypeError) as e:
        raise WebhookVerificationError(f"the signed body is not a Loopgate event: {e}") from e


def _secret_bytes(secret: str) -> bytes:
    raw = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the secret is not whsec_ followed by base64") from None
