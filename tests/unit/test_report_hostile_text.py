"""The HTML report with hostile text in every stored string it shows (security review, session 21).

Every string of every step's stored output that its report model accepts with a hostile suffix gets one
(case ids, cluster keys, tags, model answers, tool arguments, scorer names and errors, variant, endpoint and
package names, MLflow run names, guard notes; dict keys too, so metric and variant names reach the SVG
labels), and so do the pipeline name, the stored pipeline.yaml, a failed step's error and an audit reason.
The page must stay inert: no element, attribute, link or style the stored text brought in.
"""

from __future__ import annotations

import importlib
import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest
from _report_fixtures import build_execution
from pydantic import BaseModel, ValidationError

from agent_release.pipelines.executor import ExecutionStore
from agent_release.pipelines.report import REPORT_MODELS, render_report

# HTML, attribute, URL, CSS, comment, CDATA and template contexts, a terminal escape and a bidi override.
PAYLOAD = (
    "\"'><img src=x onerror=alert(1)><script>alert(2)</script></style></title></textarea>"
    '<a href="javascript:alert(3)">x</a><svg onload=alert(4)>]]><!-- {{7*7}} \x1b[2J\u202e'
)
# Elements the template itself writes; anything else was brought in by stored text.
TEMPLATE_TAGS = {
    "html", "head", "meta", "title", "style", "body", "main", "header", "nav", "section", "h1", "h2", "h3",
    "p", "a", "span", "strong", "code", "pre", "table", "thead", "tbody", "tr", "th", "td", "dl", "dt", "dd",
    "details", "summary", "figure", "figcaption", "div", "ul", "li", "br", "em", "small",
}  # fmt: skip
# matplotlib's SVG vocabulary.
SVG_TAGS = {
    "svg", "defs", "style", "g", "path", "text", "clippath", "rect", "use", "line", "polyline", "circle",
    "tspan", "title", "desc", "metadata",
}  # fmt: skip


class _Page(HTMLParser):
    """Every start tag with its attributes, and the text of each <style> and <title>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self._open: list[str] = []
        self.raw_text: dict[str, list[str]] = {"style": [], "title": [], "script": []}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._open and self._open[-1] in self.raw_text:
            self.raw_text[self._open[-1]].append(data)


def _poison(value: Any) -> Any:
    """``value`` with PAYLOAD appended to every string and string dict key."""
    if isinstance(value, str):
        return value + PAYLOAD
    if isinstance(value, list):
        return [_poison(v) for v in value]
    if isinstance(value, dict):
        return {(k + PAYLOAD if isinstance(k, str) else k): _poison(v) for k, v in value.items()}
    return value


def _restore(poisoned: Any, original: Any, loc: tuple[Any, ...]) -> Any:
    """``poisoned`` with the subtree at the validation error's ``loc`` put back to the original."""
    if not loc:
        return original
    head, rest = loc[0], loc[1:]
    if isinstance(poisoned, list) and isinstance(head, int) and head < len(poisoned):
        poisoned[head] = _restore(poisoned[head], original[head], rest)
        return poisoned
    if isinstance(poisoned, dict):
        key = head if head in poisoned else f"{head}{PAYLOAD}" if f"{head}{PAYLOAD}" in poisoned else None
        plain = str(head).removesuffix(PAYLOAD)
        if key is None and plain in poisoned:
            return poisoned  # already put back by an earlier error about the same key
        if key is None or plain not in original:
            return original  # the error is about the mapping itself (a key it refuses): restore it whole
        if key != plain and not rest:  # a field's name: put the name back, keep its (poisoned) value
            poisoned[plain] = poisoned.pop(key)
            return poisoned
        poisoned[key] = _restore(poisoned[key], original[plain], rest)
        return poisoned
    return original


def _hostile_output(model: type[BaseModel], data: Any) -> Any:
    """``data`` with PAYLOAD in every string the model still accepts (enums and patterns keep theirs)."""
    poisoned = _poison(data)
    for _ in range(500):
        try:
            model.model_validate(poisoned)
            return poisoned
        except ValidationError as exc:
            for error in exc.errors():
                poisoned = _restore(poisoned, data, tuple(error["loc"]))
    raise AssertionError(f"could not poison {model.__name__}")


@pytest.fixture(scope="module")
def hostile_page(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int]:
    state_dir = tmp_path_factory.mktemp("hostile")
    execution_id = build_execution(state_dir, audit_reason_suffix=PAYLOAD)
    store = ExecutionStore(state_dir)
    poisoned = 0
    try:
        for row in store.steps(execution_id):
            if row["status"] != "succeeded" or not row["output_json"]:
                continue
            module, name = REPORT_MODELS[row["name"]]
            model = getattr(importlib.import_module(module), name)
            original = json.loads(row["output_json"])
            hostile = _hostile_output(model, original)
            poisoned += json.dumps(hostile).count("onerror=alert(1)")
            store.mark_step(execution_id, row["name"], "succeeded", output_json=json.dumps(hostile))
        store.mark_step(execution_id, "train_model", "failed", error="KeyError: " + PAYLOAD)
        with store._tx() as c:
            c.execute(
                "UPDATE executions SET pipeline = ?, config_text = config_text || ? WHERE id = ?",
                ("support-release" + PAYLOAD, "# " + PAYLOAD, execution_id),
            )
    finally:
        store.close()
    return render_report(state_dir, execution_id).read_text(encoding="utf-8"), poisoned


def test_hostile_text_reached_the_report(hostile_page: tuple[str, int]) -> None:
    text, poisoned = hostile_page
    # Hundreds of stored strings carry the payload, and the page shows them (escaped).
    assert poisoned > 300
    assert text.count("onerror=alert(1)") > 100
    # Metric, cluster and variant names reached matplotlib's labels in at least three figures.
    svgs = re.findall(r"<svg.*?</svg>", text, re.DOTALL)
    assert len([svg for svg in svgs if "onerror=alert(1)" in svg]) >= 3


def test_hostile_text_adds_no_element_attribute_or_link(hostile_page: tuple[str, int]) -> None:
    text, _ = hostile_page
    page = _Page()
    page.feed(text)
    tags = {tag for tag, _ in page.elements}
    assert tags <= TEMPLATE_TAGS | SVG_TAGS, tags - TEMPLATE_TAGS - SVG_TAGS
    for tag, attrs in page.elements:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        for name in ("href", "xlink:href", "src", "action", "formaction", "style"):
            value = attrs.get(name, "").strip().lower()
            assert not value.startswith(("javascript:", "data:", "vbscript:")), (tag, name, value)
            assert "alert(" not in value, (tag, name, value)
        if tag == "a":
            assert attrs.get("href", "#").startswith(("#", "http://", "https://")), attrs
    # Raw-text elements hold only what the template and matplotlib put there.
    assert not page.raw_text["script"]
    assert "alert(" not in "".join(page.raw_text["style"])
    assert [t for t, _ in page.elements].count("title") >= 1
    assert text.count("<script") == 0
