"""A filter on named loggers for the length of a block: ``with filtered_loggers(names, keep): ...``.

``keep(record)`` decides per record, as a ``logging.Filter`` callable does (it may also rewrite the record,
e.g. lower its level). A filter rather than a level because libraries reset their own loggers' levels (the
SageMaker SDK does when it first builds its logger) and a level would change the logger for every thread
beyond the block's intent. Used by the evaluation (Strands' per-case ERROR lines) and by ``compile`` (the
SageMaker SDK's INFO lines).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence


@contextlib.contextmanager
def filtered_loggers(names: Sequence[str], keep: Callable[[logging.LogRecord], bool]) -> Iterator[None]:
    """Add ``keep`` as a filter to each logger in ``names`` for the block; removed however it ends."""
    loggers = [logging.getLogger(name) for name in names]
    for each in loggers:
        each.addFilter(keep)
    try:
        yield
    finally:
        for each in loggers:
            each.removeFilter(keep)
