"""MLflow client calls made by the trace writer process while this process makes its own
(steps/store_calls.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from agent_release.steps import trace_export
from agent_release.steps.store_calls import (
    OffloadedStoreCalls,
    StoreCall,
    StoreCalls,
    StoreCallsFailed,
    offload_store_calls,
)
from agent_release.steps.trace_export import writer_process


@pytest.fixture
def run_id(tmp_path: Path) -> Iterator[str]:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = mlflow.MlflowClient().create_experiment(
        "store-calls", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    mlflow.set_experiment(experiment_id=experiment_id)  # where load_table looks
    run = mlflow.MlflowClient().create_run(experiment_id)
    yield run.info.run_id
    mlflow.set_tracking_uri(None)


def _calls(run_id: str) -> list[StoreCall]:
    from mlflow.entities import Metric

    table = pd.DataFrame({"case_id": ["a", "b", "c"], "score": [1.0, 0.0, 0.5]})
    return [
        StoreCall(
            "log_batch", (run_id,), {"metrics": [Metric("score/mean", 0.5, int(time.time() * 1000), 0)]}
        ),
        StoreCall("log_table", (run_id,), {"data": table, "artifact_file": "cases.json"}),
    ]


def _logged(run_id: str) -> tuple[dict[str, float], list[str]]:
    import mlflow

    metrics = mlflow.get_run(run_id).data.metrics
    names = [a.path for a in mlflow.MlflowClient().list_artifacts(run_id)]
    table = (
        list(mlflow.load_table("cases.json", run_ids=[run_id])["case_id"]) if "cases.json" in names else []
    )
    return metrics, table


def _refuse_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process's MlflowClient refuse the calls: made here, they would fail."""
    import mlflow

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("made in the pipeline process")

    monkeypatch.setattr(mlflow.MlflowClient, "log_batch", refuse)
    monkeypatch.setattr(mlflow.MlflowClient, "log_table", refuse)


def test_the_writer_process_makes_the_calls(run_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    process = writer_process(mlflow.get_tracking_uri())
    assert process is not None
    try:
        with monkeypatch.context() as patched:
            _refuse_here(patched)
            offloaded = offload_store_calls(_calls(run_id))
            offloaded.wait()
        assert _logged(run_id) == ({"score/mean": 0.5}, ["a", "b", "c"])
        # The pipe carries trace batches again afterwards.
        assert process.write([]) == [] and not process.broken
    finally:
        process.close()


def test_a_failed_call_is_raised_and_the_later_calls_are_not_made(run_id: str) -> None:
    import mlflow

    process = writer_process(mlflow.get_tracking_uri())
    assert process is not None
    try:
        bad = StoreCall("set_tag", ("no-such-run", "k", "v"))
        with pytest.raises(StoreCallsFailed, match=r"set_tag failed: .*no-such-run"):
            offload_store_calls([bad, *_calls(run_id)]).wait()
        assert _logged(run_id) == ({}, [])
        # The same process goes on with the next calls.
        offload_store_calls(_calls(run_id)).wait()
        assert _logged(run_id) == ({"score/mean": 0.5}, ["a", "b", "c"])
        assert not process.broken
    finally:
        process.close()


def test_without_a_writer_process_the_calls_are_made_here_when_waited_for(
    run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException

    monkeypatch.setattr(trace_export, "current_writer_process", lambda: None)
    offloaded = offload_store_calls(_calls(run_id))
    assert _logged(run_id) == ({}, [])  # nothing yet: in this process the calls are made by wait()
    offloaded.wait()
    assert _logged(run_id) == ({"score/mean": 0.5}, ["a", "b", "c"])
    # Made here, a failing call raises its own exception, as when the step made it itself.
    with pytest.raises(MlflowException, match="no-such-run"):
        offload_store_calls([StoreCall("set_tag", ("no-such-run", "k", "v"))]).wait()


def test_a_writer_process_of_another_tracking_uri_is_not_used(
    run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = _FakeProcess(tracking_uri=f"sqlite:///{tmp_path / 'other.db'}")
    monkeypatch.setattr(trace_export, "current_writer_process", lambda: other)
    offload_store_calls(_calls(run_id)).wait()
    assert other.sent == [] and _logged(run_id) == ({"score/mean": 0.5}, ["a", "b", "c"])


class _FakeProcess:
    """A stand-in for WriterProcess.run_store_calls: fails before or after the calls are on their way."""

    def __init__(
        self, tracking_uri: str = "", fail: Callable[[Callable[[], None] | None], None] | None = None
    ):
        self.tracking_uri = tracking_uri
        self.fail = fail
        self.sent: list[StoreCalls] = []

    def run_store_calls(self, calls: StoreCalls, on_sent: Callable[[], None] | None = None) -> str | None:
        if self.fail is not None:
            self.fail(on_sent)
        self.sent.append(calls)
        return None


def test_a_writer_gone_before_the_calls_were_sent_leaves_them_to_this_process(run_id: str) -> None:
    def pipe_closed(_on_sent: Callable[[], None] | None) -> None:
        raise OSError("Broken pipe")

    offloaded = OffloadedStoreCalls(_calls(run_id), _FakeProcess(fail=pipe_closed))  # type: ignore[arg-type]
    offloaded.wait()
    assert _logged(run_id) == ({"score/mean": 0.5}, ["a", "b", "c"])


def test_a_writer_gone_after_the_calls_were_sent_fails_the_wait_and_makes_nothing_twice(run_id: str) -> None:
    def died(on_sent: Callable[[], None] | None) -> None:
        assert on_sent is not None
        on_sent()
        raise EOFError("trace writer process exited with -9")

    offloaded = OffloadedStoreCalls(_calls(run_id), _FakeProcess(fail=died))  # type: ignore[arg-type]
    with pytest.raises(
        StoreCallsFailed, match=r"stopped while making log_batch, log_table: .*exited with -9"
    ):
        offloaded.wait()
    assert _logged(run_id) == ({}, [])  # not made again here: what the writer made of them is unknown


def test_settle_waits_for_the_writer_and_makes_nothing_here(run_id: str) -> None:
    import threading

    answered = threading.Event()

    def slow(_on_sent: Callable[[], None] | None) -> None:
        time.sleep(0.2)
        answered.set()

    process = _FakeProcess(fail=slow)
    offloaded = OffloadedStoreCalls(_calls(run_id), process)  # type: ignore[arg-type]
    offloaded.settle()
    assert answered.is_set() and len(process.sent) == 1
    # Without a writer process, settling makes nothing (the step is failing already).
    OffloadedStoreCalls(_calls(run_id), None).settle()
    assert _logged(run_id) == ({}, [])


def test_the_writer_drops_its_cached_experiments_after_store_calls_too(run_id: str) -> None:
    """The writer caches experiments for one batch of traces; its MlflowClient shares that store, so an
    experiment read by a store call must not stay cached for the next batch."""
    import mlflow
    from mlflow.tracing.client import TracingClient

    from agent_release.steps.trace_writer_process import answer, read_experiments_once_per_batch

    client, mlflow_client = TracingClient(), mlflow.MlflowClient()
    store = client.store
    assert store is mlflow_client._tracking_client.store  # the premise: one store for both clients
    experiment_id = mlflow.get_run(run_id).info.experiment_id
    end_of_batch = read_experiments_once_per_batch(store)
    try:
        calls = StoreCalls((StoreCall("get_experiment", (experiment_id,)),))
        assert answer(calls, client, mlflow_client, end_of_batch) is None
        mlflow_client.rename_experiment(experiment_id, "renamed-meanwhile")
        assert store.get_experiment(experiment_id).name == "renamed-meanwhile"
    finally:
        del store.get_experiment  # the instance attribute the cache installed; the class method again
