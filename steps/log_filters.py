"""A filter on named loggers for the length of a block: ``with filtered_loggers(names, keep): ...``.

``keep(record)`` decides per record, as a ``logging.Filter`` callable does (it may also rewrite the record,
e.g. lower its level). A filter rather than a level because libraries reset their own loggers' levels (the
SageMaker SDK does when it first builds its logger) and a level would change the logger for every thread
beyond the block's intent. Used by the evaluation (Strands' per-case ERROR lines) and by ``compile`` (the
SageMaker SDK's INFO lines).

:func:`demote_mlflow_store_errors` is the one filter installed for good (by tracking set-up and the trace
writer process): MLflow's SQL store logs a database error with its traceback and then raises it, so the
caller reports it (the CLI's one line, a retry on a locked database) and the log only repeats it.
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


# The SQL store's log line for an OperationalError it raises next (mlflow.store.db.utils, MLflow 3.17).
_MLFLOW_DB_LOGGER = "mlflow.store.db.utils"
_RAISED_DB_ERROR = "SQLAlchemy database error"


def _demote_raised_db_error(record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR and str(record.msg).startswith(_RAISED_DB_ERROR):
        # DEBUG keeps it for --verbose; handlers at WARNING drop it (they check the level after filters).
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
    return True


def demote_mlflow_store_errors() -> None:
    """Log MLflow's "SQLAlchemy database error" records (with traceback) at DEBUG instead of ERROR.

    The store raises the same error right after logging it, so whoever called it decides what the user sees;
    a locked database printed two tracebacks (75 lines) before the CLI's one-line error. Idempotent.
    """
    logger = logging.getLogger(_MLFLOW_DB_LOGGER)
    if _demote_raised_db_error not in logger.filters:
        logger.addFilter(_demote_raised_db_error)
