"""MLflow client calls made by the trace writer process while this process makes others.

After an evaluation's last case, the step's own writes (metrics, per-case tables, run ends) were 65-100 ms
of this process's CPU, one after another, while the writer process, whose traces are all in by then, sat
idle on the second core. :func:`offload_store_calls` hands it some of those calls (the variant's metrics
and, with the last variant, the parent run's combined table, made while this process logs the variant's
table): they travel pickled over the writer's pipe as :class:`StoreCalls`, and the writer makes them with
its own ``MlflowClient`` against the same tracking URI, then answers.

Call it with the calls, make this process's own, then wait::

    offloaded = offload_store_calls([StoreCall("log_table", (run_id,), {"data": frame, "artifact_file": f})])
    mlflow.log_table(...)  # this process's share
    offloaded.wait()  # raises StoreCallsFailed if a call failed

Without a writer process (``AGENT_RELEASE_TRACE_WRITER=thread``, another tracking URI, or one that broke
before the calls were sent), :meth:`OffloadedStoreCalls.wait` makes the calls in this process, in order,
so the result is the same (and a failing call raises its own exception, as it did when the step made it).
If the writer process dies after it was sent the calls, what it made of them is unknown (``log_table``
appends to an existing table, so making the calls again could store rows twice): ``wait`` raises
:class:`StoreCallsFailed` instead, the evaluation fails, and a resume evaluates again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent_release.steps.trace_export import WriterProcess

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreCall:
    """One ``mlflow.MlflowClient`` method call: its name and (picklable) arguments."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def make(self, client: Any) -> Any:
        """Make the call on ``client``."""
        return getattr(client, self.method)(*self.args, **dict(self.kwargs))


@dataclass(frozen=True)
class StoreCalls:
    """What the writer process is sent: calls to make in order (a batch of traces is a plain list)."""

    calls: tuple[StoreCall, ...]


class StoreCallsFailed(RuntimeError):
    """An offloaded call failed (its error in the message), or the writer died while making the calls."""


def make_store_calls(client: Any, calls: Sequence[StoreCall]) -> str | None:
    """Make ``calls`` on ``client`` in order, stopping at the first failure: None, or what failed.

    The writer process answers with this; the calls after a failed one are not made.
    """
    for call in calls:
        try:
            call.make(client)
        except Exception as exc:
            return f"{call.method} failed: {type(exc).__name__}: {exc}"
    return None


class OffloadedStoreCalls:
    """Calls handed to the writer process (see :func:`offload_store_calls`); :meth:`wait` for them."""

    def __init__(self, calls: Sequence[StoreCall], process: WriterProcess | None) -> None:
        self._calls = tuple(calls)
        self._process = process
        self._sent = False
        self._answer: str | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if process is not None and self._calls:
            # A thread waits for the answer, so this process goes on with its own writes meanwhile.
            self._thread = threading.Thread(target=self._run, name="agent-release-store-calls", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        def sent() -> None:
            self._sent = True

        assert self._process is not None  # the thread is started only with a process
        try:
            self._answer = self._process.run_store_calls(StoreCalls(self._calls), on_sent=sent)
        except BaseException as exc:  # handed to wait(), in the caller's thread
            self._error = exc

    def wait(self) -> None:
        """Return once every call is made. Raises :class:`StoreCallsFailed` if one failed in the writer
        process or the writer died after it was sent them; a call made here raises its own exception."""
        if self._thread is None:
            self._make_here()
            return
        self._thread.join()
        if self._error is not None:
            if self._sent:
                raise StoreCallsFailed(
                    f"the trace writer process stopped while making {self._methods()}: {self._error}"
                ) from self._error
            logger.warning(
                "error=<%s> | could not hand %s to the trace writer process; making them in this process",
                self._error,
                self._methods(),
            )
            self._make_here()
            return
        if self._answer is not None:
            raise StoreCallsFailed(self._answer)

    def settle(self) -> None:
        """Wait for the writer's answer without raising: this process is failing already (its own write
        raised), so the calls are neither made here nor reported; the runs end after the writer is done."""
        if self._thread is not None:
            self._thread.join()

    def _make_here(self) -> None:
        import mlflow

        client = mlflow.MlflowClient()
        for call in self._calls:
            call.make(client)  # its own exception, if it fails: nothing crossed a pipe

    def _methods(self) -> str:
        return ", ".join(call.method for call in self._calls)


def offload_store_calls(calls: Sequence[StoreCall]) -> OffloadedStoreCalls:
    """Start ``calls`` in the trace writer process of MLflow's current tracking URI, if one is running;
    otherwise they are made in this process when waited for."""
    import mlflow

    from agent_release.steps.trace_export import current_writer_process

    process = current_writer_process()
    if process is not None and process.tracking_uri != mlflow.get_tracking_uri():
        process = None
    return OffloadedStoreCalls(calls, process)
