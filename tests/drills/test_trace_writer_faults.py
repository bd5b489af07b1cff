"""Drills of the evaluation's trace path under faults, through the real ``evaluate_variants``.

The project's promise is that no case and no trace is lost: every (case, repeat) has exactly one persisted trace
carrying its scores, a stand-in (``eval.stand_in=true``) when its own trace never reached the store. Each drill
injects one fault into the path ``RowFirstTraceExporter`` -> ``TraceBatchWriter`` (thread) -> ``WriterProcess``
(child process writing MLflow's SQLite store) while 120 cases run at concurrency 16 through the local runtime
against a variant with 60 ms of added latency, then counts what the store holds for the variant's run:

* the writer process SIGKILLed after a third of the cases, in the middle of a batch: its transaction open, or
  the batch committed and not yet answered for;
* the writer process wedged (SIGSTOP) mid-batch for the second half of the cases, so a backlog builds, then
  SIGKILLed once the final flush has started;
* the tracking database write-locked by another connection (``BEGIN IMMEDIATE``) for 1.5 s while the writer
  is writing the run's traces;
* a store that refuses the row of some traces (thread writer, ``start_trace`` failing for chosen cases);
* the writer process SIGKILLed just after it was sent the step's closing MLflow calls.

The writer process is warmed up first (it writes one trace elsewhere), as it is for every variant after the
first; cold, it would still be importing MLflow when the cases end.

Figures are in docs/reliability.md ("Drills").
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _shared.eval_world import EvalWorld, aws_env, lookup_tools, make_cases, register, start_world

from agent_release.steps import trace_export
from agent_release.steps.backend import FaultSpec
from agent_release.steps.evaluate_config import EvaluateConfig
from agent_release.steps.evaluate_variants import ProgressEvent, evaluate_variants
from agent_release.steps.evaluation_records import EvaluationReport

# Each drill takes 5-11 s on 2 cores (not "slow"); they run the local endpoint runtime as tests/e2e does.
pytestmark = pytest.mark.e2e

N_CASES = 60
REPEATS = 2
N_UNITS = N_CASES * REPEATS
CONCURRENCY = 16
LATENCY_MS = 60
WARM_UP = "warm-up"
SCORES = {"answer_correctness", "error"}  # scorers of the default config every trace must carry


@dataclass
class Drill:
    world: EvalWorld
    db_path: Path


@pytest.fixture
def drill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Drill]:
    import mlflow

    world = start_world(
        tmp_path, {"challenger": FaultSpec(added_latency_ms=LATENCY_MS)}, "_shared.eval_world:LookupModel"
    )
    for key, value in aws_env(world.url).items():
        monkeypatch.setenv(key, value)
    yield Drill(world, tmp_path / "mlflow.db")
    world.backend.close()
    mlflow.set_tracking_uri(None)


def _evaluate(
    drill: Drill, progress: Callable[[ProgressEvent], None] | None = None
) -> tuple[EvaluationReport, str, float]:
    """Run the real evaluation of one variant; (report, experiment id, seconds)."""
    registration = register(drill.world.experiment, {"challenger": "challenger"})
    started = time.perf_counter()
    report = evaluate_variants(
        EvaluateConfig(concurrency=CONCURRENCY, timeout_s=30, repeats=REPEATS),
        registration,
        make_cases(N_CASES, with_tool=False),
        dataset_name="golden",
        dataset_hash="sha256:drill",
        system_prompt="You are a support agent.",
        tools_factory=lookup_tools,
        experiment=drill.world.experiment,
        progress=progress,
    )
    return report, registration.experiment_id, time.perf_counter() - started


def _warm_writer(drill: Drill) -> trace_export.WriterProcess:
    """Start the writer process for the drill's store and have it write one trace (in another experiment).

    A cold writer spends its first seconds importing MLflow and opening the store, while 120 cases take
    1.5-4 s here: its first trace would land about when the last case ends, and a fault "mid-evaluation" would
    hit a process still starting. Warm, it writes while the cases run, as it does for every variant after the
    first.
    """
    import mlflow

    assert trace_export.install_row_first_export()
    mlflow.create_experiment(WARM_UP, artifact_location=(drill.db_path.parent / "warm-up").as_uri())
    mlflow.set_experiment(WARM_UP)
    with mlflow.start_span(name="warm-up") as span:
        trace_id = span.trace_id
    # Not flushed: a flush could write the trace in this process instead of the writer's.
    conn = sqlite3.connect(drill.db_path, timeout=30)
    try:
        deadline = time.monotonic() + 60
        while not conn.execute("SELECT 1 FROM trace_info WHERE request_id = ?", (trace_id,)).fetchone():
            assert time.monotonic() < deadline, "the writer process never wrote the warm-up trace"
            time.sleep(0.02)
    finally:
        conn.close()
    return _the_writer_process()


def _stored(conn: sqlite3.Connection, experiment: str) -> int:
    """Trace rows of ``experiment`` in the store."""
    count: int = conn.execute(
        "SELECT count(*) FROM trace_info WHERE experiment_id = "
        "(SELECT experiment_id FROM experiments WHERE name = ?)",
        (experiment,),
    ).fetchone()[0]
    return count


def _run_traces(experiment_id: str, run_id: str) -> list[Any]:
    import mlflow

    return list(
        mlflow.search_traces(locations=[experiment_id], run_id=run_id, return_type="list", include_spans=True)
    )


def _assert_one_scored_trace_per_unit(report: EvaluationReport, experiment_id: str) -> list[Any]:
    """Every row completed with a trace id; the run holds exactly one trace per (case, repeat), the rows'
    traces, each carrying the row's scores. Returns the run's traces."""
    (variant,) = report.variants
    assert variant.cases_expected == N_UNITS
    errors = [r.error for r in report.rows if r.error]
    assert not errors and variant.cases_completed == N_UNITS, errors[:3]
    row_ids = [r.trace_id for r in report.rows]
    assert None not in row_ids and len(set(row_ids)) == N_UNITS

    assert variant.mlflow_run_id is not None
    traces = _run_traces(experiment_id, variant.mlflow_run_id)
    units = Counter((t.info.tags.get("eval.case_id"), t.info.tags.get("eval.repeat")) for t in traces)
    duplicated = {unit: n for unit, n in units.items() if n > 1}
    assert not duplicated, (
        f"{len(duplicated)} units have more than one trace, e.g. {list(duplicated.items())[:3]}"
    )
    assert len(traces) == N_UNITS, f"{len(traces)} traces for {N_UNITS} cases"
    assert len({case for case, _ in units}) == N_CASES
    assert {t.info.trace_id for t in traces} == set(row_ids)

    rows = {r.trace_id: r for r in report.rows}
    doubled = []
    for trace in traces:
        row = rows[trace.info.trace_id]
        names = Counter(a.name for a in trace.info.assessments)
        if max(names.values()) > 1:
            doubled.append((trace.info.trace_id, names))
            continue
        assessed = {a.name: a.value for a in trace.info.assessments}
        assert set(assessed) >= SCORES and set(assessed) >= set(row.scores), (
            trace.info.trace_id,
            sorted(assessed),
        )
        assert {name: assessed[name] for name in row.scores} == row.scores
        assert row.scores["answer_correctness"] == 1.0
    # Spans too: a kill must not leave a trace whose row is stored without them (the batch in flight is
    # written again here, rows and spans). A stand-in is a root span only, by design.
    bare = [
        t.info.trace_id
        for t in traces
        if not t.info.tags.get("eval.stand_in")
        and (len(t.data.spans) < 3 or t.data.spans[0].name != "eval_case")
    ]
    assert not bare, f"{len(bare)} traces lack their spans, e.g. {bare[:3]}"
    assert not doubled, f"{len(doubled)} traces hold an assessment more than once, e.g. {doubled[0]}"
    return traces


def _assert_kill_recovered(
    process: trace_export.WriterProcess,
    report: EvaluationReport,
    experiment_id: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The writer process died of the drill's SIGKILL, the exporter said so, and nothing was lost: one scored
    trace per unit, none a stand-in (the batch the process died with was written again in this process), and
    no traceback on the console."""
    assert process.wait_exit(10) == -signal.SIGKILL
    assert "trace writer process is gone" in caplog.text
    traces = _assert_one_scored_trace_per_unit(report, experiment_id)
    assert not [t for t in traces if t.info.tags.get("eval.stand_in")]
    _no_traceback(capfd)


def _no_traceback(capfd: pytest.CaptureFixture[str]) -> str:
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, (out + err)[-3000:]
    return err


def _freeze_mid_batch(
    process: trace_export.WriterProcess, drill: Drill, acknowledged: Collection[str], timeout_s: float = 20
) -> str | None:
    """SIGSTOP the writer process while it holds a batch it has written rows of but not answered for; returns
    which moment it was stopped at (None, the process left running, if neither came within ``timeout_s``).

    The writer writes a batch in one transaction, so there are two such moments, and either is taken: the
    transaction open (the database's rollback journal exists while it has uncommitted rows: a kill must leave
    none of the batch in the store), or the batch committed and not yet answered for (written again here, it
    must not store anything twice). ``acknowledged`` is a ``recording_stored_traces()`` set opened after the
    warm-up: the traces of the evaluation the writer has answered for so far."""
    journal = drill.db_path.with_name(drill.db_path.name + "-journal")
    conn = sqlite3.connect(drill.db_path, timeout=0.2, isolation_level=None)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            time.sleep(0.002)
            if not process.batch_in_flight:
                continue
            try:
                if not journal.exists() and _stored(conn, drill.world.experiment) <= len(acknowledged):
                    continue
                os.kill(process.pid, signal.SIGSTOP)
                time.sleep(0.05)  # an answer sent just before the stop is read meanwhile
                # A journal left 50 ms after the stop is the stopped writer's open transaction.
                if process.batch_in_flight and journal.exists():
                    return "transaction open"
                unanswered = _stored(conn, drill.world.experiment) - len(acknowledged)
            except sqlite3.OperationalError:  # stopped inside a commit: readers wait for it
                unanswered = 0
            if process.batch_in_flight and unanswered > 0:
                return f"{unanswered} rows committed, not answered for"
            os.kill(process.pid, signal.SIGCONT)
    finally:
        conn.close()
    return None


def _the_writer_process() -> trace_export.WriterProcess:
    process = trace_export.current_writer_process()
    assert process is not None, "no live trace writer process"
    return process


def test_writer_process_killed_mid_evaluation(
    drill: Drill, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    third = threading.Event()
    killed: dict[str, Any] = {}
    done = [0]

    def progress(event: ProgressEvent) -> None:
        done[0] = event.done
        if event.done >= N_UNITS // 3 and not third.is_set():
            third.set()

    def killer() -> None:
        if not third.wait(timeout=120):
            return
        process = killed["process"] = _the_writer_process()
        # Frozen first, to kill it at a known point: mid-batch, its transaction open or committed unanswered.
        killed["moment"] = _freeze_mid_batch(process, drill, acknowledged)
        killed["acknowledged"] = len(acknowledged)
        killed["done_at_kill"] = done[0]
        if killed["moment"]:
            os.kill(process.pid, signal.SIGKILL)

    warm = _warm_writer(drill)
    caplog.set_level(logging.WARNING, logger="agent_release")
    with trace_export.recording_stored_traces() as acknowledged:
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        report, experiment_id, seconds = _evaluate(drill, progress)
        thread.join(timeout=10)

    process = killed["process"]
    assert process is warm
    assert killed["moment"], "the writer was never stopped mid-batch"
    assert killed["done_at_kill"] < N_UNITS, "the kill came after the last case"
    _assert_kill_recovered(process, report, experiment_id, caplog, capfd)
    print(
        f"\nkilled at {killed['done_at_kill']}/{N_UNITS} cases done, with {killed['acknowledged']} traces "
        f"answered for and the batch in flight stopped at: {killed['moment']}; "
        f"evaluation {seconds:.1f} s"
    )


def test_writer_process_killed_while_making_the_closing_calls(
    drill: Drill, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL of the writer process just after it was sent the step's closing calls (the variant's metrics
    and the parent's table, steps/store_calls.py): what it made of them is unknown, so the step fails with
    one line instead of making them again (a table logged twice), both runs end FAILED rather than RUNNING,
    every trace was already in, and a second attempt, with a new writer process, completes."""
    import mlflow

    from agent_release.steps.store_calls import StoreCallsFailed

    warm = _warm_writer(drill)
    run_store_calls = trace_export.WriterProcess.run_store_calls
    sent: list[str] = []

    def killed_once_sent(
        self: trace_export.WriterProcess, calls: Any, on_sent: Callable[[], None] | None = None
    ) -> str | None:
        def kill() -> None:
            if on_sent is not None:
                on_sent()
            sent.extend(call.method for call in calls.calls)
            os.kill(self.pid, signal.SIGKILL)

        return run_store_calls(self, calls, on_sent=kill)

    with monkeypatch.context() as patched:
        patched.setattr(trace_export.WriterProcess, "run_store_calls", killed_once_sent)
        with pytest.raises(StoreCallsFailed) as failed:
            _evaluate(drill)
    assert sent == ["log_batch", "log_table"]
    assert str(failed.value) == (
        "the trace writer process stopped while making log_batch, log_table: "
        "trace writer process exited with -9"
    )
    assert "\n" not in str(failed.value)
    assert warm.wait_exit(10) == -signal.SIGKILL
    experiment_id = mlflow.get_experiment_by_name(drill.world.experiment).experiment_id
    runs = mlflow.search_runs([experiment_id], output_format="list")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]  # the parent and the variant
    (variant_run,) = [r for r in runs if r.info.run_name == "evaluate-challenger"]
    traces = _run_traces(experiment_id, variant_run.info.run_id)
    assert len(traces) == N_UNITS and not [t for t in traces if t.info.tags.get("eval.stand_in")]
    _no_traceback(capfd)

    # The next attempt gets a new writer process and ends with both tables whole.
    report, experiment_id, _ = _evaluate(drill)
    assert _the_writer_process() is not warm
    _assert_one_scored_trace_per_unit(report, experiment_id)
    (variant,) = report.variants
    parent_id = mlflow.get_run(variant.mlflow_run_id).data.tags["mlflow.parentRunId"]
    for run_id in (variant.mlflow_run_id, parent_id):
        assert mlflow.get_run(run_id).info.status == "FINISHED"
        assert len(mlflow.load_table("eval_cases.json", run_ids=[run_id])) == N_UNITS
    assert mlflow.get_run(variant.mlflow_run_id).data.metrics["answer_correctness/mean"] == 1.0


def test_writer_process_killed_during_the_final_flush(
    drill: Drill,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    seen: dict[str, Any] = {}
    half = threading.Event()
    flushing = threading.Event()

    def progress(event: ProgressEvent) -> None:
        if event.done >= N_UNITS // 2:
            half.set()

    def freeze() -> None:
        # Wedge the writer mid-batch for the rest of the cases, so the final flush starts on a backlog.
        if not half.wait(timeout=120):
            return
        seen["process"] = process = _the_writer_process()
        seen["moment"] = _freeze_mid_batch(process, drill, acknowledged)
        # Never left wedged, whatever goes wrong: the flush would wait on it.
        if not flushing.wait(timeout=60):
            os.kill(process.pid, signal.SIGKILL)

    freezer = threading.Thread(target=freeze, daemon=True)
    original_flush = trace_export.TraceBatchWriter.flush

    def flush(self: trace_export.TraceBatchWriter, timeout_s: float | None = None) -> bool:
        # The first flush of the evaluation's exporter (the warm-up's exporter is flushed when the evaluation
        # sets its experiment, before the cases start).
        if half.is_set() and "flush_backlog" not in seen:
            while "moment" not in seen and freezer.is_alive():
                time.sleep(0.01)
            flushing.set()
            process = seen.get("process")
            seen["flush_backlog"], seen["flush_busy"] = self.backlog()

            def kill_once_flushing() -> None:
                time.sleep(0.2)  # the flush is under way, waiting on the wedged writer
                seen["left_at_kill"] = self.backlog()[0]
                if process is not None:
                    os.kill(process.pid, signal.SIGKILL)

            killer = threading.Thread(target=kill_once_flushing, daemon=True)
            seen["killer"] = killer
            killer.start()
        return original_flush(self, timeout_s)

    monkeypatch.setattr(trace_export.TraceBatchWriter, "flush", flush)
    _warm_writer(drill)
    caplog.set_level(logging.WARNING, logger="agent_release")
    with trace_export.recording_stored_traces() as acknowledged:
        freezer.start()
        report, experiment_id, seconds = _evaluate(drill, progress)
        seen["killer"].join(timeout=10)

    process = seen["process"]
    assert seen["moment"], "the writer was never stopped mid-batch"
    # The flush started on a backlog and with a batch stuck in the wedged writer.
    assert seen["flush_backlog"] > 0 and seen["flush_busy"], seen
    # The flush leaves the backlog to the writer (it only waits), so the kill found it untouched.
    assert seen["left_at_kill"] == seen["flush_backlog"], seen
    _assert_kill_recovered(process, report, experiment_id, caplog, capfd)
    print(
        f"\nflush started with {seen['flush_backlog']} queued traces and a batch in the wedged writer "
        f"(stopped at: {seen['moment']}); {seen['left_at_kill']} queued at the kill; "
        f"evaluation {seconds:.1f} s"
    )


def test_tracking_database_write_locked_mid_run(drill: Drill, capfd: pytest.CaptureFixture[str]) -> None:
    done = [0]
    held: dict[str, float] = {}

    def progress(event: ProgressEvent) -> None:
        done[0] = event.done

    def locker() -> None:
        conn = sqlite3.connect(drill.db_path, timeout=30, isolation_level=None)
        try:
            # Once the writer has started on the run's traces (its first batch leaves after some 60 cases here).
            deadline = time.monotonic() + 120
            while not _stored(conn, drill.world.experiment) and time.monotonic() < deadline:
                time.sleep(0.002)
            started = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            held["done_at_lock"] = done[0]
            held["stored_at_lock"] = _stored(conn, drill.world.experiment)
            time.sleep(1.5)
            held["done_at_release"] = done[0]
            conn.execute("ROLLBACK")
            held["held_s"] = time.perf_counter() - started
        finally:
            conn.close()

    _warm_writer(drill)
    thread = threading.Thread(target=locker, daemon=True)
    thread.start()
    report, experiment_id, seconds = _evaluate(drill, progress)
    thread.join(timeout=30)

    assert held.get("held_s", 0) >= 1.5, held
    # The lock fell while the writer was writing the run's traces.
    assert 0 < held["stored_at_lock"] < N_UNITS, held
    traces = _assert_one_scored_trace_per_unit(report, experiment_id)
    assert not [t for t in traces if t.info.tags.get("eval.stand_in")]
    err = _no_traceback(capfd)
    assert "failed to write" not in err, err[-3000:]
    print(
        f"\nwrite lock held {held['held_s']:.2f} s from {held['done_at_lock']:.0f} cases done "
        f"({held['stored_at_lock']:.0f} traces stored) to {held['done_at_release']:.0f} done; "
        f"evaluation {seconds:.1f} s"
    )


REFUSED_CASES = {f"E-{i:04d}" for i in range(0, N_CASES, 7)}  # 9 cases, both repeats: 18 traces


class _RefusingClient:
    """A ``TracingClient`` whose store refuses the row of the original traces of :data:`REFUSED_CASES`."""

    def __init__(self, client: Any, refused: list[str]) -> None:
        self._client = client
        self._refused = refused

    def start_trace(self, trace_info: Any) -> Any:
        tags = trace_info.tags
        if tags.get("eval.case_id") in REFUSED_CASES and tags.get("eval.stand_in") != "true":
            self._refused.append(trace_info.trace_id)
            raise RuntimeError("drill: the store refused this trace row")
        return self._client.start_trace(trace_info)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_store_refusing_some_rows_gets_scored_stand_ins(
    drill: Drill, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    monkeypatch.setenv("AGENT_RELEASE_TRACE_WRITER", "thread")
    refused: list[str] = []
    original = trace_export.write_batch

    def write_batch(client: Any, batch: Sequence[Any]) -> list[str]:
        return original(_RefusingClient(client, refused), batch)

    monkeypatch.setattr(trace_export, "write_batch", write_batch)
    report, experiment_id, seconds = _evaluate(drill)

    assert len(refused) == len(set(refused)) == len(REFUSED_CASES) * REPEATS, refused
    traces = _assert_one_scored_trace_per_unit(report, experiment_id)
    stand_ins = [t for t in traces if t.info.tags.get("eval.stand_in") == "true"]
    assert sorted((t.info.tags["eval.case_id"], t.info.tags["eval.repeat"]) for t in stand_ins) == sorted(
        (case, str(r)) for case in REFUSED_CASES for r in range(REPEATS)
    )
    # The refused originals are not in the store (no row, spans or assessments) and no row points at one.
    assert not set(refused) & {r.trace_id for r in report.rows}
    assert all(mlflow.get_trace(trace_id) is None for trace_id in refused)
    conn = sqlite3.connect(drill.db_path, timeout=30)
    try:
        marks = ",".join("?" * len(refused))
        for table, column in (
            ("trace_info", "request_id"),
            ("spans", "trace_id"),
            ("assessments", "trace_id"),
        ):
            query = f"SELECT count(*) FROM {table} WHERE {column} IN ({marks})"
            assert conn.execute(query, refused).fetchone()[0] == 0, table
    finally:
        conn.close()
    _no_traceback(capfd)
    print(f"\n{len(refused)} rows refused, {len(stand_ins)} stand-ins; evaluation {seconds:.1f} s")
