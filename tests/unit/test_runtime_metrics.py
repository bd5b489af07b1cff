"""The runtime's invocation-metrics buffer: what a flush writes, what it reports, what a failing store costs."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from agent_release.pipelines.local_backend import InvocationRecord, LocalBackend
from agent_release.pipelines.runtime.metrics import MetricsRecorder


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    backend = LocalBackend(tmp_path)
    yield backend
    backend.close()


def _call(status: int) -> InvocationRecord:
    return InvocationRecord("ep", "a", time.time(), status, 12.0, 1.0, False)


def test_a_flush_writes_the_buffer_and_returns_how_many_records_it_wrote(backend: LocalBackend) -> None:
    recorder = MetricsRecorder(backend)
    assert recorder.flush() == 0  # nothing buffered, nothing written
    for status in (200, 200, 503):
        recorder.record(_call(status))
    assert recorder.flush() == 3
    assert recorder.flush() == 0
    assert (recorder.recorded, recorder.flushed, recorder.failed, recorder.dropped) == (3, 3, 0, 0)


def test_a_store_that_fails_loses_that_batch_only_and_never_raises(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Metrics must never take the runtime down: the batch is lost and counted as failed (not as dropped by an
    # overflowing buffer), and the next flush writes again once the store works.
    def locked(records: Iterable[InvocationRecord]) -> int:
        raise sqlite3.OperationalError("database is locked")

    recorder = MetricsRecorder(backend)
    monkeypatch.setattr(backend, "record_invocations", locked)
    recorder.record(_call(200))
    recorder.record(_call(500))
    assert recorder.flush() == 0
    assert (recorder.failed, recorder.dropped) == (2, 0)
    monkeypatch.undo()
    recorder.record(_call(200))
    assert recorder.flush() == 1
    assert (recorder.recorded, recorder.flushed, recorder.failed, recorder.dropped) == (3, 1, 2, 0)
