"""Load and call the model behind a variant, by :class:`~agent_release.steps.backend.ModelSpec` kind.

- ``python``: ``options["class_path"] = "pkg.mod:Class"``, built with ``options.get("init", {})`` as keyword
  arguments; it must implement :class:`agent_release.agents.chat_model.ChatCompletionModel`. Its answers get
  the fixes an upstream's get (below) where the format leaves them loose, streamed or not.
- ``demo``: ``agent_release.agents.demo_model.serving.load_demo_model(artifact_uri)``.
- ``openai_compatible``: proxied to ``{options["base_url"]}/v1/chat/completions`` with httpx (a base_url
  that already ends in ``/v1``, as OpenAI clients and the ``llm_judge`` scorer take it, gets no second one;
  optional ``options["model"]`` fills a missing ``model`` field, ``options["api_key_env"]`` names the
  variable holding a bearer token (it must be set), ``options["timeout_s"]`` defaults to 300, past it a
  call is a 504). The upstream's answers are normalised for Strands (:mod:`.upstream_chunks`): usage
  trimmed to its counts, tool calls given ids and indexes, a stream relayed as whole SSE events.
- ``container``: SageMaker only; refused here.

Every loaded model is a :class:`ServedModel` (async ``complete`` and ``stream``); :class:`ModelCache` keeps
one per (endpoint, variant, spec) so a redeploy with a new spec loads afresh and a weight change reuses it.
A ``python`` or ``demo`` model is called on threads of its own (:class:`~.model_threads.ModelThreads`, at
most :data:`MODEL_THREADS`): a variant whose calls are slow or stuck cannot take another variant's threads.
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Protocol

from agent_release.agents.chat_model import ChatCompletionModel
from agent_release.pipelines.runtime.chunks import completion_to_sse
from agent_release.pipelines.runtime.model_threads import ModelThreads
from agent_release.pipelines.runtime.upstream_chunks import (
    SSEEvents,
    completion_needs_normalising,
    normalise_completion,
    upstream_error,
)
from agent_release.steps.backend import ModelSpec

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

# The options each kind the local runtime serves reads from its ModelSpec, the required one first
# (`agent-release package register` refuses any other key: the loader would ignore a misspelt one).
MODEL_OPTIONS: Mapping[str, tuple[str, ...]] = {
    "openai_compatible": ("base_url", "model", "api_key_env", "timeout_s"),
    "python": ("class_path", "init"),
}

# Calls of one variant's python/demo model running at once (more wait for a thread); loads share LOAD_THREADS.
MODEL_THREADS = 32
LOAD_THREADS = 4


class ModelInvocationError(Exception):
    """The model (or its upstream server) failed; answered as SageMaker's ModelError."""

    def __init__(self, message: str, original_status: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.original_status = original_status


class ServedModel(Protocol):
    """A loaded model as the runtime calls it."""

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        """The non-streaming chat.completion answer to ``request``."""
        ...

    def stream(self, request: dict[str, Any]) -> AsyncIterator[bytes]:
        """SSE bytes answering ``request``: ``data: {chat.completion.chunk}`` lines, then ``data: [DONE]``."""
        ...

    async def aclose(self) -> None:
        """Release connections or other resources."""
        ...


class LocalChatModel:
    """A :class:`ChatCompletionModel` object called on a worker thread (models may block for a while).

    ``executor``: where its calls run (``None``: the event loop's default executor). With ``own_executor``
    the model shuts it down in :meth:`aclose` (the cache gives each model threads of its own).
    """

    def __init__(self, model: ChatCompletionModel, executor: Executor | None, *, own_executor: bool = False):
        self.model = model
        self._executor = executor
        self._own_executor = own_executor

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        """The model's answer, given what Strands needs and the format leaves loose (see :meth:`_answer`).

        With ``stream`` the answer is re-framed as chunks, which fills the same gaps
        (:func:`~.chunks.completion_to_chunks`); without it the answer is sent as it is, so a class that
        leaves out ``finish_reason`` or a tool call's id failed every call with streaming off only. It gets
        the fixes an upstream's answer gets, on a copy (a model may return the same dict every time).
        """
        answer = await self._answer(request)
        if completion_needs_normalising(answer):
            answer = normalise_completion(copy.deepcopy(answer))
        return answer

    async def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run ``model.complete`` in the executor; an exception, or an answer that is not a dict, becomes
        :class:`ModelInvocationError` (the model's fault, never the runtime's)."""
        loop = asyncio.get_running_loop()
        try:
            answer = await loop.run_in_executor(self._executor, self.model.complete, request)
        except SystemExit as exc:  # the model's sys.exit ends its call, not the runtime's request handling
            raise ModelInvocationError(f"model exited (exit code {exc.code})") from exc
        except Exception as exc:
            raise ModelInvocationError(f"model raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(answer, dict):
            raise ModelInvocationError(
                f"model returned {type(answer).__name__}, expected a chat.completion dict"
            )
        return answer

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[bytes]:
        """Replay the full answer as chunk SSE lines."""
        answer = await self._answer(request)
        try:
            lines = completion_to_sse(answer)
        except (TypeError, ValueError) as exc:
            raise ModelInvocationError(f"model returned an answer that cannot be streamed: {exc}") from exc
        for line in lines:
            yield line

    async def aclose(self) -> None:
        """Release its threads, if it owns them (a call still running finishes on its own)."""
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


class OpenAICompatibleModel:
    """Proxy to an OpenAI-compatible server (llama.cpp server, Ollama, vLLM)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        # httpx pulls in its CLI (click, rich) at import: only pay for it when a variant proxies.
        import httpx

        base_url = options.get("base_url")
        if not isinstance(base_url, str) or not base_url:
            raise ValueError("openai_compatible model needs options.base_url")
        self.url = chat_completions_url(base_url)
        self.timeout_s = float(options.get("timeout_s", 300.0))
        self.model_name = options.get("model")
        headers = {"Content-Type": "application/json"}
        self._key: str | None = None
        key_env = options.get("api_key_env")
        if key_env:
            # Named but unset would send no key at all: every call a 401 that does not say why.
            key = os.environ.get(str(key_env))
            if not key:
                raise ValueError(
                    f"options.api_key_env names {key_env}, which is not set in the environment of the "
                    "runtime (set it where `agent-release run` or `serve` starts)"
                )
            headers["Authorization"] = f"Bearer {key}"
            self._key = key
        self._client: httpx.AsyncClient = httpx.AsyncClient(headers=headers, timeout=self.timeout_s)

    def _error(self, message: str, status: int = 500) -> ModelInvocationError:
        """The model's error, with the API key taken out: an upstream (or a proxy before it) may echo the
        request's ``Authorization`` header in its error body, and the message is stored in the evaluation's
        rows and traces and shown in the report."""
        return ModelInvocationError(redact_secret(message, self._key), status)

    def _body(self, request: dict[str, Any], stream: bool) -> dict[str, Any]:
        body = {**request, "stream": stream}
        if self.model_name and "model" not in body:
            body["model"] = self.model_name
        if stream:
            body.setdefault("stream_options", {"include_usage": True})
        return body

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        """POST the request upstream (stream off) and return its JSON answer."""
        import httpx

        try:
            response = await self._client.post(self.url, json=self._body(request, stream=False))
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if response.status_code >= 400:
            raise self._error(
                f"upstream {self.url} answered {response.status_code}: {response.text[:500]}",
                response.status_code,
            )
        return self._completion(response.content)

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[bytes]:
        """POST with ``stream: true`` and relay the upstream's SSE events, whole and normalised
        (:mod:`.upstream_chunks`): each part holds complete events, whatever the upstream's reads split."""
        import httpx

        try:
            async with self._client.stream(
                "POST", self.url, json=self._body(request, stream=True)
            ) as response:
                if response.status_code >= 400:
                    text = (await response.aread()).decode("utf-8", "replace")
                    raise self._error(
                        f"upstream {self.url} answered {response.status_code}: {text[:500]}",
                        response.status_code,
                    )
                media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
                if media_type == "application/json" or media_type.endswith("+json"):
                    # A server that ignores ``stream: true`` answers one chat.completion: replay it as chunks.
                    yield self._replay(await response.aread())
                    return
                events = SSEEvents()
                head = b""  # the start of the body, for the error when it held no event at all
                async for data in response.aiter_bytes():
                    head = head or data[:500]
                    if out := events.feed(data):
                        yield out
                    if events.error:
                        break
                if out := events.close():
                    yield out
                if events.error:
                    message, status = events.error
                    raise self._error(f"upstream {self.url} failed mid-stream: {message}", status)
                if not events.events:
                    # Else the caller would read an empty answer as the model's (silently, no error row).
                    raise self._error(
                        f"upstream {self.url} answered a stream request with no SSE event "
                        f"({media_type or 'no content type'}): {head.decode('utf-8', 'replace')[:500]!r}",
                        502,
                    )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc

    def _completion(self, body: bytes) -> dict[str, Any]:
        """The chat.completion of a 200 answer's body, normalised; anything else is the model's error."""
        text = body[:500].decode("utf-8", "replace")
        try:
            answer = json.loads(body)
        except ValueError as exc:
            raise self._error(f"upstream {self.url} answer is not JSON: {text!r}", 502) from exc
        if isinstance(answer, dict) and isinstance(answer.get("choices"), list) and answer["choices"]:
            return normalise_completion(answer)
        if isinstance(answer, dict) and "error" in answer:
            # LM Studio answers an unknown path or model with 200 {"error": ...}; Strands would fail on
            # the missing choices (KeyError 'choices') without a word of the server's message.
            message, status = upstream_error(answer["error"])
            raise self._error(f"upstream {self.url} answered 200 with an error: {message}", status)
        raise self._error(f"upstream {self.url} answer is not a chat.completion: {text!r}", 502)

    def _replay(self, body: bytes) -> bytes:
        """A whole chat.completion body as the SSE chunk stream it stands for."""
        answer = self._completion(body)
        try:
            return b"".join(completion_to_sse(answer))
        except (ValueError, TypeError, AttributeError) as exc:
            raise self._error(f"upstream {self.url} answer cannot be streamed: {exc}", 502) from exc

    def _transport_error(self, exc: Exception) -> ModelInvocationError:
        """What went wrong on the way to the upstream, in words (httpx's timeouts have no message of their
        own): a timeout is a gateway timeout (504), anything else a bad gateway (502)."""
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return self._error(
                f"upstream {self.url} did not answer within {self.timeout_s:g} s "
                f"(options.timeout_s; {type(exc).__name__})",
                504,
            )
        what = "unreachable" if isinstance(exc, httpx.ConnectError) else "failed"
        return self._error(f"upstream {self.url} {what}: {str(exc) or type(exc).__name__}", 502)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


# A key's prefix this long or longer is taken out too: the error texts quote at most 500 characters of an
# upstream's body, and the cut may fall inside the key.
SECRET_PREFIX_MIN_CHARS = 8


def redact_secret(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` and any cut-off start of it (at least 8 characters) replaced by ``***``."""
    if not secret:
        return text
    text = text.replace(secret, "***")
    for length in range(len(secret) - 1, min(SECRET_PREFIX_MIN_CHARS, len(secret)) - 1, -1):
        text = text.replace(secret[:length], "***")
    return text


def chat_completions_url(base_url: str) -> str:
    """``<base_url>/v1/chat/completions``, without doubling a ``/v1`` the base URL already ends with."""
    root = base_url.rstrip("/")
    return root + ("/chat/completions" if root.endswith("/v1") else "/v1/chat/completions")


def load_chat_model(spec: ModelSpec) -> ChatCompletionModel:
    """Build the in-process model of a ``python`` or ``demo`` spec (may be slow: call it off the loop)."""
    if spec.kind == "python":
        class_path = spec.options.get("class_path")
        if not isinstance(class_path, str) or ":" not in class_path:
            raise ValueError("python model needs options.class_path = 'package.module:ClassName'")
        module_name, _, attr = class_path.partition(":")
        cls = getattr(importlib.import_module(module_name), attr)
        model = cls(**dict(spec.options.get("init", {})))
    elif spec.kind == "demo":
        if not spec.artifact_uri:
            raise ValueError("demo model needs artifact_uri")
        from agent_release.agents.demo_model.serving import load_demo_model

        model = load_demo_model(spec.artifact_uri)
    else:
        raise ValueError(f"model kind {spec.kind!r} is not served by the local runtime")
    if not isinstance(model, ChatCompletionModel):
        raise TypeError(f"{type(model).__name__} does not implement complete(request) -> dict")
    return model


class ModelCache:
    """Loaded models keyed by (endpoint, variant, spec); loads each once, even under concurrent requests."""

    def __init__(self) -> None:
        self._loader = ModelThreads(LOAD_THREADS, name="runtime-model-load")
        self._models: dict[tuple[str, str, str], ServedModel] = {}
        self._loading: dict[tuple[str, str, str], asyncio.Future[ServedModel]] = {}

    @staticmethod
    def key(endpoint: str, variant: str, spec: ModelSpec) -> tuple[str, str, str]:
        """Cache key: a new spec under the same variant name is a different model."""
        return (endpoint, variant, spec.model_dump_json())

    def get_loaded(self, key: tuple[str, str, str]) -> ServedModel | None:
        """The model for ``key`` if already loaded (the fast path: a dict lookup)."""
        return self._models.get(key)

    async def load(self, key: tuple[str, str, str], spec: ModelSpec) -> ServedModel:
        """Load the model for ``key`` (once); load failures raise :class:`ModelInvocationError`."""
        if key in self._models:
            return self._models[key]
        pending = self._loading.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ServedModel] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            served = await self._build(key, spec)
        except (Exception, SystemExit) as exc:
            # A class that calls sys.exit while it is built: uncaught, the SystemExit went up into the server
            # (a traceback per request) and left this future unresolved, so the requests waiting on the same
            # load hung until their timeout.
            why = f"exited (exit code {exc.code})" if isinstance(exc, SystemExit) else str(exc)
            error = ModelInvocationError(f"could not load model of variant {key[1]!r}: {why}")
            future.set_exception(error)
            future.exception()  # mark retrieved: nobody else may be waiting
            raise error from exc
        finally:
            self._loading.pop(key, None)
        self._models[key] = served
        future.set_result(served)
        logger.info("endpoint=<%s>, variant=<%s>, kind=<%s> | model loaded", key[0], key[1], spec.kind)
        return served

    async def _build(self, key: tuple[str, str, str], spec: ModelSpec) -> ServedModel:
        if spec.kind == "openai_compatible":
            return OpenAICompatibleModel(spec.options)
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(self._loader, load_chat_model, spec)
        threads = ModelThreads(MODEL_THREADS, name=f"runtime-model-{key[0]}-{key[1]}")
        return LocalChatModel(model, threads, own_executor=True)

    async def retain(self, keys: set[tuple[str, str, str]]) -> None:
        """Drop (and close) every cached model whose key is not in ``keys`` (after a redeploy or delete)."""
        for key in [k for k in self._models if k not in keys]:
            served = self._models.pop(key)
            try:
                await served.aclose()
            except Exception:
                logger.exception("variant=<%s> | failed to close model", key[1])

    async def aclose(self) -> None:
        """Close every model and stop loading."""
        await self.retain(set())
        self._loader.shutdown(wait=False, cancel_futures=True)
