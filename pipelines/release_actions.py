"""Release-manager actions behind ``agent-release promote`` and ``rollback``.

Both take the endpoint lock (``endpoint:<name>``), the same one a running pipeline holds for its whole run, so
a promotion can never interleave with another promotion or with a pipeline run: the second caller fails at
once with a message naming the holder. Every weight change is appended to the audit ledger by the step code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_release.pipelines.config import check_referenced_files, load_config
from agent_release.pipelines.console import RunConsole
from agent_release.pipelines.dag import read_jsonl, system_prompt_of, tools_factory_of
from agent_release.pipelines.executor import one_line
from agent_release.pipelines.local_run import TrackingUnavailable, local_runtime_environment
from agent_release.steps.backend import EndpointState


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
    from agent_release.pipelines.local_backend import LocalBackend
    from agent_release.pipelines.tracking import configure_tracking, resolve_tracking_uri
    from agent_release.steps.promote_challenger import promote_variant

    loaded = load_config(config_path)
    check_referenced_files(loaded)
    cfg = loaded.config
    backend = LocalBackend(state_dir)
    endpoint = cfg.deploy.endpoint_name
    if backend.describe_endpoint(endpoint) is None:
        raise ValueError(f"endpoint {endpoint} is not deployed; run the pipeline first")
    live_inputs: tuple[str, ...] = ()
    if cfg.promote.live_traffic.enabled:
        live_inputs = tuple(
            str(r["input"]) for r in read_jsonl(loaded.resolve(cfg.promote.live_traffic.inputs))
        )
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
            store.finish(execution_id, "succeeded", decision="promote")
        finally:
            store.close()
    return report


def rollback_command(config_path: Path, state_dir: Path, *, actor: str, reason: str) -> EndpointState:
    """Champion back to 100% of traffic now."""
    from agent_release.pipelines.local_backend import LocalBackend
    from agent_release.steps.promote_challenger import rollback_endpoint

    cfg = load_config(config_path).config
    backend = LocalBackend(state_dir)
    endpoint = cfg.deploy.endpoint_name
    if backend.describe_endpoint(endpoint) is None:
        raise ValueError(f"endpoint {endpoint} is not deployed; nothing to roll back")
    with backend.lock(f"endpoint:{endpoint}", actor):
        return rollback_endpoint(backend, endpoint, actor=actor, reason=reason)
