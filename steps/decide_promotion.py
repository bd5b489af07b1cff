"""The decision step: promote, reject or stay inconclusive, from a paired and clustered comparison.

``decide_promotion(config, evaluation)`` reads the per-case rows of an :class:`EvaluationReport`, compares
challenger with champion on the primary metric (mean per-case difference ``d``, SE clustered by the case's
cluster key, :mod:`agent_release.steps.paired_stats`) and checks each guardrail for non-inferiority.

Every bound below is one-sided at level ``alpha`` (the ends of the two-sided ``1 - 2 * alpha`` interval):
the chance of promoting a challenger that is not better by ``min_improvement`` is at most ``alpha``.
Promotion needs every guardrail to hold as well (an intersection-union test, so no multiplicity correction
is needed for that guarantee); each "guardrail violated" rejection is a test at ``alpha`` of its own.

Rows are turned into per-case values like this:

- Repeats of a case are averaged first (the case is the unit; repeats only reduce its noise).
- An errored row keeps any score it carries. A missing score counts as a failure (0.0) when the scorer is
  binary (all its observed values are 0/1); for other scorers the errored repeat is left out. Errors are
  never silently dropped: they are their own guardrail (``error``) and bounded by ``max_error_rate``.
- Built-in metrics: ``error`` (1.0 for an errored row), ``latency_s`` (errored rows excluded: a fast
  failure must not look like a speed-up), ``cost``, ``input_tokens``, ``output_tokens`` (a row, errored or
  not, whose model reported no token usage is left out: its cost is unknown, and a failure before the first
  answer must not look like a saving), ``retries``. Any other name is looked up in ``CaseResult.scores``;
  ``None`` means "not applicable" and is left out.

The rule, checked top to bottom (L, U: one-sided lower and upper bounds of the primary ``d``; m:
``min_improvement``):

====  ================================================================  ============
step  condition                                                         decision
====  ================================================================  ============
1     challenger errored on more than ``max_error_rate`` of its rows    reject
      (and the champion did not)
2     no champion rows (first release): see below                       any
3     champion errored on more than ``max_error_rate`` of its rows      inconclusive
      (whatever the challenger did)
4     fewer than ``min_completed_cases`` paired completed cases, or     inconclusive
      fewer pairs than that with a primary score on both sides
5     U < m (worse than the champion, or better by less than m)         reject
6     a guardrail's whole interval lies beyond its margin               reject
7     L > m and every guardrail held                                    promote
8     anything else (an interval straddles m or a margin)               inconclusive
====  ================================================================  ============

A challenger that errors a lot is rejected (it would fail users), while a champion that errors a lot makes
the comparison meaningless, so that is inconclusive. When both do, the cause is most likely shared (the
endpoint, a timeout too short for either): that is inconclusive too, rather than a rejection that would
mark the challenger's package ``Rejected`` for what the setup did. Too little data is never evidence against
anyone.

First release (step 2: no champion to compare with): the challenger's clustered mean of the primary metric
must have its lower bound above ``first_release_min_primary`` (and at least ``min_completed_cases`` completed
cases with a primary score); an upper bound below it rejects; otherwise inconclusive. The default threshold,
0.0, asks only that the challenger be measurably better than nothing: set it to the bar a first release must
clear (the demo never meets this rule, as its training step approves a bootstrap champion first).
Guardrails need a champion and are skipped.

For inconclusive decisions ``what_would_settle_it`` uses :mod:`agent_release.steps.power` to say how many
more clusters would make the minimum detectable effect as small as the observed distance to the threshold.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent_release.steps.backend import Frozen
from agent_release.steps.evaluation_records import CaseResult, EvaluationReport, Role, usage_reported
from agent_release.steps.paired_stats import (
    Estimate,
    McNemarResult,
    PairedComparison,
    StatsInputError,
    average_repeats,
    clustered_mean,
    discordant_pairs,
    mcnemar_exact,
    paired_differences,
)
from agent_release.steps.power import (
    MdeReport,
    clusters_needed,
    estimate_variance_components,
    format_effect,
    minimum_detectable_effect,
)

logger = logging.getLogger(__name__)

Decision = Literal["promote", "reject", "inconclusive"]
GuardrailStatus = Literal["held", "violated", "unresolved"]

# Metrics read from CaseResult fields rather than from its scores dict.
COUNTED_FIELDS = ("cost", "input_tokens", "output_tokens", "retries")
# Metrics that exist only when the model reports its token usage (see scorers.usage_reported).
USAGE_METRICS = frozenset({"cost", "input_tokens", "output_tokens", "tokens"})


class DecisionInputError(ValueError):
    """The evaluation cannot be decided on as given (e.g. no challenger rows, inconsistent clusters)."""


# Upper bounds no real configuration reaches; beyond them a typo would make the gate unreachable or endless.
MAX_CASES = 1_000_000
MAX_BOOTSTRAP_RESAMPLES = 100_000


class GuardrailSpec(BaseModel):
    """A metric the challenger must not make worse by more than ``margin`` (non-inferiority)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str = Field(description="Scorer name, or one of error, latency_s, cost, input_tokens, ...")
    direction: Literal["lower_is_better", "higher_is_better"] = Field(
        description="Which way is better for this metric."
    )
    margin: float = Field(
        ge=0.0,
        allow_inf_nan=False,
        description="Non-inferiority margin: the largest tolerated worsening, in the metric's units (finite).",
    )
    statistic: Literal["mean", "p95"] = Field(
        default="mean", description="Compare per-case means, or the 95th percentiles of the two variants."
    )
    method: Literal["t", "bootstrap"] = Field(
        default="bootstrap", description="Clustered t interval, or cluster bootstrap (for skewed metrics)."
    )

    @model_validator(mode="after")
    def _p95_needs_bootstrap(self) -> GuardrailSpec:
        if self.statistic == "p95" and self.method != "bootstrap":
            raise ValueError(f"guardrail {self.metric!r}: statistic 'p95' needs method 'bootstrap'")
        return self


DEFAULT_GUARDRAILS = (
    GuardrailSpec(metric="latency_s", direction="lower_is_better", margin=0.5, statistic="p95"),
    GuardrailSpec(metric="cost", direction="lower_is_better", margin=0.001),
    GuardrailSpec(metric="error", direction="lower_is_better", margin=0.02, method="t"),
)


class DecisionConfig(BaseModel):
    """Settings of the promotion gate (the ``decide`` section of pipeline.yaml)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    primary_metric: str = Field(default="task_success", description="Metric the challenger must improve.")
    primary_method: Literal["t", "bootstrap"] = Field(
        default="t", description="Clustered t interval or cluster bootstrap for the primary metric."
    )
    min_improvement: float = Field(
        default=0.0,
        allow_inf_nan=False,
        description="Promote only if the lower bound of challenger - champion exceeds this (metric units, "
        "finite).",
    )
    alpha: float = Field(
        default=0.05,
        gt=0.0,
        lt=0.5,
        description="One-sided error rate of each decision (false promotion); above 0, below 0.5.",
    )
    power: float = Field(
        default=0.8, gt=0.0, lt=1.0, description="Target power for the MDE in plans and advice."
    )
    min_completed_cases: int = Field(
        default=30,
        ge=1,
        le=MAX_CASES,
        description=(
            "Fewer paired cases completed by both variants, or fewer with a primary score on both sides, is "
            "inconclusive (at most 1,000,000)."
        ),
    )
    max_error_rate: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description=(
            "Share of errored rows above which a variant is not comparable: a challenger above it is "
            "rejected, a champion above it (whatever the challenger did) makes the decision inconclusive."
        ),
    )
    first_release_min_primary: float = Field(
        default=0.0,
        allow_inf_nan=False,
        description="No champion: promote if the lower bound of the challenger's primary mean exceeds this "
        "(finite). The default 0.0 asks only for better than nothing; set the bar a first release must clear.",
    )
    guardrails: tuple[GuardrailSpec, ...] = Field(
        default=DEFAULT_GUARDRAILS, description="Non-inferiority checks that must all hold to promote."
    )
    bootstrap_resamples: int = Field(
        default=2000,
        ge=100,
        le=MAX_BOOTSTRAP_RESAMPLES,
        description="Resamples per cluster bootstrap (at most 100,000).",
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=2**32 - 1,
        description="Seed of every bootstrap, so decisions are reproducible (0 to 2**32-1).",
    )


class GuardrailResult(Frozen):
    """Outcome of one non-inferiority check; ``ci_low``/``ci_high`` are the one-sided bounds."""

    metric: str
    direction: Literal["lower_is_better", "higher_is_better"]
    statistic: Literal["mean", "p95"]
    method: Literal["t", "bootstrap"]
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    margin: float
    status: GuardrailStatus
    held: bool
    note: str | None = None
    se: float | None = None
    n_clusters: int = 0


class DecisionReport(Frozen):
    """What the gate decided and the evidence it used."""

    decision: Decision
    reason: str
    challenger_variant: str
    champion_variant: str | None
    primary: PairedComparison | None = Field(description="Challenger - champion on the primary metric.")
    first_release: Estimate | None = Field(description="Challenger's primary mean when there is no champion.")
    guardrails: tuple[GuardrailResult, ...]
    mcnemar: McNemarResult | None
    n_paired: int
    n_clusters: int
    n_completed: int
    error_rates: Mapping[str, float]
    alpha: float
    min_improvement: float
    what_would_settle_it: str | None


class PowerPlan(Frozen):
    """The MDE of a design next to the gate's ``min_improvement``, with a warning when they clash."""

    mde: MdeReport
    min_improvement: float
    smallest_promotable_effect: float
    warning: str | None


def _variant_rows(evaluation: EvaluationReport, role: Role) -> tuple[str | None, list[CaseResult]]:
    rows = evaluation.rows_for(role)
    names = sorted({r.variant for r in rows})
    if len(names) > 1:
        raise DecisionInputError(f"expected one {role} variant, found {len(names)}: {', '.join(names)}")
    return (names[0] if names else None), rows


def _cluster_map(rows: list[CaseResult]) -> dict[str, str]:
    clusters: dict[str, str] = {}
    for row in rows:
        known = clusters.setdefault(row.case_id, row.cluster)
        if known != row.cluster:
            raise DecisionInputError(
                f"case {row.case_id!r} has two cluster keys ({known!r} and {row.cluster!r})"
            )
    return clusters


def _is_binary(rows: list[CaseResult], metric: str) -> bool:
    values = [r.scores.get(metric) for r in rows]
    observed = [v for v in values if v is not None]
    return bool(observed) and all(v in (0.0, 1.0) for v in observed)


def _row_value(row: CaseResult, metric: str, binary: bool) -> float | None:
    if metric == "error":
        return 1.0 if row.error is not None else 0.0
    if metric == "latency_s":
        return None if row.error is not None else row.latency_s
    if metric in USAGE_METRICS and _usage_unknown(row):
        return None  # no usage reported: the cost is unknown, not zero
    if metric in COUNTED_FIELDS:
        return float(getattr(row, metric))
    value = row.scores.get(metric)
    if value is None and row.error is not None and binary:
        return 0.0
    return value


def _case_values(rows: list[CaseResult], metric: str, binary: bool) -> dict[str, float]:
    observations = ((r.case_id, _row_value(r, metric, binary)) for r in rows)
    return average_repeats((case_id, v) for case_id, v in observations if v is not None)


def _error_rate(rows: list[CaseResult]) -> float:
    return sum(1 for r in rows if r.error is not None) / len(rows) if rows else 0.0


def _completed_cases(rows: list[CaseResult]) -> set[str]:
    return {r.case_id for r in rows if r.error is None}


def _why_scores_are_missing(rows: list[CaseResult], metric: str) -> str:
    """Why completed rows lack ``metric``: how many its scorer raised on (with the first error), else N/A."""
    raised = [
        r.scorer_errors.get(metric) or r.scorer_errors["*"]
        for r in rows
        if r.error is None
        and r.scores.get(metric) is None
        and (metric in r.scorer_errors or "*" in r.scorer_errors)
    ]
    if not raised:
        return f"on the others {metric} did not apply"
    return f"{metric}'s scorer raised on {len(raised)} completed rows, first: {raised[0]}"


def _fmt_interval(low: float, high: float) -> str:
    return f"{low:+.3f}..{high:+.3f}"


def _describe(comparison: PairedComparison) -> str:
    kind = "clustered" if comparison.method == "t" else "bootstrap"
    what = f"{comparison.metric} p95" if comparison.statistic == "p95" else comparison.metric
    return (
        f"{what} {comparison.estimate:+.3f} ({comparison.confidence:.0%} CI "
        f"{_fmt_interval(comparison.ci_low, comparison.ci_high)}, {kind} SE {comparison.se:.3f}, "
        f"{comparison.n_clusters} clusters)"
    )


def _usage_unknown(row: CaseResult) -> bool:
    """A row whose model reported no token usage (and so was priced at nothing).

    Errored rows too: priced at 0.0, the cases a variant failed before any answer made it look cheaper, and
    with a server that reports no usage they were the only rows its cost was judged on (the guardrail held
    on them alone). An errored row that did report usage is counted: its tokens were spent.
    """
    return row.cost == 0 and not usage_reported(row.input_tokens, row.output_tokens)


def _no_usage_note(metric: str, challenger_rows: list[CaseResult], champion_rows: list[CaseResult]) -> str:
    """Why a usage metric has no paired data, when it is because a variant's model reported no token usage
    on any completed case; empty otherwise."""
    if metric not in USAGE_METRICS:
        return ""
    silent = [
        rows[0].variant
        for rows in (challenger_rows, champion_rows)
        if any(r.error is None for r in rows) and all(_usage_unknown(r) for r in rows if r.error is None)
    ]
    if not silent:
        return ""
    whose = "their" if len(silent) > 1 else "its"
    return (
        f"{' and '.join(silent)} reported no token usage on any completed case, so {whose} {metric} is "
        "unknown, not zero (the answers carry no `usage`: a python model's complete() must return it, an "
        "OpenAI-compatible server sends it for stream_options.include_usage)"
    )


def _check_guardrail(
    spec: GuardrailSpec,
    challenger_rows: list[CaseResult],
    champion_rows: list[CaseResult],
    clusters: Mapping[str, str],
    config: DecisionConfig,
) -> GuardrailResult:
    binary = _is_binary(challenger_rows + champion_rows, spec.metric)
    base = {
        "metric": spec.metric,
        "direction": spec.direction,
        "statistic": spec.statistic,
        "method": spec.method,
        "margin": spec.margin,
    }
    try:
        comparison = paired_differences(
            _case_values(challenger_rows, spec.metric, binary),
            _case_values(champion_rows, spec.metric, binary),
            clusters,
            method=spec.method,
            statistic=spec.statistic,
            confidence=1.0 - 2.0 * config.alpha,
            n_resamples=config.bootstrap_resamples,
            seed=config.seed,
            metric=spec.metric,
        )
    except StatsInputError as exc:
        note = _no_usage_note(spec.metric, challenger_rows, champion_rows) or str(exc)
        return GuardrailResult(
            **base, estimate=None, ci_low=None, ci_high=None, status="unresolved", held=False, note=note
        )
    low, high = comparison.ci_low, comparison.ci_high
    status: GuardrailStatus
    if spec.direction == "lower_is_better":
        status = "held" if high <= spec.margin else "violated" if low > spec.margin else "unresolved"
    else:
        status = "held" if low >= -spec.margin else "violated" if high < -spec.margin else "unresolved"
    return GuardrailResult(
        **base,
        estimate=comparison.estimate,
        ci_low=low,
        ci_high=high,
        status=status,
        held=status == "held",
        se=comparison.se,
        n_clusters=comparison.n_clusters,
    )


def _guardrail_phrase(result: GuardrailResult) -> str:
    if result.estimate is None or result.ci_low is None or result.ci_high is None:
        return f"{result.metric} {result.status} ({result.note})"
    what = f"{result.metric} p95" if result.statistic == "p95" else result.metric
    return (
        f"{what} {result.estimate:+.3f} (bounds {_fmt_interval(result.ci_low, result.ci_high)}, "
        f"margin {result.margin:g}) {result.status}"
    )


# Past this many times the clusters evaluated, "what would settle it" stops counting clusters.
FAR_MORE_CLUSTERS = 100


def _more_clusters_advice(
    distance: float,
    se: float,
    n_clusters: int,
    n_cases: int,
    *,
    what: str,
    config: DecisionConfig,
    df: float | None = None,
) -> str:
    if distance <= 0 or not math.isfinite(distance):
        return f"{what}: the estimate sits on the threshold; more data only helps if the true value is not."
    needed = clusters_needed(distance, se, n_clusters, alpha=config.alpha, power=config.power, observed_df=df)
    if needed is None:
        return f"{what}: no feasible number of clusters settles a distance of {distance:.3f}."
    if needed > FAR_MORE_CLUSTERS * n_clusters:
        # "about 6381026 more clusters (~32460002 cases)" is true arithmetic and no advice.
        return (
            f"{what}: more than {FAR_MORE_CLUSTERS} times the {n_clusters} clusters evaluated would be needed "
            f"to settle a distance of {distance:.3f}; more cases will not settle it, so decide whether a "
            "difference this small matters."
        )
    extra = max(needed - n_clusters, 1)  # an unsettled interval needs more than it has
    per_cluster = n_cases / n_clusters
    return (
        f"{what}: about {extra} more clusters (~{math.ceil(extra * per_cluster)} cases at "
        f"{per_cluster:.1f} per cluster) would make the MDE {distance:.3f}, the observed distance to the "
        f"threshold (power {config.power:.0%})."
    )


def _settle_advice(
    primary: PairedComparison, guardrails: tuple[GuardrailResult, ...], config: DecisionConfig
) -> str:
    parts: list[str] = []
    m = config.min_improvement
    if not primary.ci_low > m:
        parts.append(
            _more_clusters_advice(
                abs(primary.estimate - m),
                primary.se,
                primary.n_clusters,
                primary.n_paired,
                what=f"{primary.metric} vs min improvement {m:g}",
                config=config,
                df=primary.df,
            )
        )
    for g in guardrails:
        if g.status != "unresolved":
            continue
        if g.estimate is None or g.se is None or g.n_clusters < 2:
            parts.append(f"guardrail {g.metric}: {g.note or 'no paired data'}.")
            continue
        bad_side = g.estimate if g.direction == "lower_is_better" else -g.estimate
        parts.append(
            _more_clusters_advice(
                g.margin - bad_side,
                g.se,
                g.n_clusters,
                primary.n_paired,
                what=f"guardrail {g.metric} (margin {g.margin:g})",
                config=config,
            )
        )
    return " ".join(parts) if parts else "more clusters would narrow the intervals."


@dataclass(frozen=True)
class _Context:
    """What every report of one decision shares."""

    config: DecisionConfig
    challenger: str
    champion: str | None
    error_rates: Mapping[str, float]


def _report(
    ctx: _Context,
    decision: Decision,
    reason: str,
    *,
    n_completed: int,
    primary: PairedComparison | None = None,
    first_release: Estimate | None = None,
    guardrails: tuple[GuardrailResult, ...] = (),
    mcnemar: McNemarResult | None = None,
    settle: str | None = None,
) -> DecisionReport:
    config = ctx.config
    logger.info(
        "challenger=<%s>, champion=<%s>, decision=<%s> | %s", ctx.challenger, ctx.champion, decision, reason
    )
    stats_source = primary or first_release
    return DecisionReport(
        decision=decision,
        reason=reason,
        challenger_variant=ctx.challenger,
        champion_variant=ctx.champion,
        primary=primary,
        first_release=first_release,
        guardrails=guardrails,
        mcnemar=mcnemar,
        n_paired=(primary.n_paired if primary else first_release.n if first_release else 0),
        n_clusters=(stats_source.n_clusters if stats_source else 0),
        n_completed=n_completed,
        error_rates=dict(ctx.error_rates),
        alpha=config.alpha,
        min_improvement=config.min_improvement,
        what_would_settle_it=settle if decision == "inconclusive" else None,
    )


def _decide_first_release(ctx: _Context, rows: list[CaseResult]) -> DecisionReport:
    config = ctx.config
    metric = config.primary_metric
    completed = len(_completed_cases(rows))
    if completed < config.min_completed_cases:
        return _report(
            ctx,
            "inconclusive",
            f"first release: {completed} completed cases, fewer than min_completed_cases "
            f"{config.min_completed_cases}",
            n_completed=completed,
            settle=f"complete at least {config.min_completed_cases - completed} more cases.",
        )
    values = _case_values(rows, metric, _is_binary(rows, metric))
    if len(values) < config.min_completed_cases:  # as for a comparison: the evidence is the scored cases
        return _report(
            ctx,
            "inconclusive",
            f"first release: {len(values)} of {completed} completed cases have a {metric} score, fewer than "
            f"min_completed_cases {config.min_completed_cases} ({_why_scores_are_missing(rows, metric)})",
            n_completed=completed,
            settle=f"find why {metric} is missing on {completed - len(values)} cases (the scorer's errors "
            "are on their traces) and re-run the evaluation.",
        )
    clusters = _cluster_map(rows)
    try:
        est = clustered_mean(
            list(values.values()), [clusters[c] for c in values], confidence=1.0 - 2.0 * config.alpha
        )
    except StatsInputError as exc:
        return _report(
            ctx,
            "inconclusive",
            f"first release: {metric} cannot be estimated ({exc})",
            n_completed=completed,
            settle="add cases from at least 2 clusters.",
        )
    threshold = config.first_release_min_primary
    summary = (
        f"first release: {metric} {est.mean:.3f} ({est.confidence:.0%} CI "
        f"{est.ci_low:.3f}..{est.ci_high:.3f}, clustered SE {est.se:.3f}, {est.n_clusters} clusters)"
    )
    if est.ci_low > threshold:
        return _report(
            ctx,
            "promote",
            f"{summary}: lower bound exceeds first_release_min_primary {threshold:g}",
            n_completed=completed,
            first_release=est,
        )
    if est.ci_high < threshold:
        return _report(
            ctx,
            "reject",
            f"{summary}: upper bound below first_release_min_primary {threshold:g}",
            n_completed=completed,
            first_release=est,
        )
    needed = clusters_needed(
        abs(est.mean - threshold),
        est.se,
        est.n_clusters,
        alpha=config.alpha,
        power=config.power,
        observed_df=est.df,
    )
    return _report(
        ctx,
        "inconclusive",
        f"{summary}: interval contains first_release_min_primary {threshold:g}",
        n_completed=completed,
        first_release=est,
        settle=(
            f"about {max(needed - est.n_clusters, 1)} more clusters would separate the mean from {threshold:g}."
            if needed is not None
            else f"the mean sits on first_release_min_primary {threshold:g}."
        ),
    )


def decide_promotion(config: DecisionConfig, evaluation: EvaluationReport) -> DecisionReport:
    """Promote, reject or stay inconclusive (rules in the module docstring); always with a one-line reason.

    Raises :class:`DecisionInputError` when the evaluation has no challenger rows, several variants in one
    role, or a case with two cluster keys.
    """
    challenger, challenger_rows = _variant_rows(evaluation, "challenger")
    champion, champion_rows = _variant_rows(evaluation, "champion")
    if challenger is None:
        raise DecisionInputError("the evaluation has no challenger rows")
    clusters = _cluster_map(challenger_rows + champion_rows)
    error_rates = {challenger: _error_rate(challenger_rows)}
    if champion is not None:
        error_rates[champion] = _error_rate(champion_rows)
    ctx = _Context(config=config, challenger=challenger, champion=champion, error_rates=error_rates)

    champion_failing = champion is not None and error_rates[champion] > config.max_error_rate
    if error_rates[challenger] > config.max_error_rate and not champion_failing:
        return _report(
            ctx,
            "reject",
            f"challenger {challenger} errored on {error_rates[challenger]:.1%} of rows "
            f"(max_error_rate {config.max_error_rate:.1%})",
            n_completed=len(_completed_cases(challenger_rows)),
        )
    if champion is None:
        return _decide_first_release(ctx, challenger_rows)

    completed = len(_completed_cases(challenger_rows) & _completed_cases(champion_rows))
    if champion_failing:
        both = error_rates[challenger] > config.max_error_rate
        return _report(
            ctx,
            "inconclusive",
            (f"challenger {challenger} errored on {error_rates[challenger]:.1%} and " if both else "")
            + f"champion {champion} errored on {error_rates[champion]:.1%} of rows "
            f"(max_error_rate {config.max_error_rate:.1%}): not comparable",
            n_completed=completed,
            settle=(
                "fix what fails both variants (the endpoint, evaluate.timeout_s) and re-run the evaluation."
                if both
                else f"fix the champion's errors and re-run the evaluation of {champion}."
            ),
        )
    if completed < config.min_completed_cases:
        return _report(
            ctx,
            "inconclusive",
            f"{completed} paired cases completed by both variants, fewer than min_completed_cases "
            f"{config.min_completed_cases}",
            n_completed=completed,
            settle=f"complete at least {config.min_completed_cases - completed} more paired cases.",
        )

    metric = config.primary_metric
    binary = _is_binary(challenger_rows + champion_rows, metric)
    chal_values = _case_values(challenger_rows, metric, binary)
    champ_values = _case_values(champion_rows, metric, binary)
    try:
        primary = paired_differences(
            chal_values,
            champ_values,
            clusters,
            method=config.primary_method,
            confidence=1.0 - 2.0 * config.alpha,
            n_resamples=config.bootstrap_resamples,
            seed=config.seed,
            metric=metric,
        )
    except StatsInputError as exc:
        return _report(
            ctx,
            "inconclusive",
            f"{metric} cannot be compared: {exc}",
            n_completed=completed,
            settle="add paired cases from at least 2 clusters.",
        )
    if primary.n_paired < config.min_completed_cases:
        # Completed cases whose score is missing (a scorer that raised, or "not applicable") are left out of
        # the pairs: the evidence behind the decision is these pairs, not the completed cases.
        return _report(
            ctx,
            "inconclusive",
            f"{primary.n_paired} of {completed} paired completed cases have a {metric} score for both "
            f"variants, fewer than min_completed_cases {config.min_completed_cases} "
            f"({_why_scores_are_missing([*challenger_rows, *champion_rows], metric)})",
            n_completed=completed,
            primary=primary,
            settle=f"find why {metric} is missing on {completed - primary.n_paired} cases (the scorer's "
            "errors are on their traces) and re-run the evaluation.",
        )
    mcnemar = None
    if binary and all(v in (0.0, 1.0) for v in (*chal_values.values(), *champ_values.values())):
        mcnemar = mcnemar_exact(*discordant_pairs(chal_values, champ_values))

    guardrails = tuple(
        _check_guardrail(spec, challenger_rows, champion_rows, clusters, config) for spec in config.guardrails
    )
    violated = [g for g in guardrails if g.status == "violated"]
    m = config.min_improvement
    one_sided = f"{1.0 - config.alpha:.0%}"

    def finish(decision: Decision, reason: str, settle: str | None = None) -> DecisionReport:
        return _report(
            ctx,
            decision,
            reason,
            n_completed=completed,
            primary=primary,
            guardrails=guardrails,
            mcnemar=mcnemar,
            settle=settle,
        )

    if primary.ci_high < m:
        worse = "worse than the champion" if primary.ci_high < 0 else f"better by less than {m:g}"
        return finish(
            "reject",
            f"{_describe(primary)}: {one_sided} upper bound below min improvement {m:g} ({worse})",
        )
    if violated:
        return finish(
            "reject",
            "guardrail violated: " + "; ".join(_guardrail_phrase(g) for g in violated),
        )
    if primary.ci_low > m and all(g.held for g in guardrails):
        held = ", ".join(g.metric for g in guardrails) or "none configured"
        return finish(
            "promote",
            f"{_describe(primary)}: its low end, the one-sided {one_sided} lower bound, exceeds "
            f"min improvement {m:g}; "
            f"guardrails held ({held})",
        )
    open_points = [f"{_describe(primary)} vs min improvement {m:g}"] if not primary.ci_low > m else []
    open_points += [_guardrail_phrase(g) for g in guardrails if g.status == "unresolved"]
    return finish(
        "inconclusive",
        "not settled: " + "; ".join(open_points),
        settle=_settle_advice(primary, guardrails, config),
    )


def power_plan(
    config: DecisionConfig,
    n_cases: int,
    n_clusters: int,
    repeats: int = 1,
    *,
    sd_diff: float = 0.5,
    icc: float | None = None,
    design_effect: float | None = None,
    cluster_sizes: Sequence[int] | None = None,
) -> PowerPlan:
    """MDE of a golden set under the gate's one-sided ``alpha`` and ``power`` (what ``agent-release plan``
    prints), with a warning when ``min_improvement`` is below the MDE. ``cluster_sizes``: the set's cases per
    cluster, for unequal clusters (see :func:`~agent_release.steps.power.minimum_detectable_effect`)."""
    report = minimum_detectable_effect(
        n_cases,
        n_clusters,
        repeats,
        sd_diff=sd_diff,
        icc=icc,
        design_effect=design_effect,
        alpha=config.alpha,
        power=config.power,
        two_sided=False,
        cluster_sizes=cluster_sizes,
    )
    smallest = config.min_improvement + report.mde
    warning = None
    if config.min_improvement < report.mde:
        warning = (
            f"min_improvement {config.min_improvement:g} is below the MDE {format_effect(report.mde, 3)} of "
            f"this design: only true gains of about {format_effect(smallest, 3)} or more are promoted with "
            f"{config.power:.0%} power; "
            f"smaller real gains will mostly end inconclusive (add clusters to lower the MDE)."
        )
    return PowerPlan(
        mde=report,
        min_improvement=config.min_improvement,
        smallest_promotable_effect=smallest,
        warning=warning,
    )


def power_plan_from_evaluation(
    config: DecisionConfig,
    evaluation: EvaluationReport,
    n_cases: int | None = None,
    *,
    sd_diff: float | None = None,
    icc: float | None = None,
    cluster_sizes: Sequence[int] | None = None,
) -> PowerPlan:
    """:func:`power_plan` with ``sd_diff`` and ICC estimated from a previous paired evaluation.

    The design is the evaluated cases' own clusters, or ``cluster_sizes`` (a golden set's cases per
    cluster), or ``n_cases`` cases with the observed average cluster size (a larger golden set). ``sd_diff``
    or ``icc``, when given, replace the observed value (the other stays observed). When every evaluated case
    was a cluster of its own there is no ICC to observe (and none needed for such a design): ICC n/a.
    """
    _, challenger_rows = _variant_rows(evaluation, "challenger")
    _, champion_rows = _variant_rows(evaluation, "champion")
    if not challenger_rows or not champion_rows:
        raise DecisionInputError("a power plan from an evaluation needs both challenger and champion rows")
    metric = config.primary_metric
    clusters = _cluster_map(challenger_rows + champion_rows)
    binary = _is_binary(challenger_rows + champion_rows, metric)
    a = _case_values(challenger_rows, metric, binary)
    b = _case_values(champion_rows, metric, binary)
    shared = sorted(set(a) & set(b))
    diffs, labels = [a[c] - b[c] for c in shared], [clusters[c] for c in shared]
    observed_sizes = sorted(Counter(labels).values())
    if len(shared) >= 2 and len(observed_sizes) == len(shared):
        # One-way ANOVA needs a cluster with two cases; the SD alone describes independent cases.
        observed_sd, observed_icc = statistics.stdev(diffs), None
    else:
        components = estimate_variance_components(diffs, labels)
        observed_sd, observed_icc = components.sd, components.icc
    sizes: Sequence[int] | None = None
    if cluster_sizes is None and n_cases is not None:
        cases, groups = n_cases, max(2, round(n_cases * len(observed_sizes) / len(shared)))
    else:
        sizes = observed_sizes if cluster_sizes is None else cluster_sizes
        cases, groups = sum(sizes), len(sizes)
    return power_plan(
        config,
        cases,
        groups,
        evaluation.repeats,
        sd_diff=observed_sd if sd_diff is None else sd_diff,
        icc=observed_icc if icc is None else icc,
        cluster_sizes=sizes,
    )
