"""Replayed live traffic on its own: routing by traffic shares, input cycling, the rate and concurrency bounds,
and a ``stop`` that waits for the conversations in flight. The promotion tests drive it end to end; these pin
what they cannot see (a mutation audit found its stop, input cycling and warm-up unpinned)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from agent_release.steps.live_traffic import AgentConversations, LiveTraffic


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the replayed traffic"
        time.sleep(0.005)


def test_conversations_cycle_through_the_inputs_in_order() -> None:
    seen: list[tuple[str, str]] = []
    # One slot: conversations run one after the other, in the order the dispatcher started them.
    traffic = LiveTraffic(
        lambda variant, text: seen.append((variant, text)),
        ["a", "b", "c", "d"],
        requests_per_s=200.0,
        concurrency=1,
    )
    traffic.set_shares({"challenger": 1.0})
    traffic.start()
    try:
        _wait_for(lambda: len(seen) >= 6)
    finally:
        traffic.stop()
    assert [text for _, text in seen[:6]] == ["a", "b", "c", "d", "a", "b"]
    assert {variant for variant, _ in seen} == {"challenger"}
    assert traffic.started == Counter({"challenger": len(seen)}) and not traffic.failed


def test_only_variants_with_a_share_are_picked() -> None:
    traffic = LiveTraffic(lambda variant, text: None, ["a"], requests_per_s=1.0, concurrency=1)
    assert traffic.pick_variant() is None  # no shares yet: no conversation starts
    traffic.set_shares({"champion": 0.0, "challenger": 1.0})
    assert {traffic.pick_variant() for _ in range(50)} == {"challenger"}
    traffic.set_shares({"champion": 0.0, "challenger": 0.0})
    assert traffic.pick_variant() is None


def test_variants_are_drawn_by_their_traffic_shares() -> None:
    traffic = LiveTraffic(lambda variant, text: None, ["a"], requests_per_s=1.0, concurrency=1, seed=7)
    traffic.set_shares({"champion": 0.75, "challenger": 0.25})
    draws = Counter(traffic.pick_variant() for _ in range(4000))
    # Binomial(4000, 0.25): sd ~ 27 calls; 0.05 x 4000 = 200 calls is more than 7 sd.
    assert abs(draws["challenger"] / 4000 - 0.25) < 0.05
    assert set(draws) == {"champion", "challenger"}


def test_stop_waits_for_the_conversations_in_flight() -> None:
    running = threading.Event()
    finished: list[str] = []

    def slow(variant: str, text: str) -> None:
        running.set()
        time.sleep(0.3)
        finished.append(text)

    traffic = LiveTraffic(slow, ["a"], requests_per_s=50.0, concurrency=2)
    traffic.set_shares({"challenger": 1.0})
    traffic.start()
    assert running.wait(10)
    traffic.stop()  # the promotion relies on the default wait
    ended = len(finished)
    assert ended >= 1, "stop returned while a conversation was still running"
    time.sleep(0.4)
    assert len(finished) == ended, "a conversation ran on after stop returned"


def test_stop_gives_up_on_a_stuck_conversation_after_its_timeout() -> None:
    release = threading.Event()
    running = threading.Event()

    def stuck(variant: str, text: str) -> None:
        running.set()
        release.wait(10)

    traffic = LiveTraffic(stuck, ["a"], requests_per_s=50.0, concurrency=1)
    traffic.set_shares({"challenger": 1.0})
    traffic.start()
    assert running.wait(10)
    started = time.monotonic()
    traffic.stop(timeout_s=0.3)
    took = time.monotonic() - started
    release.set()
    assert 0.25 <= took < 3.0, took


def test_concurrency_bounds_the_conversations_in_flight() -> None:
    lock = threading.Lock()
    in_flight = 0
    peak = 0
    done = 0

    def busy(variant: str, text: str) -> None:
        nonlocal in_flight, peak, done
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.05)
        with lock:
            in_flight -= 1
            done += 1

    traffic = LiveTraffic(busy, ["a"], requests_per_s=500.0, concurrency=2)
    traffic.set_shares({"challenger": 1.0})
    traffic.start()
    try:
        _wait_for(lambda: done >= 10)
    finally:
        traffic.stop()
    assert peak == 2


def test_conversations_start_at_the_configured_rate() -> None:
    traffic = LiveTraffic(lambda variant, text: None, ["a"], requests_per_s=20.0, concurrency=4)
    traffic.set_shares({"challenger": 1.0})
    traffic.start()
    time.sleep(0.6)
    traffic.stop()
    # 20/s for 0.6 s: about 13 starts (one at once, then one every 50 ms); generous for a loaded machine.
    assert 5 <= traffic.started["challenger"] <= 20, traffic.started


def test_a_failed_conversation_is_counted_and_the_replay_goes_on() -> None:
    calls: list[str] = []

    def failing(variant: str, text: str) -> None:
        calls.append(text)
        raise RuntimeError("endpoint said 500")

    traffic = LiveTraffic(failing, ["a"], requests_per_s=200.0, concurrency=1)
    traffic.set_shares({"challenger": 1.0})
    traffic.start()
    try:
        _wait_for(lambda: traffic.failed["challenger"] >= 3)
    finally:
        traffic.stop()
    assert len(calls) >= 3


@pytest.mark.parametrize(
    ("inputs", "requests_per_s", "concurrency"), [([], 1.0, 1), (["a"], 0.0, 1), (["a"], 1.0, 0)]
)
def test_live_traffic_refuses_no_inputs_no_rate_or_no_slot(
    inputs: list[str], requests_per_s: float, concurrency: int
) -> None:
    with pytest.raises(ValueError, match="live traffic needs"):
        LiveTraffic(
            lambda variant, text: None, inputs, requests_per_s=requests_per_s, concurrency=concurrency
        )


class _RecordingConversations(AgentConversations):
    """Builds no model and calls no endpoint: records what the warm-up asks for."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__("support", "You are terse.", [])
        self.built: list[str] = []
        self.conversations: list[tuple[str, str]] = []
        self.fail = fail

    def model_for(self, variant: str) -> Any:
        self.built.append(variant)
        return object()

    def __call__(self, variant: str, user_input: str) -> None:
        self.conversations.append((variant, user_input))
        if self.fail:
            raise RuntimeError("cold endpoint")


def test_warm_up_builds_every_model_and_holds_one_conversation_with_the_champion() -> None:
    runner = _RecordingConversations()
    runner.warm_up(["champion", "challenger"], converse_with="champion", user_input="Where is my order?")
    assert runner.built == ["champion", "challenger"]
    assert runner.conversations == [("champion", "Where is my order?")]

    quiet = _RecordingConversations()
    quiet.warm_up(["champion"])
    assert quiet.built == ["champion"] and quiet.conversations == []


def test_a_failed_warm_up_conversation_is_ignored() -> None:
    runner = _RecordingConversations(fail=True)
    runner.warm_up(["champion"], converse_with="champion")  # no exception: the guards judge, not the warm-up
    assert runner.conversations == [("champion", "hello")]
