"""The demo tools cannot be steered outside their data directory by what the model asks for.

tests/unit/test_support_tools.py covers loading: a data file symlinked outside the directory and ``..`` in a
file name are refused. This drill covers the calls an agent makes at run time: every tool is called with
hostile arguments (path traversal, absolute paths, NUL bytes, huge strings, arbitrary text) while a Python
audit hook records every file the process opens. Property: no call opens any file, and each returns a
JSON-ready answer (an unknown order is an answer, not an exception).
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent_release.agents.support.policy import REFUND_REASONS
from agent_release.agents.support.tools import SupportToolbox

DATA_DIR = Path(__file__).resolve().parents[2] / "datasets" / "support"
TOOLBOX = SupportToolbox(DATA_DIR)
TOOLBOX.search_kb(
    "warm up"
)  # the first search builds the TF-IDF index (imports scikit-learn): not a data read

_recording = threading.local()
_opened: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and getattr(_recording, "on", False):
        _opened.append(str(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed; it only records while _recording.on is set

hostile = st.one_of(
    st.sampled_from(
        [
            "../../../../etc/passwd",
            "/etc/shadow",
            "ORD-10427/../../orders.json",
            "..\\..\\windows\\system32",
            "file:///etc/hosts",
            "ORD-\x0010427",
            "~/.aws/credentials",
            "orders.json",
            "ORD-" + "9" * 10_000,
        ]
    ),
    st.text(max_size=300),
)


def _call(name: str, *args: str) -> dict[str, Any]:
    _opened.clear()
    _recording.on = True
    try:
        result: dict[str, Any] = getattr(TOOLBOX, name)(*args)
    finally:
        _recording.on = False
    assert _opened == [], f"{name}{args!r:.200} opened {_opened[:5]}"
    json.dumps(result)  # JSON-ready: what the agent loop sends back to the model
    return result


@given(hostile)
@settings(max_examples=80, deadline=None)
def test_lookup_order_reads_no_file_whatever_the_argument(order_id: str) -> None:
    result = _call("lookup_order", order_id)
    if not result["found"]:
        assert "message" in result


@given(hostile, st.one_of(st.sampled_from(list(REFUND_REASONS)), hostile))
@settings(max_examples=80, deadline=None)
def test_check_refund_eligibility_reads_no_file_whatever_the_arguments(order_id: str, reason: str) -> None:
    _call("check_refund_eligibility", order_id, reason)


@given(hostile)
@settings(max_examples=80, deadline=None)
def test_search_kb_reads_no_file_and_returns_only_kb_articles(query: str) -> None:
    result = _call("search_kb", query)
    kb_ids = {article.id for article in TOOLBOX.data.kb}
    assert {hit["article_id"] for hit in result["results"]} <= kb_ids


def test_the_audit_hook_sees_opens() -> None:
    """Sanity: the hook would have caught a tool that reads a file."""
    _opened.clear()
    _recording.on = True
    try:
        (DATA_DIR / "orders.json").read_bytes()
    finally:
        _recording.on = False
    assert _opened and _opened[0].endswith("orders.json")
