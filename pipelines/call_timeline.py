"""How a client's calls filled an endpoint's slots, from the endpoint's own records of them.

A call is a ``(start, end)`` pair in epoch seconds: the runtime records each call's end (``at``) and how
long it took from the request's arrival to the last byte of its answer, so ``start = at - took``. With a
client limited to ``slots`` calls at once, an evaluation of N cases of equal latency ends no sooner than
the moment every slot is first busy plus N / slots call durations; what the slots did between the first
call and the last says how much of that window they spent waiting for the client. The bench reports
these per evaluation (``benchmarks/bench_eval.py``); ``LocalBackend.call_timeline`` reads them.

Call :func:`call_timeline` with the calls and the slot count::

    call_timeline([(0.0, 0.25), (0.01, 0.26)], slots=2).all_busy_at  # 0.01
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class CallTimeline:
    """The endpoint's view of a window of calls (times in epoch seconds; None without calls).

    ``most_in_flight`` is the most calls served at once; ``all_busy_at`` the first moment ``slots`` were
    (None if that never happened); ``busy_fraction`` the call-seconds served between ``first_start`` and
    ``last_end`` over what ``slots`` could have served in that time.
    """

    calls: int
    slots: int
    most_in_flight: int
    first_start: float | None
    all_busy_at: float | None
    last_end: float | None
    busy_fraction: float | None


def call_timeline(calls: Iterable[tuple[float, float]], slots: int) -> CallTimeline:
    """The :class:`CallTimeline` of ``calls`` (``(start, end)`` pairs) for a client with ``slots`` slots."""
    if slots < 1:
        raise ValueError(f"a timeline needs at least one slot, got {slots}")
    spans = list(calls)
    if not spans:
        return CallTimeline(0, slots, 0, None, None, None, None)
    # An end sorts before a start at the same instant: a slot handed on is not two calls at once.
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    in_flight = most = 0
    all_busy_at: float | None = None
    for at, step in events:
        in_flight += step
        most = max(most, in_flight)
        if all_busy_at is None and in_flight >= slots:
            all_busy_at = at
    first_start = min(start for start, _ in spans)
    last_end = max(end for _, end in spans)
    window = last_end - first_start
    busy = sum(end - start for start, end in spans)
    return CallTimeline(
        calls=len(spans),
        slots=slots,
        most_in_flight=most,
        first_start=first_start,
        all_busy_at=all_busy_at,
        last_end=last_end,
        busy_fraction=busy / (slots * window) if window > 0 else None,
    )
