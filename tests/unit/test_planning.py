"""`agent-release plan`: the gate line states the confidence level of the configured alpha."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    ("value", "text"),
    [(0.0796, "0.0796"), (-12.5, "-12.5000"), (1.591e299, "1.591e+299"), (-2.5e300, "-2.5e+300")],
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


def test_plan_uses_the_last_evaluation_and_says_which_value_was_given(tmp_path: Path) -> None:
    """With an evaluation stored, ``--icc`` alone replaces the ICC and the SD stays the observed one; the
    variance line says which is which (it used to claim "no evaluation yet" and assume SD 0.5)."""
    execution = store_evaluation(tmp_path / "state", evaluation_report())

    observed = variance_line(plan_power(ROOT / "pipeline.yaml", tmp_path / "state"))
    given = variance_line(plan_power(ROOT / "pipeline.yaml", tmp_path / "state", assumed_icc=0.9))
    assumed = variance_line(plan_power(ROOT / "pipeline.yaml", tmp_path / "empty", assumed_sd=0.3))

    sd = observed.split("SD ")[1].split()[0]
    assert f"observed in execution {execution}" in observed and "as given" not in observed, observed
    assert sd != "0.5" and f"SD {sd} observed in execution {execution}" in given, given
    assert "ICC 0.9 as given" in given, given
    assert "SD 0.3 as given, ICC 0.1 assumed" in assumed and "no evaluation yet" in assumed, assumed
    both = variance_line(
        plan_power(ROOT / "pipeline.yaml", tmp_path / "state", assumed_sd=0.3, assumed_icc=0.2)
    )
    assert both == "variance       SD 0.3 as given, ICC 0.2 as given", both


def test_plan_finds_the_last_evaluation_behind_many_runs_that_skipped_theirs(tmp_path: Path) -> None:
    """A scheduled pipeline with nothing new to evaluate skips the evaluation run after run; the plan still
    reads the variance of the last evaluation there was (it looked at the 50 newest executions only, and
    then assumed SD 0.5 and ICC 0.1 as if there had never been one)."""
    from agent_release.pipelines.executor import ExecutionStore

    state = tmp_path / "state"
    execution = store_evaluation(state, evaluation_report())
    store = ExecutionStore(state)
    try:
        for _ in range(60):
            later = store.create("p", tmp_path / "pipeline.yaml", "", [_evaluation_step()])
            store.mark_step(later, "evaluate_variants", "skipped")
        assert execution not in {row["id"] for row in store.recent(limit=60)}
    finally:
        store.close()

    line = variance_line(plan_power(ROOT / "pipeline.yaml", state))

    assert f"observed in execution {execution}" in line, line
    assert "assumed" not in line, line


def _evaluation_step() -> Any:
    from agent_release.pipelines.executor import StepDef
    from agent_release.steps.evaluation_records import EvaluationReport

    return StepDef(name="evaluate_variants", needs=(), output_type=EvaluationReport, run=lambda _: None)


def evaluation_report(roles: tuple[str, ...] = ("champion", "challenger"), cases: int = 60) -> Any:
    """An evaluation of ``cases`` cases (3 per cluster) by each of ``roles``, with differing scores."""
    from agent_release.steps.evaluation_records import CaseResult, EvaluationReport

    rows = tuple(
        CaseResult(
            case_id=f"c{i}",
            cluster=f"k{i // 3}",
            variant=role,
            role=role,
            scores={"task_success": float((i * (3 if role == "challenger" else 7)) % 5 < 3)},
        )
        for i in range(cases)
        for role in roles
    )
    return EvaluationReport(
        dataset_name="golden", dataset_hash="0" * 64, repeats=1, scorer_specs=(), variants=(), rows=rows
    )


def store_evaluation(state: Path, report: Any) -> str:
    """Store an execution whose evaluate_variants step succeeded with ``report``; return its id."""
    from agent_release.pipelines.executor import ExecutionStore

    store = ExecutionStore(state)
    try:
        execution = store.create("p", state.parent / "pipeline.yaml", "", [_evaluation_step()])
        store.mark_step(execution, "evaluate_variants", "succeeded", output_json=report.model_dump_json())
    finally:
        store.close()
    return execution


def variance_line(lines: list[str]) -> str:
    return next(line for line in lines if line.startswith("variance"))


def test_plan_takes_the_golden_sets_unequal_clusters_into_account(tmp_path: Path) -> None:
    """The shipped golden set has 33 clusters of 3 cases and 36 of 7: its design effect at ICC 0.1 is
    1 + (sum n_g^2 / n - 1) * 0.1 = 1.49, not the 1.41 of 351 / 69 cases per cluster."""
    lines = plan_power(ROOT / "pipeline.yaml", tmp_path / "state", assumed_sd=0.5, assumed_icc=0.1)
    design = next(line for line in lines if line.startswith("design effect"))
    assert design.startswith("design effect  1.49 (effective n 236)"), design


def test_without_an_evaluation_or_given_values_the_plan_assumes_sd_half_and_icc_a_tenth(
    tmp_path: Path,
) -> None:
    """The module's stated defaults (SD 0.5, the largest a difference of two binary scores usually has, and
    ICC 0.1): the plan is the one those values give when passed explicitly, and says they were assumed."""
    assumed = plan_power(ROOT / "pipeline.yaml", tmp_path / "state")
    given = plan_power(ROOT / "pipeline.yaml", tmp_path / "state", assumed_sd=0.5, assumed_icc=0.1)
    assert variance_line(assumed) == (
        "variance       SD 0.5 assumed, ICC 0.1 assumed (no evaluation yet); --sd/--icc change them"
    )
    assert [line for line in assumed if not line.startswith("variance")] == [
        line for line in given if not line.startswith("variance")
    ]
    assert not (tmp_path / "state").exists()  # planning only looks


def test_plan_observes_the_newest_paired_evaluation_skipping_runs_without_one(tmp_path: Path) -> None:
    """A newer run that stopped before evaluating, or whose evaluation had only a champion (a bootstrap),
    says nothing about the variance of differences: the plan reads the newest paired evaluation."""
    import time

    from agent_release.pipelines.executor import ExecutionStore

    state = tmp_path / "state"
    paired = store_evaluation(state, evaluation_report(("champion", "challenger"), cases=30))
    time.sleep(0.01)  # executions are ordered by their last activity
    store_evaluation(state, evaluation_report(("champion",), cases=30))
    time.sleep(0.01)
    store = ExecutionStore(state)
    try:
        store.create("p", tmp_path / "pipeline.yaml", "", [_evaluation_step()])
    finally:
        store.close()

    line = variance_line(plan_power(ROOT / "pipeline.yaml", state))
    assert f"observed in execution {paired}" in line, line


@pytest.mark.parametrize("sd", [0.5, 0.01])
def test_plan_warns_exactly_when_min_improvement_is_below_the_mde(tmp_path: Path, sd: float) -> None:
    """The module's promise: real gains smaller than the MDE would mostly end inconclusive, so a gate margin
    below it is pointed out (the shipped min_improvement is 0.02)."""
    lines = plan_power(ROOT / "pipeline.yaml", tmp_path / "state", assumed_sd=sd, assumed_icc=0.1)
    mde = float(next(line for line in lines if line.startswith("MDE")).split()[1])
    warnings = [line for line in lines if line.startswith("warning")]
    if mde > 0.02:
        assert len(warnings) == 1 and warnings[0].startswith(
            "warning        min_improvement 0.02 is below the MDE"
        )
    else:
        assert warnings == []
    assert (mde > 0.02) == (sd == 0.5)  # both branches are exercised
