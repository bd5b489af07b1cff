"""Link agent traces to the agent version that produced them.

``mlflow.strands.autolog()`` (turned on by ``agent_release.pipelines.tracking.configure_tracking``)
traces every Strands agent call; :func:`traced_as` stamps those traces with the MLflow LoggedModel id of
the registered agent (``RegisteredAgent.logged_model_id``), so ``mlflow.search_traces(model_id=...)`` and
the MLflow UI group them per agent version.

Usage::

    with traced_as(registered.logged_model_id):
        result = agent("Where is my order ORD-10427?")
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

# MLflow reads these when tracing starts, so they must be set before the first trace of the process. Values a
# user set already win (setdefault). Kept here, in steps, because the evaluation step applies them too and steps
# cannot import pipelines; ``pipelines.tracking.apply_mlflow_environment`` applies the same table.
TRACING_ENV = {
    # Agent, model and tool spans nest inside evaluation traces instead of landing in orphaned traces.
    "MLFLOW_TRACE_PROPAGATE_TO_OTEL_CONTEXT": "true",
    # mlflow.genai.evaluate would otherwise call predict_fn once more just to validate tracing.
    "MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION": "true",
    # More scoring threads than this hit "database is locked" on the SQLite store.
    "MLFLOW_GENAI_EVAL_MAX_WORKERS": "4",
    # Batch span writes (about 20 -> 5 ms per trace) and never discard traces when the queue fills. These
    # three shape MLflow's own exporter (a tracking server); a database store's row-first exporter takes
    # each span as it ends and batches whole traces itself (steps/trace_export.py).
    "MLFLOW_ASYNC_TRACE_LOGGING_MAX_SPAN_BATCH_SIZE": "256",
    "MLFLOW_ASYNC_TRACE_LOGGING_MAX_INTERVAL_MILLIS": "500",
    "MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE": "100000",
    # A span's cost is priced from the model catalog MLflow ships. Unset, storing a span with a model name
    # first fetches the catalog from github.com: an outbound call from every run online, and about 7 s of
    # retries offline (measured on this machine), once per process that stores spans.
    "MLFLOW_MODEL_CATALOG_URI": "",
}


def apply_tracing_environment() -> None:
    """Set :data:`TRACING_ENV` (idempotent; a user's own values win)."""
    for key, value in TRACING_ENV.items():
        os.environ.setdefault(key, value)


@contextmanager
def traced_as(logged_model_id: str) -> Iterator[None]:
    """Link every trace started inside the block to the LoggedModel ``logged_model_id``.

    Uses ``mlflow.tracing.context`` (a context variable, which Strands copies into the thread running a
    sync ``agent(...)`` call) rather than ``mlflow.set_active_model`` (thread-local, with an all-threads
    fallback), so agents of different variants can run side by side in threads and each trace still
    names its own model.
    """
    import mlflow
    from mlflow.tracing.constant import TraceMetadataKey

    with mlflow.tracing.context(metadata={TraceMetadataKey.MODEL_ID: logged_model_id}):
        yield
