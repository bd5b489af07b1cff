"""The ASGI app of the local endpoint runtime: SageMaker Runtime's wire protocol over the local state.

Operations (as in botocore's ``sagemaker-runtime`` service model, protocol rest-json):

- ``POST /endpoints/{name}/invocations`` (InvokeEndpoint): body = the chat-completions request; answer = the
  model's ``chat.completion`` JSON, header ``x-Amzn-Invoked-Production-Variant``.
- ``POST /endpoints/{name}/invocations-response-stream`` (InvokeEndpointWithResponseStream): answer =
  ``application/vnd.amazon.eventstream`` of ``PayloadPart`` events carrying ``data: {chunk}`` SSE lines.
- ``GET /ping``: liveness.

Errors are AWS JSON errors (header ``x-amzn-ErrorType``, body ``{"__type", "message"}``) that botocore turns
into ``ClientError``: unknown endpoint/variant, a body over 6 MB, a header SageMaker would refuse
(:mod:`.request_headers`) → ``ValidationError`` (400; 413 for the body); a failing model, a body it cannot
read (not a JSON object, not JSON content), an answer that is not JSON → ``ModelError`` (424, with the
model's ``OriginalStatusCode``), which botocore does not retry; no answer within the invocation timeout
(60 s, SageMaker's) → ``ModelError`` with ``OriginalStatusCode`` 0, as SageMaker's (recorded as a 504). A
failure after a stream started is an in-band ``ModelStreamError`` (``ErrorCode`` ``StreamBroken``), or
``InternalStreamFailure`` for a fault of the runtime. Every response carries an ``x-amzn-RequestId``.
Request headers honoured: ``X-Amzn-SageMaker-Target-Variant`` and ``X-Amzn-SageMaker-Session-Id`` (see
:mod:`.routing`).

A model call cannot be interrupted: past the timeout the client gets its error and the call's thread is left
to finish on its own. Each variant's model runs on threads of its own (:mod:`.model_threads`), so a slow or
stuck variant, a shadow copy included, delays no other variant. A streaming client that disconnects stops
the upstream stream it was reading.

The two invocation paths are matched by hand before anything else: Starlette's router and request objects
cost about 0.35 ms per call (1,650 vs 4,100 req/s for an echo app), more than the whole overhead budget. That
was measured with uvicorn's pure-Python h11 parser; :mod:`.server` now runs httptools' parser (uvicorn's
``auto`` choice only when httptools is missing). Everything else (ping, unknown paths) goes through Starlette.

Endpoints come from the state database; a background thread re-reads them when the endpoint revision
counter changes (checked every ``poll_interval_s``), so weight changes by another process apply within about
0.1 s without a restart, and requests only read an in-memory dict.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent_release.pipelines.local_backend import InvocationRecord, LocalBackend
from agent_release.pipelines.runtime.eventstream import exception_event, payload_part
from agent_release.pipelines.runtime.metrics import MetricsRecorder
from agent_release.pipelines.runtime.model_loader import (
    LocalChatModel,
    ModelCache,
    ModelInvocationError,
    ServedModel,
)
from agent_release.pipelines.runtime.request_headers import (
    NEW_SESSION,
    UNSUPPORTED_HEADERS,
    header_error,
)
from agent_release.pipelines.runtime.routing import RoutingError, RoutingTable
from agent_release.steps.backend import EndpointState, VariantState

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# SageMaker's InvokeEndpoint payload limit.
MAX_BODY_BYTES = 6 * 1024 * 1024
POLL_INTERVAL_S = 0.1
MAX_SHADOW_TASKS = 256
# SageMaker's limit for a container's answer (InvokeEndpoint; for a stream, its first part).
INVOCATION_TIMEOUT_S = 60.0
# What a timed-out invocation records in the metrics as the model's status (a gateway timeout). On the wire
# its OriginalStatusCode is 0, as SageMaker's: no status came from the container.
TIMEOUT_STATUS = 504
TIMEOUT_WIRE_STATUS = 0
# ModelStreamError's ErrorCode for a model failing after its stream started (SageMaker's codes are
# StreamBroken and ModelInvocationTimeExceeded; this runtime sets no time limit once a stream has started).
STREAM_BROKEN = "StreamBroken"
EVENTSTREAM_CONTENT_TYPE = b"application/vnd.amazon.eventstream"
_PREFIX = "/endpoints/"


class _ClientGoneError(Exception):
    """The client disconnected before the request body arrived."""


class _InvocationTimedOutError(ModelInvocationError):
    """No answer within the invocation timeout: a ModelError with OriginalStatusCode 0, recorded as a 504."""

    def __init__(self, message: str) -> None:
        super().__init__(message, TIMEOUT_STATUS)


@dataclass(frozen=True)
class _Deployed:
    """An endpoint as the request path needs it: routing plus the model-cache key of each variant."""

    table: RoutingTable
    keys: dict[str, tuple[str, str, str]]

    @classmethod
    def build(cls, endpoint: EndpointState) -> _Deployed:
        return cls(
            table=RoutingTable.build(endpoint),
            keys={v.name: ModelCache.key(endpoint.name, v.name, v.model) for v in endpoint.variants},
        )


def _request_id() -> tuple[bytes, bytes]:
    return (b"x-amzn-requestid", str(uuid.uuid4()).encode())


def _error_parts(
    status: int, error_type: str, message: str, extra: dict[str, Any] | None = None
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = json.dumps(
        {"__type": error_type, "message": message, "Message": message, **(extra or {})}
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"x-amzn-errortype", error_type.encode()),
        _request_id(),
        (b"content-length", str(len(body)).encode()),
    ]
    return status, headers, body


def _answer_body(answer: dict[str, Any]) -> bytes:
    """A model's answer as the response body; an answer JSON cannot hold is the model's fault."""
    try:
        return json.dumps(answer).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ModelInvocationError(f"model returned an answer that is not JSON: {exc}") from exc


def _model_error_fields(exc: ModelInvocationError) -> tuple[str, dict[str, Any]]:
    """SageMaker's message and modelled fields of a ModelError: a 4xx is a client error, anything else a
    server error; a timeout is SageMaker's own, status 0."""
    status = TIMEOUT_WIRE_STATUS if isinstance(exc, _InvocationTimedOutError) else exc.original_status
    kind = "client" if 400 <= status < 500 else "server"
    message = f'Received {kind} error ({status}) from model with message "{exc.message}".'
    return message, {"OriginalStatusCode": status, "OriginalMessage": exc.message}


async def _disconnect(receive: Receive) -> None:
    """Return once the client has gone (the request body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send_error(
    send: Send, status: int, error_type: str, message: str, extra: dict[str, Any] | None = None
) -> None:
    status, headers, body = _error_parts(status, error_type, message, extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _aws_error(status: int, error_type: str, message: str) -> Response:
    status, headers, body = _error_parts(status, error_type, message)
    return Response(body, status_code=status, headers={k.decode(): v.decode() for k, v in headers})


async def _not_found(request: Request, exc: Exception) -> Response:
    del exc
    return _aws_error(
        404, "UnknownOperationException", f"no operation at {request.method} {request.url.path}"
    )


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    del exc
    return _aws_error(405, "UnknownOperationException", f"method {request.method} not allowed here")


async def _ping(request: Request) -> Response:
    del request
    return JSONResponse({"status": "ok"})


class RuntimeApp:
    """ASGI application serving every endpoint of one state directory.

    Use with any ASGI server (``uvicorn.Server(uvicorn.Config(RuntimeApp(state_dir)))``); it needs the ASGI
    lifespan protocol (uvicorn's default) to start its endpoint poller and metrics flusher.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        poll_interval_s: float = POLL_INTERVAL_S,
        max_body_bytes: int = MAX_BODY_BYTES,
        invocation_timeout_s: float = INVOCATION_TIMEOUT_S,
        rng: random.Random | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.max_body_bytes = max_body_bytes
        self.invocation_timeout_s = invocation_timeout_s
        self._poll_interval_s = poll_interval_s
        self._rng = rng or random.Random()
        # Separate connections: the poller must never wait behind the metrics writer's transaction.
        self._reader = LocalBackend(self.state_dir)
        self.recorder = MetricsRecorder(LocalBackend(self.state_dir))
        self.models = ModelCache()
        self.deployed: dict[str, _Deployed] = {}
        self._revision: int | None = None
        self._stop_polling = threading.Event()
        self._poller: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: set[asyncio.Task[None]] = set()
        # Callbacks run at the end of shutdown (the foreground server removes its runtime.json here).
        self.on_shutdown: list[Callable[[], None]] = []
        self._fallback = Starlette(
            routes=[Route("/ping", _ping, methods=["GET"])],
            exception_handlers={404: _not_found, 405: _method_not_allowed},
        )

    # -- lifecycle -------------------------------------------------------------------------------------
    def refresh(self) -> bool:
        """Re-read endpoints if their revision changed; returns True when the routing tables were replaced."""
        revision = self._reader.endpoint_revision()
        if revision == self._revision:
            return False
        endpoints = self._reader.list_endpoints()
        # One assignment: requests see either the old or the new dict, never a half-built one.
        self.deployed = {e.name: _Deployed.build(e) for e in endpoints if e.status == "InService"}
        self._revision = revision
        logger.info("revision=<%d>, endpoints=<%d> | endpoints reloaded", revision, len(self.deployed))
        if self._loop is not None:
            keys = {k for d in self.deployed.values() for k in d.keys.values()}
            asyncio.run_coroutine_threadsafe(self.models.retain(keys), self._loop)
        return True

    def _poll(self) -> None:
        while not self._stop_polling.wait(self._poll_interval_s):
            try:
                self.refresh()
            except Exception:
                logger.exception("state_dir=<%s> | failed to reload endpoints", self.state_dir)

    async def startup(self) -> None:
        """Load endpoints and start the poller and the metrics flusher."""
        self._loop = asyncio.get_running_loop()
        self.refresh()
        self.recorder.start()
        self._stop_polling.clear()
        self._poller = threading.Thread(target=self._poll, name="runtime-endpoint-poll", daemon=True)
        self._poller.start()

    async def shutdown(self) -> None:
        """Stop background work, flush metrics, close models."""
        self._stop_polling.set()
        if self._poller is not None:
            self._poller.join(timeout=2)
        for task in list(self._background):
            task.cancel()
        await self.models.aclose()
        self.recorder.stop()
        self._reader.close()
        for callback in self.on_shutdown:
            callback()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("runtime failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- ASGI entry ------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(_PREFIX):
            name, _, operation = path[len(_PREFIX) :].partition("/")
            if operation in ("invocations", "invocations-response-stream") and name:
                if scope["method"] != "POST":
                    await _send_error(send, 405, "UnknownOperationException", f"use POST for {path}")
                    return
                try:
                    await self._invoke(scope, receive, send, name, operation == "invocations-response-stream")
                except asyncio.CancelledError:
                    # The server is shutting down past its grace period: the request ends here, quietly
                    # (re-raised, uvicorn would print a traceback for each call in flight).
                    logger.info("endpoint=<%s> | invocation cut short by shutdown", name)
                except Exception:
                    # A bug must cost one request, never the server; the client gets an AWS InternalFailure.
                    logger.exception("endpoint=<%s> | invocation failed", name)
                    with contextlib.suppress(Exception):
                        await _send_error(send, 500, "InternalFailure", "internal error in the local runtime")
                return
        await self._fallback(scope, receive, send)

    # -- invocation --------------------------------------------------------------------------------------
    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole request body, or None when it exceeds the size limit."""
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            return body if len(body) <= self.max_body_bytes else None
        parts = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGoneError
            part = message.get("body", b"")
            size += len(part)
            if size > self.max_body_bytes:
                return None
            parts.append(part)
            if not message.get("more_body", False):
                return b"".join(parts)

    async def _invoke(self, scope: Scope, receive: Receive, send: Send, name: str, stream: bool) -> None:
        started = time.perf_counter()
        target_variant = session_id = None
        refused: bytes | None = None
        content_type = b""
        unsupported = UNSUPPORTED_HEADERS  # a local name: this loop runs for every header of every call
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
            elif key == b"x-amzn-sagemaker-target-variant":
                target_variant = value.decode("latin-1")
            elif key == b"x-amzn-sagemaker-session-id":
                session_id = value.decode("latin-1")
            elif key in unsupported:
                refused = key
        try:
            body = await self._read_body(receive)
        except _ClientGoneError:
            return
        if body is None:
            await _send_error(
                send, 413, "ValidationError", f"request body exceeds the {self.max_body_bytes} byte limit"
            )
            return
        deployed = self.deployed.get(name)
        if deployed is None:
            await _send_error(send, 400, "ValidationError", f"Endpoint {name} not found.")
            return
        if (refused is not None or session_id is not None) and (
            problem := header_error(name, stream, session_id, refused)
        ):
            await _send_error(send, 400, "ValidationError", problem)
            return
        new_session_header: tuple[bytes, bytes] | None = None
        if session_id == NEW_SESSION:
            # SageMaker stateful sessions: the server names the session and returns it to the client.
            session_id = str(uuid.uuid4())
            expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
            new_session_header = (
                b"x-amzn-sagemaker-new-session-id",
                f"{session_id}; Expires={expires}".encode(),
            )
        try:
            variant = deployed.table.choose(target_variant, session_id, self._rng)
        except RoutingError as exc:
            await _send_error(send, 400, "ValidationError", str(exc))
            return

        request = self._parse_request(content_type, body)
        if isinstance(request, tuple):
            # On SageMaker only the container reads the body, so a body it cannot read is its client
            # error (a ModelError naming the container's status), not a ValidationError of the service.
            status, message = request
            await _send_error(
                send, 424, "ModelError", *_model_error_fields(ModelInvocationError(message, status))
            )
            self._record(name, variant.name, status, None, started, shadow=False)
            return

        for shadow in deployed.table.shadows_for_request(self._rng):
            self._start_shadow(name, shadow, deployed.keys[shadow.name], body)

        model_started = time.perf_counter()
        try:
            if variant.faults.hang:
                if await self._hang(receive):
                    self._record(name, variant.name, TIMEOUT_STATUS, None, started, shadow=False)
                    return
                raise self._timed_out(variant)
            served = await self._model(deployed.keys[variant.name], variant)
            try:
                async with asyncio.timeout(self.invocation_timeout_s):
                    await self._inject_faults(variant)
                    if stream:
                        first, rest = await self._start_stream(served, request)
                    else:
                        payload = _answer_body(await served.complete(request))
            except TimeoutError:
                raise self._timed_out(variant) from None
        except ModelInvocationError as exc:
            model_ms = (time.perf_counter() - model_started) * 1000.0
            await _send_error(send, 424, "ModelError", *_model_error_fields(exc))
            self._record(name, variant.name, exc.original_status, model_ms, started, shadow=False)
            return
        invoked = (b"x-amzn-invoked-production-variant", variant.name.encode())
        if not stream:
            model_ms = (time.perf_counter() - model_started) * 1000.0
            headers = [
                (b"content-type", b"application/json"),
                invoked,
                _request_id(),
                (b"content-length", str(len(payload)).encode()),
            ]
            if new_session_header:
                headers.append(new_session_header)
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
            self._record(name, variant.name, 200, model_ms, started, shadow=False)
            return
        status = await self._send_stream(send, receive, first, rest, invoked, new_session_header)
        # For a stream the model latency runs until its last part (what a client waits for).
        model_ms = (time.perf_counter() - model_started) * 1000.0
        self._record(name, variant.name, status, model_ms, started, shadow=False)

    @staticmethod
    def _parse_request(content_type: bytes, body: bytes) -> dict[str, Any] | tuple[int, str]:
        """The JSON object of the body, or (status, message) explaining why it is refused."""
        media_type = content_type.split(b";", 1)[0].strip().lower()
        if media_type and media_type != b"application/json" and not media_type.endswith(b"+json"):
            return 415, (
                f"unsupported content type {media_type.decode('latin-1')!r}: "
                "this runtime serves chat-completions requests as application/json"
            )
        try:
            request = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return 400, f"request body is not valid JSON: {exc}"
        if not isinstance(request, dict):
            return 400, "request body must be a JSON object (a chat-completions request)"
        return request

    async def _model(self, key: tuple[str, str, str], variant: VariantState) -> ServedModel:
        return self.models.get_loaded(key) or await self.models.load(key, variant.model)

    async def _inject_faults(self, variant: VariantState) -> None:
        faults = variant.faults
        if faults.added_latency_ms > 0:
            await asyncio.sleep(faults.added_latency_ms / 1000.0)
        if faults.error_rate > 0 and self._rng.random() < faults.error_rate:
            raise ModelInvocationError(f"injected fault in variant {variant.name!r}", 500)

    def _timed_out(self, variant: VariantState) -> ModelInvocationError:
        return _InvocationTimedOutError(
            f"Your invocation timed out while waiting for a response from variant {variant.name} "
            f"(after {self.invocation_timeout_s:g} s)."
        )

    async def _hang(self, receive: Receive) -> bool:
        """Answer nothing until the client goes away (True) or the invocation timeout passes (False),
        without blocking a thread."""
        try:
            await asyncio.wait_for(_disconnect(receive), self.invocation_timeout_s)
        except TimeoutError:
            return False
        return True

    @staticmethod
    async def _start_stream(served: ServedModel, request: dict[str, Any]) -> tuple[bytes, Any]:
        """Wait for the first SSE bytes so that errors before them become an ordinary ModelError response."""
        if isinstance(served, LocalChatModel):
            # The whole answer exists at once: send it as one body (one write, no chunked encoding).
            parts = [payload_part(line) async for line in served.stream(request)]
            return b"".join(parts), None
        iterator = served.stream(request).__aiter__()
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            first = b""
        return payload_part(first) if first else b"", iterator

    async def _send_stream(
        self,
        send: Send,
        receive: Receive,
        first: bytes,
        rest: Any,
        invoked: tuple[bytes, bytes],
        new_session_header: tuple[bytes, bytes] | None,
    ) -> int:
        """Send the stream's headers and parts; returns the status to record (the model's, if it failed
        after the stream started)."""
        headers = [
            (b"content-type", EVENTSTREAM_CONTENT_TYPE),
            (b"x-amzn-sagemaker-content-type", b"text/event-stream"),
            invoked,
            _request_id(),
        ]
        if new_session_header:
            headers.append(new_session_header)
        if rest is None:
            headers.append((b"content-length", str(len(first)).encode()))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": first})
            return 200
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if first:
            await send({"type": "http.response.body", "body": first, "more_body": True})
        # The server drops what is sent after the client left, so the stream would otherwise be read from
        # the upstream to its end for nobody: a watcher ends it at the client's disconnect.
        relay = asyncio.create_task(self._relay(send, rest))
        gone = asyncio.create_task(_disconnect(receive))
        try:
            await asyncio.wait((relay, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not relay.done():  # the client left first (or the server is shutting down)
                relay.cancel()
            await asyncio.wait((relay, gone))
            with contextlib.suppress(Exception):
                await rest.aclose()  # the upstream connection, at once rather than when collected
        if relay.cancelled():
            logger.info("client left mid-stream; stopped reading the model's stream")
            return 200
        status = relay.result()
        await send({"type": "http.response.body", "body": b""})
        return status

    @staticmethod
    async def _relay(send: Send, rest: Any) -> int:
        """Send the model's remaining parts; a failure after the headers is reported in-band, as SageMaker
        does (else the client would read the truncated answer as complete). Returns the status to record."""
        try:
            async for data in rest:
                await send({"type": "http.response.body", "body": payload_part(data), "more_body": True})
        except ModelInvocationError as exc:
            event = exception_event("ModelStreamError", exc.message, STREAM_BROKEN)
            await send({"type": "http.response.body", "body": event, "more_body": True})
            return exc.original_status
        except Exception:
            logger.exception("stream relay failed")
            event = exception_event("InternalStreamFailure", "internal error in the local runtime")
            await send({"type": "http.response.body", "body": event, "more_body": True})
            return 500
        return 200

    # -- shadows and metrics -------------------------------------------------------------------------------
    def _start_shadow(
        self, endpoint: str, variant: VariantState, key: tuple[str, str, str], body: bytes
    ) -> None:
        if len(self._background) >= MAX_SHADOW_TASKS:
            logger.warning(
                "endpoint=<%s>, variant=<%s> | shadow backlog full, copy skipped", endpoint, variant.name
            )
            return
        task = asyncio.get_running_loop().create_task(self._shadow_call(endpoint, variant, key, body))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _shadow_call(
        self, endpoint: str, variant: VariantState, key: tuple[str, str, str], body: bytes
    ) -> None:
        """Send a copy of a request to a shadow variant; record its metrics, discard its answer."""
        started = time.perf_counter()
        request = json.loads(body)  # a private copy: the production model may mutate its own
        request["stream"] = False
        try:
            if variant.faults.hang:
                return
            served = await self._model(key, variant)
            async with asyncio.timeout(self.invocation_timeout_s):
                await self._inject_faults(variant)
                await served.complete(request)
            status = 200
        except ModelInvocationError as exc:
            status = exc.original_status
        except TimeoutError:
            status = TIMEOUT_STATUS
        model_ms = (time.perf_counter() - started) * 1000.0
        self._record(endpoint, variant.name, status, model_ms, started, shadow=True)

    def _record(
        self,
        endpoint: str,
        variant: str,
        status: int,
        model_ms: float | None,
        started: float,
        *,
        shadow: bool,
    ) -> None:
        total_ms = (time.perf_counter() - started) * 1000.0
        overhead = total_ms - (model_ms or 0.0)
        self.recorder.record(
            InvocationRecord(endpoint, variant, time.time(), status, model_ms, max(overhead, 0.0), shadow)
        )
