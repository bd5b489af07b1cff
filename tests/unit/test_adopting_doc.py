"""docs/adopting.md tells a scorer author what the evaluation hands a row scorer: the keys it lists are the keys
``evaluate_variants`` passes (``CaseUnit.scorer_inputs``, ``CaseOutcome.outputs``), no more and no fewer."""

from __future__ import annotations

import re
from pathlib import Path

from agent_release.steps.eval_harness import CaseOutcome, CaseUnit

ROOT = Path(__file__).resolve().parents[2]


def _documented_keys(argument: str) -> set[str]:
    """The top-level keys adopting.md's bullet for ``argument`` names (``- `inputs`: `{...}```)."""
    text = (ROOT / "docs" / "adopting.md").read_text(encoding="utf-8")
    match = re.search(rf"^- `{argument}`: `(\{{.*?\}})`", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"adopting.md has no bullet for {argument}"
    nested = re.sub(r"\[\{[^]]*\}\]", "", match.group(1).replace("\n", " "))
    return set(re.findall(r'"(\w+)"', nested))


def _unit() -> CaseUnit:
    return CaseUnit(case_id="HD-001", cluster="c1", input="hello")


def test_the_scorer_inputs_documented_are_the_ones_passed() -> None:
    assert _documented_keys("inputs") == set(_unit().scorer_inputs())


def test_the_scorer_outputs_documented_are_the_ones_passed() -> None:
    assert _documented_keys("outputs") == set(CaseOutcome(unit=_unit(), variant="champion").outputs())
