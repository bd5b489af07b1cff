"""Two first runs on a new state directory create the MLflow store's tables one after the other.

Both ran MLflow's schema migration on one new ``mlflow.db`` at once: one failed ("table webhooks already
exists", or "Online migration expected to match one row") and the run was reported as tracking
"unavailable". ``configure_tracking`` now holds a file lock beside a SQLite database while the store is
first used.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Barrier
from pathlib import Path


def _configure(uri: str, ready: Barrier, errors: dict[int, str], index: int) -> None:
    import mlflow  # imported before the barrier: both processes reach the store at the same moment

    from agent_release.pipelines.tracking import configure_tracking

    assert mlflow is not None
    ready.wait(60)
    try:
        configure_tracking(uri, f"experiment-{index}")
    except Exception as exc:
        errors[index] = f"{type(exc).__name__}: {exc}"


def test_two_processes_creating_one_tracking_store_both_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with context.Manager() as manager:
        errors = manager.dict()
        ready = context.Barrier(2)
        workers = [context.Process(target=_configure, args=(uri, ready, errors, i)) for i in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(180)
        assert [worker.exitcode for worker in workers] == [0, 0]
        assert dict(errors) == {}
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    assert {e.name for e in client.search_experiments()} >= {"experiment-0", "experiment-1"}
