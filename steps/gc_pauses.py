"""Fewer garbage-collector pauses while evaluation runs: freeze the long-lived heap, collect young less often.

Why (timed with ``gc.callbacks`` on ``benchmarks/bench_eval.py``'s workloads; ``docs/performance.md``):
once MLflow, Strands, pandas and SQLAlchemy are imported, CPython's cyclic collector keeps rescanning their
hundreds of thousands of long-lived objects. During an evaluation at concurrency 16 that cost about 3 ms of CPU per case in the
harness's process (188 young, 17 middle and one full collection for 160 cases; the full one stops every
case at once) and 5 ms per trace in the trace writer process. ``gc.freeze()`` moves everything alive now to
the permanent generation, which collections skip, and a higher young-generation threshold makes the
collector run every 20,000 allocations instead of every 700. Nothing is leaked: cycles created meanwhile
are still collected, and :func:`fewer_gc_pauses` gives the frozen objects and the old thresholds back when
it ends.

Usage::

    with fewer_gc_pauses():
        asyncio.run(many_cases())
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Young-generation threshold 20,000 (default 700); the older generations keep their ratio of young runs.
THRESHOLDS = (20_000, 20, 20)

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, int, int] = gc.get_threshold()


def freeze_long_lived_heap() -> None:
    """Collect once, then move every live object to the permanent generation (for a process's lifetime)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


@contextmanager
def fewer_gc_pauses() -> Iterator[None]:
    """Freeze the heap and raise the thresholds for the block; unfreeze and restore them afterwards.

    Blocks may nest or overlap across threads: the first to enter changes the settings, the last to leave
    restores them.
    """
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(*THRESHOLDS)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.set_threshold(*_saved)
                gc.unfreeze()
