"""Model kinds behind a variant: python classes, chunk streaming, and the OpenAI-compatible proxy."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agent_release.pipelines.local_backend import LocalBackend
from agent_release.pipelines.runtime.chunks import InvalidCompletionError, completion_to_chunks
from agent_release.pipelines.runtime.model_loader import load_chat_model
from agent_release.steps.backend import ModelSpec, VariantSpec

RECEIVED: list[dict[str, Any]] = []
# The slow stream's progress: chunks the upstream produced, and whether its generator was closed early.
SLOW_CHUNKS = 50
SLOW_STREAM: dict[str, Any] = {"sent": 0, "ended_early": threading.Event()}


async def _chat(request: Request) -> Response:
    body = await request.json()
    RECEIVED.append(body)
    if body["messages"][-1]["content"] == "fail":
        return JSONResponse({"error": {"message": "upstream exploded"}}, status_code=503)
    text = f"upstream saw {body.get('model')}"
    if not body.get("stream"):
        message = {"role": "assistant", "content": text}
        return JSONResponse(
            {
                "id": "u",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model"),
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
        )

    if body["messages"][-1]["content"] == "slow stream":

        async def slow() -> Any:
            try:
                for i in range(SLOW_CHUNKS):
                    chunk = {"choices": [{"index": 0, "delta": {"content": f"{i} "}, "finish_reason": None}]}
                    SLOW_STREAM["sent"] += 1
                    yield f"data: {json.dumps(chunk)}\n\n"
                    await asyncio.sleep(0.1)
                yield "data: [DONE]\n\n"
            finally:
                if SLOW_STREAM["sent"] < SLOW_CHUNKS:
                    SLOW_STREAM["ended_early"].set()

        return StreamingResponse(slow(), media_type="text/event-stream")

    async def events() -> Any:
        for piece in text.split(" "):
            chunk = {"choices": [{"index": 0, "delta": {"content": piece + " "}, "finish_reason": None}]}
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[str]:
    """A tiny OpenAI-compatible server on loopback."""
    app = Starlette(routes=[Route("/v1/chat/completions", _chat, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(5)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory, fake_openai: str) -> Iterator[Any]:
    import boto3

    backend = LocalBackend(tmp_path_factory.mktemp("state"))
    proxy = ModelSpec(kind="openai_compatible", options={"base_url": fake_openai + "/", "model": "qwen-test"})
    backend.deploy_endpoint("proxied", [VariantSpec(name="llm", model=proxy, initial_weight=1.0)])
    url = backend.start_runtime()
    yield boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    backend.close()


def _body(text: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": text}]})


def test_openai_compatible_proxy_non_streaming(runtime: Any) -> None:
    response = runtime.invoke_endpoint(
        EndpointName="proxied", Body=_body("hi"), ContentType="application/json"
    )
    answer = json.loads(response["Body"].read())
    assert answer["choices"][0]["message"]["content"] == "upstream saw qwen-test"
    assert RECEIVED[-1]["stream"] is False


def test_openai_compatible_proxy_streams_upstream_bytes(runtime: Any) -> None:
    response = runtime.invoke_endpoint_with_response_stream(
        EndpointName="proxied", Body=_body("hi"), ContentType="application/json"
    )
    raw = b"".join(e["PayloadPart"]["Bytes"] for e in response["Body"]).decode()
    events = [line.removeprefix("data: ") for line in raw.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1])
    assert text == "upstream saw qwen-test "
    assert RECEIVED[-1]["stream"] is True
    assert RECEIVED[-1]["stream_options"] == {"include_usage": True}


def test_a_client_that_leaves_mid_stream_stops_the_upstream_stream(runtime: Any) -> None:
    # Before: the runtime read the upstream to its end (5 s here) for a client that had gone, which for a
    # real LLM server is generation nobody reads.
    response = runtime.invoke_endpoint_with_response_stream(EndpointName="proxied", Body=_body("slow stream"))
    events = iter(response["Body"])
    for _ in range(2):
        assert "PayloadPart" in next(events)
    response["Body"].close()
    assert SLOW_STREAM["ended_early"].wait(timeout=4.0), "the upstream stream ran on after the client left"
    assert SLOW_STREAM["sent"] < SLOW_CHUNKS


def test_openai_compatible_upstream_error_is_model_error(runtime: Any) -> None:
    with pytest.raises(runtime.exceptions.ModelError) as err:
        runtime.invoke_endpoint(EndpointName="proxied", Body=_body("fail"), ContentType="application/json")
    assert err.value.response["OriginalStatusCode"] == 503
    assert "upstream exploded" in err.value.response["Error"]["Message"]
    with pytest.raises(runtime.exceptions.ModelError):
        runtime.invoke_endpoint_with_response_stream(EndpointName="proxied", Body=_body("fail"))


class Configured:
    def __init__(self, greeting: str) -> None:
        self.greeting = greeting

    def complete(self, request: Any) -> dict[str, Any]:
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": self.greeting}}]}


class NotAModel:
    pass


def test_python_kind_loads_class_with_init_kwargs() -> None:
    model = load_chat_model(
        ModelSpec(
            kind="python", options={"class_path": f"{__name__}:Configured", "init": {"greeting": "hey"}}
        )
    )
    assert model.complete({})["choices"][0]["message"]["content"] == "hey"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ModelSpec(kind="python", options={}), "class_path"),
        (ModelSpec(kind="python", options={"class_path": f"{__name__}:NotAModel"}), "complete"),
        (ModelSpec(kind="demo"), "artifact_uri"),
        (ModelSpec(kind="container", options={"image_uri": "x"}), "not served"),
    ],
)
def test_bad_specs_fail_with_a_clear_message(spec: ModelSpec, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        load_chat_model(spec)


def test_chunks_without_finish_reason_or_usage() -> None:
    chunks = completion_to_chunks({"choices": [{"message": {"role": "assistant", "content": "hi"}}]})
    assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant"}, {"content": "hi"}, {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    with pytest.raises(InvalidCompletionError):
        completion_to_chunks({"nope": 1})


def test_demo_kind_loads_through_the_demo_model_module(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent_release.agents.demo_model import serving

    with pytest.raises(ValueError, match="demo model artifact not found"):
        load_chat_model(ModelSpec(kind="demo", artifact_uri=str(tmp_path / "missing.joblib")))

    loaded: list[str] = []

    def load_demo_model(artifact_uri: str) -> Configured:
        loaded.append(artifact_uri)
        return Configured("from the demo module")

    monkeypatch.setattr(serving, "load_demo_model", load_demo_model)
    uri = f"file://{tmp_path}/model.joblib"
    model = load_chat_model(ModelSpec(kind="demo", artifact_uri=uri))
    assert loaded == [uri]  # the artifact URI is handed over as registered
    assert model.complete({})["choices"][0]["message"]["content"] == "from the demo module"
