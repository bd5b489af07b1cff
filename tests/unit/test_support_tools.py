"""The support tools: order lookup, the written refund policy, KB search, and data-directory confinement."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent_release.agents.support.data import DataAccessError, SupportData, confined_path
from agent_release.agents.support.policy import REFUND_REASONS
from agent_release.agents.support.prompts import SYSTEM_PROMPT
from agent_release.agents.support.tools import TOOL_NAMES, SupportToolbox, support_tools

SHIPPED = Path(__file__).resolve().parents[2] / "datasets" / "support"
TODAY = date(2026, 11, 1)


def _item(category: str, price: float, quantity: int = 1) -> dict[str, Any]:
    return {
        "sku": "SKU-1",
        "name": f"{category} thing",
        "category": category,
        "quantity": quantity,
        "unit_price": price,
    }


def _order(
    num: int, status: str, delivered_days_ago: int | None, items: list[dict[str, Any]], late: bool = False
):
    delivery = TODAY - timedelta(days=delivered_days_ago) if delivered_days_ago is not None else None
    ordered = (delivery or TODAY) - timedelta(days=5)
    promised = ordered + timedelta(days=2 if late else 9)
    return {
        "order_id": f"ORD-{num}",
        "customer": "Test Customer",
        "items": items,
        "order_date": ordered.isoformat(),
        "promised_date": promised.isoformat(),
        "delivery_date": delivery.isoformat() if delivery else None,
        "status": status,
    }


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A small data directory whose orders exercise each rule of the policy."""
    orders = [
        _order(10001, "delivered", 400, [_item("home", 30.0)]),  # damaged long ago
        _order(10002, "delivered", 10, [_item("gift_card", 50.0)]),  # all non-refundable
        _order(10003, "delivered", 10, [_item("books", 20.0, 2), _item("perishable", 15.0)]),  # mixed
        _order(10004, "delivered", 31, [_item("books", 20.0)]),  # window passed
        _order(10005, "delivered", 30, [_item("books", 20.0)]),  # last day of window
        _order(10006, "processing", None, [_item("toys", 40.0)]),
        _order(10007, "shipped", None, [_item("toys", 40.0)], late=True),
        _order(10008, "shipped", None, [_item("toys", 40.0)]),
        _order(10009, "delivered", 61, [_item("clothing", 25.0)]),  # wrong item too late
        _order(10010, "delivered", 59, [_item("clothing", 25.0)]),
        _order(10011, "refunded", 20, [_item("clothing", 25.0)]),
        _order(10012, "delivered", 3, [_item("clothing", 25.0)], late=True),
    ]
    (tmp_path / "orders.json").write_text(json.dumps({"today": TODAY.isoformat(), "orders": orders}))
    (tmp_path / "policy.json").write_text((SHIPPED / "policy.json").read_text())
    articles = [
        {
            "id": "KB-1",
            "title": "Shipping times",
            "category": "shipping",
            "body": "Standard shipping takes 3 days.",
        },
        {
            "id": "KB-2",
            "title": "Resetting your password",
            "category": "account",
            "body": "Use forgot password.",
        },
        {"id": "KB-3", "title": "Gift cards", "category": "payments", "body": "Gift cards never expire."},
    ]
    (tmp_path / "kb.jsonl").write_text("".join(json.dumps(a) + "\n" for a in articles))
    return tmp_path


@pytest.mark.parametrize(
    ("order_id", "reason", "decision", "amount"),
    [
        ("ORD-10001", "damaged", "approved", 30.0),
        ("ORD-10002", "changed_mind", "denied", 0.0),
        ("ORD-10002", "damaged", "approved", 50.0),
        ("ORD-10003", "changed_mind", "approved", 40.0),
        ("ORD-10004", "changed_mind", "denied", 0.0),
        ("ORD-10005", "changed_mind", "approved", 20.0),
        ("ORD-10006", "changed_mind", "approved", 40.0),
        ("ORD-10007", "late_delivery", "approved", 40.0),
        ("ORD-10008", "late_delivery", "denied", 0.0),
        ("ORD-10008", "damaged", "denied", 0.0),
        ("ORD-10009", "wrong_item", "denied", 0.0),
        ("ORD-10010", "wrong_item", "approved", 25.0),
        ("ORD-10011", "damaged", "denied", 0.0),
        ("ORD-10012", "late_delivery", "approved", 25.0),
        ("ORD-10010", "late_delivery", "denied", 0.0),
    ],
)
def test_refund_policy_rules(
    data_dir: Path, order_id: str, reason: str, decision: str, amount: float
) -> None:
    result = SupportToolbox(data_dir).check_refund_eligibility(order_id, reason)
    assert result["decision"] == decision, result
    assert result["refund_amount"] == pytest.approx(amount)
    assert result["as_of"] == TODAY.isoformat()


def test_refund_check_reports_unknown_orders_and_reasons(data_dir: Path) -> None:
    box = SupportToolbox(data_dir)
    assert box.check_refund_eligibility("ORD-99999", "damaged")["found"] is False
    unknown_reason = box.check_refund_eligibility("ORD-10001", "bored")
    assert "decision" not in unknown_reason and "unknown reason" in unknown_reason["message"]


def test_lookup_order_returns_status_dates_and_items(data_dir: Path) -> None:
    box = SupportToolbox(data_dir)
    order = box.lookup_order(" ord-10003 ")
    assert order["found"] is True and order["order_id"] == "ORD-10003"
    assert order["status"] == "delivered"
    assert order["delivery_date"] == (TODAY - timedelta(days=10)).isoformat()
    assert order["total"] == pytest.approx(55.0)
    assert [i["category"] for i in order["items"]] == ["books", "perishable"]
    assert box.lookup_order("ORD-55555") == {
        "found": False,
        "order_id": "ORD-55555",
        "message": "no order with id ORD-55555",
    }
    assert box.lookup_order("../../etc/passwd")["found"] is False


def test_search_kb_ranks_by_tfidf_and_returns_titles_and_snippets(data_dir: Path) -> None:
    result = SupportToolbox(data_dir).search_kb("I forgot my password")
    assert result["results"][0]["article_id"] == "KB-2"
    assert result["results"][0]["title"] == "Resetting your password"
    assert result["results"][0]["snippet"] == "Use forgot password."
    assert SupportToolbox(data_dir).search_kb("zzzz qqqq")["results"] == []


def test_shipped_kb_has_forty_articles_and_search_finds_them() -> None:
    box = SupportToolbox(SHIPPED)
    assert len(box.data.kb) == 40
    assert (
        box.search_kb("how long does standard shipping take")["results"][0]["title"]
        == "Standard shipping times"
    )


def test_tools_refuse_to_read_outside_their_data_directory(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside") / "secret.json"
    outside.write_text(json.dumps({"today": "2026-11-01", "orders": []}))
    (data_dir / "orders.json").unlink()
    (data_dir / "orders.json").symlink_to(outside)
    with pytest.raises(DataAccessError, match="outside the data directory"):
        SupportData.load(data_dir)
    with pytest.raises(DataAccessError, match="outside the data directory"):
        confined_path(data_dir, "../secret.json")
    assert confined_path(data_dir, "kb.jsonl") == (data_dir / "kb.jsonl").resolve()


def test_missing_or_malformed_data_is_a_one_line_error(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(DataAccessError, match="not found") as missing:
        SupportData.load(tmp_path / "nope")
    assert "\n" not in str(missing.value)
    (data_dir / "policy.json").write_text(json.dumps({"return_window_days": 30}))
    with pytest.raises(DataAccessError) as info:
        SupportData.load(data_dir)
    assert str(info.value).startswith(f"{data_dir.resolve() / 'policy.json'}: "), info.value
    assert "Field required" in str(info.value) and "\n" not in str(info.value)


def _break_orders_status(data_dir: Path) -> None:
    doc = json.loads((data_dir / "orders.json").read_text())
    doc["orders"][2]["status"] = "lost"
    (data_dir / "orders.json").write_text(json.dumps(doc))


def _break_kb_line_two(data_dir: Path) -> None:
    lines = (data_dir / "kb.jsonl").read_text().splitlines()
    lines[1] = "{not json"
    (data_dir / "kb.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("damage", "where", "reason"),
    [
        (lambda d: (d / "orders.json").write_text("{broken"), "orders.json", "not valid JSON"),
        (lambda d: (d / "policy.json").write_text("[]"), "policy.json", "Input should be an object"),
        (_break_orders_status, "orders.json", "orders.2: status: Input should be"),
        (_break_kb_line_two, "kb.jsonl:2", "Invalid JSON"),
    ],
)
def test_a_malformed_data_file_is_named_with_the_line_or_field(
    data_dir: Path, damage: Any, where: str, reason: str
) -> None:
    # It said "malformed support data in <dir>: 1 validation error for RefundPolicy", naming neither the file
    # nor the field (and, for bad JSON, not even the file).
    damage(data_dir)
    with pytest.raises(DataAccessError) as info:
        SupportData.load(data_dir)
    message = str(info.value)
    assert message.startswith(f"{data_dir.resolve() / where}: {reason}"), message
    assert "\n" not in message


def test_strands_tools_have_schemas_and_call_through(data_dir: Path) -> None:
    tools = support_tools(data_dir)
    assert tuple(t.tool_name for t in tools) == TOOL_NAMES
    specs = {t.tool_spec["name"]: t.tool_spec["inputSchema"]["json"] for t in tools}
    assert specs["lookup_order"]["required"] == ["order_id"]
    assert sorted(specs["check_refund_eligibility"]["properties"]["reason"]["enum"]) == sorted(REFUND_REASONS)
    assert specs["search_kb"]["required"] == ["query"]
    by_name = {t.tool_name: t for t in tools}
    assert by_name["lookup_order"](order_id="ORD-10006")["status"] == "processing"
    assert (
        by_name["check_refund_eligibility"](order_id="ORD-10001", reason="damaged")["decision"] == "approved"
    )


def test_policy_document_states_the_numbers_the_tool_applies() -> None:
    policy = json.loads((SHIPPED / "policy.json").read_text())
    text = (SHIPPED / "policy.md").read_text()
    assert f"**{policy['return_window_days']} days**" in text
    assert f"**{policy['wrong_item_window_days']} days**" in text
    listed = re.findall(r"^- `(\w+)`$", text, flags=re.MULTILINE)
    assert listed == policy["non_refundable_categories"]
    for reason in REFUND_REASONS:
        assert f"`{reason}`" in text


def test_system_prompt_names_every_tool() -> None:
    for name in TOOL_NAMES:
        assert name in SYSTEM_PROMPT
