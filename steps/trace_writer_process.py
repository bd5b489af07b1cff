"""The trace writer process: ``python -m agent_release.steps.trace_writer_process <read-fd> <write-fd>``.

Started by :class:`agent_release.steps.trace_export.WriterProcess`. Reads pickled batches of ``(Trace, prompt
versions)`` from the first pipe, writes each with :func:`~agent_release.steps.trace_export.write_batch` to
the tracking URI in ``MLFLOW_TRACKING_URI``, and answers with the number of traces that failed. Exits when
the pipe closes.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any


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


logger = logging.getLogger(__name__)

WAL_SWITCH = "AGENT_RELEASE_SQLITE_WAL"


def use_write_ahead_log(store: Any) -> bool:
    """Put a SQLite tracking store in WAL mode, with this process's connections at ``synchronous=NORMAL``.

    In SQLite's default rollback-journal mode every commit creates, syncs and deletes a journal file; the
    writer commits once per trace (``start_trace``) and once per batch of spans, and that bookkeeping was
    about a quarter of its time per trace (``docs/performance.md``). In WAL mode a commit appends to one log
    and, at ``synchronous=NORMAL``, syncs only at checkpoints: a crash of any process loses nothing
    committed, a power cut can lose the last commits. Readers (the pipeline reading runs and traces back)
    no longer wait for the writer either. It is the mode MLflow's own ``fs2db`` migration sets. WAL mode
    is a property of the database file, so it stays on for every later user of the file; it needs a local
    file system (not NFS). ``AGENT_RELEASE_SQLITE_WAL=0`` leaves the file as it is.

    Returns whether the store is now in WAL mode; any other store, or a file SQLite cannot switch (e.g.
    another connection holds a transaction), is left alone.
    """
    engine = getattr(store, "engine", None)
    if engine is None or engine.dialect.name != "sqlite" or os.environ.get(WAL_SWITCH, "1") == "0":
        return False
    from sqlalchemy import event

    try:
        with engine.connect() as conn:
            mode = str(conn.exec_driver_sql("PRAGMA journal_mode=WAL").scalar()).lower()
    except Exception as exc:
        logger.warning("error=<%s> | cannot switch the tracking database to WAL mode; leaving it", exc)
        return False
    if mode != "wal":  # e.g. an in-memory database
        return False

    def normal_sync(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", normal_sync)
    engine.dispose()  # pooled connections were opened before the listener
    return True


def main(argv: list[str]) -> int:
    """Serve batches until the parent closes the pipe."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mlflow.tracing.client import TracingClient

    from agent_release.steps.gc_pauses import freeze_long_lived_heap
    from agent_release.steps.trace_export import write_batch

    inbox = Connection(int(argv[0]), writable=False)
    outbox = Connection(int(argv[1]), readable=False)
    client = TracingClient()
    end_of_batch = read_experiments_once_per_batch(client.store)
    use_write_ahead_log(client.store)
    freeze_long_lived_heap()  # MLflow's imported heap is never garbage; ~5 ms of collection per trace else
    while True:
        try:
            payload = inbox.recv()
        except (EOFError, OSError):
            return 0
        try:
            failed = write_batch(client, payload)
        finally:
            end_of_batch()
        outbox.send(failed)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
