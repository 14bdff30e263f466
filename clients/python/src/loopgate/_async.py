"""The asyncio client: ``AsyncClient``, the same API as ``Client`` with ``await``."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, AsyncIterator, Mapping, Optional

import httpx

from . import _core
from ._client import MAX_FAILURES, _backoff
from ._errors import APIError, LoopgateError, TransportError
from ._models import JSON, Action, Conversation, Event, Feedback, Message

class AsyncClient:
    """An asyncio client for one agent key: the API of ``Client``, awaited.

    ``url`` and ``token`` default to the environment variables ``LOOPGATE_URL`` (else
    ``http://127.0.0.1:7800``) and ``LOOPGATE_TOKEN``. Use it as an async context manager, or
    ``await aclose()``, to release its connections.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        timeout: float = 30.0,
        http_client: Optional[httpx.AsyncClient] = None,
    ) -> None:
        self.url, self._token = _core.configure(url, token)
        self._timeout = timeout
        self._http = http_client or httpx.AsyncClient(
            base_url=self.url,
            headers=_core.headers(self._token),
            timeout=httpx.Timeout(timeout, connect=10.0),
        )
        self.actions = AsyncActions(self)
        self.conversations = AsyncConversations(self)

    def __repr__(self) -> str:
        return f"AsyncClient(url={self.url!r})"

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Optional[JSON] = None,
        params: Optional[Mapping[str, str]] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[httpx.Timeout] = None,
    ) -> JSON:
        try:
            resp = await self._http.request(
                method,
                path,
                json=json_body,
                params=params,
                headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TransportError as e:
            raise TransportError(f"cannot reach Loopgate at {self.url}: {e!r}") from e
        return _core.parse(resp)

    async def feedback(self, message_id: str, rating: str, comment: Optional[str] = None) -> Feedback:
        """Record an end user's rating (``"up"`` or ``"down"``) of a delivered message; a
        thumbs-down opens a ``flag`` review."""
        body = _core.drop_none({"rating": rating, "comment": comment})
        return Feedback.from_json(
            await self._request("POST", f"/v1/messages/{_core.seg(message_id)}/feedback", json_body=body)
        )

    async def request_approval(
        self,
        name: str,
        arguments: Optional[Mapping[str, Any]] = None,
        *,
        confidence: Optional[float] = None,
        context: Optional[Mapping[str, Any]] = None,
        conversation_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Action:
        """Submit an action and wait for the decision: the approved action (run it with its
        ``arguments``, which a reviewer may have edited), or ``Rejected``, ``Blocked``,
        ``ApprovalTimeout`` or ``Cancelled``. When ``timeout`` (seconds) runs out first, the
        action is withdrawn so nobody approves what will not run."""
        action = await self.actions.submit(
            name,
            arguments,
            confidence=confidence,
            context=context,
            conversation_id=conversation_id,
            idempotency_key=f"py-{uuid.uuid4()}",
        )
        if not action.final:
            action = await self.actions.wait(action.id, timeout)
        if not action.final:
            action = await self.actions._give_up(action)
            if action.status in ("pending", "cancelled"):
                raise _core.timed_out(action, timeout)
        return _core.check_approved(action)

    async def ask_human(
        self,
        question: str,
        *,
        context: Optional[Mapping[str, Any]] = None,
        conversation_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> str:
        """Ask a human a question and wait for the answer.

        The question is an action named ``ask_human`` with arguments ``{"question": ...}``, so it
        goes through the policy and the review queue like any gate (route it to review with a
        rule on ``action.name == "ask_human"``). The reviewer answers by deciding it with
        ``edit`` and an ``answer`` argument, or by approving with a comment. A rejection raises
        ``Rejected`` (its ``comment`` says why)."""
        if not question.strip():
            raise ValueError("the question is empty")
        action = await self.request_approval(
            _core.ASK_HUMAN,
            {"question": question},
            context=context,
            conversation_id=conversation_id,
            timeout=timeout,
        )
        return _core.answer_of(action)

    async def events(
        self,
        conversation_id: Optional[str] = None,
        last_event_id: Optional[int] = None,
        *,
        reconnect: bool = True,
    ) -> AsyncIterator[Event]:
        """Follow events as they happen: the workspace's, or one conversation's. With
        ``last_event_id`` (an event's ``seq``), start after it (``0``: from the beginning).
        Reconnects after a dropped connection and resumes with ``Last-Event-ID``, so no event is
        missed or repeated. Endless: ``break`` out of the loop when done."""
        path = _core.events_path(conversation_id)
        last = last_event_id
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            try:
                async with self._http.stream(
                    "GET",
                    path,
                    headers=headers,
                    timeout=httpx.Timeout(self._timeout, read=_core.SSE_READ_TIMEOUT),
                ) as resp:
                    if resp.status_code >= 400:
                        await resp.aread()
                        raise _core.api_error(resp)
                    failures = 0
                    decoder = _core.SSEDecoder()
                    async for line in resp.aiter_lines():
                        frame = decoder.feed(line)
                        body = _core.event_of(frame) if frame else None
                        if body is not None:
                            event = Event.from_json(body)
                            last = event.seq
                            yield event
            except (httpx.TransportError, APIError) as e:
                transient = isinstance(e, httpx.TransportError) or (
                    isinstance(e, APIError) and e.transient
                )
                if not (reconnect and transient) or failures >= MAX_FAILURES:
                    if isinstance(e, APIError):
                        raise
                    raise TransportError(f"the event stream from {self.url} failed: {e!r}") from e
                failures += 1
            if not reconnect:
                return
            await asyncio.sleep(_backoff(max(failures, 1)))


class AsyncActions:
    """``client.actions``: submit, get, wait for and cancel proposed actions."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def submit(
        self,
        name: str,
        arguments: Optional[Mapping[str, Any]] = None,
        *,
        confidence: Optional[float] = None,
        context: Optional[Mapping[str, Any]] = None,
        conversation_id: Optional[str] = None,
        idempotency_key: Optional[str] = None,
    ) -> Action:
        """Propose an action; the policy routes it at once: ``approved``, ``blocked``, or
        ``pending`` (a human will decide). With an ``idempotency_key``, retrying returns the
        original action rather than filing a second one (and a brief outage is retried here)."""
        body = _core.action_body(name, arguments, confidence, context, conversation_id)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        failures = 0
        while True:
            try:
                return Action.from_json(
                    await self._c._request("POST", "/v1/actions", json_body=body, headers=headers)
                )
            except (TransportError, APIError) as e:
                retry = idempotency_key is not None and (
                    isinstance(e, TransportError) or (isinstance(e, APIError) and e.transient)
                )
                failures += 1
                if not retry or failures >= 4:
                    raise
                await asyncio.sleep(_backoff(failures))

    async def get(self, action_id: str, *, wait: float = 0) -> Action:
        """The action now; with ``wait`` (seconds, at most 60), once it is final or when the wait
        runs out, whichever comes first."""
        wait = max(0.0, min(float(wait), _core.MAX_POLL))
        params = {"wait": f"{wait:.3f}"} if wait > 0 else None
        return Action.from_json(
            await self._c._request(
                "GET",
                f"/v1/actions/{_core.seg(action_id)}",
                params=params,
                timeout=_core.poll_timeout(wait),
            )
        )

    async def wait(self, action_id: str, timeout: Optional[float] = None) -> Action:
        """Wait until the action is final (``timeout`` seconds at most; ``None``: as long as it
        takes), long-polling in slices of 60 s and riding out brief outages. Returns the action
        as it stands then: still ``pending`` if nobody decided in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        failures = 0
        while True:
            left = _core.MAX_POLL if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                action = await self.get(action_id, wait=min(left, _core.MAX_POLL))
                failures = 0
            except (TransportError, APIError) as e:
                if isinstance(e, APIError) and not e.transient:
                    raise
                failures += 1
                pause = _backoff(failures)
                if failures >= MAX_FAILURES or (
                    deadline is not None and time.monotonic() + pause >= deadline
                ):
                    raise
                await asyncio.sleep(pause)
                continue
            if action.final or (deadline is not None and time.monotonic() >= deadline):
                return action

    async def cancel(self, action_id: str) -> Action:
        """Withdraw a pending action (an ``APIError`` 409 once it is final)."""
        return Action.from_json(
            await self._c._request("POST", f"/v1/actions/{_core.seg(action_id)}/cancel")
        )

    async def _give_up(self, action: Action) -> Action:
        """Withdraw an action nobody decided in time; if a decision raced in, that decision."""
        try:
            return await self.cancel(action.id)
        except APIError as e:
            if e.status == 409:
                return await self.get(action.id)
            raise
        except LoopgateError:
            return action


class AsyncConversations:
    """``client.conversations``: mirror a conversation with an end user into Loopgate."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def open(
        self, external_id: Optional[str] = None, context: Optional[Mapping[str, Any]] = None
    ) -> Conversation:
        """Open a conversation. With ``external_id`` (your own id for it), opening it again
        returns the same one."""
        body = _core.drop_none(
            {"external_id": external_id, "context": dict(context) if context is not None else None}
        )
        return Conversation.from_json(await self._c._request("POST", "/v1/conversations", json_body=body))

    async def get(self, conversation_id: str) -> Conversation:
        """The conversation's state and transcript (``messages``)."""
        return Conversation.from_json(
            await self._c._request("GET", f"/v1/conversations/{_core.seg(conversation_id)}")
        )

    async def post(
        self,
        conversation_id: str,
        text: str,
        *,
        role: str = "ai",
        confidence: Optional[float] = None,
    ) -> Message:
        """Post a message (``role``: ``ai``, ``user`` or ``system``). An ``ai`` message goes
        through the policy: its ``status`` is ``delivered`` (show it), ``held`` (a draft a human
        will approve or rewrite) or ``escalated``. While a human has the conversation, the AI
        gets an ``APIError`` 409."""
        body = _core.drop_none({"role": role, "text": text, "confidence": confidence})
        return Message.from_json(
            await self._c._request(
                "POST", f"/v1/conversations/{_core.seg(conversation_id)}/messages", json_body=body
            )
        )

    async def escalate(
        self,
        conversation_id: str,
        reason: Optional[str] = None,
        *,
        queue: Optional[str] = None,
        priority: Optional[int] = None,
        timeout: Optional[str] = None,
    ) -> Conversation:
        """Ask for a human: the conversation goes to ``waiting`` with an escalation review
        (``timeout`` is its SLA, e.g. ``"15m"``)."""
        body = _core.drop_none(
            {"reason": reason, "queue": queue, "priority": priority, "timeout": timeout}
        )
        return Conversation.from_json(
            await self._c._request(
                "POST", f"/v1/conversations/{_core.seg(conversation_id)}/escalate", json_body=body
            )
        )

    async def close(self, conversation_id: str, reason: Optional[str] = None) -> Conversation:
        """Close the conversation; its open drafts and escalations are cancelled."""
        return Conversation.from_json(
            await self._c._request(
                "POST",
                f"/v1/conversations/{_core.seg(conversation_id)}/close",
                json_body=_core.drop_none({"reason": reason}),
            )
        )

    def events(
        self, conversation_id: str, last_event_id: Optional[int] = None
    ) -> AsyncIterator[Event]:
        """This conversation's events, live (see ``AsyncClient.events``)."""
        return self._c.events(conversation_id, last_event_id)

