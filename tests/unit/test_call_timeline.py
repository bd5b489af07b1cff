"""The endpoint's view of how a client's calls filled its slots (pipelines/call_timeline.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent_release.pipelines.call_timeline import CallTimeline, call_timeline
from agent_release.pipelines.local_backend import InvocationRecord, LocalBackend


def test_a_hand_computed_window() -> None:
    # Two slots. Calls: 0.0-1.0, 0.5-1.5 (both slots busy from 0.5), 1.0-2.0 (starts as the first ends),
    # 2.5-3.0 (after a gap of 0.5 s with one slot idle, then both idle from 2.0 to 2.5).
    timeline = call_timeline([(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (2.5, 3.0)], slots=2)
    assert timeline.calls == 4
    assert timeline.most_in_flight == 2  # the hand-over at 1.0 is not three at once
    assert timeline.first_start == 0.0
    assert timeline.all_busy_at == 0.5
    assert timeline.last_end == 3.0
    # 3.5 call-seconds served of the 2 x 3.0 the slots could have served.
    assert timeline.busy_fraction == pytest.approx(3.5 / 6.0)


def test_slots_never_all_busy() -> None:
    timeline = call_timeline([(10.0, 11.0), (10.2, 10.4)], slots=3)
    assert timeline.most_in_flight == 2
    assert timeline.all_busy_at is None
    assert timeline.busy_fraction == pytest.approx(1.2 / 3.0)


def test_calls_that_ended_free_their_slots_for_a_later_burst() -> None:
    # One call, an idle second, then two overlapping calls: both slots are first busy at 2.5, not before.
    timeline = call_timeline([(0.0, 1.0), (2.0, 3.0), (2.5, 3.5)], slots=2)
    assert timeline.most_in_flight == 2
    assert timeline.all_busy_at == 2.5
    assert timeline.busy_fraction == pytest.approx(3.0 / (2 * 3.5))


def test_calls_that_took_no_time_have_no_busy_fraction() -> None:
    # A window of zero seconds: no capacity to divide by, so the fraction is unknown rather than an error.
    timeline = call_timeline([(5.0, 5.0), (5.0, 5.0)], slots=1)
    assert (timeline.calls, timeline.first_start, timeline.last_end) == (2, 5.0, 5.0)
    assert timeline.busy_fraction is None


def test_no_calls_and_bad_slots() -> None:
    assert call_timeline([], slots=16) == CallTimeline(0, 16, 0, None, None, None, None)
    with pytest.raises(ValueError, match="at least one slot"):
        call_timeline([(0.0, 1.0)], slots=0)


def test_the_local_backend_reads_it_from_the_invocation_records(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    now = time.time()

    def call(variant: str, start: float, model_ms: float, overhead_ms: float = 0.0) -> InvocationRecord:
        return InvocationRecord(
            "ep", variant, now + start + (model_ms + overhead_ms) / 1000.0, 200, model_ms, overhead_ms, False
        )

    backend.record_invocations(
        [
            call("a", 0.0, 250.0),
            call("a", 0.05, 240.0, 10.0),  # the overhead is part of the call
            call("a", 0.25, 250.0),
            call("b", 0.1, 250.0),  # another variant
        ]
    )
    try:
        timeline = backend.call_timeline("ep", since=now, slots=2, variant="a")
        assert timeline.calls == 3
        assert timeline.first_start == pytest.approx(now)
        assert timeline.all_busy_at == pytest.approx(now + 0.05)
        assert timeline.last_end == pytest.approx(now + 0.5)
        assert timeline.busy_fraction == pytest.approx(0.75 / 1.0)
        assert backend.most_in_flight("ep", since=now) == (3, 4)
    finally:
        backend.close()
