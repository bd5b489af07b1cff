"""``agent-release status``: what is deployed, who is champion, what was decided last.

:func:`collect_status` returns the stable JSON contract scripts rely on::

    {"state_dir", "tracking_uri",
     "endpoints": [{"name", "status", "variants": [{"name", "weight", "share", "role", "package_arn",
                                                  "package_version", "approval_status", "shadow"}]}],
     "last_execution": {"id", "status", "decision", "promotion", "started_at", "finished_at", "error",
                        "interrupted", "shift" (only when interrupted)} | null}

``decision`` is the gate's; ``promotion`` is what the promotion step then did, ``{"action": "promoted" |
"rolled_back" | "held_for_approval" | "rejected" | "no_change", "reason"}``, or null before it has run.

Everything is read through read-only connections (:func:`~agent_release.pipelines.state_db.read_only`):
``status`` writes nothing to the state and works on a read-only state directory. (In a writable one SQLite
may leave the ``state.db-shm`` index and an empty ``state.db-wal`` beside the database, which any reader of
a WAL database needs; ``tests/unit/test_cli_sweep_session9.py`` checks that nothing else appears.)

``interrupted`` is true when the last execution is recorded as running but the process that ran it is gone
(killed, or the machine restarted): a shift it was making is left where it stopped, unguarded. Then
``shift`` says, from the audit ledger, where that shift stands: ``{"state": "none" | "stopped" | "restored"
| "finished" | "overtaken", "audit_seq", "action", "actor", "endpoint"}`` (:func:`~agent_release.steps.ledger_actions.shift_state`;
``overtaken``: a release manager or another run changed the endpoint's traffic since, so ``run --resume``
will not shift again).

A variant's role comes from the model registry, not from its name: the champion is the production variant
whose ``Approved`` package was promoted last, as promotion and rollback decide it
(:func:`~agent_release.steps.backend.last_promoted`: a release manager promoting an older version makes it
champion again); a variant serving a ``PendingManualApproval`` package is the challenger; anything else has
no role (null).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent_release.steps.backend import (
    ApprovalStatus,
    Backend,
    BackendError,
    EndpointState,
    ModelPackage,
    iter_production,
    last_promoted,
)


def variant_roles(
    backend: Backend, endpoint: EndpointState
) -> dict[str, tuple[str | None, ModelPackage | None]]:
    """Variant name -> (role, package) for an endpoint, derived from the registry (see module docstring)."""
    packages: dict[str, ModelPackage] = {}
    for v in endpoint.variants:
        if v.package_arn:
            try:
                packages[v.name] = backend.get_package(v.package_arn)
            except BackendError:
                continue
    champion = last_promoted(
        {v.name: packages[v.name] for v in iter_production(endpoint) if v.name in packages}
    )
    roles: dict[str, tuple[str | None, ModelPackage | None]] = {}
    for v in endpoint.variants:
        pkg = packages.get(v.name)
        role: str | None = None
        if pkg is not None and not v.shadow:
            if v.name == champion:
                role = "champion"
            elif pkg.approval_status == ApprovalStatus.PENDING:
                role = "challenger"
        roles[v.name] = (role, pkg)
    return roles


def collect_status(
    state_dir: Path, config_path: Path | None, warn: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """The status document (see module docstring). A ``config_path`` that does not load does not stop it:
    ``warn`` is told why, and the tracking URI shown is the one used without a configured URI."""
    from agent_release.pipelines.executor import ExecutionStore
    from agent_release.pipelines.local_backend import LocalBackend
    from agent_release.pipelines.state_db import read_only, unless_table_missing
    from agent_release.pipelines.tracking import resolve_tracking_uri

    configured_uri: str | None = None
    if config_path is not None:
        try:
            from agent_release.pipelines.config import load_config

            configured_uri = load_config(config_path).config.tracking.uri
        except ValueError as exc:
            if warn is not None:
                warn(f"{exc}; the tracking URI shown is the default, not the configured one")
    with read_only():
        store = ExecutionStore(state_dir)
        try:
            row = unless_table_missing(store.latest, None)
            promotion = _promotion(store, row["id"]) if row is not None else None
        finally:
            store.close()
        interrupted = row is not None and row["status"] == "running" and not _process_alive(row["pid"])
        backend = LocalBackend(state_dir)
        try:
            endpoints = _endpoints(backend)
            shift = _interrupted_shift(backend, row["id"]) if row is not None and interrupted else None
        finally:
            backend.close()
    last = None
    if row is not None:
        last = {k: row[k] for k in ("id", "status", "decision", "started_at", "finished_at", "error")}
        last["promotion"] = promotion
        last["interrupted"] = interrupted
        if shift is not None:
            last["shift"] = shift
    return {
        "state_dir": str(state_dir),
        "tracking_uri": resolve_tracking_uri(configured_uri, state_dir),
        "endpoints": endpoints,
        "last_execution": last,
    }


def _endpoints(backend: Backend) -> list[dict[str, Any]]:
    """Every endpoint of the local backend with its variants, roles and packages (the status contract)."""
    from agent_release.pipelines.state_db import unless_table_missing

    endpoints: list[dict[str, Any]] = []
    no_endpoints: list[EndpointState] = []
    for ep in unless_table_missing(backend.list_endpoints, no_endpoints):
        roles = variant_roles(backend, ep)
        shares = ep.traffic_shares()
        endpoints.append(
            {
                "name": ep.name,
                "status": ep.status,
                "variants": [
                    {
                        "name": v.name,
                        "weight": v.current_weight,
                        "share": shares.get(v.name, 0.0),
                        "role": roles[v.name][0],
                        "package_arn": v.package_arn,
                        "package_version": (pkg.version if (pkg := roles[v.name][1]) else None),
                        "approval_status": (str(pkg.approval_status) if pkg else None),
                        "shadow": v.shadow,
                    }
                    for v in ep.variants
                ],
            }
        )
    return endpoints


def _promotion(store: Any, execution_id: str) -> dict[str, str] | None:
    """What the execution's promotion step did, from its stored output (see :func:`promotion_outcome`)."""
    output = store.step_output(execution_id, "promote_challenger")
    return promotion_outcome(output.get("action"), output.get("reason")) if isinstance(output, dict) else None


def promotion_outcome(action: Any, reason: Any) -> dict[str, str] | None:
    """``{"action", "reason"}`` of a promotion step's report (``status`` and ``run --json`` show it beside the
    gate's decision), or None when the step has not run (no action)."""
    return {"action": str(action), "reason": str(reason or "")} if action else None


def _interrupted_shift(backend: Backend, execution_id: str) -> dict[str, Any]:
    """Where an interrupted execution's traffic shift stands by the ledger (``shift`` in the document)."""
    from agent_release.pipelines.state_db import unless_table_missing
    from agent_release.steps.ledger_actions import shift_state

    shift = shift_state(unless_table_missing(backend.list_audit, []), execution_id)
    entry = shift.entry
    return {
        "state": shift.state,
        "audit_seq": entry.seq if entry else None,
        "action": entry.action if entry else None,
        "actor": entry.actor if entry else None,
        "endpoint": entry.subject.split("/", 1)[0] if entry else None,
    }


def _interrupted_note(last: dict[str, Any]) -> str:
    """What ``status`` tells a release manager about an interrupted execution, by where its shift stands."""
    resume = f"`agent-release run --resume {last['id']}`"
    shift = last.get("shift") or {}
    state = shift.get("state")
    if state == "none":
        return f"it had changed no traffic; {resume} continues it."
    if state == "finished":
        return (
            f"its traffic shift had ended (audit #{shift['audit_seq']}: {shift['action']}); {resume} records "
            "the execution's end."
        )
    if state == "restored":
        return (
            f"its traffic shift stopped and traffic went back to the champion (audit #{shift['audit_seq']}: "
            f"{shift['action']} after an error or interruption); {resume} restarts the shift from its first "
            "step."
        )
    if state == "overtaken":
        return (
            f"after its shift stopped, {shift['actor']} acted on {shift['endpoint']} (audit #{shift['audit_seq']}: "
            f"{shift['action']}); {resume} records the execution's end without shifting traffic again."
        )
    return (
        f"Nothing guards the current weights until {resume} (or `agent-release rollback` returns all traffic "
        "to the champion)."
    )


def _process_alive(pid: int | None) -> bool:
    """Whether the process that recorded a running execution still exists (on this machine)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def render_status(data: dict[str, Any]) -> None:
    """Print the status document as readable tables (stdout)."""
    from rich.console import Console
    from rich.table import Table

    from agent_release.pipelines.console import shown

    console = Console(highlight=False)
    if not console.is_terminal:
        # As the run console does: off a terminal rich wraps at 80 columns, which split the tracking URI and
        # the last run's line for scripts and logs reading `status`; there each line stays whole.
        console = Console(highlight=False, soft_wrap=True)
    console.print(f"state dir     {shown(data['state_dir'])}")
    console.print(f"tracking URI  {shown(data['tracking_uri'])}")
    last = data.get("last_execution")
    if last:
        decision = last.get("decision") or "-"
        promotion = last.get("promotion") or {}
        # The gate's decision alone read "promote" after a guard had rolled the canary back.
        promoted = f"  promotion: {shown(promotion['action'].replace('_', ' '))}" if promotion else ""
        console.print(
            f"last run      {shown(last['id'])}  {last['status']}  decision: [bold]{shown(decision)}[/bold]"
            f"{promoted}"
        )
        if last.get("error"):
            console.print(f"              error: {shown(last['error'])}")
        if last.get("interrupted"):
            console.print(
                "              [bold]interrupted[/bold]: the process running it is gone. "
                + shown(_interrupted_note(last))
            )
    else:
        console.print("last run      none yet (`agent-release run`)")
    if not data["endpoints"]:
        console.print("endpoints     none deployed")
        return
    for ep in data["endpoints"]:
        table = Table(title=f"endpoint {shown(ep['name'])} ({shown(ep['status'])})", title_justify="left")
        for col in ("variant", "role", "weight", "traffic", "package", "approval"):
            table.add_column(col)
        for v in ep["variants"]:
            table.add_row(
                shown(v["name"]) + (" (shadow)" if v["shadow"] else ""),
                shown(v["role"] or "-"),
                f"{v['weight']:g}",
                f"{100 * v['share']:.0f}%",
                f"v{v['package_version']}" if v["package_version"] is not None else "-",
                shown(v["approval_status"] or "-"),
            )
        console.print(table)
