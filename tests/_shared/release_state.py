"""A local state directory in the middle of a release, made by the real backend and deploy step (CLI sweeps)."""

from __future__ import annotations

from pathlib import Path

from agent_release.pipelines.local_backend import LocalBackend
from agent_release.steps.backend import ApprovalStatus, ModelSpec
from agent_release.steps.deploy_variants import DeployConfig, deploy_variants

ENDPOINT = "support-agent"  # pipeline.yaml's deploy.endpoint_name
GROUP = "support-model"
MODEL = ModelSpec(kind="python", options={"class_path": "nowhere:NeverLoaded"})  # never served here


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
        backend.append_audit(
            "pipeline", "weights", f"{ENDPOINT}/challenger", "canary step 50%", {"percent": 50}
        )
    finally:
        backend.close()
