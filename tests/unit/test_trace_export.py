"""The row-first trace exporter writes what MLflow's own exporter writes, faster, and loses nothing."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_release.steps import trace_export
from agent_release.steps.trace_export import (
    WriterProcess,
    install_row_first_export,
    is_database_uri,
    uninstall_row_first_export,
    writer_process,
)


@pytest.fixture
def tracking(tmp_path: Path) -> Iterator[str]:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    # An explicit artifact location: MLflow's default for a database store is ./mlruns in the working directory.
    mlflow.create_experiment("trace-export", artifact_location=(tmp_path / "artifacts").as_uri())
    experiment_id = mlflow.set_experiment("trace-export").experiment_id
    yield experiment_id
    uninstall_row_first_export()
    mlflow.set_tracking_uri(None)


def _make_trace(label: str) -> str:
    """One trace shaped like an evaluation case: root, two children, tags and a feedback logged while active."""
    import mlflow

    with mlflow.start_span(name="eval_case", span_type="AGENT") as root:
        root.set_inputs({"input": f"question {label}"})
        mlflow.update_current_trace(tags={"eval.case_id": label, "eval.variant": "challenger"})
        with mlflow.start_span(name="chat", span_type="CHAT_MODEL") as chat:
            chat.set_inputs({"messages": [{"role": "user", "content": label}]})
            chat.set_outputs({"content": "shipped"})
        with mlflow.start_span(name="lookup_order", span_type="TOOL") as tool:
            tool.set_inputs({"order_id": label})
        mlflow.log_feedback(trace_id=root.trace_id, name="task_success", value=1.0)
        root.set_outputs({"answer": "shipped"})
    return root.trace_id


def _shape(trace: Any) -> dict[str, Any]:
    """What must be the same whichever exporter wrote the trace (ids and timings aside)."""
    info = trace.info
    return {
        "tags": {k: v for k, v in info.tags.items() if k != "mlflow.artifactLocation"},
        "metadata_keys": sorted(k for k in info.trace_metadata if k != "mlflow.trace.sizeStats"),
        "state": info.state,
        "request_preview": info.request_preview,
        "response_preview": info.response_preview,
        "spans": sorted((s.name, s.span_type, s.parent_id is None) for s in trace.data.spans),
        "assessments": sorted((a.name, a.value) for a in info.assessments),
        "run_link": info.trace_metadata.get("mlflow.sourceRun") is not None,
    }


def test_database_uris_are_recognised() -> None:
    assert is_database_uri("sqlite:///tmp/mlflow.db")
    assert is_database_uri("postgresql+psycopg://u@h/db")
    assert is_database_uri("mysql://h/db")
    assert not is_database_uri("http://127.0.0.1:5000")
    assert not is_database_uri("databricks")
    assert not is_database_uri("file:///tmp/mlruns")


def test_written_trace_matches_mlflows_own_exporter(tracking: str) -> None:
    import mlflow

    with mlflow.start_run():
        default_id = _make_trace("A")
        mlflow.flush_trace_async_logging()
        assert install_row_first_export()
        ours_id = _make_trace("A")
        mlflow.flush_trace_async_logging()
    assert mlflow.tracing.provider._get_mlflow_span_processor is trace_export._span_processor_for
    default, ours = mlflow.get_trace(default_id), mlflow.get_trace(ours_id)
    assert default is not None and ours is not None
    assert _shape(ours) == _shape(default)
    assert len(ours.data.spans) == 3
    assert [a.name for a in ours.info.assessments] == ["task_success"]


def test_flush_waits_for_every_trace(tracking: str) -> None:
    import mlflow

    install_row_first_export()
    ids = [_make_trace(str(i)) for i in range(40)]
    mlflow.flush_trace_async_logging()
    found = mlflow.search_traces(locations=[tracking], return_type="list", include_spans=False)
    assert {t.info.trace_id for t in found} == set(ids)


def test_a_trace_reaches_the_store_when_its_root_span_ends_without_a_flush(
    tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No batching interval stands between a finished trace and the writer (OTel's batch processor would
    hold it for MLFLOW_ASYNC_TRACE_LOGGING_MAX_INTERVAL_MILLIS, set here to ten minutes)."""
    import time

    import mlflow

    from agent_release.steps.trace_export import recording_stored_traces

    monkeypatch.setenv("MLFLOW_ASYNC_TRACE_LOGGING_MAX_INTERVAL_MILLIS", "600000")
    install_row_first_export()
    mlflow.tracing.reset()  # type: ignore[no-untyped-call]  # the processor reads the interval when built
    with recording_stored_traces() as stored:
        trace_id = _make_trace("prompt")
        deadline = time.monotonic() + 30
        while trace_id not in stored and time.monotonic() < deadline:
            time.sleep(0.05)
        assert trace_id in stored
    trace = mlflow.get_trace(trace_id)
    assert trace is not None and len(trace.data.spans) == 3


@pytest.mark.parametrize(
    "env",
    [{}, {"MLFLOW_USE_BATCH_SPAN_PROCESSOR": "false"}, {"MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false"}],
    ids=["default", "no-batch-processor", "sync-logging"],
)
def test_replacing_the_tracer_provider_flushes_the_old_exporter_and_stops_its_thread(
    tracking: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    """MLflow retires a provider's exporter when it builds a new one (set_experiment, tracing.reset): the
    traces queued in it are written and its writer thread ends, so none piles up across experiments, in
    every logging mode."""
    import threading

    import mlflow

    for key, value in env.items():
        monkeypatch.setenv(key, value)

    def writer_threads() -> int:
        return sum(
            1 for t in threading.enumerate() if t.name == "agent-release-trace-writer" and t.is_alive()
        )

    install_row_first_export()
    ids = {_make_trace("first")}
    baseline = writer_threads()
    assert baseline >= 1
    for i in range(5):
        mlflow.create_experiment(f"other-{i}", artifact_location=(tmp_path / f"a{i}").as_uri())
        mlflow.set_experiment(f"other-{i}")
        ids.add(_make_trace(f"in-other-{i}"))
    mlflow.tracing.reset()  # type: ignore[no-untyped-call]  # retires the last one too, with no flush call
    assert writer_threads() < baseline  # the first exporter's thread ended too, and no later one stayed
    for trace_id in ids:
        assert mlflow.get_trace(trace_id) is not None


def test_a_dead_writer_process_loses_no_trace(tracking: str) -> None:
    import mlflow

    install_row_first_export()
    process = writer_process(mlflow.get_tracking_uri())
    assert process is not None
    _make_trace("before")
    mlflow.flush_trace_async_logging()
    process._proc.kill()
    process._proc.wait(timeout=10)
    ids = [_make_trace(f"after-{i}") for i in range(5)]
    mlflow.flush_trace_async_logging()
    assert process.broken
    for trace_id in ids:
        trace = mlflow.get_trace(trace_id)
        assert trace is not None and len(trace.data.spans) == 3
    replacement = writer_process(mlflow.get_tracking_uri())
    assert replacement is not None and replacement is not process
    replacement.close()


def test_an_unpicklable_batch_is_refused_and_the_pipe_stays_usable(tracking: str) -> None:
    import mlflow

    process = WriterProcess(mlflow.get_tracking_uri())
    try:
        assert process.write([(object(), [lambda: None])]) is None
        assert not process.broken
        assert process.write([]) == []
    finally:
        process.close()


def test_thread_mode_needs_no_process(tracking: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.setenv("AGENT_RELEASE_TRACE_WRITER", "thread")
    assert writer_process(mlflow.get_tracking_uri()) is None
    install_row_first_export()
    trace_id = _make_trace("threaded")
    mlflow.flush_trace_async_logging()
    assert mlflow.get_trace(trace_id) is not None


def test_other_tracking_stores_keep_mlflows_exporter(tracking: str, tmp_path: Path) -> None:
    # ``tracking`` points MLflow at a temporary store: building MLflow's exporter reads the tracking URI, whose
    # default is sqlite:///mlflow.db in the working directory (the repository).
    from mlflow.tracing.export.mlflow_v3 import MlflowV3SpanExporter

    from agent_release.steps.trace_export import RowFirstTraceExporter

    install_row_first_export()
    try:
        processor = trace_export._span_processor_for("http://127.0.0.1:1")
        assert type(processor.span_exporter) is MlflowV3SpanExporter
        processor = trace_export._span_processor_for(f"sqlite:///{tmp_path / 'x.db'}")
        assert isinstance(processor.span_exporter, RowFirstTraceExporter)
        processor.shutdown()
    finally:
        uninstall_row_first_export()


def test_with_async_logging_off_a_trace_is_stored_when_it_ends(
    tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
    install_row_first_export()
    mlflow.tracing.reset()  # the next span builds a provider that reads the setting
    trace_id = _make_trace("sync")
    trace = mlflow.get_trace(trace_id)  # no flush: it must already be there
    assert trace is not None and len(trace.data.spans) == 3
    assert [a.name for a in trace.info.assessments] == ["task_success"]


def test_the_writer_process_reads_each_experiment_once_per_batch(tmp_path: Path, tracking: str) -> None:
    import mlflow
    from mlflow.tracing.client import TracingClient

    from agent_release.steps.trace_export import write_batch
    from agent_release.steps.trace_writer_process import read_experiments_once_per_batch

    ids = [_make_trace(str(i)) for i in range(4)]
    mlflow.flush_trace_async_logging()
    traces = [mlflow.get_trace(trace_id) for trace_id in ids]
    for trace in traces:
        assert trace is not None
        trace.info.tags.pop("mlflow.artifactLocation")  # the target store sets its own
    target = f"sqlite:///{tmp_path / 'target.db'}"
    mlflow.set_tracking_uri(target)
    mlflow.create_experiment("trace-export", artifact_location=(tmp_path / "target-artifacts").as_uri())
    assert mlflow.set_experiment("trace-export").experiment_id == tracking
    client = TracingClient(target)
    store = client.store
    reads: list[str] = []
    original = store.get_experiment

    def counted(experiment_id: str) -> Any:
        reads.append(experiment_id)
        return original(experiment_id)

    store.get_experiment = counted
    end_of_batch = read_experiments_once_per_batch(store)

    assert write_batch(client, [(t, []) for t in traces[:3]]) == []
    assert reads == [tracking]  # three traces, one read
    end_of_batch()
    mlflow.delete_experiment(tracking)
    assert write_batch(client, [(traces[3], [])]) == [ids[3]]  # the next batch sees the deletion
    assert reads == [tracking, tracking]
    stored = mlflow.search_traces(locations=[tracking], return_type="list", include_spans=True)
    assert sorted(t.info.trace_id for t in stored) == sorted(ids[:3])
    assert all(len(t.data.spans) == 3 and t.info.assessments for t in stored)


def _copies(count: int) -> list[Any]:
    """``count`` traces made in the fixture's store and read back, ready to be written to another store."""
    import mlflow

    ids = [_make_trace(str(i)) for i in range(count)]
    mlflow.flush_trace_async_logging()
    traces = [mlflow.get_trace(trace_id) for trace_id in ids]
    for trace in traces:
        assert trace is not None
        trace.info.tags.pop("mlflow.artifactLocation")  # the target store sets its own
    return traces


def _target_store(tmp_path: Path, name: str, tracking: str) -> Any:
    """A ``TracingClient`` on a fresh SQLite store whose experiment has the fixture's id and artifact root."""
    import mlflow
    from mlflow.tracing.client import TracingClient

    uri = f"sqlite:///{tmp_path / name}"
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("trace-export", artifact_location=(tmp_path / "target-artifacts").as_uri())
    assert mlflow.set_experiment("trace-export").experiment_id == tracking
    return TracingClient(uri)


TRACE_TABLES = ("trace_info", "trace_tags", "trace_request_metadata", "assessments", "spans")


def _table_rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in TRACE_TABLES}
    finally:
        conn.close()


def test_the_writer_process_writes_a_batch_in_one_transaction_with_the_same_rows(
    tmp_path: Path, tracking: str
) -> None:
    from sqlalchemy import event

    from agent_release.steps.trace_export import write_batch
    from agent_release.steps.trace_writer_process import write_in_one_transaction

    traces = _copies(4)
    commits: dict[str, int] = {}
    clients = {}
    for name in ("trace-by-trace.db", "one-transaction.db"):
        clients[name] = client = _target_store(tmp_path, name, tracking)
        commits[name] = 0

        def count(_conn: Any, name: str = name) -> None:
            commits[name] += 1

        event.listen(client.store.engine, "commit", count)
    open_session = clients["one-transaction.db"].store.ManagedSessionMaker

    assert write_batch(clients["trace-by-trace.db"], [(t, []) for t in traces]) == []
    assert write_in_one_transaction(clients["one-transaction.db"], [(t, []) for t in traces]) == []

    assert commits["one-transaction.db"] == 1
    assert commits["trace-by-trace.db"] >= 2 * len(traces)  # a row and its spans' share, each committed
    assert clients["one-transaction.db"].store.ManagedSessionMaker is open_session
    by_trace, at_once = (
        _table_rows(tmp_path / "trace-by-trace.db"),
        _table_rows(tmp_path / "one-transaction.db"),
    )
    assert at_once == by_trace  # the same rows, value for value
    assert all(at_once[t] for t in TRACE_TABLES)
    assert len(at_once["trace_info"]) == 4 and len(at_once["spans"]) == 12


def test_a_trace_the_store_refuses_costs_only_itself_in_a_one_transaction_batch(
    tmp_path: Path, tracking: str, caplog: pytest.LogCaptureFixture
) -> None:
    import copy

    from mlflow.tracing.utils import add_size_stats_to_trace_metadata

    from agent_release.steps.trace_writer_process import write_in_one_transaction

    traces = _copies(3)
    for trace in traces:  # as the exporter hands them over: sizes not yet computed
        trace.info.trace_metadata.pop("mlflow.trace.sizeStats")
        trace.info.trace_metadata.pop("mlflow.trace.sizeBytes")
    sized_once = copy.deepcopy(traces[0])
    add_size_stats_to_trace_metadata(sized_once)
    client = _target_store(tmp_path, "target.db", tracking)
    open_session = client.store.ManagedSessionMaker
    traces[1].info.experiment_id = "424242"  # no such experiment: the store refuses its row
    caplog.set_level(logging.INFO, logger="agent_release")

    assert write_in_one_transaction(client, [(t, []) for t in traces]) == [traces[1].info.trace_id]

    assert "trace by trace" in caplog.text  # the transaction was abandoned, then each trace written alone
    assert client.store.ManagedSessionMaker is open_session
    rows = _table_rows(tmp_path / "target.db")
    stored = sorted(row[0] for row in rows["trace_info"])
    assert stored == sorted([traces[0].info.trace_id, traces[2].info.trace_id])
    assert len(rows["assessments"]) == 2 and len(rows["spans"]) == 6  # each once
    # Written twice (the abandoned transaction, then alone), a trace's sizes are still those of the trace.
    stored_sizes = {
        key: value
        for key, value, request_id in rows["trace_request_metadata"]
        if request_id == traces[0].info.trace_id and key.startswith("mlflow.trace.size")
    }
    expected = {k: v for k, v in sized_once.info.trace_metadata.items() if k.startswith("mlflow.trace.size")}
    assert stored_sizes == expected and len(expected) == 2


def test_a_batch_written_again_after_its_commit_stores_nothing_twice(
    tmp_path: Path, tracking: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer process can die after committing a batch and before answering; the batch is then written
    again (here, trace by trace), and a later batch may overlap rows already stored. New traces come first
    in that batch: ``start_trace``'s merge path rolls the session back, which must not drop them."""
    from agent_release.steps.trace_export import write_batch
    from agent_release.steps.trace_writer_process import write_in_one_transaction

    traces = _copies(4)
    client = _target_store(tmp_path, "target.db", tracking)
    assert write_in_one_transaction(client, [(t, []) for t in traces[:2]]) == []  # committed, not answered
    assert write_batch(client, [(t, []) for t in traces[:2]]) == []  # so written again
    caplog.set_level(logging.INFO, logger="agent_release")
    overlapping = [traces[2], traces[3], traces[0], traces[1]]
    assert write_in_one_transaction(client, [(t, []) for t in overlapping]) == []

    assert "trace by trace" in caplog.text
    rows = _table_rows(tmp_path / "target.db")
    assert sorted(row[0] for row in rows["trace_info"]) == sorted(t.info.trace_id for t in traces)
    per_trace = Counter(row[1] for row in rows["assessments"])
    assert per_trace == {t.info.trace_id: 1 for t in traces}, per_trace
    assert len(rows["spans"]) == 12


@pytest.mark.parametrize("user_level", [None, "INFO"])
def test_the_writer_process_keeps_mlflows_info_lines_off_the_console(
    tmp_path: Path, user_level: str | None, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if user_level is None:
        monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", user_level)
    process = WriterProcess(f"sqlite:///{tmp_path / 'quiet.db'}")
    try:
        assert process.write([]) == []  # the child has built its client and store (and their engine) by now
    finally:
        process.close()
    said = capfd.readouterr().err
    # MLflow announces creating the store's tables (and engines) at INFO; a user who asks for INFO still gets it.
    assert (" INFO mlflow." in said) == (user_level == "INFO")


def test_the_recorder_names_every_trace_stored_while_it_runs(tracking: str) -> None:
    import mlflow

    from agent_release.steps.trace_export import recording_stored_traces

    install_row_first_export()
    with recording_stored_traces() as stored:
        ids = [_make_trace(str(i)) for i in range(12)]
        mlflow.flush_trace_async_logging()
    later = _make_trace("after")
    mlflow.flush_trace_async_logging()
    assert stored == set(ids)
    assert later not in stored
    found = mlflow.search_traces(locations=[tracking], return_type="list", include_spans=False)
    assert {t.info.trace_id for t in found} == {*ids, later}


class _FakeTrace:
    def __init__(self, trace_id: str) -> None:
        self.info = type("Info", (), {"trace_id": trace_id})()


class _BlockingProcess:
    """Stands in for the writer process: each write waits for ``release``; the child refuses ``refuse``."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        import threading

        self.broken = False
        self.started = threading.Event()
        self.release = threading.Event()
        self.batches: list[list[str]] = []
        self.refuse = refuse

    def write(self, batch: Any) -> list[str]:
        self.started.set()
        assert self.release.wait(10)
        ids = [trace.info.trace_id for trace, _ in batch]
        self.batches.append(ids)
        return [i for i in ids if i in self.refuse]


def _record_writes_here(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Replace ``write_batch`` (the writes in this process) by a recorder of each batch's trace ids."""
    here: list[list[str]] = []

    def write_here(_client: Any, batch: Any) -> list[str]:
        here.append([t.info.trace_id for t, _ in batch])
        return []

    monkeypatch.setattr(trace_export, "write_batch", write_here)
    return here


def test_a_flush_behind_a_busy_writer_process_leaves_the_backlog_to_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer process writes a batch in one transaction; the flushing caller writing beside it would
    queue on the store's write lock (session 16 measured such flushes up to 160 ms longer), so it waits."""
    import threading

    from agent_release.steps.trace_export import TraceBatchWriter, recording_stored_traces

    process = _BlockingProcess(refuse=frozenset({"t7"}))
    monkeypatch.setattr(trace_export, "writer_process", lambda _uri: process)
    here = _record_writes_here(monkeypatch)
    writer = TraceBatchWriter(client=None, tracking_uri="sqlite:///unused.db")
    with recording_stored_traces() as stored:
        writer.add(_FakeTrace("t0"), [])
        assert process.started.wait(10)  # the writer thread is inside the process's write with t0
        for i in range(1, 21):
            writer.add(_FakeTrace(f"t{i}"), [])
        flushed: list[bool] = []
        flushing = threading.Thread(target=lambda: flushed.append(writer.flush(timeout_s=10)))
        flushing.start()
        flushing.join(0.3)
        assert flushing.is_alive() and writer.backlog() == (20, True)  # waiting, not writing
        process.release.set()
        flushing.join(10)
    assert flushed == [True]
    assert here == []  # nothing written in this process
    # The backlog went to the writer process as one batch, each trace once and in order.
    assert process.batches == [["t0"], [f"t{i}" for i in range(1, 21)]]
    assert stored == {f"t{i}" for i in range(21)} - {"t7"}  # refused rows are not stored
    writer.shutdown()


def test_without_a_writer_process_a_flush_waits_for_the_writer_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In thread mode the writer already shares this interpreter: the caller must not write beside it."""
    import threading
    import time

    from agent_release.steps.trace_export import TraceBatchWriter

    monkeypatch.setattr(trace_export, "writer_process", lambda _uri: None)
    written: list[tuple[str, list[str]]] = []

    def slow_write(_client: Any, batch: Any) -> list[str]:
        time.sleep(0.05)
        written.append((threading.current_thread().name, [t.info.trace_id for t, _ in batch]))
        return []

    monkeypatch.setattr(trace_export, "write_batch", slow_write)
    writer = TraceBatchWriter(client=None, tracking_uri="sqlite:///unused.db")
    for i in range(30):
        writer.add(_FakeTrace(f"t{i}"), [])
    assert writer.flush(timeout_s=10)
    assert {name for name, _ in written} == {"agent-release-trace-writer"}
    assert sorted(i for _, ids in written for i in ids) == sorted(f"t{i}" for i in range(30))
    writer.shutdown()


def _gathering_writer(monkeypatch: pytest.MonkeyPatch) -> tuple[_BlockingProcess, list[list[str]], Any]:
    """A ``TraceBatchWriter`` beside a stand-in writer process that answers at once, gathering batches for
    60 s (longer than a test may take); also the recorder of the writes made in this process."""
    from agent_release.steps.trace_export import TraceBatchWriter

    process = _BlockingProcess()
    process.release.set()
    monkeypatch.setattr(trace_export, "writer_process", lambda _uri: process)
    monkeypatch.setattr(trace_export, "GATHER_S", 60.0)
    here = _record_writes_here(monkeypatch)
    return process, here, TraceBatchWriter(client=None, tracking_uri="sqlite:///unused.db")


def test_beside_a_writer_process_a_batch_waits_for_more_traces_until_a_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer process's cost is mostly per batch, so a batch waits (up to ``GATHER_S``) for
    ``GATHER_TRACES`` traces; a flush ends the wait at once."""
    import time

    from agent_release.steps.trace_export import GATHER_TRACES

    process, here, writer = _gathering_writer(monkeypatch)
    first = [f"t{i}" for i in range(GATHER_TRACES)]
    for trace_id in first:
        writer.add(_FakeTrace(trace_id), [])
    deadline = time.monotonic() + 10
    while sum(len(b) for b in process.batches) < GATHER_TRACES and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [i for b in process.batches for i in b] == first  # sent once enough had come, not after 60 s
    assert len(process.batches) <= 2

    late = ["u0", "u1", "u2"]
    for trace_id in late:
        writer.add(_FakeTrace(trace_id), [])
    time.sleep(0.3)
    assert [i for b in process.batches for i in b] == first and not here  # still waiting for more
    started = time.monotonic()
    assert writer.flush(timeout_s=10)
    assert time.monotonic() - started < 5
    # The late traces went to the writer process too, each once; nothing was written in this process.
    assert [i for b in process.batches for i in b] == first + late and not here
    writer.shutdown()


def test_a_hurried_writer_sends_each_batch_at_once_until_the_next_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The evaluation hurries the writers as its call slots start to empty: a batch still gathering when the
    last case ends is what the final flush waited for."""
    import time

    process, here, writer = _gathering_writer(monkeypatch)

    def sent() -> list[str]:
        return [i for b in process.batches for i in b]

    def wait_until_sent(ids: list[str]) -> None:
        deadline = time.monotonic() + 10
        while sent() != ids and time.monotonic() < deadline:
            time.sleep(0.01)

    writer.add(_FakeTrace("t0"), [])
    time.sleep(0.3)
    assert sent() == []  # gathering
    writer.hurry()
    wait_until_sent(["t0"])
    assert sent() == ["t0"]  # the wait ended, not after 60 s
    writer.add(_FakeTrace("t1"), [])
    wait_until_sent(["t0", "t1"])
    assert process.batches == [["t0"], ["t1"]]  # each sent as it came
    assert writer.flush(timeout_s=10)
    writer.add(_FakeTrace("t2"), [])
    time.sleep(0.3)
    assert sent() == ["t0", "t1"]  # the flush ended the hurry: gathering again
    assert writer.flush(timeout_s=10)
    assert sent() == ["t0", "t1", "t2"] and not here
    writer.shutdown()


def test_hurry_trace_writes_reaches_the_writer_of_mlflows_current_exporter(
    tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through MLflow's own exporter lookup, as its flush: a trace gathering for a fuller batch is written
    without a flush once hurried."""
    import time

    from agent_release.steps.trace_export import hurry_trace_writes, recording_stored_traces

    monkeypatch.setattr(trace_export, "GATHER_S", 60.0)  # longer than the test may take
    install_row_first_export()
    with recording_stored_traces() as stored:
        trace_id = _make_trace("hurried")
        time.sleep(0.5)
        assert trace_id not in stored  # gathering beside the writer process
        hurry_trace_writes()
        deadline = time.monotonic() + 30
        while trace_id not in stored and time.monotonic() < deadline:
            time.sleep(0.05)
        assert trace_id in stored


def test_without_a_writer_process_a_trace_is_written_without_waiting_for_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    from agent_release.steps.trace_export import TraceBatchWriter

    monkeypatch.setattr(trace_export, "writer_process", lambda _uri: None)
    monkeypatch.setattr(trace_export, "GATHER_S", 60.0)
    written: list[str] = []

    def write(_client: Any, batch: Any) -> list[str]:
        written.extend(t.info.trace_id for t, _ in batch)
        return []

    monkeypatch.setattr(trace_export, "write_batch", write)
    writer = TraceBatchWriter(client=None, tracking_uri="sqlite:///unused.db")
    writer.add(_FakeTrace("t0"), [])
    deadline = time.monotonic() + 10
    while not written and time.monotonic() < deadline:
        time.sleep(0.01)
    assert written == ["t0"]
    writer.shutdown()


def test_a_wedged_writer_process_is_killed_and_its_traces_written_here(tracking: str) -> None:
    """A writer that stops answering (SIGSTOP: alive, silent) must not hold a batch, and the flush, forever."""
    import os
    import signal
    import time

    import mlflow

    from agent_release.steps.trace_export import TraceBatchWriter

    install_row_first_export()
    process = writer_process(mlflow.get_tracking_uri())
    assert process is not None
    trace_id = _make_trace("before")
    mlflow.flush_trace_async_logging()  # the child is up and has answered once
    trace = mlflow.get_trace(trace_id)
    assert trace is not None
    process.answer_timeout_s = 1.0
    os.kill(process.pid, signal.SIGSTOP)
    try:
        # The writer thread's path, called directly so that the batch surely goes to the wedged process (a
        # flush could otherwise write every queued trace itself before the thread takes one).
        writer = TraceBatchWriter(
            client=mlflow.tracing.client.TracingClient(), tracking_uri=mlflow.get_tracking_uri()
        )
        assert writer._process is process
        started = time.monotonic()
        failed = writer._write([(trace, [])])
        waited = time.monotonic() - started
        writer.shutdown()
    finally:
        if process._proc.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
    assert failed == []  # written in this process instead
    assert process.broken and process._proc.poll() == -signal.SIGKILL
    assert 1.0 <= waited < 15, waited
    stored = mlflow.get_trace(trace_id)
    assert stored is not None and len(stored.data.spans) == 3
    assert [a.name for a in stored.info.assessments] == ["task_success"]  # once, not twice


def test_the_writer_answer_timeout_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_release.steps.trace_export import writer_answer_timeout_s

    assert writer_answer_timeout_s() == 120.0
    monkeypatch.setenv("AGENT_RELEASE_TRACE_WRITER_TIMEOUT_S", "7.5")
    assert writer_answer_timeout_s() == 7.5
    for bad in ("soon", "0", "-3", "nan", "inf"):
        monkeypatch.setenv("AGENT_RELEASE_TRACE_WRITER_TIMEOUT_S", bad)
        assert writer_answer_timeout_s() == 120.0, bad
