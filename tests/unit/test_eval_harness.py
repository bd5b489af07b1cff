"""The evaluation harness: which model failures are retried and how long after, what a row says, and how a
case's retries reach its row and the progress events.

``run_cases``'s concurrency, staging and timeouts are exercised in ``test_call_slots.py``,
``test_inline_scoring.py`` and ``test_evaluate_variants.py``; these pin the rules its rows and retries rest on,
read off the docstrings (a mutation audit found them unpinned).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from _shared.eval_world import traced_store
from _shared.fake_model import ScriptedModelBase

from agent_release.steps import eval_harness
from agent_release.steps.eval_harness import (
    CaseOutcome,
    CaseUnit,
    ModelCallRetries,
    ProgressEvent,
    run_cases,
    tool_calls_of,
)


def _model_error(status: int | None, code: str = "ModelError") -> tuple[Any, dict[str, Any]]:
    """What botocore's ``needs-retry`` hook is given for a SageMaker answer: (http response, parsed)."""
    parsed: dict[str, Any] = {"Error": {"Code": code, "Message": "upstream failed"}}
    if status is not None:
        parsed["OriginalStatusCode"] = status
    return object(), parsed


@pytest.fixture
def upper_jitter(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """Full jitter drawn at its top: the wait is the backoff's cap. Records the bounds drawn from."""
    drawn: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        drawn.append((low, high))
        return high

    monkeypatch.setattr(eval_harness.random, "uniform", uniform)
    return drawn


@pytest.mark.parametrize("status", [500, 502, 503, 599, 429])
def test_a_model_error_whose_model_answered_5xx_or_429_is_retried(status: int, upper_jitter: Any) -> None:
    delay = ModelCallRetries(max_attempts=3)._needs_retry(_model_error(status), attempts=1)
    assert delay == pytest.approx(0.2)  # the base delay on the first retry


@pytest.mark.parametrize("status", [None, 0, 400, 404, 424, 428, 430, 499])
def test_a_model_error_the_request_caused_is_left_to_botocore(status: int | None) -> None:
    assert ModelCallRetries(max_attempts=3)._needs_retry(_model_error(status), attempts=1) is None


@pytest.mark.parametrize("code", ["ThrottlingException", "ValidationError", "InternalFailure"])
def test_errors_other_than_model_error_are_left_to_botocores_standard_mode(code: str) -> None:
    # botocore already retries throttling and 5xx itself; a second policy would double the attempts.
    assert ModelCallRetries(max_attempts=3)._needs_retry(_model_error(503, code), attempts=1) is None


def test_no_response_or_not_botocores_response_pair_is_left_to_botocore() -> None:
    retries = ModelCallRetries(max_attempts=3)
    assert retries._needs_retry(None, attempts=1) is None  # a connection error: botocore's to handle
    assert retries._needs_retry("not a tuple", attempts=1) is None


def test_model_errors_are_retried_up_to_max_attempts_in_all(upper_jitter: Any) -> None:
    """botocore passes the attempts made so far: with 3 attempts in all, attempts 1 and 2 are retried."""
    retries = ModelCallRetries(max_attempts=3)
    assert retries._needs_retry(_model_error(503), attempts=2) is not None
    assert retries._needs_retry(_model_error(503), attempts=3) is None
    assert retries._needs_retry(_model_error(503), attempts=4) is None


def test_the_backoff_is_full_jitter_doubling_from_the_base_delay_up_to_the_cap(
    upper_jitter: list[tuple[float, float]],
) -> None:
    retries = ModelCallRetries(max_attempts=20, base_delay_s=0.2, max_delay_s=5.0)
    delays = [retries._needs_retry(_model_error(503), attempts=n) for n in range(1, 8)]
    # 0.2 * 2 ** (n - 1), at most 5 s: 0.2, 0.4, 0.8, 1.6, 3.2, then capped.
    assert delays == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])
    assert all(low == 0 for low, _ in upper_jitter)  # full jitter: anywhere from no wait to the cap


def test_attach_hooks_a_botocore_client_and_leaves_a_model_without_one_alone() -> None:
    registered: list[str] = []

    class Events:
        def register(self, name: str, handler: Any) -> None:
            registered.append(name)

    class Meta:
        events = Events()

    class Client:
        meta = Meta()

    class Model:
        client = Client()

    assert not ModelCallRetries(3).attach(object()).attached
    assert registered == []
    assert ModelCallRetries(3).attach(Model()).attached
    assert sorted(registered) == ["before-call", "before-send", "needs-retry"]


def test_tool_calls_keep_order_and_skip_what_is_not_an_assistants_tool_use() -> None:
    messages = [
        {"role": "user", "content": [{"toolUse": {"name": "not_the_agents", "input": {}}}]},
        {
            "role": "assistant",
            "content": [
                {"text": "checking"},
                "a bare string block",
                {"toolUse": {"name": "first", "input": None}},
                {"toolUse": {"name": "second", "input": {"id": "A"}}},
            ],
        },
        {"role": "assistant"},  # no content at all
        {"role": "assistant", "content": [{"toolUse": {"name": "third", "input": ["ORD-1"]}}]},
    ]
    assert tool_calls_of(messages) == [
        {"name": "first", "arguments": {}},  # no input: no arguments
        {"name": "second", "arguments": {"id": "A"}},
        {"name": "third", "arguments": ["ORD-1"]},  # not an object: kept as sent
    ]


def test_an_error_is_described_by_its_type_and_one_line_of_at_most_500_characters() -> None:
    assert eval_harness._describe(TimeoutError()) == "TimeoutError"
    assert (
        eval_harness._describe(ValueError("bad\n  answer\tfrom   model"))
        == "ValueError: bad answer from model"
    )
    long = eval_harness._describe(RuntimeError("x" * 600))
    assert long == ("RuntimeError: " + "x" * 600)[:500]


def test_usage_is_read_from_the_agents_metrics_and_is_zero_when_it_has_none() -> None:
    agent = SimpleNamespace(
        event_loop_metrics=SimpleNamespace(
            accumulated_usage={"inputTokens": 12, "outputTokens": 7, "totalTokens": 19}
        )
    )
    assert eval_harness._usage_of(agent) == (12, 7)
    assert eval_harness._usage_of(SimpleNamespace()) == (0, 0)  # no metrics: unknown usage reads as none


def test_progress_rate_is_cases_per_second_and_zero_before_any_time_has_passed() -> None:
    assert ProgressEvent("v", done=30, total=40, errors=1, retries=2, elapsed_s=12.0).rate == 2.5
    assert ProgressEvent("v", done=0, total=40, errors=0, retries=0, elapsed_s=0.0).rate == 0.0


def test_a_rows_key_and_scorer_inputs_name_the_case_and_its_repeat() -> None:
    unit = CaseUnit("C-7", "refunds", "where is my order?", repeat=2)
    assert unit.key == "C-7#2"
    assert unit.scorer_inputs() == {
        "input": "where is my order?",
        "case_id": "C-7",
        "cluster": "refunds",
        "repeat": 2,
    }
    outcome = CaseOutcome(unit=unit, variant="challenger", answer="shipped", error=None, retries=3)
    assert outcome.outputs()["retries"] == 3
    assert outcome.outputs()["variant"] == "challenger"


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with traced_store(tmp_path, monkeypatch, "harness"):
        yield


class _Events:
    """The part of botocore's event emitter ModelCallRetries hooks into."""

    def __init__(self) -> None:
        self.handlers: list[tuple[str, Any]] = []

    def register(self, event: str, handler: Any) -> None:
        self.handlers.append((event, handler))

    def emit(self, event: str) -> None:
        for name, handler in self.handlers:
            if event.startswith(name):
                handler()


class ClientBackedModel(ScriptedModelBase):
    """A Strands model calling through a botocore-like client: per call, one ``before-call`` and one
    ``before-send`` per attempt, as botocore emits them when it retries. The case's input says how many
    attempts its call takes ("sends=3"), or that it fails ("fail")."""

    def __init__(self) -> None:
        super().__init__({"model_id": "client-backed"})
        self.client = SimpleNamespace(meta=SimpleNamespace(events=_Events()))

    def _call(self, prompt: str) -> None:  # the blocking boto3 call, made in a worker thread
        self.client.meta.events.emit("before-call.sagemaker-runtime.InvokeEndpoint")
        for _ in range(int(prompt.split("=")[1]) if prompt.startswith("sends=") else 1):
            self.client.meta.events.emit("before-send.sagemaker-runtime.InvokeEndpoint")
        if prompt == "fail":
            raise RuntimeError("endpoint answered 500")

    async def stream(self, messages: list[Any], *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        await asyncio.to_thread(self._call, messages[-1]["content"][0]["text"])
        yield {"messageStart": {"role": "assistant"}}
        yield {"contentBlockDelta": {"delta": {"text": "done"}}}
        yield {"contentBlockStop": {}}
        yield {"messageStop": {"stopReason": "end_turn"}}


def test_retries_are_counted_per_case_and_summed_in_the_progress_events(tracking: None) -> None:
    """A case's retries are its attempts minus its calls, each landing on its own case although the cases
    share the client; every finished case sends a progress event with the running totals."""
    from strands.models.model import Model

    from agent_release.agents.builder import build_agent

    model = type("ClientBackedStrandsModel", (ClientBackedModel, Model), {})()
    assert ModelCallRetries(max_attempts=4).attach(model).attached
    inputs = ["sends=1", "sends=3", "fail", "sends=2", "sends=1"]
    units = [CaseUnit(f"C-{i}", "k", text) for i, text in enumerate(inputs)]
    events: list[ProgressEvent] = []
    outcomes = run_cases(
        units,
        make_agent=lambda unit: build_agent(model, "Answer.", []),
        variant="challenger",
        concurrency=2,
        timeout_s=10,
        progress=events.append,
    )
    assert [o.unit.case_id for o in outcomes] == [u.case_id for u in units]  # input order
    assert [o.retries for o in outcomes] == [0, 2, 0, 1, 0]
    assert [o.model_calls for o in outcomes] == [1, 1, 1, 1, 1]
    assert [o.error is not None for o in outcomes] == [False, False, True, False, False]
    assert [(e.variant, e.done, e.total) for e in events] == [("challenger", k, 5) for k in range(1, 6)]
    assert (events[-1].errors, events[-1].retries) == (1, 3)
    assert all(later.errors >= earlier.errors for earlier, later in itertools.pairwise(events))


class _Result:
    """What ``Agent.invoke_async`` returns: a stop reason, and the answer as its text."""

    def __init__(self, stop_reason: str, text: str) -> None:
        self.stop_reason = stop_reason
        self.text = text

    def __str__(self) -> str:
        return self.text


class _LateAgent:
    """An agent that notices the cooperative cancel only ``late_s`` after it is set, then ends as told."""

    def __init__(self, late_s: float, stop_reason: str) -> None:
        self.late_s = late_s
        self.stop_reason = stop_reason

    async def invoke_async(self, prompt: str, cancel_signal: Any) -> _Result:
        while not cancel_signal.is_set():
            await asyncio.sleep(0.01)
        await asyncio.sleep(self.late_s)
        return _Result(self.stop_reason, f" answer to {prompt} ")


def test_an_agent_that_stops_within_the_grace_is_a_timeout_that_keeps_its_answer() -> None:
    # Past the deadline the agent is asked to stop and given a grace as long as the timeout, at least 1 s,
    # before a hard cancel: 0.4 s late against a 0.1 s timeout is within it, so the agent ends by itself.
    answer, timed_out = asyncio.run(eval_harness._invoke_with_deadline(_LateAgent(0.4, "end_turn"), "q", 0.1))
    assert (answer, timed_out) == ("answer to q", True)


def test_an_agent_stopped_by_the_cooperative_cancel_leaves_no_answer() -> None:
    answer, timed_out = asyncio.run(
        eval_harness._invoke_with_deadline(_LateAgent(0.0, "cancelled"), "q", 0.1)
    )
    assert (answer, timed_out) == ("", True)
