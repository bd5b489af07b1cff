"""An endpoint's invocation metrics since one moment, read incrementally while a canary step bakes.

The promotion step asks :meth:`LocalBackend.variant_metrics` for the calls since the bake began every half
second. Reading every row since then at each look made a bake's work grow with the square of its traffic
(0.31-0.57 s per look with 99,000 calls in the window, for a look every 0.5 s: docs/performance.md,
session 21). An :class:`InvocationWindow` keeps what it has read and its per-variant running summaries, so
each look reads only the rows added since the last one (by rowid) and summarises only those.

Usage::

    window = InvocationWindow("support-agent", since)
    window.add(rows)                  # (id, InvocationRecord) pairs not seen yet, any order
    metrics = window.metrics(["champion", "challenger"])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent_release.steps.backend import VariantMetrics

if TYPE_CHECKING:
    from agent_release.pipelines.local_backend import InvocationRecord


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=float), q))


@dataclass
class VariantTally:
    """Running totals of one variant's calls, fed oldest first; :meth:`metrics` is their summary."""

    invocations: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    latencies: list[float] = field(default_factory=list)
    overheads: list[float] = field(default_factory=list)
    outcomes: list[bool] = field(default_factory=list)

    def add(self, record: InvocationRecord) -> None:
        """Count one call: ``outcomes`` is True for calls the model answered (status < 500), and the model
        latency of those calls is the series the percentiles come from (the guards see the same)."""
        self.invocations += 1
        self.errors_4xx += 400 <= record.status < 500
        self.errors_5xx += record.status >= 500
        if record.model_latency_ms is not None and record.status < 500:
            self.latencies.append(float(record.model_latency_ms))
        if record.overhead_latency_ms is not None:
            self.overheads.append(float(record.overhead_latency_ms))
        self.outcomes.append(record.status < 500)

    def metrics(self, variant: str) -> VariantMetrics:
        """The :class:`VariantMetrics` of the calls counted so far."""
        return VariantMetrics(
            variant=variant,
            invocations=self.invocations,
            errors_4xx=self.errors_4xx,
            errors_5xx=self.errors_5xx,
            model_latency_ms_p50=_percentile(self.latencies, 50),
            model_latency_ms_p95=_percentile(self.latencies, 95),
            model_latency_ms_p99=_percentile(self.latencies, 99),
            overhead_latency_ms_p50=_percentile(self.overheads, 50),
            latencies_ms=tuple(self.latencies),
            outcomes=tuple(self.outcomes),
        )


class InvocationWindow:
    """The calls of one endpoint at or after ``since``, in (time, rowid) order, with per-variant tallies.

    Rows arrive in batches of rows not seen yet (:meth:`add`). A batch that sorts after everything already
    read is appended to the tallies; one that would go before (a record stamped earlier but written later)
    makes the window recount every row in order, so the metrics are always those of all rows sorted by
    ``(at, id)``, as one query ordered that way would give.
    """

    def __init__(self, endpoint: str, since: float) -> None:
        self.endpoint = endpoint
        self.since = since
        self.last_id = 0
        self._rows: list[tuple[float, int, InvocationRecord]] = []
        self._tallies: dict[str, VariantTally] = {}

    def add(self, rows: Iterable[tuple[int, InvocationRecord]]) -> None:
        """Take rows (rowid, record) of this endpoint at or after ``since`` that the window has not seen."""
        batch = sorted((record.at, row_id, record) for row_id, record in rows)
        if not batch:
            return
        self.last_id = max([self.last_id, *(row_id for _, row_id, _ in batch)])
        if self._rows and batch[0][:2] < self._rows[-1][:2]:
            self._rows = sorted(self._rows + batch, key=lambda item: item[:2])
            self._tallies = {}
            counted = self._rows
        else:
            self._rows += batch
            counted = batch
        for _, _, record in counted:
            self._tallies.setdefault(record.variant, VariantTally()).add(record)

    def metrics(self, variants: Iterable[str]) -> dict[str, VariantMetrics]:
        """Metrics of every variant in ``variants`` (zero counts when idle) and of any other that was called."""
        names = dict.fromkeys([*variants, *self._tallies])
        return {name: self._tallies.get(name, VariantTally()).metrics(name) for name in names}
