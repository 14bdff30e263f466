"""Loopgate for Python: put a human in your AI agent's loop.

::

    from loopgate import require_approval, ask_human, Rejected

    @require_approval(context={"channel": "chat"})
    def issue_refund(order_id: str, amount: float) -> str:
        ...  # runs only once approved, with the (possibly edited) arguments

    issue_refund(order_id="A-1001", amount=80)   # waits for the decision

Configuration: ``LOOPGATE_URL`` (default ``http://127.0.0.1:7800``) and ``LOOPGATE_TOKEN`` (an
agent key's token), or ``Client(url, token)``.
"""

__version__ = "0.1.0"

from ._async import AsyncActions, AsyncClient, AsyncConversations
from ._client import Actions, Client, Conversations
from ._core import ASK_HUMAN, DEFAULT_URL
from ._decorator import ask_human, default_client, require_approval
from ._errors import (
    APIError,
    ApprovalTimeout,
    Blocked,
    Cancelled,
    ConfigurationError,
    LoopgateError,
    NotApproved,
    Rejected,
    TransportError,
    WebhookVerificationError,
)
from ._models import Action, Conversation, Decision, Event, Feedback, Message
from ._webhooks import verify_webhook

__all__ = [
    "ASK_HUMAN",
    "DEFAULT_URL",
    "APIError",
    "Action",
    "Actions",
    "ApprovalTimeout",
    "AsyncActions",
    "AsyncClient",
    "AsyncConversations",
    "Blocked",
    "Cancelled",
    "Client",
    "ConfigurationError",
    "Conversation",
    "Conversations",
    "Decision",
    "Event",
    "Feedback",
    "LoopgateError",
    "Message",
    "NotApproved",
    "Rejected",
    "TransportError",
    "WebhookVerificationError",
    "ask_human",
    "default_client",
    "require_approval",
    "verify_webhook",
]
