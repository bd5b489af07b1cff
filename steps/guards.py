"""Live guards of the canary: read per-variant endpoint metrics and say whether the challenger must go back.

Three guards, checked on every look during a bake (see
:class:`~agent_release.steps.promote_config.GuardConfig`):

1. **error rate** — the challenger's live error rate (5xx over invocations) above ``max_error_rate`` with
   ``1 - msprt_alpha`` confidence (its one-sided Clopper-Pearson lower bound is above the limit), read only
   once the challenger has ``min_invocations`` calls in the bake. The raw rate alone, checked at every
   look, tripped on challengers well inside the limit: simulated with a look at every call from the 10th
   to the 150th and a 5% limit (2,000 canaries each), it tripped in 18% at a true 1% and 58% at 3%; with
   the bound 0% and 2.4%, 15% at exactly 5% (the looks' price), and 99.8% at 15%;
2. **latency** — the challenger's p95 model latency above ``max_latency_p95_ms`` with ``1 - msprt_alpha``
   confidence (same minimum): the share of its answered calls slower than the limit has a one-sided
   Clopper-Pearson lower bound above 5% (the p95 is above the limit exactly when more than 5% of calls are).
   The raw p95 alone, checked at every look, tripped on challengers well inside the limit: simulated as
   above (lognormal latencies, sigma 0.5, a look at every call from the 10th to the 150th), it tripped in
   21% of canaries at a true p95 of 80% of the limit and 44% at 90%; with the bound 0.3% and 2%, 15% at
   exactly the limit, and every one at 150%. With aggregates only (CloudWatch: no raw latencies to count)
   the reported p95 is compared as it is;
3. **mSPRT** — the always-valid sequential test of :mod:`agent_release.steps.sequential` ("is the challenger's
   error rate higher than the champion's?") rejects at ``msprt_alpha``. It is fed the calls observed since
   the previous look, over the whole canary, so looking twice a second does not inflate false alarms.

Errors are 5xx invocations: failures of the model or its server, as CloudWatch's Invocation5XXErrors counts
them (the local runtime records a model failure as 500 even though the client sees a 424 ModelError). 4xx
are the caller's mistakes and say nothing about the challenger; the raw ``outcomes`` use the same rule.

Everything but :class:`GuardMonitor` is a pure function of
:class:`~agent_release.steps.backend.VariantMetrics`. The monitor only remembers how much of each
variant's window it has already fed to the mSPRT::

    monitor = GuardMonitor(config.guards, champion="champion", challenger="challenger")
    monitor.start_window()                                   # at each bake start (metrics since then)
    check = monitor.look(backend.variant_metrics(endpoint, since=bake_start))
    if check.tripped:
        roll_back(check.tripped)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pydantic import Field

from agent_release.steps.backend import Frozen, VariantMetrics
from agent_release.steps.promote_config import GuardConfig
from agent_release.steps.sequential import MsprtState, mixture_log_likelihood_ratio

# The mixing SD of the error-rate mSPRT: differences of a few points of error rate are what the canary is
# there to catch (Johari et al. recommend tau near the effect size you care about).
MSPRT_TAU = 0.05
# The share of calls slower than a p95 bound when the p95 is exactly at it.
P95_EXCEEDANCE = 0.05


class GuardReading(Frozen):
    """What the guards saw of one variant in one bake (so far)."""

    variant: str
    invocations: int
    errors: int
    error_rate: float | None = Field(description="errors / invocations; None without invocations.")
    latency_p95_ms: float | None = Field(description="p95 model latency; None without data.")
    latency_calls: int | None = Field(
        default=None, description="Answered calls with a recorded latency; None with aggregates only."
    )
    slow_calls: int | None = Field(
        default=None,
        description="Of those, calls slower than max_latency_p95_ms; None without raw latencies or a limit.",
    )
    msprt_p_value: float | None = Field(
        default=None, description="Always-valid p-value of 'challenger errs more' (challenger only)."
    )


class GuardCheck(Frozen):
    """The outcome of one look: readings per variant and the first guard that tripped, if any."""

    readings: Mapping[str, GuardReading]
    tripped: str | None = None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, linear interpolation as numpy's default); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def read_metrics(
    metrics: VariantMetrics | None, variant: str, latency_limit_ms: float | None = None
) -> GuardReading:
    """A :class:`GuardReading` of one variant's window (raw observations when present, else aggregates).

    With ``latency_limit_ms`` and raw latencies, it also counts the calls slower than that limit.
    """
    if metrics is None:
        return GuardReading(variant=variant, invocations=0, errors=0, error_rate=None, latency_p95_ms=None)
    errors = metrics.errors_5xx
    # Raw latencies are authoritative when present; CloudWatch-style aggregates otherwise.
    latencies = metrics.latencies_ms
    p95 = percentile(latencies, 95.0) if latencies else metrics.model_latency_ms_p95
    slow = sum(1 for ms in latencies if ms > latency_limit_ms) if latency_limit_ms is not None else None
    return GuardReading(
        variant=variant,
        invocations=metrics.invocations,
        errors=errors,
        error_rate=errors / metrics.invocations if metrics.invocations else None,
        latency_p95_ms=p95,
        latency_calls=len(latencies) if latencies else None,
        slow_calls=slow if latencies else None,
    )


def error_rate_lower_bound(errors: int, calls: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` Clopper-Pearson lower bound of an error rate seen as ``errors`` of ``calls``."""
    if errors <= 0 or calls <= 0:
        return 0.0
    from scipy import stats

    return float(stats.beta.ppf(alpha, errors, calls - errors + 1))


def threshold_trip(config: GuardConfig, reading: GuardReading) -> str | None:
    """The reason the fixed-threshold guards trip on the challenger's ``reading``, or None."""
    if reading.invocations < max(config.min_invocations, 1):
        return None
    if reading.error_rate is not None and reading.error_rate > config.max_error_rate:
        low = error_rate_lower_bound(reading.errors, reading.invocations, config.msprt_alpha)
        if low > config.max_error_rate:
            return (
                f"challenger error rate {reading.error_rate:.1%} ({reading.errors}/{reading.invocations}), "
                f"at least {low:.1%} with {1 - config.msprt_alpha:.0%} confidence, "
                f"> max_error_rate {config.max_error_rate:.1%}"
            )
    limit = config.max_latency_p95_ms
    if limit is None or reading.latency_p95_ms is None or reading.latency_p95_ms <= limit:
        return None
    if reading.latency_calls is None or reading.slow_calls is None:
        # Aggregates only: no calls to count, the reported p95 is all there is.
        return f"challenger p95 latency {reading.latency_p95_ms:.0f} ms > max_latency_p95_ms {limit:.0f} ms"
    # The p95 is above the limit when more than 5% of calls are slower: the same bound as for errors, so a
    # few slow calls among few calls, read at every look, are not taken for a slow challenger.
    low = error_rate_lower_bound(reading.slow_calls, reading.latency_calls, config.msprt_alpha)
    if low <= P95_EXCEEDANCE:
        return None
    return (
        f"challenger p95 latency {reading.latency_p95_ms:.0f} ms ({reading.slow_calls}/{reading.latency_calls} "
        f"calls slower than {limit:.0f} ms, at least {low:.1%} with {1 - config.msprt_alpha:.0%} confidence, "
        f"> 5%) > max_latency_p95_ms {limit:.0f} ms"
    )


def new_error_outcomes(metrics: VariantMetrics | None, seen_calls: int, seen_errors: int) -> tuple[int, int]:
    """(calls, errors) in ``metrics`` beyond the first ``seen_calls`` calls / ``seen_errors`` errors.

    The growth of the counts since the previous look, with raw outcomes (local runtime) as with aggregates
    only (CloudWatch). Not the outcomes past position ``seen_calls``: a call written late with an earlier
    timestamp is sorted in among the calls already seen, so that slice held an old outcome instead of the
    new one, and the mSPRT counted an error twice or never.
    """
    if metrics is None:
        return 0, 0
    if metrics.outcomes:
        total_calls, total_errors = len(metrics.outcomes), sum(1 for ok in metrics.outcomes if not ok)
    else:
        total_calls, total_errors = metrics.invocations, metrics.errors_5xx
    calls = max(total_calls - seen_calls, 0)
    errors = min(max(total_errors - seen_errors, 0), calls)
    return calls, errors


class GuardMonitor:
    """The guards of one promotion: threshold checks per look plus one mSPRT over the whole canary.

    ``champion`` is None for a first release (no comparison arm: the mSPRT is not run).
    """

    def __init__(self, config: GuardConfig, *, champion: str | None, challenger: str) -> None:
        self.config = config
        self.champion = champion
        self.challenger = challenger
        self.msprt = MsprtState.for_error_rates(tau=MSPRT_TAU, alternative="greater")
        self._seen: dict[str, tuple[int, int]] = {}
        if champion is not None:
            # The one-sided statistic needs scipy.stats, imported lazily on first use; pay that (seconds on a
            # busy machine) now, not during the first look of a bake, where it would delay a rollback.
            mixture_log_likelihood_ratio(0.0, 1.0, MSPRT_TAU, alternative="greater")

    def start_window(self) -> None:
        """Begin a new metrics window (a new ``since``): counters of the previous window are forgotten."""
        self._seen = {}

    def _take_new(self, metrics: Mapping[str, VariantMetrics], variant: str) -> tuple[int, int]:
        seen_calls, seen_errors = self._seen.get(variant, (0, 0))
        calls, errors = new_error_outcomes(metrics.get(variant), seen_calls, seen_errors)
        self._seen[variant] = (seen_calls + calls, seen_errors + errors)
        return calls, errors

    def look(self, metrics: Mapping[str, VariantMetrics]) -> GuardCheck:
        """Read the window's metrics, feed the mSPRT with what is new, and return the check."""
        limit = self.config.max_latency_p95_ms
        challenger = read_metrics(metrics.get(self.challenger), self.challenger, limit)
        readings: dict[str, GuardReading] = {}
        tripped = threshold_trip(self.config, challenger)
        if self.champion is not None:
            n_a, x_a = self._take_new(metrics, self.challenger)
            n_b, x_b = self._take_new(metrics, self.champion)
            if n_a or n_b:
                self.msprt = self.msprt.update_counts(n_a, x_a, n_b, x_b)
            challenger = challenger.model_copy(update={"msprt_p_value": self.msprt.p_value})
            readings[self.champion] = read_metrics(metrics.get(self.champion), self.champion, limit)
            if tripped is None and self.msprt.rejects(self.config.msprt_alpha):
                tripped = (
                    f"mSPRT: challenger error rate higher than champion's (always-valid p = "
                    f"{self.msprt.p_value:.4f} <= alpha {self.config.msprt_alpha}; challenger "
                    f"{_rate(self.msprt.sum_a, self.msprt.n_a)}, "
                    f"champion {_rate(self.msprt.sum_b, self.msprt.n_b)})"
                )
        readings[self.challenger] = challenger
        return GuardCheck(readings=readings, tripped=tripped)


def _rate(events: float, n: int) -> str:
    return f"{int(events)}/{n}" if n else "0/0"
