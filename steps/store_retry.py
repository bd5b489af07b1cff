"""Retry an MLflow store call that SQLite refused as "database is locked".

SQLite refuses a write at once, without waiting out its busy timeout, when waiting could deadlock two
transactions (a reader that wants to write while another connection holds the write lock). During an
evaluation two writers share the tracking database: the trace writer (a child process, or a thread) and the
step's own run bookkeeping (:mod:`agent_release.steps.run_bookkeeping`). Each MLflow store call is its own
transaction, rolled back when it fails, so a retry starts clean.

Usage::

    retry_if_locked(client.start_trace, trace.info)
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["LOCKED_RETRIES", "is_locked", "retry_if_locked"]

LOCKED_RETRIES = 8

T = TypeVar("T")


def is_locked(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite refusing a write because another connection holds the lock.

    Unlike ``pipelines.state_db.is_locked_error`` (a raw ``sqlite3.OperationalError``, and not importable
    from steps), the store's error arrives wrapped by SQLAlchemy or MLflow: only its message says so.
    """
    return "database is locked" in str(exc).lower()


def retry_if_locked(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)``, retried with jittered exponential backoff (10 ms to ~6 s, 8 retries)
    while SQLite answers "database is locked"; any other error, or the last attempt's, is raised."""
    for attempt in range(LOCKED_RETRIES):
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            if not is_locked(exc):
                raise
            time.sleep(random.uniform(0.01, 0.05) * 2**attempt)
    return call(*args, **kwargs)
