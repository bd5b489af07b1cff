"""Answer templates: the final assistant message composed from structured tool results.

This part is deliberately not learned: once the learned policy has chosen the tools and their arguments,
the answer states what the tools returned, word for word where it matters (ids, statuses, dates, amounts,
article titles).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

HANDOFF = (
    "I'm connecting you with a human agent now. A member of our support team will pick up this "
    "conversation shortly."
)
GREETING = (
    "Hello! I'm the shop's support assistant. I can help with order status, refunds and questions about "
    "shipping, returns, payments and your account."
)
# The support tools whose results the templates below word. Any other tool (a project training the demo model
# family for its own agent) gets the generic wording: its result quoted, never "order".
_ORDER_TOOLS = ("lookup_order", "check_refund_eligibility")
ARGUMENT_NAMES = {
    "order_id": "order number (it looks like ORD-12345)",
    "query": "question",
    "reason": "reason",
}


@dataclass(frozen=True)
class ToolOutcome:
    """A tool result as the model received it: parsed JSON when possible, else the raw text."""

    name: str
    text: str
    result: Mapping[str, Any] | None

    @property
    def failed(self) -> bool:
        """True when the tool errored, returned no JSON object, or found nothing (``found: false``); for the
        refund tool also a result with a ``message`` and no ``decision`` (an unknown reason). Another tool's
        ``message`` key is ordinary content and does not end the plan."""
        if self.result is None:
            return True
        if self.result.get("found") is False:
            return True
        return self.name == "check_refund_eligibility" and (
            "message" in self.result and "decision" not in self.result
        )


def direct_answer(intent: str) -> str:
    """The reply for intents whose plan calls no tool."""
    return HANDOFF if intent == "escalate" else GREETING


def ask_for(argument: str) -> str:
    """The reply when a planned tool needs an argument the message does not contain."""
    return f"I can help with that. Could you tell me your {ARGUMENT_NAMES.get(argument, argument)}?"


def unavailable(tool: str) -> str:
    """The reply when the planned tool is not offered in this request."""
    return f"I can't use {tool} in this conversation, so I'm connecting you with a human agent who can."


def compose_answer(outcomes: Sequence[ToolOutcome]) -> str:
    """The final answer for the tool results of this turn (the last result decides the message)."""
    last = outcomes[-1]
    if last.result is None:
        first_line = last.text.strip().splitlines()[0] if last.text.strip() else "no result"
        return f"Sorry, {last.name} failed ({first_line}). I'm connecting you with a human agent."
    result = last.result
    if result.get("found") is False:
        if last.name not in _ORDER_TOOLS:
            return f"{last.name} found nothing: {last.text}"
        return (
            f"I could not find an order with the id {result.get('order_id', '')}. Please double-check the id."
        )
    if last.name == "lookup_order":
        return _order_answer(result)
    if last.name == "check_refund_eligibility":
        return _refund_answer(result)
    if last.name == "search_kb":
        return _kb_answer(result)
    return f"{last.name} returned: {last.text}"


def _order_answer(order: Mapping[str, Any]) -> str:
    status = order.get("status", "unknown")
    sentences = [f"Order {order.get('order_id')} is {status}."]
    if status == "delivered":
        sentences.append(f"It was delivered on {order.get('delivery_date')}.")
    elif status == "shipped":
        sentences.append(f"It is on its way and should arrive by {order.get('promised_date')}.")
    elif status == "processing":
        sentences.append(
            f"It is being prepared in our warehouse; estimated arrival {order.get('promised_date')}."
        )
    items = order.get("items") or []
    if items:
        listed = ", ".join(f"{i.get('quantity')} x {i.get('name')}" for i in items)
        sentences.append(f"Items: {listed}.")
    return " ".join(sentences)


def _refund_answer(refund: Mapping[str, Any]) -> str:
    if "decision" not in refund:
        return f"I could not check the refund: {refund.get('message', 'unknown problem')}."
    text = (
        f"Your refund request for {refund.get('order_id')} ({refund.get('reason')}) is {refund['decision']}: "
        f"{refund.get('explanation')}."
    )
    if refund["decision"] == "approved":
        text += (
            f" We will refund ${float(refund.get('refund_amount', 0.0)):.2f} to your original payment method."
        )
    return text


def _kb_answer(search: Mapping[str, Any]) -> str:
    results = search.get("results") or []
    if not results:
        return "I could not find a help-centre article about that. Could you rephrase your question?"
    top = results[0]
    title, article = top.get("title"), top.get("article_id")
    return f'Here is what our help centre says in "{title}" ({article}): {top.get("snippet")}'
