"""What the sync and async clients share: configuration, request bodies, error mapping, the SSE
frame decoder, and how a decided action becomes a return value or an exception."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import quote

import httpx

from ._errors import (
    APIError,
    ApprovalTimeout,
    Blocked,
    Cancelled,
    ConfigurationError,
    LoopgateError,
    Rejected,
)
from ._models import JSON, Action

DEFAULT_URL = "http://127.0.0.1:7800"

#: The longest long-poll the server grants; longer waits are made of slices of this.
MAX_POLL = 60.0

#: How long a request may take beyond the long-poll it asked for.
SLACK = 15.0

#: An SSE stream that is silent this long (the server sends a keep-alive every 15 s) is dead.
SSE_READ_TIMEOUT = 45.0

#: The action name ``ask_human`` questions are filed under.
ASK_HUMAN = "ask_human"


def configure(url: Optional[str], token: Optional[str]) -> Tuple[str, str]:
    url = (url or os.environ.get("LOOPGATE_URL") or DEFAULT_URL).strip().rstrip("/")
    token = (token or os.environ.get("LOOPGATE_TOKEN") or "").strip()
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"{url!r} is not an http:// or https:// URL of a Loopgate server")
    if not token:
        raise ConfigurationError(
            "no API token: pass token=... or set LOOPGATE_TOKEN to an agent key's token "
            "(loopgate keys create --name NAME --role agent)"
        )
    return url, token


def headers(token: str) -> Dict[str, str]:
    from . import __version__

    return {
        "Authorization": f"Bearer {token}",
        "User-Agent": f"loopgate-python/{__version__}",
        "Accept": "application/json",
    }


def seg(value: str) -> str:
    """One escaped path segment: an id cannot climb the path."""
    return quote(str(value), safe="")


def drop_none(d: Mapping[str, Any]) -> JSON:
    return {k: v for k, v in d.items() if v is not None}


def action_body(
    name: str,
    arguments: Optional[Mapping[str, Any]],
    confidence: Optional[float],
    context: Optional[Mapping[str, Any]],
    conversation_id: Optional[str],
) -> JSON:
    return drop_none(
        {
            "name": name,
            "arguments": dict(arguments or {}),
            "confidence": confidence,
            "context": dict(context) if context is not None else None,
            "conversation_id": conversation_id,
        }
    )


def api_error(resp: httpx.Response) -> APIError:
    """The server's ``{"error": {...}}``, or as much as a foreign body (a proxy's page) allows."""
    try:
        err = resp.json()["error"]
        return APIError(resp.status_code, err["code"], err["message"], err.get("field"))
    except Exception:
        text = resp.text.strip()[:200] if resp.content else ""
        code = (resp.reason_phrase or "error").lower().replace(" ", "_")
        return APIError(resp.status_code, code, text or f"HTTP {resp.status_code}")


def parse(resp: httpx.Response) -> JSON:
    if resp.status_code >= 400:
        raise api_error(resp)
    try:
        body = resp.json()
    except ValueError as e:
        raise LoopgateError(f"{resp.status_code} with a body that is not JSON: {e}") from e
    if not isinstance(body, dict):
        raise LoopgateError(f"{resp.status_code} with a body that is not a JSON object")
    return body


def poll_timeout(wait: float) -> httpx.Timeout:
    return httpx.Timeout(wait + SLACK, connect=10.0)


def check_approved(action: Action) -> Action:
    """Return the approved action, or raise what its status means."""
    if action.approved:
        return action
    d = action.decision
    who = " and ".join(d.by) if d and d.by else "a reviewer"
    why = f": {d.comment}" if d and d.comment else ""
    if action.status == "rejected":
        raise Rejected(action, f"{action.name} was rejected by {who}{why}")
    if action.status == "blocked":
        raise Blocked(action, f"{action.name} is blocked: {action.reason}")
    if action.status == "expired":
        raise ApprovalTimeout(action, f"nobody decided on {action.name} before the policy's deadline{why}")
    if action.status == "cancelled":
        raise Cancelled(action, f"{action.name} was cancelled before anyone decided")
    raise LoopgateError(f"unexpected status {action.status!r} for action {action.id}")


def timed_out(action: Action, timeout: Optional[float]) -> ApprovalTimeout:
    within = f"within {timeout:g} s" if timeout is not None else "in time"
    return ApprovalTimeout(
        action, f"no decision on {action.name} {within}; action {action.id} was withdrawn"
    )


def answer_of(action: Action) -> str:
    """The answer to an ``ask_human`` action: the reviewer's ``answer`` argument, else their
    comment, else the empty string (they approved without a word)."""
    if action.approved and action.decision is None:
        raise LoopgateError(
            f"the policy approved {ASK_HUMAN!r} without a human (rule {action.rule!r}); add a rule "
            f"with when = 'action.name == \"{ASK_HUMAN}\"' and then = \"review\" before it"
        )
    check_approved(action)
    answer = action.arguments.get("answer")
    if isinstance(answer, str) and answer.strip():
        return answer
    if action.decision and action.decision.comment:
        return action.decision.comment
    return ""


@dataclass
class Frame:
    id: Optional[str]
    event: Optional[str]
    data: str


class SSEDecoder:
    """Server-Sent Events, line by line: returns a frame at each blank line that ends one."""

    def __init__(self) -> None:
        self._id: Optional[str] = None
        self._event: Optional[str] = None
        self._data: List[str] = []

    def feed(self, line: str) -> Optional[Frame]:
        line = line.rstrip("\r\n")
        if not line:
            if not self._data and self._event is None:
                return None
            frame = Frame(self._id, self._event, "\n".join(self._data))
            self._event, self._data = None, []
            return frame
        if line.startswith(":"):
            return None  # a comment: the server's keep-alive
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None


def event_of(frame: Frame) -> Optional[Dict[str, Any]]:
    if not frame.data:
        return None
    body = json.loads(frame.data)
    return body if isinstance(body, dict) else None


def events_path(conversation_id: Optional[str]) -> str:
    if conversation_id is None:
        return "/v1/events"
    return f"/v1/conversations/{seg(conversation_id)}/events"
