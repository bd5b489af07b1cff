"""Offline agent loop for quick quality checks without an endpoint or Strands' event loop.

``run_conversation(model, toolbox, tool_payload, text)`` plays the loop Strands runs: call ``complete``, run
the requested tool locally with :class:`~agent_release.agents.support.tools.SupportToolbox`, append the result
as an OpenAI ``tool`` message, repeat until the model answers. ``task_success(case, transcript)`` checks a
golden case: same tool names in order, exact ``order_id``/``reason`` arguments (free-text ``query`` is judged
by the facts instead), and every expected fact in the answer (case-insensitive). The pipeline's evaluation
step uses MLflow scorers; this is the model developer's quick check.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent_release.agents.chat_model import ChatCompletionModel
from agent_release.agents.support.tools import SupportToolbox

EXACT_ARGUMENTS = ("order_id", "reason")
MAX_STEPS = 6


@dataclass
class Transcript:
    """The tool calls made and the final answer of one simulated conversation."""

    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    answer: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


def tool_payload(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """``request["tools"]`` for Strands tools, exactly as SageMakerAIModel formats their specs."""
    return [
        {
            "type": "function",
            "function": {
                "name": t.tool_spec["name"],
                "description": t.tool_spec["description"],
                "parameters": t.tool_spec["inputSchema"]["json"],
            },
        }
        for t in tools
    ]


def run_conversation(
    model: ChatCompletionModel,
    toolbox: SupportToolbox,
    tools: list[dict[str, Any]],
    text: str,
    system_prompt: str = "",
) -> Transcript:
    """Simulate one user turn to completion and return its transcript."""
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": [{"type": "text", "text": text}]})
    transcript = Transcript()
    for _ in range(MAX_STEPS):
        response = model.complete(
            {"messages": messages, "tools": tools, "tool_choice": "auto", "stream": False}
        )
        transcript.prompt_tokens += int(response["usage"]["prompt_tokens"])
        transcript.completion_tokens += int(response["usage"]["completion_tokens"])
        message = response["choices"][0]["message"]
        calls = message.get("tool_calls") or []
        if not calls:
            transcript.answer = message.get("content") or ""
            return transcript
        messages.append({"role": "assistant", "tool_calls": calls})
        for call in calls:
            name = call["function"]["name"]
            arguments = json.loads(call["function"]["arguments"])
            transcript.tool_calls.append({"name": name, "arguments": arguments})
            result = getattr(toolbox, name)(**arguments)
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": json.dumps(result)})
    return transcript


def task_success(case: Mapping[str, Any], transcript: Transcript) -> bool:
    """True when the trajectory, the exact arguments and every expected fact match ``case``."""
    expected = case["expected_tool_calls"]
    if [c["name"] for c in transcript.tool_calls] != [c["name"] for c in expected]:
        return False
    for made, wanted in zip(transcript.tool_calls, expected, strict=True):
        for name in EXACT_ARGUMENTS:
            if name in wanted["arguments"] and made["arguments"].get(name) != wanted["arguments"][name]:
                return False
    answer = transcript.answer.lower()
    return all(str(fact).lower() in answer for fact in case["expected_facts"])
