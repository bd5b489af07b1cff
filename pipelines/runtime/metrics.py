"""Invocation metrics off the hot path: an in-memory buffer flushed to ``state.db`` in batches.

A request only appends one tuple to a bounded deque (O(1), thread-safe); a background thread writes the
buffer to the ``invocations`` table about every half second, where any process reads it through
``LocalBackend.variant_metrics``. When the writer falls behind by more than ``BUFFER_CAPACITY`` records, the
oldest unflushed ones are dropped rather than slowing requests down (see :attr:`MetricsRecorder.dropped`).
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from agent_release.pipelines.local_backend import InvocationRecord, LocalBackend

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5
BUFFER_CAPACITY = 200_000


class MetricsRecorder:
    """Buffer invocation records and flush them to the backend's database from a background thread.

    Call :meth:`start` once, :meth:`record` per invocation, :meth:`stop` at shutdown (flushes what is left).
    """

    def __init__(self, backend: LocalBackend, interval_s: float = FLUSH_INTERVAL_S) -> None:
        self._backend = backend
        self._interval_s = interval_s
        self._buffer: deque[InvocationRecord] = deque(maxlen=BUFFER_CAPACITY)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.recorded = 0
        self.flushed = 0
        self.failed = 0

    def record(self, record: InvocationRecord) -> None:
        """Queue one record (never blocks)."""
        self._buffer.append(record)
        self.recorded += 1

    @property
    def dropped(self) -> int:
        """Records lost because the buffer overflowed before a flush."""
        return self.recorded - self.flushed - len(self._buffer) - self.failed

    def start(self) -> None:
        """Start the flushing thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="runtime-metrics-flush", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and flush the remaining records."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.flush()

    def flush(self) -> int:
        """Write every buffered record now; returns how many were written."""
        batch: list[InvocationRecord] = []
        while True:
            try:
                batch.append(self._buffer.popleft())
            except IndexError:
                break
        if not batch:
            return 0
        try:
            written = self._backend.record_invocations(batch)
        except Exception:
            # Metrics must never take the runtime down; the records of this batch are lost and logged.
            logger.exception("records=<%d> | failed to store invocation metrics", len(batch))
            self.failed += len(batch)
            return 0
        self.flushed += written
        return written

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.flush()
