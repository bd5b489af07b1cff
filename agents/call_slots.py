"""Bound the model calls in flight at the endpoint, not the agents in progress: call slots.

An evaluation at concurrency N wants N model calls in flight at the endpoint at every moment. If it runs
only N agents at once, a slot of the endpoint stands idle after each call while the finished case ends its
spans and is scored and the next case's agent is built and opens its spans: CPU work that, in one
interpreter, also queues for the GIL behind the other agents. With call slots, a few more agents than N
run (``staged``), and each waits for a free slot only at the moment it calls the model. When a call ends,
a staged agent that has done its preparation takes the slot while the finished case does its bookkeeping.

:class:`CallSlots` is the gate (N slots, first come first served). :func:`slotted` wraps a Strands model so
that every ``stream`` (and ``structured_output``) call holds a slot for as long as the call's answer is
being read; with no gate in the context (:data:`CURRENT_SLOTS` unset) the wrapper passes calls straight
through. The time a case spends waiting for a slot is not the agent's time: it is added to the case's
:class:`SlotWait` (:data:`CURRENT_WAIT`), which the harness subtracts from the case's latency and timeout,
and it is written on the model call's span as ``agent_release.call_slot_wait_ms``.

Usage (inside the running event loop)::

    token = CURRENT_SLOTS.set(CallSlots(16))
    agent = Agent(model=slotted(model), ...)   # at most 16 stream() calls at once across all agents
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import AsyncGenerator, AsyncIterator
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


class CallSlots:
    """At most ``limit`` model calls at once; callers queue first come, first served.

    Create it inside the event loop that uses it (an ``asyncio.Semaphore`` belongs to one loop).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"call slots need a limit of at least 1, got {limit}")
        self.calls = 0
        self.waited_s = 0.0
        self._free = asyncio.Semaphore(limit)
        self.in_use = 0
        self.most_in_use = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Hold one slot for the block; yields the seconds spent waiting for it."""
        wait = CURRENT_WAIT.get()
        started = time.perf_counter()
        if wait is not None:
            wait.since = started
        try:
            await self._free.acquire()
        finally:
            waited = time.perf_counter() - started
            if wait is not None:
                wait.total_s += waited
                wait.since = None
        self.in_use += 1
        self.most_in_use = max(self.most_in_use, self.in_use)
        self.calls += 1
        self.waited_s += waited
        try:
            yield waited
        finally:
            self.in_use -= 1
            self._free.release()


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
    """``model`` (a Strands ``Model``) wrapped so that each call holds a slot of :data:`CURRENT_SLOTS`."""
    return _slotted_class()(model)


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
            return _within_slot(self.inner.stream(*args, **kwargs))

        def structured_output(self, *args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
            return _within_slot(self.inner.structured_output(*args, **kwargs))

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
