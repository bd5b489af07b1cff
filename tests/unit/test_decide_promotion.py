"""The decision step: each branch of the three-way rule, row handling, config checks and the power plan."""

from __future__ import annotations

import re
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent_release.steps.decide_promotion import (
    DecisionConfig,
    DecisionInputError,
    DecisionReport,
    GuardrailResult,
    GuardrailSpec,
    _more_clusters_advice,
    _settle_advice,
    decide_promotion,
    power_plan,
    power_plan_from_evaluation,
)
from agent_release.steps.evaluation_records import CaseResult, EvaluationReport, VariantEvaluation
from agent_release.steps.paired_stats import PairedComparison, StatsInputError
from agent_release.steps.power import clusters_needed, mde_from_se, minimum_detectable_effect

CHALLENGER, CHAMPION = "v2", "v1"


def _evaluation(rows: list[CaseResult], repeats: int = 1) -> EvaluationReport:
    variants = []
    for role, name in (("challenger", CHALLENGER), ("champion", CHAMPION)):
        mine = [r for r in rows if r.role == role]
        if mine:
            variants.append(
                VariantEvaluation(
                    variant=name,
                    role=role,  # type: ignore[arg-type]
                    cases_expected=len({r.case_id for r in mine}),
                    cases_completed=len({r.case_id for r in mine if r.error is None}),
                    cases_errored=len({r.case_id for r in mine if r.error is not None}),
                    retries=0,
                )
            )
    return EvaluationReport(
        dataset_name="golden",
        dataset_hash="sha256:0",
        repeats=repeats,
        scorer_specs=({"name": "task_success"},),
        variants=tuple(variants),
        rows=tuple(rows),
    )


def _scenario(
    *,
    seed: int = 0,
    n_clusters: int = 40,
    size: int = 3,
    p_champion: float = 0.4,
    p_challenger: float = 0.8,
    latency_shift: float = 0.0,
    latency_noise: float = 0.05,
    challenger_errors: float = 0.0,
    champion_errors: float = 0.0,
    repeats: int = 1,
    roles: tuple[str, ...] = ("challenger", "champion"),
) -> EvaluationReport:
    """Binary task_success per case; latency ~1 s (shifted for the challenger); errors drop the score."""
    rng = np.random.default_rng(seed)
    rows: list[CaseResult] = []
    for g in range(n_clusters):
        for i in range(size):
            case_id, base_latency = f"c{g}-{i}", 1.0 + rng.uniform(0, 0.2)
            for role in roles:
                p, errors, shift = (
                    (p_challenger, challenger_errors, latency_shift)
                    if role == "challenger"
                    else (p_champion, champion_errors, 0.0)
                )
                for repeat in range(repeats):
                    errored = rng.random() < errors
                    rows.append(
                        CaseResult(
                            case_id=case_id,
                            cluster=f"g{g}",
                            variant=CHALLENGER if role == "challenger" else CHAMPION,
                            role=role,  # type: ignore[arg-type]
                            repeat=repeat,
                            scores={} if errored else {"task_success": float(rng.random() < p)},
                            error="timeout" if errored else None,
                            latency_s=None
                            if errored
                            else base_latency + shift + rng.normal(0, latency_noise),
                            cost=0.001,
                            input_tokens=100,
                            output_tokens=10,
                        )
                    )
    return _evaluation(rows, repeats)


FAST = DecisionConfig(bootstrap_resamples=500)


def _identical_variants(report: EvaluationReport) -> EvaluationReport:
    """``report`` with each challenger row a copy of the champion's row of its case: every difference is 0."""
    champion = {(r.case_id, r.repeat): r for r in report.rows if r.role == "champion"}
    rows = [
        champion[(r.case_id, r.repeat)].model_copy(update={"role": "challenger", "variant": CHALLENGER})
        if r.role == "challenger"
        else r
        for r in report.rows
    ]
    return report.model_copy(update={"rows": tuple(rows)})


def _errored(report: EvaluationReport, role: str, n_cases: int) -> EvaluationReport:
    """``report`` with the rows of ``role`` on its first ``n_cases`` cases errored (no score, no latency)."""
    cases = sorted({r.case_id for r in report.rows})[:n_cases]
    rows = [
        r.model_copy(update={"error": "timeout", "scores": {}, "latency_s": None})
        if r.role == role and r.case_id in cases
        else r
        for r in report.rows
    ]
    return report.model_copy(update={"rows": tuple(rows)})


def test_clearly_better_challenger_with_held_guardrails_is_promoted() -> None:
    report = decide_promotion(FAST, _scenario())
    assert report.decision == "promote", report.reason
    assert report.primary is not None
    assert report.primary.estimate > 0.2
    assert report.primary.ci_low > 0
    assert report.primary.confidence == pytest.approx(0.90)  # one-sided 95% bounds
    assert report.n_paired == 120
    assert report.n_clusters == 40
    assert [g.status for g in report.guardrails] == ["held", "held", "held"]
    assert report.reason.startswith("task_success +")
    assert "guardrails held (latency_s, cost, error)" in report.reason
    assert report.what_would_settle_it is None


def test_worse_challenger_is_rejected() -> None:
    report = decide_promotion(FAST, _scenario(p_champion=0.8, p_challenger=0.3))
    assert report.decision == "reject"
    assert "worse than the champion" in report.reason
    assert report.primary is not None
    assert report.primary.ci_high < 0


def test_improvement_surely_below_min_improvement_is_rejected() -> None:
    config = DecisionConfig(min_improvement=0.6, bootstrap_resamples=500)
    report = decide_promotion(config, _scenario(p_champion=0.4, p_challenger=0.6))
    assert report.decision == "reject"
    assert "better by less than 0.6" in report.reason


def test_clearly_violated_guardrail_rejects_a_better_challenger() -> None:
    report = decide_promotion(FAST, _scenario(latency_shift=2.0))
    assert report.decision == "reject"
    assert report.reason.startswith("guardrail violated: latency_s p95 +1.9")
    latency = report.guardrails[0]
    assert latency.status == "violated"
    assert not latency.held
    assert latency.ci_low is not None
    assert latency.ci_low > latency.margin


def test_higher_is_better_guardrail_uses_the_mirrored_bounds() -> None:
    spec = GuardrailSpec(metric="task_success", direction="higher_is_better", margin=0.05, method="t")
    config = DecisionConfig(primary_metric="cost", guardrails=(spec,), min_improvement=-1.0)
    # Primary "cost" is equal, so it never decides; the guardrail on a collapsing success rate does.
    report = decide_promotion(config, _scenario(p_champion=0.9, p_challenger=0.2))
    assert report.guardrails[0].status == "violated"
    assert report.decision == "reject"


@pytest.mark.parametrize("direction", ["lower_is_better", "higher_is_better"])
def test_a_guardrail_worse_by_at_most_its_margin_holds_and_one_around_it_is_unresolved(
    direction: str,
) -> None:
    # The margin (0.5) is the largest tolerated worsening. Constant differences make both bounds exactly the
    # difference: worse by exactly 0.5, or not at all, holds. Worse by 1 in the odd clusters and by 0 in the
    # even ones is worse by 0.5 give or take its SE: neither held nor violated.
    spec = GuardrailSpec(metric="quality", direction=direction, margin=0.5, method="t")  # type: ignore[arg-type]
    config = DecisionConfig(guardrails=(spec,), bootstrap_resamples=500)
    worse = 1.0 if direction == "lower_is_better" else -1.0
    base = _scenario()

    def guardrail(odd_clusters: float, even_clusters: float) -> GuardrailResult:
        def quality(row: CaseResult) -> float:
            if row.role == "champion":
                return 0.0
            return odd_clusters if int(row.cluster[1:]) % 2 else even_clusters

        rows = [r.model_copy(update={"scores": {**r.scores, "quality": quality(r)}}) for r in base.rows]
        return decide_promotion(config, base.model_copy(update={"rows": tuple(rows)})).guardrails[0]

    for constant in (0.5 * worse, 0.0):
        held = guardrail(constant, constant)
        assert held.ci_low == held.ci_high == constant and held.status == "held", held
    around = guardrail(worse, 0.0)
    assert around.ci_low is not None and around.ci_high is not None
    assert around.ci_low < 0.5 * worse < around.ci_high and around.status == "unresolved", around


def test_identical_variants_are_neither_promoted_nor_rejected() -> None:
    # Every difference is 0, so the primary interval is the point 0: it does not exceed min_improvement 0 (no
    # promotion) and is not below it (no rejection); every guardrail holds at a worsening of 0.
    report = decide_promotion(FAST, _identical_variants(_scenario()))
    assert report.decision == "inconclusive", report.reason
    assert report.primary is not None and (report.primary.ci_low, report.primary.ci_high) == (0.0, 0.0)
    assert [g.status for g in report.guardrails] == ["held", "held", "held"]
    assert report.reason.startswith("not settled: task_success +0.000 (90% CI +0.000..+0.000, clustered SE")
    assert report.reason.endswith("vs min improvement 0")
    assert report.what_would_settle_it == (
        "task_success vs min improvement 0: the estimate sits on the threshold; more data only helps if the "
        "true value is not."
    )
    # Against a bar above 0 the same point lies below it: rejected as no better by 0.1, not as worse.
    raised = decide_promotion(
        FAST.model_copy(update={"min_improvement": 0.1}), _identical_variants(_scenario())
    )
    assert raised.decision == "reject"
    assert raised.reason.endswith("upper bound below min improvement 0.1 (better by less than 0.1)")


def test_small_noisy_difference_is_inconclusive_with_advice() -> None:
    report = decide_promotion(FAST, _scenario(seed=3, n_clusters=15, p_champion=0.5, p_challenger=0.55))
    assert report.decision == "inconclusive", report.reason
    assert report.primary is not None
    assert report.primary.ci_low <= 0 <= report.primary.ci_high
    assert report.what_would_settle_it is not None
    assert "more clusters" in report.what_would_settle_it


def test_advice_stops_counting_clusters_when_no_golden_set_could_settle_it() -> None:
    # A distance of 0.0005 at SE 0.05 on 20 clusters: the count came out as millions of clusters.
    from agent_release.steps.decide_promotion import FAR_MORE_CLUSTERS, _more_clusters_advice

    far = _more_clusters_advice(0.0005, 0.05, 20, 100, what="task_success vs min improvement 0", config=FAST)
    assert far == (
        f"task_success vs min improvement 0: more than {FAR_MORE_CLUSTERS} times the 20 clusters evaluated would "
        "be needed to settle a distance of 0.001; more cases will not settle it, so decide whether a difference "
        "this small matters."
    )
    near = _more_clusters_advice(0.1, 0.05, 20, 100, what="task_success", config=FAST)
    assert near.startswith("task_success: about ") and "more clusters" in near


def test_advice_counts_the_clusters_whose_mde_is_the_observed_distance() -> None:
    # The MDE of 2,000 clusters like the 20 observed (SE 0.05 * sqrt(20 / 2000), G - 1 df): exactly 100 times
    # the clusters evaluated is still counted, one more is not.
    at_100_times = mde_from_se(0.05 * (20 / 2000) ** 0.5, 1999)
    assert clusters_needed(at_100_times, 0.05, 20) == 2000
    assert _more_clusters_advice(at_100_times, 0.05, 20, 100, what="x", config=FAST) == (
        f"x: about 1980 more clusters (~9900 cases at 5.0 per cluster) would make the MDE {at_100_times:.3f}, "
        "the observed distance to the threshold (power 80%)."
    )
    beyond = mde_from_se(0.05 * (20 / 2001) ** 0.5, 2000)
    assert _more_clusters_advice(beyond, 0.05, 20, 100, what="x", config=FAST).startswith(
        "x: more than 100 times the 20 clusters evaluated"
    )
    # A distance the 20 clusters already reach (2 would do) still asks for one more: the interval was unsettled.
    assert _more_clusters_advice(1.0, 0.05, 20, 100, what="x", config=FAST).startswith(
        "x: about 1 more clusters (~5 cases at 5.0 per cluster)"
    )
    for on_it in (0.0, float("nan")):
        assert _more_clusters_advice(on_it, 0.05, 20, 100, what="x", config=FAST) == (
            "x: the estimate sits on the threshold; more data only helps if the true value is not."
        )
    assert _more_clusters_advice(1e-9, 1.0, 20, 100, what="x", config=FAST) == (
        "x: no feasible number of clusters settles a distance of 0.000."
    )


def _unresolved(
    metric: str, direction: str, margin: float, estimate: float | None, se: float | None, n_clusters: int
) -> GuardrailResult:
    """An unresolved guardrail: its interval (estimate +- 0.5) straddles the margin, or it has no data."""
    return GuardrailResult(
        metric=metric,
        direction=direction,  # type: ignore[arg-type]
        statistic="mean",
        method="t",
        estimate=estimate,
        ci_low=None if estimate is None else estimate - 0.5,
        ci_high=None if estimate is None else estimate + 0.5,
        margin=margin,
        status="unresolved",
        held=False,
        note=None if estimate is not None else "no usage reported",
        se=se,
        n_clusters=n_clusters,
    )


def test_settle_advice_measures_each_distance_to_its_own_threshold() -> None:
    # The primary's distance is |estimate - min_improvement| = |-0.03 - 0.02|; a guardrail's runs from its
    # estimate to the worst tolerated value: 0.5 - 0.2 (lower is better), 0.05 - 0.01 (higher is better, the
    # estimate 0.01 worse). A guardrail on 2 clusters is sized too; one without paired data gets its note.
    primary = PairedComparison(
        metric="task_success",
        method="t",
        statistic="mean",
        estimate=-0.03,
        se=0.02,
        ci_low=-0.07,
        ci_high=0.01,
        confidence=0.9,
        df=39.0,
        n_paired=120,
        n_clusters=40,
        n_unpaired_challenger=0,
        n_unpaired_champion=0,
        challenger_value=0.5,
        champion_value=0.53,
    )
    guardrails = (
        _unresolved("latency_s", "lower_is_better", 0.5, estimate=0.2, se=0.1, n_clusters=2),
        _unresolved("quality", "higher_is_better", 0.05, estimate=-0.01, se=0.03, n_clusters=40),
        _unresolved("cost", "lower_is_better", 0.001, estimate=None, se=None, n_clusters=0),
    )
    advice = _settle_advice(primary, guardrails, FAST.model_copy(update={"min_improvement": 0.02}))
    parts = re.split(r"(?<=\.) (?=task_success|guardrail)", advice)
    assert len(parts) == 4, parts
    assert parts[0].startswith("task_success vs min improvement 0.02: about ") and "MDE 0.050," in parts[0]
    assert parts[1].startswith("guardrail latency_s (margin 0.5): about ")
    assert parts[1].endswith(
        "cases at 60.0 per cluster) would make the MDE 0.300, the observed distance to the threshold (power 80%)."
    )
    assert parts[2].startswith("guardrail quality (margin 0.05): about ") and "MDE 0.040," in parts[2]
    assert parts[3] == "guardrail cost: no usage reported."


def test_unresolved_guardrail_keeps_a_better_challenger_inconclusive() -> None:
    report = decide_promotion(FAST, _scenario(seed=4, latency_shift=0.45, latency_noise=0.3))
    assert report.guardrails[0].status == "unresolved"
    assert report.decision == "inconclusive"
    assert "latency_s" in report.reason
    assert report.what_would_settle_it is not None
    assert "guardrail latency_s (margin 0.5): " in report.what_would_settle_it


def test_challenger_erroring_too_often_is_rejected() -> None:
    report = decide_promotion(FAST, _scenario(challenger_errors=0.4))
    assert report.decision == "reject"
    assert "errored on" in report.reason
    assert report.error_rates[CHALLENGER] > 0.2


def test_an_error_rate_exactly_at_max_error_rate_is_tolerated() -> None:
    # 24 of 120 rows errored is 20.0%: not above max_error_rate 0.2, for either variant.
    assert decide_promotion(FAST, _errored(_scenario(), "champion", 24)).decision == "promote"
    challenger = decide_promotion(FAST, _errored(_scenario(), "challenger", 24))
    assert challenger.error_rates[CHALLENGER] == 0.2
    assert challenger.reason.startswith("guardrail violated: error +0.200"), (
        challenger.reason
    )  # not "errored on"
    # With the champion above it, the challenger at it is not named as failing too.
    both = decide_promotion(FAST, _errored(_errored(_scenario(), "champion", 30), "challenger", 24))
    assert both.reason.startswith(f"champion {CHAMPION} errored on 25.0% of rows"), both.reason


def test_champion_erroring_too_often_makes_the_comparison_inconclusive() -> None:
    report = decide_promotion(FAST, _scenario(champion_errors=0.4))
    assert report.decision == "inconclusive"
    assert "not comparable" in report.reason
    assert report.what_would_settle_it is not None


def test_both_variants_erroring_too_often_is_inconclusive_not_a_rejection() -> None:
    # A timeout too short for either variant (62% and 69% errors in the review) rejected the challenger and
    # so marked its package Rejected for what the setup did.
    report = decide_promotion(FAST, _scenario(challenger_errors=0.4, champion_errors=0.4))
    assert report.decision == "inconclusive"
    assert report.reason.startswith(f"challenger {CHALLENGER} errored on ")
    assert f"champion {CHAMPION} errored on " in report.reason and "not comparable" in report.reason
    assert report.what_would_settle_it is not None and "both variants" in report.what_would_settle_it


def test_too_few_completed_cases_is_inconclusive_even_when_clearly_better() -> None:
    report = decide_promotion(FAST, _scenario(n_clusters=9, p_champion=0.0, p_challenger=1.0))
    assert report.n_completed == 27
    assert report.decision == "inconclusive"
    assert report.reason.startswith(
        "27 paired cases completed by both variants, fewer than min_completed_cases 30"
    )
    # Exactly min_completed_cases is enough, for a comparison as for a first release.
    assert (
        decide_promotion(FAST, _scenario(n_clusters=10, p_champion=0.0, p_challenger=1.0)).decision
        == "promote"
    )
    first = _scenario(n_clusters=10, p_challenger=1.0, roles=("challenger",))
    assert decide_promotion(FAST, first).decision == "promote"
    too_few = decide_promotion(FAST, _scenario(n_clusters=9, p_challenger=1.0, roles=("challenger",)))
    assert too_few.reason.startswith("first release: 27 completed cases, fewer than min_completed_cases 30")


def test_errored_cases_count_as_failures_for_binary_scores() -> None:
    evaluation = _scenario(seed=5, challenger_errors=0.1, p_challenger=1.0, p_champion=1.0)
    report = decide_promotion(DecisionConfig(guardrails=()), evaluation)
    errored = {r.case_id for r in evaluation.rows_for("challenger") if r.error is not None}
    assert errored
    assert report.primary is not None
    assert report.primary.n_paired == 120  # errored cases are kept, not dropped
    assert report.primary.challenger_value == pytest.approx(1 - len(errored) / 120)


def test_latency_guardrail_ignores_errored_rows_and_error_guardrail_counts_them() -> None:
    evaluation = _scenario(seed=6, challenger_errors=0.1)
    report = decide_promotion(FAST, evaluation)
    latency, _, error = report.guardrails
    errored = {r.case_id for r in evaluation.rows_for("challenger") if r.error is not None}
    assert error.estimate == pytest.approx(len(errored) / 120)
    assert error.status in {"violated", "unresolved"}
    assert latency.estimate is not None
    assert abs(latency.estimate) < 0.2  # a fast failure (latency None) did not pull the p95 down


def test_repeats_are_averaged_within_a_case() -> None:
    report = decide_promotion(FAST, _scenario(repeats=3))
    assert report.primary is not None
    assert report.primary.n_paired == 120
    assert report.mcnemar is None  # averaged repeats are no longer binary
    single = decide_promotion(FAST, _scenario(repeats=1))
    assert single.mcnemar is not None
    assert single.mcnemar.b > single.mcnemar.c


def test_first_release_needs_an_absolute_bar() -> None:
    evaluation = _scenario(roles=("challenger",), p_challenger=0.8)
    promoted = decide_promotion(DecisionConfig(first_release_min_primary=0.6), evaluation)
    assert promoted.decision == "promote"
    assert promoted.first_release is not None
    assert promoted.first_release.ci_low > 0.6
    assert promoted.first_release.confidence == pytest.approx(0.90)  # one-sided 95% bounds
    assert promoted.champion_variant is None
    rejected = decide_promotion(DecisionConfig(first_release_min_primary=0.95), evaluation)
    assert rejected.decision == "reject"
    observed = promoted.first_release.mean  # a bar at the observed mean cannot be settled either way
    undecided = decide_promotion(DecisionConfig(first_release_min_primary=observed), evaluation)
    assert undecided.decision == "inconclusive"
    assert undecided.what_would_settle_it is not None


def test_a_first_release_exactly_at_its_bar_is_neither_promoted_nor_rejected() -> None:
    # Every case scores 1: the interval is the point 1.0, which neither exceeds nor falls below a bar of 1.0.
    report = decide_promotion(
        DecisionConfig(first_release_min_primary=1.0), _scenario(roles=("challenger",), p_challenger=1.0)
    )
    assert (
        report.first_release is not None
        and report.first_release.ci_low == report.first_release.ci_high == 1.0
    )
    assert report.decision == "inconclusive"
    assert report.what_would_settle_it == "the mean sits on first_release_min_primary 1."


def test_first_release_advice_is_sized_on_the_distance_between_mean_and_bar() -> None:
    evaluation = _scenario(roles=("challenger",), p_challenger=0.8)
    est = decide_promotion(DecisionConfig(), evaluation).first_release
    assert est is not None
    bar = round(est.mean + 0.02, 4)  # above the mean, inside the interval
    needed = clusters_needed(abs(est.mean - bar), est.se, est.n_clusters, observed_df=est.df)
    assert needed is not None
    report = decide_promotion(DecisionConfig(first_release_min_primary=bar), evaluation)
    assert report.decision == "inconclusive"
    assert report.what_would_settle_it == (
        f"about {needed - est.n_clusters} more clusters would separate the mean from {bar:g}."
    )


def test_a_metric_no_scorer_produced_does_not_count_errored_cases_as_failures() -> None:
    # A missing score counts as a failure (0.0) only for a binary scorer; with no value observed at all,
    # nothing says the scorer is binary.
    evaluation = _errored(_scenario(roles=("challenger",)), "challenger", 12)
    unscored = [r.model_copy(update={"scores": {}}) for r in evaluation.rows]
    report = decide_promotion(DecisionConfig(), evaluation.model_copy(update={"rows": tuple(unscored)}))
    assert report.reason.startswith("first release: 0 of 108 completed cases have a task_success score")


def test_evaluation_without_challenger_is_a_user_error() -> None:
    with pytest.raises(DecisionInputError, match="no challenger"):
        decide_promotion(FAST, _scenario(roles=("champion",)))


def test_a_case_with_two_cluster_keys_is_a_user_error() -> None:
    evaluation = _scenario(n_clusters=12)
    rows = list(evaluation.rows)
    rows[0] = rows[0].model_copy(update={"cluster": "elsewhere"})
    with pytest.raises(DecisionInputError, match="two cluster keys"):
        decide_promotion(FAST, evaluation.model_copy(update={"rows": tuple(rows)}))


def test_config_rejects_unknown_keys_and_p95_without_bootstrap() -> None:
    with pytest.raises(ValidationError, match="extra"):
        DecisionConfig.model_validate({"alpah": 0.05})
    with pytest.raises(ValidationError, match="needs method 'bootstrap'"):
        GuardrailSpec(metric="latency_s", direction="lower_is_better", margin=1, statistic="p95", method="t")
    loaded = DecisionConfig.model_validate(
        {"guardrails": [{"metric": "error", "direction": "lower_is_better", "margin": 0.01}]}
    )
    assert loaded.guardrails[0].method == "bootstrap"


def test_report_round_trips_through_json() -> None:
    report = decide_promotion(FAST, _scenario())
    assert DecisionReport.model_validate_json(report.model_dump_json()) == report


def test_power_plan_warns_when_min_improvement_is_below_the_mde() -> None:
    plan = power_plan(DecisionConfig(min_improvement=0.02), 300, 60, sd_diff=0.5, icc=0.1)
    assert plan.mde.mde > 0.02
    assert plan.warning is not None
    assert "below the MDE" in plan.warning
    assert plan.smallest_promotable_effect == pytest.approx(0.02 + plan.mde.mde)
    assert power_plan(DecisionConfig(min_improvement=0.2), 300, 60, sd_diff=0.5, icc=0.1).warning is None


def test_power_plan_defaults_to_one_run_of_sd_0_5_tested_one_sided() -> None:
    plan = power_plan(DecisionConfig(), 300, 60, icc=0.1)
    assert plan.mde == minimum_detectable_effect(300, 60, 1, sd_diff=0.5, icc=0.1, two_sided=False)
    # A min_improvement equal to the MDE is not below it.
    assert power_plan(DecisionConfig(min_improvement=plan.mde.mde), 300, 60, icc=0.1).warning is None


def test_power_plan_from_a_previous_evaluation() -> None:
    evaluation = _scenario(seed=8)
    plan = power_plan_from_evaluation(DecisionConfig(), evaluation)
    bigger = power_plan_from_evaluation(DecisionConfig(), evaluation, n_cases=480)
    assert plan.mde.n_cases == 120
    assert plan.mde.n_clusters == 40
    assert bigger.mde.mde < plan.mde.mde


def test_a_plan_from_an_evaluation_of_independent_cases_uses_their_sd() -> None:
    """Every case its own cluster (a golden set without cluster keys): there is no ICC to estimate, and the
    plan failed with "need at least 2 clusters and more cases than clusters" even with an ICC given."""
    evaluation = _scenario(seed=8, n_clusters=90, size=1)
    plan = power_plan_from_evaluation(DecisionConfig(), evaluation)
    diffs = [
        float(
            np.mean([r.scores["task_success"] for r in evaluation.rows if r.case_id == c and r.role == role])
        )
        for c in sorted({r.case_id for r in evaluation.rows})
        for role in ("challenger", "champion")
    ]
    observed_sd = float(np.std(np.subtract(diffs[0::2], diffs[1::2]), ddof=1))
    assert plan.mde.sd_diff == pytest.approx(observed_sd) and plan.mde.icc is None
    assert (plan.mde.n_cases, plan.mde.n_clusters, plan.mde.design_effect) == (90, 90, 1.0)
    assert power_plan_from_evaluation(DecisionConfig(), evaluation, icc=0.2).mde.icc == 0.2


def test_a_plan_from_an_evaluation_needs_both_variants_and_two_paired_cases() -> None:
    with pytest.raises(DecisionInputError, match="needs both challenger and champion rows"):
        power_plan_from_evaluation(DecisionConfig(), _scenario(roles=("challenger",)))
    two = _scenario(seed=8, n_clusters=2, size=1, p_champion=0.5, p_challenger=0.5)
    by_case = {(r.case_id, r.role): r.scores["task_success"] for r in two.rows}
    diffs = [by_case[(c, "challenger")] - by_case[(c, "champion")] for c in ("c0-0", "c1-0")]
    plan = power_plan_from_evaluation(DecisionConfig(), two)
    assert (plan.mde.sd_diff, plan.mde.n_clusters) == (statistics.stdev(diffs), 2)
    with pytest.raises(StatsInputError):
        power_plan_from_evaluation(DecisionConfig(), _scenario(n_clusters=1, size=1))


def test_a_plan_for_a_few_cases_keeps_at_least_two_clusters() -> None:
    # 4 cases at the observed 3 cases per cluster round to 1 cluster; a design needs 2.
    plan = power_plan_from_evaluation(DecisionConfig(), _scenario(seed=8), n_cases=4)
    assert (plan.mde.n_cases, plan.mde.n_clusters) == (4, 2)


def test_a_given_sd_or_icc_replaces_only_that_observed_value() -> None:
    evaluation = _scenario(seed=8)
    observed = power_plan_from_evaluation(DecisionConfig(), evaluation).mde
    assert observed.sd_diff is not None and observed.icc is not None
    given_icc = power_plan_from_evaluation(DecisionConfig(), evaluation, icc=0.9).mde
    given_sd = power_plan_from_evaluation(DecisionConfig(), evaluation, sd_diff=2.0).mde

    assert (given_icc.sd_diff, given_icc.icc) == (observed.sd_diff, 0.9)
    assert (given_sd.sd_diff, given_sd.icc) == (2.0, observed.icc)
    assert given_icc.mde > observed.mde and given_sd.mde > observed.mde


@given(
    n_clusters=st.integers(1, 20),
    size=st.integers(1, 3),
    min_completed=st.integers(1, 60),
    errors=st.sampled_from([0.0, 0.1, 0.3]),
    seed=st.integers(0, 10_000),
)
@settings(max_examples=40, deadline=None)
def test_never_promotes_with_fewer_completed_cases_than_required(
    n_clusters: int, size: int, min_completed: int, errors: float, seed: int
) -> None:
    evaluation = _scenario(
        seed=seed,
        n_clusters=n_clusters,
        size=size,
        p_champion=0.0,
        p_challenger=1.0,
        challenger_errors=errors,
        champion_errors=errors,
    )
    config = DecisionConfig(min_completed_cases=min_completed, guardrails=(), bootstrap_resamples=100)
    report = decide_promotion(config, evaluation)
    done = {r.case_id for r in evaluation.rows_for("challenger") if r.error is None} & {
        r.case_id for r in evaluation.rows_for("champion") if r.error is None
    }
    if report.error_rates[CHALLENGER] <= config.max_error_rate:
        assert report.n_completed == len(done)
    if len(done) < min_completed:
        assert report.decision != "promote"


def _without_primary_score(report: EvaluationReport, keep_every: int) -> EvaluationReport:
    """The same rows with ``task_success`` missing (a scorer that raised) on all but every Nth case."""
    rows = [
        r.model_copy(update={"scores": {}}) if int(r.case_id.split("-")[0][1:]) % keep_every else r
        for r in report.rows
    ]
    return report.model_copy(update={"rows": tuple(rows)})


def test_a_primary_score_missing_on_most_cases_is_inconclusive_not_a_decision() -> None:
    # Every case completed, but the scorer raised on 4 of 5 clusters' cases: 24 scored pairs of 120.
    evaluation = _without_primary_score(_scenario(), keep_every=5)
    config = DecisionConfig(bootstrap_resamples=500, min_completed_cases=100)
    report = decide_promotion(config, evaluation)
    # It used to promote on the 24 scored pairs while min_completed_cases asked for 100.
    assert report.decision == "inconclusive", report.reason
    assert report.reason.startswith(
        "24 of 120 paired completed cases have a task_success score for both variants, fewer than "
        "min_completed_cases 100"
    )
    assert report.what_would_settle_it is not None and "missing on 96 cases" in report.what_would_settle_it
    first = decide_promotion(
        config.model_copy(update={"first_release_min_primary": 0.1}),
        _without_primary_score(_scenario(roles=("challenger",)), keep_every=5),
    )
    assert first.decision == "inconclusive" and first.reason.startswith(
        "first release: 24 of 120 completed cases have a task_success score"
    ), first.reason


def test_an_inconclusive_gate_says_whether_the_scorer_raised_or_did_not_apply() -> None:
    config = DecisionConfig(bootstrap_resamples=200, min_completed_cases=100)
    not_applicable = decide_promotion(config, _without_primary_score(_scenario(), keep_every=5))
    assert not_applicable.reason.endswith("(on the others task_success did not apply)"), not_applicable.reason
    raised = _without_primary_score(_scenario(), keep_every=5)
    rows = [
        r.model_copy(update={"scorer_errors": {"task_success": "KeyError: 'facts'"}})
        if "task_success" not in r.scores and r.role == "challenger"
        else r
        for r in raised.rows
    ]
    report = decide_promotion(config, raised.model_copy(update={"rows": tuple(rows)}))
    failed = sum(1 for r in rows if r.scorer_errors and r.error is None)
    assert report.decision == "inconclusive"
    assert report.reason.endswith(
        f"(task_success's scorer raised on {failed} completed rows, first: KeyError: 'facts')"
    ), report.reason


def _challenger_reports_no_usage(report: EvaluationReport) -> EvaluationReport:
    """``report`` as a challenger whose server sends no usage would leave it: 0 tokens, priced at 0.0."""
    silent = [
        r.model_copy(update={"input_tokens": 0, "output_tokens": 0, "cost": 0.0})
        if r.role == "challenger"
        else r
        for r in report.rows
    ]
    return report.model_copy(update={"rows": tuple(silent)})


def test_a_cost_guardrail_is_not_judged_on_a_variant_that_reported_no_token_usage() -> None:
    # An OpenAI-compatible server that sends no usage made every completed case cost 0, so the challenger
    # passed the cost guardrail as free; now its cost is unknown and the gate says why it cannot settle.
    report = _scenario()
    decided = decide_promotion(FAST, _challenger_reports_no_usage(report))
    assert decided.decision == "inconclusive"
    cost = next(g for g in decided.guardrails if g.metric == "cost")
    assert cost.status == "unresolved" and not cost.held
    assert cost.note.startswith(f"{CHALLENGER} reported no token usage on any completed case")
    # Both kinds of model a team serves itself are told what to send (the note named only an OpenAI server,
    # also when the silent variant was a python class).
    assert "a python model's complete() must return it" in cost.note
    assert "stream_options.include_usage" in cost.note
    assert "unknown, not zero" in decided.reason
    assert (
        decided.what_would_settle_it is not None
        and f"guardrail cost: {cost.note}." in decided.what_would_settle_it
    )
    # The same rows with their usage are promoted (the scenario's challenger is clearly better).
    assert decide_promotion(FAST, report).decision == "promote"


@pytest.mark.parametrize("seed", range(4))
def test_errored_cases_without_usage_are_not_free_in_the_cost_guardrail(seed: int) -> None:
    # Errored rows were exempt from "no usage reported": with a challenger server that sends no usage, its
    # completed rows were left out but its errored ones (0 tokens, cost 0.0) were judged, so the guardrail
    # held on those alone ("-0.001, held") and the gate promoted a challenger whose cost nobody knew.
    report = _scenario(challenger_errors=0.05, champion_errors=0.05, seed=seed)
    decided = decide_promotion(FAST, _challenger_reports_no_usage(report))
    cost = next(g for g in decided.guardrails if g.metric == "cost")
    assert cost.status == "unresolved" and not cost.held, (cost.status, cost.estimate, cost.n_clusters)
    assert decided.decision == "inconclusive"


def test_an_errored_case_that_spent_tokens_still_counts_in_the_cost_guardrail() -> None:
    # Only rows without usage are left out: an errored case whose calls were answered spent its tokens.
    report = _scenario(challenger_errors=0.1, seed=1)
    priced = [
        r.model_copy(update={"cost": 0.011}) if r.role == "challenger" and r.error is not None else r
        for r in report.rows
    ]
    extra = sum(0.01 for r in priced if r.role == "challenger" and r.error is not None) / 120
    decided = decide_promotion(FAST, report.model_copy(update={"rows": tuple(priced)}))
    cost = next(g for g in decided.guardrails if g.metric == "cost")
    # The errored cases at 11 times the price, judged with every other case of all 40 clusters.
    assert extra > 0 and cost.estimate == pytest.approx(extra) and cost.n_clusters == 40


def test_an_inconclusive_gate_with_unequal_clusters_asks_for_more_clusters_not_none() -> None:
    # One cluster of 100 cases beside nine single cases: "about 0 more clusters (~0 cases ...)" on a result
    # the gate could not settle, because the advice assumed G - 1 degrees of freedom and the gate ~1.2.
    rng = np.random.default_rng(0)
    rows = []
    for i, cluster in enumerate(["big"] * 100 + [f"s{k}" for k in range(9)]):
        base = rng.normal(0.5, 0.1)
        for role, variant, shift in (("challenger", CHALLENGER, 0.02), ("champion", CHAMPION, 0.0)):
            rows.append(
                CaseResult(
                    case_id=f"c{i}",
                    cluster=cluster,
                    variant=variant,
                    role=role,  # type: ignore[arg-type]
                    scores={"task_success": base + shift + float(rng.normal(0, 0.05))},
                    latency_s=1.0,
                    input_tokens=1,
                    cost=0.001,
                )
            )
    decided = decide_promotion(DecisionConfig(guardrails=()), _evaluation(rows))
    assert decided.decision == "inconclusive"
    assert decided.primary is not None and decided.primary.df is not None and decided.primary.df < 2
    more = re.search(r"about (\d+) more clusters", decided.what_would_settle_it)
    assert more is not None and int(more.group(1)) > 0, decided.what_would_settle_it
