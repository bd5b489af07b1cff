"""Make an OpenAI-compatible server's answers ones Strands' ``SageMakerAIModel`` can read.

Real servers differ in details the OpenAI format leaves loose, and Strands trips on some of them:

- ``usage`` with more keys than the three counts (OpenAI's and LiteLLM's ``completion_tokens_details``,
  SGLang's ``reasoning_tokens``): Strands builds a dataclass from it, so every call raises ``TypeError``;
- a tool call without an ``id`` (or an empty one): Strands' tool results then match no tool use and its
  event loop recurses until ``RecursionError``;
- a streamed tool-call delta without ``index`` (older Ollama): Strands raises ``KeyError: 'index'``;
- a choice without ``finish_reason`` (OpenAI always sends it, null until the last chunk; some servers leave
  it out): Strands reads it by key, so every call raises ``KeyError: 'finish_reason'``;
- an error after the stream began, sent as a data event ``{"error": {...}}`` (vLLM) or as an ``error:``
  field (llama.cpp server): Strands skips it and takes the text so far for the whole answer.

The proxy rewrites just those: usage keeps the three counts, a missing tool-call id gets a fresh one, a
missing index is the delta's position in its list, a missing ``finish_reason`` is null in a streamed chunk and,
in a whole completion, ``tool_calls`` or ``stop`` as the message says, an error event ends the stream as an error
(:attr:`SSEEvents.error`). Everything else passes unchanged. For a stream the SSE is re-framed event by
event (:class:`SSEEvents`), since upstream reads split events (and UTF-8 characters) anywhere and servers
end lines with LF or CRLF.
"""

from __future__ import annotations

import codecs
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

from agent_release.pipelines.runtime.chunks import DONE_LINE, USAGE_KEYS

_LINE_END = re.compile(r"\r\n|\r|\n")


def new_tool_call_id() -> str:
    """A tool-call id unique across calls and turns (Strands pairs tool results with their use by it)."""
    return f"call_{uuid.uuid4().hex[:24]}"


def _usage(usage: Any) -> dict[str, Any] | None:
    """The counts Strands accepts, or None when the upstream sent no usable usage object."""
    if not isinstance(usage, Mapping):
        return None
    return {k: usage[k] for k in USAGE_KEYS if k in usage}


def _fix_usage(holder: dict[str, Any]) -> None:
    """Keep only the counts of ``holder["usage"]``; drop a null or malformed usage (Strands skips none)."""
    if "usage" not in holder:
        return
    usage = _usage(holder["usage"])
    if usage:
        holder["usage"] = usage
    else:
        del holder["usage"]


def normalise_completion(answer: dict[str, Any]) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` with usage trimmed, every tool call given an id and every choice a
    ``finish_reason``."""
    _fix_usage(answer)
    choices = answer.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, dict) and not call.get("id"):
                call["id"] = new_tool_call_id()
        if isinstance(choice, dict) and choice.get("finish_reason") is None:
            choice["finish_reason"] = "tool_calls" if calls else "stop"
    return answer


def completion_needs_normalising(answer: Mapping[str, Any]) -> bool:
    """Whether :func:`normalise_completion` would change ``answer``: lets a caller copy only when it would
    (a model may hand back the same dict on every call)."""
    if "usage" in answer:
        usage = answer["usage"]
        if not isinstance(usage, Mapping) or not usage or set(usage) - set(USAGE_KEYS):
            return True
    choices = answer.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        if choice.get("finish_reason") is None:
            return True
        message = choice.get("message")
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        listed = calls if isinstance(calls, list) else ()
        if any(isinstance(call, dict) and not call.get("id") for call in listed):
            return True
    return False


def upstream_error(error: Any) -> tuple[str, int]:
    """(message, status) of an upstream's error object (``{"message", "code"}`` or a bare string), in a
    stream or a 200 body; status 502 unless its code is a 4xx/5xx."""
    message = error.get("message") if isinstance(error, Mapping) else error
    code = error.get("code") if isinstance(error, Mapping) else None
    status = code if isinstance(code, int) and 400 <= code < 600 else 502
    return str(message or json.dumps(error)), status


class StreamNormaliser:
    """Rewrites the ``chat.completion.chunk`` objects of one stream (it remembers which tool calls began)."""

    def __init__(self) -> None:
        self._started: set[int] = set()

    def chunk(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """``chunk`` with usage trimmed, and each tool-call delta given an index and, on its first, an id."""
        _fix_usage(chunk)
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            choice.setdefault("finish_reason", None)
            _fix_usage(choice)
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            calls = delta.get("tool_calls")
            if isinstance(calls, dict):  # one call, not in a list
                calls = delta["tool_calls"] = [calls]
            for position, call in enumerate(calls if isinstance(calls, list) else ()):
                if isinstance(call, dict):
                    self._tool_call_delta(position, call)
        return chunk

    def _tool_call_delta(self, position: int, call: dict[str, Any]) -> None:
        index = call.setdefault("index", position)
        if index in self._started:
            return
        self._started.add(index)
        # Strands reads the id from the first delta of each index only.
        if not call.get("id"):
            call["id"] = new_tool_call_id()


class SSEEvents:
    """Upstream SSE bytes in, whole ``data: ...`` events out, normalised and framed as ``data: {json}\\n\\n``.

    Follows the SSE rules that matter here: lines end with LF, CRLF or CR; lines starting with ``:`` are
    comments (keep-alives), passed on each as a block of its own; an event's ``data:`` lines are joined with
    LF and the event ends at a blank line; an ``error:`` field, or a data event that is an error object, is
    kept in :attr:`error` and ends what is passed on; other fields (``event:``, ``id:``) are dropped. A
    payload that is not a JSON object (``[DONE]``, or something unexpected) is passed on as it came.
    """

    def __init__(self) -> None:
        # Incremental: a network read may end inside a multi-byte character.
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = ""
        self._data: list[str] = []
        self._normaliser = StreamNormaliser()
        self.events = 0  # data events passed on so far (comments not counted)
        # The upstream's in-stream error, as (message, status): nothing after it is passed on.
        self.error: tuple[str, int] | None = None

    def feed(self, data: bytes) -> bytes:
        """The complete events ``data`` finishes (possibly none), as SSE bytes."""
        text = self._pending + self._decoder.decode(data)
        # A CR at the very end may be the first half of a CRLF: keep it until the next bytes tell.
        held = "\r" if text.endswith("\r") else ""
        lines = _LINE_END.split(text.removesuffix("\r") if held else text)
        self._pending = lines.pop() + held
        return b"".join(self._line(line) for line in lines)

    def close(self) -> bytes:
        """The last event, when the upstream ended without the blank line that closes it."""
        rest = (self._pending + self._decoder.decode(b"", final=True)).removesuffix("\r")
        self._pending = ""
        return b"".join(self._line(line) for line in [*_LINE_END.split(rest), ""])

    def _line(self, line: str) -> bytes:
        if self.error is not None:
            return b""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            # Passed on as a block of its own: a keep-alive before the first token is the stream's first
            # part, as on SageMaker, so a slow first token does not run into the invocation timeout.
            return line.encode("utf-8") + b"\n\n"
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value.removeprefix(" "))
        elif field == "error":
            # llama.cpp server's form of an in-stream error: a field of its own, ``error: {json}``.
            try:
                error = json.loads(value)
            except json.JSONDecodeError:
                error = value.strip()
            self.error = upstream_error(error.get("error", error) if isinstance(error, dict) else error)
        return b""

    def _dispatch(self) -> bytes:
        if not self._data:
            return b""
        payload = "\n".join(self._data)
        self._data = []
        self.events += 1
        if payload.strip() == "[DONE]":
            return DONE_LINE
        try:
            chunk = json.loads(payload)
        except json.JSONDecodeError:
            chunk = None
        if isinstance(chunk, dict) and "error" in chunk and not chunk.get("choices"):
            # vLLM, llama.cpp server: a failure after the 200 is a data event {"error": {...}}, which Strands
            # would skip (the answer so far looking whole). It ends the stream as the caller's error.
            self.error = self.error or upstream_error(chunk["error"])
            return b""
        if isinstance(chunk, dict):
            payload = json.dumps(self._normaliser.chunk(chunk), separators=(",", ":"))
        return b"data: " + payload.encode("utf-8") + b"\n\n"
