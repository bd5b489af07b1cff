"""Bound the model calls in flight at the endpoint, not the agents in progress: call slots.

An evaluation at concurrency N wants N model calls in flight at the endpoint at every moment. If it runs
only N agents at once, a slot of the endpoint stands idle after each call while the finished case ends its
spans and is scored and the next case's agent is built and opens its spans: CPU work that, in one
interpreter, also queues for the GIL behind the other agents. With call slots, a few more agents than N
run (``staged``), and each waits for a free slot only at the moment it calls the model. When a call ends,
a staged agent that has done its preparation takes the slot while the finished case does its bookkeeping.

:class:`CallSlots` is the gate (N slots, first come first served), which a call can wait for in the event
loop or in the thread that makes it. :func:`slotted` wraps a Strands model so that every call holds a slot:

- a model with a SageMaker Runtime client (``SageMakerAIModel``, what an evaluation calls) holds it in the
  thread that makes the blocking call: taken just before botocore sends the request (once the request is
  built and signed), given back once the answer has been read to its last byte (:class:`_GatedClient`).
  Neither end waits for the event loop, which is busy with the other cases: the next request goes out as
  soon as the previous answer is in (docs/performance.md, session 22). Reading the answer whole before
  Strands parses it changes nothing Strands sees but the moment its events arrive;
- any other model holds it in the event loop, for as long as the call's answer is being read
  (``stream`` and ``structured_output``).

With no gate in the context (:data:`CURRENT_SLOTS` unset) calls go straight through. The time a case spends
waiting for a slot is not the agent's time: it is added to the case's :class:`SlotWait`
(:data:`CURRENT_WAIT`), which the harness subtracts from the case's latency and timeout, and it is written
on the model call's span as ``agent_release.call_slot_wait_ms``.

Usage (inside the running event loop)::

    token = CURRENT_SLOTS.set(CallSlots(16))
    agent = Agent(model=slotted(model), ...)   # at most 16 model calls at once across all agents
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import io
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

SLOT_WAIT_ATTRIBUTE = "agent_release.call_slot_wait_ms"


@dataclass
class SlotWait:
    """How long one case has waited for call slots: finished waits, and the start of the current one."""

    total_s: float = 0.0
    since: float | None = None

    def waited_s(self, now: float | None = None) -> float:
        """Seconds waited so far, including a wait still in progress."""
        if self.since is None:
            return self.total_s
        return self.total_s + (time.perf_counter() if now is None else now) - self.since


class CallSlotsClosed(RuntimeError):
    """The run that owned the call slots ended while this call was still waiting for one."""


class _Waiter:
    """One call queued for a slot; ``wake`` tells it that it got one (``granted``) or that the gate closed."""

    __slots__ = ("granted", "wake")

    def __init__(self, wake: Callable[[], object]) -> None:
        self.granted = False
        self.wake = wake


class CallSlots:
    """At most ``limit`` model calls at once; callers queue first come, first served.

    A call waits in the event loop (``async with slots.slot()``) or in the thread that makes it
    (:meth:`take` / :meth:`give_back`); both queue in one line and count against one limit. A slot that
    frees is handed to the first caller in line directly, so none can overtake it. :meth:`close` (the run
    is over) sends every caller still waiting away with :class:`CallSlotsClosed`.
    """

    def __init__(self, limit: int, on_call: Callable[[], object] | None = None) -> None:
        if limit < 1:
            raise ValueError(f"call slots need a limit of at least 1, got {limit}")
        self.limit = limit
        # Told each time a call gets its slot, in the thread that took it (the harness's first wave).
        self.on_call = on_call
        self.calls = 0
        self.waited_s = 0.0
        self.in_use = 0
        self.most_in_use = 0
        self._lock = threading.Lock()
        self._line: deque[_Waiter] = deque()
        self._closed = False

    @property
    def waiting(self) -> int:
        """Calls in line for a slot now."""
        with self._lock:
            return len(self._line)

    def take(self, wait: SlotWait | None = None) -> float:
        """Block this thread until it holds a slot; the seconds it waited. Pair with :meth:`give_back`."""
        started = time.perf_counter()
        woken = threading.Event()
        waiter = self._queue_or_take(woken.set)
        if waiter is None:
            self._tell_call()
            return self._end_wait(wait, started)
        if wait is not None:
            wait.since = started
        try:
            woken.wait()
        finally:
            waited = self._end_wait(wait, started)
        if not waiter.granted:
            raise CallSlotsClosed("the evaluation ended before this model call got a call slot")
        self._tell_call()
        return waited

    def give_back(self) -> None:
        """Free a slot taken with :meth:`take` (or by :meth:`slot`): the first caller in line gets it."""
        with self._lock:
            self.in_use -= 1
            self._hand_on_locked()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Hold one slot for the block, waiting in the event loop; yields the seconds spent waiting for it."""
        wait = CURRENT_WAIT.get()
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[None] = loop.create_future()
        waiter = self._queue_or_take(lambda: loop.call_soon_threadsafe(_settle, granted))
        if waiter is None:
            waited = self._end_wait(wait, started)
        else:
            if wait is not None:
                wait.since = started
            try:
                await granted
            except asyncio.CancelledError:
                self._leave_line(waiter)
                raise
            finally:
                waited = self._end_wait(wait, started)
            if not waiter.granted:
                raise CallSlotsClosed("the evaluation ended before this model call got a call slot")
        self._tell_call()
        try:
            yield waited
        finally:
            self.give_back()

    def close(self) -> None:
        """No more slots: every caller still in line is woken and raises :class:`CallSlotsClosed`."""
        with self._lock:
            self._closed = True
            line, self._line = list(self._line), deque()
        for waiter in line:
            waiter.wake()

    def _queue_or_take(self, wake: Callable[[], object]) -> _Waiter | None:
        """Take a free slot (None) when no one is in line, else join the line (the caller's waiter)."""
        with self._lock:
            if self._closed:
                raise CallSlotsClosed("the evaluation ended before this model call got a call slot")
            if self.in_use < self.limit and not self._line:
                self._start_call_locked()
                return None
            waiter = _Waiter(wake)
            self._line.append(waiter)
            return waiter

    def _hand_on_locked(self) -> None:
        if self._line and self.in_use < self.limit:
            waiter = self._line.popleft()
            waiter.granted = True
            self._start_call_locked()
            waiter.wake()

    def _start_call_locked(self) -> None:
        self.in_use += 1
        self.most_in_use = max(self.most_in_use, self.in_use)
        self.calls += 1

    def _leave_line(self, waiter: _Waiter) -> None:
        """A cancelled caller leaves the line; a slot it was handed meanwhile goes to the next one."""
        with self._lock:
            if waiter.granted:  # handed a slot it will not use: the call never happened
                self.in_use -= 1
                self.calls -= 1
                self._hand_on_locked()
            elif waiter in self._line:
                self._line.remove(waiter)

    def _tell_call(self) -> None:
        on_call = self.on_call
        if on_call is not None:
            on_call()

    def _end_wait(self, wait: SlotWait | None, started: float) -> float:
        waited = time.perf_counter() - started
        if wait is not None:
            wait.total_s += waited
            wait.since = None
        with self._lock:
            self.waited_s += waited
        return waited


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


CURRENT_SLOTS: contextvars.ContextVar[CallSlots | None] = contextvars.ContextVar(
    "agent_release_call_slots", default=None
)
CURRENT_WAIT: contextvars.ContextVar[SlotWait | None] = contextvars.ContextVar(
    "agent_release_call_slot_wait", default=None
)


def _note_wait_on_span(waited_s: float) -> None:
    """Write the slot wait on the current (model call) span, so the trace shows where that time went."""
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(SLOT_WAIT_ATTRIBUTE, round(waited_s * 1000.0, 3))


def slotted(model: Any) -> Any:
    """``model`` (a Strands ``Model``) wrapped so that each call holds a slot of :data:`CURRENT_SLOTS`; a
    model already wrapped is returned as it is (wrapped twice, each call would take two slots)."""
    return model if is_slotted(model) else _slotted_class()(model)


def is_slotted(model: Any) -> bool:
    """Whether ``model`` came from :func:`slotted` (its calls hold call slots)."""
    return isinstance(model, _slotted_class())


@functools.cache
def _slotted_class() -> type:
    # Defined on first use: the class derives from Strands' Model, which this module does not import
    # at import time (the CLI imports the agents package without Strands' cost).
    from strands.models.model import Model

    class SlottedModel(Model):
        """A Strands model whose calls each hold a call slot; everything else is the wrapped model's."""

        def __init__(self, inner: Any) -> None:
            client = _runtime_client(inner)
            # A model with a SageMaker Runtime client holds its slots in the calling thread, through a
            # copy of it whose client is gated: the caller's model object is left as it was.
            self.gated = client is not None
            if client is not None:
                inner = copy.copy(inner)
                inner.client = _GatedClient(client)
            self.inner = inner
            self._supports_structured_output = bool(getattr(inner, "_supports_structured_output", False))

        def __getattr__(self, name: str) -> Any:
            # Only reached for attributes this wrapper lacks: the model's client, config, etc.
            return getattr(self.inner, name)

        @property
        def stateful(self) -> bool:
            return bool(self.inner.stateful)

        @property
        def context_window_limit(self) -> int | None:
            limit = self.inner.context_window_limit
            return None if limit is None else int(limit)

        def update_config(self, **model_config: Any) -> None:
            self.inner.update_config(**model_config)

        def get_config(self) -> Any:
            return self.inner.get_config()

        async def count_tokens(self, *args: Any, **kwargs: Any) -> int:
            return int(await self.inner.count_tokens(*args, **kwargs))

        def estimate_utilization(self, input_tokens: int) -> float:
            return float(self.inner.estimate_utilization(input_tokens))

        def stream(self, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
            events = self.inner.stream(*args, **kwargs)
            return events if self.gated else _within_slot(events)

        def structured_output(self, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
            events = self.inner.structured_output(*args, **kwargs)
            return events if self.gated else _within_slot(events)

    return SlottedModel


async def _within_slot(events: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
    """Pass ``events`` through, holding a slot of :data:`CURRENT_SLOTS` (if set) until they end.

    ``aclosing``: when this generator is closed early (a consumer that stops, as Strands' cooperative
    cancel does, leaves it to the event loop's async-generator finaliser), the model's stream is closed
    with it and the slot released, rather than each waiting for the garbage collector on its own.
    """
    slots = CURRENT_SLOTS.get()
    async with aclosing(events):
        if slots is None:
            async for event in events:
                yield event
            return
        async with slots.slot() as waited:
            _note_wait_on_span(waited)
            async for event in events:
                yield event


# A case's cooperative cancel (the harness sets it when the case runs past its timeout): a gated client
# stops reading an answer there, between two of its parts, as Strands stops between two events.
CURRENT_CANCEL: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "agent_release_case_cancel", default=None
)
# The slot of the model call this thread is making through a gated client (see _GatedClient).
_CURRENT_CALL: contextvars.ContextVar[_HeldSlot | None] = contextvars.ContextVar(
    "agent_release_call_slot_held", default=None
)
_BEFORE_SEND_ID = "agent_release.call_slots.before_send"


def _runtime_client(model: Any) -> Any:
    """The model's SageMaker Runtime client (botocore), or None when it calls the model some other way."""
    client = getattr(model, "client", None)
    register = getattr(getattr(getattr(client, "meta", None), "events", None), "register", None)
    if register is None:
        return None
    if not all(callable(getattr(client, name, None)) for name in _GatedClient.GATED):
        return None
    return client


class _HeldSlot:
    """One model call's slot: taken before its first request is sent, kept across botocore's retries."""

    def __init__(self, slots: CallSlots, wait: SlotWait | None) -> None:
        self.slots = slots
        self.wait = wait
        self.held = False

    def take(self) -> None:
        if not self.held:
            waited = self.slots.take(self.wait)
            self.held = True
            _note_wait_on_span(waited)  # the thread runs in the call's context: the model span is current

    def give_back(self) -> None:
        if self.held:
            self.held = False
            self.slots.give_back()


def _take_slot_before_send(**_: Any) -> None:
    """botocore's ``before-send`` hook: the request is built and signed; wait for a slot to send it.

    Returns None, which lets botocore send the request (a value would stand in for the answer).
    """
    held = _CURRENT_CALL.get()
    if held is not None:
        held.take()


class _GatedClient:
    """A SageMaker Runtime client whose invocations each hold a slot of :data:`CURRENT_SLOTS`.

    In the thread that makes the call: the slot is taken in botocore's ``before-send`` hook (so the request
    is ready to go when the slot frees) and given back once the answer's body has been read to the end,
    which is when the endpoint stops counting the call. The body is handed on already read, so Strands
    parses the same events, without a blocking read per event. Everything else is the client's own.
    """

    GATED = ("invoke_endpoint", "invoke_endpoint_with_response_stream")

    def __init__(self, client: Any) -> None:
        self._client = client
        client.meta.events.register("before-send", _take_slot_before_send, unique_id=_BEFORE_SEND_ID)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def invoke_endpoint(self, **kwargs: Any) -> Any:
        return _gated_call(self._client.invoke_endpoint, kwargs, _read_body)

    def invoke_endpoint_with_response_stream(self, **kwargs: Any) -> Any:
        return _gated_call(self._client.invoke_endpoint_with_response_stream, kwargs, _ReadEvents.read_from)


def _gated_call(
    call: Callable[..., Any], kwargs: Mapping[str, Any], read: Callable[[Any, threading.Event | None], Any]
) -> Any:
    slots = CURRENT_SLOTS.get()
    if slots is None:
        return call(**kwargs)
    held = _HeldSlot(slots, CURRENT_WAIT.get())
    token = _CURRENT_CALL.set(held)
    try:
        response = call(**kwargs)
        response["Body"] = read(response["Body"], CURRENT_CANCEL.get())
        return response
    finally:
        _CURRENT_CALL.reset(token)
        held.give_back()


class _ReadEvents:
    """A response stream read to its end: its parts, then the error that ended it early, if one did (raised
    where the stream raised it, after the parts that came before)."""

    def __init__(self, parts: list[Any], error: Exception | None) -> None:
        self.parts = parts
        self.error = error

    @classmethod
    def read_from(cls, stream: Any, cancel: threading.Event | None = None) -> _ReadEvents:
        """Every part of ``stream``, up to the first after ``cancel`` is set (the rest is not waited for)."""
        parts: list[Any] = []
        error: Exception | None = None
        try:
            for part in stream:
                parts.append(part)
                if cancel is not None and cancel.is_set():
                    break
        except Exception as exc:  # raised to the reader in its place: see __iter__
            error = exc
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        return cls(parts, error)

    def __iter__(self) -> Iterator[Any]:
        yield from self.parts
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Nothing left open: the stream was read and closed."""


def _read_body(body: Any, cancel: threading.Event | None = None) -> io.BytesIO:
    """A non-streamed answer's body, read whole and closed (a non-streamed answer has no parts to stop
    between: ``cancel`` is not read); ``read`` and ``close`` as botocore's ``StreamingBody`` has them."""
    try:
        return io.BytesIO(body.read())
    finally:
        body.close()
