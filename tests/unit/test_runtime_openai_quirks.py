"""What real OpenAI-compatible servers send, through the runtime's proxy, to boto3 and to a Strands agent.

The fake upstream writes raw bytes the way llama.cpp server, Ollama's ``/v1`` and vLLM do (raw UTF-8, CRLF,
keep-alive comments, usage with detail objects, tool calls without ``id`` or ``index``), with the write
boundaries a network may give the proxy's reads. A Strands ``SageMakerAIModel`` reads the runtime's stream
exactly as it would an endpoint's; before the proxy normalised the upstream's events each of these cases
failed the agent call (TypeError, RecursionError, KeyError, UnicodeDecodeError).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from _shared.loopback import runtime_client, serve
from botocore.exceptions import EventStreamError

from agent_release.agents.builder import ModelBinding, build_agent, build_model
from agent_release.pipelines.local_backend import LocalBackend
from agent_release.pipelines.runtime.upstream_chunks import SSEEvents
from agent_release.steps.backend import ModelSpec, VariantSpec

ANSWER = "Заказ ORD-1 отправлен 🚚"
COUNTS = {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}
# OpenAI, LiteLLM and SGLang send detail objects beside the counts (scenario "usage" only, so that each
# other scenario fails, on the old code, for its own reason).
DETAILS = {
    "prompt_tokens_details": {"cached_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0},
}


def _usage(scenario: str) -> dict[str, Any]:
    return {**COUNTS, **DETAILS} if scenario == "usage" else dict(COUNTS)


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return str(content or "")


def _event(chunk: dict[str, Any], newline: bytes = b"\n") -> bytes:
    # Raw UTF-8 as llama.cpp, vLLM and Ollama write it (not \\u escapes).
    return b"data: " + json.dumps(chunk, ensure_ascii=False).encode("utf-8") + newline + newline


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def _tool_call(scenario: str) -> dict[str, Any]:
    call: dict[str, Any] = {
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"order_id": "ORD-1"}'},
    }
    if scenario != "no-id":
        call["id"] = "call_up_0"
    if scenario != "no-index":
        call["index"] = 0
    return call


def _stream(scenario: str, wants_tool: bool) -> list[bytes]:
    """The writes of one streamed answer; each is flushed on its own."""
    if wants_tool:
        events = [
            _chunk({"role": "assistant", "tool_calls": [_tool_call(scenario)]}),
            _chunk({}, "tool_calls"),
        ]
    else:
        events = [_chunk({"role": "assistant", "content": ANSWER}), _chunk({}, "stop")]
    if scenario == "no-finish-reason":  # the key left out, not null
        for event in events:
            for choice in event["choices"]:
                del choice["finish_reason"]
    newline = b"\r\n" if scenario == "split-utf8" else b"\n"
    raw = b": keep-alive" + newline + newline + b"".join(_event(e, newline) for e in events)
    raw += _event(
        {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": _usage(scenario)}, newline
    )
    raw += b"data: [DONE]" + newline + newline
    if scenario.startswith("error-"):
        # A failure after the 200: vLLM sends a data event {"error": ...}, llama.cpp server an error: field.
        if scenario == "error-first":
            llama_cpp = {"code": 400, "message": "context size exceeded", "type": "exceed_context_size_error"}
            return [b"error: " + json.dumps(llama_cpp).encode() + b"\n\n"]
        vllm = {"error": {"message": "context size exceeded", "type": "BadRequestError", "code": 400}}
        partial = _event(_chunk({"role": "assistant", "content": "Заказ"}))
        return [partial + _event(vllm), b"data: [DONE]\n\n"]
    if scenario == "keep-alive-then-slow":
        # A proxy in front of a busy server (OpenRouter, LiteLLM) keeps the connection alive with comments.
        return [b": keep-alive\n\n", b": keep-alive\n\n", raw]
    if scenario == "slow-stream":
        first_event_end = raw.index(b"\n\n", raw.index(b"data:")) + 2
        return [raw[:first_event_end], raw[first_event_end:]]
    if scenario != "split-utf8":
        return [raw]
    # Cut inside the first multi-byte character of the answer: a read may end anywhere.
    cut = raw.index("Заказ".encode()) + 1
    return [raw[:cut], raw[cut:]]


def _completion(scenario: str, wants_tool: bool) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "" if wants_tool else ANSWER}
    if wants_tool:
        call = _tool_call(scenario)
        call.pop("index", None)
        message["tool_calls"] = [call]
    choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if wants_tool else "stop"}
    if scenario == "no-finish-reason":
        del choice["finish_reason"]
    return {"id": "c", "object": "chat.completion", "choices": [choice], "usage": _usage(scenario)}


class _Upstream(BaseHTTPRequestHandler):
    """Answers by the scenario named in the first user message; asks for the tool until it has its result."""

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self.send_error(404, "Not Found")  # as llama.cpp server and Ollama answer an unknown path
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = next(m for m in body["messages"] if m["role"] == "user")
        scenario = _text_of(user)
        if scenario == "slow":
            time.sleep(1.0)
        wants_tool = scenario in ("no-id", "no-index", "no-finish-reason") and not any(
            m["role"] == "tool" for m in body["messages"]
        )
        if scenario == "whoami":
            auth = str(self.headers.get("Authorization"))
            message = {"role": "assistant", "content": auth}
            answer = {"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": message}]}
            self._send(json.dumps(answer).encode(), "application/json")
            return
        if scenario == "error-200":
            # LM Studio: an unknown path or model is answered 200 with {"error": "..."}.
            lm_studio = {"error": "Unexpected endpoint or method. (POST /v1/v1/chat/completions)"}
            self._send(json.dumps(lm_studio).encode(), "application/json")
            return
        if scenario == "not-sse":
            self._send(b"model is loading, try again later", "text/plain")
            return
        if not body.get("stream") or scenario == "json-for-stream":
            payload = json.dumps(_completion(scenario, wants_tool)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in _stream(scenario, wants_tool):
            self.wfile.write(piece)
            self.wfile.flush()
            slow = scenario in ("slow-stream", "keep-alive-then-slow")
            time.sleep(1.0 if slow else 0.05)  # separate reads on the proxy's side

    def _send(self, payload: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An endpoint whose one variant proxies to the fake upstream; yields the runtime's URL."""
    with serve(_Upstream) as upstream:
        backend = LocalBackend(tmp_path_factory.mktemp("state"))
        spec = ModelSpec(kind="openai_compatible", options={"base_url": upstream, "model": "qwen2.5"})
        # The same server named as OpenAI clients (and the llm_judge scorer) take it, with /v1; and wrongly.
        with_v1 = [
            VariantSpec(
                name=name,
                model=ModelSpec(kind="openai_compatible", options={"base_url": url}),
                initial_weight=0.0,
            )
            for name, url in (
                ("with-v1", upstream + "/v1"),
                ("with-v1-slash", upstream + "/v1/"),
                ("wrong-root", upstream + "/llm"),
            )
        ]
        keyed = [
            VariantSpec(
                name=name,
                model=ModelSpec(kind="openai_compatible", options={"base_url": upstream, "api_key_env": env}),
                initial_weight=0.0,
            )
            for name, env in (("keyed", "AR_TEST_LLM_KEY"), ("key-unset", "AR_TEST_NO_SUCH_KEY"))
        ]
        # A server slower than the variant's timeout_s (a big model's first token, a loaded GPU).
        slow = [
            VariantSpec(
                name="impatient",
                model=ModelSpec(kind="openai_compatible", options={"base_url": upstream, "timeout_s": 0.3}),
                initial_weight=0.0,
            )
        ]
        backend.deploy_endpoint(
            "llm", [VariantSpec(name="local-llm", model=spec, initial_weight=1.0), *with_v1, *slow, *keyed]
        )
        try:
            yield backend.start_runtime()
        finally:
            backend.close()


def _model_error(endpoint: str, user_text: str, variant: str | None = None, *, stream: bool = False) -> Any:
    """The ``ModelError`` response the runtime gives for ``user_text`` (on ``variant``, else by weight)."""
    client = runtime_client(endpoint)
    call = client.invoke_endpoint_with_response_stream if stream else client.invoke_endpoint
    target = {"TargetVariant": variant} if variant else {}
    body = json.dumps({"messages": [{"role": "user", "content": user_text}]})
    with pytest.raises(client.exceptions.ModelError) as err:
        call(EndpointName="llm", Body=body, ContentType="application/json", **target)
    return err.value.response


def _ask_agent(url: str, monkeypatch: pytest.MonkeyPatch, scenario: str, *, stream: bool) -> Any:
    from strands import tool

    looked_up: list[str] = []

    @tool
    def lookup(order_id: str) -> str:
        """Look an order up."""
        looked_up.append(order_id)
        return "shipped"

    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    model = build_model(ModelBinding(endpoint_name="llm", variant="local-llm", stream=stream, max_attempts=1))
    result = build_agent(model, "You answer order questions.", [lookup])(scenario)
    return result, looked_up


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_usage_with_detail_objects_reaches_strands_as_counts(
    endpoint: str, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    # Before: Strands' UsageMetadata(**usage) raised TypeError on completion_tokens_details: every case
    # failed.
    result, _ = _ask_agent(endpoint, monkeypatch, "usage", stream=stream)
    assert ANSWER in str(result)
    assert result.metrics.accumulated_usage["inputTokens"] == 10
    assert result.metrics.accumulated_usage["outputTokens"] == 4


# What each scenario broke before the proxy normalised it:
# - no-id: the empty tool-use id matched no result and Strands' loop recursed until RecursionError;
# - no-finish-reason: a server that leaves finish_reason out (OpenAI sends it, null until the last chunk);
#   Strands read choice["finish_reason"] and every call raised KeyError: 'finish_reason';
# - no-index (older Ollama: the whole call in one delta, streamed only): KeyError: 'index' in Strands.
@pytest.mark.parametrize(
    ("scenario", "stream"),
    [
        ("no-id", True),
        ("no-id", False),
        ("no-finish-reason", True),
        ("no-finish-reason", False),
        ("no-index", True),
    ],
)
def test_a_loose_tool_call_still_runs_the_tool_once_and_answers(
    endpoint: str, monkeypatch: pytest.MonkeyPatch, scenario: str, stream: bool
) -> None:
    result, looked_up = _ask_agent(endpoint, monkeypatch, scenario, stream=stream)
    assert looked_up == ["ORD-1"]
    assert ANSWER in str(result)


def test_each_payload_part_holds_whole_events_even_when_a_read_splits_a_character(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: the upstream's reads were relayed as they came, so a part ended inside "З" and Strands'
    # part.decode("utf-8") raised UnicodeDecodeError.
    response = runtime_client(endpoint).invoke_endpoint_with_response_stream(
        EndpointName="llm", Body=json.dumps({"messages": [{"role": "user", "content": "split-utf8"}]})
    )
    parts = [event["PayloadPart"]["Bytes"] for event in response["Body"]]
    texts = [part.decode("utf-8") for part in parts]
    events = [e for text in texts for e in text.split("\n\n") if e]
    assert events[0] == ": keep-alive", "a comment stays a comment (its own block)"
    events = events[1:]
    assert all(e.startswith("data: ") for e in events), "CRLF framing is not relayed"
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == ANSWER
    assert chunks[-1]["usage"] == COUNTS
    result, _ = _ask_agent(endpoint, monkeypatch, "split-utf8", stream=True)
    assert ANSWER in str(result)


def test_sse_framing_keeps_an_unterminated_last_event_and_passes_nothing_of_an_error_event() -> None:
    # An upstream may end its body without the blank line that closes the last event: close() hands it on.
    events = SSEEvents()
    assert events.feed(b'data: {"choices": []}\r\n\r\ndata: [DONE]') == b'data: {"choices":[]}\n\n'
    assert events.close() == b"data: [DONE]\n\n"
    # An error event ends what is passed on: none of its bytes reach the client, it becomes the error.
    failing = SSEEvents()
    upstream = b'data: {"error": {"message": "oom", "code": 503}}\n\ndata: {"choices": []}\n\n'
    assert failing.feed(upstream) == b""
    assert failing.close() == b""
    assert failing.error == ("oom", 503)


@pytest.mark.parametrize("variant", ["with-v1", "with-v1-slash"])
def test_a_base_url_ending_in_v1_reaches_the_chat_completions_path(endpoint: str, variant: str) -> None:
    # Before: the runtime posted to <base_url>/v1/v1/chat/completions and every call was a 404 ModelError.
    response = runtime_client(endpoint).invoke_endpoint(
        EndpointName="llm",
        TargetVariant=variant,
        Body=json.dumps({"messages": [{"role": "user", "content": "hello"}]}),
        ContentType="application/json",
    )
    assert json.loads(response["Body"].read())["choices"][0]["message"]["content"] == ANSWER
    assert response["InvokedProductionVariant"] == variant


def test_an_upstream_error_names_the_url_the_runtime_posted_to(endpoint: str) -> None:
    # A 404 from a wrong base_url is only diagnosable when the message says where the runtime posted.
    error = _model_error(endpoint, "hello", "wrong-root")
    assert error["OriginalStatusCode"] == 404
    assert "/llm/v1/chat/completions answered 404" in error["Error"]["Message"]


def test_a_4xx_from_the_model_is_worded_as_sagemaker_words_it(endpoint: str) -> None:
    # SageMaker: 'Received client error (404) from model with message ...' for a container's 4xx, 'server
    # error' for a 5xx. Before: 'server error' whatever the status, so a 404 or 401 read as a crash.
    client_error = _model_error(endpoint, "hello", "wrong-root")["Error"]["Message"]
    assert client_error.startswith("Received client error (404) from model with")
    server_error = _model_error(endpoint, "slow", "impatient")["Error"]["Message"]
    assert server_error.startswith("Received server error (504) from model with")


def test_an_upstream_slower_than_timeout_s_is_a_timeout_that_says_so(endpoint: str) -> None:
    # Before: httpx's ReadTimeout has no message, so the caller read 'upstream ... unreachable: ' (502), as if
    # the server were down, with no word of the timeout.
    error = _model_error(endpoint, "slow", "impatient")
    assert error["OriginalStatusCode"] == 504
    assert "did not answer within 0.3 s (options.timeout_s" in error["Error"]["Message"]
    client = runtime_client(endpoint)
    # Mid-stream, the headers are gone: the same words arrive in-band as a ModelStreamError.
    response = client.invoke_endpoint_with_response_stream(
        EndpointName="llm",
        TargetVariant="impatient",
        Body=json.dumps({"messages": [{"role": "user", "content": "slow-stream"}]}),
    )
    with pytest.raises(EventStreamError, match=r"did not answer within 0\.3 s") as stream_err:
        for _ in response["Body"]:
            pass
    assert stream_err.value.response["Error"]["Code"] == "ModelStreamError"


def test_a_server_that_answers_a_stream_request_with_one_json_completion_is_replayed_as_a_stream(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Some servers ignore stream: true (or cannot stream with tools) and answer a whole chat.completion.
    # Before: relayed as they were, Strands failed on the missing choices[0].delta (KeyError 'delta').
    result, _ = _ask_agent(endpoint, monkeypatch, "json-for-stream", stream=True)
    assert ANSWER in str(result)
    assert result.metrics.accumulated_usage["inputTokens"] == 10


def test_a_stream_answer_without_any_sse_event_is_a_model_error(endpoint: str) -> None:
    # Before: the text was relayed, Strands skipped it, and the agent's answer was silently empty: a case
    # scored as the model's answer instead of an error row.
    error = _model_error(endpoint, "not-sse", stream=True)
    assert error["OriginalStatusCode"] == 502
    message = error["Error"]["Message"]
    assert "no SSE event (text/plain)" in message
    assert "model is loading" in message


def test_keep_alive_comments_before_a_slow_first_token_start_the_stream_in_time(tmp_path: Any) -> None:
    # The invocation timeout covers a stream's first part; a keep-alive is a part, as on SageMaker. Before:
    # the re-framing swallowed comments, so the first part waited for the first token and timed out (504).
    from agent_release.pipelines.runtime.server import RuntimeServer

    with serve(_Upstream) as upstream:
        backend = LocalBackend(tmp_path)
        spec = ModelSpec(kind="openai_compatible", options={"base_url": upstream})
        backend.deploy_endpoint("llm", [VariantSpec(name="local-llm", model=spec, initial_weight=1.0)])
        with RuntimeServer(tmp_path, invocation_timeout_s=0.5) as server:
            assert server.url is not None
            response = runtime_client(server.url).invoke_endpoint_with_response_stream(
                EndpointName="llm",
                Body=json.dumps({"messages": [{"role": "user", "content": "keep-alive-then-slow"}]}),
            )
            raw = b"".join(event["PayloadPart"]["Bytes"] for event in response["Body"]).decode()
        backend.close()
    assert raw.startswith(": keep-alive\n\n")
    chunks = [json.loads(e.removeprefix("data: ")) for e in raw.split("\n\n") if e.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == ANSWER
    assert raw.endswith("data: [DONE]\n\n")


def test_an_error_event_in_the_upstream_stream_is_the_callers_error(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: Strands skipped the {"error": ...} event and the agent returned the text so far ("Заказ") as
    # the model's whole answer, scored as such.
    client = runtime_client(endpoint)
    response = client.invoke_endpoint_with_response_stream(
        EndpointName="llm", Body=json.dumps({"messages": [{"role": "user", "content": "error-mid-stream"}]})
    )
    with pytest.raises(EventStreamError, match="failed mid-stream: context size exceeded") as err:
        for _ in response["Body"]:
            pass
    assert err.value.response["Error"]["Code"] == "ModelStreamError"
    with pytest.raises(EventStreamError, match="context size exceeded"):
        _ask_agent(endpoint, monkeypatch, "error-mid-stream", stream=True)


def test_an_error_field_before_any_event_is_a_model_error_with_the_upstreams_status(endpoint: str) -> None:
    # Before any other event the headers are not sent yet: a ModelError carrying the upstream's status.
    # Before: llama.cpp's error: field was relayed, Strands skipped it, the answer was silently empty.
    error = _model_error(endpoint, "error-first", stream=True)
    assert error["OriginalStatusCode"] == 400
    assert "context size exceeded" in error["Error"]["Message"]


def test_api_key_env_sends_the_key_and_an_unset_one_is_a_clear_model_error(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: a named variable that was not set sent no key at all, and the upstream's 401 did not say why.
    client = runtime_client(endpoint)
    body = json.dumps({"messages": [{"role": "user", "content": "whoami"}]})
    monkeypatch.setenv("AR_TEST_LLM_KEY", "s3cret")
    answer = json.loads(
        client.invoke_endpoint(EndpointName="llm", TargetVariant="keyed", Body=body)["Body"].read()
    )
    assert answer["choices"][0]["message"]["content"] == "Bearer s3cret"
    monkeypatch.delenv("AR_TEST_NO_SUCH_KEY", raising=False)
    unset = _model_error(endpoint, "whoami", "key-unset")["Error"]["Message"]
    assert "api_key_env names AR_TEST_NO_SUCH_KEY, which is not set" in unset


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_a_200_answer_carrying_an_error_is_a_model_error_with_the_servers_words(
    endpoint: str, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    # Before: relayed as an answer, Strands failed on it (KeyError 'choices' / 'delta') with no word of
    # the server's message.
    with pytest.raises(Exception, match=r"answered 200 with an error: Unexpected endpoint or method") as err:
        _ask_agent(endpoint, monkeypatch, "error-200", stream=stream)
    assert getattr(err.value, "response", {}).get("Error", {}).get("Code") == "ModelError"
