"""Paired, cluster-robust comparison of two variants evaluated on the same cases.

The promotion gate compares per-case differences ``d_i = challenger_i - champion_i``. Cases drawn from the
same template or conversation are correlated, so standard errors are clustered by the case's cluster key
(E. Miller, "Adding Error Bars to Evals", arXiv 2411.00640, section 3). Ignoring the clustering understates
the standard error and promotes too often; ``tests/simulation/test_gate_error_rates.py`` shows how much.

What is here and how to call it:

- :func:`clustered_mean` — mean, CR2 cluster-robust SE and a t interval on Bell-McCaffrey degrees of freedom
  (``G - 1`` when the clusters are of equal size);
  :func:`clustered_mean_batch` does the same for every row of a 2-D array (simulations).
- :func:`paired_differences` — align two ``case_id -> score`` maps, then the clustered t (``method="t"``) or
  the cluster bootstrap (``method="bootstrap"``) of the mean difference or of the difference in p95.
- :func:`paired_cluster_bootstrap` — the bootstrap alone, for skewed metrics (latency, cost).
- :func:`naive_paired_t` — the textbook unclustered paired t, kept only as the wrong baseline.
- :func:`mcnemar_exact` — exact McNemar test for binary scores (a cross-check; it ignores clusters).
- :func:`average_repeats` — collapse K repeats of a case into one value before any of the above.

scipy is imported inside the functions that use it, so the config model (which names these records) stays
cheap to import for the CLI; numpy is imported at the top.
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt

from agent_release.steps.backend import Frozen

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
Method = Literal["t", "bootstrap"]
Statistic = Literal["mean", "p95"]
_Num = TypeVar("_Num", float, FloatArray)

# The p95 statistic uses the inverse of the empirical CDF (numpy's "inverted_cdf"): every bootstrap replicate
# and the point estimate then pick an observed value, so weighted and unweighted quantiles agree exactly.
P95 = 0.95
# Values (one per cluster, or one weight per case, per resample) the bootstrap's statistic gets at once: its
# arrays then stay about 16 MB each (a few of them live together), however many cases and clusters there are.
BOOTSTRAP_BATCH_VALUES = 2_000_000


class StatsInputError(ValueError):
    """The data cannot support the requested statistic (too few cases or clusters, missing clusters)."""


class Estimate(Frozen):
    """A clustered mean with its standard error and a two-sided t interval."""

    mean: float
    se: float
    ci_low: float
    ci_high: float
    confidence: float
    n: int
    n_clusters: int
    # Bell-McCaffrey degrees of freedom: ``G - 1`` for equal clusters, fewer (and fractional) for unequal ones.
    df: float


class PairedComparison(Frozen):
    """Challenger minus champion on the cases both variants have, with its uncertainty.

    ``estimate`` is the mean of per-case differences (``statistic="mean"``) or the difference of the two
    p95s (``statistic="p95"``). ``df`` is ``None`` for the bootstrap, whose ``se`` is the bootstrap SD.
    """

    metric: str
    method: Literal["t", "bootstrap", "naive_t"]
    statistic: Statistic
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    confidence: float
    df: float | None
    n_paired: int
    n_clusters: int
    n_unpaired_challenger: int
    n_unpaired_champion: int
    challenger_value: float
    champion_value: float


class McNemarResult(Frozen):
    """Exact McNemar test on discordant pairs (``b``: only challenger passed, ``c``: only champion passed)."""

    b: int
    c: int
    p_value: float


@dataclass(frozen=True)
class _Paired:
    """Aligned arrays over the cases present in both maps (sorted by case id for determinism)."""

    challenger: FloatArray
    champion: FloatArray
    codes: IntArray
    n_clusters: int
    n_unpaired_challenger: int
    n_unpaired_champion: int

    @property
    def diffs(self) -> FloatArray:
        return self.challenger - self.champion


def average_repeats(observations: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Mean value per case id over its repeats.

    Repeats (K > 1 runs of the same case) reduce within-case noise, but they are not independent cases:
    the case (and above it the cluster) is the unit of analysis. Averaging first keeps every case at
    weight 1 and lets the clustered SE see the true number of independent units.
    """
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for case_id, value in observations:
        sums[case_id] += value
        counts[case_id] += 1
    return {case_id: sums[case_id] / counts[case_id] for case_id in sums}


def _cluster_codes(clusters: Sequence[str]) -> tuple[IntArray, int]:
    labels = np.asarray(list(clusters), dtype=str)
    uniques, codes = np.unique(labels, return_inverse=True)
    return codes.astype(np.intp), len(uniques)


def _finite(values: Sequence[float] | FloatArray, what: str) -> FloatArray:
    x = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise StatsInputError(f"{what} contains NaN or infinite values")
    return x


def _t_interval(mean: _Num, se: _Num, df: float, confidence: float) -> tuple[_Num, _Num]:
    from scipy import stats

    crit = float(stats.t.ppf(1.0 - (1.0 - confidence) / 2.0, df))
    return mean - crit * se, mean + crit * se


@dataclass(frozen=True)
class EstimateBatch:
    """Clustered means of many samples sharing one cluster layout (rows of a 2-D array), as arrays."""

    mean: FloatArray
    se: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    confidence: float
    n: int
    n_clusters: int
    df: float


def clustered_mean_batch(
    values: FloatArray, clusters: Sequence[str], confidence: float = 0.95
) -> EstimateBatch:
    """:func:`clustered_mean` of every row of ``values`` (shape ``(k, n)``) at once; same formula.

    For simulations and resampling, where thousands of samples share the cluster labels of their columns.
    """
    if not 0.0 < confidence < 1.0:
        raise StatsInputError(f"confidence must be in (0, 1), got {confidence}")
    x = _finite(values, "values")
    if x.ndim != 2:
        raise StatsInputError(f"values must be a 2-D array, got {x.ndim} dimension(s)")
    n = int(x.shape[1])
    if n != len(clusters):
        raise StatsInputError(f"{n} values per row but {len(clusters)} cluster labels")
    if n == 0:
        raise StatsInputError("no values to average")
    codes, n_clusters = _cluster_codes(clusters)
    if n_clusters < 2:
        raise StatsInputError(f"a clustered SE needs at least 2 clusters, got {n_clusters}")
    mean = x.mean(axis=1)
    # Sums of each cluster's residuals, columns grouped by cluster: O(k x n) memory. A (n x clusters)
    # membership matrix was 200 MB at 5,000 one-case clusters and 1.7 GB at 15,000.
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(n_clusters))
    cluster_sums = np.add.reduceat((x - mean[:, None])[:, order], starts, axis=1)
    share = np.bincount(codes, minlength=n_clusters) / n  # p_g = n_g / n, each < 1 with two clusters or more
    variance = np.sum(cluster_sums**2 / (1.0 - share), axis=1) / n**2
    se = np.sqrt(variance)
    df = bell_mccaffrey_df(share)
    low, high = _t_interval(mean, se, df, confidence)
    return EstimateBatch(
        mean=mean, se=se, ci_low=low, ci_high=high, confidence=confidence, n=n, n_clusters=n_clusters, df=df
    )


def clustered_mean(
    values: Sequence[float] | FloatArray, clusters: Sequence[str], confidence: float = 0.95
) -> Estimate:
    """Mean of ``values`` with a CR2 cluster-robust SE and a t interval on Bell-McCaffrey degrees of freedom.

    With residuals ``e_i = x_i - mean``, cluster sums ``S_g = sum_{i in g} e_i``, ``n`` values, ``G`` clusters
    and cluster shares ``p_g = n_g / n``::

        Var(mean) = sum_g S_g**2 / (1 - p_g) / n**2
        df = 1 / (sum_g p_g**2 + (sum_g q_g)**2 - sum_g q_g**2),   q_g = p_g**2 / (1 - p_g)

    This is the bias-reduced linearization (CR2) of an intercept-only OLS, whose ``(I - H_gg)^(-1/2)``
    adjustment scales each cluster sum by ``1 / sqrt(1 - p_g)``, with the Bell-McCaffrey degrees of freedom
    (Bell and McCaffrey 2002; Imbens and Kolesar 2016). With equal clusters both reduce exactly to CR1
    (``G / (G - 1) * sum_g S_g**2 / n**2``, statsmodels' cluster covariance) on ``G - 1`` degrees of freedom,
    and each case in its own cluster to the usual ``s / sqrt(n)`` on ``n - 1``. With unequal clusters CR1 on
    ``G - 1`` is too narrow: with one cluster of 40 cases beside eleven of 2, the gate's one-sided bound at
    alpha 0.05 promoted an equal challenger in 27% of 8,000 simulated evaluations (CR2 with these df: 5.9%;
    tests/simulation/test_gate_error_rates.py).
    """
    batch = clustered_mean_batch(np.asarray(values, dtype=np.float64).reshape(1, -1), clusters, confidence)
    return Estimate(
        mean=float(batch.mean[0]),
        se=float(batch.se[0]),
        ci_low=float(batch.ci_low[0]),
        ci_high=float(batch.ci_high[0]),
        confidence=confidence,
        n=batch.n,
        n_clusters=batch.n_clusters,
        df=batch.df,
    )


def bell_mccaffrey_df(share: FloatArray) -> float:
    """Bell-McCaffrey degrees of freedom of the CR2 variance of a mean, from the clusters' shares of the cases.

    ``(tr M)**2 / tr(M**2)`` for the ``G x G`` matrix ``M`` of that estimator under a working model of
    independent, equal-variance errors, which for an intercept-only model is ``M_gg = p_g / n`` and
    ``M_gh = -p_g * p_h / (n * sqrt((1 - p_g) * (1 - p_h)))``; the ``n`` cancels (see :func:`clustered_mean`).
    """
    q = share**2 / (1.0 - share)
    return float(1.0 / (np.sum(share**2) + np.sum(q) ** 2 - np.sum(q**2)))


def _align(
    challenger: Mapping[str, float], champion: Mapping[str, float], clusters: Mapping[str, str]
) -> _Paired:
    shared = sorted(set(challenger) & set(champion))
    missing = [case_id for case_id in shared if case_id not in clusters]
    if missing:
        raise StatsInputError(f"{len(missing)} paired cases have no cluster key (first: {missing[0]!r})")
    if not shared:
        raise StatsInputError("the two variants have no case in common")
    codes, n_clusters = _cluster_codes([clusters[case_id] for case_id in shared])
    return _Paired(
        challenger=_finite([challenger[c] for c in shared], "challenger scores"),
        champion=_finite([champion[c] for c in shared], "champion scores"),
        codes=codes,
        n_clusters=n_clusters,
        n_unpaired_challenger=len(challenger) - len(shared),
        n_unpaired_champion=len(champion) - len(shared),
    )


def _p95(values: FloatArray) -> float:
    return float(np.quantile(values, P95, method="inverted_cdf"))


def paired_differences(
    challenger: Mapping[str, float],
    champion: Mapping[str, float],
    clusters: Mapping[str, str],
    *,
    method: Method = "t",
    statistic: Statistic = "mean",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    metric: str = "",
) -> PairedComparison:
    """Compare challenger with champion on the case ids present in both (``case_id -> value`` maps).

    ``clusters`` maps case id to cluster key. ``method="t"`` is the clustered t of the mean difference;
    ``method="bootstrap"`` resamples clusters (see :func:`paired_cluster_bootstrap`) and is the only method
    for ``statistic="p95"``. Cases present in one map only are counted in ``n_unpaired_*`` and ignored.
    """
    if method == "bootstrap":
        return paired_cluster_bootstrap(
            challenger,
            champion,
            clusters,
            statistic=statistic,
            confidence=confidence,
            n_resamples=n_resamples,
            seed=seed,
            metric=metric,
        )
    if statistic != "mean":
        raise StatsInputError(f"method 't' supports statistic 'mean' only, got {statistic!r}")
    paired = _align(challenger, champion, clusters)
    labels = [str(code) for code in paired.codes]
    est = clustered_mean(paired.diffs, labels, confidence)
    return PairedComparison(
        metric=metric,
        method="t",
        statistic="mean",
        estimate=est.mean,
        se=est.se,
        ci_low=est.ci_low,
        ci_high=est.ci_high,
        confidence=confidence,
        df=est.df,
        n_paired=est.n,
        n_clusters=est.n_clusters,
        n_unpaired_challenger=paired.n_unpaired_challenger,
        n_unpaired_champion=paired.n_unpaired_champion,
        challenger_value=float(paired.challenger.mean()),
        champion_value=float(paired.champion.mean()),
    )


def _cluster_weights(idx: IntArray, n_clusters: int) -> FloatArray:
    """How often each cluster appears in each resample: ``idx`` (B, G') of cluster indices -> (B, G)."""
    weights = np.zeros((idx.shape[0], n_clusters))
    np.add.at(weights, (np.arange(idx.shape[0])[:, None], idx), 1.0)
    return weights


def _weighted_p95(values: FloatArray, weights: FloatArray) -> FloatArray:
    """Inverted-CDF p95 of ``values`` under each row of ``weights`` (B, n); numpy's for unit weights."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[:, order], axis=1)
    target = P95 * cumulative[:, -1:] * (1.0 - 1e-12)
    first = np.argmax(cumulative >= target, axis=1)
    return np.asarray(values[order][first], dtype=np.float64)


def bootstrap_batch(values_per_resample: int) -> int:
    """How many resamples (bootstrap or jackknife) the statistic is given at once: about
    :data:`BOOTSTRAP_BATCH_VALUES` values in all, so its arrays stay tens of MB whatever the number of cases.

    Without a batch scipy hands the statistic every resample at once, and BCa's jackknife one resample per
    cluster: (clusters x clusters) arrays, 1 GB at 5,000 clusters (every case its own cluster).
    """
    return max(1, BOOTSTRAP_BATCH_VALUES // max(1, values_per_resample))


def _run_bootstrap(
    data: tuple[FloatArray, ...] | tuple[IntArray, ...],
    statistic: object,
    *,
    paired: bool,
    confidence: float,
    n_resamples: int,
    seed: int,
    batch: int,
) -> tuple[float, float, float]:
    """scipy's bootstrap (BCa, percentile if BCa is undefined); returns (ci_low, ci_high, standard error).

    ``batch`` bounds the resamples handed to ``statistic`` at once (see :func:`bootstrap_batch`); the
    interval does not depend on it (the resamples are drawn from the same stream either way)."""
    from scipy import stats

    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            # A BCa interval can be undefined (e.g. too few distinct replicates): fall back to percentile.
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            # So can its acceleration, when the jackknife values do not vary (0 / 0, which numpy warns
            # about): the interval is checked below, so the warning would only reach the user's terminal.
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.bootstrap(
                data,
                statistic,
                n_resamples=n_resamples,
                batch=batch,
                paired=paired,
                vectorized=True,
                confidence_level=confidence,
                method=method,
                rng=np.random.default_rng(seed),
            )
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            return low, high, float(res.standard_error)
        logger.debug("method=<%s> | bootstrap interval undefined, trying the next method", method)
    raise StatsInputError("the bootstrap interval is undefined for these data")


def paired_cluster_bootstrap(
    challenger: Mapping[str, float],
    champion: Mapping[str, float],
    clusters: Mapping[str, str],
    *,
    statistic: Statistic = "mean",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    metric: str = "",
) -> PairedComparison:
    """Cluster bootstrap of challenger minus champion; for skewed metrics such as latency and cost.

    Whole clusters are resampled with replacement (both variants' values of a case travel together, so the
    pairing is kept), via ``scipy.stats.bootstrap`` with a fixed ``seed`` and the BCa interval:

    - ``statistic="mean"``: the data are the per-cluster arrays (sum of d, number of cases), resampled with
      ``paired=True``; the statistic is the ratio ``sum(sums) / sum(counts)``, the mean difference per case.
    - ``statistic="p95"``: the data are cluster indices; each resample weights cases by how often their
      cluster was drawn and the statistic is ``p95(challenger) - p95(champion)``.

    Known limit (measured in session 18's review, not fixed): with few clusters the BCa interval is too
    narrow. A guardrail worse by exactly its margin was judged "held" in 12% (latency p95) and 11% (cost) of
    3,000 simulated evaluations of 10 clusters of 3 at a one-sided 5%, and in about 7% at 40 clusters of 3;
    the clustered t on the same cost data stayed at 5%. The latency and cost guardrails use this method by
    default, so with few clusters they pass a worse challenger more often than their alpha says.
    """
    if not 0.0 < confidence < 1.0:
        raise StatsInputError(f"confidence must be in (0, 1), got {confidence}")
    paired = _align(challenger, champion, clusters)
    if paired.n_clusters < 2:
        raise StatsInputError(f"a cluster bootstrap needs at least 2 clusters, got {paired.n_clusters}")
    a, b, codes, n_clusters = paired.challenger, paired.champion, paired.codes, paired.n_clusters

    if statistic == "mean":
        estimate = float(paired.diffs.mean())
        sums = np.asarray(np.bincount(codes, weights=paired.diffs, minlength=n_clusters), dtype=np.float64)
        counts = np.bincount(codes, minlength=n_clusters).astype(np.float64)

        def ratio(s: FloatArray, c: FloatArray, axis: int = -1) -> FloatArray:
            return np.asarray(s.sum(axis=axis) / c.sum(axis=axis), dtype=np.float64)

        statistic_fn: object = ratio
        data: tuple[FloatArray, ...] | tuple[IntArray, ...] = (sums, counts)
        degenerate = bool(np.ptp(paired.diffs) == 0.0)
    else:
        estimate = _p95(a) - _p95(b)

        def p95_difference(idx: IntArray, axis: int = -1) -> FloatArray:
            idx = np.moveaxis(idx, axis, -1)
            flat = idx.reshape(-1, idx.shape[-1])
            case_weights = _cluster_weights(flat, n_clusters)[:, codes]
            diff = _weighted_p95(a, case_weights) - _weighted_p95(b, case_weights)
            return diff.reshape(idx.shape[:-1])

        statistic_fn = p95_difference
        data = (np.arange(n_clusters, dtype=np.intp),)
        # Both constant, or the same values case for case: every resample's p95 difference is the same.
        degenerate = bool((np.ptp(a) == 0.0 and np.ptp(b) == 0.0) or np.array_equal(a, b))

    if degenerate:
        # Every resample gives the same value: the interval is that value (scipy would return NaN).
        low = high = estimate
        se = 0.0
    else:
        low, high, se = _run_bootstrap(
            data,
            statistic_fn,
            paired=statistic == "mean",
            confidence=confidence,
            n_resamples=n_resamples,
            seed=seed,
            # The mean's statistic reads one value per cluster and resample, the p95's one weight per case.
            batch=bootstrap_batch(n_clusters if statistic == "mean" else int(a.size)),
        )
    summary = (float(a.mean()), float(b.mean())) if statistic == "mean" else (_p95(a), _p95(b))
    return PairedComparison(
        metric=metric,
        method="bootstrap",
        statistic=statistic,
        estimate=estimate,
        se=se,
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        df=None,
        n_paired=int(a.size),
        n_clusters=n_clusters,
        n_unpaired_challenger=paired.n_unpaired_challenger,
        n_unpaired_champion=paired.n_unpaired_champion,
        challenger_value=summary[0],
        champion_value=summary[1],
    )


def naive_paired_t(
    challenger: Mapping[str, float],
    champion: Mapping[str, float],
    *,
    confidence: float = 0.95,
    metric: str = "",
) -> PairedComparison:
    """The unclustered paired t (``sd(d) / sqrt(n)``, ``n - 1`` df): wrong for clustered cases; a baseline."""
    shared = sorted(set(challenger) & set(champion))
    if len(shared) < 2:
        raise StatsInputError(f"a paired t needs at least 2 paired cases, got {len(shared)}")
    a = _finite([challenger[c] for c in shared], "challenger scores")
    b = _finite([champion[c] for c in shared], "champion scores")
    d = a - b
    n = int(d.size)
    mean = float(d.mean())
    se = float(d.std(ddof=1) / np.sqrt(n))
    low, high = _t_interval(mean, se, n - 1, confidence)
    return PairedComparison(
        metric=metric,
        method="naive_t",
        statistic="mean",
        estimate=mean,
        se=se,
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        df=n - 1,
        n_paired=n,
        n_clusters=n,
        n_unpaired_challenger=len(challenger) - n,
        n_unpaired_champion=len(champion) - n,
        challenger_value=float(a.mean()),
        champion_value=float(b.mean()),
    )


def discordant_pairs(challenger: Mapping[str, float], champion: Mapping[str, float]) -> tuple[int, int]:
    """Discordant pairs of binary scores: b = only the challenger scored 1, c = only the champion did."""
    shared = set(challenger) & set(champion)
    b = sum(1 for c in shared if challenger[c] == 1.0 and champion[c] == 0.0)
    c = sum(1 for c in shared if challenger[c] == 0.0 and champion[c] == 1.0)
    return b, c


def mcnemar_exact(b: int, c: int) -> McNemarResult:
    """Exact two-sided McNemar test: ``b ~ Binomial(b + c, 1/2)`` under no difference (scipy's binomtest).

    It treats cases as independent, so with clustered cases it is a cross-check, not the gate.
    """
    from scipy import stats

    if b < 0 or c < 0:
        raise StatsInputError(f"discordant counts must be non-negative, got b={b}, c={c}")
    p_value = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return McNemarResult(b=b, c=c, p_value=p_value)
