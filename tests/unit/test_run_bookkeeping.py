"""RunBookkeeping: store calls made in order on a second thread, waited for, failures never lost."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import pytest

from agent_release.steps import store_retry
from agent_release.steps.run_bookkeeping import RunBookkeeping

THREAD_PREFIX = "agent-release-run-bookkeeping"


def _bookkeeping_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def test_calls_run_in_order_off_the_caller_thread_and_are_done_when_the_block_ends() -> None:
    calls: list[tuple[str, str]] = []
    release = threading.Event()

    def slow(label: str) -> None:
        release.wait(5)
        calls.append((label, threading.current_thread().name))

    def fast(label: str, *, suffix: str) -> None:
        calls.append((label + suffix, threading.current_thread().name))

    with RunBookkeeping() as books:
        books.submit(slow, "first")
        books.submit(fast, "second", suffix="!")
        assert calls == []  # the caller was not held up by the slow call
        release.set()
    assert [label for label, _ in calls] == ["first", "second!"]
    assert all(name.startswith(THREAD_PREFIX) for _, name in calls)
    assert _bookkeeping_threads() == []  # the thread is gone once the block ends


def test_the_first_failure_is_raised_when_the_block_ends_and_later_calls_still_run() -> None:
    ran: list[str] = []

    def broken() -> None:
        raise ValueError("RESOURCE_DOES_NOT_EXIST: run 'r-1' not found")

    with pytest.raises(ValueError, match="run 'r-1' not found"), RunBookkeeping() as books:
        books.submit(broken)
        books.submit(ran.append, "after")
    assert ran == ["after"]


def test_wait_raises_the_failure_before_the_block_ends() -> None:
    books = RunBookkeeping()
    try:
        books.submit(int, "not a number")
        with pytest.raises(ValueError, match="invalid literal"):
            books.wait()
        books.wait()  # reported once
    finally:
        books.__exit__(None, None, None)


def test_the_blocks_own_error_wins_and_a_bookkeeping_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> None:
        raise OSError("disk full")

    with (
        caplog.at_level(logging.WARNING, logger="agent_release.steps.run_bookkeeping"),
        pytest.raises(KeyError, match="the step's own error"),
        RunBookkeeping() as books,
    ):
        books.submit(broken)
        raise KeyError("the step's own error")
    assert "disk full" in caplog.text
    assert _bookkeeping_threads() == []


def test_a_call_refused_as_locked_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_retry.time, "sleep", lambda _: None)
    attempts: list[float] = []

    def flaky() -> None:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise sqlite3.OperationalError("database is locked")

    with RunBookkeeping() as books:
        books.submit(flaky)
    assert len(attempts) == 3


def test_a_held_book_starts_its_calls_at_go_in_order() -> None:
    ran: list[str] = []
    with RunBookkeeping(held=True) as books:
        books.submit(ran.append, "params")
        books.submit(ran.append, "inputs")
        time.sleep(0.1)
        assert ran == []  # held: the first wave of an evaluation goes out first
        books.go()
        deadline = time.monotonic() + 5
        while len(ran) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ran == ["params", "inputs"]
        books.submit(ran.append, "later")  # after go(), calls run as they come
    assert ran == ["params", "inputs", "later"]


def test_a_held_book_is_started_by_wait_and_by_a_failing_block() -> None:
    ran: list[str] = []
    books = RunBookkeeping(held=True)
    books.submit(ran.append, "one")
    books.wait()  # never go() called: wait() starts the calls rather than waiting forever
    assert ran == ["one"]
    books.__exit__(None, None, None)

    with pytest.raises(RuntimeError, match="step broke"), RunBookkeeping(held=True) as held:
        held.submit(ran.append, "two")
        raise RuntimeError("step broke")
    assert ran == ["one", "two"]  # written, and the thread did not hang the block's end
    assert _bookkeeping_threads() == []


def test_a_book_not_held_runs_each_call_as_it_comes() -> None:
    """The default book does not wait for go() or the block's end: the writes overlap the work."""
    ran = threading.Event()
    with RunBookkeeping() as books:
        books.submit(ran.set)
        assert ran.wait(5)  # held, it would only run at the block's end
