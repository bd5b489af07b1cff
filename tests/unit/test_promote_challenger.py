"""The promotion step against the real local backend and runtime, with replayed live agent traffic.

Variants are served by :class:`CannedChatModel` (a ``python``-kind model defined here); a failing challenger
is the same model with an injected :class:`FaultSpec`. MLflow aliases are skipped: the synthetic registration
has ``registered_model_version=None`` (the step then leaves aliases alone and says so in the report).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent_release.pipelines.local_backend import LocalBackend
from agent_release.pipelines.status import variant_roles
from agent_release.steps.backend import (
    ApprovalStatus,
    EndpointState,
    FaultSpec,
    ModelSpec,
    VariantMetrics,
    VariantSpec,
)
from agent_release.steps.decide_promotion import DecisionReport
from agent_release.steps.deploy_variants import DeployConfig, DeployReport, deploy_variants
from agent_release.steps.evaluation_records import EvaluationReport, VariantEvaluation
from agent_release.steps.promote_challenger import (
    NothingToRollBack,
    PromotionError,
    PromotionInputs,
    PromotionReport,
    current_champion,
    promote_challenger,
    promote_variant,
    rollback_endpoint,
)
from agent_release.steps.promote_config import GuardConfig, LiveTrafficConfig, PromotionConfig, ShadowConfig
from agent_release.steps.register_agents_config import InferenceConfig
from agent_release.steps.registration_records import RegisteredAgent, RegistrationReport
from agent_release.steps.validate_datasets import DatasetResult, DatasetValidationReport

ENDPOINT = "support"
GROUP = "support-agent"
LIVE_INPUTS = ("Where is my order ORD-10427?", "Can I return a kettle?", "My parcel is late.")


class CannedChatModel:
    """Answers every chat-completions request with one short assistant message (no tool calls)."""

    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        last = request["messages"][-1]
        text = last["content"] if isinstance(last["content"], str) else json.dumps(last["content"])
        return {
            "id": "canned",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "canned",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"Noted ({len(text)} chars)."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        }


MODEL = ModelSpec(kind="python", options={"class_path": f"{__name__}:CannedChatModel"})


@dataclass
class Env:
    backend: LocalBackend
    deployed: DeployReport
    state_dir: Path


def build_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, faults: FaultSpec | None = None, champion: bool = True
) -> Env:
    """Two packages (champion Approved, challenger pending) deployed by the real deploy step; runtime up."""
    backend = LocalBackend(tmp_path)
    backend.ensure_package_group(GROUP)
    if champion:
        first = backend.register_package(GROUP, MODEL)
        backend.update_approval(first.arn, ApprovalStatus.APPROVED, "initial champion")
    backend.register_package(GROUP, MODEL)
    deployed = deploy_variants(
        DeployConfig(
            endpoint_name=ENDPOINT, package_group=GROUP, faults={"challenger": faults} if faults else {}
        ),
        backend,
    )
    url = backend.start_runtime()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return Env(backend=backend, deployed=deployed, state_dir=tmp_path)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    e = build_env(tmp_path, monkeypatch)
    yield e
    e.backend.stop_runtime()


def dataset_report() -> DatasetValidationReport:
    golden = DatasetResult(
        name="golden", path="golden.jsonl", sha256="ab" * 32, n_rows=10, n_clusters=5, success=True
    )
    return DatasetValidationReport(success=True, datasets=(golden,))


def make_inputs(env: Env, decision: str, *, execution_id: str = "exec-1") -> PromotionInputs:
    """Synthetic upstream reports around the real deployment (the promotion only reads them)."""
    d = env.deployed
    agents = tuple(
        RegisteredAgent(
            variant=v.name,
            role=v.role,
            endpoint_name=ENDPOINT,
            package_arn=v.package_arn,
            package_version=v.version,
            logged_model_id=f"m-{v.name}",
            prompt_uri="prompts:/support-agent-system/1",
            registered_model_name="support-agent",
            registered_model_version=None,  # no MLflow here: alias moves are skipped
            tool_names=(),
            tools_hash="0" * 64,
            inference=InferenceConfig(max_tokens=64),
        )
        for v in d.variants
    )
    challenger = d.challenger.name if d.challenger else "challenger"
    champion = d.champion.name if d.champion else None
    return PromotionInputs(
        execution_id=execution_id,
        deployed=d,
        registration=RegistrationReport(
            tracking_uri="sqlite:///unused.db", experiment_id="1", agents=agents, changed=True
        ),
        evaluation=EvaluationReport(
            dataset_name="golden",
            dataset_hash="ab" * 32,
            repeats=1,
            scorer_specs=(),
            variants=tuple(
                VariantEvaluation(
                    variant=v.name,
                    role=v.role,
                    cases_expected=10,
                    cases_completed=10,
                    cases_errored=0,
                    retries=0,
                    mlflow_run_id=f"run-{v.name}",
                )
                for v in d.variants
            ),
            rows=(),
        ),
        decision=DecisionReport(
            decision=decision,
            reason=f"synthetic {decision}",
            challenger_variant=challenger,
            champion_variant=champion,
            primary=None,
            first_release=None,
            guardrails=(),
            mcnemar=None,
            n_paired=10,
            n_clusters=5,
            n_completed=10,
            error_rates={},
            alpha=0.05,
            min_improvement=0.0,
            what_would_settle_it="about 200 more cases" if decision == "inconclusive" else None,
        ),
        datasets=dataset_report(),
        system_prompt="You are a terse support agent.",
        live_inputs=LIVE_INPUTS,
        actor="pipeline",
    )


def fast_config(**overrides: Any) -> PromotionConfig:
    base: dict[str, Any] = {
        "schedule": [50.0, 100.0],
        "bake_s": 1.0,
        "guards": GuardConfig(max_error_rate=0.2, min_invocations=5, msprt_alpha=0.05),
        "live_traffic": LiveTrafficConfig(requests_per_s=20.0, concurrency=4),
    }
    base.update(overrides)
    return PromotionConfig(**base)


def no_traffic_config(**overrides: Any) -> PromotionConfig:
    """A config with no replayed traffic, for tests of the shift's bookkeeping (resume, errors, ledger).

    No call reaches the challenger, so no step can be judged; ``guards.unjudged: promote`` lets those steps
    carry on (the default rolls back, tested below) and ``max_bake_s = bake_s`` keeps them from waiting.
    """
    bake_s = overrides.pop("bake_s", 0.3)
    base: dict[str, Any] = {
        "bake_s": bake_s,
        "max_bake_s": bake_s,
        "live_traffic": LiveTrafficConfig(enabled=False),
        "guards": GuardConfig(max_error_rate=0.2, min_invocations=5, msprt_alpha=0.05, unjudged="promote"),
    }
    base.update(overrides)
    return fast_config(**base)


def weights(backend: LocalBackend) -> dict[str, float]:
    state = backend.describe_endpoint(ENDPOINT)
    assert state is not None
    return {v.name: v.current_weight for v in state.variants}


def share_watching_backend(env: Env, variant: str, seen: list[float]) -> LocalBackend:
    """The env's backend, appending ``variant``'s share to ``seen`` at every weight update."""

    class Watching(LocalBackend):
        def update_weights(self, name: str, weights: Mapping[str, float]) -> Any:
            seen.append(weights[variant])
            return super().update_weights(name, weights)

    return Watching(env.state_dir)


def challenger_status(env: Env) -> ApprovalStatus:
    assert env.deployed.challenger is not None
    return env.backend.get_package(env.deployed.challenger.package_arn).approval_status


def tools() -> list[Any]:
    return []


def actions(backend: LocalBackend, execution_id: str | None = None) -> list[str]:
    return [e.action for e in backend.list_audit() if execution_id is None or e.execution_id == execution_id]


# -- tests ---------------------------------------------------------------------------------------------------


def test_auto_promote_walks_the_whole_schedule_with_live_traffic(env: Env) -> None:
    report = promote_challenger(
        fast_config(), make_inputs(env, "promote"), env.backend, tools_factory=tools, progress=None
    )

    assert report.action == "promoted" and not report.held
    assert weights(env.backend) == {"champion": 0.0, "challenger": 1.0}
    assert report.final_weights == {"champion": 0.0, "challenger": 1.0}
    assert challenger_status(env) == ApprovalStatus.APPROVED
    ledger = [e for e in env.backend.list_audit() if e.execution_id == "exec-1"]
    assert [e.action for e in ledger] == ["weights", "weights", "promote"]
    assert [e.evidence["percent"] for e in ledger[:2]] == [50.0, 100.0]
    assert ledger[2].evidence["guard_readings"], "the promote entry carries the live guard readings"
    assert report.audit_seqs == tuple(e.seq for e in ledger)
    # The approval description is compact JSON pointing at the evidence in the ledger.
    assert env.deployed.challenger is not None
    description = json.loads(
        env.backend.get_package(env.deployed.challenger.package_arn).approval_description
    )
    assert description["audit_seq"] == ledger[2].seq and description["schedule"] == [50.0, 100.0]
    assert description["dataset_sha256"] == "ab" * 32
    # Live traffic really reached the challenger through pinned conversations during the bakes.
    bakes = [ev for ev in report.timeline if ev.phase == "canary" and ev.readings]
    assert len(bakes) == 2
    # ... and the description carries what the guards read on the challenger at the last (100%) step.
    last = bakes[-1].readings["challenger"]
    assert description["live"] == {
        "error_rate": last.error_rate,
        "p95_ms": last.latency_p95_ms,
        "calls": last.invocations,
    }
    assert all(ev.readings["challenger"].invocations > 0 for ev in bakes)
    assert bakes[0].readings["champion"].invocations > 0  # at 50% both variants served
    assert report.timeline[-1].phase == "complete" and report.aliases_moved is False
    # No p95 limit in this config: the verdict names the guard that ran instead of calling every one green.
    assert (
        "with every guard green (error rate guarded; latency not: promote.guards.max_latency_p95_ms is not set);"
        in report.reason
    )


def test_a_promotion_with_a_latency_limit_is_green_on_both_guards(env: Env) -> None:
    guards = GuardConfig(max_error_rate=0.2, max_latency_p95_ms=5000, min_invocations=5, msprt_alpha=0.05)
    report = promote_challenger(
        fast_config(guards=guards),
        make_inputs(env, "promote"),
        env.backend,
        tools_factory=tools,
        progress=None,
    )
    assert report.action == "promoted" and "with every guard green; package Approved" in report.reason


def test_rerun_of_a_completed_execution_does_not_shift_again(env: Env) -> None:
    config = no_traffic_config(bake_s=0.3)
    first = promote_challenger(
        config, make_inputs(env, "promote"), env.backend, tools_factory=tools, progress=None
    )
    assert first.action == "promoted"
    n_entries = len(env.backend.list_audit())
    again = promote_challenger(
        config, make_inputs(env, "promote"), env.backend, tools_factory=tools, progress=None
    )
    assert again.action == "promoted" and again.resumed
    assert len(env.backend.list_audit()) == n_entries, "nothing new in the ledger: no second shift"
    # The report points at the entry that already recorded the outcome.
    assert again.audit_seqs == (first.audit_seqs[-1],) and again.reason.startswith(
        f"already done (audit #{first.audit_seqs[-1]}): "
    )
    assert weights(env.backend) == {"champion": 0.0, "challenger": 1.0}


def test_a_rerun_approves_a_promotion_whose_approval_failed_after_its_entry(env: Env) -> None:
    # The promote entry was written, then the registry failed: the rerun does not shift again, but it
    # re-applies the outcome's registry update (the package Approved), as the ledger says it should be.
    class ApprovalFails(LocalBackend):
        def update_approval(self, arn: str, status: ApprovalStatus, description: str) -> Any:
            raise OSError("registry unavailable")

    config = no_traffic_config(bake_s=0.1)
    with pytest.raises(OSError, match="registry unavailable"):
        promote_challenger(
            config,
            make_inputs(env, "promote"),
            ApprovalFails(env.state_dir),
            tools_factory=tools,
            progress=None,
        )
    assert actions(env.backend, "exec-1") == ["weights", "weights", "promote"]
    assert challenger_status(env) == ApprovalStatus.PENDING

    again = promote_challenger(
        config, make_inputs(env, "promote"), env.backend, tools_factory=tools, progress=None
    )

    assert again.action == "promoted" and again.resumed
    assert actions(env.backend, "exec-1") == ["weights", "weights", "promote"], "no second shift"
    assert challenger_status(env) == ApprovalStatus.APPROVED
    assert [(c.from_status, c.to_status) for c in again.approval_changes] == [
        (ApprovalStatus.PENDING, ApprovalStatus.APPROVED)
    ]


def _died_at_50_percent(env: Env) -> None:
    """exec-1's shift reached its 50% step and the process died there (weights set, ledger says so)."""
    env.backend.update_weights(ENDPOINT, {"champion": 0.5, "challenger": 0.5})
    env.backend.append_audit(
        "pipeline",
        "weights",
        f"{ENDPOINT}/challenger",
        "canary step 50%",
        {"percent": 50.0},
        execution_id="exec-1",
    )


def test_resume_after_a_partial_shift_restarts_the_schedule(env: Env) -> None:
    # A previous attempt of exec-1 got to 50% and died without cleaning up.
    _died_at_50_percent(env)
    config = no_traffic_config(bake_s=0.3, schedule=[10.0, 100.0])
    report = promote_challenger(
        config, make_inputs(env, "promote"), env.backend, tools_factory=tools, progress=None
    )
    assert report.resumed and report.action == "promoted"
    assert actions(env.backend, "exec-1") == ["weights", "resume", "weights", "weights", "promote"]
    first_step = next(ev for ev in report.timeline if ev.phase == "canary")
    assert first_step.weights == {"champion": 0.9, "challenger": 0.1}


def test_resume_does_not_undo_a_rollback_the_release_manager_made_after_the_interruption(env: Env) -> None:
    # exec-1 died at 50%; the release manager rolled back by hand; `run --resume` used to walk the schedule
    # again and re-promote the challenger they had just rolled back.
    _died_at_50_percent(env)
    rollback_endpoint(env.backend, ENDPOINT, actor="user:bob", reason="abandoned the shift")
    manual = env.backend.list_audit()[-1]

    report = promote_challenger(
        no_traffic_config(bake_s=0.3, schedule=[10.0, 100.0]),
        make_inputs(env, "promote"),
        env.backend,
        tools_factory=tools,
        progress=None,
    )

    assert report.action == "no_change"
    assert f"user:bob acted on {ENDPOINT} (audit #{manual.seq}: rollback)" in report.reason
    assert weights(env.backend) == {"champion": 1.0, "challenger": 0.0}
    assert actions(env.backend, "exec-1") == ["weights", "no_change"]


def test_manual_mode_holds_then_promote_variant_continues(env: Env) -> None:
    config = fast_config(mode="manual", live_traffic=LiveTrafficConfig(requests_per_s=10.0, concurrency=2))
    before = weights(env.backend)
    held = promote_challenger(
        config, make_inputs(env, "promote"), env.backend, tools_factory=tools, progress=None
    )
    assert held.held and held.action == "held_for_approval"
    assert weights(env.backend) == before == {"champion": 1.0, "challenger": 0.0}
    assert challenger_status(env) == ApprovalStatus.PENDING
    assert env.deployed.challenger is not None
    pending = json.loads(env.backend.get_package(env.deployed.challenger.package_arn).approval_description)
    assert pending["next"] == "agent-release promote challenger"
    assert actions(env.backend, "exec-1") == ["decision"]

    with env.backend.lock(f"endpoint:{ENDPOINT}", "test release manager"):
        report = promote_variant(
            config,
            env.backend,
            ENDPOINT,
            "challenger",
            actor="user:alice",
            system_prompt="You are terse.",
            tools_factory=tools,
            live_inputs=LIVE_INPUTS,
        )
    assert report.action == "promoted"
    assert weights(env.backend) == {"champion": 0.0, "challenger": 1.0}
    assert challenger_status(env) == ApprovalStatus.APPROVED
    promote_entry = env.backend.list_audit()[-1]
    assert promote_entry.action == "promote" and promote_entry.actor == "user:alice"
    assert promote_entry.execution_id == "exec-1", "continues the held execution"
    assert promote_entry.evidence["mlflow_runs"] == {
        "champion": "run-champion",
        "challenger": "run-challenger",
    }


def test_promote_refuses_a_held_decision_about_another_package_than_the_variant_serves(env: Env) -> None:
    # A manual hold evaluated package 2; a later deploy put package 3 on the challenger variant. `promote`
    # used to approve package 3 at 100% on package 2's evidence (and move the alias to package 2's agent).
    held = promote_challenger(
        fast_config(mode="manual"),
        make_inputs(env, "promote"),
        env.backend,
        tools_factory=tools,
        progress=None,
    )
    assert held.held and env.deployed.challenger is not None
    evaluated = env.deployed.challenger.package_arn
    newer = env.backend.register_package(GROUP, MODEL)
    deploy_variants(DeployConfig(endpoint_name=ENDPOINT, package_group=GROUP), env.backend)
    before, ledger = weights(env.backend), len(env.backend.list_audit())

    with pytest.raises(PromotionError, match=re.escape(f"now serves {newer.arn}, not {evaluated}")):
        _manual_promote(env, "challenger")

    assert weights(env.backend) == before and len(env.backend.list_audit()) == ledger
    for arn in (evaluated, newer.arn):
        assert env.backend.get_package(arn).approval_status == ApprovalStatus.PENDING


def test_promote_does_not_call_a_promotion_done_that_the_endpoint_no_longer_shows(env: Env) -> None:
    # Held -> promoted -> the champion promoted back: promoting the challenger again said "already done"
    # (exit 0) with the champion at 100%, and re-approved the challenger's package.
    _hold_for_approval(env)
    assert _manual_promote(env, "challenger").action == "promoted"
    assert _manual_promote(env, "champion").action == "promoted"
    before, ledger = weights(env.backend), len(env.backend.list_audit())
    assert before == {"champion": 1.0, "challenger": 0.0}

    with pytest.raises(PromotionError, match=r"was promoted already .* no longer serves all traffic"):
        _manual_promote(env, "challenger")

    assert weights(env.backend) == before and len(env.backend.list_audit()) == ledger


def test_manual_promotion_never_lowers_the_promoted_variants_share(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    # An A/B split: promoting the champion must not hand the (pending) challenger 90% at a 10% step.
    env.backend.update_weights(ENDPOINT, {"champion": 0.5, "challenger": 0.5})
    seen: list[float] = []
    backend = share_watching_backend(env, "champion", seen)
    with backend.lock(f"endpoint:{ENDPOINT}", "test release manager"):
        report = promote_variant(
            no_traffic_config(schedule=[10.0, 50.0, 100.0]),
            backend,
            ENDPOINT,
            "champion",
            actor="user:alice",
            system_prompt="You are terse.",
            tools_factory=tools,
        )
    assert report.action == "promoted"
    # It used to set champion 0.1 / challenger 0.9 first, then 0.5, then 1.0.
    assert seen == [0.5, 1.0]
    # No recorded decision names the champion's agent version: the aliases stay, and the output says so.
    assert report.aliases_moved is False
    assert any(
        r.levelname == "WARNING" and "MLflow aliases not moved" in r.getMessage() for r in caplog.records
    )
    assert weights(env.backend) == {"champion": 1.0, "challenger": 0.0}


def test_a_third_production_variant_gets_no_traffic_from_the_canary_steps(env: Env) -> None:
    # The endpoint also carries a variant that is neither champion nor challenger (at 0%): every step sends
    # the champion's and the challenger's shares only, never a weight on that bystander.
    state = env.backend.describe_endpoint(ENDPOINT)
    assert state is not None
    env.backend.deploy_endpoint(
        ENDPOINT,
        [
            *(
                VariantSpec(
                    name=v.name, model=v.model, package_arn=v.package_arn, initial_weight=v.current_weight
                )
                for v in state.variants
            ),
            VariantSpec(name="bystander", model=MODEL, initial_weight=0.0),
        ],
    )
    report = promote_challenger(
        no_traffic_config(bake_s=0.1),
        make_inputs(env, "promote"),
        env.backend,
        tools_factory=tools,
        progress=None,
    )
    assert report.action == "promoted"
    steps = [e.evidence["weights"] for e in env.backend.list_audit() if e.action == "weights"]
    assert steps == [
        {"champion": 0.5, "challenger": 0.5, "bystander": 0.0},
        {"champion": 0.0, "challenger": 1.0, "bystander": 0.0},
    ]
    assert weights(env.backend) == {"champion": 0.0, "challenger": 1.0, "bystander": 0.0}


def test_a_manual_promotion_bakes_the_current_share_first_though_it_is_a_hair_above_the_step(
    env: Env,
) -> None:
    # 0.28 x 100 is 28.000000000000004 in floating point: the 28% step is the share the variant serves now,
    # so it is kept and baked before the share grows (an exact comparison skipped it, straight to 50%).
    env.backend.update_weights(ENDPOINT, {"champion": 0.72, "challenger": 0.28})
    seen: list[float] = []
    backend = share_watching_backend(env, "challenger", seen)
    with backend.lock(f"endpoint:{ENDPOINT}", "test release manager"):
        report = promote_variant(
            no_traffic_config(bake_s=0.1, schedule=[10.0, 28.0, 50.0, 100.0]),
            backend,
            ENDPOINT,
            "challenger",
            actor="user:alice",
            system_prompt="",
            tools_factory=tools,
        )
    assert report.action == "promoted"
    assert seen == [0.28, 0.5, 1.0]


@pytest.mark.parametrize("decision", ["reject", "inconclusive"])
def test_reject_and_inconclusive_leave_weights_alone(env: Env, decision: str) -> None:
    before = weights(env.backend)
    report = promote_challenger(
        fast_config(), make_inputs(env, decision), env.backend, tools_factory=tools, progress=None
    )
    assert weights(env.backend) == before == {"champion": 1.0, "challenger": 0.0}
    assert not report.timeline
    entry = env.backend.list_audit()[-1]
    if decision == "reject":
        assert report.action == "rejected"
        assert challenger_status(env) == ApprovalStatus.REJECTED
        assert entry.action == "reject"
    else:
        assert report.action == "no_change" and not report.approval_changes
        assert challenger_status(env) == ApprovalStatus.PENDING
        assert entry.action == "no_change" and "about 200 more cases" in entry.reason


def test_promote_refuses_when_another_execution_redeployed_the_endpoint(env: Env) -> None:
    inputs = make_inputs(env, "promote")  # what this execution deployed and evaluated
    assert env.deployed.challenger is not None
    evaluated = env.deployed.challenger.package_arn
    newer = env.backend.register_package(GROUP, MODEL)  # another execution deploys a newer package
    redeployed = deploy_variants(DeployConfig(endpoint_name=ENDPOINT, package_group=GROUP), env.backend)
    assert redeployed.challenger is not None and redeployed.challenger.package_arn == newer.arn
    before = weights(env.backend)

    report = promote_challenger(fast_config(), inputs, env.backend, tools_factory=tools, progress=None)

    assert report.action == "no_change" and not report.timeline
    assert weights(env.backend) == before == {"champion": 1.0, "challenger": 0.0}
    entry = env.backend.list_audit()[-1]
    assert entry.action == "no_change" and entry.execution_id == "exec-1"
    assert f"now serves {newer.arn}" in entry.reason and f"not the evaluated {evaluated}" in entry.reason
    assert entry.evidence["evaluated_package"] == evaluated
    for arn in (evaluated, newer.arn):  # neither package was approved on evidence about the other
        assert env.backend.get_package(arn).approval_status == ApprovalStatus.PENDING


class ExplodingMetricsBackend(LocalBackend):
    """The local backend whose metrics store fails once the challenger holds a share of traffic."""

    def variant_metrics(self, name: str, since: float) -> dict[str, Any]:
        state = self.describe_endpoint(name)
        assert state is not None
        if state.traffic_shares().get("challenger", 0.0) > 0:
            raise RuntimeError("metrics store unavailable\nsecond line of detail")
        return super().variant_metrics(name, since)


def test_exception_mid_shift_leaves_the_champion_at_full_traffic(env: Env) -> None:
    broken = ExplodingMetricsBackend(env.state_dir)
    config = no_traffic_config(bake_s=0.3)
    with pytest.raises(PromotionError) as info:
        promote_challenger(config, make_inputs(env, "promote"), broken, tools_factory=tools, progress=None)
    message = str(info.value)
    assert "\n" not in message and "metrics store unavailable" in message
    assert weights(env.backend) == {"champion": 1.0, "challenger": 0.0}
    assert actions(env.backend, "exec-1") == ["weights", "rollback"]
    assert env.backend.list_audit()[-1].evidence["trigger"] == "error"
    assert challenger_status(env) == ApprovalStatus.PENDING  # an error is not a verdict on the model


def test_shadow_phase_catches_a_failing_challenger_before_any_user_sees_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = build_env(tmp_path, monkeypatch, faults=FaultSpec(error_rate=0.6))
    config = fast_config(shadow=ShadowConfig(enabled=True, sample_percent=100.0, bake_s=3.0))
    try:
        report = promote_challenger(
            config, make_inputs(env, "promote"), env.backend, tools_factory=tools, progress=None
        )
    finally:
        env.backend.stop_runtime()
    assert report.action == "rolled_back" and "shadow" in report.reason
    assert actions(env.backend, "exec-1") == ["shadow", "rollback"], "no canary weight was ever set"
    tripped = next(ev for ev in report.timeline if ev.tripped)
    assert tripped.phase == "shadow" and tripped.readings["challenger"].errors > 0
    rolled = report.timeline[-1]  # a guard trip: the tripped guard is the reason, no note needed
    assert rolled.phase == "rollback" and rolled.tripped == tripped.tripped and rolled.note is None
    state = env.backend.describe_endpoint(ENDPOINT)
    assert state is not None
    assert [(v.name, v.shadow, v.current_weight) for v in state.variants] == [
        ("champion", False, 1.0),
        ("challenger", False, 0.0),
    ], "the challenger is back as a production variant without traffic"
    assert challenger_status(env) == ApprovalStatus.REJECTED


def test_the_promote_entry_records_what_the_shadow_phase_saw(env: Env) -> None:
    # The shadow entry is written as the phase starts; when it passed, no entry said what it had read.
    config = fast_config(shadow=ShadowConfig(enabled=True, sample_percent=100.0, bake_s=1.0))
    report = promote_challenger(
        config, make_inputs(env, "promote"), env.backend, tools_factory=tools, progress=None
    )
    assert report.action == "promoted"
    assert actions(env.backend, "exec-1") == ["shadow", "weights", "weights", "promote"]
    shadow = env.backend.list_audit()[-1].evidence["shadow"]
    assert shadow["sample_percent"] == 100.0 and shadow["judged"] is True
    mirrored = shadow["guard_readings"]["challenger"]
    assert mirrored["invocations"] >= 5 and mirrored["errors"] == 0
    assert shadow["guard_readings"]["champion"]["invocations"] > 0


def test_promote_variant_rejects_a_bad_schedule_in_one_line(env: Env) -> None:
    with pytest.raises(PromotionError, match=r"schedule \[50.0, 20.0\]: .*increase") as info:
        promote_variant(
            fast_config(),
            env.backend,
            ENDPOINT,
            "challenger",
            actor="u",
            system_prompt="",
            tools_factory=tools,
            schedule=[50.0, 20.0],
        )
    assert "\n" not in str(info.value)


def test_first_release_approves_the_sole_challenger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = build_env(tmp_path, monkeypatch, champion=False)
    try:
        assert env.deployed.bootstrap and env.deployed.champion is None
        report = promote_challenger(
            fast_config(), make_inputs(env, "promote"), env.backend, tools_factory=tools, progress=None
        )
    finally:
        env.backend.stop_runtime()
    assert report.action == "promoted"
    assert weights(env.backend) == {"challenger": 1.0}
    assert challenger_status(env) == ApprovalStatus.APPROVED
    # The ledger tells a first release from a guarded shift: no canary, no guard readings to look for. The
    # challenger served everything already, so no weight changed and no weights entry was written.
    assert actions(env.backend, "exec-1") == ["promote"]
    entry = env.backend.list_audit()[-1]
    assert entry.evidence["first_release"] is True
    assert entry.evidence["approval"] == "Approved" and report.audit_seqs == (entry.seq,)


def test_a_first_release_sharing_the_endpoint_takes_all_traffic_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No champion, but a leftover variant still holds half of the endpoint: the challenger takes everything.
    env = build_env(tmp_path, monkeypatch, champion=False)
    try:
        assert env.deployed.challenger is not None
        arn = env.deployed.challenger.package_arn
        env.backend.deploy_endpoint(
            ENDPOINT,
            [
                VariantSpec(name="challenger", model=MODEL, package_arn=arn, initial_weight=0.5),
                VariantSpec(name="leftover", model=MODEL, initial_weight=0.5),
            ],
        )
        report = promote_challenger(
            fast_config(), make_inputs(env, "promote"), env.backend, tools_factory=tools, progress=None
        )
    finally:
        env.backend.stop_runtime()
    assert report.action == "promoted"
    after = {"challenger": 1.0, "leftover": 0.0}
    assert weights(env.backend) == report.final_weights == after
    assert actions(env.backend, "exec-1") == ["weights", "promote"]
    assert env.backend.list_audit()[-2].evidence["weights"] == after
    # The timeline shows the endpoint after the takeover, not before it.
    assert [(ev.phase, dict(ev.weights)) for ev in report.timeline] == [("complete", after)]


def test_rollback_endpoint_sends_everything_to_the_newest_approved(env: Env) -> None:
    env.backend.update_weights(ENDPOINT, {"champion": 0.5, "challenger": 0.5})
    state = rollback_endpoint(env.backend, ENDPOINT, actor="user:bob", reason="pager fired")
    assert {v.name: v.current_weight for v in state.variants} == {"champion": 1.0, "challenger": 0.0}
    entry = env.backend.list_audit()[-1]
    assert entry.action == "rollback" and entry.actor == "user:bob" and "pager fired" in entry.reason
    assert entry.evidence["weights_before"] == {"champion": 0.5, "challenger": 0.5}


def test_promote_variant_refuses_rejected_package_and_unknown_variant(env: Env) -> None:
    promote_challenger(
        fast_config(), make_inputs(env, "reject"), env.backend, tools_factory=tools, progress=None
    )
    with pytest.raises(PromotionError, match="Rejected"):
        promote_variant(
            fast_config(),
            env.backend,
            ENDPOINT,
            "challenger",
            actor="u",
            system_prompt="",
            tools_factory=tools,
        )
    with pytest.raises(PromotionError, match="no variant nope"):
        promote_variant(
            fast_config(), env.backend, ENDPOINT, "nope", actor="u", system_prompt="", tools_factory=tools
        )
    assert weights(env.backend) == {"champion": 1.0, "challenger": 0.0}


def _hold_for_approval(env: Env) -> PromotionReport:
    """exec-1's gate says promote in manual mode: the shift is held for a release manager."""
    return promote_challenger(
        fast_config(mode="manual"),
        make_inputs(env, "promote"),
        env.backend,
        tools_factory=tools,
        progress=None,
    )


def _manual_promote(env: Env, variant: str) -> Any:
    with env.backend.lock(f"endpoint:{ENDPOINT}", "test release manager"):
        return promote_variant(
            no_traffic_config(bake_s=0.2),
            env.backend,
            ENDPOINT,
            variant,
            actor="user:alice",
            system_prompt="",
            tools_factory=tools,
        )


def test_a_retried_manual_promotion_carries_the_gates_evidence_not_the_failed_attempts(env: Env) -> None:
    # Held for approval; the release manager's first `promote` fails mid-shift (an error, recorded as a
    # rollback with trigger "error"). That rollback leaves nothing pending approval: the retry still
    # continues the gate's decision and records its evidence.
    _hold_for_approval(env)
    with (
        env.backend.lock(f"endpoint:{ENDPOINT}", "test release manager"),
        pytest.raises(PromotionError, match="metrics store unavailable"),
    ):
        promote_variant(
            no_traffic_config(bake_s=0.2),
            ExplodingMetricsBackend(env.state_dir),
            ENDPOINT,
            "challenger",
            actor="user:alice",
            system_prompt="",
            tools_factory=tools,
        )
    assert actions(env.backend, "exec-1") == ["decision", "weights", "rollback"]

    assert _manual_promote(env, "challenger").action == "promoted"

    promoted = env.backend.list_audit()[-1]
    assert promoted.action == "promote" and promoted.execution_id == "exec-1"
    assert promoted.evidence["decision"] == "promote" and promoted.evidence["n_paired"] == 10
    assert "error" not in promoted.evidence


def test_promoting_the_variant_that_serves_everything_shifts_nothing(env: Env) -> None:
    # A manual hold: the champion serves 100%, the unapproved challenger 0%.
    _hold_for_approval(env)
    n_entries = len(env.backend.list_audit())
    with pytest.raises(PromotionError, match=r"champion already serves all of .*; nothing to shift"):
        _manual_promote(env, "champion")
    assert weights(env.backend) == {"champion": 1.0, "challenger": 0.0}  # no canary step on the challenger
    assert len(env.backend.list_audit()) == n_entries
    assert challenger_status(env) == ApprovalStatus.PENDING


def test_promoting_an_older_version_makes_it_champion_and_rollback_keeps_it(env: Env) -> None:
    config = no_traffic_config(bake_s=0.2)
    promote_challenger(config, make_inputs(env, "promote"), env.backend, tools_factory=tools, progress=None)
    state = env.backend.describe_endpoint(ENDPOINT)
    assert state is not None and current_champion(env.backend, state) == "challenger"
    assert _roles(env, state) == {"champion": None, "challenger": "champion"}  # `status` agrees

    report = _manual_promote(env, "champion")  # the release manager goes back to the older version

    assert report.action == "promoted"
    assert weights(env.backend) == {"champion": 1.0, "challenger": 0.0}
    state = env.backend.describe_endpoint(ENDPOINT)
    assert state is not None and current_champion(env.backend, state) == "champion"
    # Both packages are Approved now; `status` names the one promoted last, as promotion does.
    assert _roles(env, state) == {"champion": "champion", "challenger": None}
    n_entries = len(env.backend.list_audit())
    with pytest.raises(NothingToRollBack, match="champion already serves all"):
        rollback_endpoint(env.backend, ENDPOINT, actor="user:bob", reason="pager fired")
    assert weights(env.backend) == {"champion": 1.0, "challenger": 0.0}
    assert len(env.backend.list_audit()) == n_entries, "a rollback that changes nothing records nothing"


def test_promoting_the_champion_back_moves_the_champion_alias_to_its_agent_version(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: `promote champion` after a full promotion found no held decision, so it knew no agent version:
    # the variant took 100% but the MLflow `champion` alias stayed on the version just demoted (warning only).
    moved: list[tuple[str, str]] = []
    monkeypatch.setattr(
        "agent_release.steps.register_agents.promote_aliases",
        lambda name, version, tracking_uri=None: moved.append((name, str(version))),
    )
    inputs = make_inputs(env, "promote")
    versions = {"champion": "1", "challenger": "2"}
    agents = tuple(
        a.model_copy(update={"registered_model_version": versions[a.variant]})
        for a in inputs.registration.agents
    )
    inputs = inputs.model_copy(
        update={"registration": inputs.registration.model_copy(update={"agents": agents})}
    )
    promote_challenger(no_traffic_config(bake_s=0.2), inputs, env.backend, tools_factory=tools, progress=None)
    assert moved == [("support-agent", "2")]

    report = _manual_promote(env, "champion")

    assert report.action == "promoted" and report.aliases_moved is True
    assert moved[-1] == ("support-agent", "1")
    promote_entry = env.backend.list_audit()[-1]
    assert promote_entry.action == "promote" and promote_entry.evidence["challenger"]["variant"] == "champion"


def test_rollback_after_a_full_promotion_names_the_promote_that_goes_back(env: Env) -> None:
    # Before: "nothing to roll back: challenger already serves all of <endpoint>'s traffic" and nothing about
    # how to return to the model the promotion replaced (it is `promote champion`, guarded step by step).
    promote_challenger(
        no_traffic_config(bake_s=0.2, guards=GuardConfig(unjudged="promote")),
        make_inputs(env, "promote"),
        env.backend,
        tools_factory=tools,
        progress=None,
    )
    assert weights(env.backend) == {"champion": 0.0, "challenger": 1.0}
    with pytest.raises(NothingToRollBack) as info:
        rollback_endpoint(env.backend, ENDPOINT, actor="user:bob", reason="pager fired")
    assert str(info.value).endswith(
        f"challenger already serves all of {ENDPOINT}'s traffic; to serve champion again, "
        "`agent-release promote champion`"
    ), info.value


def test_a_canary_step_with_too_few_calls_is_not_called_green(env: Env) -> None:
    # No live traffic: no step sees min_invocations challenger calls, so no guard could judge any of them.
    config = no_traffic_config(bake_s=0.2)
    report = promote_challenger(
        config, make_inputs(env, "promote"), env.backend, tools_factory=tools, progress=None
    )
    assert report.action == "promoted"
    entry = env.backend.list_audit()[-1]
    assert entry.action == "promote" and entry.evidence["unjudged_steps"] == [50.0, 100.0]
    assert "every guard green" not in entry.reason
    assert "step 50/100% saw fewer than 5 challenger calls" in entry.reason
    assert "too few for the guards to judge" in report.reason


def test_a_step_the_guards_cannot_judge_rolls_back_and_leaves_the_package_pending(env: Env) -> None:
    # The default policy. No traffic reaches the challenger (live traffic off, no users): the first step
    # bakes on to max_bake_s waiting for min_invocations calls, then goes back to the champion. Nothing
    # speaks against the challenger either, so its package is left pending, not Rejected.
    config = fast_config(live_traffic=LiveTrafficConfig(enabled=False), bake_s=0.3, max_bake_s=1.2)
    assert config.guards.unjudged == "rollback"
    report = promote_challenger(
        config, make_inputs(env, "promote"), env.backend, tools_factory=tools, progress=None
    )

    assert report.action == "rolled_back"
    assert "unjudged: 0 challenger calls" in report.reason and "fewer than min_invocations 5" in report.reason
    assert "agent-release promote challenger" in report.reason
    step_start, step_end = (ev.at for ev in report.timeline if ev.phase == "canary")
    assert step_end - step_start >= 1.2, "the step baked on to max_bake_s before giving up on calls"
    assert weights(env.backend) == {"champion": 1.0, "challenger": 0.0}
    assert actions(env.backend, "exec-1") == ["weights", "rollback"], "the 100% step never ran"
    entry = env.backend.list_audit()[-1]
    assert entry.evidence["trigger"] == "unjudged" and entry.evidence["where"] == "canary 50%"
    # The timeline's rollback says why (no guard tripped): the cause the entry records.
    rolled = report.timeline[-1]
    assert rolled.phase == "rollback" and rolled.tripped is None and rolled.note == entry.evidence["why"]
    assert entry.evidence["approval"] == "PendingManualApproval"
    assert challenger_status(env) == ApprovalStatus.PENDING
    assert env.deployed.challenger is not None
    pending = json.loads(env.backend.get_package(env.deployed.challenger.package_arn).approval_description)
    assert pending["rolled_back"] == "unjudged" and pending["audit_seq"] == entry.seq
    assert pending["next"] == "agent-release promote challenger"

    # A resumed run does not act again and keeps the package pending.
    n_entries = len(env.backend.list_audit())
    again = promote_challenger(
        config, make_inputs(env, "promote"), env.backend, tools_factory=tools, progress=None
    )
    assert again.resumed and again.action == "rolled_back"
    assert len(env.backend.list_audit()) == n_entries
    assert challenger_status(env) == ApprovalStatus.PENDING

    # The release manager retries once traffic flows: the guards judge every step and it promotes, with the
    # gate's evidence (not the rollback's) carried into the promote entry.
    with env.backend.lock(f"endpoint:{ENDPOINT}", "test release manager"):
        retried = promote_variant(
            fast_config(),
            env.backend,
            ENDPOINT,
            "challenger",
            actor="user:alice",
            system_prompt="",
            tools_factory=tools,
            live_inputs=LIVE_INPUTS,
        )
    assert retried.action == "promoted" and "every guard green" in retried.reason
    promoted = env.backend.list_audit()[-1]
    assert promoted.action == "promote" and promoted.execution_id == "exec-1"
    assert promoted.evidence["decision"] == entry.evidence["decision"] == "promote"
    assert promoted.evidence["n_paired"] == 10 and "trigger" not in promoted.evidence
    assert challenger_status(env) == ApprovalStatus.APPROVED


def test_a_thin_step_bakes_on_until_the_guards_can_judge_it(env: Env) -> None:
    # 4 conversations/s at a 50% share give the challenger about 2 calls/s: short of min_invocations (5) at
    # bake_s (1 s), enough well before max_bake_s (20 s). Each step is judged, none waits the whole limit.
    config = fast_config(
        bake_s=1.0, max_bake_s=20.0, live_traffic=LiveTrafficConfig(requests_per_s=4.0, concurrency=2)
    )
    updates: list[tuple[str, float, float, str]] = []

    class Recording:
        def bake_progress(self, label: str, seconds: float) -> Callable[[float, float, str], None]:
            return lambda elapsed, total, text: updates.append((label, elapsed, total, text))

    started = time.monotonic()
    report = promote_challenger(
        config, make_inputs(env, "promote"), env.backend, tools_factory=tools, progress=Recording()
    )
    assert report.action == "promoted" and "every guard green" in report.reason
    # What the user sees while a step bakes on: the bar stretches to the limit and says why.
    extended = [u for u in updates if u[2] == 20.0]
    assert extended and all(u[1] >= 1.0 for u in extended)
    assert "baking on until 5 calls (up to 20s)" in extended[0][3]
    assert all(u[2] == 1.0 for u in updates if u[1] < 1.0)
    bakes = [ev for ev in report.timeline if ev.phase == "canary" and ev.readings]
    assert [ev.readings["challenger"].invocations >= 5 for ev in bakes] == [True, True]
    # Each step stops baking once judged: none reaches the limit (the total alone let one step wait it out).
    longest = {label: max(u[1] for u in updates if u[0] == label) for label, *_ in extended}
    assert len(longest) == 2 and all(seconds < 20.0 for seconds in longest.values()), longest
    assert time.monotonic() - started < 2 * 20.0
    assert env.backend.list_audit()[-1].evidence["unjudged_steps"] == []


def test_sigterm_mid_shift_puts_the_champion_back_like_ctrl_c(env: Env) -> None:
    """What `run`/`promote` do when a timeout, CI or systemd stops them with SIGTERM during the canary."""
    import os
    import signal
    import threading

    from agent_release.pipelines.cli import _install_sigterm_handler

    previous = signal.getsignal(signal.SIGTERM)
    _install_sigterm_handler()
    config = no_traffic_config(bake_s=5.0)
    shifted = threading.Event()

    class Watching(LocalBackend):
        def update_weights(self, name: str, weights: Mapping[str, float]) -> Any:
            state = super().update_weights(name, weights)
            if weights.get("challenger", 0.0) > 0:
                shifted.set()
            return state

    backend = Watching(env.state_dir)
    killer = threading.Thread(
        target=lambda: shifted.wait(30) and (time.sleep(0.3), os.kill(os.getpid(), signal.SIGTERM)),
        daemon=True,
    )
    killer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            promote_challenger(
                config, make_inputs(env, "promote"), backend, tools_factory=tools, progress=None
            )
    finally:
        signal.signal(signal.SIGTERM, previous)
        killer.join(timeout=30)
    assert shifted.is_set()
    assert weights(env.backend) == {"champion": 1.0, "challenger": 0.0}
    entry = env.backend.list_audit()[-1]
    assert entry.action == "rollback" and entry.evidence["trigger"] == "error"
    # Named as an interruption by which signal, not as "KeyboardInterrupt: ..." (it is not a crash).
    assert f"promotion failed mid-shift (interrupted (signal {int(signal.SIGTERM)}))" in entry.reason
    assert entry.evidence["error"] == f"interrupted (signal {int(signal.SIGTERM)})"


def _roles(env: Env, state: EndpointState) -> dict[str, str | None]:
    return {name: role for name, (role, _) in variant_roles(env.backend, state).items()}


def test_rollback_without_an_approved_package_falls_back_to_the_configured_champion_name(
    tmp_path: Path,
) -> None:
    backend = LocalBackend(tmp_path)
    backend.ensure_package_group(GROUP)
    stable, canary = (backend.register_package(GROUP, MODEL) for _ in range(2))  # both pending
    backend.deploy_endpoint(
        ENDPOINT,
        [
            VariantSpec(name="stable", model=MODEL, package_arn=stable.arn, initial_weight=0.5),
            VariantSpec(name="canary", model=MODEL, package_arn=canary.arn, initial_weight=0.5),
        ],
    )
    with pytest.raises(PromotionError, match="nor one named 'champion'"):
        rollback_endpoint(backend, ENDPOINT, actor="user:bob", reason="pager fired")
    assert weights(backend) == {"stable": 0.5, "canary": 0.5}

    state = rollback_endpoint(
        backend, ENDPOINT, actor="user:bob", reason="pager fired", champion_name="stable"
    )

    assert {v.name: v.current_weight for v in state.variants} == {"stable": 1.0, "canary": 0.0}
    assert backend.list_audit()[-1].evidence["champion"] == "stable"


def _champion_status(env: Env) -> ApprovalStatus:
    return env.backend.get_package(env.deployed.champion.package_arn).approval_status


def _promote_champion_back_from_a_split(env: Env, backend: LocalBackend) -> Any:
    with backend.lock(f"endpoint:{ENDPOINT}", "test release manager"):
        return promote_variant(
            fast_config(live_traffic=LiveTrafficConfig(enabled=False), bake_s=0.2, max_bake_s=0.2),
            backend,
            ENDPOINT,
            "champion",
            actor="user:alice",
            system_prompt="",
            tools_factory=tools,
        )


def test_an_interrupted_promotion_of_the_champion_back_restores_the_split_not_the_pending_challenger(
    env: Env,
) -> None:
    # From a half-way canary (champion Approved, challenger pending, 50/50) `promote champion` took the
    # challenger as the baseline to fall back to: Ctrl-C during the first bake sent it 100% of traffic.
    env.backend.update_weights(ENDPOINT, {"champion": 0.5, "challenger": 0.5})

    class Interrupted(LocalBackend):
        def variant_metrics(self, name: str, since: float) -> Any:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _promote_champion_back_from_a_split(env, Interrupted(env.state_dir))
    assert weights(env.backend) == {"champion": 0.5, "challenger": 0.5}
    assert _champion_status(env) == ApprovalStatus.APPROVED
    assert challenger_status(env) == ApprovalStatus.PENDING
    entry = env.backend.list_audit()[-1]
    assert entry.action == "rollback" and entry.evidence["weights_after"] == {
        "champion": 0.5,
        "challenger": 0.5,
    }
    assert entry.reason.endswith(
        "traffic back to the weights before the shift (champion 50%, challenger 50%)"
    )


def test_a_guard_trip_while_promoting_the_champion_back_keeps_its_approval(env: Env) -> None:
    # The same split, and the champion errs while it bakes: the rollback gave the pending challenger all
    # traffic and Rejected the champion's Approved package, leaving no approved variant serving.
    env.backend.update_weights(ENDPOINT, {"champion": 0.5, "challenger": 0.5})

    class ChampionErrs(LocalBackend):
        def variant_metrics(self, name: str, since: float) -> Any:
            return {
                "champion": VariantMetrics(variant="champion", invocations=40, errors_4xx=0, errors_5xx=20),
                "challenger": VariantMetrics(
                    variant="challenger", invocations=40, errors_4xx=0, errors_5xx=0
                ),
            }

    report = _promote_champion_back_from_a_split(env, ChampionErrs(env.state_dir))
    assert report.action == "rolled_back"
    assert report.reason.endswith(
        "traffic back to the weights before the shift (champion 50%, challenger 50%), package stays Approved"
    )
    assert weights(env.backend) == {"champion": 0.5, "challenger": 0.5}
    assert _champion_status(env) == ApprovalStatus.APPROVED
    assert challenger_status(env) == ApprovalStatus.PENDING
    assert env.backend.list_audit()[-1].evidence["approval"] == "Approved"


def test_a_rollback_killed_before_its_entry_is_recorded_by_the_next_one(env: Env) -> None:
    # Killed between moving the weights and writing its entry, a rollback left the ledger at "canary step
    # 50%" while the champion served everything, and the retry said "nothing to roll back", writing nothing.
    env.backend.update_weights(ENDPOINT, {"champion": 0.5, "challenger": 0.5})
    step = env.backend.append_audit(
        "pipeline",
        "weights",
        f"{ENDPOINT}/challenger",
        "canary step 50%: challenger 50%, champion 50%",
        {"percent": 50.0, "weights": {"champion": 0.5, "challenger": 0.5}},
    )
    env.backend.update_weights(ENDPOINT, {"champion": 1.0, "challenger": 0.0})  # the killed rollback's move

    rollback_endpoint(env.backend, ENDPOINT, actor="user:bob", reason="retry")
    entry = env.backend.list_audit()[-1]
    assert entry.action == "rollback" and entry.subject == f"{ENDPOINT}/champion"
    assert entry.reason == (
        "manual rollback: retry; champion already served 100%, which the ledger did not show (its last "
        f"traffic entry for the endpoint, audit #{step.seq}, is a canary step): recorded now"
    )
    assert entry.evidence["weights_before"] == {"champion": 0.5, "challenger": 0.5}
    assert entry.evidence["weights_after"] == {"champion": 1.0, "challenger": 0.0}
    # Recorded once: the ledger agrees with the endpoint now.
    with pytest.raises(NothingToRollBack):
        rollback_endpoint(env.backend, ENDPOINT, actor="user:bob", reason="again")
    assert env.backend.list_audit()[-1] == entry


def test_rollback_ends_a_shadow_phase_that_was_killed_before_it_cleaned_up(env: Env) -> None:
    # The shadow phase's clean-up runs in a `finally`, which a kill skips: the challenger kept mirroring
    # 50% of requests, and rollback said "nothing to roll back" (it looked at production weights only).
    state = env.backend.describe_endpoint(ENDPOINT)
    assert state is not None
    env.backend.deploy_endpoint(
        ENDPOINT,
        [
            VariantSpec(
                name=v.name,
                model=v.model,
                package_arn=v.package_arn,
                initial_weight=1.0 if v.name == "champion" else 0.0,
                shadow=v.name == "challenger",
                shadow_sample_percent=50.0 if v.name == "challenger" else 0.0,
            )
            for v in state.variants
        ],
    )
    after = rollback_endpoint(env.backend, ENDPOINT, actor="user:bob", reason="stray shadow")
    assert [(v.name, v.current_weight, v.shadow) for v in after.variants] == [
        ("champion", 1.0, False),
        ("challenger", 0.0, False),
    ]
    entry = env.backend.list_audit()[-1]
    assert (
        entry.reason == "manual rollback: stray shadow; champion back to 100%; challenger no longer mirrored"
    )
    assert entry.evidence["shadows_removed"] == ["challenger"]
    assert entry.evidence["weights_after"] == {"champion": 1.0, "challenger": 0.0}


def test_a_resumed_manual_hold_writes_the_approval_description_it_missed(env: Env) -> None:
    # The decision entry was written, then setting the package's approval failed: the resume said "already
    # done" and left the package without the description that names the entry and the next command.
    class ApprovalFailsOnce(LocalBackend):
        failed = False

        def update_approval(self, arn: str, status: ApprovalStatus, description: str) -> Any:
            if not ApprovalFailsOnce.failed:
                ApprovalFailsOnce.failed = True
                raise OSError("registry unavailable")
            return super().update_approval(arn, status, description)

    config = fast_config(mode="manual")
    with pytest.raises(OSError, match="registry unavailable"):
        promote_challenger(
            config,
            make_inputs(env, "promote"),
            ApprovalFailsOnce(env.state_dir),
            tools_factory=tools,
            progress=None,
        )
    assert actions(env.backend, "exec-1") == ["decision"]
    resumed = promote_challenger(
        config, make_inputs(env, "promote"), env.backend, tools_factory=tools, progress=None
    )
    assert resumed.action == "held_for_approval" and resumed.reason.startswith("already done (audit #")
    assert env.deployed.challenger is not None
    package = env.backend.get_package(env.deployed.challenger.package_arn)
    described = json.loads(package.approval_description)
    decision = env.backend.list_audit()[-1]
    assert decision.action == "decision" and described["audit_seq"] == decision.seq
    assert described["next"] == "agent-release promote challenger"
    assert described["execution"] == "exec-1" and described["dataset_sha256"]
    assert actions(env.backend, "exec-1") == ["decision"]  # nothing written twice
