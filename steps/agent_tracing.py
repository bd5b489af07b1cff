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

from collections.abc import Iterator
from contextlib import contextmanager


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
