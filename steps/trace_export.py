"""Export finished traces to a SQL tracking store row-first, with their spans written in batches.

Why this exists (measured on MLflow 3.17 with SQLite, ``docs/performance.md``): MLflow's own exporter writes
each batch of spans (``log_spans``) *before* the trace itself (``start_trace``). ``log_spans`` then creates
a bare trace row, so every ``start_trace`` collides with it and takes the store's IntegrityError/merge path:
about 47 ms of CPU per trace, against 18 ms for the same rows written trace first and spans second (10
assessments and 4 spans per trace). Its flush also waits for a queue poll of up to one second.

:class:`RowFirstTraceExporter` is MLflow's ``MlflowV3SpanExporter`` with one change of order: it exports
whole traces only (when the root span ends, as MLflow's exporter does) and hands them to a
:class:`TraceBatchWriter` thread. That sends batches of up to 64 pickled traces to a :class:`WriterProcess`
(a child process, so the writes use another core; in-process if there is none or it died), which writes each
trace with ``TracingClient.start_trace`` (its ``TraceInfo`` carries the assessments logged while the trace
was active, written in the same transaction) and then the spans of the whole batch with one
``TracingClient.log_spans`` call (:func:`write_batch`; the writer process commits the whole batch at once,
``trace_writer_process.write_in_one_transaction``). Everything goes through MLflow's own client and
store; only the order, the batching and the process are ours. Spans reach the exporter as they end, not
every half second through OpenTelemetry's batch processor (:func:`_span_processor_for`).
``mlflow.flush_trace_async_logging`` drains the writer too (MLflow's ``flush_exporter`` flushes an
exporter's ``_span_batcher``).

It is installed only for database tracking URIs (``sqlite:``, ``postgresql:``, ``mysql:``, ``mssql:``); for
an MLflow server or Databricks, MLflow's exporter stays as it is.

Usage (before the first trace of the run; idempotent)::

    install_row_first_export()            # True if installed for the current tracking URI
    ...                                   # traced work
    mlflow.flush_trace_async_logging()    # every finished trace is in the store
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import pickle
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from mlflow.tracing.export.mlflow_v3 import MlflowV3SpanExporter

from agent_release.steps.store_retry import retry_if_locked

if TYPE_CHECKING:
    from agent_release.steps.store_calls import StoreCalls

logger = logging.getLogger(__name__)

__all__ = [
    "RowFirstTraceExporter",
    "TraceBatchWriter",
    "WriterProcess",
    "current_writer_pid",
    "current_writer_process",
    "hurry_trace_writes",
    "install_row_first_export",
    "is_database_uri",
    "recording_stored_traces",
    "uninstall_row_first_export",
    "write_batch",
]

DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
MAX_BATCH = 64
# Beside a writer process, a batch waits up to GATHER_S after its first trace for GATHER_TRACES traces (a
# flush, a shutdown or ``hurry_trace_writes`` ends the wait). Most of the writer's cost is per batch, not
# per trace (MLflow's ``log_spans`` and the transaction): replayed, a W1 trace cost it 24 ms of CPU written
# alone and 8 ms in a batch of 16 in one transaction (docs/performance.md, session 15). Without the wait the
# writer, busy most of an evaluation, takes batches of one to a few traces and spends the second core on
# that fixed cost.
GATHER_S = 0.1
GATHER_TRACES = 8


def writer_answer_timeout_s() -> float:
    """How long the writer process may take to answer one batch before it is taken as wedged.

    ``AGENT_RELEASE_TRACE_WRITER_TIMEOUT_S`` (default 120 s: a batch of 64 traces takes 1-2 s on 2 cores, and
    SQLite waits out another connection's lock for up to 20 s per statement). Past it the process is killed
    and the batch is written in this process; its assessment ids are pinned, so rows it did commit are
    merged, not stored twice.
    """
    try:
        value = float(os.environ.get("AGENT_RELEASE_TRACE_WRITER_TIMEOUT_S", "120"))
    except ValueError:
        return 120.0
    return value if math.isfinite(value) and value > 0 else 120.0


def is_database_uri(uri: str) -> bool:
    """Whether ``uri`` names a SQLAlchemy tracking store (``sqlite:///...``, ``postgresql+psycopg://...``)."""
    scheme = uri.partition(":")[0].partition("+")[0].lower()
    return scheme in DATABASE_SCHEMES


Batch = Sequence[tuple[Any, Sequence[Any]]]


def write_batch(client: Any, batch: Batch, *, strict: bool = False) -> list[str]:
    """Write each trace row (with its assessments), then all the batch's spans; returns the ids of the
    traces whose row could not be written.

    ``client`` is a ``mlflow.tracing.client.TracingClient``. A failure is logged (as MLflow's exporter does),
    never raised. A trace whose row was written but whose spans were not is in the store (with its
    assessments, without spans): it is logged, not returned. ``strict=True`` raises the first failure
    instead, for a caller that writes the batch in one transaction and must abandon all of it.
    """
    from mlflow.tracing.constant import TraceMetadataKey
    from mlflow.tracing.export.utils import try_link_prompts_to_trace
    from mlflow.tracing.utils import add_size_stats_to_trace_metadata

    failed: list[str] = []
    spans_by_experiment: dict[str, list[Any]] = defaultdict(list)
    for trace, prompts in batch:
        try:
            # Once per trace: written a second time (after an abandoned one-transaction batch), the sizes
            # would count the size metadata itself.
            if TraceMetadataKey.SIZE_STATS not in trace.info.trace_metadata:
                add_size_stats_to_trace_metadata(trace)
            retry_if_locked(client.start_trace, trace.info)
        except Exception as exc:
            if strict:
                raise
            failed.append(trace.info.trace_id)
            logger.warning("trace_id=<%s>, error=<%s> | failed to write trace", trace.info.trace_id, exc)
            continue
        spans_by_experiment[trace.info.experiment_id].extend(trace.data.spans)
        if prompts:
            try_link_prompts_to_trace(client, trace.info.trace_id, prompts, synchronous=True)
    for experiment_id, spans in spans_by_experiment.items():
        try:
            retry_if_locked(client.log_spans, experiment_id, spans)
        except Exception as exc:
            if strict:
                raise
            logger.warning(
                "experiment_id=<%s>, spans=<%d>, error=<%s> | failed to write spans",
                experiment_id,
                len(spans),
                exc,
            )
    return failed


class WriterProcess:
    """A child process that writes batches of traces to one tracking URI (the second core's share).

    Started once per tracking URI and shared by every exporter of the process (MLflow rebuilds its exporter
    after each ``mlflow.set_experiment``). Batches travel pickled over a private pipe; the child answers
    each with the ids of the traces it could not write. Once an evaluation's traces are in, it also makes
    some of the step's own MLflow calls (:meth:`run_store_calls`, :mod:`.store_calls`). It exits when the
    pipe closes, i.e. with this process at the latest.
    """

    def __init__(self, tracking_uri: str) -> None:
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        self.tracking_uri = tracking_uri
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        # Its stdout goes to our stderr: stdout may carry a command's --json result.
        try:
            stdout: int = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):
            stdout = subprocess.DEVNULL
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent_release.steps.trace_writer_process",
                str(to_child_r),
                str(from_child_w),
            ],
            pass_fds=(to_child_r, from_child_w),
            # MLflow logs at INFO by default (e.g. each engine it creates); the pipeline's own output is
            # the progress display, so the child says only what goes wrong unless the user asked for more.
            env={"MLFLOW_LOGGING_LEVEL": "WARNING", **os.environ, "MLFLOW_TRACKING_URI": tracking_uri},
            stdin=subprocess.DEVNULL,
            stdout=stdout,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._send = Connection(to_child_w, readable=False)
        self._recv = Connection(from_child_r, writable=False)
        self._lock = threading.Lock()
        self._broken = False
        self.pid = self._proc.pid
        self.answer_timeout_s = writer_answer_timeout_s()

    @property
    def broken(self) -> bool:
        """Whether the pipe failed, the process was closed, or the child has exited.

        The exit counts too: a flush writes queued traces itself as long as the process looks alive, so a
        child that died while no batch was in flight could otherwise go unnoticed (and :func:`writer_process`
        would hand the dead process to the next exporter).
        """
        return self._broken or self._proc.poll() is not None

    @property
    def batch_in_flight(self) -> bool:
        """Whether a batch has been sent and its answer not yet read (the child may have committed part of it)."""
        return self._lock.locked()

    def wait_exit(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for the child to exit; its return code (negative: the signal that ended it).

        Raises ``subprocess.TimeoutExpired`` if it is still running.
        """
        return self._proc.wait(timeout=timeout_s)

    def write(self, batch: Batch) -> list[str] | None:
        """Send one batch and wait for the child's answer (ids of the traces it could not write); None if
        the batch cannot be pickled.

        Raises ``OSError``/``EOFError`` if the child is gone. Traces travel pickled, which costs a third of
        ``Trace.to_json``; ``Connection.send`` pickles the whole batch before writing a byte, so a batch
        that cannot be pickled leaves the pipe clean. The batch's assessments get their ids here first, so
        that writing it again after the child died mid-batch cannot store a score twice.
        """
        _pin_assessment_ids(batch)
        try:
            answer = self._exchange(list(batch))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            logger.warning("error=<%s> | trace batch cannot be pickled; writing it in this process", exc)
            return None
        return [str(trace_id) for trace_id in answer]

    def run_store_calls(self, calls: StoreCalls, on_sent: Callable[[], None] | None = None) -> str | None:
        """Have the child make ``calls`` (:mod:`.store_calls`) and wait: None, or what failed.

        ``on_sent`` is called once the calls are on their way (from then on the child may have made some of
        them). Raises ``OSError``/``EOFError`` if the child is gone, as :meth:`write` does.
        """
        answer = self._exchange(calls, on_sent)
        return None if answer is None else str(answer)

    def _exchange(self, payload: object, on_sent: Callable[[], None] | None = None) -> Any:
        """Send ``payload`` and return the child's answer (one at a time: the pipe carries one exchange)."""
        with self._lock:
            try:
                self._send.send(payload)
            except (OSError, EOFError):
                self._broken = True
                raise
            if on_sent is not None:
                on_sent()
            try:
                deadline = time.monotonic() + self.answer_timeout_s
                while not self._recv.poll(min(1.0, self.answer_timeout_s)):
                    if self._proc.poll() is not None:
                        raise EOFError(f"trace writer process exited with {self._proc.returncode}")
                    if time.monotonic() > deadline:
                        # A wedged child would hold the flush, and so the evaluation, forever.
                        self._proc.kill()
                        self._proc.wait(timeout=10)
                        raise EOFError(
                            f"trace writer process did not answer within {self.answer_timeout_s:g} s; killed it"
                        )
                return self._recv.recv()
            except (OSError, EOFError) as exc:
                self._broken = True
                if isinstance(exc, EOFError) and not str(exc):  # the pipe closed: say why, if we can
                    raise EOFError(self._gone()) from exc
                raise

    def _gone(self) -> str:
        """How the child ended, once its pipe closed (it exits first: the pipe closes with it)."""
        import subprocess

        try:
            code = self._proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return "trace writer process closed its pipe"
        return f"trace writer process exited with {code}"

    def close(self) -> None:
        """Close the pipe and wait for the child to finish its last batch (idempotent)."""
        with self._lock:
            self._broken = True
            for conn in (self._send, self._recv):
                if not conn.closed:
                    conn.close()
        try:
            self._proc.wait(timeout=30)
        except Exception:
            self._proc.kill()


_process: WriterProcess | None = None
_process_lock = threading.Lock()


def writer_process(tracking_uri: str) -> WriterProcess | None:
    """The writer process for ``tracking_uri`` (started on first use); None if switched off.

    One at a time: a run writes to one tracking store, and a process per store would pile up in a
    long-lived interpreter (a test session uses a store per test), so asking for another store, or after the
    process broke, replaces it. ``AGENT_RELEASE_TRACE_WRITER=thread`` writes in a thread of this process.
    """
    global _process
    if os.environ.get("AGENT_RELEASE_TRACE_WRITER", "process") == "thread":
        return None
    with _process_lock:
        if _process is None or _process.broken or _process.tracking_uri != tracking_uri:
            if _process is not None:
                _process.close()
            _process = WriterProcess(tracking_uri)
        return _process


def current_writer_process() -> WriterProcess | None:
    """The live writer process, if any (not started by this call)."""
    with _process_lock:
        return _process if _process is not None and not _process.broken else None


def current_writer_pid() -> int | None:
    """Process id of the live writer process, if any (benchmarks count its CPU as the harness's)."""
    process = current_writer_process()
    return process.pid if process is not None else None


@atexit.register
def _close_process() -> None:
    with _process_lock:
        if _process is not None:
            _process.close()


_recorders: list[set[str]] = []
_recorders_lock = threading.Lock()


@contextlib.contextmanager
def recording_stored_traces() -> Iterator[set[str]]:
    """Collect, while the block runs, the id of every trace whose row a :class:`TraceBatchWriter` stores.

    A row counts once the store's ``start_trace`` has committed it (in the writer process or here), so
    after ``mlflow.flush_trace_async_logging()`` the set says which traces are in the store without
    reading them back. It sees only traces this module writes: use it where :func:`install_row_first_export`
    returned True.
    """
    stored: set[str] = set()
    with _recorders_lock:
        _recorders.append(stored)
    try:
        yield stored
    finally:
        with _recorders_lock:
            _recorders.remove(stored)


def _record_stored(batch: Batch, failed: Collection[str]) -> None:
    with _recorders_lock:
        if not _recorders:
            return
        ids = {trace.info.trace_id for trace, _ in batch} - set(failed)
        for stored in _recorders:
            stored.update(ids)


class TraceBatchWriter:
    """A thread that writes finished traces in batches, through the writer process when there is one.

    ``add`` never blocks on the store. ``flush`` returns once everything added before it is written (or has
    failed, which is logged). Beside a writer process a batch waits up to :data:`GATHER_S` for
    :data:`GATHER_TRACES` traces (a flush or :meth:`hurry` ends the wait), and the flushing caller only
    waits: the writer process writes a batch in one transaction, so this process writing beside it would
    hold up both on the store's write lock (docs/performance.md, session 16). If the writer process dies,
    the batch and all later ones are written in this process instead, so no trace is lost. The writer looks
    like MLflow's ``SpanBatcher`` to ``flush_exporter`` (``flush``/``shutdown``), so MLflow's own flush
    drains it.
    """

    def __init__(self, client: Any, tracking_uri: str, max_batch: int = MAX_BATCH) -> None:
        self._client = client
        self._process = writer_process(tracking_uri)
        self._max_batch = max_batch
        self._pending: list[tuple[Any, Sequence[Any]]] = []
        self._first_pending_at = 0.0
        self._busy = False
        self._flushing = 0
        self._hurry = False
        self._stopped = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="agent-release-trace-writer", daemon=True)
        self._thread.start()

    def hurry(self) -> None:
        """Send each batch as soon as the writer is free, without waiting for a fuller one, until the next
        flush ends: the last traces of the work are on their way, and a batch still gathering when the work
        ends would make the final flush wait for it (see :func:`hurry_trace_writes`)."""
        with self._cond:
            self._hurry = True
            self._cond.notify_all()

    def add(self, trace: Any, prompts: Sequence[Any]) -> None:
        """Queue one finished trace (``mlflow.entities.Trace``) and the prompt versions it used."""
        with self._cond:
            if not self._pending:
                self._first_pending_at = time.monotonic()
            self._pending.append((trace, prompts))
            self._cond.notify_all()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every trace added so far is written; False if ``timeout_s`` passed first.

        If the writer thread is gone (e.g. at interpreter exit), the caller writes what is left itself.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()  # ends the writer thread's wait for a fuller batch
            try:
                while self._thread.is_alive():
                    if not self._pending and not self._busy:
                        return True
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(timeout=remaining)
                leftover, self._pending = self._pending, []
            finally:
                self._flushing -= 1
                self._hurry = False
        if leftover:
            self._write_logged(leftover)
        return True

    def backlog(self) -> tuple[int, bool]:
        """Traces queued and not yet taken by a writer, and whether the writer thread has a batch in hand."""
        with self._cond:
            return len(self._pending), self._busy

    def _gathers(self) -> bool:
        # Only beside a writer process, whose batch is one transaction (the case the wait was measured for);
        # in thread mode a trace is written as soon as the thread is free, as before session 15.
        return self._process is not None and not self._process.broken

    def shutdown(self) -> None:
        """Write what is queued, then stop the thread (the shared writer process stays)."""
        self.flush()
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending) or self._stopped)
                if self._stopped and not self._pending:
                    return
                if self._gathers():
                    self._cond.wait_for(
                        lambda: (
                            len(self._pending) >= GATHER_TRACES
                            or self._flushing > 0
                            or self._hurry
                            or self._stopped
                        ),
                        timeout=max(0.0, self._first_pending_at + GATHER_S - time.monotonic()),
                    )
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                self._busy = True
            try:
                self._write_logged(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write_logged(self, batch: Batch) -> None:
        try:
            failed = self._write(batch)
        except Exception as exc:  # the thread must outlive any one batch, or flush would wait forever
            logger.warning("traces=<%d>, error=<%s> | failed to write a batch of traces", len(batch), exc)
            return
        _record_stored(batch, failed)

    def _write(self, batch: Batch) -> list[str]:
        if self._process is not None and not self._process.broken:
            try:
                failed = self._process.write(batch)
                if failed is not None:
                    return failed
            except (OSError, EOFError) as exc:
                logger.warning("error=<%s> | trace writer process is gone; writing in this process", exc)
        return write_batch(self._client, batch)


def hurry_trace_writes() -> None:
    """Tell the trace writer of MLflow's current exporter that the last traces of the work are on their way.

    Until its next flush ends, the writer sends a batch as soon as it is free instead of waiting (up to
    :data:`GATHER_S`) for a fuller one. The evaluation calls it when its call slots start to empty: traces
    then arrive one by one, and a batch still gathering when the last case ends was what the final flush
    waited for (docs/performance.md, session 17: in 6 pairs of runs per workload, the time after the last
    case fell by a median 27 ms on W1 and 57 ms on W2, and in every pair). The writer is found as
    ``mlflow.flush_trace_async_logging`` finds it (an exporter MLflow retires is flushed and stopped), and
    with MLflow's own exporter this does nothing.
    """
    from mlflow.tracing.provider import _get_trace_exporter

    exporter = _get_trace_exporter()  # type: ignore[no-untyped-call]
    if isinstance(exporter, RowFirstTraceExporter):
        exporter.writer.hurry()


def _pin_assessment_ids(batch: Batch) -> None:
    """Give each assessment of ``batch`` that has no id yet its id here, before the writer process sees it.

    The store generates a missing id when it inserts the row (``SqlAssessments.from_mlflow_entity``), on its
    own copy of the trace, which dies with the writer process. If that process dies after committing some rows
    of a batch but before answering, :class:`TraceBatchWriter` writes the batch again in this process, and
    ``start_trace``'s merge path would store those traces' assessments a second time under fresh ids: each
    score twice (found by tests/drills/test_trace_writer_faults.py). With the ids fixed on this side before the
    batch is sent, the second write merges onto the rows the first one committed.
    """
    from mlflow.tracing.utils import generate_assessment_id

    for trace, _ in batch:
        # Anything that is not a trace is left for the pickling to refuse, as before.
        for assessment in getattr(getattr(trace, "info", None), "assessments", None) or ():
            if assessment.assessment_id is None:
                assessment.assessment_id = generate_assessment_id()


class RowFirstTraceExporter(MlflowV3SpanExporter):
    """``MlflowV3SpanExporter`` that writes whole traces, trace row first, spans batched after."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        super().__init__(tracking_uri)
        # MLflow's flush_exporter drains an exporter's ``_span_batcher``; ours is the trace writer.
        self._span_batcher = TraceBatchWriter(self._client, self._client.tracking_uri)

    @property
    def writer(self) -> TraceBatchWriter:
        """The trace writer this exporter hands finished traces to."""
        return self._span_batcher

    def export(self, spans: Sequence[Any]) -> None:  # type: ignore[override]  # as MLflow's own export
        """Export the traces whose root span is among ``spans`` (no span-by-span export)."""
        self._export_traces(spans)

    def _should_log_async(self) -> bool:
        # The writer thread already keeps the store off the caller's path; MLflow's async queue would
        # add a second hop and a flush that polls for up to a second.
        return False

    def _log_trace(self, trace: Any, prompts: Sequence[Any], workspace: str | None = None) -> None:
        from mlflow.tracing.utils import maybe_get_request_id

        if maybe_get_request_id(is_evaluate=True) or not self._is_async_enabled:
            # Inside mlflow.genai.evaluate(predict_fn=...) the harness reads the trace back at once; with
            # MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=false the user asked for a trace to be stored when it ends
            # (and MLflow's flush would not reach the writer: there is no batch processor to drain it).
            batch = [(trace, prompts)]
            _record_stored(batch, write_batch(self._client, batch))
            return
        self._span_batcher.add(trace, prompts)

    def shutdown(self) -> None:
        self._span_batcher.shutdown()
        super().shutdown()


_install_lock = threading.Lock()
_original_factory: Any = None


def install_row_first_export() -> bool:
    """Make MLflow build its span processor around :class:`RowFirstTraceExporter` for database URIs.

    MLflow builds its span processor when tracing starts (and again after ``mlflow.set_experiment`` or
    ``mlflow.tracing.reset``) with ``mlflow.tracing.provider._get_mlflow_span_processor``; that factory is
    wrapped to choose the exporter by tracking URI, and tracing is reset once so the next span uses it.
    Idempotent. Returns whether the current tracking URI gets the row-first exporter.
    """
    global _original_factory
    import mlflow
    from mlflow.tracing import provider

    with _install_lock:
        if _original_factory is None:
            _original_factory = provider._get_mlflow_span_processor
            provider._get_mlflow_span_processor = _span_processor_for
            mlflow.tracing.reset()  # type: ignore[no-untyped-call]
    uri = mlflow.get_tracking_uri()
    if not is_database_uri(uri):
        return False
    writer_process(uri)  # start it now: its imports overlap the first cases instead of the first flush
    return True


def uninstall_row_first_export() -> None:
    """Give MLflow back its own span processor factory (the next span starts a fresh provider)."""
    global _original_factory
    import mlflow
    from mlflow.tracing import provider

    with _install_lock:
        if _original_factory is not None:
            mlflow.flush_trace_async_logging()
            provider._get_mlflow_span_processor = _original_factory
            _original_factory = None
            mlflow.tracing.reset()  # type: ignore[no-untyped-call]


def _span_processor_for(tracking_uri: str) -> Any:
    """MLflow's span processor, with the row-first exporter when ``tracking_uri`` is a database.

    Each span goes to the exporter when it ends, not through OpenTelemetry's ``BatchSpanProcessor``: that
    thread hands spans over every ``MLFLOW_ASYNC_TRACE_LOGGING_MAX_INTERVAL_MILLIS`` (500 ms), so up to half
    a second of finished traces reached the writer only at the final flush, which then waited for them
    (0.37-0.46 s of a 160-case evaluation; 0.06-0.18 s without, ``docs/performance.md``). The exporter
    does next to nothing for a span that is not a root, and for a root it builds the trace and queues it for
    the writer thread, so ending a span stays cheap. The pass-through takes the batch processor's place in
    MLflow's processor (``_batch_delegate``) and registry, so MLflow still flushes this exporter with
    ``mlflow.flush_trace_async_logging`` and still retires it (flushed, its writer thread stopped) when it
    replaces the tracer provider, e.g. after ``mlflow.set_experiment``.
    """
    if not is_database_uri(tracking_uri):
        return _original_factory(tracking_uri=tracking_uri)
    from mlflow.tracing.processor import base_mlflow
    from mlflow.tracing.processor.mlflow_v3 import MlflowV3SpanProcessor
    from mlflow.tracing.utils.otlp import should_export_otlp_metrics
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    exporter = RowFirstTraceExporter(tracking_uri=tracking_uri)
    processor = MlflowV3SpanProcessor(
        span_exporter=exporter, export_metrics=should_export_otlp_metrics(), use_batch_processor=False
    )
    # Always, whatever MLFLOW_USE_BATCH_SPAN_PROCESSOR says (there is nothing left to batch): without a
    # delegate MLflow would never retire this exporter, and its writer thread would outlive it.
    processor._batch_delegate = SimpleSpanProcessor(exporter)  # type: ignore[assignment]
    with base_mlflow._batch_processor_registry_lock:
        base_mlflow._batch_processor_registry.add(processor)
    return processor
