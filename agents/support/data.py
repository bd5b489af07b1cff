"""Read-only access to the support domain's data directory (orders, refund policy, knowledge base).

Call ``SupportData.load(data_dir)`` once and share the result; it reads ``orders.json``, ``policy.json`` and
``kb.jsonl`` from ``data_dir`` and nowhere else. Every path is resolved (symlinks included) and must stay
inside the resolved data directory, so a planted symlink or a crafted name cannot make a tool read other
files: such a read raises :class:`DataAccessError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent_release.agents.validation_messages import first_error

ORDERS_FILE = "orders.json"
POLICY_FILE = "policy.json"
KB_FILE = "kb.jsonl"
# Every file the support tools read (what an agent version's tool-data hash covers).
DATA_FILES = (ORDERS_FILE, POLICY_FILE, KB_FILE)

_T = TypeVar("_T")

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
        orders_doc = _parse(root, ORDERS_FILE, json.loads)
        policy = _parse(root, POLICY_FILE, RefundPolicy.model_validate_json)
        # "\n" only: str.splitlines() also splits at U+2028 and U+0085, which a JSON string holds unescaped.
        kb_lines = read_confined(root, KB_FILE).split("\n")
        kb = tuple(
            _parse_text(root / KB_FILE, line, KbArticle.model_validate_json, line_number=number)
            for number, line in enumerate(kb_lines, 1)
            if line.strip()
        )
        orders: list[Order] = []
        where = "orders"
        try:
            for index, order in enumerate(orders_doc["orders"]):
                where = f"orders.{index}"
                orders.append(Order.model_validate(order))
            where = "today"
            today = date.fromisoformat(orders_doc["today"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataAccessError(f"{root / ORDERS_FILE}: {where}: {_reason(exc)}") from exc
        return cls(data_dir=root, today=today, orders={o.order_id: o for o in orders}, policy=policy, kb=kb)


def _parse(root: Path, name: str, parse: Callable[[str], _T]) -> _T:
    """``parse`` of the text of ``root / name``; :class:`DataAccessError` naming the file when it fails."""
    return _parse_text(root / name, read_confined(root, name), parse)


def _parse_text(path: Path, text: str, parse: Callable[[str], _T], *, line_number: int | None = None) -> _T:
    try:
        return parse(text)
    except (KeyError, TypeError, ValueError) as exc:
        where = f"{path}:{line_number}" if line_number is not None else str(path)
        raise DataAccessError(f"{where}: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    """One line: for pydantic, the first error's field path and message; else the exception's first line."""
    if isinstance(exc, ValidationError):
        return first_error(exc)
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
    if isinstance(exc, KeyError):
        return f"missing key {exc}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


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
