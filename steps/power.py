"""Power analysis for the promotion gate: the minimum detectable effect (MDE) of a golden set.

Following E. Miller, "Adding Error Bars to Evals" (arXiv 2411.00640, section on power analysis), the
smallest true difference the gate detects with probability ``power`` at one-sided level ``alpha`` is::

    MDE = lambda * SE  ~  (t_{1-alpha, df} + t_{power, df}) * SE      (alpha/2 when two-sided)

where ``lambda`` is the noncentrality at which the t test on ``df`` degrees of freedom rejects with
probability ``power`` (solved exactly with scipy's noncentral t; the sum of quantiles on the right is the
usual approximation, slightly conservative for few clusters), and SE is the clustered standard error of the
mean per-case difference::

    SE = sd_diff * sqrt((DE - w * (1 - 1 / K)) / n)         K repeats averaged within each case
    DE = 1 + (m - 1) * ICC                                  design effect

Given the clusters' sizes ``n_g`` (``cluster_sizes``), ``m = sum n_g**2 / n``, which makes ``SE`` the exact
standard error of the mean under a common within-cluster correlation, and ``df`` is the Bell-McCaffrey
degrees of freedom of the gate's CR2 interval (:func:`~agent_release.steps.paired_stats.clustered_mean`).
With equal clusters both reduce to ``m = n / G`` and ``df = G - 1``, which are used when only the counts are
given; with unequal sizes those understate the SE (on the shipped golden set, 33 clusters of 3 cases and 36
of 7, the gate had 76% power at the MDE they gave for ICC 0.3, not 80%).

``sd_diff`` is the SD of a single run's per-case difference (challenger minus champion), ``ICC`` the share
of its variance that is shared within a cluster, and ``w`` (``within_case_share``) the share that is
run-to-run noise of the same case, the only part repeats average away (0 for deterministic agents, which
is the conservative default; ``ICC + w <= 1``). Run-to-run noise is independent from case to case, so the
design effect does not apply to it: averaging K runs removes ``w * (1 - 1/K)`` of the ``DE`` a single run
has. (Multiplying ``(1 - w) + w / K`` by ``DE`` instead, as an earlier version did, understated the SE
whenever K > 1, ICC > 0 and clusters hold more than one case: by 16% at m = 10, ICC 0.5, w 0.4, K 8.)
Alternatively pass an observed ``design_effect``, or use :func:`mde_from_se`
with the clustered SE of a previous run.

:func:`estimate_variance_components` gets ``sd_diff`` and ``ICC`` from an observed run;
:func:`clusters_needed` answers "how many clusters would make the MDE this small".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from agent_release.steps.backend import Frozen
from agent_release.steps.paired_stats import StatsInputError, bell_mccaffrey_df

# clusters_needed searches up to this many clusters before it calls a target unreachable.
MAX_CLUSTERS = 10_000_000


class MdeReport(Frozen):
    """The minimum detectable effect of one evaluation design, with the inputs that produced it."""

    mde: float
    se: float
    df: float
    design_effect: float
    icc: float | None
    sd_diff: float | None
    n_cases: int
    n_clusters: int
    repeats: int
    effective_n: float
    alpha: float
    power: float
    two_sided: bool


class VarianceComponents(Frozen):
    """Variance structure of per-case differences observed in one run."""

    mean: float
    sd: float
    icc: float
    mean_cluster_size: float
    design_effect: float
    n_cases: int
    n_clusters: int


def _check_levels(alpha: float, power: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise StatsInputError(f"alpha must be in (0, 1), got {alpha}")
    if not 0.0 < power < 1.0:
        raise StatsInputError(f"power must be in (0, 1), got {power}")


@lru_cache(maxsize=4096)  # pure, and clusters_needed asks for the same df repeatedly
def _multiplier(df: float, alpha: float, power: float, two_sided: bool) -> float:
    """Noncentrality at which a t test on ``df`` degrees of freedom has ``power`` at level ``alpha``."""
    from scipy import optimize, stats

    _check_levels(alpha, power)
    if not df > 0:
        raise StatsInputError(f"degrees of freedom must be positive, got {df}")
    level = alpha / 2.0 if two_sided else alpha
    if power <= level:
        raise StatsInputError(f"power {power} must exceed the test's level {level}")
    crit = float(stats.t.ppf(1.0 - level, df))

    def shortfall(ncp: float) -> float:
        reach = float(stats.nct.sf(crit, df, ncp))
        if two_sided:
            # The lower tail as sf(crit; -ncp), its mirror image: scipy's nct.cdf(-crit, df, ncp) returns NaN
            # deep in the tail on few degrees of freedom (df 1, ncp near 15), which stopped the root search.
            reach += float(stats.nct.sf(crit, df, -ncp))
        return reach - power

    # The approximation t_{1-level} + t_{power} sits close to the root; widen until it brackets it.
    high = crit + float(stats.t.ppf(power, df)) + 1.0
    while shortfall(high) < 0:
        high *= 2.0
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-10))


def mde_from_se(
    se: float, df: float, alpha: float = 0.05, power: float = 0.8, two_sided: bool = False
) -> float:
    """MDE for an observed clustered standard error ``se`` with ``df`` degrees of freedom (the gate's)."""
    if se < 0 or not math.isfinite(se):
        raise StatsInputError(f"standard error must be finite and non-negative, got {se}")
    return _multiplier(df, alpha, power, two_sided) * se


def minimum_detectable_effect(
    n_cases: int,
    n_clusters: int,
    repeats: int = 1,
    *,
    sd_diff: float = 0.5,
    icc: float | None = None,
    design_effect: float | None = None,
    within_case_share: float = 0.0,
    alpha: float = 0.05,
    power: float = 0.8,
    two_sided: bool = False,
    cluster_sizes: Sequence[int] | None = None,
) -> MdeReport:
    """MDE of a design with ``n_cases`` cases in ``n_clusters`` clusters, each run ``repeats`` times.

    Give either ``icc`` (the design effect is then ``1 + (m - 1) * icc``, see the module docstring for
    ``m``) or ``design_effect`` directly; neither means independent cases (design effect 1). The default
    ``sd_diff = 0.5`` is the largest SD a difference of two binary scores has when one variant only
    improves on the other's failures; pass an observed value when you have one. ``cluster_sizes`` (one count
    per cluster, summing to ``n_cases``) makes the design effect and degrees of freedom those of unequal
    clusters.
    """
    if n_clusters < 2 or n_cases < n_clusters:
        raise StatsInputError(
            f"a clustered design needs at least 2 clusters and at least one case per cluster: got {n_cases} "
            f"case(s) in {n_clusters} cluster(s) (give the golden cases a 'cluster' key that groups them into "
            "two or more clusters)"
        )
    if cluster_sizes is not None and (
        len(cluster_sizes) != n_clusters or sum(cluster_sizes) != n_cases or min(cluster_sizes) < 1
    ):
        raise StatsInputError(
            f"cluster_sizes must be {n_clusters} positive counts summing to {n_cases}, "
            f"got {len(cluster_sizes)} summing to {sum(cluster_sizes)}"
        )
    if repeats < 1:
        raise StatsInputError(f"repeats must be at least 1, got {repeats}")
    if sd_diff < 0 or not math.isfinite(sd_diff):
        raise StatsInputError(f"sd_diff must be finite and non-negative, got {sd_diff}")
    if not 0.0 <= within_case_share <= 1.0:
        raise StatsInputError(f"within_case_share must be in [0, 1], got {within_case_share}")
    if icc is not None and design_effect is not None:
        raise StatsInputError("give icc or design_effect, not both")
    if cluster_sizes is None:
        m, df = n_cases / n_clusters, float(n_clusters - 1)
    else:
        sizes = np.asarray(cluster_sizes, dtype=np.float64)
        m, df = float(np.sum(sizes**2)) / n_cases, bell_mccaffrey_df(sizes / n_cases)
    if icc is not None:
        if not 0.0 <= icc <= 1.0:
            raise StatsInputError(f"icc must be in [0, 1], got {icc}")
        deff = 1.0 + (m - 1.0) * icc
    else:
        deff = 1.0 if design_effect is None else design_effect
    if deff <= 0:
        raise StatsInputError(f"design effect must be positive, got {deff}")
    if icc is not None and icc + within_case_share > 1.0 + 1e-12:
        raise StatsInputError(
            f"icc {icc:g} and within_case_share {within_case_share:g} are shares of one run's variance: "
            "together at most 1"
        )
    # Run-to-run noise is independent between cases: repeats average it away outside the design effect.
    variance_share = deff - within_case_share * (1.0 - 1.0 / repeats)
    if variance_share <= 0:
        raise StatsInputError(
            f"design_effect {deff:g} is smaller than the run-to-run share it would average away "
            f"({within_case_share:g} x (1 - 1/{repeats}))"
        )
    # sd_diff scales the SE outside the square root: squaring it first overflows for SDs above ~1e154.
    se = sd_diff * math.sqrt(variance_share / n_cases)
    mde = mde_from_se(se, df, alpha=alpha, power=power, two_sided=two_sided) if math.isfinite(se) else se
    if not math.isfinite(mde):
        raise StatsInputError(f"sd_diff {sd_diff:g} is too large: the minimum detectable effect overflows")
    return MdeReport(
        mde=mde,
        se=se,
        df=df,
        design_effect=deff,
        icc=icc,
        sd_diff=sd_diff,
        n_cases=n_cases,
        n_clusters=n_clusters,
        repeats=repeats,
        effective_n=n_cases / deff,
        alpha=alpha,
        power=power,
        two_sided=two_sided,
    )


def clusters_needed(
    target_mde: float,
    observed_se: float,
    observed_clusters: int,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    two_sided: bool = False,
    observed_df: float | None = None,
) -> int | None:
    """Smallest number of clusters whose MDE is at most ``target_mde``, scaling an observed clustered SE.

    Assumes new clusters resemble the observed ones, so ``SE(G) = observed_se * sqrt(G0 / G)``, and, given
    ``observed_df`` (the gate's Bell-McCaffrey degrees of freedom, below ``G0 - 1`` when clusters differ in
    size), that the degrees of freedom keep their share of ``G - 1``: ``df(G) = observed_df * (G - 1) /
    (G0 - 1)``. On ``G - 1`` the critical value was smaller than the gate's, so an interval that still held
    the threshold could be told it needed no more clusters, or fewer than it had. Returns ``None`` if no
    count up to ``MAX_CLUSTERS`` reaches the target (or the target is not positive).
    """
    if observed_clusters < 2:
        raise StatsInputError(f"need an SE observed on at least 2 clusters, got {observed_clusters}")
    if target_mde <= 0 or not math.isfinite(target_mde):
        return None
    if observed_se == 0:
        return observed_clusters
    df_share = 1.0
    if observed_df is not None and math.isfinite(observed_df) and observed_df > 0:
        df_share = min(observed_df / (observed_clusters - 1), 1.0)

    def df_at(g: int) -> float:
        return df_share * (g - 1)

    def mde_at(g: int) -> float:
        se = observed_se * math.sqrt(observed_clusters / g)
        return mde_from_se(se, df_at(g), alpha=alpha, power=power, two_sided=two_sided)

    def implied(g: int) -> float:
        """Clusters that would reach the target if the noncentrality stayed at its value for ``g``."""
        ncp = _multiplier(df_at(g), alpha, power, two_sided)
        return observed_clusters * (ncp * observed_se / target_mde) ** 2

    from scipy import stats

    # Start from the normal approximation, iterate G <- implied(G) (the noncentrality changes slowly with
    # G, so this settles within a few steps), then step to the first G that reaches the target.
    z = stats.norm.ppf(1.0 - (alpha / 2.0 if two_sided else alpha)) + stats.norm.ppf(power)
    g = max(2, math.ceil(observed_clusters * (z * observed_se / target_mde) ** 2))
    for _ in range(20):
        if g > MAX_CLUSTERS:
            return None
        nxt = max(2, math.ceil(implied(g)))
        if nxt == g:
            break
        g = nxt
    while mde_at(g) > target_mde:
        g += 1
    while g > 2 and mde_at(g - 1) <= target_mde:
        g -= 1
    return g if g <= MAX_CLUSTERS else None


def estimate_variance_components(diffs: Sequence[float], clusters: Sequence[str]) -> VarianceComponents:
    """SD and ICC of per-case differences (repeats already averaged) observed in one run.

    The ICC is the one-way ANOVA estimator on cases grouped by cluster,
    ``(MSB - MSW) / (MSB + (n0 - 1) * MSW)`` with ``n0 = (n - sum n_g**2 / n) / (G - 1)``, clipped to
    [0, 1] (0 for constant differences); for balanced clusters it equals the REML variance-component
    estimate when that is positive.
    Feed ``sd`` and ``icc`` to :func:`minimum_detectable_effect` for a design with the same repeats.
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.size != len(clusters):
        raise StatsInputError(f"{d.size} differences but {len(clusters)} cluster labels")
    if not np.all(np.isfinite(d)):
        raise StatsInputError("differences contain NaN or infinite values")
    codes = np.unique(np.asarray(list(clusters), dtype=str), return_inverse=True)[1]
    n, g = int(d.size), (int(codes.max()) + 1 if d.size else 0)
    if g < 2 or n <= g:
        raise StatsInputError(f"need at least 2 clusters and more cases than clusters, got {n}/{g}")
    sizes = np.bincount(codes).astype(np.float64)
    cluster_means = np.bincount(codes, weights=d) / sizes
    grand = float(d.mean())
    msb = float(np.sum(sizes * (cluster_means - grand) ** 2) / (g - 1))
    msw = float(np.sum((d - cluster_means[codes]) ** 2) / (n - g))
    n0 = (n - float(np.sum(sizes**2)) / n) / (g - 1)
    denominator = msb + (n0 - 1.0) * msw
    # Constant differences share no variance, but the rounding of the grand and cluster means can leave MSB
    # at 2e-33 beside an MSW of exactly 0, which read as an ICC of 1.
    constant = bool(np.ptp(d) == 0.0)
    icc = 0.0 if constant or denominator <= 0 else min(1.0, max(0.0, (msb - msw) / denominator))
    m = n / g
    return VarianceComponents(
        mean=grand,
        sd=float(d.std(ddof=1)),
        icc=icc,
        mean_cluster_size=m,
        design_effect=1.0 + (m - 1.0) * icc,
        n_cases=n,
        n_clusters=g,
    )


def format_effect(value: float, decimals: int = 4) -> str:
    """An effect or SE for people: fixed decimals on a metric's own scale, scientific notation past a
    million (``plan --sd 1e308`` printed a 300-digit MDE)."""
    return f"{value:.{decimals}f}" if abs(value) < 1e6 else f"{value:.{decimals}g}"
