"""Replayed live traffic for bakes: held-out inputs sent to the endpoint as real agent conversations.

During a canary the guards need traffic. Locally (and in drills) nobody else calls the endpoint, so
:class:`LiveTraffic` plays the users: a dispatcher thread starts conversations at ``requests_per_s`` with at
most ``concurrency`` in flight, cycling through ``inputs``. Each conversation is a fresh Strands ``Agent``
whose model is pinned to ONE variant (``TargetVariant``) for the whole conversation: a Strands loop makes
several model calls, and a conversation that hopped between variants would be evidence about neither. The
variant is drawn from the endpoint's current traffic shares (:meth:`LiveTraffic.set_shares`, called by the
promotion after every weight change), so the mix the guards see is the mix users would get. One model object
per variant is built lazily and shared by that variant's agents (Strands models are thread-safe; agents are
not).

Usage::

    traffic = LiveTraffic(run_conversation=..., inputs=live_inputs, requests_per_s=10, concurrency=4)
    traffic.set_shares(state.traffic_shares())
    traffic.start()
    ...  # bake, shift, bake
    traffic.stop()

:class:`AgentConversations` is the usual ``run_conversation`` (a fresh agent on a pinned, shared model).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from agent_release.agents.builder import ModelBinding, build_agent, build_model
from agent_release.steps.agent_tracing import traced_as
from agent_release.steps.register_agents_config import InferenceConfig

logger = logging.getLogger(__name__)

ConversationRunner = Callable[[str, str], None]
"""``run_conversation(variant, user_input)``: one conversation pinned to ``variant``; raises on failure."""

# Replayed traffic must not outlive its bake by much: a short read timeout and one retry (botocore standard
# mode, so throttling and 5xx are still retried once, as a real client would).
LIVE_READ_TIMEOUT_S = 15.0
LIVE_MAX_ATTEMPTS = 2


class LiveTraffic:
    """A bounded, stoppable replay of ``inputs`` as pinned conversations (see module docstring)."""

    def __init__(
        self,
        run_conversation: ConversationRunner,
        inputs: Sequence[str],
        *,
        requests_per_s: float,
        concurrency: int,
        seed: int = 0,
    ) -> None:
        if not inputs:
            raise ValueError("live traffic needs at least one input")
        if requests_per_s <= 0 or concurrency < 1:
            raise ValueError("live traffic needs requests_per_s > 0 and concurrency >= 1")
        self._run = run_conversation
        self._inputs = list(inputs)
        self._interval = 1.0 / requests_per_s
        self._concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="live-traffic")
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._shares: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()

    def set_shares(self, shares: Mapping[str, float]) -> None:
        """Route new conversations by these traffic shares (variant -> share; zero shares get none)."""
        with self._lock:
            self._shares = {k: v for k, v in shares.items() if v > 0}

    def pick_variant(self) -> str | None:
        """A variant drawn by the current shares (None while no variant has a share)."""
        with self._lock:
            if not self._shares:
                return None
            names = sorted(self._shares)
            return self._random.choices(names, weights=[self._shares[n] for n in names])[0]

    def start(self) -> None:
        """Start the dispatcher thread (idempotent)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._dispatch, name="live-traffic-dispatch", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Start no more conversations; wait up to ``timeout_s`` for those in flight (then leave them be)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + timeout_s
        # Conversations in flight hold a slot each; taking every slot back means all of them ended.
        taken = 0
        while taken < self._concurrency and time.monotonic() < deadline:
            if self._slots.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
                taken += 1
        for _ in range(taken):
            self._slots.release()
        logger.debug(
            "started=<%s>, failed=<%s> | live traffic stopped", dict(self.started), dict(self.failed)
        )

    def _dispatch(self) -> None:
        next_at = time.monotonic()
        i = 0
        while not self._stop.is_set():
            wait = next_at - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                break
            next_at = max(next_at + self._interval, time.monotonic() - self._interval)
            variant = self.pick_variant()
            if variant is None:
                continue
            # Bounded: when every slot is busy the dispatcher waits instead of queueing work it cannot start.
            while not self._slots.acquire(timeout=0.1):
                if self._stop.is_set():
                    return
            user_input = self._inputs[i % len(self._inputs)]
            i += 1
            with self._lock:
                self.started[variant] += 1
            try:
                future = self._pool.submit(self._converse, variant, user_input)
            except RuntimeError:  # the pool was shut down by stop()
                self._slots.release()
                return
            future.add_done_callback(self._release_slot)

    def _release_slot(self, _future: Future[None]) -> None:
        self._slots.release()

    def _converse(self, variant: str, user_input: str) -> None:
        if self._stop.is_set():
            return
        try:
            self._run(variant, user_input)
        except Exception as exc:  # a failed conversation is traffic the guards will see, not a crash
            with self._lock:
                self.failed[variant] += 1
            logger.debug("variant=<%s>, error=<%s> | live conversation failed", variant, exc)


class AgentConversations:
    """``run_conversation(variant, input)`` asking a fresh agent on a model pinned to ``variant``.

    One model object per variant, built on first use or by :meth:`warm_up` (which also pays Strands' and
    botocore's import and client set-up before a bake starts, so the first bake is not spent importing).
    """

    def __init__(
        self,
        endpoint_name: str,
        system_prompt: str,
        tools: Sequence[Any],
        *,
        inference: InferenceConfig | None = None,
        region: str = "us-east-1",
        logged_models: Mapping[str, str] | None = None,
    ) -> None:
        self.endpoint_name = endpoint_name
        self.system_prompt = system_prompt
        self.tools = list(tools)
        self.inference = inference or InferenceConfig()
        self.region = region
        # Variant -> the LoggedModel of its registered agent: each conversation's trace names the agent
        # version that answered it, as the evaluation's traces do (mlflow.search_traces(model_id=...)).
        self.logged_models = dict(logged_models or {})
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()

    def model_for(self, variant: str) -> Any:
        """The shared model pinned to ``variant`` (TargetVariant), built once."""
        with self._lock:
            if variant not in self._models:
                self._models[variant] = build_model(
                    ModelBinding(
                        endpoint_name=self.endpoint_name,
                        variant=variant,
                        region=self.region,
                        max_tokens=self.inference.max_tokens,
                        temperature=self.inference.temperature,
                        stream=self.inference.stream,
                        read_timeout_s=LIVE_READ_TIMEOUT_S,
                        max_attempts=LIVE_MAX_ATTEMPTS,
                    )
                )
            return self._models[variant]

    def warm_up(
        self, variants: Sequence[str], *, converse_with: str | None = None, user_input: str = ""
    ) -> None:
        """Build the models of ``variants`` now rather than during a bake.

        With ``converse_with`` (the champion: the variant already serving users), also hold one throw-away
        conversation: the first agent call in a process initialises the event loop, tracing and HTTP pools,
        which on a busy machine takes seconds a bake cannot spare. Its failure is ignored (the guards judge
        the variants, not the warm-up).
        """
        for variant in variants:
            self.model_for(variant)
        if converse_with is not None:
            try:
                self(converse_with, user_input or "hello")
            except Exception as exc:
                logger.debug("variant=<%s>, error=<%s> | warm-up conversation failed", converse_with, exc)

    def __call__(self, variant: str, user_input: str) -> None:
        agent = build_agent(
            self.model_for(variant),
            self.system_prompt,
            self.tools,
            trace_attributes={"live_variant": variant},
        )
        model_id = self.logged_models.get(variant)
        if model_id is None:
            agent(user_input)
            return
        with traced_as(model_id):
            agent(user_input)
