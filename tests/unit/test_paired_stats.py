"""Paired, clustered statistics: checked against statsmodels/scipy, hand arithmetic and properties."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from agent_release.steps.paired_stats import (
    BOOTSTRAP_BATCH_VALUES,
    StatsInputError,
    _weighted_p95,
    average_repeats,
    bootstrap_batch,
    clustered_mean,
    clustered_mean_batch,
    discordant_pairs,
    mcnemar_exact,
    naive_paired_t,
    paired_cluster_bootstrap,
    paired_differences,
)


def _clustered_sample(seed: int, n_clusters: int = 25) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 9, size=n_clusters)  # unequal cluster sizes
    effects = rng.normal(0, 1.0, size=n_clusters)
    values = np.concatenate([e + rng.normal(0, 0.7, size=s) for e, s in zip(effects, sizes, strict=True)])
    labels = [f"c{g}" for g, s in enumerate(sizes) for _ in range(s)]
    return values, labels


def _cr2_bell_mccaffrey(values: np.ndarray, codes: np.ndarray) -> tuple[float, float]:
    """CR2 SE and Bell-McCaffrey df of an intercept-only OLS, the general matrix way (as R's clubSandwich):
    ``A_g = (I - H_gg)^(-1/2)`` by eigendecomposition, ``df = tr(M)**2 / tr(M @ M)`` with ``M = G'G``."""
    n = len(values)
    x = np.ones((n, 1))
    xtx_inv = np.linalg.inv(x.T @ x)
    residual_maker = np.eye(n) - x @ xtx_inv @ x.T
    residuals = residual_maker @ values
    meat, columns = 0.0, []
    for g in range(int(codes.max()) + 1):
        idx = np.flatnonzero(codes == g)
        w, v = np.linalg.eigh(residual_maker[np.ix_(idx, idx)])
        adjust = v @ np.diag(w**-0.5) @ v.T
        u = x[idx].T @ adjust @ residuals[idx]
        meat += float(u @ u)
        columns.append((residual_maker[:, idx] @ adjust @ x[idx] @ xtx_inv)[:, 0])
    g_matrix = np.stack(columns, axis=1)
    m = g_matrix.T @ g_matrix
    return math.sqrt(float(xtx_inv[0, 0]) ** 2 * meat), float(np.trace(m) ** 2 / np.sum(m * m))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_clustered_mean_is_cr2_with_bell_mccaffrey_df(seed: int) -> None:
    from scipy import stats

    values, labels = _clustered_sample(seed)
    codes = np.unique(labels, return_inverse=True)[1]
    se, df = _cr2_bell_mccaffrey(values, codes)
    est = clustered_mean(values, labels, confidence=0.95)
    assert est.mean == pytest.approx(values.mean(), rel=1e-12)
    assert est.se == pytest.approx(se, rel=1e-10)
    assert est.df == pytest.approx(df, rel=1e-10)
    assert est.df < len(set(labels)) - 1  # unequal clusters: fewer than G - 1
    half = stats.t.ppf(0.975, df) * se
    assert (est.ci_low, est.ci_high) == pytest.approx((est.mean - half, est.mean + half), rel=1e-9)
    assert est.n_clusters == len(set(labels))


def test_with_equal_clusters_it_is_statsmodels_cr1_on_g_minus_1_df() -> None:
    values = np.random.default_rng(4).normal(size=40) + np.repeat(np.random.default_rng(5).normal(size=10), 4)
    labels = [f"c{i // 4}" for i in range(40)]
    groups = np.unique(labels, return_inverse=True)[1]
    fit = sm.OLS(values, np.ones_like(values)).fit(
        cov_type="cluster", cov_kwds={"groups": groups}, use_t=True
    )
    est = clustered_mean(values, labels, confidence=0.95)
    assert est.se == pytest.approx(fit.bse[0], rel=1e-10)
    assert est.df == pytest.approx(9, rel=1e-12)
    low, high = fit.conf_int(alpha=0.05)[0]
    assert (est.ci_low, est.ci_high) == pytest.approx((low, high), rel=1e-9)


def test_one_dominant_cluster_widens_the_interval_beyond_cr1() -> None:
    # One cluster of 40 cases beside eleven of 2: CR1 on G - 1 = 11 df promoted an equal challenger in about
    # 23% of simulated runs at alpha 0.05. CR2 with Bell-McCaffrey df is far wider here.
    labels = ["big"] * 40 + [f"s{g}" for g in range(11) for _ in range(2)]
    values = np.random.default_rng(11).normal(size=len(labels))
    groups = np.unique(labels, return_inverse=True)[1]
    cr1 = sm.OLS(values, np.ones_like(values)).fit(cov_type="cluster", cov_kwds={"groups": groups})
    est = clustered_mean(values, labels)
    assert est.se > cr1.bse[0] and est.df == pytest.approx(2.195, abs=1e-3)


def test_clustered_mean_hand_computed_example() -> None:
    # values 1, 2 | 3, 6 in clusters a | b: mean = 12 / 4 = 3
    # residuals -2, -1 | 0, 3 -> cluster sums S_a = -3, S_b = 3 -> sum S_g^2 = 18
    # cluster shares p = 1/2, 1/2: Var = sum S_g^2 / (1 - p_g) / n^2 = (9/.5 + 9/.5) / 16 = 2.25 -> SE = 1.5
    # df = 1 / (sum p^2 + (sum q)^2 - sum q^2), q = p^2/(1-p) = 1/2: 1 / (1/2 + 1 - 1/2) = 1
    # t_{0.975, 1} = 12.7062047... -> half width 19.0593...
    est = clustered_mean([1.0, 2.0, 3.0, 6.0], ["a", "a", "b", "b"])
    assert est.mean == 3.0
    assert est.se == pytest.approx(1.5)
    assert est.df == pytest.approx(1.0)
    assert est.ci_high - est.mean == pytest.approx(1.5 * 12.706204736, rel=1e-9)


def test_one_case_per_cluster_reduces_to_the_ordinary_standard_error() -> None:
    values = np.random.default_rng(0).normal(size=40)
    est = clustered_mean(values, [str(i) for i in range(40)])
    assert est.se == pytest.approx(values.std(ddof=1) / math.sqrt(40), rel=1e-12)


def test_batch_rows_equal_the_scalar_estimator() -> None:
    values, labels = _clustered_sample(6)
    rows = np.vstack([values, values[::-1], values * 2 + 1])
    batch = clustered_mean_batch(rows, labels, confidence=0.9)
    for i, row in enumerate(rows):
        est = clustered_mean(row, labels, confidence=0.9)
        assert (batch.mean[i], batch.se[i], batch.ci_low[i]) == pytest.approx((est.mean, est.se, est.ci_low))
    assert batch.df == est.df
    # Both default to a 95% interval.
    assert clustered_mean_batch(rows, labels).ci_low[0] == pytest.approx(
        clustered_mean(values, labels).ci_low
    )


def test_clustered_mean_memory_is_linear_in_the_cases() -> None:
    # Session 21: a (cases x clusters) membership matrix made the clustered SE of 5,000 one-case clusters
    # allocate 200 MB (1.7 GB at 15,000). The cluster sums are now a grouped sum.
    import tracemalloc

    values = np.random.default_rng(0).normal(size=5000)
    labels = [f"k{i}" for i in range(values.size)]
    clustered_mean(values[:10], labels[:10])  # scipy's import is not the estimator's memory
    tracemalloc.start()
    try:
        est = clustered_mean(values, labels)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"{peak / 2**20:.0f} MB"
    assert est.se == pytest.approx(values.std(ddof=1) / np.sqrt(values.size))
    assert est.df == pytest.approx(values.size - 1)


def test_clustered_mean_needs_two_clusters() -> None:
    with pytest.raises(StatsInputError, match="at least 2 clusters"):
        clustered_mean([1.0, 2.0], ["a", "a"])
    with pytest.raises(StatsInputError, match="NaN"):
        clustered_mean([1.0, float("nan")], ["a", "b"])


def test_clustered_mean_refuses_values_it_cannot_match_with_cluster_labels() -> None:
    with pytest.raises(StatsInputError, match="no values to average"):
        clustered_mean([], [])
    # One label short: the cluster sums would silently leave a value out, and the shares not sum to 1.
    with pytest.raises(StatsInputError, match="4 values per row but 3 cluster labels"):
        clustered_mean([1.0, 2.0, 3.0, 4.0], ["a", "b", "b"])
    with pytest.raises(StatsInputError, match="2-D array"):
        clustered_mean_batch(np.array([1.0, 2.0, 3.0]), ["a", "b", "b"])


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5])
def test_a_confidence_outside_0_1_is_refused(confidence: float) -> None:
    # At 1 the t interval is infinite, at 0 a point, above 1 NaN; the bootstrap has no percentile to take.
    chal, champ, clusters = _skewed_pairs(12, n_clusters=4, size=2)
    with pytest.raises(StatsInputError, match="confidence must be in"):
        clustered_mean([1.0, 2.0, 3.0], ["a", "b", "b"], confidence=confidence)
    with pytest.raises(StatsInputError, match="confidence must be in"):
        paired_cluster_bootstrap(chal, champ, clusters, confidence=confidence)


def test_average_repeats_gives_one_value_per_case() -> None:
    assert average_repeats([("x", 1.0), ("x", 0.0), ("y", 1.0), ("x", 1.0)]) == {"x": 2 / 3, "y": 1.0}


def test_paired_differences_counts_unpaired_cases_and_compares_shared_ones() -> None:
    challenger = {"a": 1.0, "b": 1.0, "c": 0.0, "only_chal": 1.0}
    champion = {"a": 0.0, "b": 1.0, "c": 0.0, "only_champ": 0.0, "other": 1.0}
    clusters = {"a": "g1", "b": "g1", "c": "g2"}
    cmp = paired_differences(challenger, champion, clusters, metric="task_success")
    assert cmp.n_paired == 3
    assert cmp.n_unpaired_challenger == 1
    assert cmp.n_unpaired_champion == 2
    assert cmp.estimate == pytest.approx(1 / 3)
    assert cmp.challenger_value == pytest.approx(2 / 3)
    assert cmp.champion_value == pytest.approx(1 / 3)


def test_paired_differences_refuses_paired_cases_without_cluster() -> None:
    with pytest.raises(StatsInputError, match="no cluster key"):
        paired_differences({"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 0.0}, {"a": "g"})


@pytest.mark.parametrize("method", ["t", "bootstrap"])
def test_variants_without_a_case_in_common_are_refused_in_those_words(method: str) -> None:
    # The gate shows this message as the reason it cannot compare (not "needs at least 2 clusters, got 0").
    with pytest.raises(StatsInputError, match="no case in common"):
        paired_differences({"a": 1.0}, {"b": 0.0}, {"a": "g1", "b": "g2"}, method=method)  # type: ignore[arg-type]


def test_naive_t_equals_clustered_t_when_every_case_is_its_own_cluster() -> None:
    rng = np.random.default_rng(4)
    chal = {str(i): float(v) for i, v in enumerate(rng.normal(0.2, 1, 50))}
    champ = {str(i): float(v) for i, v in enumerate(rng.normal(0.0, 1, 50))}
    own = {str(i): str(i) for i in range(50)}
    naive = naive_paired_t(chal, champ)
    clustered = paired_differences(chal, champ, own)
    reference = stats.ttest_rel(list(chal.values()), list(champ.values()))
    assert naive.estimate == pytest.approx(clustered.estimate)
    assert naive.se == pytest.approx(clustered.se, rel=1e-12)
    assert naive.estimate / naive.se == pytest.approx(reference.statistic, rel=1e-10)


def test_naive_t_understates_the_se_of_clustered_differences() -> None:
    rng = np.random.default_rng(5)
    clusters = {f"{g}-{i}": f"g{g}" for g in range(20) for i in range(10)}
    shift = {f"g{g}": rng.normal(0, 0.5) for g in range(20)}
    chal = {c: shift[k] + rng.normal(0, 0.2) for c, k in clusters.items()}
    champ = dict.fromkeys(clusters, 0.0)
    assert paired_differences(chal, champ, clusters).se > 2 * naive_paired_t(chal, champ).se


def test_naive_t_is_scipys_paired_t_on_the_shared_cases() -> None:
    rng = np.random.default_rng(16)
    chal = {str(i): float(v) for i, v in enumerate(rng.normal(0.3, 1, 12))}
    champ = {str(i): float(v) for i, v in enumerate(rng.normal(0.0, 1, 12))}
    reference = stats.ttest_rel([chal[i] for i in sorted(chal)], [champ[i] for i in sorted(chal)])
    naive = naive_paired_t({**chal, "only_challenger": 1.0}, {**champ, "x": 0.0, "y": 0.0})
    low, high = reference.confidence_interval(0.95)
    assert (naive.ci_low, naive.ci_high) == pytest.approx((low, high), rel=1e-10)
    assert naive.df == reference.df == 11
    assert (naive.n_paired, naive.n_unpaired_challenger, naive.n_unpaired_champion) == (12, 1, 2)
    assert naive_paired_t({"a": 1.0, "b": 2.0}, {"a": 0.0, "b": 0.5}).df == 1
    with pytest.raises(StatsInputError, match="at least 2 paired cases, got 1"):
        naive_paired_t({"a": 1.0, "b": 2.0}, {"a": 0.0})


def _skewed_pairs(
    seed: int, n_clusters: int = 30, size: int = 6
) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    rng = np.random.default_rng(seed)
    clusters = {f"{g}-{i}": f"g{g}" for g in range(n_clusters) for i in range(size)}
    base = {f"g{g}": rng.lognormal(0, 0.5) for g in range(n_clusters)}
    champ = {c: base[k] * rng.lognormal(0, 0.4) for c, k in clusters.items()}
    chal = {c: v * rng.lognormal(0.05, 0.2) for c, v in champ.items()}
    return chal, champ, clusters


def test_cluster_bootstrap_of_the_mean_agrees_with_the_clustered_t() -> None:
    chal, champ, clusters = _skewed_pairs(7)
    boot = paired_cluster_bootstrap(chal, champ, clusters, n_resamples=4000, seed=1)
    t = paired_differences(chal, champ, clusters, method="t")
    assert boot.estimate == pytest.approx(t.estimate)
    assert boot.ci_low < boot.estimate < boot.ci_high
    assert boot.se == pytest.approx(t.se, rel=0.25)
    assert boot.ci_high - boot.ci_low == pytest.approx(t.ci_high - t.ci_low, rel=0.3)
    assert (boot.challenger_value, boot.champion_value) == pytest.approx(
        (t.challenger_value, t.champion_value)
    )


def test_mean_bootstrap_resamples_a_clusters_sum_together_with_its_count() -> None:
    # Clusters of 1 and of 9 cases whose differences are all close to 1: every resample's mean difference is
    # close to 1 only if a cluster's sum is drawn with its own case count; drawn apart, sum / count swings
    # with how many large clusters each side happened to get.
    sizes = [1, 9] * 10
    rng = np.random.default_rng(13)
    clusters = {f"{g}-{i}": f"g{g}" for g, size in enumerate(sizes) for i in range(size)}
    chal = {c: 1.0 + float(rng.normal(0, 0.01)) for c in clusters}
    cmp = paired_cluster_bootstrap(chal, dict.fromkeys(clusters, 0.0), clusters, n_resamples=500)
    assert 0.99 < cmp.ci_low <= cmp.estimate <= cmp.ci_high < 1.01


def test_cluster_bootstrap_needs_two_clusters() -> None:
    chal, champ, clusters = _skewed_pairs(15, n_clusters=2, size=4)
    assert paired_cluster_bootstrap(chal, champ, clusters, n_resamples=200).n_clusters == 2
    with pytest.raises(StatsInputError, match="at least 2 clusters, got 1"):
        paired_cluster_bootstrap(chal, champ, dict.fromkeys(clusters, "g0"))


def test_bootstrap_defaults_are_2000_resamples_from_seed_0_for_both_entry_points() -> None:
    chal, champ, clusters = _skewed_pairs(17, n_clusters=8, size=2)
    explicit = paired_cluster_bootstrap(chal, champ, clusters, n_resamples=2000, seed=0)
    assert paired_cluster_bootstrap(chal, champ, clusters) == explicit
    assert paired_differences(chal, champ, clusters, method="bootstrap") == explicit


def test_cluster_bootstrap_is_reproducible_with_a_seed() -> None:
    chal, champ, clusters = _skewed_pairs(8)
    first = paired_cluster_bootstrap(chal, champ, clusters, statistic="p95", seed=3)
    again = paired_cluster_bootstrap(chal, champ, clusters, statistic="p95", seed=3)
    other = paired_cluster_bootstrap(chal, champ, clusters, statistic="p95", seed=4)
    assert first == again
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)


def test_p95_bootstrap_estimate_is_the_difference_of_numpy_p95s() -> None:
    chal, champ, clusters = _skewed_pairs(9)
    cmp = paired_cluster_bootstrap(chal, champ, clusters, statistic="p95", seed=0)
    keys = sorted(chal)
    expected = np.quantile([chal[k] for k in keys], 0.95, method="inverted_cdf") - np.quantile(
        [champ[k] for k in keys], 0.95, method="inverted_cdf"
    )
    assert cmp.estimate == pytest.approx(expected)
    assert cmp.ci_low <= cmp.estimate <= cmp.ci_high
    assert cmp.df is None
    assert (cmp.challenger_value, cmp.champion_value) == pytest.approx(
        (
            np.quantile([chal[k] for k in keys], 0.95, method="inverted_cdf"),
            np.quantile([champ[k] for k in keys], 0.95, method="inverted_cdf"),
        )
    )


@pytest.mark.parametrize("constant", ["challenger", "champion"])
def test_p95_bootstrap_with_one_constant_variant_still_has_an_interval(constant: str) -> None:
    # Only when both variants are constant does every resample give the same p95 difference; here the other
    # variant's values spread evenly over 0..1 (a range of exactly 1), so its p95 varies between resamples.
    ids = [f"c{i}" for i in range(40)]
    clusters = {c: f"g{i % 10}" for i, c in enumerate(ids)}
    spread = {c: i / 39 for i, c in enumerate(ids)}
    flat = dict.fromkeys(ids, 0.5)
    chal, champ = (flat, spread) if constant == "challenger" else (spread, flat)
    cmp = paired_cluster_bootstrap(chal, champ, clusters, statistic="p95", n_resamples=500)
    assert cmp.ci_low < cmp.ci_high and cmp.se > 0


def test_an_undefined_bca_interval_falls_back_to_the_percentile_one_quietly() -> None:
    # One slow call among 40 one-case clusters: nearly every resample's p95 difference is the estimate, 0, so
    # BCa's bias correction is infinite and its interval undefined (scipy warns DegenerateDataWarning).
    # About 8% of resamples draw the slow call 3 times or more, enough to be the p95 of 40 values: the
    # percentile interval's upper end is that call.
    ids = [f"c{i}" for i in range(40)]
    chal = {c: 100.0 if c == "c0" else 1.0 for c in ids}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cmp = paired_cluster_bootstrap(chal, dict.fromkeys(ids, 1.0), {c: c for c in ids}, statistic="p95")
    assert not [w for w in caught if issubclass(w.category, stats.DegenerateDataWarning)]
    assert (cmp.estimate, cmp.ci_low, cmp.ci_high) == (0.0, 0.0, 99.0)


def test_the_p95_of_identical_variants_is_a_point_without_a_warning() -> None:
    # The same latencies on both sides: every resample's p95 difference is 0, so BCa's acceleration divides
    # 0 by 0 and numpy warned "invalid value encountered in scalar divide" to the user's terminal during
    # the gate, before the percentile fallback gave the right interval.
    ids = [f"c{i}" for i in range(40)]
    latencies = {c: float(i % 7) for i, c in enumerate(ids)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cmp = paired_cluster_bootstrap(
            latencies, dict(latencies), {c: f"g{i % 10}" for i, c in enumerate(ids)}, statistic="p95"
        )
    assert (cmp.estimate, cmp.ci_low, cmp.ci_high) == (0.0, 0.0, 0.0)


@given(st.lists(st.floats(-100, 100), min_size=1, max_size=60), st.integers(0, 2**31))
@settings(max_examples=60, deadline=None)
def test_weighted_p95_with_unit_or_integer_weights_matches_numpy(values: list[float], seed: int) -> None:
    x = np.asarray(values)
    assert _weighted_p95(x, np.ones((1, x.size)))[0] == np.quantile(x, 0.95, method="inverted_cdf")
    counts = np.random.default_rng(seed).integers(0, 4, size=x.size)
    counts[0] += 1  # at least one observation
    repeated = np.repeat(x, counts)
    expected = np.quantile(repeated, 0.95, method="inverted_cdf")
    assert _weighted_p95(x, counts[None, :].astype(float))[0] == expected


def test_weighted_p95_of_twenty_values_is_the_nineteenth() -> None:
    # F(x_(19)) = 19/20 = 0.95 exactly, so the inverted CDF stops at the 19th value, however 0.95 * 20 rounds
    # (and with every weight 3, at the 57th of 60). Hypothesis seldom draws a size that is a multiple of 20.
    x = np.arange(20.0, 0.0, -1.0)
    assert _weighted_p95(x, np.ones((1, 20)))[0] == 19.0 == np.quantile(x, 0.95, method="inverted_cdf")
    assert _weighted_p95(x, np.full((1, 20), 3.0))[0] == 19.0


def test_bootstrap_batch_spends_the_value_budget_and_never_less_than_one_resample() -> None:
    assert bootstrap_batch(1_000) == BOOTSTRAP_BATCH_VALUES // 1_000
    assert bootstrap_batch(1) == BOOTSTRAP_BATCH_VALUES
    assert bootstrap_batch(0) == BOOTSTRAP_BATCH_VALUES  # no values per resample: no division by zero
    assert bootstrap_batch(3 * BOOTSTRAP_BATCH_VALUES) == 1  # more values than the budget: one at a time


@pytest.mark.parametrize("statistic", ["mean", "p95"])
def test_cluster_bootstrap_memory_stays_bounded_with_one_cluster_per_case(statistic: str) -> None:
    # Session 21: scipy handed the statistic every resample at once, and BCa's jackknife one resample per
    # cluster, so 3,000 one-case clusters made (3,000 x 3,000) arrays: 365-398 MB traced here, about 1 GB
    # at 5,000 cases. The resamples now go in batches; the interval is the same as unbatched.
    import tracemalloc

    rng = np.random.default_rng(1)
    ids = [f"c{i}" for i in range(3000)]
    chal = dict(zip(ids, rng.lognormal(0, 0.5, len(ids)).tolist(), strict=True))
    champ = dict(zip(ids, rng.lognormal(0, 0.5, len(ids)).tolist(), strict=True))
    tracemalloc.start()
    try:
        cmp = paired_cluster_bootstrap(chal, champ, {c: c for c in ids}, statistic=statistic)  # type: ignore[arg-type]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 150 * 2**20, f"{peak / 2**20:.0f} MB"
    assert cmp.ci_low <= cmp.estimate <= cmp.ci_high


def test_batched_bootstrap_gives_the_unbatched_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    chal, champ, clusters = _skewed_pairs(10)
    whole = {s: paired_cluster_bootstrap(chal, champ, clusters, statistic=s) for s in ("mean", "p95")}
    # A few resamples at a time (one batch per 3 to 17 resamples here, of 180 cases in 30 clusters).
    monkeypatch.setattr("agent_release.steps.paired_stats.BOOTSTRAP_BATCH_VALUES", 500)
    for statistic, cmp in whole.items():
        assert paired_cluster_bootstrap(chal, champ, clusters, statistic=statistic) == cmp  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("challenger", "champion", "sizes"), [(2.0, 1.5, (5, 5, 5, 5)), (0.7, 0.6, (1, 2, 3, 5, 7, 4))]
)
def test_bootstrap_of_constant_differences_is_a_point(
    challenger: float, champion: float, sizes: tuple[int, ...]
) -> None:
    # 0.7 - 0.6 is not exact in binary: resampled sums over counts of unequal clusters scatter in the last
    # bits, and the interval scipy gives for them left out the estimate itself (0.1 > 0.09999999999999998).
    clusters = {f"{g}-{i}": f"g{g}" for g, size in enumerate(sizes) for i in range(size)}
    chal = dict.fromkeys(clusters, challenger)
    champ = dict.fromkeys(clusters, champion)
    cmp = paired_cluster_bootstrap(chal, champ, clusters)
    assert cmp.ci_low == cmp.estimate == cmp.ci_high and cmp.se == 0.0
    assert cmp.estimate == pytest.approx(challenger - champion)


def test_t_method_refuses_p95() -> None:
    with pytest.raises(StatsInputError, match="'mean' only"):
        paired_differences({"a": 1.0}, {"a": 1.0}, {"a": "g"}, statistic="p95")


@pytest.mark.parametrize(("b", "c"), [(3, 12), (10, 10), (0, 7), (25, 9)])
def test_mcnemar_exact_matches_statsmodels(b: int, c: int) -> None:
    reference = sm_mcnemar([[20, b], [c, 30]], exact=True).pvalue
    assert mcnemar_exact(b, c).p_value == pytest.approx(reference, rel=1e-10)


def test_mcnemar_without_discordant_pairs_is_no_evidence() -> None:
    assert mcnemar_exact(0, 0).p_value == 1.0


@pytest.mark.parametrize(("b", "c"), [(-1, 3), (3, -1)])
def test_mcnemar_refuses_a_negative_count(b: int, c: int) -> None:
    with pytest.raises(StatsInputError, match="non-negative"):
        mcnemar_exact(b, c)


def test_discordant_pairs_counts_only_disagreements() -> None:
    # Two 1/0 pairs, three 0/1, and concordant pairs in other numbers (four 1/1, one 0/0) that must not count.
    pairs = [(1.0, 0.0)] * 2 + [(0.0, 1.0)] * 3 + [(1.0, 1.0)] * 4 + [(0.0, 0.0)]
    chal = {f"c{i}": a for i, (a, _) in enumerate(pairs)}
    champ = {f"c{i}": b for i, (_, b) in enumerate(pairs)}
    assert discordant_pairs(chal, champ) == (2, 3)


clustered_data = st.lists(
    st.tuples(st.floats(-1e3, 1e3, allow_subnormal=False), st.sampled_from(["a", "b", "c", "d", "e"])),
    min_size=2,
    max_size=40,
).filter(lambda rows: len({c for _, c in rows}) >= 2)


@given(clustered_data, st.floats(0.5, 0.99))
@settings(max_examples=150, deadline=None)
def test_interval_contains_the_mean_and_se_is_non_negative(
    rows: list[tuple[float, str]], confidence: float
) -> None:
    est = clustered_mean([v for v, _ in rows], [c for _, c in rows], confidence=confidence)
    assert est.se >= 0
    tolerance = 1e-9 * (1 + abs(est.mean))
    assert est.ci_low - tolerance <= est.mean <= est.ci_high + tolerance


@given(
    st.lists(
        st.tuples(st.floats(0, 1), st.floats(0, 1), st.sampled_from(["a", "b", "c"])), min_size=3, max_size=30
    ).filter(lambda rows: len({c for *_, c in rows}) >= 2)
)
@settings(max_examples=100, deadline=None)
def test_swapping_challenger_and_champion_negates_the_difference(
    rows: list[tuple[float, float, str]],
) -> None:
    chal = {str(i): a for i, (a, _, _) in enumerate(rows)}
    champ = {str(i): b for i, (_, b, _) in enumerate(rows)}
    clusters = {str(i): c for i, (*_, c) in enumerate(rows)}
    forward = paired_differences(chal, champ, clusters)
    backward = paired_differences(champ, chal, clusters)
    assert backward.estimate == pytest.approx(-forward.estimate, abs=1e-12)
    assert backward.se == pytest.approx(forward.se, abs=1e-12)
    assert backward.ci_low == pytest.approx(-forward.ci_high, abs=1e-9)
