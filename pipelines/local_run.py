"""Run the pipeline locally: the embedded default behind ``agent-release run`` and ``make demo``.

``run_local`` wires the pieces a local execution needs and tears them down again:

1. load + validate the config (a new execution) or the stored config (``--resume``);
2. the local backend (SQLite state) and the loopback SageMaker runtime, started in-process for the run;
3. the sagemaker-runtime client redirected to it through ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` (dummy
   credentials: a local run never signs with your AWS credentials);
4. MLflow tracking (SQLite under the state directory unless configured);
5. the endpoint lock (``endpoint:<name>``) for the whole run, so two runs on one endpoint, or a release
   manager's ``promote`` during a run, cannot interleave;
6. the executor over :func:`~agent_release.pipelines.dag.pipeline_steps`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent_release.pipelines.config import LoadedConfig, check_referenced_files, load_config, parse_config
from agent_release.pipelines.console import RunConsole
from agent_release.pipelines.executor import (
    ExecutionNotFound,
    ExecutionResult,
    ExecutionStore,
    ExecutionSuperseded,
    LocalExecutor,
    one_line,
)
from agent_release.pipelines.state_db import check_audit_head

logger = logging.getLogger(__name__)

LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "agent-release-local",
    "AWS_SECRET_ACCESS_KEY": "agent-release-local",
}


@contextmanager
def local_runtime_environment(url: str, region: str) -> Iterator[None]:
    """Point sagemaker-runtime clients at the local runtime for the duration of the block."""
    keys = [
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
        "AWS_DEFAULT_REGION",
        "AWS_SESSION_TOKEN",
        *LOCAL_CREDENTIALS,
    ]
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = url
    os.environ["AWS_DEFAULT_REGION"] = region
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.update(LOCAL_CREDENTIALS)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during an execution; carries its id for the resume hint."""

    def __init__(self, execution_id: str) -> None:
        super().__init__(execution_id)
        self.execution_id = execution_id


def load_for_run(config_path: Path, store: ExecutionStore | None, resume_id: str | None) -> LoadedConfig:
    """The config of a new execution (from the file) or of a resumed one (as stored when it started)."""
    if resume_id is None:
        from agent_release.pipelines.config_checks import check_config

        loaded = load_config(config_path)
        check_referenced_files(loaded)
        check_config(loaded)
        return loaded
    if store is None:
        raise ValueError("resuming needs the state database")
    row = store.execution(resume_id)
    if row is None:
        raise ExecutionNotFound(f"no execution with id {resume_id} (see `agent-release status`)")
    if row["status"] == "succeeded":
        raise ExecutionNotFound(f"execution {resume_id} already succeeded; nothing to resume")
    path = Path(row["config_path"])
    config = parse_config(row["config_text"], source=f"{path} (as stored by {resume_id})")
    _refuse_if_superseded(store, resume_id, config.deploy.endpoint_name)
    return LoadedConfig(config=config, path=path, base_dir=path.parent, text=row["config_text"])


def _refuse_if_superseded(store: ExecutionStore, resume_id: str, endpoint: str) -> None:
    """Raise :class:`ExecutionSuperseded` when an execution started after ``resume_id`` deployed to ``endpoint``.

    The resumed execution reuses its own stored deployment (which models are champion and challenger); after
    a later run redeployed or promoted, acting on it shifted live traffic back to the demoted model and could
    Reject the package serving production.
    """
    for later in store.deployed_after(resume_id):
        try:
            later_endpoint = parse_config(later["config_text"], source=later["id"]).deploy.endpoint_name
        except Exception:  # a stored config that no longer parses: it may have been this endpoint's
            later_endpoint = endpoint
        if later_endpoint == endpoint:
            raise ExecutionSuperseded(
                f"execution {resume_id} was superseded: execution {later['id']}, started after it, deployed "
                f"to endpoint {endpoint}; resuming would act on the deployment it replaced. Start a new run "
                "(`agent-release run`)"
            )


class TrackingUnavailable(RuntimeError):
    """MLflow tracking could not be reached as the run started; the message is one line."""


def tracking_unavailable(
    store: ExecutionStore, execution_id: str, uri: str, exc: BaseException
) -> TrackingUnavailable:
    """Record the execution as failed (so ``status`` does not show it running) and say how to resume it."""
    message = f"MLflow tracking at {uri} is unavailable: {one_line(exc)}"
    store.finish(execution_id, "failed", error=message)
    # info, not warning: the one-line error the CLI prints says the same, with the resume command.
    logger.info("execution=<%s>, tracking_uri=<%s> | tracking unavailable", execution_id, uri)
    return TrackingUnavailable(f"{message}; once it is back: agent-release run --resume {execution_id}")


def run_local(
    config_path: Path,
    *,
    state_dir: Path,
    resume_id: str | None = None,
    console: RunConsole | None = None,
    actor: str = "pipeline",
) -> ExecutionResult:
    """Run (or resume) one execution locally and return how it ended; raises only for setup errors."""
    from agent_release.pipelines.dag import RunContext, pipeline_steps
    from agent_release.pipelines.local_backend import LocalBackend, refuse_a_broken_ledger
    from agent_release.pipelines.tracking import configure_tracking, resolve_tracking_uri

    console = console or RunConsole(quiet=True)
    # A new run's config is checked before the state directory is touched (a bad config leaves no trace);
    # a resumed one comes from the state database.
    fresh = load_for_run(config_path, None, None) if resume_id is None else None
    # Steps record what they change in the ledger after changing it: refuse before the first change instead.
    check_audit_head(state_dir)
    store = ExecutionStore(state_dir)
    try:
        loaded = fresh or load_for_run(config_path, store, resume_id)
        cfg = loaded.config
        steps = pipeline_steps()
        backend = LocalBackend(state_dir)
        refuse_a_broken_ledger(backend)
        owner = f"run pid {os.getpid()}"
        with backend.lock(f"endpoint:{cfg.deploy.endpoint_name}", owner):
            executor = LocalExecutor(store, observer=console.step_event)
            if resume_id is None:
                execution_id = executor.start(cfg.name, loaded.path, loaded.text, steps)
            else:
                execution_id = resume_id
            console.note(f"execution {execution_id} ({'resumed' if resume_id else 'new'})")
            tracking_uri = resolve_tracking_uri(cfg.tracking.uri, state_dir)
            url = backend.start_runtime()
            try:
                with local_runtime_environment(url, cfg.agent.region):
                    try:
                        configure_tracking(tracking_uri, cfg.tracking.experiment)
                    except Exception as exc:
                        raise tracking_unavailable(store, execution_id, tracking_uri, exc) from None
                    context = RunContext(
                        loaded=loaded,
                        backend=backend,
                        state_dir=state_dir,
                        tracking_uri=tracking_uri,
                        progress=console,
                        actor=actor,
                        extras={"tracking_ready": True},
                    )
                    return executor.run(execution_id, steps, context, resume=resume_id is not None)
            except KeyboardInterrupt as exc:
                raise RunInterrupted(execution_id) from exc
            finally:
                backend.stop_runtime()
    finally:
        store.close()
