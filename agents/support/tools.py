"""The customer-support tools: deterministic functions over one data directory, wrapped as Strands tools.

``support_tools(Path("datasets/support"))`` returns the three Strands ``@tool`` objects bound to that
directory (give them to ``Agent(tools=...)``). :class:`SupportToolbox` holds the same functions
undecorated, for code that runs the tools directly (data generation, offline checks, tests). Results are
JSON-ready dicts; an unknown order is a normal result (``found: false``), not an error, so the model can
explain it to the user.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_release.agents.support.data import ORDER_ID_PATTERN, SupportData
from agent_release.agents.support.kb_search import KbIndex
from agent_release.agents.support.policy import REFUND_REASONS, RefundReason, decide_refund

if TYPE_CHECKING:
    from strands.types.tools import AgentTool

TOOL_NAMES: tuple[str, ...] = ("lookup_order", "check_refund_eligibility", "search_kb")
KB_RESULTS = 3


class SupportToolbox:
    """The tool functions bound to one data directory (loaded once, read-only)."""

    def __init__(self, data_dir: Path) -> None:
        self.data = SupportData.load(data_dir)
        self._kb_index: KbIndex | None = None

    def lookup_order(self, order_id: str) -> dict[str, Any]:
        """Status, dates and items of ``order_id`` (``found: false`` when there is no such order)."""
        order_id = order_id.strip().upper()
        if not ORDER_ID_PATTERN.match(order_id):
            return {"found": False, "order_id": order_id, "message": "order ids look like ORD-12345"}
        order = self.data.orders.get(order_id)
        if order is None:
            return {"found": False, "order_id": order_id, "message": f"no order with id {order_id}"}
        return {
            "found": True,
            "order_id": order.order_id,
            "status": order.status,
            "order_date": order.order_date.isoformat(),
            "promised_date": order.promised_date.isoformat(),
            "delivery_date": order.delivery_date.isoformat() if order.delivery_date else None,
            "items": [
                {"name": i.name, "category": i.category, "quantity": i.quantity, "unit_price": i.unit_price}
                for i in order.items
            ],
            "total": order.total,
        }

    def check_refund_eligibility(self, order_id: str, reason: str) -> dict[str, Any]:
        """The refund policy's decision for ``order_id`` and ``reason`` as of the data's fixed 'today'."""
        order_id = order_id.strip().upper()
        order = self.data.orders.get(order_id)
        if order is None:
            return {"found": False, "order_id": order_id, "message": f"no order with id {order_id}"}
        if reason not in REFUND_REASONS:
            return {
                "found": True,
                "order_id": order_id,
                "message": f"unknown reason {reason!r}; use one of {', '.join(REFUND_REASONS)}",
            }
        decision = decide_refund(order, reason, self.data.policy, self.data.today)
        return {"found": True, "as_of": self.data.today.isoformat(), **decision.model_dump()}

    def search_kb(self, query: str) -> dict[str, Any]:
        """The best knowledge-base articles for ``query`` (id, title, snippet, score), best first."""
        if self._kb_index is None:
            self._kb_index = KbIndex(self.data.kb)
        hits = self._kb_index.search(query, k=KB_RESULTS)
        return {"query": query, "results": [h.model_dump() for h in hits]}


def support_tools(data_dir: Path) -> list[AgentTool]:
    """Strands tools ``lookup_order``, ``check_refund_eligibility``, ``search_kb`` bound to ``data_dir``."""
    from strands import tool

    box = SupportToolbox(data_dir)

    @tool
    def lookup_order(order_id: str) -> dict[str, Any]:
        """Look up a customer order: status, order/promised/delivery dates, items and total.

        Args:
            order_id: The order id, formatted like ORD-10427.
        """
        return box.lookup_order(order_id)

    @tool
    def check_refund_eligibility(order_id: str, reason: RefundReason) -> dict[str, Any]:
        """Check whether an order can be refunded under the written refund policy.

        Args:
            order_id: The order id, formatted like ORD-10427.
            reason: Why the customer wants a refund: damaged, wrong_item, changed_mind or late_delivery.
        """
        return box.check_refund_eligibility(order_id, reason)

    @tool
    def search_kb(query: str) -> dict[str, Any]:
        """Search the help-centre knowledge base (shipping, returns, payments, account, products).

        Args:
            query: What the customer wants to know, in a few words.
        """
        return box.search_kb(query)

    return [lookup_order, check_refund_eligibility, search_kb]
