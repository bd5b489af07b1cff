"""A local state directory in the middle of a release, made by the real backend and deploy step (CLI sweeps)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent_release.pipelines.local_backend import LocalBackend
from agent_release.steps.backend import ApprovalStatus, ModelSpec
from agent_release.steps.deploy_variants import DeployConfig, deploy_variants

ENDPOINT = "support-agent"  # pipeline.yaml's deploy.endpoint_name
GROUP = "support-model"
MODEL = ModelSpec(kind="python", options={"class_path": "nowhere:NeverLoaded"})  # never served here


def damage_executions_table(home: Path) -> None:
    """Overwrite the first page of the executions table in ``home``'s state.db (made with ExecutionStore): the
    file still opens, and the table no longer reads."""
    conn = sqlite3.connect(home / "state.db")
    conn.execute("PRAGMA journal_mode=DELETE")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'executions'").fetchone()[0]
    conn.close()
    with (home / "state.db").open("r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(b"\xde\xad" * (page_size // 2))


def deploy_half_way_canary(home: Path) -> None:
    """Champion (Approved) and a pending challenger at 50/50 on ENDPOINT, with the ledger entry of that step:
    a canary left half-way, so that rollback, promote and audit have something to act on."""
    backend = LocalBackend(home)
    try:
        backend.ensure_package_group(GROUP)
        first = backend.register_package(GROUP, MODEL)
        backend.update_approval(first.arn, ApprovalStatus.APPROVED, "initial champion")
        backend.register_package(GROUP, MODEL)
        deploy_variants(DeployConfig(endpoint_name=ENDPOINT, package_group=GROUP), backend)
        backend.update_weights(ENDPOINT, {"champion": 0.5, "challenger": 0.5})
        backend.append_audit(  # as the promotion step records a canary step
            "pipeline",
            "weights",
            f"{ENDPOINT}/challenger",
            "canary step 50%",
            {"percent": 50, "weights": {"champion": 0.5, "challenger": 0.5}},
        )
    finally:
        backend.close()
