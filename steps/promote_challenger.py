"""Step 7: act on the decision — shift traffic progressively with live guards, update registry and ledger.

:func:`promote_challenger` is the pipeline step; :func:`promote_variant` and :func:`rollback_endpoint` are the
release-manager actions behind ``agent-release promote`` / ``rollback``. The callers hold the endpoint lock
(``backend.lock(f"endpoint:{name}", owner)``): a local run for its whole run, a SageMaker pipeline while its
deploy and promote steps run, the CLI around each action. Nothing here takes it, so the step can run inside
the caller's lock. Before acting on a promote decision the step checks that the endpoint still serves the
package it evaluated (another execution may have redeployed it between the steps); if not, it changes
nothing and records ``no_change`` with the reason.

What each decision does:

======================  ===========================================================================
promote, mode auto      [shadow phase] -> for each schedule step p: weights champion (100-p)/100,
                        challenger p/100, audit ``weights``, bake ``bake_s`` with replayed live traffic
                        and guards every ~0.5 s. A trip: champion back to 1 at once, audit ``rollback``,
                        package Rejected -> ``rolled_back``. A step with fewer than ``min_invocations``
                        challenger calls bakes on up to ``max_bake_s``; still short, it is unjudged:
                        with ``guards.unjudged: rollback`` (default) champion back to 1, audit
                        ``rollback`` (trigger ``unjudged``), package left PendingManualApproval ->
                        ``rolled_back``. All green: audit ``promote``, package Approved with the
                        evidence, MLflow aliases moved -> ``promoted``.
promote, mode manual    no weight change; audit ``decision``; package stays PendingManualApproval with
                        the evidence in its description -> ``held_for_approval`` (``held=True``).
reject                  package Rejected, audit ``reject``, weights untouched -> ``rejected``.
inconclusive            registry untouched, audit ``no_change`` with what would settle it.
first release           (no champion) the challenger already has all traffic: approve on promote.
======================  ===========================================================================

Safety: while weights move, any exception (or interrupt) restores champion=1 / others=0, records a
``rollback`` entry with ``trigger: error`` and re-raises as a one-line :class:`PromotionError`. The endpoint
is never left with all weights zero or a weight on an unknown variant.

Resume: the ledger is the source of truth. If it already holds a terminal entry of this execution
(``promote``, ``rollback`` by a guard or of an unjudged step, ``reject``, ``decision``,
``no_change``), the step does not act again:
it re-applies the idempotent registry updates of that outcome and returns. If it holds only ``weights``
entries (a run killed mid-shift), it records ``resume`` and restarts the schedule from its first step: the
first step's challenger share is the smallest, so restarting only ever lowers the challenger's exposure.

MLflow aliases move through ``register_agents.promote_aliases`` only when the challenger has a registered
model version; with ``registered_model_version=None`` (tests without MLflow) that part is skipped and the
report says ``aliases_moved=False``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationError

from agent_release.agents.builder import environment_region
from agent_release.steps.backend import (
    ApprovalStatus,
    AuditEntry,
    Backend,
    BackendError,
    EndpointState,
    Frozen,
    VariantSpec,
    VariantState,
    last_promoted,
)
from agent_release.steps.decide_promotion import DecisionReport
from agent_release.steps.deploy_variants import DeployReport
from agent_release.steps.evaluation_records import EvaluationReport
from agent_release.steps.guards import GuardCheck, GuardMonitor, GuardReading
from agent_release.steps.ledger_actions import (
    AUDIT_DECISION,
    AUDIT_NO_CHANGE,
    AUDIT_PROMOTE,
    AUDIT_REJECT,
    AUDIT_RESUME,
    AUDIT_ROLLBACK,
    AUDIT_SHADOW,
    AUDIT_WEIGHTS,
    TRIGGER_ERROR,
    acted_on_since,
)
from agent_release.steps.live_traffic import AgentConversations, LiveTraffic
from agent_release.steps.promote_config import PromotionConfig
from agent_release.steps.register_agents_config import InferenceConfig
from agent_release.steps.registration_records import RegistrationReport
from agent_release.steps.validate_datasets import DatasetValidationReport

logger = logging.getLogger(__name__)

Action = Literal["promoted", "rolled_back", "held_for_approval", "rejected", "no_change"]
Phase = Literal["shadow", "canary", "rollback", "complete"]

# The ``trigger`` of a rollback entry: a guard tripped, the guards could not judge a step, or an error.
TRIGGER_GUARD = "guard"
TRIGGER_UNJUDGED = "unjudged"
# Keys a rollback entry adds to the decision's evidence; a retry after an unjudged rollback drops them.
_ROLLBACK_KEYS = frozenset(
    {"trigger", "why", "where", "weights_before", "weights_after", "guard_readings", "guards", "approval"}
)

# Terminal ledger actions of one execution -> the report action they mean (see "Resume" above).
_TERMINAL: dict[str, Action] = {
    AUDIT_PROMOTE: "promoted",
    AUDIT_ROLLBACK: "rolled_back",
    AUDIT_REJECT: "rejected",
    AUDIT_DECISION: "held_for_approval",
    AUDIT_NO_CHANGE: "no_change",
}

POLL_INTERVAL_S = 0.5
# SageMaker's ApprovalDescription limit; the full evidence lives in the audit entry.
MAX_APPROVAL_DESCRIPTION = 1024


class PromotionError(BackendError):
    """The promotion could not complete; the message is one line (traffic is back on the champion)."""


class TimelineEvent(Frozen):
    """One moment of a promotion: the weights then, and what the guards read."""

    at: float
    phase: Phase
    weights: Mapping[str, float]
    readings: Mapping[str, GuardReading] = Field(default_factory=dict)
    tripped: str | None = None
    note: str | None = None


class ApprovalChange(Frozen):
    """An approval status (or description) set on a model package."""

    variant: str
    package_arn: str
    from_status: ApprovalStatus
    to_status: ApprovalStatus
    description: str


class PromotionInputs(Frozen):
    """What the promotion step needs from the upstream steps (and the pipeline)."""

    execution_id: str
    deployed: DeployReport
    registration: RegistrationReport
    evaluation: EvaluationReport
    decision: DecisionReport
    datasets: DatasetValidationReport
    system_prompt: str
    live_inputs: tuple[str, ...] = ()
    actor: str = "pipeline"
    region: str = "us-east-1"  # the region the replayed live traffic signs for (``agent.region``)


class PromotionReport(Frozen):
    """What the promotion did; ``held`` tells the executor to mark the execution held."""

    decision: str
    action: Action
    held: bool = False
    reason: str
    endpoint_name: str
    champion: str | None
    challenger: str | None
    timeline: tuple[TimelineEvent, ...] = ()
    final_weights: Mapping[str, float] = Field(default_factory=dict)
    audit_seqs: tuple[int, ...] = ()
    approval_changes: tuple[ApprovalChange, ...] = ()
    aliases_moved: bool = False
    resumed: bool = False

    def summary(self) -> str:
        """One line for the console."""
        weights = ", ".join(f"{k}={v:g}" for k, v in sorted(self.final_weights.items()))
        return f"{self.action.upper().replace('_', ' ')}: {self.reason} [{weights}]"


# -- the release being acted on ------------------------------------------------------------------------------


@dataclass
class _Release:
    """Everything the shift needs, whichever entry point built it."""

    endpoint: str
    challenger: str
    champion: str | None
    challenger_arn: str | None
    execution_id: str | None
    actor: str
    decision: str
    evidence: dict[str, Any]
    registered_model: tuple[str, str] | None = None
    tracking_uri: str | None = None
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    region: str = "us-east-1"
    # Variant -> LoggedModel id of its registered agent (the replayed conversations' traces name it).
    logged_models: Mapping[str, str] = field(default_factory=dict)
    # The weights a rollback restores instead of ``champion`` alone: set by a manual promotion whose
    # baseline is not Approved (``promote champion`` from a split with a pending challenger), so a failed
    # shift gives that baseline back what it had, never all traffic.
    fallback: Mapping[str, float] | None = None

    @property
    def subject(self) -> str:
        return f"{self.endpoint}/{self.challenger}"

    def fallback_weights(self, state: EndpointState) -> dict[str, float]:
        """What a rollback sends traffic to: :attr:`fallback`, else ``champion`` alone."""
        assert self.champion is not None  # only a shift with a champion rolls back
        return dict(self.fallback) if self.fallback is not None else _champion_only(state, self.champion)

    @property
    def fallback_text(self) -> str:
        """How a rollback's target reads in a ledger reason and a report: ``champion back to 100%``."""
        if self.fallback is None:
            return f"{self.champion} back to 100%"
        split = ", ".join(f"{name} {weight:.0%}" for name, weight in self.fallback.items())
        return f"traffic back to the weights before the shift ({split})"


def _recorded_logged_models(evidence: Mapping[str, Any]) -> dict[str, str]:
    """Variant -> LoggedModel id as the decision's evidence recorded them (``decision_evidence``)."""
    recorded = evidence.get("logged_models")
    if not isinstance(recorded, Mapping):
        return {}
    return {str(variant): str(model_id) for variant, model_id in recorded.items() if model_id}


def _evaluated_package(evidence: Mapping[str, Any], variant: str) -> str | None:
    """The package ARN a decision's evidence recorded on ``variant`` (``decision_evidence``'s packages)."""
    packages = evidence.get("packages")
    recorded = packages.get(variant) if isinstance(packages, Mapping) else None
    arn = recorded.get("arn") if isinstance(recorded, Mapping) else None
    return str(arn) if arn else None


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _failure_text(exc: BaseException) -> str:
    """How the ledger names what stopped a shift: Ctrl-C and SIGTERM read as an interruption, not a crash."""
    if isinstance(exc, KeyboardInterrupt):
        detail = str(exc).strip()  # the CLI raises it with "signal 15" for SIGTERM; Ctrl-C leaves it empty
        return f"interrupted ({detail})" if detail else "interrupted (Ctrl-C)"
    return f"{type(exc).__name__}: {_one_line(exc)}"


def _describe(backend: Backend, endpoint: str) -> EndpointState:
    state = backend.describe_endpoint(endpoint)
    if state is None:
        raise PromotionError(f"endpoint {endpoint} is not deployed")
    return state


def endpoint_moved_on(
    backend: Backend, endpoint: str, challenger: str, evaluated_arn: str | None
) -> str | None:
    """Why ``endpoint`` no longer serves the package this execution evaluated as ``challenger``; None if it does.

    Between deploy and promote another execution may redeploy the endpoint (on SageMaker each step holds the
    endpoint lock only while it runs): promoting then would shift traffic to a package nobody evaluated.
    """
    if evaluated_arn is None:
        return None
    state = _describe(backend, endpoint)
    serving = next((v for v in state.variants if v.name == challenger), None)
    if serving is not None and serving.package_arn == evaluated_arn:
        return None
    now = "is gone" if serving is None else f"now serves {serving.package_arn or 'no registered package'}"
    return (
        f"endpoint {endpoint} changed after this execution deployed it: variant {challenger} {now}, "
        f"not the evaluated {evaluated_arn}; nothing shifted"
    )


def _weights(state: EndpointState) -> dict[str, float]:
    return {v.name: v.current_weight for v in state.variants if not v.shadow}


def _champion_only(state: EndpointState, champion: str) -> dict[str, float]:
    """Weights sending every request to ``champion`` (every other production variant at zero)."""
    return {v.name: (1.0 if v.name == champion else 0.0) for v in state.variants if not v.shadow}


def _step_weights(state: EndpointState, champion: str, challenger: str, percent: float) -> dict[str, float]:
    weights = {v.name: 0.0 for v in state.variants if not v.shadow}
    weights[champion] = (100.0 - percent) / 100.0
    weights[challenger] = percent / 100.0
    return weights


def _approval_description(fields: Mapping[str, Any], optional: Sequence[str]) -> str:
    """Compact one-line JSON within SageMaker's limit, dropping ``optional`` keys (in order) to fit."""
    data = {k: v for k, v in fields.items() if v is not None}
    text = json.dumps(data, separators=(",", ":"), default=str)
    for key in optional:
        if len(text) <= MAX_APPROVAL_DESCRIPTION:
            break
        data.pop(key, None)
        text = json.dumps(data, separators=(",", ":"), default=str)
    return text[:MAX_APPROVAL_DESCRIPTION]


# -- evidence from the upstream reports ----------------------------------------------------------------------


def _dataset_hashes(datasets: DatasetValidationReport) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for d in datasets.datasets:
        hashes[d.name] = d.sha256
    return hashes


def decision_evidence(inputs: PromotionInputs) -> dict[str, Any]:
    """The evidence of the decision, as recorded in the ledger and (compactly) in the approval description."""
    decision = inputs.decision
    primary = decision.primary
    first = decision.first_release
    challenger = inputs.registration.for_role("challenger")
    champion = inputs.registration.for_role("champion")
    return {
        "execution_id": inputs.execution_id,
        "decision": decision.decision,
        "reason": decision.reason,
        "what_would_settle_it": decision.what_would_settle_it,
        "mlflow_runs": {v.variant: v.mlflow_run_id for v in inputs.evaluation.variants},
        "logged_models": {a.variant: a.logged_model_id for a in inputs.registration.agents},
        "evaluation_dataset": {
            "name": inputs.evaluation.dataset_name,
            "sha256": inputs.evaluation.dataset_hash,
        },
        "datasets_sha256": _dataset_hashes(inputs.datasets),
        "primary": primary.model_dump(mode="json") if primary is not None else None,
        "first_release": first.model_dump(mode="json") if first is not None else None,
        "guardrails": [
            {"metric": g.metric, "status": g.status, "estimate": g.estimate, "ci": [g.ci_low, g.ci_high]}
            for g in decision.guardrails
        ],
        "error_rates": dict(decision.error_rates),
        "n_paired": decision.n_paired,
        "n_clusters": decision.n_clusters,
        "packages": {
            v.name: {"role": v.role, "arn": v.package_arn, "version": v.version}
            for v in inputs.deployed.variants
        },
        "challenger": _agent_evidence(challenger),
        "champion": _agent_evidence(champion),
    }


def _agent_evidence(agent: Any) -> dict[str, Any] | None:
    if agent is None:
        return None
    return {
        "variant": agent.variant,
        "package_arn": agent.package_arn,
        "package_version": agent.package_version,
        "registered_model_name": agent.registered_model_name,
        "registered_model_version": agent.registered_model_version,
        "prompt_uri": agent.prompt_uri,
        "inference": agent.inference.model_dump(mode="json"),
    }


def _ci_of(evidence: Mapping[str, Any]) -> list[float] | None:
    primary = evidence.get("primary") or evidence.get("first_release")
    if not isinstance(primary, Mapping):
        return None
    lo, hi = primary.get("ci_low"), primary.get("ci_high")
    return [round(float(lo), 4), round(float(hi), 4)] if lo is not None and hi is not None else None


# -- the progressive shift -----------------------------------------------------------------------------------


class _Promotion:
    """One release's actions and the report they add up to."""

    def __init__(
        self,
        config: PromotionConfig,
        backend: Backend,
        release: _Release,
        *,
        schedule: Sequence[float],
        progress: Any | None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.release = release
        self.schedule = list(schedule)
        self.progress = progress
        self.timeline: list[TimelineEvent] = []
        self.audit_seqs: list[int] = []
        self.approvals: list[ApprovalChange] = []
        self.aliases_moved = False
        self.resumed = False
        # What the shadow phase saw (or why it was skipped), for the promote entry; None without one.
        self.shadow_evidence: dict[str, Any] | None = None

    # -- records ------------------------------------------------------------------------------------------
    def audit(self, action: str, reason: str, evidence: Mapping[str, Any] | None = None) -> AuditEntry:
        entry = self.backend.append_audit(
            self.release.actor,
            action,
            self.release.subject,
            reason,
            evidence=dict(evidence or {}),
            execution_id=self.release.execution_id,
        )
        self.audit_seqs.append(entry.seq)
        return entry

    def event(
        self,
        phase: Phase,
        weights: Mapping[str, float],
        check: GuardCheck | None = None,
        note: str | None = None,
    ) -> TimelineEvent:
        ev = TimelineEvent(
            at=time.time(),
            phase=phase,
            weights=dict(weights),
            readings=dict(check.readings) if check else {},
            tripped=check.tripped if check else None,
            note=note,
        )
        self.timeline.append(ev)
        return ev

    def set_approval(self, status: ApprovalStatus, description: str) -> None:
        """Set the challenger package's approval (no-op without a package or when already so described)."""
        arn = self.release.challenger_arn
        if arn is None:
            return
        before = self.backend.get_package(arn)
        if before.approval_status == status and before.approval_description == description:
            return
        self.backend.update_approval(arn, status, description)
        self.approvals.append(
            ApprovalChange(
                variant=self.release.challenger,
                package_arn=arn,
                from_status=before.approval_status,
                to_status=status,
                description=description,
            )
        )
        logger.info("package=<%s>, status=<%s> | approval set", arn, status.value)

    def report(self, action: Action, reason: str, *, held: bool = False) -> PromotionReport:
        state = self.backend.describe_endpoint(self.release.endpoint)
        return PromotionReport(
            decision=self.release.decision,
            action=action,
            held=held,
            reason=reason,
            endpoint_name=self.release.endpoint,
            champion=self.release.champion,
            challenger=self.release.challenger,
            timeline=tuple(self.timeline),
            final_weights=_weights(state) if state is not None else {},
            audit_seqs=tuple(self.audit_seqs),
            approval_changes=tuple(self.approvals),
            aliases_moved=self.aliases_moved,
            resumed=self.resumed,
        )

    # -- registry outcomes ------------------------------------------------------------------------------
    def approve(self, audit_seq: int | None, live: Mapping[str, Any] | None) -> None:
        """Challenger package Approved with compact evidence; MLflow aliases moved when there is a version."""
        ev = self.release.evidence
        description = _approval_description(
            {
                "status": "Approved",
                "by": self.release.actor,
                "execution": self.release.execution_id,
                "audit_seq": audit_seq,
                "decision": self.release.decision,
                "ci": _ci_of(ev),
                "dataset_sha256": (ev.get("evaluation_dataset") or {}).get("sha256"),
                "schedule": self.schedule,
                "live": live,
                "runs": ev.get("mlflow_runs"),
                "reason": str(ev.get("reason", ""))[:300] or None,
            },
            optional=("runs", "live", "reason"),
        )
        self.set_approval(ApprovalStatus.APPROVED, description)
        self.move_aliases()

    def move_aliases(self) -> None:
        if self.release.registered_model is None:
            # A warning, not a silent skip: the registry now names a champion the MLflow aliases do not.
            logger.warning(
                "variant=<%s> | MLflow aliases not moved: no recorded decision names this variant's agent "
                "version (set the champion alias with MlflowClient.set_registered_model_alias if needed)",
                self.release.challenger,
            )
            return
        from agent_release.steps.register_agents import promote_aliases

        name, version = self.release.registered_model
        promote_aliases(name, version, tracking_uri=self.release.tracking_uri)
        self.aliases_moved = True
        logger.info("model=<%s>, version=<%s> | champion alias moved", name, version)

    def reject(self, reason: str, audit_seq: int | None) -> None:
        description = _approval_description(
            {
                "status": "Rejected",
                "by": self.release.actor,
                "execution": self.release.execution_id,
                "audit_seq": audit_seq,
                "reason": reason[:600],
            },
            optional=("reason",),
        )
        self.set_approval(ApprovalStatus.REJECTED, description)

    # -- the shift --------------------------------------------------------------------------------------
    def shift(self, traffic_runner: Callable[[], LiveTraffic | None]) -> PromotionReport:
        """Run shadow + canary steps; roll back on a trip; approve when every step stays green."""
        r = self.release
        state = _describe(self.backend, r.endpoint)
        names = {v.name for v in state.variants}
        for needed in (r.challenger, r.champion):
            if needed is not None and needed not in names:
                raise PromotionError(f"endpoint {r.endpoint} has no variant {needed}")
        if r.champion is None:
            return self.first_release(state)
        monitor = GuardMonitor(self.config.guards, champion=r.champion, challenger=r.challenger)
        traffic = traffic_runner()
        last_checks: list[GuardCheck] = []
        try:
            if traffic is not None:
                traffic.set_shares(state.traffic_shares())
                traffic.start()
            if self.config.shadow.enabled:
                check = self.shadow_phase(monitor, traffic)
                if check is not None and check.tripped:
                    return self.roll_back(check, "shadow", traffic)
            for percent in self.schedule:
                state = _describe(self.backend, r.endpoint)
                weights = _step_weights(state, r.champion, r.challenger, percent)
                state = self.backend.update_weights(r.endpoint, weights)
                since = time.time()
                if traffic is not None:
                    traffic.set_shares(state.traffic_shares())
                self.audit(
                    AUDIT_WEIGHTS,
                    f"canary step {percent:g}%: {r.challenger} {percent:g}%, {r.champion} {100 - percent:g}%",
                    {"percent": percent, "weights": weights, "schedule": self.schedule},
                )
                self.event("canary", weights, note=f"step {percent:g}%")
                logger.info(
                    "endpoint=<%s>, challenger=<%s>, percent=<%s> | canary step",
                    r.endpoint,
                    r.challenger,
                    percent,
                )
                check = self.bake(
                    monitor,
                    since,
                    self.config.bake_s,
                    f"canary {percent:g}%",
                    limit_s=self.config.step_bake_limit_s,
                )
                self.event("canary", weights, check)
                last_checks.append(check)
                if check.tripped:
                    return self.roll_back(check, f"canary {percent:g}%", traffic)
                if self.config.guards.unjudged == "rollback" and not self.judged(
                    check.readings.get(r.challenger)
                ):
                    return self.roll_back(
                        check, f"canary {percent:g}%", traffic, unjudged=time.time() - since
                    )
        except BaseException as exc:
            self.restore_after_error(exc)
            if isinstance(exc, Exception):
                restored = f"traffic restored to {r.champion}" if r.fallback is None else r.fallback_text
                raise PromotionError(
                    f"promotion of {r.challenger} failed mid-shift; {restored}: {_one_line(exc)}"
                ) from exc
            raise
        finally:
            if traffic is not None:
                traffic.stop()
        return self.complete(last_checks)

    def first_release(self, state: EndpointState) -> PromotionReport:
        """No champion: the challenger serves alone already; make sure of it, then approve."""
        r = self.release
        if state.traffic_shares().get(r.challenger, 0.0) < 1.0:
            weights = _champion_only(state, r.challenger)
            self.backend.update_weights(r.endpoint, weights)
            self.audit(
                AUDIT_WEIGHTS, f"first release: {r.challenger} takes all traffic", {"weights": weights}
            )
        state = _describe(self.backend, r.endpoint)
        self.event("complete", _weights(state), note="first release")
        entry = self.audit(
            AUDIT_PROMOTE,
            f"first release of {r.endpoint}: {r.challenger} approved",
            {**r.evidence, "first_release": True, "approval": "Approved"},
        )
        self.approve(entry.seq, None)
        return self.report("promoted", f"first release: {r.challenger} serves all traffic and is approved")

    def complete(self, checks: Sequence[GuardCheck]) -> PromotionReport:
        """Every step green: record the promotion, then approve and move aliases (re-done on resume)."""
        r = self.release
        state = _describe(self.backend, r.endpoint)
        self.event("complete", _weights(state))
        readings = [{k: v.model_dump(mode="json") for k, v in c.readings.items()} for c in checks]
        final = checks[-1].readings.get(r.challenger) if checks else None
        live = (
            {"error_rate": final.error_rate, "p95_ms": final.latency_p95_ms, "calls": final.invocations}
            if final is not None
            else None
        )
        # A step whose bake saw fewer challenger calls than min_invocations was not judged by the guards
        # (too few calls are noise): say so rather than call it green.
        unjudged = [
            percent
            for percent, check in zip(self.schedule, checks, strict=False)
            if not self.judged(check.readings.get(r.challenger))
        ]
        verdict = (
            f"no guard tripped; step {'/'.join(f'{p:g}' for p in unjudged)}% saw fewer than {self.min_calls} "
            "challenger calls, too few for the guards to judge"
            if unjudged
            else "every guard green"
        )
        if self.config.guards.max_latency_p95_ms is None:
            # Only the guards that ran may be called green: without a p95 limit latency was not watched.
            verdict += " (error rate guarded; latency not: promote.guards.max_latency_p95_ms is not set)"
        entry = self.audit(
            AUDIT_PROMOTE,
            f"{r.challenger} took 100% of {r.endpoint} over {self.schedule} with {verdict}",
            {
                "unjudged_steps": unjudged,
                **r.evidence,
                "schedule": self.schedule,
                "bake_s": self.config.bake_s,
                "guards": self.config.guards.model_dump(mode="json"),
                "guard_readings": readings,
                "shadow": self.shadow_evidence,
                "weights": _weights(state),
                "approval": "Approved",
                "aliases": list(r.registered_model) if r.registered_model else None,
            },
        )
        self.approve(entry.seq, live)
        return self.report(
            "promoted",
            f"{r.challenger} serves 100% after steps {'/'.join(f'{p:g}' for p in self.schedule)}% "
            f"with {verdict}; package Approved",
        )

    def bake(
        self,
        monitor: GuardMonitor,
        since: float,
        seconds: float,
        label: str,
        *,
        limit_s: float | None = None,
    ) -> GuardCheck:
        """Watch the guards for ``seconds`` from ``since``; return at the first trip or at the end.

        With ``limit_s`` the bake goes on past ``seconds`` (up to ``limit_s``) while the challenger has fewer
        than ``guards.min_invocations`` calls: a step the guards cannot read yet is given time, not a pass.
        """
        monitor.start_window()
        update = None
        bake_progress = getattr(self.progress, "bake_progress", None)
        if callable(bake_progress):
            update = bake_progress(label, seconds)
        limit = max(limit_s if limit_s is not None else seconds, seconds)
        poll = min(POLL_INTERVAL_S, seconds / 2)
        start = time.monotonic()
        while True:
            elapsed = time.monotonic() - start
            deadline = seconds if elapsed < seconds else limit
            time.sleep(max(min(poll, deadline - elapsed), 0.0))
            check = monitor.look(self.backend.variant_metrics(self.release.endpoint, since))
            elapsed = time.monotonic() - start
            reading = check.readings.get(self.release.challenger)
            if update is not None:
                text = f"{reading.invocations} calls, {reading.errors} errors" if reading else "0 calls"
                waiting = elapsed >= seconds and not self.judged(reading) and limit > seconds
                if waiting:
                    text += f"; baking on until {self.min_calls} calls (up to {limit:g}s)"
                update(elapsed, limit if waiting else seconds, text)
            if check.tripped or elapsed >= limit or (elapsed >= seconds and self.judged(reading)):
                return check

    @property
    def min_calls(self) -> int:
        """Challenger calls a bake needs before the guards judge it."""
        return max(self.config.guards.min_invocations, 1)

    def judged(self, reading: GuardReading | None) -> bool:
        """Whether the guards could judge a bake whose challenger reading is ``reading``."""
        return reading is not None and reading.invocations >= self.min_calls

    def roll_back(
        self,
        check: GuardCheck,
        where: str,
        traffic: LiveTraffic | None,
        *,
        unjudged: float | None = None,
    ) -> PromotionReport:
        """Champion back to all traffic now, with a ledger entry; a guard trip Rejects the package.

        ``unjudged`` (the seconds the step baked) says no guard tripped but the step never had
        ``min_invocations`` challenger calls: the canary cannot vouch for the challenger, yet nothing speaks
        against it either, so its package is left pending approval for ``agent-release promote``.
        """
        r = self.release
        state = _describe(self.backend, r.endpoint)
        before = _weights(state)
        weights = r.fallback_weights(state)
        state = self.backend.update_weights(r.endpoint, weights)
        if traffic is not None:
            traffic.set_shares(state.traffic_shares())
        reading = check.readings.get(r.challenger)
        calls = reading.invocations if reading is not None else 0
        cause = (
            check.tripped
            if unjudged is None
            else f"unjudged: {calls} challenger calls in {unjudged:.0f} s, fewer than min_invocations "
            f"{self.min_calls}"
        )
        why = f"{where}: {cause}"
        # A package approved before this promotion (the champion promoted back) is not this canary's to
        # reject or to send back to pending approval: the rollback is recorded, the approval stays.
        approved_before = self.package_status() == ApprovalStatus.APPROVED
        approval = (
            "Approved" if approved_before else "Rejected" if unjudged is None else "PendingManualApproval"
        )
        self.event("rollback", weights, check, note=None if unjudged is None else cause)
        logger.warning(
            "endpoint=<%s>, challenger=<%s>, why=<%s> | rolled back", r.endpoint, r.challenger, why
        )
        entry = self.audit(
            AUDIT_ROLLBACK,
            f"{'guard tripped' if unjudged is None else 'guards could not judge'} at {why}; "
            f"{r.fallback_text}",
            {
                **r.evidence,
                "trigger": TRIGGER_GUARD if unjudged is None else TRIGGER_UNJUDGED,
                "why": cause,
                "where": where,
                "weights_before": before,
                "weights_after": weights,
                "guard_readings": {k: v.model_dump(mode="json") for k, v in check.readings.items()},
                "guards": self.config.guards.model_dump(mode="json"),
                "approval": approval,
            },
        )
        back = f"traffic back to {r.champion}" if r.fallback is None else r.fallback_text
        if approved_before:
            return self.report("rolled_back", f"{why}; {back}, package stays Approved")
        if unjudged is None:
            self.reject(f"rolled back at {why}", entry.seq)
            return self.report("rolled_back", f"{why}; {back}, package Rejected")
        self.hold_unjudged(entry)
        return self.report(
            "rolled_back",
            f"{why}; {back}, package left pending approval: run "
            f"`agent-release promote {r.challenger}` when the endpoint has traffic",
        )

    def package_status(self) -> ApprovalStatus | None:
        """The approval of the package being promoted (None without one)."""
        arn = self.release.challenger_arn
        return None if arn is None else self.backend.get_package(arn).approval_status

    def hold_for_approval(self, entry: AuditEntry) -> None:
        """After a manual-mode ``decision`` entry: package PendingManualApproval, its description pointing at
        the entry, the gate's interval and the command that continues (also when a resume re-applies it)."""
        r = self.release
        dataset = entry.evidence.get("evaluation_dataset")
        self.set_approval(
            ApprovalStatus.PENDING,
            _approval_description(
                {
                    "status": "PendingManualApproval",
                    "gate": "promote",
                    "execution": entry.execution_id,
                    "audit_seq": entry.seq,
                    "ci": _ci_of(entry.evidence),
                    "dataset_sha256": dataset.get("sha256") if isinstance(dataset, Mapping) else None,
                    "next": f"agent-release promote {r.challenger}",
                    "runs": entry.evidence.get("mlflow_runs"),
                },
                optional=("runs",),
            ),
        )

    def hold_unjudged(self, entry: AuditEntry) -> None:
        """After an unjudged rollback: package PendingManualApproval, pointing at the ledger entry."""
        r = self.release
        self.set_approval(
            ApprovalStatus.PENDING,
            _approval_description(
                {
                    "status": "PendingManualApproval",
                    "rolled_back": TRIGGER_UNJUDGED,
                    "execution": r.execution_id,
                    "audit_seq": entry.seq,
                    "reason": entry.reason,
                    "next": f"agent-release promote {r.challenger}",
                },
                optional=("reason",),
            ),
        )

    def restore_after_error(self, exc: BaseException) -> None:
        """Champion back to all traffic after an unexpected failure (best effort; never masks ``exc``)."""
        r = self.release
        if r.champion is None:
            return
        try:
            state = _describe(self.backend, r.endpoint)
            weights = r.fallback_weights(state)
            self.backend.update_weights(r.endpoint, weights)
            failure = _failure_text(exc)
            self.event("rollback", weights, note=f"error: {failure}")
            self.audit(
                AUDIT_ROLLBACK,
                f"promotion failed mid-shift ({failure}); {r.fallback_text}",
                {"trigger": TRIGGER_ERROR, "error": failure, "weights_after": weights},
            )
        except Exception:
            logger.exception(
                "endpoint=<%s> | could not restore the champion after a failed shift", r.endpoint
            )

    def shadow_phase(self, monitor: GuardMonitor, traffic: LiveTraffic | None) -> GuardCheck | None:
        """Mirror ``sample_percent`` of requests to the challenger as a shadow variant, bake, check it.

        Skipped (None) when the backend cannot deploy the shadow. The challenger always comes back as a
        production variant at weight 0, whatever happens in the bake.
        """
        r = self.release
        shadow = self.config.shadow
        state = _describe(self.backend, r.endpoint)
        mirrored = [
            _spec_of(v, shadow=v.name == r.challenger, sample=shadow.sample_percent) for v in state.variants
        ]
        try:
            shadow_state = self.backend.deploy_endpoint(r.endpoint, mirrored)
        except (BackendError, NotImplementedError) as exc:
            self.shadow_evidence = {"skipped": _one_line(exc)}
            self.event("shadow", _weights(state), note=f"shadow phase skipped: {_one_line(exc)}")
            logger.info("endpoint=<%s>, reason=<%s> | shadow phase skipped", r.endpoint, _one_line(exc))
            return None
        try:
            since = time.time()
            if traffic is not None:
                traffic.set_shares(shadow_state.traffic_shares())
            self.audit(
                AUDIT_SHADOW,
                f"shadow phase: {shadow.sample_percent:g}% of requests mirrored to {r.challenger}",
                {"sample_percent": shadow.sample_percent, "bake_s": shadow.bake_s},
            )
            self.event("shadow", _weights(shadow_state), note=f"mirroring {shadow.sample_percent:g}%")
            check = self.bake(monitor, since, shadow.bake_s, "shadow")
            self.event("shadow", _weights(shadow_state), check)
            # Its readings are evidence of the promotion too: the shadow entry above is written before them.
            self.shadow_evidence = {
                "sample_percent": shadow.sample_percent,
                "bake_s": shadow.bake_s,
                "judged": self.judged(check.readings.get(r.challenger)),
                "guard_readings": {k: v.model_dump(mode="json") for k, v in check.readings.items()},
            }
            return check
        finally:
            restored = [
                _spec_of(v, shadow=False, sample=0.0, weight=0.0 if v.name == r.challenger else None)
                for v in _describe(self.backend, r.endpoint).variants
            ]
            self.backend.deploy_endpoint(r.endpoint, restored)


def _spec_of(v: VariantState, *, shadow: bool, sample: float, weight: float | None = None) -> VariantSpec:
    """A deploy spec reproducing variant ``v`` (as shadow or not)."""
    return VariantSpec(
        name=v.name,
        model=v.model,
        package_arn=v.package_arn,
        initial_weight=(0.0 if shadow else v.current_weight) if weight is None else weight,
        shadow=shadow,
        shadow_sample_percent=sample if shadow else 0.0,
        faults=v.faults,
    )


def _traffic_factory(
    config: PromotionConfig,
    release: _Release,
    system_prompt: str,
    tools_factory: Callable[[], list[Any]],
    live_inputs: Sequence[str],
) -> Callable[[], LiveTraffic | None]:
    def make() -> LiveTraffic | None:
        live = config.live_traffic
        if not live.enabled or not live_inputs:
            return None
        runner = AgentConversations(
            release.endpoint,
            system_prompt,
            tools_factory(),
            inference=release.inference,
            region=release.region,
            logged_models=release.logged_models,
        )
        runner.warm_up(
            [v for v in (release.champion, release.challenger) if v is not None],
            converse_with=release.champion,
            user_input=live_inputs[0],
        )
        return LiveTraffic(
            runner, live_inputs, requests_per_s=live.requests_per_s, concurrency=live.concurrency
        )

    return make


def _entries_of(backend: Backend, execution_id: str | None, subject: str) -> list[AuditEntry]:
    if execution_id is None:
        return []
    return [e for e in backend.list_audit() if e.execution_id == execution_id and e.subject == subject]


def _terminal_entry(entries: Sequence[AuditEntry], allowed: Mapping[str, Action]) -> AuditEntry | None:
    for e in reversed(entries):
        if e.action == AUDIT_ROLLBACK and e.evidence.get("trigger") not in (TRIGGER_GUARD, TRIGGER_UNJUDGED):
            continue  # a rollback after an error is not an outcome: the step failed and may run again
        if e.action in allowed:
            return e
    return None


def _resume_done(promotion: _Promotion, entry: AuditEntry) -> PromotionReport:
    """The ledger says this execution already acted: re-apply its registry outcome, do not act again."""
    action = _TERMINAL[entry.action]
    promotion.resumed = True
    promotion.audit_seqs.append(entry.seq)
    if action == "promoted":
        promotion.approve(entry.seq, None)
    elif entry.action == AUDIT_ROLLBACK and entry.evidence.get("trigger") == TRIGGER_UNJUDGED:
        promotion.hold_unjudged(entry)
    elif entry.action == AUDIT_DECISION:
        promotion.hold_for_approval(entry)
    elif action in ("rolled_back", "rejected"):
        promotion.reject(entry.reason, entry.seq)
    logger.info("execution=<%s>, action=<%s> | already done per audit ledger", entry.execution_id, action)
    return promotion.report(
        action, f"already done (audit #{entry.seq}): {entry.reason}", held=action == "held_for_approval"
    )


# -- entry points --------------------------------------------------------------------------------------------


def promote_challenger(
    config: PromotionConfig,
    inputs: PromotionInputs,
    backend: Backend,
    *,
    tools_factory: Callable[[], list[Any]],
    progress: Any | None = None,
) -> PromotionReport:
    """Act on ``inputs.decision`` (see the module docstring); idempotent across resumes via the ledger."""
    decision = inputs.decision
    deployed = inputs.deployed
    challenger_agent = inputs.registration.for_role("challenger")
    registered = (
        (challenger_agent.registered_model_name, str(challenger_agent.registered_model_version))
        if challenger_agent is not None and challenger_agent.registered_model_version is not None
        else None
    )
    release = _Release(
        endpoint=deployed.endpoint_name,
        challenger=deployed.challenger.name if deployed.challenger else decision.challenger_variant,
        champion=deployed.champion.name if deployed.champion else None,
        challenger_arn=deployed.challenger.package_arn if deployed.challenger else None,
        execution_id=inputs.execution_id,
        actor=inputs.actor,
        decision=decision.decision,
        evidence=decision_evidence(inputs),
        registered_model=registered,
        tracking_uri=inputs.registration.tracking_uri,
        inference=challenger_agent.inference if challenger_agent else InferenceConfig(),
        region=inputs.region,
        logged_models={a.variant: a.logged_model_id for a in inputs.registration.agents},
    )
    promotion = _Promotion(config, backend, release, schedule=config.schedule, progress=progress)
    prior = _entries_of(backend, inputs.execution_id, release.subject)
    done = _terminal_entry(prior, _TERMINAL)
    if done is not None:
        return _resume_done(promotion, done)

    if deployed.challenger is None:
        promotion.audit(AUDIT_NO_CHANGE, "no challenger deployed; nothing to promote", release.evidence)
        return promotion.report("no_change", "no challenger deployed; nothing to promote")
    if decision.decision == "reject":
        entry = promotion.audit(
            AUDIT_REJECT, f"gate rejected {release.challenger}: {decision.reason}", release.evidence
        )
        promotion.reject(decision.reason, entry.seq)
        return promotion.report("rejected", decision.reason)
    if decision.decision == "inconclusive":
        settle = decision.what_would_settle_it or "more evidence"
        promotion.audit(
            AUDIT_NO_CHANGE, f"inconclusive: {decision.reason}; would settle it: {settle}", release.evidence
        )
        return promotion.report("no_change", f"inconclusive: {decision.reason}; {settle}")
    moved = endpoint_moved_on(backend, release.endpoint, release.challenger, release.challenger_arn)
    if moved is not None:
        promotion.audit(
            AUDIT_NO_CHANGE, moved, {**release.evidence, "evaluated_package": release.challenger_arn}
        )
        return promotion.report("no_change", moved)
    if config.mode == "manual":
        entry = promotion.audit(
            AUDIT_DECISION,
            f"gate says promote {release.challenger}; held for manual approval (mode: manual)",
            {**release.evidence, "mode": "manual"},
        )
        promotion.hold_for_approval(entry)
        return promotion.report(
            "held_for_approval",
            f"gate says promote; held for approval: run `agent-release promote {release.challenger}`",
            held=True,
        )
    if any(e.action == AUDIT_WEIGHTS for e in prior):
        overtaken = acted_on_since(
            backend.list_audit(), release.endpoint, inputs.execution_id, max(e.seq for e in prior)
        )
        if overtaken is not None:
            # The release manager promoted or rolled back after this shift stopped: walking the schedule
            # again would undo that (e.g. put 90% back on the variant they rolled back to, or re-promote
            # the one they rolled back).
            reason = (
                f"after this execution's shift stopped, {overtaken.actor} acted on {release.endpoint} "
                f"(audit #{overtaken.seq}: {overtaken.action}); not shifting again"
            )
            promotion.audit(AUDIT_NO_CHANGE, reason, release.evidence)
            return promotion.report("no_change", reason)
        promotion.resumed = True
        promotion.audit(
            AUDIT_RESUME, "a previous attempt stopped mid-shift; restarting the schedule from its first step"
        )
    traffic = _traffic_factory(config, release, inputs.system_prompt, tools_factory, inputs.live_inputs)
    return promotion.shift(traffic)


def current_champion(
    backend: Backend, state: EndpointState, *, exclude: str | None = None, champion_name: str = "champion"
) -> str | None:
    """The champion of ``state``: the production variant whose Approved package was promoted last (see
    :func:`~agent_release.steps.backend.last_promoted`), else the variant named ``champion_name`` (the
    configured ``deploy.champion_variant_name``); ``exclude`` is never chosen. None when neither exists."""
    candidates = [v for v in state.variants if not v.shadow and v.name != exclude]
    packages = {v.name: backend.get_package(v.package_arn) for v in candidates if v.package_arn is not None}
    champion = last_promoted(packages)
    if champion is not None:
        return champion
    if any(v.name == champion_name for v in candidates):
        return champion_name
    return None


def checked_schedule(schedule: Sequence[float]) -> list[float]:
    """``schedule`` if it obeys pipeline.yaml's ``promote.schedule`` rules, else :class:`PromotionError`.

    The message is the rule that failed, without pydantic's "Value error, " prefix, e.g.
    ``schedule [50.0, 20.0]: schedule must increase strictly``. The CLI checks ``--schedule`` with it before
    anything is read, so a bad schedule is a usage error, not a refusal after the config and state load.
    """
    try:
        return PromotionConfig(schedule=list(schedule)).schedule
    except ValidationError as exc:
        error = exc.errors()[0]
        reason = error.get("ctx", {}).get("error") or error["msg"]
        raise PromotionError(f"schedule {list(schedule)}: {reason}") from None


def promote_variant(
    config: PromotionConfig,
    backend: Backend,
    endpoint_name: str,
    variant: str,
    *,
    actor: str,
    system_prompt: str,
    tools_factory: Callable[[], list[Any]],
    live_inputs: Sequence[str] = (),
    schedule: Sequence[float] | None = None,
    execution_id: str | None = None,
    progress: Any | None = None,
) -> PromotionReport:
    """Release manager: shift ``variant`` to 100% with the same guarded schedule (continues a manual hold).

    The evidence comes from the latest entry that left the variant pending approval in the ledger (a
    manual-mode ``decision``, or a ``rollback`` of a canary the guards could not judge), whose execution id
    is used when ``execution_id`` is None. Refuses a Rejected package. The caller holds
    ``backend.lock(f"endpoint:{endpoint_name}", owner)``.
    """
    if schedule is not None:
        schedule = checked_schedule(schedule)
    state = _describe(backend, endpoint_name)
    try:
        target = state.variant(variant)
    except KeyError:
        known = ", ".join(v.name for v in state.variants)
        raise PromotionError(
            f"endpoint {endpoint_name} has no variant {variant} (variants: {known})"
        ) from None
    if target.shadow:
        raise PromotionError(f"variant {variant} is a shadow variant; it cannot take live traffic")
    if target.package_arn is not None:
        package = backend.get_package(target.package_arn)
        if package.approval_status == ApprovalStatus.REJECTED:
            raise PromotionError(
                f"variant {variant}'s package {package.arn} was Rejected; register a new version"
            )
    baseline = _serving_other(state, variant)
    subject = f"{endpoint_name}/{variant}"
    ledger = backend.list_audit()
    held = next(
        (
            e
            for e in reversed(ledger)
            if _holds_for_approval(e)
            and e.subject == subject
            and (execution_id is None or e.execution_id == execution_id)
        ),
        None,
    )
    evidence: dict[str, Any] = (
        {k: v for k, v in held.evidence.items() if held.action == AUDIT_DECISION or k not in _ROLLBACK_KEYS}
        if held is not None
        else {"note": "no pipeline decision on record"}
    )
    evaluated = _evaluated_package(evidence, variant)
    if held is not None and evaluated is not None and evaluated != target.package_arn:
        # A later deploy put another package on the variant: the held decision is not evidence for it.
        raise PromotionError(
            f"variant {variant} now serves {target.package_arn}, not {evaluated}, which the held decision "
            f"(audit #{held.seq}) evaluated; nothing was changed. Run the pipeline to evaluate the new package"
        )
    execution_id = execution_id or (held.execution_id if held is not None else None)
    recorded = evidence.get("challenger")
    agent: Mapping[str, Any] = recorded if isinstance(recorded, Mapping) else {}
    if held is None:
        # No held decision (e.g. `promote champion` back after a full promotion): the agent serving the
        # variant is the one the newest ledger entry recorded for this variant and package. Without it the
        # `champion` alias stayed on the agent version just demoted.
        agent = _recorded_agent(ledger, variant, target.package_arn)
        if agent:
            evidence = {**evidence, "challenger": dict(agent)}
    version = agent.get("registered_model_version")
    # The baseline a failed shift falls back to must be one a release approved; else (``promote champion``
    # from a split with a pending challenger) the weights as found are restored, not the baseline alone.
    baseline_state = next((v for v in state.variants if v.name == baseline), None)
    baseline_approved = (
        baseline_state is not None
        and baseline_state.package_arn is not None
        and backend.get_package(baseline_state.package_arn).approval_status == ApprovalStatus.APPROVED
    )
    release = _Release(
        endpoint=endpoint_name,
        challenger=variant,
        champion=baseline,
        challenger_arn=target.package_arn,
        execution_id=execution_id,
        actor=actor,
        decision="promote",
        evidence={**evidence, "requested_by": actor},
        registered_model=(str(agent["registered_model_name"]), str(version)) if version is not None else None,
        tracking_uri=None,
        inference=InferenceConfig.model_validate(agent["inference"])
        if agent.get("inference")
        else InferenceConfig(),
        # The pipeline signs for agent.region; a manual promote has no config at hand, so it signs for the
        # region the command's AWS environment names.
        region=environment_region(),
        logged_models=_recorded_logged_models(evidence),
        fallback=None if baseline is None or baseline_approved else _weights(state),
    )
    steps = _steps_from_current_share(schedule or config.schedule, state, variant)
    promotion = _Promotion(config, backend, release, schedule=steps, progress=progress)
    done = _terminal_entry(_entries_of(backend, execution_id, subject), {AUDIT_PROMOTE: "promoted"})
    if done is not None and baseline is None:
        return _resume_done(promotion, done)
    if done is not None:
        # Promoted once, then traffic moved away (e.g. the release manager promoted the champion back):
        # "already done" would report a promotion the endpoint no longer shows, and re-approve the package.
        raise PromotionError(
            f"execution {execution_id}'s decision for {variant} was promoted already (audit #{done.seq}), and "
            f"{variant} no longer serves all traffic; nothing was changed. A new release needs a new run"
        )
    if baseline is None:
        raise PromotionError(
            f"variant {variant} already serves all of {endpoint_name}'s traffic; nothing to shift"
        )
    traffic = _traffic_factory(config, release, system_prompt, tools_factory, live_inputs)
    return promotion.shift(traffic)


def _steps_from_current_share(schedule: Sequence[float], state: EndpointState, variant: str) -> list[float]:
    """The steps of ``schedule`` at or above ``variant``'s current share of traffic.

    A manual promotion starts from whatever the endpoint serves (an A/B split, a shift that died half-way).
    Walking the schedule from its first step would first take traffic *away* from the variant being
    promoted and give it to the baseline, which may be an unapproved challenger: promoting the champion
    from 50/50 would send 90% of traffic to the challenger at a 10% step. The step equal to the current
    share is kept, so that share is baked and judged before it grows.
    """
    share = state.traffic_shares().get(variant, 0.0) * 100.0
    return [p for p in schedule if p >= share - 1e-9] or [100.0]


def _recorded_agent(ledger: Sequence[AuditEntry], variant: str, package_arn: str | None) -> Mapping[str, Any]:
    """The agent evidence (``_agent_evidence``) the newest entry of ``ledger`` recorded for ``variant``
    serving ``package_arn``, as champion or challenger; empty when no entry did."""
    for entry in reversed(ledger):
        for role in ("challenger", "champion"):
            agent = entry.evidence.get(role)
            if (
                isinstance(agent, Mapping)
                and agent.get("variant") == variant
                and agent.get("package_arn") == package_arn
                and agent.get("registered_model_version") is not None
            ):
                return agent
    return {}


def _holds_for_approval(entry: AuditEntry) -> bool:
    """Whether ``entry`` left its challenger pending approval: a manual-mode decision or an unjudged rollback."""
    return entry.action == AUDIT_DECISION or (
        entry.action == AUDIT_ROLLBACK and entry.evidence.get("trigger") == TRIGGER_UNJUDGED
    )


def _serving_other(state: EndpointState, variant: str) -> str | None:
    """The production variant other than ``variant`` that serves the most traffic; None if none serves any.

    It is the baseline a manual promotion shifts away from: never a variant at 0%, which would hand most of
    the traffic to a variant nobody chose (e.g. an unapproved challenger) at the first canary step.
    """
    others = [v for v in state.variants if not v.shadow and v.name != variant and v.current_weight > 0]
    return max(others, key=lambda v: v.current_weight).name if others else None


class NothingToRollBack(PromotionError):
    """The champion already serves all of the endpoint's traffic."""


def rollback_endpoint(
    backend: Backend, endpoint_name: str, *, actor: str, reason: str, champion_name: str = "champion"
) -> EndpointState:
    """Release manager: the champion (see :func:`current_champion`; ``champion_name`` is the configured
    champion variant name, its fallback) takes 100% now, and a shadow variant left mirroring requests (a
    shadow phase killed before it ended) is made a production variant at 0% again; recorded in the ledger.

    When the champion already serves everything and no shadow is left, the ledger is checked against the
    endpoint: if this endpoint's newest traffic entry is an unclosed canary step whose weights are not the
    endpoint's (a rollback killed between moving the weights and recording them), the weights as found are
    recorded as this rollback's; otherwise :class:`NothingToRollBack` is raised, writing nothing.

    Raises :class:`PromotionError` when the endpoint does not exist or no champion can be told.
    """
    state = _describe(backend, endpoint_name)
    champion = current_champion(backend, state, champion_name=champion_name)
    if champion is None:
        raise PromotionError(
            f"endpoint {endpoint_name} has no variant with an Approved package nor one named '{champion_name}'"
        )
    before = _weights(state)
    weights = _champion_only(state, champion)
    shadows = sorted(v.name for v in state.variants if v.shadow)
    evidence: dict[str, Any] = {"trigger": "manual", "weights_before": before, "champion": champion}
    if before == weights and not shadows:
        unrecorded = _unclosed_step(backend.list_audit(), endpoint_name, before)
        if unrecorded is None:
            # After a full promotion the new champion serves everything: going back to the model it replaced
            # is a promote of that variant (guarded, step by step), which the line names.
            others = sorted(name for name in weights if name != champion)
            back = f"; to serve {others[0]} again, `agent-release promote {others[0]}`" if others else ""
            raise NothingToRollBack(
                f"nothing to roll back: {champion} already serves all of {endpoint_name}'s traffic{back}"
            )
        after = state
        what = (
            f"{champion} already served 100%, which the ledger did not show (its last traffic entry for the "
            f"endpoint, audit #{unrecorded.seq}, is a canary step): recorded now"
        )
        evidence |= {"weights_before": unrecorded.evidence.get("weights"), "unrecorded_since": unrecorded.seq}
    elif shadows:
        # The shadow phase's own clean-up, which the kill skipped: every variant a production variant again.
        after = backend.deploy_endpoint(
            endpoint_name,
            [_spec_of(v, shadow=False, sample=0.0, weight=weights.get(v.name, 0.0)) for v in state.variants],
        )
        what = f"{champion} back to 100%; {', '.join(shadows)} no longer mirrored"
        evidence |= {"shadows_removed": shadows}
    else:
        after = backend.update_weights(endpoint_name, weights)
        what = f"{champion} back to 100%"
    backend.append_audit(
        actor,
        AUDIT_ROLLBACK,
        f"{endpoint_name}/{champion}",
        f"manual rollback: {reason}; {what}",
        evidence={**evidence, "weights_after": _weights(after)},
    )
    logger.info("endpoint=<%s>, champion=<%s>, actor=<%s> | rolled back", endpoint_name, champion, actor)
    return after


def _unclosed_step(
    ledger: Sequence[AuditEntry], endpoint_name: str, weights: Mapping[str, float]
) -> AuditEntry | None:
    """The newest traffic entry of ``endpoint_name`` in ``ledger`` when it is a canary step (no rollback or
    promote closed the shift) that recorded other weights than ``weights``; None otherwise."""
    prefix = f"{endpoint_name}/"
    for entry in reversed(ledger):
        if entry.subject.startswith(prefix) and entry.action in (
            AUDIT_WEIGHTS,
            AUDIT_ROLLBACK,
            AUDIT_PROMOTE,
        ):
            recorded = entry.evidence.get("weights")
            if (
                entry.action == AUDIT_WEIGHTS
                and isinstance(recorded, Mapping)
                and dict(recorded) != dict(weights)
            ):
                return entry
            return None
    return None
