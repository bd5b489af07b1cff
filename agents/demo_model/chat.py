"""The demo model behind the chat-completions contract (see ``agent_release.agents.chat_model``).

``SupportChatModel(trained).complete(request)`` reads the OpenAI-format request Strands' ``SageMakerAIModel``
sends and answers with one ``chat.completion``:

- last turn is the user's: predict intent, plan and arguments; call the plan's first tool (only tools
  offered in ``request["tools"]``, only arguments their JSON schema declares), or answer directly / ask for
  a missing argument;
- last turn(s) are tool results (``role: "tool"`` with string content, or Strands'
  ``tool_results_as_user_messages`` form): call the plan's next tool, or compose the final answer from the
  structured results.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from agent_release.agents.demo_model.compose import (
    ToolOutcome,
    ask_for,
    compose_answer,
    direct_answer,
    unavailable,
)
from agent_release.agents.demo_model.features import count_tokens
from agent_release.agents.demo_model.model import Prediction, TrainedModel

# What SageMakerAIModel sends instead of a tool message when tool_results_as_user_messages is on.
_USER_TOOL_RESULT = re.compile(r"^Tool call ID '(?P<id>[^']*)' returned: (?P<content>.*)$", re.DOTALL)


class ChatRequestError(ValueError):
    """The request is not a chat-completions request the model can answer (message is one line)."""


def content_text(content: Any) -> str:
    """Text of a message's ``content``: a string, a list of content parts, or None."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [str(p.get("text", "")) for p in content if isinstance(p, Mapping) and "text" in p]
        return "\n".join(parts)
    return str(content)


def _parse_result(name: str, text: str) -> ToolOutcome:
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    return ToolOutcome(name, text, parsed if isinstance(parsed, dict) else None)


def current_turn(messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[ToolOutcome]]:
    """The last user message's text and the tool results that followed it, in order."""
    user_text: str | None = None
    outcomes: list[ToolOutcome] = []
    call_names: dict[str, str] = {}
    call_order: list[str] = []
    for message in messages:
        role = message.get("role")
        text = content_text(message.get("content"))
        converted = _USER_TOOL_RESULT.match(text) if role == "user" else None
        if role == "user" and converted is None:
            user_text, outcomes, call_names, call_order = text, [], {}, []
        elif role == "assistant":
            for call in message.get("tool_calls") or []:
                name = str(call.get("function", {}).get("name", ""))
                call_names[str(call.get("id", ""))] = name
                call_order.append(name)
        elif role == "tool" or converted is not None:
            call_id = str(message.get("tool_call_id", "")) if converted is None else converted.group("id")
            content = text if converted is None else converted.group("content")
            fallback = call_order[len(outcomes)] if len(outcomes) < len(call_order) else "tool"
            outcomes.append(_parse_result(call_names.get(call_id, fallback), content))
    if user_text is None:
        raise ChatRequestError("the request has no user message")
    return user_text, outcomes


def offered_tools(request: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Tool name -> JSON schema of its parameters, for the tools the request offers."""
    tools: dict[str, Mapping[str, Any]] = {}
    for spec in request.get("tools") or []:
        function = spec.get("function", {}) if isinstance(spec, Mapping) else {}
        if function.get("name"):
            tools[str(function["name"])] = function.get("parameters") or {}
    return tools


class SupportChatModel:
    """A :class:`~agent_release.agents.chat_model.ChatCompletionModel` backed by a :class:`TrainedModel`."""

    def __init__(self, trained: TrainedModel, name: str = "demo-support") -> None:
        self.trained = trained
        self.name = name

    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Answer one chat-completions request (non-streaming ``chat.completion`` object)."""
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ChatRequestError("the request has no messages")
        user_text, outcomes = current_turn(messages)
        prediction = self.trained.predict(user_text)
        content, tool_call = self.decide(prediction, outcomes, offered_tools(request))
        return self._response(request, content, tool_call)

    def decide(
        self,
        prediction: Prediction,
        outcomes: Sequence[ToolOutcome],
        tools: Mapping[str, Mapping[str, Any]],
    ) -> tuple[str | None, dict[str, Any] | None]:
        """(answer text, None) or (None, tool call {"name", "arguments"}) for this point of the turn."""
        if outcomes and outcomes[-1].failed:
            return compose_answer(outcomes), None
        step = len(outcomes)
        if step >= len(prediction.plan):
            if outcomes:
                return compose_answer(outcomes), None
            return self.trained.reply_for(prediction.intent) or direct_answer(prediction.intent), None
        planned = prediction.plan[step]
        if planned.tool not in tools:
            return unavailable(planned.tool), None
        schema = tools[planned.tool]
        properties: Mapping[str, Any] = schema.get("properties") or {}
        arguments: dict[str, Any] = {}
        for name, prop in properties.items():
            value = prediction.arguments.get(name)
            allowed = prop.get("enum") if isinstance(prop, Mapping) else None
            if value is None or (allowed is not None and value not in allowed):
                continue
            arguments[name] = value
        missing = [name for name in schema.get("required") or [] if name not in arguments]
        if missing:
            return ask_for(missing[0]), None
        return None, {"name": planned.tool, "arguments": arguments}

    def _response(
        self, request: Mapping[str, Any], content: str | None, tool_call: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        prompt_tokens = sum(count_tokens(content_text(m.get("content"))) for m in request.get("messages", []))
        prompt_tokens += count_tokens(json.dumps(request.get("tools") or []))
        message: dict[str, Any] = {"role": "assistant", "content": content}
        completion_tokens = count_tokens(content or "")
        finish_reason = "stop"
        if tool_call is not None:
            arguments = json.dumps(tool_call["arguments"], sort_keys=True)
            digest = hashlib.sha256(json.dumps(request.get("messages"), sort_keys=True).encode()).hexdigest()
            message["tool_calls"] = [
                {
                    "id": f"call_{digest[:16]}",
                    "type": "function",
                    "function": {"name": tool_call["name"], "arguments": arguments},
                }
            ]
            completion_tokens += count_tokens(tool_call["name"]) + count_tokens(arguments)
            finish_reason = "tool_calls"
        return {
            "id": f"chatcmpl-{hashlib.sha256(repr((time.time_ns(), message)).encode()).hexdigest()[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
