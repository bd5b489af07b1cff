"""The local endpoint runtime through the real boto3 sagemaker-runtime client (SageMaker Runtime protocol)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlparse

import pytest
from _shared.loopback import runtime_client
from botocore.exceptions import ClientError, ReadTimeoutError

from agent_release.pipelines.local_backend import LocalBackend
from agent_release.steps.backend import FaultSpec, ModelSpec, VariantSpec

BODY = json.dumps({"messages": [{"role": "user", "content": "hello"}]})


class TaggedModel:
    """Answers with its tag and the user's text; calls a tool when asked to."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        text = request["messages"][-1]["content"]
        message: dict[str, Any] = {"role": "assistant", "content": f"{self.tag}:{text}"}
        finish = "stop"
        if text == "use tools":
            message = {
                "role": "assistant",
                "content": "checking",
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "first", "arguments": '{"a": 1}'}},
                    {"id": "c2", "type": "function", "function": {"name": "second", "arguments": {"b": 2}}},
                ],
            }
            finish = "tool_calls"
        return {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": self.tag,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": 4,
                "completion_tokens": 2,
                "total_tokens": 6,
                "extra_detail": {"x": 1},
            },
        }


class UnserializableModel:
    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return {"choices": [{"message": {"content": object()}}]}


# Released by the tests that use BlockedModel once they are done with it (a call never outlives its test).
RELEASE = threading.Event()


class BlockedModel:
    """Answers only once RELEASE is set (or after a minute): a wedged or very slow model."""

    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        RELEASE.wait(60)
        return TaggedModel("blocked").complete(request)


class BrokenModel:
    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        raise RuntimeError("weights are corrupt")


class ExitsWhenBuilt:
    def __init__(self) -> None:
        raise SystemExit(0)

    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return {}


class ExitsWhenCalled:
    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        raise SystemExit(3)


def spec(tag: str) -> ModelSpec:
    return ModelSpec(kind="python", options={"class_path": f"{__name__}:TaggedModel", "init": {"tag": tag}})


def variant(name: str, weight: float, **kwargs: Any) -> VariantSpec:
    return VariantSpec(name=name, model=kwargs.pop("model", spec(name)), initial_weight=weight, **kwargs)


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBackend]:
    backend = LocalBackend(tmp_path_factory.mktemp("state"))
    backend.deploy_endpoint("split", [variant("a", 0.8), variant("b", 0.2)])
    backend.start_runtime()
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def client(backend: LocalBackend) -> Any:
    return runtime_client(backend.runtime_endpoint_url())


def invoke(client: Any, endpoint: str, body: str = BODY, **kwargs: Any) -> tuple[str, dict[str, Any]]:
    response = client.invoke_endpoint(
        EndpointName=endpoint, Body=body, ContentType="application/json", **kwargs
    )
    return response["InvokedProductionVariant"], json.loads(response["Body"].read())


def wait_until(predicate: Any, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_invoke_endpoint_returns_the_model_answer_and_variant(client: Any) -> None:
    name, answer = invoke(client, "split", TargetVariant="b")
    assert name == "b"
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "b:hello"


def test_response_stream_carries_chunks_in_payload_parts(client: Any) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "use tools"}], "stream": True})
    response = client.invoke_endpoint_with_response_stream(
        EndpointName="split", Body=body, ContentType="application/json", TargetVariant="a"
    )
    assert response["InvokedProductionVariant"] == "a"
    raw = b"".join(event["PayloadPart"]["Bytes"] for event in response["Body"])
    lines = [line for line in raw.decode().split("\n\n") if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content", "") for d in deltas) == "checking"
    tool_deltas = [t for d in deltas for t in d.get("tool_calls", [])]
    firsts = {}
    for t in tool_deltas:
        firsts.setdefault(t["index"], t)
    assert [(f["id"], f["function"]["name"]) for f in firsts.values()] == [("c1", "first"), ("c2", "second")]
    args = {
        i: "".join(t["function"].get("arguments", "") for t in tool_deltas if t["index"] == i) for i in firsts
    }
    assert [json.loads(a) for a in args.values()] == [{"a": 1}, {"b": 2}]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    # Usage comes last in a chunk without choices, restricted to the keys Strands accepts.
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


def test_target_variant_is_honoured(client: Any) -> None:
    assert {invoke(client, "split", TargetVariant="b")[0] for _ in range(30)} == {"b"}


def test_weighted_split_over_3000_calls(client: Any) -> None:
    counts = Counter(invoke(client, "split")[0] for _ in range(3000))
    assert abs(counts["a"] / 3000 - 0.8) <= 0.03
    assert abs(counts["b"] / 3000 - 0.2) <= 0.03


def test_unknown_endpoint_and_variant_raise_validation_error(client: Any) -> None:
    with pytest.raises(ClientError) as err:
        invoke(client, "no-such-endpoint")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert "no-such-endpoint" in err.value.response["Error"]["Message"]
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(client.exceptions.ValidationError) as err2:
        invoke(client, "split", TargetVariant="zzz")
    assert "zzz" in err2.value.response["Error"]["Message"]
    with pytest.raises(client.exceptions.ValidationError):
        client.invoke_endpoint_with_response_stream(EndpointName="no-such-endpoint", Body=BODY)


def test_weight_update_applies_without_restart(backend: LocalBackend, client: Any) -> None:
    backend.deploy_endpoint("shift", [variant("blue", 1.0), variant("green", 0.0)])
    wait_until(lambda: _can_invoke(client, "shift"))
    assert {invoke(client, "shift")[0] for _ in range(20)} == {"blue"}
    # A second backend object on the same state directory plays the part of another process.
    other = LocalBackend(backend.state_dir)
    other.update_weights("shift", {"blue": 0.0, "green": 1.0})
    wait_until(lambda: invoke(client, "shift")[0] == "green")
    assert {invoke(client, "shift")[0] for _ in range(20)} == {"green"}
    other.close()


def _can_invoke(client: Any, endpoint: str) -> bool:
    try:
        invoke(client, endpoint)
    except client.exceptions.ValidationError:
        return False
    return True


def test_session_id_pins_a_conversation_to_one_variant(backend: LocalBackend, client: Any) -> None:
    backend.deploy_endpoint("sessions", [variant("x", 1.0), variant("y", 1.0)])
    wait_until(lambda: _can_invoke(client, "sessions"))
    seen = {}
    for session in [f"conv-{i}" for i in range(20)]:
        names = {invoke(client, "sessions", SessionId=session)[0] for _ in range(5)}
        assert len(names) == 1, f"session {session} answered by {names}"
        seen[session] = names.pop()
    assert set(seen.values()) == {"x", "y"}  # sessions still spread over both variants


def test_model_failure_is_a_model_error(backend: LocalBackend, client: Any) -> None:
    broken = ModelSpec(kind="python", options={"class_path": f"{__name__}:BrokenModel"})
    missing = ModelSpec(kind="python", options={"class_path": f"{__name__}:NoSuchClass"})
    backend.deploy_endpoint(
        "broken", [variant("bad", 1.0, model=broken), variant("gone", 0.0, model=missing)]
    )
    wait_until(lambda: _endpoint_known(client, "broken"))
    with pytest.raises(client.exceptions.ModelError) as err:
        invoke(client, "broken")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert err.value.response["OriginalStatusCode"] == 500
    # SageMaker's wording: a 4xx from the model is a client error, a 5xx (500 included) a server error.
    assert err.value.response["Error"]["Message"].startswith("Received server error (500) from model")
    assert "weights are corrupt" in err.value.response["Error"]["Message"]
    with pytest.raises(client.exceptions.ModelError) as err2:
        invoke(client, "broken", TargetVariant="gone")
    assert "could not load model" in err2.value.response["Error"]["Message"]
    with pytest.raises(client.exceptions.ModelError):
        client.invoke_endpoint_with_response_stream(EndpointName="broken", Body=BODY)


def test_a_model_that_exits_is_a_model_error_for_every_request_waiting_on_it(
    backend: LocalBackend, client: Any
) -> None:
    # A class calling sys.exit in its constructor: the SystemExit went up into the server (a traceback per
    # request) and left the load unresolved, so the requests waiting on the same load hung until their
    # timeout; one calling it in complete() was a 500 with a traceback, not the model's error.
    from concurrent.futures import ThreadPoolExecutor

    built = ModelSpec(kind="python", options={"class_path": f"{__name__}:ExitsWhenBuilt"})
    called = ModelSpec(kind="python", options={"class_path": f"{__name__}:ExitsWhenCalled"})
    backend.deploy_endpoint(
        "exits", [variant("built", 1.0, model=built), variant("called", 0.0, model=called)]
    )
    wait_until(lambda: _endpoint_known(client, "exits"))

    def message(target: str) -> str:
        with pytest.raises(client.exceptions.ModelError) as err:
            invoke(client, "exits", TargetVariant=target)
        return str(err.value.response["Error"]["Message"])

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        messages = list(pool.map(message, ["built"] * 8))
    assert time.monotonic() - started < 10
    assert all("could not load model of variant 'built': exited (exit code 0)" in m for m in messages), (
        messages
    )
    assert "model exited (exit code 3)" in message("called")


def _endpoint_known(client: Any, endpoint: str) -> bool:
    try:
        invoke(client, endpoint)
    except client.exceptions.ValidationError:
        return False
    except ClientError:
        return True
    return True


ADDED_LATENCY_MS = 150
TIMER_RESOLUTION_MS = 1.0


def test_fault_injection(backend: LocalBackend, client: Any) -> None:
    since = time.time()
    backend.deploy_endpoint(
        "faulty",
        [
            variant("ok", 1.0),
            variant("errors", 0.0, faults=FaultSpec(error_rate=1.0)),
            variant("slow", 0.0, faults=FaultSpec(added_latency_ms=ADDED_LATENCY_MS)),
            variant("hangs", 0.0, faults=FaultSpec(hang=True)),
        ],
    )
    wait_until(lambda: _can_invoke(client, "faulty"))
    with pytest.raises(client.exceptions.ModelError):
        invoke(client, "faulty", TargetVariant="errors")
    started = time.perf_counter()
    assert invoke(client, "faulty", TargetVariant="slow")[0] == "slow"
    # A lower bound set by the injected delay, not a speed check: the fault is applied, so the caller waits at
    # least that long, and the runtime counts it as model latency (where CloudWatch's ModelLatency puts it). The
    # event loop's timers have millisecond resolution and may fire up to that much early.
    assert (time.perf_counter() - started) * 1000.0 >= ADDED_LATENCY_MS - TIMER_RESOLUTION_MS
    wait_until(lambda: backend.variant_metrics("faulty", since)["slow"].invocations == 1)
    (slow_ms,) = backend.variant_metrics("faulty", since)["slow"].latencies_ms
    assert slow_ms >= ADDED_LATENCY_MS - TIMER_RESOLUTION_MS
    impatient = runtime_client(backend.runtime_endpoint_url(), read_timeout=0.5)
    with pytest.raises(ReadTimeoutError):
        invoke(impatient, "faulty", TargetVariant="hangs")
    assert invoke(client, "faulty")[0] == "ok"  # the hang holds no thread: the server keeps answering


def test_shadow_variant_gets_copies_and_never_answers(backend: LocalBackend, client: Any) -> None:
    since = time.time()
    backend.deploy_endpoint(
        "shadowed", [variant("live", 1.0), variant("shadow", 0.0, shadow=True, shadow_sample_percent=100.0)]
    )
    wait_until(lambda: _can_invoke(client, "shadowed"))
    assert {invoke(client, "shadowed")[0] for _ in range(10)} == {"live"}
    with pytest.raises(client.exceptions.ValidationError):
        invoke(client, "shadowed", TargetVariant="shadow")

    def shadow_calls() -> int:
        return backend.variant_metrics("shadowed", since)["shadow"].invocations

    wait_until(lambda: shadow_calls() >= 11, timeout_s=5)  # 10 + the one from _can_invoke
    assert backend.variant_metrics("shadowed", since)["live"].invocations == shadow_calls()


def test_metrics_count_calls_and_errors_per_variant(backend: LocalBackend, client: Any) -> None:
    since = time.time()
    backend.deploy_endpoint(
        "metered", [variant("good", 1.0), variant("flaky", 0.0, faults=FaultSpec(error_rate=1))]
    )
    wait_until(lambda: _can_invoke(client, "metered"))
    waited_ms: list[float] = []
    for _ in range(5):
        started = time.perf_counter()
        invoke(client, "metered", TargetVariant="good")
        waited_ms.append((time.perf_counter() - started) * 1000.0)
    for _ in range(3):
        with pytest.raises(client.exceptions.ModelError):
            invoke(client, "metered", TargetVariant="flaky")
    with pytest.raises(client.exceptions.ModelError):  # the model's client error, as on SageMaker
        invoke(client, "metered", body="{not json", TargetVariant="good")

    def metrics() -> Any:
        return backend.variant_metrics("metered", since)

    wait_until(lambda: metrics()["flaky"].invocations == 3 and metrics()["good"].invocations >= 7)
    good, flaky = metrics()["good"], metrics()["flaky"]
    assert (good.errors_4xx, good.errors_5xx) == (1, 0)
    assert (flaky.errors_4xx, flaky.errors_5xx) == (0, 3)
    assert flaky.outcomes == (False, False, False)
    # Latency is recorded and consistent; how fast the runtime is, is benchmarks/bench_runtime.py's business.
    assert len(good.latencies_ms) == good.invocations - good.errors_4xx
    assert all(ms > 0 for ms in good.latencies_ms)
    p50, p95, p99 = good.model_latency_ms_p50, good.model_latency_ms_p95, good.model_latency_ms_p99
    assert p50 is not None and p95 is not None and p99 is not None
    assert min(good.latencies_ms) <= p50 <= p95 <= p99 <= max(good.latencies_ms)
    assert good.overhead_latency_ms_p50 is not None and good.overhead_latency_ms_p50 >= 0
    # The runtime times the model inside the request, so each call's model latency is within what its caller
    # waited (the last five answered calls are the timed ones; the rows are oldest first).
    for model_ms, client_ms in zip(good.latencies_ms[-5:], waited_ms, strict=True):
        assert model_ms <= client_ms
    # Failed calls count as invocations but not in the latency series the guards read.
    assert flaky.latencies_ms == () and flaky.model_latency_ms_p50 is None


def _raw(url: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, response.getheader("x-amzn-ErrorType"), data


def test_malformed_requests_get_4xx_and_the_server_keeps_serving(backend: LocalBackend, client: Any) -> None:
    url = backend.runtime_endpoint_url()
    assert url is not None
    json_headers = {"Content-Type": "application/json"}
    # A body the model cannot read is the model's client error (424 ModelError naming 400 or 415).
    cases = [
        ("POST", "/endpoints/split/invocations", b"{oops", json_headers, 424),
        ("POST", "/endpoints/split/invocations", b"[1, 2]", json_headers, 424),
        ("POST", "/endpoints/split/invocations", b"\xff\xfe", json_headers, 424),
        ("POST", "/endpoints/split/invocations", BODY.encode(), {"Content-Type": "text/csv"}, 424),
        ("POST", "/endpoints/split/invocations", b"x" * (6 * 1024 * 1024 + 1), json_headers, 413),
        ("GET", "/endpoints/split/invocations", b"", {}, 405),
        ("POST", "/endpoints/split/other", b"", {}, 404),
        ("GET", "/nothing/here", b"", {}, 404),
    ]
    for method, path, body, headers, expected in cases:
        status, error_type, data = _raw(url, method, path, body, headers)
        assert status == expected, (path, data)
        assert error_type, path
        assert json.loads(data)["message"]
    assert _raw(url, "GET", "/ping")[0] == 200
    assert invoke(client, "split", TargetVariant="a")[1]["choices"][0]["message"]["content"] == "a:hello"


def test_a_body_of_exactly_the_6_mb_limit_is_read_whole_and_answered(client: Any) -> None:
    # SageMaker's InvokeEndpoint payload limit is 6 MB, the limit itself allowed. A body this large reaches
    # the app in many ASGI messages that must all be joined (the 413 case above is the only other body sent
    # in more than one message, and it is refused either way).
    wrapper = json.dumps({"messages": [{"role": "user", "content": ""}]})
    text = "x" * (6 * 1024 * 1024 - len(wrapper))
    body = json.dumps({"messages": [{"role": "user", "content": text}]})
    assert len(body) == 6 * 1024 * 1024
    invoked, answer = invoke(client, "split", body=body, TargetVariant="a")
    assert invoked == "a"
    assert answer["choices"][0]["message"]["content"] == f"a:{text}"


def test_an_answer_json_cannot_hold_is_the_models_fault_not_retried(backend: LocalBackend) -> None:
    # Before: json.dumps failed outside the model's error handling, a 500 InternalFailure that botocore
    # retries, so the model ran once per attempt.
    odd = ModelSpec(kind="python", options={"class_path": f"{__name__}:UnserializableModel"})
    backend.deploy_endpoint("odd", [variant("odd", 1.0, model=odd)])
    retrying = runtime_client(backend.runtime_endpoint_url(), attempts=3)
    wait_until(lambda: _endpoint_known(retrying, "odd"))
    for stream in (False, True):
        with pytest.raises(retrying.exceptions.ModelError) as caught:
            if stream:
                retrying.invoke_endpoint_with_response_stream(EndpointName="odd", Body=BODY)
            else:
                invoke(retrying, "odd")
        assert "not JSON" in str(caught.value) or "cannot be streamed" in str(caught.value)
        assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 0
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 424


def test_unexpected_failure_is_internal_failure_and_the_server_survives(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent_release.pipelines.runtime.app import RuntimeApp

    def bug(content_type: bytes, body: bytes) -> dict[str, Any]:
        raise KeyError("a bug in the runtime")

    monkeypatch.setattr(RuntimeApp, "_parse_request", staticmethod(bug))  # the server runs in this process
    with pytest.raises(client.exceptions.InternalFailure) as caught:
        invoke(client, "split")
    # botocore's service model: InternalFailure is an HTTP 500 (a status botocore retries, as it would on AWS).
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    monkeypatch.undo()
    assert invoke(client, "split", TargetVariant="b")[0] == "b"


def test_a_stuck_shadow_never_delays_the_production_answer(backend: LocalBackend, client: Any) -> None:
    # Before: every variant shared 32 model threads, so after 32 shadow copies stuck in their model, call
    # 33 waited for a free thread (here: its client's 10 s read timeout).
    blocked = ModelSpec(kind="python", options={"class_path": f"{__name__}:BlockedModel"})
    backend.deploy_endpoint(
        "shadowed",
        [variant("live", 1.0), variant("copy", 0.0, model=blocked, shadow=True, shadow_sample_percent=100.0)],
    )
    RELEASE.clear()
    try:
        wait_until(lambda: _can_invoke(client, "shadowed"))
        answers = [invoke(client, "shadowed")[0] for _ in range(40)]
        assert answers == ["live"] * 40
    finally:
        RELEASE.set()


def test_an_invocation_past_the_timeout_is_a_model_error_botocore_does_not_retry(tmp_path: Any) -> None:
    # Before: no server-side limit: the caller waited as long as the model took, and with a client read
    # timeout botocore retried the call, running the model once per attempt.
    from agent_release.pipelines.runtime.server import RuntimeServer

    blocked = ModelSpec(kind="python", options={"class_path": f"{__name__}:BlockedModel"})
    backend = LocalBackend(tmp_path)
    since = time.time()
    backend.deploy_endpoint("slowpoke", [variant("fine", 1.0), variant("stuck", 0.0, model=blocked)])
    RELEASE.clear()
    try:
        with RuntimeServer(tmp_path, invocation_timeout_s=0.5) as server:
            retrying = runtime_client(server.url, attempts=3, read_timeout=20)
            for stream in (False, True):
                with pytest.raises(retrying.exceptions.ModelError) as caught:
                    if stream:
                        retrying.invoke_endpoint_with_response_stream(
                            EndpointName="slowpoke", Body=BODY, TargetVariant="stuck"
                        )
                    else:
                        invoke(retrying, "slowpoke", TargetVariant="stuck")
                error = caught.value.response
                assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
                assert error["ResponseMetadata"]["RetryAttempts"] == 0
                # SageMaker's own timeout names no container status: OriginalStatusCode 0 (before: 504, which
                # the evaluation's retry policy retried as a model's 5xx, as it never would on AWS).
                assert error["OriginalStatusCode"] == 0
                assert error["Error"]["Message"].startswith("Received server error (0) from model")
                assert "timed out" in error["Error"]["Message"]
            assert invoke(retrying, "slowpoke", TargetVariant="fine")[0] == "fine"
            wait_until(lambda: backend.variant_metrics("slowpoke", since)["stuck"].errors_5xx == 2)
    finally:
        RELEASE.set()
        backend.close()


def test_every_answer_names_its_request_id(client: Any) -> None:
    response = client.invoke_endpoint(EndpointName="split", Body=BODY, ContentType="application/json")
    assert response["ResponseMetadata"]["RequestId"]
    streamed = client.invoke_endpoint_with_response_stream(EndpointName="split", Body=BODY)
    assert streamed["ResponseMetadata"]["RequestId"]
    assert streamed["ResponseMetadata"]["RequestId"] != response["ResponseMetadata"]["RequestId"]
