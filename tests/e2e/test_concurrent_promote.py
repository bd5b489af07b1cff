"""Two release managers run ``promote`` at the same moment, in two processes: exactly one proceeds.

Each process takes ``backend.lock("endpoint:<name>")`` around ``promote_variant`` (what the CLI does). Both
start at the same wall-clock instant; the winner holds the lock through its bakes, so the other is refused at
once with :class:`LockBusyError` naming the holder, and the ledger shows a single promotion.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent_release.pipelines.local_backend import LocalBackend
from agent_release.steps.backend import ApprovalStatus, ModelSpec
from agent_release.steps.deploy_variants import DeployConfig, deploy_variants

ENDPOINT = "support-race"

# One release manager: import, meet the other at a file barrier, then lock + promote (no live traffic: the
# race is about the lock, not the guards, so the unjudged steps carry on without baking longer). Prints one
# JSON line with the outcome.
PROMOTER = """
import json, sys, time
from pathlib import Path
from agent_release.pipelines.local_backend import LocalBackend
from agent_release.steps.backend import LockBusyError
from agent_release.steps.promote_challenger import promote_variant
from agent_release.steps.promote_config import GuardConfig, LiveTrafficConfig, PromotionConfig

state_dir, endpoint, actor, barrier = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
backend = LocalBackend(state_dir)
config = PromotionConfig(schedule=[50.0, 100.0], bake_s=1.0, max_bake_s=1.0,
                         live_traffic=LiveTrafficConfig(enabled=False), guards=GuardConfig(unjudged="promote"))
(barrier / actor).touch()
deadline = time.time() + 120
while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
    time.sleep(0.01)
try:
    with backend.lock(f"endpoint:{endpoint}", actor):
        report = promote_variant(config, backend, endpoint, "challenger", actor=actor, system_prompt="",
                                 tools_factory=list)
    print(json.dumps({"actor": actor, "outcome": report.action}))
except LockBusyError as exc:
    print(json.dumps({"actor": actor, "outcome": "busy", "message": str(exc)}))
"""


@pytest.mark.e2e
@pytest.mark.slow
def test_concurrent_promotes_one_proceeds_the_other_is_refused(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    model = ModelSpec(kind="python", options={"class_path": "unused.never:Loaded"})  # no traffic is sent
    backend.ensure_package_group("support-agent")
    champion = backend.register_package("support-agent", model)
    backend.update_approval(champion.arn, ApprovalStatus.APPROVED, "initial champion")
    challenger = backend.register_package("support-agent", model)
    deploy_variants(DeployConfig(endpoint_name=ENDPOINT, package_group="support-agent"), backend)

    # Both processes import first (slow on a busy machine), then act together once both reached the barrier.
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROMOTER, str(tmp_path), ENDPOINT, f"user:{who}", str(barrier)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("alice", "bob")
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert len(list(barrier.iterdir())) == 2, "both processes reached the barrier"

    outcomes = sorted(r["outcome"] for r in results)
    assert outcomes == ["busy", "promoted"]
    winner = next(r for r in results if r["outcome"] == "promoted")
    loser = next(r for r in results if r["outcome"] == "busy")
    assert loser["message"].startswith(f"lock 'endpoint:{ENDPOINT}' is held by {winner['actor']} (pid ")
    assert "\n" not in loser["message"]

    ledger = backend.list_audit()
    assert [e.action for e in ledger] == ["weights", "weights", "promote"]
    assert {e.actor for e in ledger} == {winner["actor"]}
    state = backend.describe_endpoint(ENDPOINT)
    assert state is not None
    assert {v.name: v.current_weight for v in state.variants} == {"champion": 0.0, "challenger": 1.0}
    assert backend.get_package(challenger.arn).approval_status == ApprovalStatus.APPROVED
