"""Injected 5xx faults: retried and counted; unrecoverable ones become error rows, never lost cases."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from _shared.eval_world import EvalWorld, aws_env, lookup_tools, make_cases, register, start_world

from agent_release.steps.backend import FaultSpec
from agent_release.steps.evaluate_config import EvaluateConfig
from agent_release.steps.evaluate_variants import evaluate_variants

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

N_CASES = 40


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EvalWorld]:
    import mlflow

    world = start_world(
        tmp_path,
        {"champion": FaultSpec(), "challenger": FaultSpec(error_rate=0.1)},
        "_shared.eval_world:LookupModel",
    )
    for key, value in aws_env(world.url).items():
        monkeypatch.setenv(key, value)
    yield world
    world.backend.close()
    mlflow.set_tracking_uri(None)


def _evaluate(world: EvalWorld, max_retries: int, *, stream: bool) -> object:
    registration = register(
        world.experiment, {"champion": "champion", "challenger": "challenger"}, stream=stream
    )
    return evaluate_variants(
        EvaluateConfig(concurrency=8, timeout_s=30, max_retries=max_retries),
        registration,
        make_cases(N_CASES),
        dataset_name="golden",
        dataset_hash="sha256:test",
        system_prompt="You are a support agent.",
        tools_factory=lookup_tools,
        experiment=world.experiment,
    )


def test_faulty_variant_is_retried_and_completes(world: EvalWorld) -> None:
    report = _evaluate(world, max_retries=4, stream=True)
    ev = {v.variant: v for v in report.variants}  # type: ignore[attr-defined]
    assert (
        ev["challenger"].cases_expected == ev["challenger"].cases_completed + ev["challenger"].cases_errored
    )
    # Two model calls per case at 10% faults: about 8 faults, each retried (five attempts all failing: 1e-5).
    assert ev["challenger"].retries > 0
    assert ev["challenger"].cases_errored == 0
    assert ev["champion"].retries == 0
    rows = [r for r in report.rows if r.variant == "challenger"]  # type: ignore[attr-defined]
    assert sum(r.retries for r in rows) == ev["challenger"].retries
    assert all(r.scores["task_success"] == 1.0 for r in rows)


def test_unrecoverable_faults_are_error_rows(world: EvalWorld, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    report = _evaluate(world, max_retries=0, stream=False)
    ev = {v.variant: v for v in report.variants}  # type: ignore[attr-defined]
    rows = [r for r in report.rows if r.variant == "challenger"]  # type: ignore[attr-defined]
    assert len(rows) == N_CASES == ev["challenger"].cases_expected
    errored = [r for r in rows if r.error]
    # P(no fault in 80 calls) = 0.9^80 < 3e-4.
    assert errored and ev["challenger"].cases_errored == len(errored)
    assert all("ModelError" in (r.error or "") for r in errored)
    assert all(r.scores["error"] == 1.0 and r.scores["task_success"] == 0.0 for r in errored)
    assert all(r.trace_id for r in rows)
    assert ev["challenger"].retries == 0
    assert ev["champion"].cases_errored == 0
    # One summary line for the failing variant, not one ERROR line from Strands per failed case.
    assert not [r for r in caplog.records if r.name.startswith("strands") and r.levelno >= logging.ERROR]
    summaries = [r.getMessage() for r in caplog.records if "cases failed" in r.getMessage()]
    assert len(summaries) == 1 and "variant=<challenger>" in summaries[0]
    assert f"failed=<{len(errored)}>" in summaries[0]
