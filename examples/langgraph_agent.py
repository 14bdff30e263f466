"""A LangGraph support agent whose tools are gated by Loopgate.

The agent looks up an order (the policy lets look-ups run) and refunds it (the policy sends
refunds to a human, who may approve, reject or edit the amount). The refund tool is an ordinary
function under ``@require_approval``: it runs only once approved, with the final arguments.

The model is a stub that plays a scripted tool-calling conversation, so this runs offline with no
API key. To use a real model, replace ``StubChatModel()`` with e.g.
``langchain_openai.ChatOpenAI(model="gpt-4o-mini")``; nothing else changes.

Run it against the demo (see the README, "Use it from Python"):

    pip install "./clients/python[examples]"
    LOOPGATE_URL=http://127.0.0.1:7800 LOOPGATE_TOKEN=<support-bot token> python examples/langgraph_agent.py

then approve (or edit) the refund in the finance queue while it waits.
"""

from __future__ import annotations

import json
import sys
from typing import Any, List, Optional

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from loopgate import NotApproved, require_approval

ORDER = "ord_10001"
# What the policy and the reviewer see with each action (the demo policy routes on customer.tier).
CONTEXT = {"customer": {"id": "cus_10001", "tier": "standard"}, "channel": "chat"}


@require_approval(name="lookup_order", context=CONTEXT, confidence=0.95)
def _lookup_order(order_id: str) -> dict:
    # A real agent would query the order system here.
    return {"order_id": order_id, "total": 80.0, "currency": "GBP", "status": "charged twice"}


@require_approval(name="issue_refund", context=CONTEXT, confidence=0.9)
def _issue_refund(order_id: str, amount: float, currency: str = "GBP") -> str:
    # A real agent would call the payment provider here, with the approved (maybe edited) amount.
    return f"refunded {amount:g} {currency} on {order_id}"


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order by its id."""
    return json.dumps(_lookup_order(order_id=order_id))


@tool
def issue_refund(order_id: str, amount: float, currency: str = "GBP") -> str:
    """Refund part or all of an order to the customer's card."""
    print(f"  asking Loopgate to approve a refund of {amount:g} {currency}...", flush=True)
    try:
        return _issue_refund(order_id=order_id, amount=amount, currency=currency)
    except NotApproved as e:
        # Rejected, Blocked, ApprovalTimeout: tell the model, which tells the customer.
        return f"not done: {e}"


TOOLS = [lookup_order, issue_refund]


class StubChatModel(BaseChatModel):
    """Plays the model's part offline: look the order up, refund it, then answer."""

    @property
    def _llm_type(self) -> str:
        return "stub"

    def bind_tools(self, tools: Any, **kwargs: Any) -> "StubChatModel":
        return self

    def _generate(
        self, messages: List[BaseMessage], stop: Optional[List[str]] = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if not results:
            reply = AIMessage(content="", tool_calls=[
                {"name": "lookup_order", "args": {"order_id": ORDER}, "id": "call_1", "type": "tool_call"}])
        elif len(results) == 1:
            order = json.loads(str(results[0].content))
            reply = AIMessage(content="", tool_calls=[{
                "name": "issue_refund", "id": "call_2", "type": "tool_call",
                "args": {"order_id": ORDER, "amount": order["total"], "currency": order["currency"]}}])
        else:
            reply = AIMessage(content=f"Sorted: {results[-1].content}.")
        return ChatResult(generations=[ChatGeneration(message=reply)])


def build_agent(model: BaseChatModel) -> Any:
    bound = model.bind_tools(TOOLS)

    def agent(state: MessagesState) -> dict:
        return {"messages": [bound.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(TOOLS))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


def main() -> int:
    question = f"I was charged twice for order {ORDER}, please refund it."
    print(f"customer: {question}")
    result = build_agent(StubChatModel()).invoke({"messages": [HumanMessage(question)]})
    for m in result["messages"][1:]:
        if isinstance(m, ToolMessage):
            print(f"  tool {m.name}: {m.content}")
    print(f"agent: {result['messages'][-1].content}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
