"""The client's API calls against a real Loopgate: actions, conversations, feedback, events,
and errors in the server's shape."""

from __future__ import annotations

import threading
import uuid
from typing import List

import httpx
import pytest

import loopgate
from loopgate import APIError, Client, ConfigurationError, Event, TransportError


def test_submit_wait_and_cancel(client, ann):
    key = f"k-{uuid.uuid4()}"
    a = client.actions.submit(
        "send_email", {"to": "x@example.com"}, confidence=0.7, context={"tier": "gold"}, idempotency_key=key
    )
    assert a.status == "pending" and not a.final and a.review_id
    assert a.rule == "other actions need a human"
    # A replay with the same key is the same action.
    again = client.actions.submit(
        "send_email", {"to": "x@example.com"}, confidence=0.7, context={"tier": "gold"}, idempotency_key=key
    )
    assert again.id == a.id

    pending = client.actions.wait(a.id, timeout=0.3)
    assert pending.status == "pending"

    ann.decide(a.review_id, verdict="edit", arguments={"to": "y@example.com"}, comment="right address")
    done = client.actions.wait(a.id, timeout=10)
    assert done.approved and done.final and done.edited
    assert done.arguments == {"to": "y@example.com"}
    assert done.proposed_arguments == {"to": "x@example.com"}
    assert done.decision is not None
    assert (done.decision.verdict, done.decision.by, done.decision.comment) == ("edit", ["ann"], "right address")

    b = client.actions.submit("send_email", {"to": "z@example.com"})
    cancelled = client.actions.cancel(b.id)
    assert cancelled.status == "cancelled"
    with pytest.raises(APIError) as e:
        client.actions.cancel(b.id)
    assert e.value.status == 409 and e.value.code == "conflict"


def test_a_long_poll_returns_when_the_decision_lands(client, ann):
    a = client.actions.submit("send_email", {"to": "lp@example.com"})
    threading.Timer(0.3, lambda: ann.decide(a.review_id, verdict="approve")).start()
    got = client.actions.get(a.id, wait=30)
    assert got.approved


def test_errors_carry_the_servers_code_message_and_field(client):
    with pytest.raises(APIError) as e:
        client.actions.submit("issue_refund", {"amount": 1}, confidence=2)
    assert e.value.status == 422
    assert e.value.code == "invalid_field"
    assert e.value.field == "confidence"
    with pytest.raises(APIError) as e:
        client.actions.get(str(uuid.uuid4()))
    assert (e.value.status, e.value.code) == (404, "not_found")


def test_configuration_and_transport_errors(server, monkeypatch):
    monkeypatch.delenv("LOOPGATE_TOKEN", raising=False)
    with pytest.raises(ConfigurationError):
        Client(server.url)
    with pytest.raises(ConfigurationError):
        Client("localhost:7800", "t")
    with pytest.raises(APIError) as e:
        Client(server.url, "not-a-token").actions.get(str(uuid.uuid4()))
    assert e.value.status == 401
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(TransportError):
        Client(dead, "t").actions.get(str(uuid.uuid4()))


def test_conversations_messages_escalation_and_feedback(client, server):
    c = client.conversations.open(external_id=f"chat-{uuid.uuid4()}", context={"tags": ["cards"]})
    assert c.state == "ai"
    assert client.conversations.open(external_id=c.external_id).id == c.id

    client.conversations.post(c.id, "My card has not arrived", role="user")
    sure = client.conversations.post(c.id, "It ships tomorrow.", confidence=0.9)
    assert sure.delivered and sure.role == "ai"
    unsure = client.conversations.post(c.id, "Maybe next week?", confidence=0.3)
    assert unsure.status == "held" and unsure.review_id

    fb = client.feedback(sure.id, "down", "not what I asked")
    assert fb.rating == "down" and fb.review_id

    escalated = client.conversations.escalate(c.id, "wants a person", queue="specialists", priority=3)
    assert escalated.state == "waiting"

    # A human takes over: the AI is refused with 409 until hand-back.
    human = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.ann}"})
    assert human.post(f"/v1/conversations/{c.id}/takeover").status_code == 200
    with pytest.raises(APIError) as e:
        client.conversations.post(c.id, "Anything else?", confidence=0.95)
    assert e.value.status == 409

    full = client.conversations.get(c.id)
    assert full.state == "human"
    assert [m.role for m in full.messages][:3] == ["user", "ai", "ai"]

    closed = client.conversations.close(c.id, "resolved")
    assert closed.state == "closed"


def _collect(it, n: int) -> List[Event]:
    out = []
    for e in it:
        out.append(e)
        if len(out) == n:
            break
    return out


def test_events_replay_resume_and_follow_live(client):
    c = client.conversations.open()
    client.conversations.post(c.id, "Hello", role="user")
    client.conversations.post(c.id, "Hi! How can I help?", confidence=0.9)

    replay = _collect(client.events(conversation_id=c.id, last_event_id=0), 3)
    assert [e.type for e in replay] == ["conversation.created", "message.created", "message.created"]
    assert replay[0].seq < replay[1].seq < replay[2].seq
    assert replay[1].data["conversation_id"] == c.id

    # Resuming after the first event starts at the second.
    resumed = _collect(client.conversations.events(c.id, last_event_id=replay[0].seq), 1)
    assert resumed[0].seq == replay[1].seq

    # Following live: an escalation made after the stream opened arrives.
    got: List[Event] = []
    errors: List[BaseException] = []

    def follow() -> None:
        try:
            with Client(client.url, client._token) as other:
                for e in other.events(conversation_id=c.id, last_event_id=replay[2].seq):
                    got.append(e)
                    if e.type == "conversation.escalated":
                        return
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    client.conversations.escalate(c.id, "needs a human")
    t.join(15)
    assert not t.is_alive() and not errors, errors
    assert got[-1].type == "conversation.escalated"
    assert all(e.seq > replay[2].seq for e in got)


def test_the_workspace_stream_needs_a_valid_token(server):
    with pytest.raises(APIError) as e:
        next(iter(Client(server.url, "wrong").events(last_event_id=0)))
    assert e.value.status == 401


def test_package_surface():
    assert loopgate.__version__
    for name in loopgate.__all__:
        assert hasattr(loopgate, name), name
