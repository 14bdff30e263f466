"""A plain OpenAI-tools agent loop with Loopgate between the model and the tools.

The loop is the usual one: send the conversation and the tool schemas to the model; when it asks
for tool calls, run them and send the results back; stop when it answers. The one change: each
tool call goes through ``Client.request_approval`` first, and the tool runs with the arguments
that come back (a reviewer may have edited them). Rejections, blocks and timeouts go back to the
model as the tool's result, so it can tell the user.

The model is a stub returning OpenAI-shaped responses, so this runs offline with no API key and no
``openai`` package. With the real thing, ``complete`` is
``openai.OpenAI().chat.completions.create(model=..., messages=messages, tools=TOOLS).model_dump()``.

    pip install ./clients/python
    LOOPGATE_URL=http://127.0.0.1:7800 LOOPGATE_TOKEN=<support-bot token> python examples/openai_tools_loop.py
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Dict, List

from loopgate import Client, NotApproved

CONTEXT = {"customer": {"id": "cus_20002", "tier": "standard"}, "channel": "email"}


def lookup_order(order_id: str) -> Dict[str, Any]:
    return {"order_id": order_id, "total": 120.0, "currency": "EUR", "status": "lost in transit"}


def issue_refund(order_id: str, amount: float, currency: str = "EUR") -> str:
    return f"refunded {amount:g} {currency} on {order_id}"


def send_email(to: str, subject: str, body: str) -> str:
    return f"email to {to} sent: {subject!r}"


IMPLEMENTATIONS: Dict[str, Callable[..., Any]] = {
    "lookup_order": lookup_order,
    "issue_refund": issue_refund,
    "send_email": send_email,
}


def schema(name: str, description: str, **props: str) -> Dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {k: {"type": t} for k, t in props.items()},
                "required": list(props),
            },
        },
    }


TOOLS = [
    schema("lookup_order", "Look up an order by its id.", order_id="string"),
    schema("issue_refund", "Refund an order.", order_id="string", amount="number", currency="string"),
    schema("send_email", "Email the customer.", to="string", subject="string", body="string"),
]


def stub_complete(messages: List[Dict[str, Any]], tools: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Stands in for ``chat.completions.create``: a scripted run of tool calls, OpenAI-shaped."""
    results = [m for m in messages if m["role"] == "tool"]

    def call(i: int, name: str, **args: Any) -> Dict[str, Any]:
        return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}

    if not results:
        msg = {"role": "assistant", "content": None, "tool_calls": [call(1, "lookup_order", order_id="ord_20002")]}
    elif len(results) == 1:
        order = json.loads(results[0]["content"])
        msg = {"role": "assistant", "content": None, "tool_calls": [
            call(2, "issue_refund", order_id=order["order_id"], amount=order["total"], currency=order["currency"]),
            call(3, "send_email", to="jo@example.com", subject="Your refund",
                 body=f"We have refunded order {order['order_id']}."),
        ]}
    else:
        msg = {"role": "assistant", "content": "Done: " + "; ".join(r["content"] for r in results[1:])}
    return {"choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if msg.get("tool_calls") else "stop"}]}


def run_tool(lg: Client, name: str, arguments: Dict[str, Any]) -> str:
    """The gate: ask Loopgate, then run the tool with the approved arguments."""
    try:
        action = lg.request_approval(name, arguments, confidence=0.7, context=CONTEXT, timeout=3600)
    except NotApproved as e:
        return f"not done: {e}"
    result = IMPLEMENTATIONS[name](**action.arguments)
    return result if isinstance(result, str) else json.dumps(result)


def main() -> int:
    messages: List[Dict[str, Any]] = [
        {"role": "system", "content": "You are Northwind's support agent."},
        {"role": "user", "content": "My parcel ord_20002 never arrived. Can I get my money back?"},
    ]
    print(f"customer: {messages[1]['content']}")
    with Client() as lg:  # LOOPGATE_URL, LOOPGATE_TOKEN
        for _ in range(10):
            reply = stub_complete(messages, TOOLS)["choices"][0]["message"]
            messages.append(reply)
            if not reply.get("tool_calls"):
                print(f"agent: {reply['content']}")
                return 0
            for tc in reply["tool_calls"]:
                name, args = tc["function"]["name"], json.loads(tc["function"]["arguments"])
                print(f"  {name}({args}) -> asking Loopgate...", flush=True)
                content = run_tool(lg, name, args)
                print(f"  tool {name}: {content}")
                messages.append({"role": "tool", "tool_call_id": tc["id"], "content": content})
    print("agent: gave up after 10 turns")
    return 1


if __name__ == "__main__":
    sys.exit(main())
