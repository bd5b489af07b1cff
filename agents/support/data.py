"""Read-only access to the support domain's data directory (orders, refund policy, knowledge base).

Call ``SupportData.load(data_dir)`` once and share the result; it reads ``orders.json``, ``policy.json`` and
``kb.jsonl`` from ``data_dir`` and nowhere else. Every path is resolved (symlinks included) and must stay
inside the resolved data directory, so a planted symlink or a crafted name cannot make a tool read other
files: such a read raises :class:`DataAccessError`.
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ORDERS_FILE = "orders.json"
POLICY_FILE = "policy.json"
KB_FILE = "kb.jsonl"

ORDER_ID_PATTERN = re.compile(r"^ORD-\d{5}$")

OrderStatus = Literal["processing", "shipped", "delivered", "cancelled", "refunded"]


class DataAccessError(ValueError):
    """The data directory is missing, malformed, or a read tried to leave it (message is one line)."""


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OrderItem(_Record):
    """One line of an order."""

    sku: str
    name: str
    category: str
    quantity: int = Field(ge=1)
    unit_price: float = Field(ge=0)


class Order(_Record):
    """One customer order; dates are ISO days, ``delivery_date`` is None until delivered."""

    order_id: str = Field(pattern=ORDER_ID_PATTERN.pattern)
    customer: str
    items: tuple[OrderItem, ...]
    order_date: date
    promised_date: date
    delivery_date: date | None
    status: OrderStatus

    @property
    def total(self) -> float:
        """Order total (sum of quantity x unit price), rounded to cents."""
        return round(sum(i.quantity * i.unit_price for i in self.items), 2)


class RefundPolicy(_Record):
    """The machine-readable form of ``policy.md`` (the tests check the two agree)."""

    return_window_days: int = Field(ge=1)
    wrong_item_window_days: int = Field(ge=1)
    non_refundable_categories: tuple[str, ...]


class KbArticle(_Record):
    """One help-centre article."""

    id: str
    title: str
    category: str
    body: str


class SupportData(BaseModel):
    """Everything the support tools read, loaded from one data directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path
    today: date = Field(description="The fixed 'today' refund decisions use, so results are deterministic.")
    orders: dict[str, Order]
    policy: RefundPolicy
    kb: tuple[KbArticle, ...]

    @classmethod
    def load(cls, data_dir: Path) -> SupportData:
        """Load and validate the three data files of ``data_dir``; raises :class:`DataAccessError`."""
        root = data_dir.resolve()
        if not root.is_dir():
            raise DataAccessError(f"support data directory not found: {data_dir}")
        orders_doc = json.loads(read_confined(root, ORDERS_FILE))
        policy_doc = json.loads(read_confined(root, POLICY_FILE))
        kb_lines = read_confined(root, KB_FILE).splitlines()
        try:
            orders = [Order.model_validate(o) for o in orders_doc["orders"]]
            return cls(
                data_dir=root,
                today=date.fromisoformat(orders_doc["today"]),
                orders={o.order_id: o for o in orders},
                policy=RefundPolicy.model_validate(policy_doc),
                kb=tuple(KbArticle.model_validate_json(line) for line in kb_lines if line.strip()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            first_line = str(exc).splitlines()[0]
            raise DataAccessError(f"malformed support data in {data_dir}: {first_line}") from exc


def confined_path(root: Path, name: str) -> Path:
    """``root / name`` resolved; raises :class:`DataAccessError` if the result is not inside ``root``."""
    base = root.resolve()
    target = (base / name).resolve()
    if not target.is_relative_to(base):
        raise DataAccessError(f"refusing to read outside the data directory: {name}")
    return target


def read_confined(root: Path, name: str) -> str:
    """Text of the file ``name`` inside ``root`` (see :func:`confined_path`)."""
    target = confined_path(root, name)
    try:
        return target.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataAccessError(f"cannot read {name} in {root}: {exc.strerror}") from exc
