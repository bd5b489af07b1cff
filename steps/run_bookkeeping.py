"""Write an MLflow run's bookkeeping from a second thread, while the work it describes runs.

Why: before its first case an evaluation records, for the parent run and again for each variant's run, the
provenance params and the scorer specs file, and for the variant its params, tags and the agent's
LoggedModel as the run's input. Written in line, that held the first case back by about 50 ms on a 2-core
machine, and then the first wave of cases spends 250 ms waiting for the endpoint with this process nearly
idle. Written from a second thread, the bookkeeping fills that wait instead (measured in
docs/performance.md, session 11).

Created with ``held=True``, the thread starts on the queued calls only at :meth:`go` (or when the block is
left): an evaluation holds them until its first wave of model calls is on the way, so that the writes do
not compete with building the first agents for this process's interpreter (session 22).

Nothing is lost or reordered for the reader: each call runs in submission order on one thread, and is
retried while SQLite refuses it as "database is locked" (the trace writer shares the database). Leaving the
block waits for every call; the first failure is raised there, before the run ends, so the step fails as it
would have. If the block itself raised, that error goes on and a bookkeeping failure is only logged.

Usage::

    client = mlflow.MlflowClient()
    with mlflow.start_run() as run, RunBookkeeping() as books:
        books.submit(client.log_batch, run.info.run_id, params=[Param("dataset", "golden")])
        ...  # the work, overlapping the writes
    # every write is in the store here
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

from agent_release.steps.store_retry import retry_if_locked

logger = logging.getLogger(__name__)

__all__ = ["RunBookkeeping"]


class RunBookkeeping:
    """One background thread that makes MLflow store calls in order; a context manager that waits for them."""

    def __init__(self, held: bool = False) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-release-run-bookkeeping")
        self._pending: list[Future[Any]] = []
        self._started = threading.Event()
        if held:
            self._executor.submit(self._started.wait)  # the one thread's first job: wait for go()
        else:
            self._started.set()

    def submit(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``call(*args, **kwargs)``; it runs after every call submitted before it."""
        self._pending.append(self._executor.submit(retry_if_locked, call, *args, **kwargs))

    def go(self) -> None:
        """Start on the queued calls (of a book created with ``held=True``); later calls run as they come."""
        self._started.set()

    def wait(self) -> None:
        """Block until every queued call has run (starting them if held); raise the first one's error, if any."""
        self.go()
        pending, self._pending = self._pending, []
        errors = [exc for exc in (future.exception() for future in pending) if exc is not None]
        if errors:
            raise errors[0]

    def __enter__(self) -> RunBookkeeping:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.wait()
        except Exception as failure:
            if exc is None:
                raise
            # The block's own error is the one to report.
            logger.warning("error=<%s> | run bookkeeping failed after the step had already failed", failure)
        finally:
            self.go()  # a held book whose block raised before go(): its thread must not wait forever
            self._executor.shutdown(wait=True)
