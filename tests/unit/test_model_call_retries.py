"""ModelCallRetries: which failures of a variant's model an evaluation retries, through the real runtime.

A SageMaker model that fails answers ``ModelError`` (424) carrying its own status, which botocore treats as
final. The evaluation retries it when the model's status says "try again": 5xx, and 429 (an LLM server
behind an ``openai_compatible`` variant rate-limiting), as ``evaluate.max_retries`` promises for
throttling. A 4xx that is the request's fault is not retried.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest
from _shared.loopback import serve
from botocore.exceptions import ClientError

from agent_release.agents.builder import ModelBinding, build_agent, build_model
from agent_release.pipelines.local_backend import LocalBackend
from agent_release.steps.backend import ModelSpec, VariantSpec
from agent_release.steps.eval_harness import ModelCallRetries

ANSWER = {
    "id": "c",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
}


class _FailingFirst(BaseHTTPRequestHandler):
    """An OpenAI-compatible upstream whose first answer per scenario is the status the user's text names."""

    calls: ClassVar[dict[str, int]] = {}
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        scenario = next(m for m in body["messages"] if m["role"] == "user")["content"]
        scenario = scenario if isinstance(scenario, str) else "".join(p.get("text", "") for p in scenario)
        with self.lock:
            self.calls[scenario] = self.calls.get(scenario, 0) + 1
            first = self.calls[scenario] == 1
        status = int(scenario.split("-")[1]) if first else 200
        payload = json.dumps(ANSWER if status == 200 else {"error": {"message": "slow down", "code": status}})
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve(_FailingFirst) as upstream:
        backend = LocalBackend(tmp_path_factory.mktemp("state"))
        spec = ModelSpec(kind="openai_compatible", options={"base_url": upstream})
        backend.deploy_endpoint("llm", [VariantSpec(name="v", model=spec, initial_weight=1.0)])
        try:
            yield backend.start_runtime()
        finally:
            backend.close()


def _ask(url: str, monkeypatch: pytest.MonkeyPatch, scenario: str) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    model = build_model(ModelBinding(endpoint_name="llm", variant="v", stream=False, max_attempts=3))
    assert ModelCallRetries(max_attempts=3, base_delay_s=0.01).attach(model).attached
    return str(build_agent(model, "Answer.", [])(scenario))


@pytest.mark.parametrize("scenario", ["first-429", "first-503"])
def test_a_model_that_throttles_or_fails_once_is_retried(
    runtime: str, monkeypatch: pytest.MonkeyPatch, scenario: str
) -> None:
    # An LLM server's 429 used to end the case as an error row: only 5xx original statuses were retried.
    assert _ask(runtime, monkeypatch, scenario).strip() == "ok"
    assert _FailingFirst.calls[scenario] == 2


def test_a_request_the_model_refuses_is_not_retried(runtime: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ClientError, match="ModelError"):
        _ask(runtime, monkeypatch, "first-400")
    assert _FailingFirst.calls["first-400"] == 1
