"""The runtime's model thread pool: daemon threads, a cap, reuse of idle threads, shutdown."""

from __future__ import annotations

import threading

import pytest

from agent_release.pipelines.runtime.model_threads import ModelThreads


def test_calls_run_on_daemon_threads_and_return_or_raise_as_called() -> None:
    threads = ModelThreads(2, name="t")
    try:
        assert threads.submit(lambda: threading.current_thread().daemon).result(timeout=5) is True
        with pytest.raises(KeyError, match="boom"):
            threads.submit(lambda: {}["boom"]).result(timeout=5)
    finally:
        threads.shutdown()


def test_threads_are_capped_and_an_idle_one_is_reused() -> None:
    threads = ModelThreads(3, name="t")
    gate = threading.Event()
    try:
        assert threads.submit(lambda: 1).result(timeout=5) == 1
        threads.submit(lambda: 2).result(timeout=5)
        assert threads.alive_threads() == 1  # the first thread was idle again: no second one started
        blocked = [threads.submit(gate.wait, 10) for _ in range(5)]
        assert threads.alive_threads() == 3
        assert sum(f.running() for f in blocked) <= 3
        gate.set()
        assert all(f.result(timeout=5) for f in blocked)  # the queued two ran on the same three threads
        assert threads.alive_threads() == 3
    finally:
        gate.set()
        threads.shutdown()
    assert threads.alive_threads() == 0


def test_shutdown_cancels_queued_calls_refuses_new_ones_and_leaves_a_running_call_alone() -> None:
    threads = ModelThreads(1, name="t")
    gate = threading.Event()
    running = threads.submit(gate.wait, 10)
    queued = threads.submit(lambda: "never")
    threads.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    with pytest.raises(RuntimeError, match="after shutdown"):
        threads.submit(lambda: None)
    assert not running.done()
    gate.set()
    assert running.result(timeout=5) is True


def test_shutdown_without_cancel_futures_still_runs_the_queued_calls() -> None:
    # As with the standard executors, cancel_futures defaults to False: calls queued before the shutdown run.
    threads = ModelThreads(1, name="t")
    gate = threading.Event()
    running = threads.submit(gate.wait, 10)
    queued = threads.submit(lambda: "ran")
    threads.shutdown(wait=False)
    gate.set()
    assert running.result(timeout=5) is True
    assert queued.result(timeout=5) == "ran"
