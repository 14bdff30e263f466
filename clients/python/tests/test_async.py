"""``AsyncClient`` and ``@require_approval`` on ``async def`` functions (each test runs its own
event loop with ``asyncio.run``)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Dict, List

import pytest

from loopgate import APIError, ApprovalTimeout, AsyncClient, Blocked, Rejected, require_approval


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_async_submit_wait_cancel_and_errors(server, ann):
    async def main() -> None:
        async with AsyncClient(server.url, server.agent) as lg:
            a = await lg.actions.submit("send_email", {"to": "async@example.com"}, idempotency_key=f"k-{uuid.uuid4()}")
            assert a.status == "pending"
            waiting = asyncio.create_task(lg.actions.wait(a.id, timeout=20))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            await asyncio.to_thread(ann.decide, a.review_id, verdict="edit", arguments={"to": "fixed@example.com"})
            done = await waiting
            assert done.approved and done.arguments == {"to": "fixed@example.com"}

            b = await lg.actions.submit("send_email", {"to": "b@example.com"})
            assert (await lg.actions.cancel(b.id)).status == "cancelled"
            with pytest.raises(APIError) as e:
                await lg.actions.cancel(b.id)
            assert e.value.status == 409

            looked = await lg.actions.get((await lg.actions.submit("lookup_order", {"order_id": "x"})).id)
            assert looked.approved and looked.decision is None

    run(main())


def test_async_decorator_edit_reject_block_and_timeout(server, ann, bob):

    async def main() -> None:
        async with AsyncClient(server.url, server.agent) as lg:

            @require_approval(client=lg, confidence=0.9)
            async def issue_refund(order_id: str, amount: float) -> Dict[str, Any]:
                await asyncio.sleep(0)
                return {"order_id": order_id, "amount": amount}

            o = f"ord_{uuid.uuid4().hex[:8]}"
            reviewer = ann.decide_when(
                lambda a: a["arguments"].get("order_id") == o,
                verdict="edit",
                arguments={"order_id": o, "amount": 12.5},
            )
            assert await issue_refund(order_id=o, amount=25) == {"order_id": o, "amount": 12.5}
            await asyncio.to_thread(reviewer.join)

            o2 = f"ord_{uuid.uuid4().hex[:8]}"
            reviewer = bob.decide_when(lambda a: a["arguments"].get("order_id") == o2, verdict="reject")
            with pytest.raises(Rejected):
                await issue_refund(order_id=o2, amount=25)
            await asyncio.to_thread(reviewer.join)

            @require_approval(client=lg)
            async def delete_account(user_id: int) -> None:
                raise AssertionError("must not run")

            with pytest.raises(Blocked):
                await delete_account(user_id=1)

            @require_approval(client=lg, timeout=0.5)
            async def send_email(to: str) -> None:
                raise AssertionError("must not run")

            with pytest.raises(ApprovalTimeout) as e:
                await send_email(to="slow@example.com")
            assert (await lg.actions.get(e.value.action.id)).status == "cancelled"

    run(main())


def test_async_decorator_with_a_sync_client_and_concurrent_calls(client, ann):
    @require_approval(client=client)
    async def lookup_order(order_id: str) -> str:
        return order_id.upper()

    async def main() -> List[str]:
        return list(await asyncio.gather(*(lookup_order(f"o{i}") for i in range(5))))

    assert run(main()) == ["O0", "O1", "O2", "O3", "O4"]


def test_async_ask_human_and_events(server, ann):
    async def main() -> None:
        async with AsyncClient(server.url, server.agent) as lg:
            q = f"Is {uuid.uuid4().hex[:6]} a VIP?"
            reviewer = ann.decide_when(lambda a: a["arguments"].get("question") == q, verdict="edit",
                                       arguments={"question": q, "answer": "yes"})
            assert await lg.ask_human(q) == "yes"
            await asyncio.to_thread(reviewer.join)

            c = await lg.conversations.open(context={"tier": "vip"})
            m = await lg.conversations.post(c.id, "Hello there", role="user")
            assert m.delivered
            seen = []
            async for e in lg.events(conversation_id=c.id, last_event_id=0):
                seen.append(e.type)
                if e.type == "message.created":
                    break
            assert seen == ["conversation.created", "message.created"]
            assert (await lg.conversations.get(c.id)).messages[0].text == "Hello there"
            assert (await lg.conversations.close(c.id)).state == "closed"

    run(main())
