"""Live guards on synthetic per-variant metrics: thresholds, minimum calls, mSPRT, raw vs aggregate inputs."""

from __future__ import annotations

import random

import numpy as np
import pytest

from agent_release.steps.backend import VariantMetrics
from agent_release.steps.guards import (
    GuardMonitor,
    GuardReading,
    error_rate_lower_bound,
    new_error_outcomes,
    percentile,
    read_metrics,
    threshold_trip,
)
from agent_release.steps.promote_config import GuardConfig


def raw_metrics(variant: str, outcomes: list[bool], latencies: list[float] | None = None) -> VariantMetrics:
    """Metrics as the local runtime reports them: raw outcomes (True = ok) and latencies, plus counts."""
    latencies = latencies if latencies is not None else [10.0] * len(outcomes)
    return VariantMetrics(
        variant=variant,
        invocations=len(outcomes),
        errors_4xx=0,
        errors_5xx=sum(1 for ok in outcomes if not ok),
        latencies_ms=tuple(latencies),
        outcomes=tuple(outcomes),
    )


def aggregate_metrics(variant: str, calls: int, errors: int, p95: float | None = None) -> VariantMetrics:
    """Metrics as CloudWatch gives them: counts and percentiles, no raw observations."""
    return VariantMetrics(
        variant=variant, invocations=calls, errors_4xx=0, errors_5xx=errors, model_latency_ms_p95=p95
    )


def test_percentile_matches_numpy() -> None:
    rng = random.Random(3)
    values = [rng.uniform(0, 500) for _ in range(97)]
    for q in (0, 50, 95, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([], 95) is None


def test_read_metrics_prefers_raw_latencies_and_counts_only_5xx_as_errors() -> None:
    m = VariantMetrics(
        variant="c",
        invocations=20,
        errors_4xx=2,  # the caller's mistakes, not the challenger's
        errors_5xx=5,
        model_latency_ms_p95=1.0,  # ignored: the raw latencies are authoritative
        latencies_ms=tuple(float(i) for i in range(1, 21)),
        outcomes=tuple([True] * 15 + [False] * 5),
    )
    r = read_metrics(m, "c")
    assert r.errors == 5
    assert r.error_rate == pytest.approx(0.25)
    assert r.latency_p95_ms == pytest.approx(float(np.percentile(range(1, 21), 95)))
    assert read_metrics(aggregate_metrics("c", 10, 1, p95=123.0), "c").latency_p95_ms == 123.0
    empty = read_metrics(None, "x")
    assert (empty.invocations, empty.errors, empty.error_rate) == (0, 0, None)


def test_threshold_waits_for_min_invocations_then_trips_on_error_rate() -> None:
    cfg = GuardConfig(max_error_rate=0.1, min_invocations=10, msprt_alpha=0.05)
    few = read_metrics(aggregate_metrics("c", 9, 9), "c")
    assert threshold_trip(cfg, few) is None  # every call failed, but 9 calls are not yet evidence
    # 4 of 10: the 95% Clopper-Pearson lower bound is beta.ppf(0.05, 4, 7) = 0.150 > 10%.
    enough = read_metrics(aggregate_metrics("c", 10, 4), "c")
    reason = threshold_trip(cfg, enough)
    assert reason is not None and "4/10" in reason and "at least 15.0% with 95% confidence" in reason
    assert error_rate_lower_bound(4, 10, 0.05) == pytest.approx(0.150, abs=5e-4)
    # 2 of 10 is above 10% but may be chance at a true 10% (lower bound 3.7%): not yet a trip.
    assert threshold_trip(cfg, read_metrics(aggregate_metrics("c", 10, 2), "c")) is None
    assert threshold_trip(cfg, read_metrics(aggregate_metrics("c", 10, 1), "c")) is None  # 10% is not > 10%


@pytest.mark.parametrize(
    ("errors", "calls", "expected"),
    [
        (0, 10, 0.0),  # no error seen: no evidence of any rate
        (0, 0, 0.0),
        (1, 1, 0.05),  # P(X >= 1) = p = alpha
        (1, 10, 1 - 0.95**0.1),  # P(X >= 1) = 1 - (1 - p)^n = alpha
        (10, 10, 0.05**0.1),  # P(X = n) = p^n = alpha
    ],
)
def test_error_rate_lower_bound_matches_its_closed_forms(errors: int, calls: int, expected: float) -> None:
    assert error_rate_lower_bound(errors, calls, 0.05) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_an_error_rate_at_its_limit_never_trips_even_at_a_lax_alpha() -> None:
    # Above alpha 0.5 the one-sided "lower" bound lies above the observed rate; the rate must still exceed
    # the limit for the guard to trip.
    cfg = GuardConfig(max_error_rate=0.1, min_invocations=1, msprt_alpha=0.9)
    assert error_rate_lower_bound(1, 10, 0.9) > 0.1
    assert threshold_trip(cfg, read_metrics(aggregate_metrics("c", 10, 1), "c")) is None
    assert threshold_trip(cfg, read_metrics(aggregate_metrics("c", 10, 2), "c")) is not None


def test_an_error_rate_bound_exactly_at_the_limit_does_not_trip() -> None:
    # One failed call of one: its 95% lower bound is exactly 5% (beta.ppf(0.05, 1, 1)), not above a 5% limit.
    cfg = GuardConfig(max_error_rate=0.05, min_invocations=1, msprt_alpha=0.05)
    assert error_rate_lower_bound(1, 1, 0.05) == 0.05
    assert threshold_trip(cfg, read_metrics(aggregate_metrics("c", 1, 1), "c")) is None
    assert threshold_trip(cfg, read_metrics(aggregate_metrics("c", 2, 2), "c")) is not None


def test_with_min_invocations_0_the_guards_still_wait_for_a_first_call() -> None:
    cfg = GuardConfig(min_invocations=0, max_latency_p95_ms=200)
    no_calls = GuardReading(variant="c", invocations=0, errors=0, error_rate=None, latency_p95_ms=900.0)
    assert threshold_trip(cfg, no_calls) is None
    # From the first call on, a reported p95 above the limit trips (aggregates: nothing else to go on) ...
    assert threshold_trip(cfg, read_metrics(aggregate_metrics("c", 1, 0, p95=900.0), "c", 200)) is not None
    # ... one at the limit does not ...
    assert threshold_trip(cfg, read_metrics(aggregate_metrics("c", 1, 0, p95=200.0), "c", 200)) is None
    # ... nor one slow call of one: its lower bound is exactly 5%, not above it.
    assert threshold_trip(cfg, read_metrics(raw_metrics("c", [True], [900.0]), "c", 200)) is None


def _canaries_tripped(true_rate: float, trials: int = 400) -> float:
    """Share of simulated canaries whose error-rate guard trips, looking at every call from 10 to 150."""
    cfg = GuardConfig(max_error_rate=0.05, min_invocations=10, msprt_alpha=0.05)
    rng = random.Random(7)
    tripped = 0
    for _ in range(trials):
        errors = 0
        for calls in range(1, 151):
            errors += rng.random() < true_rate
            if threshold_trip(cfg, read_metrics(aggregate_metrics("c", calls, errors), "c")):
                tripped += 1
                break
    return tripped / trials


def test_the_error_rate_guard_rarely_trips_on_a_challenger_inside_its_limit_and_catches_one_far_above() -> (
    None
):
    # The raw rate checked at every look tripped in about 58% of such canaries at a true 3% (18% at 1%).
    assert _canaries_tripped(0.03) < 0.06
    assert _canaries_tripped(0.20) > 0.95


def test_threshold_latency_guard_only_when_configured() -> None:
    slow = read_metrics(raw_metrics("c", [True] * 20, [500.0] * 20), "c")
    assert threshold_trip(GuardConfig(min_invocations=5), slow) is None
    reason = threshold_trip(GuardConfig(min_invocations=5, max_latency_p95_ms=200), slow)
    assert reason is not None and "p95 latency 500 ms" in reason


def _latency_canaries_tripped(p95_over_limit: float, trials: int = 400) -> float:
    """Share of simulated canaries whose latency guard trips, looking at every call from 10 to 150, when the
    challenger's true p95 is ``p95_over_limit`` times max_latency_p95_ms (lognormal latencies, sigma 0.5)."""
    limit, sigma = 1000.0, 0.5
    cfg = GuardConfig(max_latency_p95_ms=limit, min_invocations=10, msprt_alpha=0.05)
    mu = float(np.log(p95_over_limit * limit) - 1.6449 * sigma)
    rng = np.random.default_rng(11)
    monitor = GuardMonitor(cfg, champion=None, challenger="c")
    tripped = 0
    for _ in range(trials):
        latencies = rng.lognormal(mu, sigma, 150).tolist()
        for calls in range(10, 151):
            if monitor.look({"c": raw_metrics("c", [True] * calls, latencies[:calls])}).tripped:
                tripped += 1
                break
    return tripped / trials


def test_the_latency_guard_rarely_trips_on_a_challenger_inside_its_limit_and_catches_one_far_above() -> None:
    # The raw p95 checked at every look tripped in about 21% of such canaries at a true p95 of 80% of the
    # limit (44% at 90%): a few slow calls among the first tens read as a slow challenger.
    assert _latency_canaries_tripped(0.8) < 0.03
    assert _latency_canaries_tripped(1.5) > 0.95


def test_a_latency_trip_says_how_many_calls_were_slow() -> None:
    cfg = GuardConfig(max_latency_p95_ms=200, min_invocations=5)
    # 2 of 20 calls slower than the limit: the p95 reads above it, but 10% may be chance at a true 5%.
    some = read_metrics(raw_metrics("c", [True] * 20, [10.0] * 18 + [900.0] * 2), "c", 200)
    assert some.latency_p95_ms is not None and some.latency_p95_ms > 200
    assert (some.slow_calls, some.latency_calls) == (2, 20) and threshold_trip(cfg, some) is None
    every = read_metrics(raw_metrics("c", [True] * 5, [300.0] * 5), "c", 200)
    reason = threshold_trip(cfg, every)
    assert reason is not None and "5/5 calls slower than 200 ms" in reason
    # A call exactly at the limit is not slower than it.
    assert read_metrics(raw_metrics("c", [True] * 4, [200.0, 200.0, 199.0, 201.0]), "c", 200).slow_calls == 1
    # CloudWatch aggregates carry no calls to count: the reported p95 is compared as it is.
    aggregated = threshold_trip(cfg, read_metrics(aggregate_metrics("c", 10, 0, p95=250.0), "c", 200))
    assert aggregated == "challenger p95 latency 250 ms > max_latency_p95_ms 200 ms"


def test_new_error_outcomes_raw_and_aggregate() -> None:
    m = raw_metrics("c", [True, False, True, False, False])
    assert new_error_outcomes(m, 0, 0) == (5, 3)
    assert new_error_outcomes(m, 2, 1) == (3, 2)  # 5 calls and 3 errors, 2 and 1 of them seen
    agg = aggregate_metrics("c", 30, 6)
    assert new_error_outcomes(agg, 20, 4) == (10, 2)
    assert new_error_outcomes(None, 0, 0) == (0, 0)
    # Nothing new since the previous look (or fewer calls than seen): nothing to feed the mSPRT.
    assert new_error_outcomes(m, 5, 3) == (0, 0)
    assert new_error_outcomes(agg, 40, 9) == (0, 0)


def test_a_call_written_late_with_an_earlier_time_is_counted_once_by_the_msprt() -> None:
    # The window sorts calls by time, so a failed call stamped before calls already seen landed inside the
    # part of ``outcomes`` the monitor had read: sliced past the calls seen, the mSPRT got an old success
    # instead (the error never counted) or, the other way round, an old error a second time.
    from agent_release.pipelines.invocation_window import InvocationWindow
    from agent_release.pipelines.local_backend import InvocationRecord

    def call(row: int, variant: str, at: float, status: int) -> tuple[int, InvocationRecord]:
        return row, InvocationRecord("ep", variant, at, status, 100.0, 1.0, False)

    for late, first in ((500, (200, 200)), (200, (200, 500))):
        window = InvocationWindow("ep", since=0.0)
        monitor = GuardMonitor(GuardConfig(), champion="champion", challenger="challenger")
        window.add([call(1, "challenger", 2.0, first[0]), call(2, "challenger", 3.0, first[1])])
        window.add([call(3, "champion", 2.0, 200), call(4, "champion", 3.0, 200)])
        monitor.look(window.metrics(["champion", "challenger"]))
        window.add([call(5, "challenger", 1.0, late)])  # ended first, written last
        monitor.look(window.metrics(["champion", "challenger"]))
        errors = sum(status >= 500 for status in (*first, late))
        assert (monitor.msprt.n_a, monitor.msprt.sum_a) == (3, errors), (late, first)


def test_monitor_msprt_trips_when_challenger_errs_more_than_champion() -> None:
    cfg = GuardConfig(max_error_rate=1.0, min_invocations=0, msprt_alpha=0.05)  # only the mSPRT can trip
    monitor = GuardMonitor(cfg, champion="champion", challenger="challenger")
    rng = random.Random(0)
    champ: list[bool] = []
    chall: list[bool] = []
    tripped_at = None
    for look in range(40):
        champ += [rng.random() > 0.02 for _ in range(10)]
        chall += [rng.random() > 0.40 for _ in range(10)]
        check = monitor.look(
            {"champion": raw_metrics("champion", champ), "challenger": raw_metrics("challenger", chall)}
        )
        if check.tripped:
            tripped_at = look
            assert "mSPRT" in check.tripped
            p = check.readings["challenger"].msprt_p_value
            assert p is not None and p <= 0.05
            assert (
                f"challenger {chall.count(False)}/{len(chall)}, champion {champ.count(False)}/{len(champ)}"
                in (check.tripped)
            )
            assert check.readings["champion"].invocations == len(champ)
            break
    assert tripped_at is not None and tripped_at < 20
    # Everything seen was fed exactly once (cursor per variant, not the whole window at every look).
    assert monitor.msprt.n_a == len(chall) and monitor.msprt.n_b == len(champ)


def test_monitor_does_not_trip_on_equal_variants_and_new_window_resets_cursor() -> None:
    cfg = GuardConfig(max_error_rate=0.5, min_invocations=5, msprt_alpha=0.05)
    monitor = GuardMonitor(cfg, champion="a", challenger="b")
    rng = random.Random(11)
    for _window in range(3):
        monitor.start_window()
        a: list[bool] = []
        b: list[bool] = []
        for _ in range(10):
            a += [rng.random() > 0.05 for _ in range(8)]
            b += [rng.random() > 0.05 for _ in range(8)]
            check = monitor.look({"a": raw_metrics("a", a), "b": raw_metrics("b", b)})
            assert check.tripped is None
    assert monitor.msprt.n_a == 3 * 80 and monitor.msprt.n_b == 3 * 80


def test_monitor_without_champion_checks_thresholds_only() -> None:
    monitor = GuardMonitor(GuardConfig(max_error_rate=0.2, min_invocations=5), champion=None, challenger="c")
    ok = monitor.look({"c": raw_metrics("c", [True] * 10)})
    assert ok.tripped is None and ok.readings["c"].msprt_p_value is None
    bad = monitor.look({"c": raw_metrics("c", [True] * 10 + [False] * 10)})
    assert bad.tripped is not None and "error rate" in bad.tripped
