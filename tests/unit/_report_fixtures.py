"""A realistic execution in a state directory, for the report tests (unit and headless Chromium).

:func:`build_execution` stores what a local run stores: the execution row, each step's status and typed
output (built from the real report models; the decision is computed by the real gate from synthetic per-case
rows), and the audit entries the promotion appends. Options make it partial, failed or rolled back.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from agent_release.pipelines.executor import ExecutionStore, StepDef
from agent_release.pipelines.local_backend import LocalBackend
from agent_release.steps.decide_promotion import DecisionConfig, DecisionReport, decide_promotion
from agent_release.steps.deploy_variants import DeployedVariant, DeployReport
from agent_release.steps.evaluation_records import CaseResult, EvaluationReport, Role, VariantEvaluation
from agent_release.steps.guards import GuardReading
from agent_release.steps.paired_stats import clustered_mean
from agent_release.steps.promote_challenger import PromotionReport, TimelineEvent
from agent_release.steps.register_agents_config import InferenceConfig
from agent_release.steps.registration_records import RegisteredAgent, RegistrationReport
from agent_release.steps.train_model import TrainReport
from agent_release.steps.validate_datasets import DatasetResult, DatasetValidationReport, ExpectationFailure

ENDPOINT = "support"
CHAMPION = "champion-v3"
CHALLENGER = "challenger-v4"
CLUSTERS = (
    "order-status",
    "returns",
    "refunds",
    "shipping-delay",
    "damaged-item",
    "address-change",
    "warranty",
    "invoice",
    "cancel-order",
    "loyalty",
    "gift-card",
    "payment-failed",
)
DATASET_BYTES = b'{"id": "c1", "input": "Where is my order?"}\n'
DATASET_SHA256 = hashlib.sha256(DATASET_BYTES).hexdigest()
TRIP_REASON = "challenger live error rate 0.143 above max_error_rate 0.05"
STEP_ORDER: tuple[tuple[str, type[BaseModel]], ...] = (
    ("validate_datasets", DatasetValidationReport),
    ("train_model", TrainReport),
    ("deploy_variants", DeployReport),
    ("register_agents", RegistrationReport),
    ("evaluate_variants", EvaluationReport),
    ("decide_promotion", DecisionReport),
    ("promote_challenger", PromotionReport),
)
CONFIG_TEXT = """name: support-release
tracking:
  experiment: agent-release
decide:
  primary_metric: task_success
  min_improvement: 0.02
"""


def datasets_report(*, success: bool = True) -> DatasetValidationReport:
    failures = (
        ()
        if success
        else (
            ExpectationFailure(
                expectation="expect_column_values_to_not_be_null",
                column="input",
                unexpected_count=2,
                sample_ids=("c7", "c9"),
            ),
        )
    )
    return DatasetValidationReport(
        success=success,
        datasets=(
            DatasetResult(
                name="golden",
                path="datasets/support/golden.jsonl",
                sha256=DATASET_SHA256,
                n_rows=48,
                n_clusters=len(CLUSTERS),
                success=success,
                failures=failures,
            ),
        ),
    )


def deploy_report() -> DeployReport:
    champion = DeployedVariant(
        name=CHAMPION, role="champion", package_arn="arn:local:package/support/3", version=3, weight=1.0
    )
    challenger = DeployedVariant(
        name=CHALLENGER, role="challenger", package_arn="arn:local:package/support/4", version=4, weight=0.0
    )
    return DeployReport(
        endpoint_name=ENDPOINT,
        package_group="support-agent",
        variants=(champion, challenger),
        champion=champion,
        challenger=challenger,
        bootstrap=False,
        changed=True,
    )


def registration_report(state_dir: Path) -> RegistrationReport:
    def agent(variant: str, role: Role, version: int) -> RegisteredAgent:
        return RegisteredAgent(
            variant=variant,
            role=role,
            endpoint_name=ENDPOINT,
            package_arn=f"arn:local:package/support/{version}",
            package_version=version,
            logged_model_id=f"m-{variant}",
            prompt_uri="prompts:/support-agent/2",
            registered_model_name="support-agent",
            registered_model_version=str(version),
            tool_names=("lookup_order", "search_kb"),
            tools_hash="f" * 64,
            inference=InferenceConfig(),
        )

    return RegistrationReport(
        tracking_uri=f"sqlite:///{(state_dir / 'mlflow.db').resolve()}",
        experiment_id="1",
        agents=(agent(CHAMPION, "champion", 3), agent(CHALLENGER, "challenger", 4)),
        changed=True,
    )


def case_rows(seed: int = 7) -> list[CaseResult]:
    """Four cases per cluster; the challenger succeeds more often and is a little slower."""
    rng = random.Random(seed)
    rows: list[CaseResult] = []
    for c, cluster in enumerate(CLUSTERS):
        difficulty = rng.uniform(-0.15, 0.15)
        for i in range(4):
            case_id = f"{cluster}-{i}"
            for variant, role, p, latency in (
                (CHAMPION, "champion", 0.55, 0.40),
                (CHALLENGER, "challenger", 0.85, 0.45),
            ):
                success = 1.0 if rng.random() < p + difficulty else 0.0
                rows.append(
                    CaseResult(
                        case_id=case_id,
                        cluster=cluster,
                        variant=variant,
                        role=role,
                        scores={"task_success": success, "tool_trajectory": success if i % 2 else 1.0},
                        latency_s=latency + rng.uniform(0, 0.1),
                        input_tokens=120,
                        output_tokens=40 + c,
                        cost=0.0002,
                        trace_id=f"tr-{variant}-{case_id}",
                    )
                )
    return rows


def evaluation_report(rows: Sequence[CaseResult], run_ids: dict[str, str | None]) -> EvaluationReport:
    variants = []
    for variant, role in ((CHAMPION, "champion"), (CHALLENGER, "challenger")):
        mine = [r for r in rows if r.variant == variant]
        clusters = [r.cluster for r in mine]
        aggregates = {}
        for metric in ("task_success", "tool_trajectory", "latency_s"):
            values = [r.latency_s if metric == "latency_s" else r.scores[metric] for r in mine]
            est = clustered_mean(values, clusters)
            aggregates[metric] = {
                "mean": est.mean,
                "se": est.se,
                "ci_low": est.ci_low,
                "ci_high": est.ci_high,
                "n": est.n,
                "n_clusters": est.n_clusters,
            }
        variants.append(
            VariantEvaluation(
                variant=variant,
                role=role,
                cases_expected=len(mine),
                cases_completed=len(mine),
                cases_errored=0,
                retries=0,
                scorer_errors={"answer_correctness": 2} if role == "challenger" else {},
                mlflow_run_id=run_ids.get(variant),
                logged_model_id=f"m-{variant}",
                aggregates=aggregates,
            )
        )
    return EvaluationReport(
        dataset_name="golden",
        dataset_hash=DATASET_SHA256,
        repeats=1,
        scorer_specs=({"name": "task_success"}, {"name": "tool_trajectory"}),
        variants=tuple(variants),
        rows=tuple(rows),
    )


def decision_config() -> DecisionConfig:
    return DecisionConfig(min_improvement=0.02, min_completed_cases=20, bootstrap_resamples=300)


def promotion_report(decision: DecisionReport, start: float, *, rolled_back: bool) -> PromotionReport:
    def reading(variant: str, calls: int, errors: int, p: float | None = None) -> GuardReading:
        return GuardReading(
            variant=variant,
            invocations=calls,
            errors=errors,
            error_rate=errors / calls,
            latency_p95_ms=420.0,
            msprt_p_value=p,
        )

    w10 = {CHAMPION: 0.9, CHALLENGER: 0.1}
    w50 = {CHAMPION: 0.5, CHALLENGER: 0.5}
    timeline = [
        TimelineEvent(
            at=start,
            phase="canary",
            weights=w10,
            readings={CHAMPION: reading(CHAMPION, 36, 0), CHALLENGER: reading(CHALLENGER, 4, 0, 0.9)},
        ),
        TimelineEvent(
            at=start + 3.0,
            phase="canary",
            weights=w50,
            readings={CHAMPION: reading(CHAMPION, 20, 0), CHALLENGER: reading(CHALLENGER, 21, 3, 0.01)},
            tripped=TRIP_REASON if rolled_back else None,
        ),
    ]
    if rolled_back:
        back = {CHAMPION: 1.0, CHALLENGER: 0.0}
        timeline.append(
            TimelineEvent(at=start + 3.2, phase="rollback", weights=back, note="traffic back on champion")
        )
        action, reason, final = "rolled_back", f"guard tripped at 50%: {TRIP_REASON}", back
    else:
        done = {CHAMPION: 0.0, CHALLENGER: 1.0}
        timeline.append(TimelineEvent(at=start + 6.0, phase="complete", weights=done))
        action, reason, final = "promoted", "all guards green at 10%, 50%, 100%", done
    return PromotionReport(
        decision=decision.decision,
        action=action,
        reason=reason,
        endpoint_name=ENDPOINT,
        champion=CHAMPION,
        challenger=CHALLENGER,
        timeline=tuple(timeline),
        final_weights=final,
    )


def build_execution(
    state_dir: Path,
    *,
    fail_at: str | None = None,
    rolled_back: bool = True,
    run_ids: dict[str, str | None] | None = None,
    audit_reason_suffix: str = "",
) -> str:
    """Store an execution; with ``fail_at`` the named step fails and later steps stay pending."""
    store = ExecutionStore(state_dir)
    defs = [StepDef(name, (), model, lambda run: None) for name, model in STEP_ORDER]
    execution_id = store.create("support-release", state_dir / "pipeline.yaml", CONFIG_TEXT, defs)
    now = time.time()
    rows = case_rows()
    evaluation = evaluation_report(rows, run_ids or {CHAMPION: "0a1b2c3d" * 4, CHALLENGER: "4e5f6a7b" * 4})
    decision = decide_promotion(decision_config(), evaluation)
    outputs: dict[str, BaseModel | None] = {
        "validate_datasets": datasets_report(),
        "train_model": None,  # not enabled: skipped
        "deploy_variants": deploy_report(),
        "register_agents": registration_report(state_dir),
        "evaluate_variants": evaluation,
        "decide_promotion": decision,
        "promote_challenger": promotion_report(decision, now + 10, rolled_back=rolled_back),
    }
    for i, (name, output) in enumerate(outputs.items()):
        started = now + i
        if name == fail_at:
            store.mark_step(execution_id, name, "running", started_at=started)
            store.mark_step(
                execution_id,
                name,
                "failed",
                finished_at=started + 0.5,
                error="endpoint support did not answer in 30 s",
            )
            store.finish(execution_id, "failed", error=f"{name}: endpoint support did not answer in 30 s")
            store.close()
            return execution_id
        if output is None:
            store.mark_step(execution_id, name, "skipped", finished_at=started)
            continue
        store.mark_step(execution_id, name, "running", started_at=started)
        store.mark_step(
            execution_id, name, "succeeded", finished_at=started + 0.8, output_json=output.model_dump_json()
        )
    _append_audit(state_dir, execution_id, rolled_back=rolled_back, suffix=audit_reason_suffix)
    store.finish(execution_id, "succeeded", decision=decision.decision)
    store.close()
    return execution_id


def _append_audit(state_dir: Path, execution_id: str, *, rolled_back: bool, suffix: str) -> None:
    backend = LocalBackend(state_dir)
    try:
        subject = f"{ENDPOINT}/{CHALLENGER}"
        backend.append_audit(
            "someone-else", "promote", subject, "an earlier release", execution_id="older-run"
        )
        backend.append_audit(
            "pipeline",
            "weights",
            subject,
            "challenger at 10%" + suffix,
            evidence={"weights": {CHAMPION: 0.9, CHALLENGER: 0.1}},
            execution_id=execution_id,
        )
        backend.append_audit(
            "pipeline",
            "weights",
            subject,
            "challenger at 50%",
            evidence={"weights": {CHAMPION: 0.5, CHALLENGER: 0.5}},
            execution_id=execution_id,
        )
        if rolled_back:
            backend.append_audit(
                "pipeline",
                "rollback",
                subject,
                TRIP_REASON,
                evidence={"trigger": "guard"},
                execution_id=execution_id,
            )
        else:
            backend.append_audit(
                "pipeline", "promote", subject, "all guards green", execution_id=execution_id
            )
    finally:
        backend.close()
