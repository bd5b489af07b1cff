"""The local runtime against SageMaker Runtime's protocol as botocore's service model and the AWS API reference
define it: request headers SageMaker refuses, through the real boto3 client."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from _shared.loopback import runtime_client

from agent_release.pipelines.local_backend import LocalBackend
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
    streamed = client.invoke_endpoint_with_response_stream(
        EndpointName="proto", Body=BODY, SessionId=session_id
    )
    assert streamed["InvokedProductionVariant"] == opened["InvokedProductionVariant"]
    assert list(streamed["Body"])
    longest = "a" + "-b" * 127 + "c"  # 256 characters: the limit itself is allowed
    assert client.invoke_endpoint(EndpointName="proto", Body=BODY, SessionId=longest)[
        "InvokedProductionVariant"
    ]
