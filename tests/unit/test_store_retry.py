"""retry_if_locked: a store call SQLite refused as "database is locked" is retried, nothing else is."""

from __future__ import annotations

from typing import Any

import pytest

from agent_release.steps import store_retry


def test_a_write_refused_as_locked_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    monkeypatch.setattr(store_retry.time, "sleep", lambda _: None)
    answers: list[Any] = [sqlite3.OperationalError("database is locked")] * 3 + ["written"]

    def flaky(label: str) -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return f"{answer} {label}"

    assert store_retry.retry_if_locked(flaky, "t1") == "written t1"
    assert answers == []

    def broken(label: str) -> str:
        raise ValueError(f"no such experiment {label}")

    with pytest.raises(ValueError, match="no such experiment"):  # other errors are not retried
        store_retry.retry_if_locked(broken, "t2")
    always: list[int] = []

    def locked(label: str) -> str:
        always.append(1)
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError):
        store_retry.retry_if_locked(locked, "t3")
    assert len(always) == store_retry.LOCKED_RETRIES + 1
