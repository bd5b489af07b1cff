"""The trace writer process: ``python -m agent_release.steps.trace_writer_process <read-fd> <write-fd>``.

Started by :class:`agent_release.steps.trace_export.WriterProcess`. Reads pickled batches of ``(Trace, prompt
versions)`` from the first pipe, writes each (:func:`write_in_one_transaction`) to the tracking URI in
``MLFLOW_TRACKING_URI``, and answers with the ids of the traces it could not write. A
:class:`~agent_release.steps.store_calls.StoreCalls` instead is made with an ``MlflowClient`` and answered
with None or what failed. Exits when the pipe closes.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from agent_release.steps.store_calls import StoreCalls, make_store_calls
from agent_release.steps.trace_export import Batch, write_batch

logger = logging.getLogger(__name__)


def read_experiments_once_per_batch(store: Any) -> Callable[[], None]:
    """Make ``store.get_experiment`` answer from a cache until the returned ``clear`` is called.

    ``SqlAlchemyStore.start_trace`` reads the trace's experiment (with its tags, in its own session) for
    every trace, to check it is active and to build the artifact-location tag: about 3.5 ms of this
    process's 15-20 ms per trace, and the writer process is what bounds evaluation throughput. A batch's
    traces share one or two experiments, so the writer reads each once per batch and clears the cache
    after it: a change to an experiment (deleted, renamed) is seen by the next batch, a fraction of a
    second later. Only this process's own store is changed, never one another thread uses.
    """
    original = store.get_experiment
    cache: dict[str, Any] = {}

    def get_experiment(experiment_id: Any) -> Any:
        key = str(experiment_id)
        if key not in cache:
            cache[key] = original(experiment_id)
        return cache[key]

    store.get_experiment = get_experiment
    return cache.clear


class _RolledBack(Exception):
    """The store rolled the shared transaction back part-way (e.g. ``start_trace``'s merge path)."""


@contextlib.contextmanager
def one_transaction(store: Any) -> Iterator[None]:
    """Run the ``store`` calls made inside the block in one transaction, committed when the block ends.

    ``SqlAlchemyStore`` opens a session, and commits it, for every call: for a trace that is one
    ``start_trace`` transaction plus its share of ``log_spans``'s, each with its own connection set-up and,
    on SQLite, its own journal sync. Here every call of the block gets the same session (the store's
    ``ManagedSessionMaker``, which each method opens, answers with it), so a batch of traces is one
    commit. The rows are MLflow's own: its methods build and write them as always; only where the
    transaction ends changes. Raises if the block fails or if the store rolled the session back part-way
    (which would have undone the block's earlier writes): the transaction is then rolled back, and nothing
    of the block is in the store.

    Only for a store no other thread uses (this process's): its ``ManagedSessionMaker`` is swapped for the
    duration of the block.
    """
    from sqlalchemy import event

    open_session = store.ManagedSessionMaker
    with open_session(read_only=False) as session:
        rollbacks: list[object] = []

        def note_rollback(*_: object) -> None:
            rollbacks.append(None)

        event.listen(session, "after_soft_rollback", note_rollback)

        @contextlib.contextmanager
        def same_session(read_only: bool = True) -> Iterator[Any]:
            yield session

        store.ManagedSessionMaker = same_session
        try:
            yield
        finally:
            store.ManagedSessionMaker = open_session
        if rollbacks:
            raise _RolledBack("the store rolled the batch's transaction back part-way")


def write_in_one_transaction(client: Any, batch: Batch) -> list[str]:
    """Write ``batch`` as :func:`write_batch` does, in one transaction; the ids of the traces not written.

    If any part of the batch fails, the transaction is rolled back (nothing of it is stored) and the
    batch is written again trace by trace, so one bad trace still costs only itself. Measured by replaying
    captured traces into a fresh store (``docs/performance.md``, session 15): 13-20% less CPU per trace in
    batches of 8 or 16.
    """
    store = client.store
    if not hasattr(store, "ManagedSessionMaker"):  # not a SQLAlchemy store
        return write_batch(client, batch)
    try:
        with one_transaction(store):
            write_batch(client, batch, strict=True)
        return []
    except Exception as exc:
        logger.info(
            "traces=<%d>, error=<%s> | batch not written in one transaction; trace by trace", len(batch), exc
        )
        return write_batch(client, batch)


def main(argv: list[str]) -> int:
    """Serve batches until the parent closes the pipe."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mlflow import MlflowClient
    from mlflow.tracing.client import TracingClient

    from agent_release.steps.gc_pauses import freeze_long_lived_heap
    from agent_release.steps.log_filters import demote_mlflow_store_errors

    demote_mlflow_store_errors()  # a locked database is retried (store_retry), not a traceback per attempt

    inbox = Connection(int(argv[0]), writable=False)
    outbox = Connection(int(argv[1]), readable=False)
    client = TracingClient()
    mlflow_client = MlflowClient()
    end_of_batch = read_experiments_once_per_batch(client.store)
    freeze_long_lived_heap()  # MLflow's imported heap is never garbage; ~5 ms of collection per trace else
    while True:
        try:
            payload = inbox.recv()
        except (EOFError, OSError):
            return 0
        outbox.send(answer(payload, client, mlflow_client, end_of_batch))


def answer(payload: Any, client: Any, mlflow_client: Any, end_of_batch: Callable[[], None]) -> Any:
    """Make what the parent sent and return the answer: for a batch of traces the ids it could not write,
    for :class:`~agent_release.steps.store_calls.StoreCalls` None or what failed. Either way the cached
    experiments are dropped afterwards: ``mlflow_client`` and ``client`` share one store, so a store call
    that read an experiment must not leave it cached for the next batch."""
    try:
        if isinstance(payload, StoreCalls):
            return make_store_calls(mlflow_client, payload.calls)
        return write_in_one_transaction(client, payload)
    finally:
        end_of_batch()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
