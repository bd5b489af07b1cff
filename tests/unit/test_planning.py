"""`agent-release plan`: the gate line states the confidence level of the configured alpha."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_release.pipelines.planning import confidence_label, plan_power

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("alpha", "label"), [(0.05, "95%"), (0.25, "75%"), (0.025, "97.5%"), (0.1, "90%"), (0.001, "99.9%")]
)
def test_confidence_label_follows_alpha(alpha: float, label: str) -> None:
    assert confidence_label(alpha) == label


def test_plan_states_the_confidence_level_of_the_configured_alpha(tmp_path: Path) -> None:
    (tmp_path / "datasets").symlink_to(ROOT / "datasets")
    text = (ROOT / "pipeline.yaml").read_text(encoding="utf-8")
    assert "\n  alpha: 0.05\n" in text
    (tmp_path / "pipeline.yaml").write_text(text.replace("\n  alpha: 0.05\n", "\n  alpha: 0.25\n", 1))

    lines = plan_power(tmp_path / "pipeline.yaml", tmp_path / "state", assumed_sd=0.5, assumed_icc=0.1)

    gate = next(line for line in lines if line.startswith("gate"))
    assert "one-sided 75% lower confidence bound" in gate, gate
    assert "95%" not in gate
    assert "one-sided alpha 0.25" in gate


def test_a_huge_assumed_sd_prints_readable_numbers(tmp_path: Path) -> None:
    lines = plan_power(ROOT / "pipeline.yaml", tmp_path / "state", assumed_sd=1e300, assumed_icc=0.1)

    # It printed the MDE with 300 digits, twice in the warning line alone.
    mde = next(line for line in lines if line.startswith("MDE"))
    assert "e+299" in mde and len(mde) < 60, mde
    assert all(len(line) < 400 for line in lines), max(lines, key=len)[:120]


@pytest.mark.parametrize(
    ("value", "text"), [(0.0796, "0.0796"), (-12.5, "-12.5000"), (1.591e299, "1.591e+299")]
)
def test_effects_are_fixed_point_until_a_million(value: float, text: str) -> None:
    from agent_release.steps.power import format_effect

    assert format_effect(value) == text


def test_plan_counts_cases_and_clusters_as_the_evaluation_does(tmp_path: Path) -> None:
    import json
    import shutil

    from agent_release.steps.evaluate_variants import _units

    shutil.copytree(ROOT / "datasets", tmp_path / "datasets")
    shutil.copy(ROOT / "pipeline.yaml", tmp_path / "pipeline.yaml")
    golden = tmp_path / "datasets" / "support" / "golden.jsonl"
    cases = [
        {"id": "a", "input": "q", "cluster": "k1"},
        {"id": "b", "input": "q", "cluster": "k1"},
        {"id": "c", "input": "q", "cluster": None},  # each of these is a cluster of its own
        {"id": "d", "input": "q", "cluster": None},
        {"id": "e", "input": "q", "cluster": ""},
        {"id": "f", "input": "q", "cluster": ""},
        {"id": "g", "input": "q"},
    ]
    golden.write_text("".join(json.dumps(c) + "\n" for c in cases))

    lines = plan_power(tmp_path / "pipeline.yaml", tmp_path / "state", assumed_sd=0.5, assumed_icc=0.1)

    evaluated = {u.cluster for u in _units(cases, repeats=1)}
    assert evaluated == {"k1", "c", "d", "e", "f", "g"}
    head = next(line for line in lines if line.startswith("golden set"))
    # It said 4 clusters: the two null clusters counted as one ("None"), and so did the two empty ones.
    assert f"7 cases in {len(evaluated)} clusters" in head, head
