"""Call slots: at most N model calls in flight while more cases get ready; a wait is not latency; the
harness says when the slots start to empty (the tail)."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from _shared.eval_world import traced_store
from _shared.fake_model import ScriptedModelBase

from agent_release.agents.call_slots import (
    CURRENT_SLOTS,
    CURRENT_WAIT,
    SLOT_WAIT_ATTRIBUTE,
    CallSlots,
    SlotWait,
    is_slotted,
    slotted,
)
from agent_release.steps.eval_harness import CaseUnit, run_cases
from agent_release.steps.evaluate_config import EvaluateConfig


class CountingModel(ScriptedModelBase):
    """A Strands model whose every call takes ``delay_s`` and which counts the calls in flight at once."""

    def __init__(self, delay_s: float) -> None:
        super().__init__({"model_id": "counting"})
        self.delay_s = delay_s
        self.in_flight = 0
        self.most_in_flight = 0
        self.calls = 0
        self.closed = 0
        self.starts: list[float] = []
        self.ends: list[float] = []

    async def stream(self, messages: list[Any], *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        self.starts.append(time.perf_counter())
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            yield {"messageStart": {"role": "assistant"}}
            yield {"contentBlockDelta": {"delta": {"text": "Your order has shipped."}}}
            yield {"contentBlockStop": {}}
            yield {"messageStop": {"stopReason": "end_turn"}}
            yield {"metadata": {"usage": {"inputTokens": 5, "outputTokens": 5, "totalTokens": 10}}}
        finally:
            self.in_flight -= 1
            self.closed += 1
            self.ends.append(time.perf_counter())


def _counting_model(delay_s: float) -> Any:
    from strands.models.model import Model

    return type("CountingStrandsModel", (CountingModel, Model), {})(delay_s)


def _units(n: int) -> list[CaseUnit]:
    return [CaseUnit(f"C-{i}", f"k{i % 3}", f"question {i}") for i in range(n)]


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with traced_store(tmp_path, monkeypatch, "slots"):
        yield


def _agent_factory(model: Any, started: list[float] | None = None) -> Any:
    from agent_release.agents.builder import build_agent

    def make(unit: CaseUnit) -> Any:
        if started is not None:
            started.append(time.perf_counter())
        return build_agent(model, "You are a support agent.", [])

    return make


def _run(
    model: Any, n: int, *, concurrency: int, staged: int = 0, timeout_s: float = 10.0, started: Any = None
) -> list[Any]:
    """``run_cases`` over ``n`` units with fresh agents around ``model`` (pass it through ``slotted``)."""
    return run_cases(
        _units(n),
        make_agent=_agent_factory(model, started),
        variant="v",
        concurrency=concurrency,
        staged=staged,
        timeout_s=timeout_s,
    )


def test_slots_bound_calls_first_come_first_served_and_record_each_wait() -> None:
    async def main() -> tuple[CallSlots, list[int], list[SlotWait]]:
        slots = CallSlots(2)
        order: list[int] = []
        waits = [SlotWait() for _ in range(5)]

        async def call(i: int) -> None:
            CURRENT_WAIT.set(waits[i])
            async with slots.slot():
                order.append(i)
                assert slots.in_use <= 2
                await asyncio.sleep(0.05)

        await asyncio.gather(*(call(i) for i in range(5)))
        return slots, order, waits

    slots, order, waits = asyncio.run(main())
    assert order == [0, 1, 2, 3, 4]
    assert slots.most_in_use == 2 and slots.in_use == 0 and slots.calls == 5
    # The first two never wait; the next two wait one call (~50 ms), the last two calls (~100 ms).
    assert waits[0].total_s < 0.02 and waits[1].total_s < 0.02
    assert 0.04 < waits[2].total_s < 0.15 and 0.04 < waits[3].total_s < 0.15
    assert 0.09 < waits[4].total_s < 0.3
    assert all(w.since is None for w in waits)
    assert slots.waited_s == pytest.approx(sum(w.total_s for w in waits))


def test_a_wait_in_progress_counts_until_it_ends() -> None:
    wait = SlotWait(total_s=1.0, since=10.0)
    assert wait.waited_s(now=10.5) == pytest.approx(1.5)
    assert SlotWait(total_s=1.0).waited_s(now=99.0) == 1.0


def test_slots_need_a_positive_limit() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CallSlots(0)


def test_a_slotted_model_passes_through_without_slots_and_delegates_the_rest() -> None:
    inner = _counting_model(0.0)
    model = slotted(inner)
    assert is_slotted(model) and not is_slotted(inner) and not is_slotted(None)
    assert model.get_config() == {"model_id": "counting"} and model.config is inner.config
    model.update_config(max_tokens=7)
    assert inner.config["max_tokens"] == 7

    async def collect() -> list[Any]:
        assert CURRENT_SLOTS.get() is None
        return [event async for event in model.stream([])]

    events = asyncio.run(collect())
    assert events[0] == {"messageStart": {"role": "assistant"}} and len(events) == 5
    assert inner.calls == 1 and inner.closed == 1


def test_a_consumer_that_stops_early_gives_its_slot_back_at_once() -> None:
    inner = _counting_model(0.0)
    model = slotted(inner)

    async def main() -> CallSlots:
        slots = CallSlots(1)
        CURRENT_SLOTS.set(slots)
        stream = model.stream([])
        async for _ in stream:
            break  # as Strands does on a cooperative cancel
        await stream.aclose()
        assert slots.in_use == 0 and inner.closed == 1  # the model's own stream was closed too
        # The one slot is free again: a second call gets it without waiting.
        await asyncio.wait_for(_drain(model.stream([])), timeout=1.0)
        return slots

    slots = asyncio.run(main())
    assert slots.calls == 2 and slots.in_use == 0


async def _drain(events: AsyncIterator[Any]) -> None:
    async for _ in events:
        pass


@pytest.mark.parametrize(
    ("concurrency", "staged", "cases"),
    [(16, None, 4), (9, None, 2), (2, None, 1), (1, None, 1), (16, 0, 0), (4, 7, 7)],
)
def test_staged_cases_default_to_a_quarter_of_concurrency_at_least_one(
    concurrency: int, staged: int | None, cases: int
) -> None:
    # EvaluateConfig.staged: "0 turns it off; default: a quarter of `concurrency`, at least 1".
    assert EvaluateConfig(concurrency=concurrency, staged=staged).staged_cases == cases


def test_staged_cases_never_put_more_than_concurrency_calls_in_flight(tracking: None) -> None:
    inner = _counting_model(0.2)
    started: list[float] = []
    outcomes = _run(slotted(inner), 24, concurrency=4, staged=3, started=started)
    assert [o.error for o in outcomes] == [None] * 24
    assert inner.calls == 24 and inner.most_in_flight == 4
    # Seven agents were built before any call had ended: four calling, three staged.
    assert sum(1 for t in started if t < min(inner.ends)) == 7
    # Near one 0.2 s call (the first cases also pay the process's first agent; that a wait is left out of
    # latency is shown by the timeout test below).
    assert statistics.median(o.latency_s for o in outcomes) < 0.3
    assert all(o.answer == "Your order has shipped." for o in outcomes)


def test_the_first_wave_builds_each_agent_once_the_call_before_it_has_its_slot(tracking: None) -> None:
    # The first `concurrency` cases go one at a time, so the first request leaves at once rather than after
    # every agent of the wave has been built; the staged cases and the rest then start as before.
    inner = _counting_model(0.2)
    started: list[float] = []
    outcomes = _run(slotted(inner), 10, concurrency=4, staged=2, started=started)
    assert [o.error for o in outcomes] == [None] * 10 and inner.most_in_flight == 4
    calls = sorted(inner.starts)
    assert all(started[k + 1] >= calls[k] for k in range(3)), (started[:4], calls[:4])
    # The staged cases were still built while the first wave's calls were in flight.
    assert sum(1 for t in started if t < min(inner.ends)) == 6


def test_a_case_that_fails_before_its_call_does_not_hold_up_the_first_wave(tracking: None) -> None:
    # The first wave waits for "one call more than before this case", not for the case's index: a case
    # that never calls (its agent failed to build) must not make each later case wait out the 50 ms.
    inner = _counting_model(0.2)
    started: list[float] = []
    build = _agent_factory(slotted(inner), started)

    def make(unit: CaseUnit) -> Any:
        if unit.case_id == "C-0":
            raise RuntimeError("agent could not be built")
        return build(unit)

    outcomes = run_cases(_units(8), make_agent=make, variant="v", concurrency=8, staged=2, timeout_s=10)
    assert outcomes[0].error == "RuntimeError: agent could not be built"
    assert [o.error for o in outcomes[1:]] == [None] * 7
    # Seven agents one after another, each as soon as the call before it had its slot: well under 7 x 50 ms.
    assert started[6] - started[0] < 0.2, [round(t - started[0], 3) for t in started]


def test_the_first_wave_is_told_once_when_its_calls_are_on_the_way(tracking: None) -> None:
    inner = _counting_model(0.2)
    told: list[tuple[float, int]] = []
    outcomes = run_cases(
        _units(8),
        make_agent=_agent_factory(slotted(inner)),
        variant="v",
        concurrency=4,
        staged=2,
        timeout_s=10,
        on_first_wave=lambda: told.append((time.perf_counter(), inner.calls)),
    )
    assert [o.error for o in outcomes] == [None] * 8
    # Once, with the four calls of the first wave started and none of them ended yet.
    assert len(told) == 1 and told[0][1] >= 4 and told[0][0] < min(inner.ends)


def test_without_staging_the_agents_in_progress_are_the_calls_in_flight(tracking: None) -> None:
    inner = _counting_model(0.2)
    started: list[float] = []
    _run(slotted(inner), 8, concurrency=4, started=started)
    assert inner.most_in_flight == 4
    assert sum(1 for t in started if t < min(inner.ends)) == 4


def test_a_wait_for_a_slot_does_not_count_against_the_timeout(tracking: None) -> None:
    # One slot, three cases staged behind it: the last waits ~0.9 s for its turn, three times its own
    # 0.3 s call and well past the 0.6 s timeout, and must still complete (the timeout leaves room for
    # the process's first agent, which is slower to build).
    inner = _counting_model(0.3)
    outcomes = _run(slotted(inner), 4, concurrency=1, staged=3, timeout_s=0.6)
    assert [o.error for o in outcomes] == [None] * 4
    assert inner.most_in_flight == 1
    # Counted from each case's start, the last took ~1.2 s: its latency leaves the ~0.9 s wait out.
    assert all(o.latency_s < 0.6 for o in outcomes)


def test_a_case_over_its_own_timeout_still_times_out_while_others_wait(tracking: None) -> None:
    inner = _counting_model(0.5)
    outcomes = _run(slotted(inner), 2, concurrency=1, staged=1, timeout_s=0.2)
    assert [o.error for o in outcomes] == ["TimeoutError: case exceeded 0.2s"] * 2
    assert inner.most_in_flight == 1 and inner.in_flight == 0


def test_staging_with_a_model_that_is_not_slotted_is_an_error_row_not_a_burst(tracking: None) -> None:
    inner = _counting_model(0.01)
    outcomes = _run(inner, 3, concurrency=1, staged=2, timeout_s=5)
    assert inner.calls == 0
    # One error row per case, in input order (``all`` over no rows at all would pass as well).
    assert [(o.unit.case_id, o.error) for o in outcomes] == [
        (f"C-{i}", "TypeError: staged cases need an agent whose model is wrapped with slotted()")
        for i in range(3)
    ]


def test_the_wait_is_written_on_the_model_call_span(tracking: None) -> None:
    import mlflow

    inner = _counting_model(0.2)
    outcomes = _run(slotted(inner), 3, concurrency=1, staged=2)
    mlflow.flush_trace_async_logging()
    waits = []
    for outcome in outcomes:
        assert outcome.trace_id is not None
        trace = mlflow.get_trace(outcome.trace_id)
        assert trace is not None
        found = [
            s.attributes[SLOT_WAIT_ATTRIBUTE] for s in trace.data.spans if SLOT_WAIT_ATTRIBUTE in s.attributes
        ]
        assert len(found) == 1, [s.name for s in trace.data.spans]
        waits.append(found[0])
    # The first case found the slot free; the last waited for two calls of 0.2 s.
    assert min(waits) < 20 and max(waits) > 300


def _run_telling_the_tail(n: int, concurrency: int, on_tail: Any) -> tuple[list[Any], list[Any]]:
    events: list[Any] = []
    outcomes = run_cases(
        _units(n),
        make_agent=_agent_factory(slotted(_counting_model(0.05))),
        variant="v",
        concurrency=concurrency,
        staged=2,
        timeout_s=10,
        progress=events.append,
        on_tail=lambda: on_tail(events),
    )
    return outcomes, events


def test_the_tail_is_told_once_as_the_slots_start_to_empty(tracking: None) -> None:
    told: list[int] = []
    outcomes, events = _run_telling_the_tail(10, 4, lambda events: told.append(len(events)))
    assert told == [10 - 4]  # once, when the case that left four to finish had ended
    assert [o.error for o in outcomes] == [None] * 10 and len(events) == 10


def test_a_run_no_longer_than_the_slots_is_all_tail(tracking: None) -> None:
    told: list[int] = []
    _run_telling_the_tail(3, 4, lambda events: told.append(len(events)))
    assert told == [0]  # before any case had ended


def test_a_failing_tail_hook_costs_no_case(tracking: None, caplog: pytest.LogCaptureFixture) -> None:
    def boom(_events: Any) -> None:
        raise RuntimeError("hook broke")

    outcomes, events = _run_telling_the_tail(6, 2, boom)
    assert [o.error for o in outcomes] == [None] * 6 and len(events) == 6
    assert "on_tail failed" in caplog.text and "hook broke" in caplog.text


INTERRUPTED_RUN = """
import asyncio, logging, sys
from strands.models.model import Model
from agent_release.agents.builder import build_agent
from agent_release.agents.call_slots import slotted
from agent_release.steps.eval_harness import CaseUnit, run_cases

logging.basicConfig(level=logging.WARNING)
sys.path.insert(0, sys.argv[1])
from _shared.fake_model import ScriptedModelBase


class Interrupted(ScriptedModelBase, Model):
    async def stream(self, messages, *args, **kwargs):
        await asyncio.sleep(0.05)
        raise KeyboardInterrupt("signal 15")  # where Ctrl-C, or the CLI's SIGTERM-as-interrupt, lands
        yield {}


model = slotted(Interrupted({"model_id": "interrupted"}))
units = [CaseUnit(f"C-{i}", "k", f"question {i}") for i in range(4)]
try:
    run_cases(units, make_agent=lambda unit: build_agent(model, "p", []), variant="v", concurrency=2,
              timeout_s=10)
except KeyboardInterrupt:
    print("interrupted")
"""


def test_an_interrupt_in_a_case_ends_the_run_without_a_task_traceback(tmp_path: Path) -> None:
    # The run stops and the CLI prints its one resume line; asyncio used to log the case's task as well, as
    # "Task exception was never retrieved" with a 50-line traceback, when the task was collected at exit.
    # A process of its own (in tmp_path): the abandoned tasks and their traces live until interpreter exit.
    import subprocess
    import sys

    tests_dir = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_RUN, str(tests_dir)],
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == "interrupted", done.stderr
    assert "Task exception was never retrieved" not in done.stderr
    assert "Traceback" not in done.stderr, done.stderr
