"""Rollback drill: a challenger that fails 60% of its calls is caught during the canary and rolled back.

Real pieces end to end: the deploy step puts two packages behind one endpoint of the local runtime, the
challenger with an injected :class:`FaultSpec`; the promotion replays live conversations through Strands
agents pinned per variant; the guards read the runtime's recorded invocations. The drill checks what an
operator relies on: the rollback happens by itself in the bake of the first canary step (the one whose weight
change exposed the challenger; a bake may be extended up to ``max_bake_s`` while the guards lack data), the
ledger says why, the package is Rejected and the champion serves all traffic again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape

from agent_release.pipelines.executor import ExecutionStore, StepDef
from agent_release.pipelines.local_backend import LocalBackend
from agent_release.pipelines.report import render_report
from agent_release.steps.backend import ApprovalStatus, FaultSpec, ModelSpec
from agent_release.steps.deploy_variants import DeployConfig, deploy_variants
from agent_release.steps.promote_challenger import PromotionReport, promote_variant
from agent_release.steps.promote_config import GuardConfig, LiveTrafficConfig, PromotionConfig

ENDPOINT = "support-drill"
GROUP = "support-agent"
BAKE_S = 4.0
LIVE_INPUTS = ("Where is my order ORD-10427?", "Can I return a kettle?", "My parcel is late.")


class CannedChatModel:
    """Answers every chat-completions request with one short assistant message."""

    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": "canned",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "canned",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Noted."}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        }


@pytest.mark.e2e
@pytest.mark.slow
def test_failing_challenger_is_rolled_back_in_the_bake_of_the_first_canary_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LocalBackend(tmp_path)
    model = ModelSpec(kind="python", options={"class_path": f"{__name__}:CannedChatModel"})
    backend.ensure_package_group(GROUP)
    champion_pkg = backend.register_package(GROUP, model)
    backend.update_approval(champion_pkg.arn, ApprovalStatus.APPROVED, "initial champion")
    challenger_pkg = backend.register_package(GROUP, model)
    deploy_variants(
        DeployConfig(
            endpoint_name=ENDPOINT, package_group=GROUP, faults={"challenger": FaultSpec(error_rate=0.6)}
        ),
        backend,
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", backend.start_runtime())
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "drill")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "drill")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    config = PromotionConfig(
        schedule=[25.0, 50.0, 100.0],
        bake_s=BAKE_S,
        guards=GuardConfig(max_error_rate=0.2, min_invocations=8, msprt_alpha=0.05),
        live_traffic=LiveTrafficConfig(requests_per_s=25.0, concurrency=6),
    )
    # The drill is recorded as an execution so its release report can be rendered afterwards (issue 9).
    store = ExecutionStore(tmp_path)
    execution_id = store.create(
        "rollback-drill",
        tmp_path / "pipeline.yaml",
        "name: rollback-drill\n",
        [StepDef("promote_challenger", (), PromotionReport, lambda run: None)],
    )
    try:
        with backend.lock(f"endpoint:{ENDPOINT}", "drill"):
            report = promote_variant(
                config,
                backend,
                ENDPOINT,
                "challenger",
                actor="drill",
                system_prompt="You are a terse support agent.",
                tools_factory=list,
                live_inputs=LIVE_INPUTS,
                execution_id=execution_id,
            )
    finally:
        backend.stop_runtime()

    assert report.action == "rolled_back"
    state = backend.describe_endpoint(ENDPOINT)
    assert state is not None
    assert {v.name: v.current_weight for v in state.variants} == {"champion": 1.0, "challenger": 0.0}

    ledger = [e for e in backend.list_audit() if e.execution_id == execution_id]
    assert [e.action for e in ledger] == ["weights", "rollback"], "caught at the first canary step"
    shifted, rolled_back = ledger
    assert shifted.evidence["percent"] == 25.0
    # Automatic and prompt: decided by the guards in the bake of the first step, the one whose weight change
    # exposed the challenger, and the next ledger entry after it. That is shown by what was recorded, not by
    # clock readings: how long the bake's last guard read takes depends on the machine's load.
    assert rolled_back.seq == shifted.seq + 1 and rolled_back.at >= shifted.at
    assert rolled_back.evidence["where"] == "canary 25%"
    assert rolled_back.evidence["trigger"] == "guard"
    why = rolled_back.evidence["why"]
    assert "error rate" in why or "mSPRT" in why
    readings = rolled_back.evidence["guard_readings"]["challenger"]
    assert readings["errors"] > 0 and readings["invocations"] >= 1

    rollback_events = [ev for ev in report.timeline if ev.phase == "rollback"]
    assert len(rollback_events) == 1 and rollback_events[0].tripped
    # The timeline never reaches a second canary step: every canary event before the rollback is at 25%.
    phases = [ev.phase for ev in report.timeline]
    canary = [ev for ev in report.timeline[: phases.index("rollback")] if ev.phase == "canary"]
    assert canary and all(ev.weights["challenger"] == 0.25 for ev in canary), [ev.weights for ev in canary]
    assert rollback_events[0].at >= canary[0].at

    package = backend.get_package(challenger_pkg.arn)
    assert package.approval_status == ApprovalStatus.REJECTED
    assert json.loads(package.approval_description)["audit_seq"] == rolled_back.seq
    assert backend.get_package(champion_pkg.arn).approval_status == ApprovalStatus.APPROVED
    assert backend.verify_audit() == []

    # The release report of the drill shows the rollback on the traffic timeline, with the guard that tripped.
    store.mark_step(execution_id, "promote_challenger", "running", started_at=report.timeline[0].at)
    store.mark_step(
        execution_id,
        "promote_challenger",
        "succeeded",
        finished_at=time.time(),
        output_json=report.model_dump_json(),
    )
    store.finish(execution_id, "succeeded", decision="promote")
    store.close()
    page = render_report(tmp_path, execution_id).read_text(encoding="utf-8")
    assert "ROLLED BACK" in page
    # Escaped as the report's Jinja templates escape (markupsafe writes ' as &#39;, html.escape as &#x27;).
    assert str(escape(rollback_events[0].tripped or "")) in page
    assert page.count("<svg") >= 1, "the traffic timeline is plotted"
