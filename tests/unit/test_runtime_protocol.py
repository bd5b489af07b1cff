"""The local runtime against SageMaker Runtime's protocol as botocore's service model and the AWS API reference
define it: request headers SageMaker refuses, errors a caller can tell apart, and failures inside a stream,
all through the real boto3 client (and Strands' SageMakerAIModel where it reads the stream)."""

from __future__ import annotations

import asyncio
import calendar
import http.client
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any
from urllib.parse import urlparse

import pytest
from _shared.loopback import runtime_client
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import EventStreamError

from agent_release.pipelines.local_backend import LocalBackend
from agent_release.pipelines.runtime.app import RuntimeApp
from agent_release.pipelines.runtime.chunks import completion_to_sse
from agent_release.pipelines.runtime.eventstream import payload_part
from agent_release.pipelines.runtime.model_loader import ModelInvocationError
from agent_release.steps.backend import ModelSpec, VariantSpec

BODY = json.dumps({"messages": [{"role": "user", "content": "hello"}]})


class EchoModel:
    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "echo",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "partial"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBackend]:
    backend = LocalBackend(tmp_path_factory.mktemp("state"))
    model = ModelSpec(kind="python", options={"class_path": f"{__name__}:EchoModel"})
    backend.deploy_endpoint("proto", [VariantSpec(name="a", model=model, initial_weight=1.0)])
    backend.start_runtime()
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def client(backend: LocalBackend) -> Any:
    return runtime_client(backend.runtime_endpoint_url())


def _error(call: Any, **kwargs: Any) -> dict[str, Any]:
    arguments = {"EndpointName": "proto", "Body": BODY, "ContentType": "application/json", **kwargs}
    try:
        response = call(**arguments)
        if not hasattr(response["Body"], "read"):  # an event stream: errors in it arrive as it is read
            list(response["Body"])
    except Exception as exc:  # botocore's ClientError subclasses
        return dict(getattr(exc, "response", {"Error": {"Code": type(exc).__name__}}))
    raise AssertionError(f"{call.__name__} answered {kwargs} without an error")


def test_headers_that_select_a_model_the_endpoint_lacks_are_refused(client: Any) -> None:
    # Before: ignored, so the call was answered by whichever variant the weights chose, where SageMaker
    # refuses each of these on an endpoint of production variants.
    refused = {
        "TargetModel": ("model-7.tar.gz", "not a multi-model endpoint"),
        "InferenceComponentName": ("ic-1", "no inference components"),
        "TargetContainerHostname": ("container-1", "not configured for direct invocation"),
    }
    for name, (value, words) in refused.items():
        calls = [client.invoke_endpoint]
        if name != "TargetModel":  # InvokeEndpointWithResponseStream has no TargetModel member
            calls.append(client.invoke_endpoint_with_response_stream)
        for call in calls:
            error = _error(call, **{name: value})
            assert error["Error"]["Code"] == "ValidationError", (name, call.__name__)
            assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
            assert words in error["Error"]["Message"]
    # Headers SageMaker hands to the container (or to Clarify, data capture) are accepted.
    answered = client.invoke_endpoint(
        EndpointName="proto",
        Body=BODY,
        ContentType="application/json",
        Accept="application/json",
        CustomAttributes="trace=1",
        InferenceId="case-17",
        EnableExplanations="`false`",
    )
    assert answered["InvokedProductionVariant"] == "a"


def test_session_ids_outside_the_service_model_are_refused(client: Any) -> None:
    # botocore checks neither a pattern nor a maximum length; SageMaker does. Before: any id was accepted,
    # and NEW_SESSION on a stream opened a session whose id its answer cannot carry (no NewSessionId member).
    for session_id in ("has space", "under_score", "-leading-dash", "a" * 257):
        for call in (client.invoke_endpoint, client.invoke_endpoint_with_response_stream):
            error = _error(call, SessionId=session_id)
            assert error["Error"]["Code"] == "ValidationError", (session_id, call.__name__)
            assert "at 'sessionId' failed to satisfy constraint" in error["Error"]["Message"]
    error = _error(client.invoke_endpoint_with_response_stream, SessionId="NEW_SESSION")
    assert error["Error"]["Code"] == "ValidationError"
    assert "cannot create a stateful session" in error["Error"]["Message"]
    # The way SageMaker documents: open with InvokeEndpoint, then stream within the session it returned.
    opened = client.invoke_endpoint(EndpointName="proto", Body=BODY, SessionId="NEW_SESSION")
    session_id, _, expires = opened["NewSessionId"].partition("; Expires=")
    assert expires.endswith("Z")
    # docs/ARCHITECTURE.md: NewSessionId is "<uuid>; Expires=<+1 h>", the expiry an hour from now (UTC).
    expires_at = calendar.timegm(time.strptime(expires, "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(expires_at - (time.time() + 3600)) < 60
    streamed = client.invoke_endpoint_with_response_stream(
        EndpointName="proto", Body=BODY, SessionId=session_id
    )
    assert streamed["InvokedProductionVariant"] == opened["InvokedProductionVariant"]
    assert list(streamed["Body"])
    longest = "a" + "-b" * 127 + "c"  # 256 characters: the limit itself is allowed
    assert client.invoke_endpoint(EndpointName="proto", Body=BODY, SessionId=longest)[
        "InvokedProductionVariant"
    ]


def test_a_body_the_model_cannot_read_is_its_client_error(backend: LocalBackend) -> None:
    # On SageMaker only the container reads the body: an empty or non-JSON body comes back as a ModelError
    # naming the container's 4xx. Before: a ValidationError, as if SageMaker itself had refused the request.
    retrying = runtime_client(backend.runtime_endpoint_url(), attempts=3)
    cases = [(b"", "application/json", 400), (b"{oops", "application/json", 400), (BODY, "text/csv", 415)]
    for body, content_type, status in cases:
        error = _error(retrying.invoke_endpoint, Body=body, ContentType=content_type)
        assert error["Error"]["Code"] == "ModelError", body
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
        assert error["ResponseMetadata"]["RetryAttempts"] == 0
        assert error["OriginalStatusCode"] == status
        assert error["Error"]["Message"].startswith(f"Received client error ({status}) from model")
    # Still the service's own refusal: a body over SageMaker's 6 MB limit.
    error = _error(retrying.invoke_endpoint, Body=b"x" * (6 * 1024 * 1024 + 1))
    assert error["Error"]["Code"] == "ValidationError"


def _stream_failing_after_first_part(failure: Exception) -> Any:
    async def start(served: Any, request: dict[str, Any]) -> tuple[bytes, AsyncIterator[bytes]]:
        lines = completion_to_sse(EchoModel().complete(request))

        async def rest() -> AsyncIterator[bytes]:
            yield lines[1]  # the text delta
            raise failure

        return payload_part(lines[0]), rest()

    return staticmethod(start)


def _raw_stream(url: str) -> list[tuple[dict[str, Any], bytes]]:
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    conn.request(
        "POST", "/endpoints/proto/invocations-response-stream", BODY, {"Content-Type": "application/json"}
    )
    data = conn.getresponse().read()
    conn.close()
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [(dict(m.headers), m.payload) for m in buffer]


def test_a_model_failing_mid_stream_is_stream_broken_and_counted_as_its_error(
    backend: LocalBackend, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: the ModelStreamError's ErrorCode was the model's HTTP status ("503"), where SageMaker's codes
    # are StreamBroken and ModelInvocationTimeExceeded; and the call was recorded as a 200 for the guards.
    monkeypatch.setattr(
        RuntimeApp,
        "_start_stream",
        _stream_failing_after_first_part(ModelInvocationError("gpu fell off", 503)),
    )
    since = time.time()
    *parts, (headers, payload) = _raw_stream(backend.runtime_endpoint_url() or "")
    assert [h[":event-type"] for h, _ in parts] == ["PayloadPart", "PayloadPart"]
    assert headers[":message-type"] == "exception"
    assert headers[":exception-type"] == "ModelStreamError"
    assert json.loads(payload) == {"Message": "gpu fell off", "ErrorCode": "StreamBroken"}
    response = client.invoke_endpoint_with_response_stream(EndpointName="proto", Body=BODY)
    with pytest.raises(EventStreamError) as caught:
        list(response["Body"])
    assert caught.value.response["Error"] == {"Code": "ModelStreamError", "Message": "gpu fell off"}
    deadline = time.monotonic() + 5
    while backend.variant_metrics("proto", since)["a"].errors_5xx < 2:
        assert time.monotonic() < deadline, backend.variant_metrics("proto", since)["a"]
        time.sleep(0.05)
    assert backend.variant_metrics("proto", since)["a"].invocations == 2


def test_a_client_leaving_mid_stream_is_recorded_as_an_answered_call(
    backend: LocalBackend, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client, not the model, ended the call: the guards must count it as an answered call (a 200), not
    # as an error, and not lose it (the invocations table has no row without a status).
    async def start(served: Any, request: dict[str, Any]) -> tuple[bytes, AsyncIterator[bytes]]:
        lines = completion_to_sse(EchoModel().complete(request))

        async def rest() -> AsyncIterator[bytes]:
            yield lines[1]
            await asyncio.sleep(30)  # a model still generating when the client leaves
            yield lines[2]

        return payload_part(lines[0]), rest()

    monkeypatch.setattr(RuntimeApp, "_start_stream", staticmethod(start))
    since = time.time()
    response = client.invoke_endpoint_with_response_stream(EndpointName="proto", Body=BODY)
    events = iter(response["Body"])
    for _ in range(2):  # the role delta, then the text: the stream has started
        assert "PayloadPart" in next(events)
    response["Body"].close()
    deadline = time.monotonic() + 5
    while backend.variant_metrics("proto", since)["a"].invocations < 1:
        assert time.monotonic() < deadline, "the call was never recorded"
        time.sleep(0.05)
    metrics = backend.variant_metrics("proto", since)["a"]
    assert (metrics.invocations, metrics.errors_4xx, metrics.errors_5xx) == (1, 0, 0)
    assert len(backend.call_windows("proto", since)) == 1  # a production call, not a shadow copy


def test_a_model_refusing_a_stream_is_recorded_with_the_time_it_took(
    backend: LocalBackend, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A model's 4xx is an answer the guards time (CloudWatch's ModelLatency counts it): its latency is the
    # model's, from the call to the refusal, and the call's window in the records spans that time.
    delay_s = 0.2

    async def start(served: Any, request: dict[str, Any]) -> tuple[bytes, AsyncIterator[bytes]]:
        await asyncio.sleep(delay_s)
        raise ModelInvocationError("too many requests", 429)

    monkeypatch.setattr(RuntimeApp, "_start_stream", staticmethod(start))
    since = time.time()
    error = _error(client.invoke_endpoint_with_response_stream)
    assert (error["Error"]["Code"], error["OriginalStatusCode"]) == ("ModelError", 429)
    deadline = time.monotonic() + 5
    while backend.variant_metrics("proto", since)["a"].invocations < 1:
        assert time.monotonic() < deadline, "the call was never recorded"
        time.sleep(0.05)
    metrics = backend.variant_metrics("proto", since)["a"]
    assert metrics.errors_4xx == 1
    # Bounds, not a speed check: at least the model's delay (timers may fire up to a millisecond early), and
    # far less than the seconds a wrong clock arithmetic would give.
    (model_ms,) = metrics.latencies_ms
    assert delay_s * 1000 - 1 <= model_ms < delay_s * 1000 + 5000
    [(start_at, end_at)] = backend.call_windows("proto", since)
    assert delay_s - 0.001 <= end_at - start_at < delay_s + 5


def test_a_runtime_fault_mid_stream_is_an_internal_stream_failure_strands_raises(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: the relay's exception escaped the response, uvicorn cut the connection ("ASGI callable returned
    # without completing response"), and the caller got urllib3's ProtocolError, no AWS error to handle, and the
    # call was not recorded at all. SageMaker reports such a failure in-band as InternalStreamFailure.
    from strands import Agent
    from strands.models.sagemaker import SageMakerAIModel

    monkeypatch.setattr(RuntimeApp, "_start_stream", _stream_failing_after_first_part(KeyError("a bug")))
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": backend.runtime_endpoint_url() or "",
    }.items():
        monkeypatch.setenv(key, value)
    model = SageMakerAIModel(
        endpoint_config={"endpoint_name": "proto", "region_name": "us-east-1"},
        payload_config={"max_tokens": 16, "stream": True},
    )
    agent = Agent(model=model, callback_handler=None)
    since = time.time()
    with pytest.raises(EventStreamError) as caught:
        agent("hello")
    assert caught.value.response["Error"]["Code"] == "InternalStreamFailure"
    deadline = time.monotonic() + 5
    while backend.variant_metrics("proto", since)["a"].errors_5xx < 1:  # recorded, as a 500
        assert time.monotonic() < deadline, backend.variant_metrics("proto", since)["a"]
        time.sleep(0.05)
