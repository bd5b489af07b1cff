"""Release-manager actions behind ``agent-release promote`` and ``rollback``.

Both take the endpoint lock (``endpoint:<name>``), the same one a running pipeline holds for its whole run, so
a promotion can never interleave with another promotion or with a pipeline run: the second caller fails at
once with a message naming the holder. Every weight change is appended to the audit ledger by the step code.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_release.pipelines.config import check_referenced_files, load_config
from agent_release.pipelines.console import RunConsole
from agent_release.pipelines.dag import live_inputs_of, system_prompt_of, tools_factory_of
from agent_release.pipelines.executor import one_line
from agent_release.pipelines.local_run import TrackingUnavailable, local_runtime_environment
from agent_release.pipelines.state_db import check_audit_head
from agent_release.steps.backend import EndpointState

if TYPE_CHECKING:
    from agent_release.pipelines.local_backend import LocalBackend


def deployed_backend(state_dir: Path, endpoint: str, config_path: Path) -> LocalBackend:
    """The local backend of ``state_dir`` (which holds a state database: the CLI checks) where it has deployed
    ``endpoint``; ValueError naming it otherwise.

    When the endpoint is missing it names the ones that are deployed: a ``pipeline.yaml`` whose
    ``deploy.endpoint_name`` changed since the run is the usual cause, and "run the pipeline first" alone
    would deploy a second endpoint beside the first.
    """
    from agent_release.pipelines.local_backend import LocalBackend

    backend = LocalBackend(state_dir)
    if backend.describe_endpoint(endpoint) is not None:
        return backend
    deployed = [ep.name for ep in backend.list_endpoints()]
    backend.close()
    if not deployed:
        raise ValueError(f"endpoint {endpoint} is not deployed; nothing is (run the pipeline first)")
    raise ValueError(
        f"endpoint {endpoint} (deploy.endpoint_name in {config_path}) is not deployed; deployed here: "
        f"{', '.join(deployed)} (pass -c with the config that deployed it, or run the pipeline first)"
    )


def promote_command(
    config_path: Path,
    state_dir: Path,
    variant: str,
    *,
    actor: str,
    schedule: list[float] | None = None,
    quiet: bool = False,
) -> Any:
    """Shift traffic to ``variant`` by the configured (or given) schedule with live guards."""
    from agent_release.pipelines.executor import ExecutionStore
    from agent_release.pipelines.local_backend import refuse_a_broken_ledger
    from agent_release.pipelines.tracking import configure_tracking, resolve_tracking_uri
    from agent_release.steps.promote_challenger import promote_variant

    loaded = load_config(config_path)
    check_referenced_files(loaded)
    cfg = loaded.config
    # The rules `validate` applies (a row without a text "input" named by file and line, an empty file
    # refused), before any state is opened: a bare KeyError("input") here read "error: 'input'".
    live_inputs = live_inputs_of(loaded) if cfg.promote.live_traffic.enabled else ()
    endpoint = cfg.deploy.endpoint_name
    check_audit_head(state_dir)  # every weight change is recorded: refuse before the first one
    backend = deployed_backend(state_dir, endpoint, config_path)
    refuse_a_broken_ledger(backend)
    store = ExecutionStore(state_dir)
    try:
        latest = store.latest()
    finally:
        store.close()
    execution_id = latest["id"] if latest is not None and latest["status"] == "held" else None
    with backend.lock(f"endpoint:{endpoint}", actor):
        url = backend.start_runtime()
        try:
            with local_runtime_environment(url, cfg.agent.region):
                tracking_uri = resolve_tracking_uri(cfg.tracking.uri, state_dir)
                try:
                    configure_tracking(tracking_uri, cfg.tracking.experiment)
                except Exception as exc:
                    # Before any weight moved: say which store failed, not just the driver's exception.
                    raise TrackingUnavailable(
                        f"MLflow tracking at {tracking_uri} is unavailable: {one_line(exc)}; "
                        "no traffic was shifted"
                    ) from None
                report = promote_variant(
                    cfg.promote,
                    backend,
                    endpoint,
                    variant,
                    actor=actor,
                    system_prompt=system_prompt_of(loaded),
                    tools_factory=tools_factory_of(loaded),
                    live_inputs=live_inputs,
                    schedule=schedule,
                    execution_id=execution_id,
                    progress=RunConsole(quiet=quiet),
                )
        finally:
            backend.stop_runtime()
    if execution_id is not None and report.action == "promoted":
        store = ExecutionStore(state_dir)
        try:
            # The held execution's promotion is this one now: `status`, `run --json` and the report read the
            # step's stored output, which still said "held for approval: run `agent-release promote`".
            store.mark_step(
                execution_id,
                "promote_challenger",
                "succeeded",
                output_json=report.model_copy(
                    update={"reason": f"held for approval, then promoted by {actor}: {report.reason}"}
                ).model_dump_json(),
            )
            store.finish(execution_id, "succeeded", decision="promote")
        finally:
            store.close()
    return report


def rollback_command(config_path: Path, state_dir: Path, *, actor: str, reason: str) -> EndpointState:
    """Champion back to 100% of traffic now."""
    from agent_release.pipelines.local_backend import refuse_a_broken_ledger
    from agent_release.steps.promote_challenger import rollback_endpoint

    cfg = load_config(config_path).config
    endpoint = cfg.deploy.endpoint_name
    check_audit_head(state_dir)  # the weights move before the ledger records it: refuse before they do
    backend = deployed_backend(state_dir, endpoint, config_path)
    refuse_a_broken_ledger(backend)
    with backend.lock(f"endpoint:{endpoint}", actor):
        return rollback_endpoint(
            backend, endpoint, actor=actor, reason=reason, champion_name=cfg.deploy.champion_variant_name
        )
