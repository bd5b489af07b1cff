"""MLflow set-up for a pipeline run: where to track, which experiment, and Strands autologging.

Call :func:`configure_tracking` once per process before any agent runs; every agent call after that is
traced (one trace per call with AGENT, CHAT_MODEL and TOOL spans) by ``mlflow.strands.autolog()``. Wrap
agent calls in :func:`traced_as` to link their traces to the agent version (MLflow LoggedModel) they ran.

Usage::

    uri = resolve_tracking_uri(config.tracking.uri, state_dir)
    experiment_id = configure_tracking(
        uri, config.tracking.experiment, artifact_root=default_artifact_root(state_dir)
    )
    with traced_as(registered.logged_model_id):
        agent("Where is my order?")

mlflow is imported inside the functions: importing it costs about a second and the CLI must start fast.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent_release.steps.agent_tracing import apply_tracing_environment, traced_as
from agent_release.steps.log_filters import demote_mlflow_store_errors

__all__ = [
    "apply_mlflow_environment",
    "configure_tracking",
    "default_artifact_root",
    "enable_agent_autolog",
    "quiet_mlflow_logs",
    "resolve_tracking_uri",
    "traced_as",
    "unsupported_tracking_uri",
]

logger = logging.getLogger(__name__)

# Set before MLflow starts tracing (the tracer provider reads them when it is first built).
_FORCED_ENV = {
    # Without it, spans of an agent called in mlflow.genai.evaluate's predict_fn land in an orphaned trace.
    "MLFLOW_TRACE_PROPAGATE_TO_OTEL_CONTEXT": "true",
    # evaluate otherwise calls predict_fn once more just to check that it produces a trace.
    "MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION": "true",
}
# Defaults a user may override in their environment.
_DEFAULT_ENV = {
    # The default pool (5 + 10 overflow) deadlocks when 15+ threads write traces to the SQL store.
    "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "32",
    "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "64",
    # Offline machines: litellm would otherwise fetch its price list from the internet.
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    # No usage telemetry leaves the machine.
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
# Loggers that print INFO lines a pipeline user cannot act on (database migrations, "created version 3").
_NOISY_LOGGERS = ("mlflow", "alembic")
# How long configure_tracking waits for an MLflow server's /health before calling it unreachable.
PROBE_TIMEOUT_S = 5.0
# How long a run waits for another process to finish creating the tracking database's tables.
STORE_INIT_LOCK_TIMEOUT_S = 300.0


def resolve_tracking_uri(configured: str | None, state_dir: Path) -> str:
    """The tracking URI: the configured one, else ``$MLFLOW_TRACKING_URI``, else SQLite in ``state_dir``."""
    if configured:
        return configured
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    return f"sqlite:///{(state_dir / 'mlflow.db').resolve()}"


def unsupported_tracking_uri(uri: str) -> str | None:
    """Why MLflow cannot track to ``uri`` (its scheme has no tracking or registry store), else None.

    MLflow decides: its store registries map each URI scheme to a store (built-in ones plus plugins such as
    sagemaker-mlflow's ``arn``). Only the scheme is looked up; nothing is connected to or created. An
    unknown scheme is a mistake in the configuration, not an outage: no retry or resume can fix it.
    """
    try:
        from mlflow.tracking._model_registry.utils import _get_store_registry
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry
        from mlflow.utils.uri import get_uri_scheme
    except ImportError:  # MLflow moved its registries: let MLflow itself report the URI when it is used
        return None
    try:
        parsed = get_uri_scheme(uri)  # type: ignore[no-untyped-call]
        scheme = uri if uri in {"databricks", "databricks-uc", "uc"} else str(parsed)
    except ValueError as exc:  # urllib's parse errors, e.g. "Invalid IPv6 URL"
        return f"not a URI ({exc})"
    for registry in (_tracking_store_registry, _get_store_registry()):  # type: ignore[no-untyped-call]
        supported = getattr(registry, "_registry", None)
        if isinstance(supported, dict) and scheme not in supported:
            known = ", ".join(sorted(s for s in supported if s)) or "none"
            return f"MLflow has no tracking store for URI scheme '{scheme}' (supported: {known})"
    return None


def default_artifact_root(state_dir: Path) -> Path:
    """Where artifacts go when tracking to the local SQLite store: ``<state_dir>/artifacts/mlflow``."""
    return state_dir / "artifacts" / "mlflow"


def apply_mlflow_environment() -> None:
    """Set the environment MLflow reads at import and at tracer start-up (idempotent)."""
    for key, value in _FORCED_ENV.items():
        os.environ[key] = value
    for key, value in _DEFAULT_ENV.items():
        os.environ.setdefault(key, value)
    apply_tracing_environment()


def quiet_mlflow_logs() -> None:
    """Lower MLflow's INFO chatter and silence its warnings nobody running the pipeline can act on."""
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    demote_mlflow_store_errors()
    warnings.filterwarnings("ignore", module=r"mlflow(\..*)?")
    warnings.filterwarnings("ignore", message=r".*is experimental.*")


def configure_tracking(uri: str, experiment: str, *, artifact_root: Path | None = None) -> str:
    """Point MLflow tracking and registry at ``uri``, select ``experiment``, turn on Strands tracing.

    Creates the experiment when it does not exist and restores it when it was deleted. For a local
    database URI (``sqlite:``, ``postgresql:``, ...) a new experiment keeps its artifacts under
    ``artifact_root``, which defaults for ``sqlite:///<dir>/mlflow.db`` to ``<dir>/artifacts/mlflow``
    (:func:`default_artifact_root` of the state directory); MLflow's own default would be ``./mlruns`` in
    the working directory. Returns the experiment id.
    """
    apply_mlflow_environment()
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    _drop_telemetry_client()
    quiet_mlflow_logs()
    probe_tracking_server(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)

    with _creating_store(uri):  # the store's first use (the client makes it) creates its tables
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        existing = client.get_experiment_by_name(experiment)
    if existing is None:
        location = None
        # A tracking server (http, databricks, SageMaker ARN) decides where artifacts go itself.
        root = artifact_root if artifact_root is not None else _sqlite_artifact_root(uri)
        if root is not None and _is_local_database(uri):
            root.mkdir(parents=True, exist_ok=True)
            location = root.resolve().as_uri()
        try:
            experiment_id = client.create_experiment(experiment, artifact_location=location)
        except MlflowException:
            # Another process created it between our lookup and our create.
            again = client.get_experiment_by_name(experiment)
            if again is None:
                raise
            experiment_id = again.experiment_id
    else:
        experiment_id = existing.experiment_id
        if existing.lifecycle_stage == "deleted":
            client.restore_experiment(experiment_id)
    mlflow.set_experiment(experiment_id=experiment_id)
    enable_agent_autolog()
    logger.info(
        "tracking_uri=<%s>, experiment=<%s>, experiment_id=<%s> | tracking configured",
        uri,
        experiment,
        experiment_id,
    )
    return str(experiment_id)


def probe_tracking_server(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast when an MLflow tracking *server* (``http(s)://``) does not answer its ``/health`` route.

    MLflow's own client retries a refused connection for about four minutes before it gives up
    (measured: 247 s), so an unreachable server would look like a hung run. Other URIs (databases,
    Databricks, SageMaker ARNs) are not probed. Raises ``ConnectionError`` with a one-line message.
    """
    import urllib.error
    import urllib.request

    if not uri.lower().startswith(("http://", "https://")):
        return
    health = f"{uri.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout_s) as response:
            response.read(64)
    except urllib.error.HTTPError:
        return  # it answered: auth or routing in front of it is the client's business
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise ConnectionError(f"no answer from {health} within {timeout_s:g} s") from None
        raise ConnectionError(f"no answer from {health} ({reason})") from None


def enable_agent_autolog() -> None:
    """Turn on ``mlflow.strands.autolog()`` (idempotent: MLflow adds its span processor only once)."""
    import mlflow.strands

    mlflow.strands.autolog(silent=True)


def _drop_telemetry_client() -> None:
    # mlflow starts its telemetry client at import; when it was imported before our environment was set,
    # initialising it again reads MLFLOW_DISABLE_TELEMETRY and drops the client.
    from mlflow.telemetry import get_telemetry_client, set_telemetry_client

    if get_telemetry_client() is not None:
        set_telemetry_client()  # type: ignore[no-untyped-call]


def _is_local_database(uri: str) -> bool:
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    return scheme in {"sqlite", "postgresql", "mysql", "mssql"}


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///<path>`` URI (None for another URI or an in-memory database)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri == prefix + ":memory:":
        return None
    return Path(uri[len(prefix) :])


def _sqlite_artifact_root(uri: str) -> Path | None:
    path = _sqlite_path(uri)
    return None if path is None else default_artifact_root(path.parent)


@contextmanager
def _creating_store(uri: str) -> Iterator[None]:
    """For a SQLite URI, one process at a time creates (or migrates) the store's tables.

    Two first runs on a new state directory ran MLflow's schema migration on one new ``mlflow.db`` at once;
    one failed ("table webhooks already exists") and was reported as tracking "unavailable". A file lock
    beside the database orders them: the second finds the tables made. Other URIs are the server's to order.
    """
    path = _sqlite_path(uri)
    if path is None or not path.parent.is_dir():
        yield
        return
    from filelock import FileLock

    with FileLock(str(path.with_name(f".{path.name}.init.lock")), timeout=STORE_INIT_LOCK_TIMEOUT_S):
        yield
