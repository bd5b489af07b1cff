"""Cases staged beyond the endpoint's capacity wait for a call slot, never for a thread of the harness.

Each staged case waits for its call slot inside a model-call thread. The harness's thread pool was sized for
``concurrency`` alone (2 x concurrency + 4), so with more staged cases than threads the rest queued for a
thread, and that queueing, which is the harness's and not the variant's, counted against their timeout:
at concurrency 1 with 16 staged, 7 of 24 healthy 300 ms cases timed out at 2 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _shared.eval_world import EvalWorld, challenger_world, lookup_tools, make_cases, register

from agent_release.steps.evaluate_config import EvaluateConfig
from agent_release.steps.evaluate_variants import evaluate_variants


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EvalWorld]:
    with challenger_world(tmp_path, monkeypatch, added_latency_ms=300) as started:
        yield started


def test_staged_cases_beyond_the_thread_pool_do_not_time_out(world: EvalWorld) -> None:
    report = evaluate_variants(
        EvaluateConfig(concurrency=1, staged=12, timeout_s=1.5),
        register(world.experiment, {"challenger": "challenger"}),
        make_cases(12, with_tool=False),
        dataset_name="golden",
        dataset_hash="sha256:staged",
        system_prompt="You are a support agent.",
        tools_factory=lookup_tools,
        experiment=world.experiment,
    )
    assert len(report.rows) == 12
    assert [r.error for r in report.rows if r.error] == []
    # Each case's latency is its own call (300 ms added), not its wait for a slot or a thread.
    assert max(r.latency_s or 0.0 for r in report.rows) < 1.0
