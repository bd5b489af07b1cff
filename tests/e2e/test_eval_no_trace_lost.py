"""At concurrency 16 through the local runtime, every evaluated case has exactly one persisted trace."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _shared.eval_world import ENDPOINT, EvalWorld, challenger_world, lookup_tools, make_cases, register

from agent_release.agents.call_slots import SLOT_WAIT_ATTRIBUTE
from agent_release.steps.evaluate_config import EvaluateConfig
from agent_release.steps.evaluate_variants import evaluate_variants

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

N_CASES = 200


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EvalWorld]:
    with challenger_world(tmp_path, monkeypatch, added_latency_ms=20) as started:
        yield started


def _most_calls_at_once(world: EvalWorld, since: float, calls: int) -> int:
    """Most calls the runtime served at once since ``since``, once its records of all ``calls`` are in."""
    deadline = time.monotonic() + 10  # the runtime flushes its records about every half second
    while True:
        most, recorded = world.backend.most_in_flight(ENDPOINT, since)
        if recorded >= calls or time.monotonic() > deadline:
            assert recorded == calls
            return most
        time.sleep(0.2)


def test_no_trace_lost_at_concurrency_16(world: EvalWorld) -> None:
    import mlflow

    since = time.time()
    registration = register(world.experiment, {"challenger": "challenger"})
    cases = make_cases(N_CASES, with_tool=False)
    report = evaluate_variants(
        EvaluateConfig(concurrency=16, timeout_s=30),
        registration,
        cases,
        dataset_name="golden",
        dataset_hash="sha256:test",
        system_prompt="You are a support agent.",
        tools_factory=lookup_tools,
        experiment=world.experiment,
    )
    (variant,) = report.variants
    assert variant.cases_expected == N_CASES
    assert variant.cases_completed == N_CASES, [r.error for r in report.rows if r.error][:3]
    trace_ids = [r.trace_id for r in report.rows]
    assert len(set(trace_ids)) == N_CASES and None not in trace_ids

    persisted = mlflow.search_traces(
        locations=[registration.experiment_id],
        run_id=variant.mlflow_run_id,
        return_type="list",
        include_spans=False,
    )
    by_case = {}
    for trace in persisted:
        by_case.setdefault(trace.info.tags["eval.case_id"], []).append(trace.info.trace_id)
    assert sorted(by_case) == sorted(c["id"] for c in cases)
    assert all(len(ids) == 1 for ids in by_case.values())
    assert {i for ids in by_case.values() for i in ids} == set(trace_ids)
    # Each trace holds the agent's own spans under the case span, and its scores.
    sample = mlflow.get_trace(trace_ids[-1])
    assert len(sample.data.spans) >= 3
    assert {"answer_correctness", "error"} <= {a.name for a in sample.info.assessments}
    assert all(r.scores.get("answer_correctness") == 1.0 for r in report.rows)
    # Four cases were staged beyond the 16 (the default, a quarter), yet the endpoint never served more
    # than 16 calls at once; each trace's model-call span says how long it waited for its call slot.
    assert 1 < _most_calls_at_once(world, since, N_CASES) <= 16
    assert any(SLOT_WAIT_ATTRIBUTE in span.attributes for span in sample.data.spans)
