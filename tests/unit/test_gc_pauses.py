"""fewer_gc_pauses changes the collector only for its block, however blocks nest or overlap."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from agent_release.steps.gc_pauses import THRESHOLDS, fewer_gc_pauses


@pytest.fixture(autouse=True)
def default_collector() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*saved)


def test_the_heap_is_frozen_inside_and_given_back_after() -> None:
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    with fewer_gc_pauses():
        assert gc.get_threshold() == THRESHOLDS
        assert gc.get_freeze_count() > 1000  # the imported heap is in the permanent generation
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_cycles_made_inside_are_still_collected_without_asking() -> None:
    import weakref

    class Node:
        other: Node

    collected = threading.Event()
    with fewer_gc_pauses():
        first = Node()
        first.other = first
        weakref.finalize(first, collected.set)
        del first
        for _ in range(2 * THRESHOLDS[0]):  # enough new containers to trigger a young collection
            node = Node()
            node.other = node
        assert collected.is_set()


def test_nested_and_overlapping_blocks_restore_once_the_last_ends() -> None:
    before = gc.get_threshold()
    inner_entered, outer_may_leave = threading.Event(), threading.Event()

    def other_thread() -> None:
        with fewer_gc_pauses():
            inner_entered.set()
            outer_may_leave.wait(5)

    with fewer_gc_pauses():
        worker = threading.Thread(target=other_thread)
        worker.start()
        assert inner_entered.wait(5)
    assert gc.get_threshold() == THRESHOLDS  # the other thread's block is still running
    outer_may_leave.set()
    worker.join(5)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    with fewer_gc_pauses(), fewer_gc_pauses():
        assert gc.get_threshold() == THRESHOLDS
    assert gc.get_threshold() == before
