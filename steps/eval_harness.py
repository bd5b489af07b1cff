"""Run a variant's agent over evaluation cases concurrently, one traced MLflow span per case.

:func:`run_cases` drives the cases on one asyncio loop, each with a fresh Strands ``Agent`` around the
variant's shared model, a per-case timeout, and a root span (``eval_case``) under which Strands' own spans
nest (``MLFLOW_TRACE_PROPAGATE_TO_OTEL_CONTEXT``). ``concurrency`` bounds the model calls in flight (call
slots, :mod:`agent_release.agents.call_slots`); ``staged`` more cases run meanwhile up to their model call,
so a freed slot is taken at once rather than after the next agent is built. With staged cases, the first
``concurrency`` cases start one at a time, each once the call before it has its slot: built all at once,
the first wave's agents held the first request back by the time it took to build them all. Nothing is
dropped: an error or a timeout becomes a :class:`CaseOutcome` with ``error`` set. Retries of throttled /
5xx model calls happen in botocore (standard mode, the model's client config) and, for a model's own 5xx
answered as ``ModelError``, in :class:`ModelCallRetries`, which also counts the retries of each case
through the client's event hooks.

Why asyncio rather than threads: a per-case timeout can abandon a coroutine but not a thread, and the
agent's blocking boto3 calls already leave the loop through ``asyncio.to_thread``. The loop's default
executor is sized to the concurrency, because its stock size (cores + 4) would cap calls in flight.

Usage::

    outcomes = run_cases(units, make_agent=lambda unit: build_agent(slotted(model), prompt, tools),
                         variant="challenger", concurrency=16, staged=4, timeout_s=60)
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agent_release.agents.call_slots import (
    CURRENT_CANCEL,
    CURRENT_SLOTS,
    CURRENT_WAIT,
    CallSlots,
    SlotWait,
    is_slotted,
)
from agent_release.steps.gc_pauses import fewer_gc_pauses
from agent_release.steps.log_filters import filtered_loggers

logger = logging.getLogger(__name__)

CASE_SPAN_NAME = "eval_case"


@dataclass(frozen=True)
class CaseUnit:
    """One run of one case: the golden case plus which repeat this is."""

    case_id: str
    cluster: str
    input: str
    repeat: int = 0
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Unique key of this run (case id and repeat)."""
        return f"{self.case_id}#{self.repeat}"

    def scorer_inputs(self) -> dict[str, Any]:
        """The ``inputs`` a scorer sees (see :mod:`agent_release.steps.scorers`)."""
        return {"input": self.input, "case_id": self.case_id, "cluster": self.cluster, "repeat": self.repeat}


@dataclass
class CaseOutcome:
    """What happened when a case ran: the answer, the tool calls, usage, timing, error and trace id."""

    unit: CaseUnit
    variant: str
    answer: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    latency_s: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    model_calls: int = 0
    retries: int = 0
    trace_id: str | None = None
    scores: dict[str, float | None] = field(default_factory=dict)
    # Scorer name -> what it raised on this case ("*": scoring failed as a whole).
    scorer_errors: dict[str, str] = field(default_factory=dict)

    def outputs(self) -> dict[str, Any]:
        """The ``outputs`` a scorer sees (see :mod:`agent_release.steps.scorers`)."""
        return {
            "answer": self.answer,
            "tool_calls": self.tool_calls,
            "error": self.error,
            "latency_s": self.latency_s,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "variant": self.variant,
            "retries": self.retries,
        }


@dataclass(frozen=True)
class ProgressEvent:
    """Progress of one variant's evaluation, sent after every finished case."""

    variant: str
    done: int
    total: int
    errors: int
    retries: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        """Cases finished per second so far."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class _Attempts:
    calls: int = 0
    sends: int = 0


_CURRENT: contextvars.ContextVar[_Attempts | None] = contextvars.ContextVar(
    "eval_case_attempts", default=None
)


class ModelCallRetries:
    """Retry policy and retry count for one model's botocore client.

    botocore's standard mode already retries throttling and HTTP 5xx with backoff. A SageMaker model that
    fails answers ``ModelError`` (HTTP 424) with its own status in ``OriginalStatusCode``, which botocore
    treats as final; this policy retries those with a 5xx or 429 original status too (a model server failing
    or throttling, e.g. an LLM server behind an ``openai_compatible`` variant), with full-jitter exponential
    backoff, up to the client's ``max_attempts``. Retries are counted per case as attempts minus calls: the
    hooks read a context variable set by the running case, and ``asyncio.to_thread`` copies the context into
    the worker thread that makes the blocking call, so attempts land on the right case although many cases
    share the client.
    """

    def __init__(self, max_attempts: int, base_delay_s: float = 0.2, max_delay_s: float = 5.0) -> None:
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.attached = False

    def attach(self, model: Any) -> ModelCallRetries:
        """Hook into ``model.client`` (a botocore client) when the model has one; otherwise do nothing."""
        events = getattr(getattr(getattr(model, "client", None), "meta", None), "events", None)
        if events is not None:
            events.register("before-call", self._on_call)
            events.register("before-send", self._on_send)
            events.register("needs-retry", self._needs_retry)
            self.attached = True
        return self

    @staticmethod
    def _on_call(**_: Any) -> None:
        if (current := _CURRENT.get()) is not None:
            current.calls += 1

    @staticmethod
    def _on_send(**_: Any) -> None:
        if (current := _CURRENT.get()) is not None:
            current.sends += 1

    def _needs_retry(self, response: Any = None, attempts: int = 0, **_: Any) -> float | None:
        """Seconds to wait before retrying a ModelError whose model answered 5xx or 429; None leaves it to
        botocore."""
        if response is None or attempts >= self.max_attempts:
            return None
        parsed = response[1] if isinstance(response, tuple) and len(response) > 1 else {}
        error = parsed.get("Error", {}) if isinstance(parsed, Mapping) else {}
        status = int(parsed.get("OriginalStatusCode") or 0)
        if error.get("Code") != "ModelError" or not (status >= 500 or status == 429):
            return None
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempts - 1)))


def tool_calls_of(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The tool calls (name, arguments) an agent made, in order, from its message history.

    Arguments are kept as the model sent them when they are not a JSON object (Strands keeps a parsed
    ``[1, 2]`` or ``"ORD-1"`` as the tool's input): the row shows them, and they match no expected arguments.
    Read as a dict, such a call ended the whole evaluation with a TypeError.
    """
    calls: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") != "assistant":
            continue
        for block in message.get("content", []):
            if isinstance(block, Mapping) and "toolUse" in block:
                use = block["toolUse"]
                given = use.get("input")
                arguments = dict(given) if isinstance(given, Mapping) else ({} if given is None else given)
                calls.append({"name": use.get("name"), "arguments": arguments})
    return calls


def _usage_of(agent: Any) -> tuple[int, int]:
    usage = getattr(getattr(agent, "event_loop_metrics", None), "accumulated_usage", None) or {}
    return int(usage.get("inputTokens", 0)), int(usage.get("outputTokens", 0))


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500] if text else type(exc).__name__


async def _invoke_with_deadline(
    agent: Any, prompt: str, timeout_s: float, wait: SlotWait | None = None
) -> tuple[str, bool]:
    """Run the agent; past the deadline, cancel it cooperatively so every span it opened still ends.

    Time spent waiting for a call slot (``wait``, see :mod:`agent_release.agents.call_slots`) does not
    count against ``timeout_s``: that wait is the harness's, not the agent's.

    Strands stops at its next cancellation-safe point (between stream events or model calls) and closes
    its spans; a hard ``Task.cancel`` would leave them open and MLflow would hold the trace back forever.
    Only an agent stuck past a further grace period (as long as ``timeout_s``, at least 1 s) is cancelled
    hard (its trace is then replaced by :func:`log_stand_in_traces`).
    """
    signal = threading.Event()
    # Strands stops between stream events; a gated model client stops reading the answer between its parts.
    token = CURRENT_CANCEL.set(signal)
    try:
        task = asyncio.ensure_future(agent.invoke_async(prompt, cancel_signal=signal))
    finally:
        CURRENT_CANCEL.reset(token)
    started = time.perf_counter()
    remaining = timeout_s
    while remaining > 0:
        done, _ = await asyncio.wait({task}, timeout=remaining)
        if done:
            return str(task.result()).strip(), False
        now = time.perf_counter()
        remaining = timeout_s - (now - started - (wait.waited_s(now) if wait is not None else 0.0))
    signal.set()
    done, _ = await asyncio.wait({task}, timeout=max(timeout_s, 1.0))
    if not done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return "", True
    result = task.result()
    return ("" if getattr(result, "stop_reason", None) == "cancelled" else str(result).strip()), True


CaseScorer = Callable[[CaseOutcome], dict[str, float | None]]

# How long the first wave waits for one case's model call to get its slot before it starts the next case.
FIRST_CALL_WAIT_S = 0.05


async def _score_in_trace(outcome: CaseOutcome, score: CaseScorer | None) -> None:
    """Score the case inside its still-open root span (off the loop: a judge scorer may block)."""
    if score is None:
        return
    try:
        outcome.scores = await asyncio.to_thread(score, outcome)
    except Exception as exc:  # scorers' own errors are feedbacks already; this is a harness fault
        outcome.scorer_errors["*"] = _describe(exc)
        logger.warning(
            "case=<%s>, error=<%s> | scoring failed; the row keeps no scores", outcome.unit.key, exc
        )


async def _run_one(
    unit: CaseUnit,
    variant: str,
    make_agent: Callable[[CaseUnit], Any],
    timeout_s: float,
    score: CaseScorer | None = None,
    staged: int = 0,
) -> CaseOutcome:
    import mlflow

    outcome = CaseOutcome(unit=unit, variant=variant)
    attempts = _Attempts()
    _CURRENT.set(attempts)
    wait = SlotWait()
    CURRENT_WAIT.set(wait)
    started = time.perf_counter()
    with mlflow.start_span(name=CASE_SPAN_NAME, span_type="AGENT") as span:
        span.set_inputs({"input": unit.input, "case_id": unit.case_id, "repeat": unit.repeat})
        mlflow.update_current_trace(
            tags={
                "eval.case_id": unit.case_id,
                "eval.cluster": unit.cluster,
                "eval.variant": variant,
                "eval.repeat": str(unit.repeat),
            }
        )
        agent = None
        try:
            agent = make_agent(unit)
            if staged and not is_slotted(getattr(agent, "model", None)):
                # Without call slots, concurrency + staged agents would all call the endpoint at once.
                raise TypeError("staged cases need an agent whose model is wrapped with slotted()")
            answer, timed_out = await _invoke_with_deadline(agent, unit.input, timeout_s, wait)
            outcome.answer = answer
            if timed_out:
                outcome.error = f"TimeoutError: case exceeded {timeout_s:g}s"
        except Exception as exc:  # every failure is a row, so nothing may escape
            outcome.error = _describe(exc)
        # The agent's own time: waiting for a call slot is the harness's queue, not the variant's latency.
        outcome.latency_s = time.perf_counter() - started - wait.waited_s()
        if agent is not None:
            try:
                outcome.tool_calls = tool_calls_of(agent.messages)
                outcome.input_tokens, outcome.output_tokens = _usage_of(agent)
            except Exception as exc:  # what the agent left is unreadable: still a row, with why
                outcome.error = outcome.error or f"unreadable agent result: {_describe(exc)}"
        outcome.model_calls = attempts.calls
        outcome.retries = max(0, attempts.sends - attempts.calls)
        span.set_outputs(outcome.outputs())
        if outcome.error:
            span.set_status("ERROR")
        outcome.trace_id = span.trace_id
        await _score_in_trace(outcome, score)
    return outcome


def _quiet_about_interrupts(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop's exception handler: an interrupt (Ctrl-C, or SIGTERM raised as one by the CLI) that landed in
    a case's task is the run's interruption, which the CLI reports in one line and the resume recovers; the
    task it left behind is not also logged with a traceback as "Task exception was never retrieved"."""
    if isinstance(context.get("exception"), KeyboardInterrupt | SystemExit):
        logger.debug("message=<%s> | a case's task ended by the interrupt", context.get("message"))
        return
    loop.default_exception_handler(context)


async def _run_all(
    units: Sequence[CaseUnit],
    variant: str,
    make_agent: Callable[[CaseUnit], Any],
    concurrency: int,
    staged: int,
    timeout_s: float,
    progress: Callable[[ProgressEvent], None] | None,
    score: CaseScorer | None,
    on_tail: Callable[[], None] | None = None,
    on_first_wave: Callable[[], None] | None = None,
) -> list[CaseOutcome]:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_about_interrupts)
    # Every case in flight (staged ones wait for their call slot in a thread) may hold a thread in a blocking
    # boto3 read (streaming reads hop per event). Sized for ``concurrency`` alone, more staged cases than
    # threads queued for one, and that wait counted against their timeout. Threads start only when needed.
    executor = ThreadPoolExecutor(
        max_workers=2 * (concurrency + staged) + 4, thread_name_prefix="eval-model-call"
    )
    loop.set_default_executor(executor)
    # ``concurrency`` model calls at once (the call slots); ``staged`` more cases get ready meanwhile.
    gate = asyncio.Semaphore(concurrency + staged)
    call_started = asyncio.Event()
    slots = CallSlots(concurrency, on_call=lambda: loop.call_soon_threadsafe(call_started.set))
    CURRENT_SLOTS.set(slots)  # copied into every case's task below
    started = time.perf_counter()
    done = errors = retries = 0
    tail_told = False

    def tell_tail() -> None:
        # Once no more than ``concurrency`` cases are left, the call slots start to empty.
        nonlocal tail_told
        if on_tail is None or tail_told or len(units) - done > concurrency:
            return
        tail_told = True
        try:
            on_tail()
        except Exception as exc:  # a hint only: it must not cost a case its outcome
            logger.warning("variant=<%s>, error=<%s> | on_tail failed", variant, exc)

    async def guarded(unit: CaseUnit) -> CaseOutcome:
        nonlocal done, errors, retries
        async with gate:
            outcome = await _run_one(unit, variant, make_agent, timeout_s, score, staged)
        done += 1
        errors += outcome.error is not None
        retries += outcome.retries
        if progress is not None:
            progress(ProgressEvent(variant, done, len(units), errors, retries, time.perf_counter() - started))
        tell_tail()
        return outcome

    async def first_call_out(task: asyncio.Task[CaseOutcome], calls: int) -> None:
        # Until the case's call has its slot (its request is on its way), it ends, or FIRST_CALL_WAIT_S.
        deadline = loop.time() + FIRST_CALL_WAIT_S
        while slots.calls < calls and not task.done() and (remaining := deadline - loop.time()) > 0:
            call_started.clear()
            told = asyncio.ensure_future(call_started.wait())
            await asyncio.wait({task, told}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            told.cancel()

    tell_tail()  # a run of no more cases than slots is all tail
    tasks: list[asyncio.Task[CaseOutcome]] = []
    try:
        for index, unit in enumerate(units):
            calls_before = slots.calls  # one more than this, not index + 1: a case may fail before calling
            tasks.append(asyncio.ensure_future(guarded(unit)))
            # The first wave one case at a time (with staged cases, whose models hold call slots): each
            # case's request goes out before the next agent is built, instead of the first request
            # waiting for every agent of the wave (docs/performance.md, session 22).
            if staged and index < concurrency:
                await first_call_out(tasks[-1], calls_before + 1)
        slots.on_call = None
        if on_first_wave is not None:
            on_first_wave()
        outcomes = list(await asyncio.gather(*tasks))
    finally:
        # A call still waiting for a slot in its thread (an interrupted run) gives up instead of calling.
        slots.close()
    logger.debug(
        "variant=<%s>, calls=<%d>, most_at_once=<%d>, mean_wait_ms=<%.1f> | call slots",
        variant,
        slots.calls,
        slots.most_in_use,
        1000.0 * slots.waited_s / max(1, slots.calls),
    )
    return outcomes


# Strands logs one ERROR line for each failed agent call ("event loop cycle failed", "SageMaker error").
# During an evaluation every failure is already a row with its error, and the run ends with one summary
# line, so those records go to DEBUG instead of interleaving with the progress display.
CASE_ERROR_LOGGERS = ("strands.event_loop.event_loop", "strands.models.sagemaker")


def _demote_to_debug(record: logging.LogRecord) -> bool:
    """Pass an ERROR record on as DEBUG (dropped unless its logger is enabled for DEBUG)."""
    if record.levelno >= logging.ERROR:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
    return True


def run_cases(
    units: Sequence[CaseUnit],
    *,
    make_agent: Callable[[CaseUnit], Any],
    variant: str,
    concurrency: int,
    timeout_s: float,
    progress: Callable[[ProgressEvent], None] | None = None,
    score: CaseScorer | None = None,
    staged: int = 0,
    on_tail: Callable[[], None] | None = None,
    on_first_wave: Callable[[], None] | None = None,
) -> list[CaseOutcome]:
    """Run every unit (in input order in the result); blocks until all have an outcome.

    Call it inside the MLflow run (and active model) the traces should belong to. ``make_agent`` builds a
    fresh agent per unit. At most ``concurrency`` model calls are in flight; with ``staged`` > 0, up to
    ``concurrency + staged`` cases are in progress, and every agent's model must come from
    :func:`~agent_release.agents.call_slots.slotted` (a case whose model does not is an error row). A
    case's wait for a call slot is not counted in its ``latency_s`` or its timeout. ``score``, if given, is
    called inside each case's root span once the agent is done (see
    :mod:`agent_release.steps.inline_scoring`); its result becomes ``CaseOutcome.scores``. ``on_tail``, if
    given, is called once, in the event loop, as soon as no more than ``concurrency`` cases are left to
    finish (at the start if there are no more than that); an exception from it is logged, not raised.
    ``on_first_wave``, if given, is called once, in the event loop: with staged cases, when each of the
    first ``concurrency`` cases has its model call on the way, has ended, or has had
    :data:`FIRST_CALL_WAIT_S` to get there; without, once every case has been started. It is the moment
    work that could wait (the run's bookkeeping) can start without holding the first requests back.
    """
    logger.info(
        "variant=<%s>, cases=<%d>, concurrency=<%d> | running cases", variant, len(units), concurrency
    )
    with (
        fewer_gc_pauses(),  # ~3 ms of collector work per case otherwise (see steps/gc_pauses.py)
        filtered_loggers(CASE_ERROR_LOGGERS, _demote_to_debug),
    ):
        outcomes = asyncio.run(
            _run_all(
                units,
                variant,
                make_agent,
                concurrency,
                staged,
                timeout_s,
                progress,
                score,
                on_tail,
                on_first_wave,
            )
        )
    failed = [o for o in outcomes if o.error is not None]
    if failed:
        logger.warning(
            "variant=<%s>, failed=<%d>, cases=<%d>, first=<%s> | cases failed; each is a row with its error",
            variant,
            len(failed),
            len(outcomes),
            failed[0].error,
        )
    return outcomes


def log_stand_in_traces(
    outcomes: Sequence[CaseOutcome], missing: set[str | None], score: CaseScorer | None = None
) -> None:
    """Give each outcome whose trace never reached the store a root-span-only trace of its own.

    A case is never dropped: if its agent had to be cancelled hard, its spans never closed and MLflow
    will not export that trace, so the outcome gets a stand-in (tagged ``eval.stand_in=true``), scored
    inside it with ``score`` when given.
    """
    import mlflow

    for outcome in outcomes:
        if outcome.trace_id not in missing:
            continue
        unit = outcome.unit
        with mlflow.start_span(name=CASE_SPAN_NAME, span_type="AGENT") as span:
            span.set_inputs({"input": unit.input, "case_id": unit.case_id, "repeat": unit.repeat})
            mlflow.update_current_trace(
                tags={
                    "eval.case_id": unit.case_id,
                    "eval.cluster": unit.cluster,
                    "eval.variant": outcome.variant,
                    "eval.repeat": str(unit.repeat),
                    "eval.stand_in": "true",
                }
            )
            span.set_outputs(outcome.outputs())
            span.set_status("ERROR" if outcome.error else "OK")
            outcome.trace_id = span.trace_id
            if score is not None:
                outcome.scores = score(outcome)
