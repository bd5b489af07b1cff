"""The trace writer process: ``python -m agent_release.steps.trace_writer_process <read-fd> <write-fd>``.

Started by :class:`agent_release.steps.trace_export.WriterProcess`. Reads pickled batches of ``(Trace, prompt
versions)`` from the first pipe, writes each with :func:`~agent_release.steps.trace_export.write_batch` to
the tracking URI in ``MLFLOW_TRACKING_URI``, and answers with the ids of the traces it could not write.
Exits when the pipe closes.
"""

from __future__ import annotations

import logging
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
