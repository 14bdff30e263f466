"""What the API returns, as small typed records. Each keeps the full JSON in ``raw``, so fields a
newer server adds are never lost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

JSON = Dict[str, Any]

FINAL_STATUSES = frozenset({"approved", "rejected", "blocked", "expired", "cancelled"})


@dataclass(frozen=True)
class Decision:
    """How an action's final status came about."""

    #: ``approve``, ``reject`` or ``edit`` (a human); ``timeout`` (the policy's ``on_timeout``);
    #: ``cancel`` (the agent withdrew it).
    verdict: str
    #: The reviewers who decided, in order (``system`` for a timeout).
    by: List[str] = field(default_factory=list)
    comment: Optional[str] = None
    decided_at: Optional[str] = None

    @classmethod
    def from_json(cls, d: JSON) -> "Decision":
        return cls(
            verdict=d.get("verdict", ""),
            by=list(d.get("by") or []),
            comment=d.get("comment"),
            decided_at=d.get("decided_at"),
        )


@dataclass(frozen=True)
class Action:
    """A proposed action and its status: ``approved``, ``pending``, ``rejected``, ``blocked``,
    ``expired`` or ``cancelled``."""

    id: str
    status: str
    name: str
    #: The final arguments: a reviewer's edit replaces the proposed ones.
    arguments: JSON
    proposed_arguments: Optional[JSON] = None
    confidence: Optional[float] = None
    context: JSON = field(default_factory=dict)
    conversation_id: Optional[str] = None
    #: The policy rule that routed it (``None`` when none matched and it went to review).
    rule: Optional[str] = None
    reason: str = ""
    review_id: Optional[str] = None
    decision: Optional[Decision] = None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JSON) -> "Action":
        return cls(
            id=d["id"],
            status=d["status"],
            name=d.get("name", ""),
            arguments=dict(d.get("arguments") or {}),
            proposed_arguments=d.get("proposed_arguments"),
            confidence=d.get("confidence"),
            context=dict(d.get("context") or {}),
            conversation_id=d.get("conversation_id"),
            rule=d.get("rule"),
            reason=d.get("reason") or "",
            review_id=d.get("review_id"),
            decision=Decision.from_json(d["decision"]) if d.get("decision") else None,
            raw=d,
        )

    @property
    def final(self) -> bool:
        """Whether the status will not change any more (everything but ``pending``)."""
        return self.status in FINAL_STATUSES

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    @property
    def edited(self) -> bool:
        """Whether a reviewer changed the arguments."""
        return self.proposed_arguments is not None and self.proposed_arguments != self.arguments


@dataclass(frozen=True)
class Message:
    """One message of a conversation. ``status``: ``delivered``, ``held`` (a draft awaiting
    review), ``escalated`` (held; the conversation went to a human) or ``discarded``."""

    id: str
    conversation_id: str
    role: str
    text: str
    status: str
    confidence: Optional[float] = None
    original_text: Optional[str] = None
    review_id: Optional[str] = None
    rule: Optional[str] = None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JSON) -> "Message":
        return cls(
            id=d["id"],
            conversation_id=d.get("conversation_id", ""),
            role=d.get("role", ""),
            text=d.get("text", ""),
            status=d.get("status", ""),
            confidence=d.get("confidence"),
            original_text=d.get("original_text"),
            review_id=d.get("review_id"),
            rule=d.get("rule"),
            raw=d,
        )

    @property
    def delivered(self) -> bool:
        return self.status == "delivered"


@dataclass(frozen=True)
class Conversation:
    """A conversation between an end user and the AI. ``state``: ``ai``, ``waiting`` (escalated),
    ``human`` (taken over; the AI may not post) or ``closed``. ``messages`` is filled by
    ``conversations.get``."""

    id: str
    state: str
    external_id: Optional[str] = None
    context: JSON = field(default_factory=dict)
    assignee: Optional[str] = None
    turns: int = 0
    messages: List[Message] = field(default_factory=list)
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JSON) -> "Conversation":
        return cls(
            id=d["id"],
            state=d.get("state", ""),
            external_id=d.get("external_id"),
            context=dict(d.get("context") or {}),
            assignee=d.get("assignee"),
            turns=int(d.get("turns") or 0),
            messages=[Message.from_json(m) for m in d.get("messages") or []],
            raw=d,
        )


@dataclass(frozen=True)
class Feedback:
    """An end user's rating; a thumbs-down carries the ``review_id`` of the flag review it opened."""

    id: str
    message_id: str
    rating: str
    comment: Optional[str] = None
    review_id: Optional[str] = None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JSON) -> "Feedback":
        return cls(
            id=d["id"],
            message_id=d.get("message_id", ""),
            rating=d.get("rating", ""),
            comment=d.get("comment"),
            review_id=d.get("review_id"),
            raw=d,
        )


@dataclass(frozen=True)
class Event:
    """One audit event, as SSE streams and webhooks deliver it. ``seq`` is also the SSE id."""

    seq: int
    type: str
    subject: str
    actor: str
    at: str
    data: JSON
    workspace: str = ""
    hash: str = ""
    prev_hash: str = ""
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JSON) -> "Event":
        data = d.get("data")
        return cls(
            seq=int(d["seq"]),
            type=d.get("type", ""),
            subject=d.get("subject", ""),
            actor=d.get("actor", ""),
            at=d.get("at", ""),
            data=data if isinstance(data, dict) else {},
            workspace=d.get("workspace", ""),
            hash=d.get("hash", ""),
            prev_hash=d.get("prev_hash", ""),
            raw=d,
        )
