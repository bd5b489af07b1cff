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


@pytest.mark.parametrize("jitter", ["low", "high"])
def test_the_waits_between_locked_attempts_double_from_10_ms_to_about_6_s(
    monkeypatch: pytest.MonkeyPatch, jitter: str
) -> None:
    """The backoff the docstring promises: each wait a jittered 10-50 ms, doubled per retry, 8 retries."""
    import sqlite3

    bounds: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        bounds.append((low, high))
        return low if jitter == "low" else high

    sleeps: list[float] = []
    monkeypatch.setattr(store_retry.random, "uniform", uniform)
    monkeypatch.setattr(store_retry.time, "sleep", sleeps.append)

    def locked() -> None:
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError):
        store_retry.retry_if_locked(locked)
    assert bounds == [(0.01, 0.05)] * 8
    first = 0.01 if jitter == "low" else 0.05
    assert sleeps == pytest.approx([first * 2**k for k in range(8)])  # 10 ms ... 1.28 s / 50 ms ... 6.4 s
