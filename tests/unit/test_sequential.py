"""mSPRT: always-valid under continuous monitoring (simulated), quick to catch a clearly worse challenger."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from agent_release.steps.paired_stats import StatsInputError
from agent_release.steps.sequential import MsprtState, mixture_log_likelihood_ratio

ALPHA = 0.05
LOOKS = 50


def _mc_ceiling(p: float, n: int) -> float:
    return p + 3 * math.sqrt(p * (1 - p) / n)


def _bernoulli_paths(
    rng: np.random.Generator, sims: int, p_a: float, p_b: float, batch: int
) -> tuple[np.ndarray, ...]:
    """Cumulative (n, events) per arm after each look, shape (sims, LOOKS)."""
    events_a = np.cumsum(rng.binomial(batch, p_a, size=(sims, LOOKS)), axis=1).astype(float)
    events_b = np.cumsum(rng.binomial(batch, p_b, size=(sims, LOOKS)), axis=1).astype(float)
    n = batch * np.arange(1, LOOKS + 1, dtype=float)
    return n, events_a, events_b


def _pooled_variance(n: np.ndarray, xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
    pooled = (xa + xb + 1) / (2 * n + 2)
    return np.asarray(pooled * (1 - pooled) * (2 / n))


@pytest.mark.parametrize("alternative", ["two-sided", "greater"])
def test_msprt_keeps_alpha_over_50_looks_where_a_repeated_z_test_does_not(alternative: str) -> None:
    sims = 4000
    rng = np.random.default_rng(20)
    n, xa, xb = _bernoulli_paths(rng, sims, 0.05, 0.05, batch=100)
    delta = xa / n - xb / n
    variance = _pooled_variance(n, xa, xb)

    log_lr = mixture_log_likelihood_ratio(delta, variance, 0.05, alternative=alternative)  # type: ignore[arg-type]
    msprt_rate = float(np.mean(log_lr.max(axis=1) >= math.log(1 / ALPHA)))

    z = delta / np.sqrt(variance)
    naive_p = 2 * stats.norm.sf(np.abs(z)) if alternative == "two-sided" else stats.norm.sf(z)
    naive_rate = float(np.mean(naive_p.min(axis=1) <= ALPHA))

    assert msprt_rate <= _mc_ceiling(ALPHA, sims)
    assert naive_rate > 2 * ALPHA  # peeking 50 times: roughly a 20-30% false alarm rate


def test_msprt_for_means_keeps_alpha_over_50_looks() -> None:
    sims, batch = 3000, 40
    rng = np.random.default_rng(21)
    a = rng.normal(1.0, 0.3, size=(sims, LOOKS, batch))
    b = rng.normal(1.0, 0.3, size=(sims, LOOKS, batch))
    n = batch * np.arange(1, LOOKS + 1, dtype=float)

    def running(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s, ss = np.cumsum(x.sum(axis=2), axis=1), np.cumsum((x * x).sum(axis=2), axis=1)
        return s / n, (ss - s * s / n) / (n - 1)

    mean_a, var_a = running(a)
    mean_b, var_b = running(b)
    log_lr = mixture_log_likelihood_ratio(mean_a - mean_b, var_a / n + var_b / n, tau=0.1)
    assert float(np.mean(log_lr.max(axis=1) >= math.log(1 / ALPHA))) <= _mc_ceiling(ALPHA, sims)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_statistic_is_the_likelihood_ratio_averaged_over_the_mixing_distribution(alternative: str) -> None:
    # Lambda = E[exp(u (delta - theta0) / V - u^2 / (2 V))], u = theta - theta0, theta ~ N(theta0, tau^2); a
    # one-sided test mixes over the half on its side (a half-normal: twice the density there).
    from scipy import integrate

    delta, variance, tau, theta0 = 0.03, 0.0004, 0.05, 0.01

    def weighted_ratio(theta: float) -> float:
        u = theta - theta0
        ratio = math.exp(u * (delta - theta0) / variance - u * u / (2 * variance))
        return ratio * float(stats.norm.pdf(theta, theta0, tau))

    low, high, weight = {
        "two-sided": (-math.inf, math.inf, 1.0),
        "greater": (theta0, math.inf, 2.0),
        "less": (-math.inf, theta0, 2.0),
    }[alternative]
    expected = math.log(weight * integrate.quad(weighted_ratio, low, high)[0])
    log_lr = mixture_log_likelihood_ratio(
        delta,
        variance,
        tau,
        null_difference=theta0,
        alternative=alternative,  # type: ignore[arg-type]
    )
    assert float(log_lr) == pytest.approx(expected, rel=1e-6)


def test_state_matches_the_vectorised_statistic_and_its_p_value_never_rises() -> None:
    rng = np.random.default_rng(22)
    state = MsprtState.for_error_rates(tau=0.05, alternative="greater")
    n_a = n_b = x_a = x_b = 0
    previous = 1.0
    for _ in range(20):
        a = rng.binomial(1, 0.08, size=30)
        b = rng.binomial(1, 0.05, size=70)  # unequal allocation, as in a 30/70 canary
        state = state.update(a.tolist(), b.tolist())
        n_a, n_b, x_a, x_b = n_a + 30, n_b + 70, x_a + a.sum(), x_b + b.sum()
        pooled = (x_a + x_b + 1) / (n_a + n_b + 2)
        variance = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
        expected = mixture_log_likelihood_ratio(x_a / n_a - x_b / n_b, variance, 0.05, alternative="greater")
        assert state.log_likelihood_ratio == pytest.approx(float(expected))
        assert state.p_value <= previous
        assert state.p_value == pytest.approx(min(previous, 1.0, math.exp(-float(expected))))
        previous = state.p_value
    assert state.looks == 20
    assert state.difference == pytest.approx(x_a / n_a - x_b / n_b)


def test_mean_variance_is_each_arms_sample_variance_over_its_size() -> None:
    rng = np.random.default_rng(26)
    a, b = rng.normal(1.2, 0.3, 12), rng.normal(1.0, 0.2, 9)
    state = MsprtState.for_means(tau=0.1).update(a[:7].tolist(), b[:4].tolist())
    state = state.update(a[7:].tolist(), b[4:].tolist())  # running sums over two looks
    assert state.variance == pytest.approx(a.var(ddof=1) / 12 + b.var(ddof=1) / 9, rel=1e-9)
    # Two values per arm are enough: var([1, 2]) = 0.5, var([0, 0.5]) = 0.125.
    assert MsprtState.for_means(tau=0.1).update([1.0, 2.0], [0.0, 0.5]).variance == pytest.approx(
        0.25 + 0.0625
    )
    # Constant values give no variance to test with: no statistic, no evidence.
    flat = MsprtState.for_means(tau=0.1).update([1.0, 1.0], [2.0, 2.0])
    assert flat.variance is None and flat.p_value == 1.0


def test_update_counts_equals_update_with_outcomes() -> None:
    by_outcomes = MsprtState.for_error_rates().update([1, 0, 0, 1, 1], [0, 0, 0, 0, 1, 0])
    by_counts = MsprtState.for_error_rates().update_counts(5, 3, 6, 1)
    assert by_counts.p_value == pytest.approx(by_outcomes.p_value)
    assert by_counts.log_likelihood_ratio == pytest.approx(by_outcomes.log_likelihood_ratio)


def test_clearly_worse_challenger_is_caught_within_a_few_batches() -> None:
    rng = np.random.default_rng(23)
    sims, caught_by = 200, []
    for _ in range(sims):
        state = MsprtState.for_error_rates(tau=0.05, alternative="greater")
        for look in range(1, LOOKS + 1):
            state = state.update(rng.binomial(1, 0.20, 50).tolist(), rng.binomial(1, 0.02, 50).tolist())
            if state.rejects(ALPHA):
                caught_by.append(look)
                break
    assert len(caught_by) == sims
    assert np.quantile(caught_by, 0.95) <= 4


def test_one_sided_test_does_not_fire_when_the_challenger_is_better() -> None:
    rng = np.random.default_rng(24)
    state = MsprtState.for_error_rates(alternative="greater")
    for _ in range(LOOKS):
        state = state.update(rng.binomial(1, 0.02, 50).tolist(), rng.binomial(1, 0.20, 50).tolist())
    assert not state.rejects(ALPHA)
    two_sided = MsprtState.for_error_rates(alternative="two-sided").update_counts(2500, 50, 2500, 500)
    assert two_sided.rejects(ALPHA)


def test_latency_shift_is_detected_and_reported_by_difference() -> None:
    rng = np.random.default_rng(25)
    state = MsprtState.for_means(tau=0.2, alternative="greater")
    for _ in range(10):
        state = state.update(rng.normal(1.5, 0.3, 40).tolist(), rng.normal(1.0, 0.3, 40).tolist())
    assert state.rejects(ALPHA)
    assert state.difference == pytest.approx(0.5, abs=0.05)


def test_no_evidence_until_both_arms_have_data() -> None:
    state = MsprtState.for_means(tau=0.1).update([1.0, 2.0, 3.0], [])
    assert state.p_value == 1.0
    assert state.log_likelihood_ratio == 0.0
    assert state.variance is None
    with pytest.raises(StatsInputError, match="0/1"):
        MsprtState.for_error_rates().update([0.5], [0.0])
    with pytest.raises(StatsInputError, match="Bernoulli"):
        MsprtState.for_means(tau=0.1).update_counts(10, 1, 10, 1)


def test_settings_and_counts_that_make_no_test_are_refused() -> None:
    for tau in (0.0, -0.1):
        with pytest.raises(StatsInputError, match="tau must be positive"):
            mixture_log_likelihood_ratio(0.1, 0.01, tau)
    state = MsprtState.for_error_rates()
    for alpha in (0.0, 1.0):
        with pytest.raises(StatsInputError, match="alpha must be in"):
            state.rejects(alpha)
    for counts in ((10, 11, 10, 0), (10, 0, 10, -1)):
        with pytest.raises(StatsInputError, match="events must lie in"):
            state.update_counts(*counts)
