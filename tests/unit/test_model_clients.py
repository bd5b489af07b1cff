"""Models share botocore's parsed service data, and nothing else: each client reads the environment itself."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

import pytest
from _shared.loopback import serve
from botocore.exceptions import ClientError

from agent_release.agents.builder import ModelBinding, build_model


def _binding(region: str = "us-east-1") -> ModelBinding:
    return ModelBinding(endpoint_name="support", variant="challenger", region=region)


def test_models_share_one_data_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    first, second = build_model(_binding()), build_model(_binding("eu-west-1"))
    assert first.client is not second.client
    assert first.client._loader is second.client._loader  # parsed once per process
    assert (first.client.meta.region_name, second.client.meta.region_name) == ("us-east-1", "eu-west-1")
    assert first.client.meta.service_model.service_name == "sagemaker-runtime"


def test_each_model_reads_credentials_and_endpoint_when_it_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "first-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "first-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "http://127.0.0.1:1111")
    first = build_model(_binding())
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "second-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "second-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "http://127.0.0.1:2222")
    second = build_model(_binding())
    assert first.client._request_signer._credentials.access_key == "first-key"
    assert second.client._request_signer._credentials.access_key == "second-key"
    assert first.client.meta.endpoint_url == "http://127.0.0.1:1111"
    assert second.client.meta.endpoint_url == "http://127.0.0.1:2222"


def test_a_busy_endpoint_gets_max_attempts_calls_in_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """``max_attempts`` counts the first call: 2 means one retry, not two (botocore's own key counts retries)."""
    calls: list[str] = []

    class Busy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            calls.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b'{"message": "busy"}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    monkeypatch.setattr("time.sleep", lambda _s: None)  # botocore's backoff between attempts
    with serve(Busy) as url:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", url)
        model = build_model(ModelBinding(endpoint_name="support", variant="challenger", max_attempts=2))
        with pytest.raises(ClientError) as raised:
            model.client.invoke_endpoint(EndpointName="support", Body=b"{}", ContentType="application/json")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert len(calls) == 2


def test_the_client_keeps_the_configured_retries_and_timeouts() -> None:
    model = build_model(
        ModelBinding(endpoint_name="support", variant="challenger", read_timeout_s=7.0, max_attempts=3)
    )
    config = model.client.meta.config
    assert config.read_timeout == 7.0
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}  # the first call and two retries
    assert "strands-agents" in (config.user_agent_extra or "")
