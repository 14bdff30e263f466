"""``verify_webhook``: a real delivery from Loopgate, and signatures computed here independently
(HMAC-SHA256 of ``id.timestamp.body`` with the base64-decoded secret, per Standard Webhooks)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Tuple

import httpx
import pytest

from loopgate import Event, WebhookVerificationError, verify_webhook

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()


def sign(secret: str, msg_id: str, ts: int, body: bytes) -> str:
    key = base64.b64decode(secret[len("whsec_"):])
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


BODY = json.dumps(
    {"seq": 7, "workspace": "default", "at": "2026-01-01T00:00:00.000Z", "actor": "agent:bot",
     "type": "action.created", "subject": "action:1", "data": {"name": "issue_refund"},
     "prev_hash": "0" * 64, "hash": "f" * 64}
).encode()


def headers(ts: int, signature: str, msg_id: str = "msg_1") -> Dict[str, str]:
    return {"Webhook-Id": msg_id, "Webhook-Timestamp": str(ts), "Webhook-Signature": signature}


def test_an_independently_computed_signature_verifies():
    ts = int(time.time())
    event = verify_webhook(BODY, headers(ts, sign(SECRET, "msg_1", ts, BODY)), SECRET)
    assert isinstance(event, Event)
    assert (event.seq, event.type, event.data["name"]) == (7, "action.created", "issue_refund")
    # str payloads and several signatures (key rotation) are fine too.
    other = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    both = sign(other, "msg_1", ts, BODY) + " " + sign(SECRET, "msg_1", ts, BODY)
    assert verify_webhook(BODY.decode(), headers(ts, both), SECRET).seq == 7


def test_a_changed_body_id_or_secret_is_refused():
    ts = int(time.time())
    good = sign(SECRET, "msg_1", ts, BODY)
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify_webhook(BODY.replace(b"issue_refund", b"issue_refunds"), headers(ts, good), SECRET)
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify_webhook(BODY, headers(ts, good, msg_id="msg_2"), SECRET)
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify_webhook(BODY, headers(ts, good), other)
    with pytest.raises(WebhookVerificationError, match="header"):
        verify_webhook(BODY, {"webhook-id": "msg_1"}, SECRET)


def test_an_old_or_future_timestamp_is_refused_even_when_signed():
    old = int(time.time()) - 301
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(BODY, headers(old, sign(SECRET, "msg_1", old, BODY)), SECRET)
    future = int(time.time()) + 301
    with pytest.raises(WebhookVerificationError, match="future"):
        verify_webhook(BODY, headers(future, sign(SECRET, "msg_1", future, BODY)), SECRET)
    recent = int(time.time()) - 290
    assert verify_webhook(BODY, headers(recent, sign(SECRET, "msg_1", recent, BODY)), SECRET).seq == 7


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records what it receives."""

    def __init__(self) -> None:
        self.received: "queue.Queue[Tuple[Dict[str, str], bytes]]" = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.put((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/loopgate"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


def test_a_real_delivery_from_loopgate_verifies(server, client):
    receiver = Receiver()
    admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.admin}"})
    created = admin.post("/v1/webhooks", json={"url": receiver.url, "secret": SECRET, "events": ["action.created"]})
    assert created.status_code == 201, created.text
    try:
        action = client.actions.submit("lookup_order", {"order_id": "ord_hook"})
        deadline = time.monotonic() + 20
        while True:
            hdrs, body = receiver.received.get(timeout=max(0.1, deadline - time.monotonic()))
            event = verify_webhook(body, hdrs, SECRET)
            if event.subject == f"action:{action.id}":
                break
        assert event.type == "action.created"
        assert event.data["name"] == "lookup_order" and event.data["status"] == "approved"
        assert hdrs.get("webhook-id") or hdrs.get("Webhook-Id")
        with pytest.raises(WebhookVerificationError):
            verify_webhook(body + b" ", hdrs, SECRET)
    finally:
        admin.delete(f"/v1/webhooks/{created.json()['id']}")
        receiver.close()
