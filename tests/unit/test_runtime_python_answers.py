"""A Python model's answer reaches Strands the same with streaming on and off.

A class of the team's answers in the chat-completions format but leaves out what the format leaves loose:
``finish_reason``, a tool call's ``id``, usage with detail objects. Streamed, the runtime re-frames the answer
as chunks and fills those gaps; not streamed, it used to send the answer as it was, and Strands'
``SageMakerAIModel`` failed every call (``KeyError: 'finish_reason'``). The class hands back one shared dict
for its final answer, which must come out unchanged.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agent_release.agents.builder import ModelBinding, build_agent, build_model
from agent_release.pipelines.local_backend import LocalBackend
from agent_release.steps.backend import ModelSpec, VariantSpec

FINAL: dict[str, Any] = {
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Ticket T-7 is open."}}],
    "usage": {
        "prompt_tokens": 9,
        "completion_tokens": 6,
        "total_tokens": 15,
        "completion_tokens_details": {},
    },
}
FINAL_AS_WRITTEN = copy.deepcopy(FINAL)


class LooseModel:
    """Asks for ``lookup_ticket`` once, then answers with the same module-level dict every time."""

    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        if request["messages"][-1]["role"] == "tool":
            return FINAL
        call = {
            "type": "function",
            "function": {"name": "lookup_ticket", "arguments": json.dumps({"id": "T-7"})},
        }
        return {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]
        }


@pytest.fixture(scope="module")
def runtime_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    backend = LocalBackend(Path(tmp_path_factory.mktemp("state")))
    model = ModelSpec(kind="python", options={"class_path": f"{__name__}:LooseModel"})
    backend.deploy_endpoint("helpdesk", [VariantSpec(name="only", model=model, initial_weight=1.0)])
    try:
        yield backend.start_runtime()
    finally:
        backend.close()


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_a_loose_answer_runs_the_tool_and_answers(
    runtime_url: str, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    from strands import tool

    looked_up: list[str] = []

    @tool
    def lookup_ticket(id: str) -> str:
        """Look a ticket up."""
        looked_up.append(id)
        return "open"

    for key, value in {
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": runtime_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(key, value)
    model = build_model(ModelBinding(endpoint_name="helpdesk", variant="only", stream=stream, max_attempts=1))
    result = build_agent(model, "You look tickets up.", [lookup_ticket])("What about T-7?")

    assert looked_up == ["T-7"]
    assert "Ticket T-7 is open." in str(result)
    assert result.metrics.accumulated_usage["outputTokens"] == 6
    assert FINAL == FINAL_AS_WRITTEN, "the model's own dict was changed"


def _answer(**choice: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": "ok"}
    return {"choices": [{"index": 0, "message": message, **choice}]}


@pytest.mark.parametrize(
    "answer",
    [
        _answer(finish_reason="stop"),
        _answer(),
        _answer(finish_reason=None),
        {**_answer(finish_reason="stop"), "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
        {**_answer(finish_reason="stop"), "usage": {"prompt_tokens": 1, "prompt_tokens_details": {}}},
        {**_answer(finish_reason="stop"), "usage": {}},
        {**_answer(finish_reason="stop"), "usage": None},
        {
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "f"}}]},
                }
            ]
        },
        {
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]},
                }
            ]
        },
        {"choices": "not a list"},
    ],
)
def test_the_no_copy_check_says_exactly_when_normalising_would_change_an_answer(
    answer: dict[str, Any],
) -> None:
    # The runtime copies a python model's answer only when this check says so: it must never miss a fix.
    from agent_release.pipelines.runtime.upstream_chunks import (
        completion_needs_normalising,
        normalise_completion,
    )

    changed = normalise_completion(copy.deepcopy(answer)) != answer
    assert completion_needs_normalising(answer) == changed
