"""Exceptions: one base class, the server's error body, and the outcomes of a gate that did not run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from ._models import Action


class LoopgateError(Exception):
    """Base class of everything this package raises."""


class APIError(LoopgateError):
    """The server refused a request; carries its ``{"error": {code, message, field}}`` body."""

    def __init__(self, status: int, code: str, message: str, field: Optional[str] = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        where = f" (field {field})" if field else ""
        super().__init__(f"{status} {code}: {message}{where}")

    @property
    def transient(self) -> bool:
        """Worth retrying after a pause (overloaded, briefly unavailable)."""
        return self.status in (429, 502, 503, 504)


class TransportError(LoopgateError):
    """The server could not be reached (down, wrong URL, or too slow)."""


class ConfigurationError(LoopgateError):
    """The client is missing its URL or token."""


class NotApproved(LoopgateError):
    """A gated call did not run. ``action`` is the action as the server last reported it."""

    def __init__(self, action: "Action", message: str) -> None:
        self.action = action
        super().__init__(message)

    @property
    def comment(self) -> Optional[str]:
        """The reviewer's comment, if any."""
        return self.action.decision.comment if self.action.decision else None


class Rejected(NotApproved):
    """A human rejected the action."""


class Blocked(NotApproved):
    """The policy (or a pause) forbids the action."""


class ApprovalTimeout(NotApproved):
    """Nobody decided in time: the client stopped waiting (and withdrew the action), or the
    policy's own ``timeout`` expired it."""


class Cancelled(NotApproved):
    """The action was withdrawn before anyone decided."""


class WebhookVerificationError(LoopgateError):
    """A webhook's signature or timestamp is not valid: do not trust its body."""
