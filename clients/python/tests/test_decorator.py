"""``@require_approval`` and ``ask_human`` against a real Loopgate, with humans deciding through
the API while the call waits."""

from __future__ import annotations

import uuid
from typing import Any, Dict, List

import pytest

import loopgate
from loopgate import ApprovalTimeout, Blocked, Rejected, require_approval


def order() -> str:
    return f"ord_{uuid.uuid4().hex[:10]}"


def for_order(o: str):
    return lambda action: action["arguments"].get("order_id") == o


def test_approval_runs_the_function_with_its_arguments(client, ann):
    calls: List[Dict[str, Any]] = []

    @require_approval(client=client, context={"channel": "chat"}, confidence=0.8)
    def issue_refund(order_id: str, amount: float, currency: str = "GBP") -> str:
        calls.append({"order_id": order_id, "amount": amount, "currency": currency})
        return f"refunded {amount} {currency}"

    o = order()
    reviewer = ann.decide_when(for_order(o), verdict="approve")
    assert issue_refund(o, 80) == "refunded 80 GBP"
    reviewer.join()
    assert calls == [{"order_id": o, "amount": 80, "currency": "GBP"}]


def test_the_action_carries_name_arguments_context_and_confidence(client, ann):
    @require_approval(
        name="refund",
        client=client,
        context=lambda args: {"big": args["amount"] > 100},
        confidence=0.65,
    )
    def issue_refund(order_id: str, amount: float) -> float:
        return amount

    o = order()
    seen: Dict[str, Any] = {}

    def match(action: Dict[str, Any]) -> bool:
        if action["arguments"].get("order_id") == o:
            seen.update(action)
            return True
        return False

    reviewer = ann.decide_when(match, verdict="approve")
    assert issue_refund(order_id=o, amount=120) == 120
    reviewer.join()
    assert seen["name"] == "refund"
    assert seen["arguments"] == {"order_id": o, "amount": 120}
    assert seen["context"] == {"big": True}
    assert seen["confidence"] == 0.65
    assert seen["rule"] == "other actions need a human"


def test_an_edit_runs_the_function_with_the_edited_arguments(client, ann):
    @require_approval(client=client)
    def issue_refund(order_id: str, amount: float) -> Dict[str, Any]:
        return {"order_id": order_id, "amount": amount}

    o = order()
    reviewer = ann.decide_when(
        for_order(o), verdict="edit", arguments={"order_id": o, "amount": 40}, comment="half"
    )
    assert issue_refund(order_id=o, amount=80) == {"order_id": o, "amount": 40}
    reviewer.join()


def test_a_rejection_raises_and_the_function_does_not_run(client, bob):
    ran = []

    @require_approval(client=client)
    def issue_refund(order_id: str, amount: float) -> None:
        ran.append(True)

    o = order()
    reviewer = bob.decide_when(for_order(o), verdict="reject", comment="refunded already")
    with pytest.raises(Rejected) as e:
        issue_refund(order_id=o, amount=10)
    reviewer.join()
    assert not ran
    assert e.value.comment == "refunded already"
    assert e.value.action.status == "rejected"
    assert "rejected by bob" in str(e.value)
    assert isinstance(e.value, loopgate.NotApproved)


def test_a_blocked_action_raises_at_once(client):
    @require_approval(client=client)
    def delete_account(user_id: int) -> None:
        raise AssertionError("must not run")

    with pytest.raises(Blocked) as e:
        delete_account(user_id=7)
    assert e.value.action.rule == "no account deletion"


def test_no_decision_in_time_raises_and_withdraws_the_action(client):
    @require_approval(client=client, timeout=1)
    def issue_refund(order_id: str, amount: float) -> None:
        raise AssertionError("must not run")

    with pytest.raises(ApprovalTimeout) as e:
        issue_refund(order_id=order(), amount=5)
    assert client.actions.get(e.value.action.id).status == "cancelled"


def test_an_auto_approved_action_runs_without_a_human(client):
    @require_approval(client=client)
    def lookup_order(order_id: str) -> str:
        return f"{order_id}: shipped"

    assert lookup_order("ord_1") == "ord_1: shipped"


def test_methods_keyword_only_and_var_keyword_arguments(client, ann):
    class Payments:
        def __init__(self) -> None:
            self.sent: List[Any] = []

        @require_approval(client=client)
        def transfer(self, to: str, *, amount: int, **memo: Any) -> List[Any]:
            self.sent.append((to, amount, memo))
            return self.sent

    o = order()
    reviewer = ann.decide_when(
        lambda a: a["arguments"].get("order_id") == o and a["name"] == "transfer",
        verdict="edit",
        arguments={"to": "acct-2", "amount": 9, "order_id": o},
    )
    p = Payments()
    assert p.transfer("acct-1", amount=10, order_id=o) == [("acct-2", 9, {"order_id": o})]
    reviewer.join()


def test_arguments_must_be_json(client):
    @require_approval(client=client)
    def lookup_order(order_id: object) -> None:
        raise AssertionError("must not run")

    with pytest.raises(TypeError, match="JSON"):
        lookup_order(order_id=object())


def test_the_default_client_comes_from_the_environment(server, monkeypatch, ann):
    monkeypatch.setenv("LOOPGATE_URL", server.url)
    monkeypatch.setenv("LOOPGATE_TOKEN", server.agent)
    monkeypatch.setattr(loopgate._decorator, "_default", None)

    @require_approval()
    def lookup_order(order_id: str) -> str:
        return order_id

    assert lookup_order("ord_env") == "ord_env"
    monkeypatch.delenv("LOOPGATE_TOKEN")
    monkeypatch.setattr(loopgate._decorator, "_default", None)
    with pytest.raises(loopgate.ConfigurationError, match="LOOPGATE_TOKEN"):
        lookup_order("ord_env")


def test_ask_human_returns_the_reviewers_answer(client, ann):
    q = f"Which warehouse ships {order()}?"
    reviewer = ann.decide_when(
        lambda a: a["name"] == "ask_human" and a["arguments"]["question"] == q,
        verdict="edit",
        arguments={"question": q, "answer": "Leeds"},
    )
    assert loopgate.ask_human(q, client=client) == "Leeds"
    reviewer.join()


def test_ask_human_takes_a_comment_as_the_answer_and_a_rejection_raises(client, ann, bob):
    q = f"May I waive the fee on {order()}?"
    reviewer = ann.decide_when(
        lambda a: a["arguments"].get("question") == q, verdict="approve", comment="Yes, once."
    )
    assert client.ask_human(q) == "Yes, once."
    reviewer.join()

    q2 = f"May I close {order()}?"
    reviewer = bob.decide_when(
        lambda a: a["arguments"].get("question") == q2, verdict="reject", comment="not yours to ask"
    )
    with pytest.raises(Rejected, match="not yours to ask"):
        client.ask_human(q2)
    reviewer.join()
