"""Call slots held in the thread that makes the model call: one line for threads and the event loop, and a
SageMaker Runtime client whose calls take their slot just before the request is sent and give it back once
the answer has been read to the end."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from agent_release.agents.call_slots import (
    CURRENT_CANCEL,
    CURRENT_SLOTS,
    CURRENT_WAIT,
    CallSlots,
    CallSlotsClosed,
    SlotWait,
    is_slotted,
    slotted,
)


class FakeEvents:
    """The part of botocore's event emitter a gated client uses: register (once per unique id), emit."""

    def __init__(self) -> None:
        self.handlers: dict[str, tuple[str, Any]] = {}

    def register(self, event: str, handler: Any, unique_id: str | None = None) -> None:
        self.handlers.setdefault(unique_id or str(id(handler)), (event, handler))

    def emit(self, event: str, **kwargs: Any) -> list[Any]:
        return [handler(**kwargs) for name, handler in self.handlers.values() if event.startswith(name)]


class FakeStream:
    """A response stream of parts that notes, for each part read, how many slots were in use."""

    def __init__(self, parts: list[bytes], slots: CallSlots, error: Exception | None = None) -> None:
        self.parts = parts
        self.slots = slots
        self.error = error
        self.in_use_while_read: list[int] = []
        self.closed = False
        self.on_part: Any = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for part in self.parts:
            self.in_use_while_read.append(self.slots.in_use)
            if self.on_part is not None:
                self.on_part()
            yield {"PayloadPart": {"Bytes": part}}
        if self.error is not None:
            raise self.error

    def read(self) -> bytes:
        self.in_use_while_read.append(self.slots.in_use)
        return b"".join(self.parts)

    def close(self) -> None:
        self.closed = True


class FakeRuntimeClient:
    """Like botocore's: each attempt emits ``before-send`` (the request is built and signed), then sends."""

    def __init__(self, stream: FakeStream, attempts: int = 1) -> None:
        self.meta = SimpleNamespace(events=FakeEvents())
        self.stream = stream
        self.attempts = attempts
        self.in_use_at_call: list[int] = []
        self.in_use_at_send: list[int] = []

    def _call(self) -> dict[str, Any]:
        self.in_use_at_call.append(self.stream.slots.in_use)
        for _ in range(self.attempts):  # botocore's retries send again
            answers = self.meta.events.emit("before-send.sagemaker-runtime.InvokeEndpoint", request=None)
            assert all(answer is None for answer in answers)  # a value would stand in for the answer
            self.in_use_at_send.append(self.stream.slots.in_use)
        return {"Body": self.stream, "ContentType": "text/event-stream"}

    def invoke_endpoint_with_response_stream(self, **_: Any) -> dict[str, Any]:
        return self._call()

    def invoke_endpoint(self, **_: Any) -> dict[str, Any]:
        return self._call()

    def other_operation(self) -> str:
        return "the client's own"


def _gated(slots: CallSlots, parts: list[bytes], **kwargs: Any) -> tuple[Any, FakeRuntimeClient]:
    raw = FakeRuntimeClient(FakeStream(parts, slots, kwargs.pop("error", None)), **kwargs)
    model = SimpleNamespace(client=raw, config={"model_id": "fake"})
    wrapped = slotted(model)
    assert is_slotted(wrapped) and wrapped.gated
    assert model.client is raw  # the caller's model keeps its own client
    return wrapped.inner.client, raw


def _until(condition: Any, timeout_s: float = 10.0) -> None:
    """Poll ``condition`` (a thread or task has reached its wait) instead of sleeping a guessed time."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


async def _until_async(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def _in_slots(slots: CallSlots | None, call: Any) -> Any:
    def run() -> Any:
        CURRENT_SLOTS.set(slots)
        return call()

    return contextvars.copy_context().run(run)


def test_a_streamed_call_takes_its_slot_at_send_and_gives_it_back_once_the_answer_is_read() -> None:
    slots = CallSlots(1)
    client, raw = _gated(slots, [b'data: {"a": 1}\n', b'data: {"b": 2}\n'])
    response = _in_slots(slots, lambda: client.invoke_endpoint_with_response_stream(EndpointName="e"))
    assert raw.in_use_at_call == [0]  # building and signing the request holds no slot
    assert raw.in_use_at_send == [1]
    assert raw.stream.in_use_while_read == [1, 1]  # held while the answer was read
    assert raw.stream.closed and slots.in_use == 0 and slots.calls == 1
    # The reader gets the same parts, already read.
    assert [p["PayloadPart"]["Bytes"] for p in response["Body"]] == raw.stream.parts
    assert response["ContentType"] == "text/event-stream"
    assert client.other_operation() == "the client's own"


def test_an_error_that_ends_a_stream_is_raised_after_the_parts_before_it() -> None:
    slots = CallSlots(1)
    broken = RuntimeError("ModelStreamError: the model stopped")
    client, _raw = _gated(slots, [b"data: {}\n"], error=broken)
    response = _in_slots(slots, client.invoke_endpoint_with_response_stream)
    assert slots.in_use == 0  # given back although the stream failed
    body = iter(response["Body"])
    assert next(body) == {"PayloadPart": {"Bytes": b"data: {}\n"}}
    with pytest.raises(RuntimeError) as raised:
        next(body)
    assert raised.value is broken


def test_a_case_past_its_timeout_stops_reading_its_answer_between_two_parts() -> None:
    # As Strands stops between two stream events on the case's cancel signal, the gated read stops
    # between two parts: a slow answer does not keep the slot (and the case) for the rest of its stream.
    slots = CallSlots(1)
    client, raw = _gated(slots, [b"data: {}\n", b"data: {}\n", b"data: {}\n"])
    cancel = threading.Event()
    raw.stream.on_part = cancel.set  # the case times out while the first part is read

    def call() -> Any:
        CURRENT_CANCEL.set(cancel)
        return client.invoke_endpoint_with_response_stream()

    response = _in_slots(slots, call)
    assert raw.stream.in_use_while_read == [1] and raw.stream.closed and slots.in_use == 0
    assert list(response["Body"]) == [{"PayloadPart": {"Bytes": b"data: {}\n"}}]


def test_a_non_streamed_answer_is_read_whole_and_retries_keep_the_one_slot() -> None:
    slots = CallSlots(1)
    client, raw = _gated(slots, [b'{"choices": ', b"[]}"], attempts=3)
    response = _in_slots(slots, client.invoke_endpoint)
    assert raw.in_use_at_send == [1, 1, 1] and slots.calls == 1  # one slot across botocore's retries
    assert raw.stream.in_use_while_read == [1] and slots.in_use == 0
    body = response["Body"]
    assert body.read(5) == b'{"cho' and body.read() == b'ices": []}' and body.read() == b""


def test_without_call_slots_a_gated_client_calls_straight_through() -> None:
    slots = CallSlots(1)
    client, raw = _gated(slots, [b"x"])
    response = _in_slots(None, client.invoke_endpoint_with_response_stream)
    assert response["Body"] is raw.stream and raw.stream.in_use_while_read == []
    assert slots.calls == 0


def test_the_wait_for_a_slot_in_a_thread_counts_on_the_case_and_keeps_the_limit() -> None:
    slots = CallSlots(1)
    slots.take()  # a call in flight
    wait = SlotWait()
    got: list[float] = []

    def caller() -> None:
        CURRENT_WAIT.set(wait)
        got.append(slots.take(CURRENT_WAIT.get()))

    thread = threading.Thread(target=caller)
    thread.start()
    _until(lambda: slots.waiting == 1)
    time.sleep(0.05)
    assert got == [] and wait.since is not None and slots.in_use == 1  # waiting, and seen as waiting
    slots.give_back()
    thread.join(5)
    assert got and got[0] >= 0.05 and wait.total_s == pytest.approx(got[0]) and wait.since is None
    assert slots.in_use == 1 and slots.most_in_use == 1 and slots.calls == 2
    slots.give_back()
    assert slots.in_use == 0


def test_threads_and_the_event_loop_queue_in_one_line() -> None:
    order: list[str] = []

    async def main() -> CallSlots:
        slots = CallSlots(1)
        slots.take()  # held by the main thread's "call"

        def in_thread(label: str) -> None:
            slots.take()
            order.append(label)
            time.sleep(0.02)
            slots.give_back()

        first = threading.Thread(target=in_thread, args=("thread-1",))
        first.start()
        await _until_async(lambda: slots.waiting == 1)  # thread-1 is in line first

        async def in_loop() -> None:
            async with slots.slot():
                order.append("loop")
                await asyncio.sleep(0.02)

        loop_call = asyncio.ensure_future(in_loop())
        await _until_async(lambda: slots.waiting == 2)
        second = threading.Thread(target=in_thread, args=("thread-2",))
        second.start()
        await _until_async(lambda: slots.waiting == 3)
        assert order == [] and slots.in_use == 1
        slots.give_back()
        await loop_call
        await asyncio.to_thread(first.join, 5)
        await asyncio.to_thread(second.join, 5)
        return slots

    slots = asyncio.run(main())
    assert order == ["thread-1", "loop", "thread-2"]
    assert slots.most_in_use == 1 and slots.in_use == 0


def test_closing_the_slots_sends_a_waiting_thread_away_without_a_call() -> None:
    slots = CallSlots(1)
    slots.take()
    failures: list[BaseException] = []

    def caller() -> None:
        try:
            slots.take()
        except CallSlotsClosed as exc:
            failures.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    _until(lambda: slots.waiting == 1)
    slots.close()
    thread.join(5)
    assert not thread.is_alive() and len(failures) == 1 and slots.calls == 1
    with pytest.raises(CallSlotsClosed):
        slots.take()


def test_a_cancelled_caller_that_was_handed_a_slot_passes_it_on() -> None:
    async def main() -> tuple[CallSlots, list[str]]:
        slots = CallSlots(1)
        slots.take()
        got: list[str] = []

        async def caller(label: str) -> None:
            async with slots.slot():
                got.append(label)

        first = asyncio.ensure_future(caller("first"))
        second = asyncio.ensure_future(caller("second"))
        await _until_async(lambda: slots.waiting == 2)
        slots.give_back()  # handed to "first", whose wake-up is not yet delivered...
        first.cancel()  # ...when it is cancelled
        await asyncio.gather(first, second, return_exceptions=True)
        return slots, got

    slots, got = asyncio.run(main())
    assert got == ["second"] and slots.in_use == 0 and slots.calls == 2


def test_wrapping_a_slotted_model_again_returns_it_as_it_is() -> None:
    # Wrapped twice, each call would take a slot in the loop and another in its thread: two of the limit.
    slots = CallSlots(1)
    model = slotted(SimpleNamespace(client=FakeRuntimeClient(FakeStream([b"x"], slots)), config={}))
    assert slotted(model) is model
