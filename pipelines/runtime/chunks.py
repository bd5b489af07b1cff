"""Turn a full ``chat.completion`` answer into the ``chat.completion.chunk`` SSE stream clients expect.

Local models answer whole responses; for InvokeEndpointWithResponseStream the runtime replays them as an
OpenAI-style stream, the shape LMI/vLLM containers produce and Strands' ``SageMakerAIModel`` parses:

1. a role delta, then the text (and reasoning) as content deltas;
2. per tool call ``i``: a first delta ``{"index": i, "id", "type": "function", "function": {"name",
   "arguments": ""}}`` and a second carrying the arguments (Strands needs ``index`` on every delta and the
   name on the first one of each index);
3. a delta with ``finish_reason``, then a usage-only chunk (``"choices": []``) and ``data: [DONE]``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

DONE_LINE = b"data: [DONE]\n\n"
# Strands builds a dataclass from the usage object, so only these keys may be forwarded.
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


class InvalidCompletionError(ValueError):
    """The model's answer is not a chat.completion object."""


def sse_line(chunk: Mapping[str, Any]) -> bytes:
    """One SSE event ``data: {json}`` followed by the blank line that ends it."""
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode("utf-8") + b"\n\n"


def _tool_call_deltas(index: int, call: Mapping[str, Any]) -> list[dict[str, Any]]:
    function = call.get("function") or {}
    arguments = function.get("arguments", "")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    first = {
        "index": index,
        "id": str(call.get("id") or f"call_{index}"),
        "type": "function",
        "function": {"name": function.get("name", ""), "arguments": ""},
    }
    return [first, {"index": index, "function": {"arguments": arguments}}]


def completion_to_chunks(completion: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects equivalent to ``completion`` (see the module docstring)."""
    try:
        choice = completion["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise InvalidCompletionError("model answer has no choices[0].message") from exc
    base = {
        "id": completion.get("id", "chatcmpl-local"),
        "object": "chat.completion.chunk",
        "created": completion.get("created", int(time.time())),
        "model": completion.get("model", "local"),
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

    chunks = [chunk({"role": "assistant"})]
    reasoning = message.get("reasoning_content")
    if reasoning:
        chunks.append(chunk({"reasoning_content": reasoning}))
    if message.get("content"):
        chunks.append(chunk({"content": message["content"]}))
    tool_calls = message.get("tool_calls") or []
    for index, call in enumerate(tool_calls):
        chunks.extend(chunk({"tool_calls": [delta]}) for delta in _tool_call_deltas(index, call))
    finish_reason = choice.get("finish_reason") or ("tool_calls" if tool_calls else "stop")
    chunks.append(chunk({}, finish_reason))
    usage = completion.get("usage")
    if isinstance(usage, Mapping):
        chunks.append({**base, "choices": [], "usage": {k: usage[k] for k in USAGE_KEYS if k in usage}})
    return chunks


def completion_to_sse(completion: Mapping[str, Any]) -> list[bytes]:
    """SSE lines for ``completion``, ending with ``data: [DONE]``."""
    return [*(sse_line(c) for c in completion_to_chunks(completion)), DONE_LINE]
