"""Minimum detectable effect and variance components, against hand arithmetic and statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.power import TTestPower

from agent_release.steps.paired_stats import StatsInputError
from agent_release.steps.power import (
    clusters_needed,
    estimate_variance_components,
    mde_from_se,
    minimum_detectable_effect,
)


def test_mde_follows_the_design_effect_formula() -> None:
    # 300 cases in 60 clusters: m = 5, DE = 1 + 4 * 0.1 = 1.4, SE = sqrt(0.25 * 1.4 / 300) = 0.0341565
    report = minimum_detectable_effect(300, 60, sd_diff=0.5, icc=0.1)
    se = math.sqrt(0.25 * 1.4 / 300)
    assert report.design_effect == pytest.approx(1.4)
    assert report.se == pytest.approx(se)
    assert report.effective_n == pytest.approx(300 / 1.4)
    # Miller's approximation (t_{0.95,59} + t_{0.8,59}) * SE = (1.6711 + 0.8483) * SE = 0.0861 ...
    approx = (stats.t.ppf(0.95, 59) + stats.t.ppf(0.8, 59)) * se
    assert report.mde == pytest.approx(approx, rel=0.01)
    # ... is slightly conservative: the exact noncentral-t answer is a little smaller.
    assert report.mde < approx
    assert minimum_detectable_effect(300, 60, icc=0.1) == report  # sd_diff defaults to 0.5


def test_mde_is_the_noncentrality_statsmodels_solves_for() -> None:
    # A one-sample t test on G cluster means has df = G - 1 and noncentrality effect_size * sqrt(G).
    report = minimum_detectable_effect(300, 60, sd_diff=0.5, icc=0.1)
    effect_size = TTestPower().solve_power(nobs=60, alpha=0.05, power=0.8, alternative="larger")
    assert report.mde / report.se == pytest.approx(effect_size * math.sqrt(60), rel=1e-5)
    two = minimum_detectable_effect(300, 60, sd_diff=0.5, icc=0.1, two_sided=True)
    effect_size = TTestPower().solve_power(nobs=60, alpha=0.05, power=0.8, alternative="two-sided")
    assert two.mde / two.se == pytest.approx(effect_size * math.sqrt(60), rel=1e-5)


def test_mde_agrees_with_statsmodels_for_independent_cases() -> None:
    n, sd = 60, 0.8
    report = minimum_detectable_effect(n, n, sd_diff=sd, icc=0.0)
    effect_size = TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8, alternative="larger")
    assert report.mde == pytest.approx(effect_size * sd, rel=1e-5)


@pytest.mark.parametrize(
    ("alpha", "power", "alternative"),
    [(0.05, 0.1, "larger"), (0.3, 0.95, "larger"), (0.05, 0.1, "two-sided")],
)
def test_mde_far_from_the_usual_power_is_the_noncentrality_statsmodels_solves_for(
    alpha: float, power: float, alternative: str
) -> None:
    # Power just above alpha puts the root below 1 and the normal-approximation start below 0; high power at
    # a lax alpha puts t_power above t_{1-alpha} + 1. At low power the two-sided test's lower tail is not
    # negligible (it is below 1e-15 at the usual settings).
    effect_size = TTestPower().solve_power(nobs=10, alpha=alpha, power=power, alternative=alternative)
    mde = mde_from_se(1.0, 9, alpha=alpha, power=power, two_sided=alternative == "two-sided")
    assert mde == pytest.approx(effect_size * math.sqrt(10), rel=1e-4)  # statsmodels solves to ~2e-5


def test_two_sided_needs_a_larger_effect() -> None:
    one = minimum_detectable_effect(200, 40, sd_diff=0.4, icc=0.2)
    two = minimum_detectable_effect(200, 40, sd_diff=0.4, icc=0.2, two_sided=True)
    assert two.mde > one.mde
    assert two.mde == pytest.approx(mde_from_se(one.se, 39, alpha=0.05, power=0.8, two_sided=True))


def test_two_sided_mde_on_two_clusters_is_found() -> None:
    # One degree of freedom: scipy's lower-tail nct.cdf turns NaN near the root (ncp ~ 15), which used to
    # stop the root search with a ValueError. The upper tail alone carries the power there (the lower one
    # is below 1e-15), so the answer is where it reaches 0.8.
    report = minimum_detectable_effect(20, 2, sd_diff=0.3, two_sided=True)
    crit = stats.t.ppf(1 - 0.025, 1)
    assert math.isfinite(report.mde)
    assert stats.nct.sf(crit, 1, report.mde / report.se) == pytest.approx(0.8, abs=1e-6)


def test_mde_shrinks_with_clusters_and_grows_with_icc() -> None:
    base = minimum_detectable_effect(300, 60, sd_diff=0.5, icc=0.2).mde
    assert minimum_detectable_effect(600, 120, sd_diff=0.5, icc=0.2).mde < base
    assert minimum_detectable_effect(300, 60, sd_diff=0.5, icc=0.5).mde > base
    # Same cases in fewer, larger clusters: a larger design effect.
    assert minimum_detectable_effect(300, 20, sd_diff=0.5, icc=0.2).mde > base


def test_design_effect_can_be_given_directly() -> None:
    by_icc = minimum_detectable_effect(300, 60, sd_diff=0.5, icc=0.25)
    by_deff = minimum_detectable_effect(300, 60, sd_diff=0.5, design_effect=2.0)
    assert by_deff.mde == pytest.approx(by_icc.mde)
    with pytest.raises(StatsInputError, match="not both"):
        minimum_detectable_effect(300, 60, sd_diff=0.5, icc=0.25, design_effect=2.0)


def test_repeats_only_average_away_the_within_case_share() -> None:
    single = minimum_detectable_effect(100, 100, 1, sd_diff=0.5)
    deterministic = minimum_detectable_effect(100, 100, 4, sd_diff=0.5)
    all_noise = minimum_detectable_effect(100, 100, 4, sd_diff=0.5, within_case_share=1.0)
    assert deterministic.mde == pytest.approx(single.mde)
    assert all_noise.mde == pytest.approx(single.mde / 2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_cases": 10, "n_clusters": 1},
        {"n_cases": 5, "n_clusters": 10},
        {"n_cases": 10, "n_clusters": 5, "repeats": 0},
        {"n_cases": 10, "n_clusters": 5, "icc": 1.5},
        {"n_cases": 10, "n_clusters": 5, "alpha": 0.0},
    ],
)
def test_impossible_designs_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(StatsInputError):
        minimum_detectable_effect(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 1.0}, "alpha must be in"),
        ({"power": 0.0}, "power must be in"),
        ({"power": 1.0}, "power must be in"),
        ({"icc": -0.1}, "icc must be in"),
        ({"design_effect": 0.0}, "design effect must be positive"),
        ({"sd_diff": -0.1}, "sd_diff must be finite and non-negative"),
        ({"design_effect": 0.5, "within_case_share": 1.0, "repeats": 2}, "smaller than the run-to-run share"),
    ],
)
def test_settings_out_of_range_are_refused_by_name(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(StatsInputError, match=message):
        minimum_detectable_effect(100, 10, **kwargs)  # type: ignore[arg-type]


def test_mde_from_se_refuses_what_has_no_mde() -> None:
    for se in (-0.1, math.inf, math.nan):
        with pytest.raises(StatsInputError, match="standard error must be finite"):
            mde_from_se(se, 10)
    for df in (0.0, -1.0):
        with pytest.raises(StatsInputError, match="degrees of freedom must be positive"):
            mde_from_se(0.1, df)


def test_differences_that_never_vary_have_no_minimum_detectable_effect() -> None:
    assert minimum_detectable_effect(100, 10, sd_diff=0.0).mde == 0.0


def test_unequal_clusters_give_the_gate_its_stated_power_at_the_mde() -> None:
    """The shipped golden set's layout (33 clusters of 3 cases, 36 of 7) at ICC 0.3: the gate's own clustered
    interval, run on simulated evaluations whose true difference is the MDE, promotes in 80% of them. With
    ``m = n / G`` the SE was understated and the gate had 76% power at the MDE the plan printed."""
    from agent_release.steps.paired_stats import clustered_mean, clustered_mean_batch

    sizes = [3] * 33 + [7] * 36
    labels = [f"k{g}" for g, size in enumerate(sizes) for _ in range(size)]
    codes = np.repeat(np.arange(len(sizes)), sizes)
    sd, icc, alpha = 0.5, 0.3, 0.05
    report = minimum_detectable_effect(
        sum(sizes), len(sizes), sd_diff=sd, icc=icc, alpha=alpha, cluster_sizes=sizes
    )
    # The exact SE of a mean of equicorrelated values: sd * sqrt((1 + (sum n_g^2 / n - 1) * icc) / n).
    n = sum(sizes)
    assert report.se == pytest.approx(sd * math.sqrt((1 + (sum(k * k for k in sizes) / n - 1) * icc) / n))
    assert report.df == pytest.approx(clustered_mean(np.zeros(n), labels).df)  # the gate's df

    rng = np.random.default_rng(3)
    runs = 8000
    between = rng.normal(0.0, sd * math.sqrt(icc), size=(runs, len(sizes)))[:, codes]
    within = rng.normal(0.0, sd * math.sqrt(1 - icc), size=(runs, n))
    bounds = clustered_mean_batch(report.mde + between + within, labels, confidence=1 - 2 * alpha).ci_low
    assert np.mean(bounds > 0) == pytest.approx(0.8, abs=0.015)  # binomial SE at 8,000 runs: 0.0045


def test_cluster_sizes_must_describe_the_design() -> None:
    with pytest.raises(StatsInputError, match="cluster_sizes"):
        minimum_detectable_effect(10, 3, icc=0.1, cluster_sizes=[3, 3, 3])
    counted = minimum_detectable_effect(300, 60, sd_diff=0.5, icc=0.1)
    sized = minimum_detectable_effect(300, 60, sd_diff=0.5, icc=0.1, cluster_sizes=[5] * 60)
    # Equal clusters: the same design effect and G - 1 degrees of freedom either way.
    assert (sized.design_effect, sized.df, sized.mde) == pytest.approx(
        (counted.design_effect, counted.df, counted.mde), rel=1e-9
    )


def test_clusters_needed_is_the_first_count_reaching_the_target() -> None:
    se, g0 = 0.04, 50
    target = 0.05
    needed = clusters_needed(target, se, g0)
    assert needed is not None
    assert needed > g0

    def mde_at(g: int) -> float:
        return mde_from_se(se * math.sqrt(g0 / g), g - 1)

    assert mde_at(needed) <= target < mde_at(needed - 1)
    # Asking for the MDE the observed design already has returns (about) the observed count.
    assert clusters_needed(mde_at(g0), se, g0) == g0
    assert clusters_needed(0.0, se, g0) is None


def test_clusters_needed_uses_the_gates_degrees_of_freedom_when_given() -> None:
    # With one big cluster and nine small ones the gate's Bell-McCaffrey df is about 1.2, not 9: on G - 1
    # the advice for an interval that still held the threshold was "about -4 more clusters".
    se, g0, df = 0.0067, 10, 1.17
    distance = 0.0185  # inside the gate's interval: t(0.95, 1.17) * se is about 0.04
    on_g_minus_1 = clusters_needed(distance, se, g0)
    on_observed = clusters_needed(distance, se, g0, observed_df=df)
    assert on_g_minus_1 is not None and on_g_minus_1 <= g0  # the old answer: nothing more needed
    assert on_observed is not None and on_observed > g0

    def mde_at(g: int) -> float:
        return mde_from_se(se * math.sqrt(g0 / g), df * (g - 1) / (g0 - 1))

    assert mde_at(on_observed) <= distance < mde_at(on_observed - 1)
    # Equal clusters (df = G - 1): the same answer as without it.
    assert clusters_needed(0.05, 0.04, 50, observed_df=49.0) == clusters_needed(0.05, 0.04, 50)
    # Below one degree of freedom (one cluster far larger than the others) the share is kept as well.
    few = clusters_needed(0.05, 0.04, 10, observed_df=0.9)
    assert few is not None

    def mde_at_few(g: int) -> float:
        return mde_from_se(0.04 * math.sqrt(10 / g), 0.9 * (g - 1) / 9)

    assert mde_at_few(few) <= 0.05 < mde_at_few(few - 1)


def test_clusters_needed_when_the_observed_clusters_already_reach_the_target() -> None:
    # No noise: the clusters evaluated already settle any positive distance.
    assert clusters_needed(0.05, 0.0, 30) == 30
    # A distance far above the SE: the smallest design there is, 2 clusters.
    assert clusters_needed(10.0, 0.01, 20) == 2


def test_repeats_average_run_noise_away_outside_the_design_effect() -> None:
    # Run-to-run noise is independent between cases; the design effect was applied to it too, which made
    # the SE 16% too small at 10 clusters of 10, ICC 0.5, run-to-run share 0.4 and 8 repeats.
    n_clusters, size, repeats, sd, icc, w = 10, 10, 8, 0.5, 0.5, 0.4
    report = minimum_detectable_effect(
        n_clusters * size, n_clusters, repeats, sd_diff=sd, icc=icc, within_case_share=w
    )
    rng = np.random.default_rng(7)
    sims = 4000
    cluster = rng.normal(0, sd * math.sqrt(icc), (sims, n_clusters, 1))
    case = rng.normal(0, sd * math.sqrt(1 - icc - w), (sims, n_clusters, size))
    runs = rng.normal(0, sd * math.sqrt(w), (sims, n_clusters, size, repeats)).mean(axis=3)
    simulated = float((cluster + case + runs).mean(axis=(1, 2)).std())
    assert report.se == pytest.approx(simulated, rel=0.05)
    assert report.se == pytest.approx(sd * math.sqrt((1 + (size - 1) * icc - w * (1 - 1 / repeats)) / 100))
    with pytest.raises(StatsInputError, match="together at most 1"):
        minimum_detectable_effect(100, 10, 2, icc=0.7, within_case_share=0.4)
    # Exactly 1: all of a run's variance is either shared in its cluster or run-to-run noise.
    assert minimum_detectable_effect(100, 10, 2, icc=0.6, within_case_share=0.4).se == pytest.approx(
        0.5 * math.sqrt((1 + 9 * 0.6 - 0.4 * 0.5) / 100)
    )


def _balanced_clustered(
    seed: int, icc: float, n_clusters: int = 150, size: int = 6
) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    between = rng.normal(0, math.sqrt(icc), size=n_clusters)
    values = np.repeat(between, size) + rng.normal(0, math.sqrt(1 - icc), size=n_clusters * size)
    labels = [f"g{g}" for g in range(n_clusters) for _ in range(size)]
    return values, labels


def test_variance_components_recover_a_known_icc_and_match_reml() -> None:
    values, labels = _balanced_clustered(11, icc=0.3)
    components = estimate_variance_components(values.tolist(), labels)
    assert components.icc == pytest.approx(0.3, abs=0.08)
    assert components.sd == pytest.approx(1.0, abs=0.08)
    assert components.mean_cluster_size == 6
    assert components.design_effect == pytest.approx(1 + 5 * components.icc)

    fit = smf.mixedlm("y ~ 1", {"y": values, "g": labels}, groups="g").fit(reml=True)
    between = float(fit.cov_re.iloc[0, 0])
    reml_icc = between / (between + fit.scale)
    assert components.icc == pytest.approx(reml_icc, abs=1e-4)


def test_variance_components_of_independent_cases_have_small_icc() -> None:
    values, labels = _balanced_clustered(12, icc=0.0)
    assert estimate_variance_components(values.tolist(), labels).icc < 0.08


def test_variance_components_need_clusters_with_several_cases() -> None:
    with pytest.raises(StatsInputError, match="more cases than clusters"):
        estimate_variance_components([0.1, 0.2], ["a", "b"])
    with pytest.raises(StatsInputError, match="at least 2 clusters"):
        estimate_variance_components([0.1, 0.2, 0.3], ["a", "a", "a"])
    with pytest.raises(StatsInputError, match="3 differences but 2 cluster labels"):
        estimate_variance_components([0.1, 0.2, 0.3], ["a", "b"])
    with pytest.raises(StatsInputError, match="NaN"):
        estimate_variance_components([0.1, float("nan"), 0.3, 0.4], ["a", "a", "b", "b"])


def test_the_icc_does_not_depend_on_the_scale_of_the_differences() -> None:
    # On a 0.01 scale MSB + (n0 - 1) MSW is far below 1; the ICC is a ratio of variances all the same.
    values, labels = _balanced_clustered(13, icc=0.3)
    unit = estimate_variance_components(values.tolist(), labels)
    small = estimate_variance_components((values * 0.01).tolist(), labels)
    assert unit.icc > 0.1 and small.icc == pytest.approx(unit.icc, rel=1e-9)


@pytest.mark.parametrize("value", [0.0, 0.2])
def test_constant_differences_have_no_intraclass_correlation(value: float) -> None:
    # No variance at all, so none shared within clusters: ICC 0, design effect 1. With 0.2 the grand mean
    # (0.19999999999999998) and the cluster means (0.2) differed by rounding, MSB was 2e-33 and MSW 0, and
    # the ICC came out as MSB / MSB = 1.0.
    flat = estimate_variance_components([value] * 6, ["a", "a", "b", "b", "c", "c"])
    assert (flat.icc, flat.design_effect) == (0.0, 1.0)


def test_a_design_of_one_cluster_is_refused_in_words_that_name_the_fix() -> None:
    # Session 21's scale review: `plan` on a golden set whose cases share one cluster said
    # "need at least 2 clusters and one case per cluster, got 500/1".
    with pytest.raises(StatsInputError) as info:
        minimum_detectable_effect(500, 1, sd_diff=0.5, icc=0.1)
    message = str(info.value)
    assert "got 500 case(s) in 1 cluster(s)" in message
    assert "'cluster' key" in message
