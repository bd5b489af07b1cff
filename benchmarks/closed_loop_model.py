"""A model of the evaluation loop: how the cases' rate depends on the CPU each case needs in our process.

Not a measurement (``make bench`` does not run it): a simulation that explains the measurements in
``docs/performance.md``. At concurrency 16 an evaluation is a closed loop. Each of 16 slots runs a case,
then the next: the case works in our process (build the agent, format the request, parse the answer, end
the spans, score), waits for the endpoint (251.5 ms per call, measured at the runtime, all 16 in parallel),
and works again. The work in our process runs one thread at a time (CPython's GIL), so the slots queue
for it, and the busier it is, the longer each slot waits between calls.

The simulation gives each case ``gil_ms`` of that work, cut into one chunk before, between and after its
model calls (W1 one call, W2 two), each chunk uniformly +-50% around its share (seeded), served first come
first served; the endpoint is a pure delay. It counts nothing else: no MLflow runs, tables or flush, and no
writer process taking a core, so the whole step measures below it. It also starts all 16 slots at the same
instant, which makes its first wave queue longer than a real one (about 0.02 of ideal at 160 cases).

Run: ``.venv/bin/python benchmarks/closed_loop_model.py [--cases 160 640] [--gil-ms 4 6 8 10 12]``; one JSON
line per (workload, gil_ms). ``--fixed-s F --target 0.9`` adds, per workload and case count, the most
``gil_ms`` that still reaches the target when an evaluation also pays ``F`` seconds outside the loop.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
from collections.abc import Sequence

ENDPOINT_CALL_MS = 251.5
CONCURRENCY = 16
CALLS = {"W1": 1, "W2": 2}


def loop_seconds(
    cases: int, gil_ms: float, calls: int, concurrency: int = CONCURRENCY, seed: int = 1
) -> float:
    """Seconds until the last of ``cases`` ends, each needing ``gil_ms`` of the one shared thread."""
    rnd = random.Random(seed)
    chunk = gil_ms / (calls + 1)

    def phases() -> list[tuple[bool, float]]:  # (needs the GIL, milliseconds)
        steps = [(True, chunk * rnd.uniform(0.5, 1.5))]
        for _ in range(calls):
            steps += [(False, ENDPOINT_CALL_MS), (True, chunk * rnd.uniform(0.5, 1.5))]
        return steps

    events: list[tuple[float, int, list[tuple[bool, float]]]] = []
    started = order = 0
    gil_free_at = last_end = 0.0
    for _ in range(min(concurrency, cases)):
        started += 1
        order += 1
        heapq.heappush(events, (0.0, order, phases()))
    while events:
        now, _, steps = heapq.heappop(events)
        if not steps:  # the case is done; its slot takes the next one
            last_end = max(last_end, now)
            if started < cases:
                started += 1
                order += 1
                heapq.heappush(events, (now, order, phases()))
            continue
        needs_gil, ms = steps[0]
        if needs_gil:
            gil_free_at = max(now, gil_free_at) + ms
            end = gil_free_at
        else:
            end = now + ms
        order += 1
        heapq.heappush(events, (end, order, steps[1:]))
    return last_end / 1000.0


def ideal_rate(workload: str) -> float:
    """Cases per second with no work in our process at all: 16 calls of 250 ms always in flight."""
    return CONCURRENCY / (CALLS[workload] * 0.25)


def ratio_to_ideal(workload: str, cases: int, gil_ms: float, fixed_s: float = 0.0) -> float:
    """The bench's ratio for ``cases`` cases, the loop plus ``fixed_s`` seconds outside it."""
    seconds = loop_seconds(cases, gil_ms, CALLS[workload]) + fixed_s
    return cases / seconds / ideal_rate(workload)


def most_gil_ms(workload: str, cases: int, target: float, fixed_s: float) -> float:
    """The largest ``gil_ms`` (to 0.1 ms) whose ratio still reaches ``target``; 0 if none does."""
    low, high = 0.0, 60.0
    if ratio_to_ideal(workload, cases, low, fixed_s) < target:
        return 0.0
    while high - low > 0.05:
        middle = (low + high) / 2
        if ratio_to_ideal(workload, cases, middle, fixed_s) >= target:
            low = middle
        else:
            high = middle
    return round(low, 1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[160, 640])
    parser.add_argument("--gil-ms", type=float, nargs="+", default=[4, 6, 8, 10, 12, 16, 20, 24])
    parser.add_argument(
        "--fixed-s", type=float, default=None, help="seconds each evaluation pays outside the loop"
    )
    parser.add_argument("--target", type=float, default=0.9)
    args = parser.parse_args(argv)
    for workload in CALLS:
        for gil_ms in args.gil_ms:
            ratios = [round(ratio_to_ideal(workload, n, gil_ms), 3) for n in args.cases]
            print(
                json.dumps(
                    {
                        "model": "closed_loop",
                        "workload": workload,
                        "gil_ms": gil_ms,
                        "cases": args.cases,
                        "ratio_to_ideal": ratios,
                    }
                )
            )
        if args.fixed_s is not None:
            most = [most_gil_ms(workload, n, args.target, args.fixed_s) for n in args.cases]
            print(
                json.dumps(
                    {
                        "model": "closed_loop_budget",
                        "workload": workload,
                        "target": args.target,
                        "fixed_s": args.fixed_s,
                        "cases": args.cases,
                        "most_gil_ms": most,
                    }
                )
            )


if __name__ == "__main__":
    main()
