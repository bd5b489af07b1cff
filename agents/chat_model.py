"""The contract every variant model answers: OpenAI chat-completions (what Strands' SageMakerAIModel sends).

A model served by the local runtime (kinds ``demo`` and ``python``) implements :class:`ChatCompletionModel`.
``complete`` takes the request body Strands sends (``messages``, ``tools``, ``tool_choice``, ``max_tokens``,
``stream``, ...) and returns a non-streaming ``chat.completion`` object:
``{"id", "object": "chat.completion", "created", "model", "choices": [{"index": 0, "message": {"role":
"assistant", "content": str | None, "tool_calls": [{"id", "type": "function", "function": {"name",
"arguments": json-str}}]}, "finish_reason": "stop" | "tool_calls"}], "usage": {"prompt_tokens",
"completion_tokens", "total_tokens"}}``.
The runtime turns it into ``chat.completion.chunk`` events itself when the caller asked for a stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class ChatCompletionModel(Protocol):
    """Answers one chat-completions request."""

    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Return a ``chat.completion`` response object for ``request``."""
        ...
