"""The written refund policy (``datasets/support/policy.md``) as a pure function.

``decide_refund(order, reason, policy, today)`` returns a :class:`RefundDecision`; it never reads files, so
the same inputs always give the same decision.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict

from agent_release.agents.support.data import Order, RefundPolicy

RefundReason = Literal["damaged", "wrong_item", "changed_mind", "late_delivery"]
REFUND_REASONS: tuple[RefundReason, ...] = ("damaged", "wrong_item", "changed_mind", "late_delivery")


class RefundDecision(BaseModel):
    """Outcome of a refund check: ``decision`` is "approved" or "denied", with the policy rule applied."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    order_id: str
    reason: RefundReason
    decision: Literal["approved", "denied"]
    refund_amount: float
    rule: str
    explanation: str


def decide_refund(order: Order, reason: RefundReason, policy: RefundPolicy, today: date) -> RefundDecision:
    """Apply the refund policy to ``order`` for ``reason`` as of ``today``."""

    def approve(amount: float, rule: str, explanation: str) -> RefundDecision:
        return RefundDecision(
            order_id=order.order_id,
            reason=reason,
            decision="approved",
            refund_amount=round(amount, 2),
            rule=rule,
            explanation=explanation,
        )

    def deny(rule: str, explanation: str) -> RefundDecision:
        return RefundDecision(
            order_id=order.order_id,
            reason=reason,
            decision="denied",
            refund_amount=0.0,
            rule=rule,
            explanation=explanation,
        )

    if order.status in ("cancelled", "refunded"):
        return deny("already_closed", f"the order is already {order.status}")
    if order.status == "processing":
        return approve(order.total, "not_shipped", "the order has not shipped yet, so it can be cancelled")
    if order.status == "shipped" or order.delivery_date is None:
        if reason == "late_delivery" and today > order.promised_date:
            return approve(order.total, "late_in_transit", "the order is past its promised delivery date")
        return deny(
            "not_delivered", "the order is still in transit; a refund can be requested after delivery"
        )

    days_since_delivery = (today - order.delivery_date).days
    if reason == "damaged":
        return approve(order.total, "damaged", "damaged items are always refundable")
    if reason == "wrong_item":
        if days_since_delivery <= policy.wrong_item_window_days:
            return approve(order.total, "wrong_item", "we sent the wrong item")
        return deny(
            "wrong_item_window",
            f"wrong items must be reported within {policy.wrong_item_window_days} days of delivery",
        )
    if reason == "late_delivery":
        if order.delivery_date > order.promised_date:
            return approve(order.total, "late_delivery", "the order arrived after its promised date")
        return deny("on_time", "the order arrived by its promised date")
    # changed_mind: the standard return window, refundable categories only
    if days_since_delivery > policy.return_window_days:
        return deny(
            "return_window",
            f"the {policy.return_window_days}-day return window from delivery has passed",
        )
    refundable = sum(
        i.quantity * i.unit_price for i in order.items if i.category not in policy.non_refundable_categories
    )
    if refundable <= 0:
        return deny("non_refundable", "every item in the order is in a non-refundable category")
    return approve(refundable, "return_window", "the order is within the return window")
