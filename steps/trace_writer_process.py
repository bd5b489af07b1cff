"""The trace writer process: ``python -m agent_release.steps.trace_writer_process <read-fd> <write-fd>``.

Started by :class:`agent_release.steps.trace_export.WriterProcess`. Reads pickled batches of ``(Trace, prompt
versions)`` from the first pipe, writes each with :func:`~agent_release.steps.trace_export.write_batch` to
the tracking URI in ``MLFLOW_TRACKING_URI``, and answers with the number of traces that failed. Exits when
the pipe closes.
"""

from __future__ import annotations

import logging
import sys
from multiprocessing.connection import Connection


def main(argv: list[str]) -> int:
    """Serve batches until the parent closes the pipe."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mlflow.tracing.client import TracingClient

    from agent_release.steps.trace_export import write_batch

    inbox = Connection(int(argv[0]), writable=False)
    outbox = Connection(int(argv[1]), readable=False)
    client = TracingClient()
    while True:
        try:
            payload = inbox.recv()
        except (EOFError, OSError):
            return 0
        outbox.send(write_batch(client, payload))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
