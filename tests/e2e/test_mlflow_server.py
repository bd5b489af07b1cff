"""Registration and tracing against a real ``mlflow server`` over HTTP, as a team's shared server is used.

The server runs as a subprocess on 127.0.0.1 with a SQLite backend store and proxied artifacts in tmp_path;
agents are served by the local SageMaker runtime. The server is always stopped, even when a test fails.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from _shared.mlflow_server import free_port, start_mlflow_server, stop_server

REPO = Path(__file__).resolve().parents[2]
ENDPOINT = "support-agent"
pytestmark = pytest.mark.slow


class LookupThenAnswerModel:
    """Served by the local runtime: requests ``lookup_order`` for the order id in the user's message, then
    answers with the status the tool returned."""

    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        messages = list(request["messages"])
        tool_results = [str(m.get("content")) for m in messages if m.get("role") == "tool"]
        user_text = " ".join(str(m.get("content")) for m in messages if m.get("role") == "user")
        if not tool_results:
            match = re.search(r"ORD-\d+", user_text)
            arguments = json.dumps({"order_id": match.group(0) if match else "ORD-0"})
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "lookup_order", "arguments": arguments},
                    }
                ],
            }
            finish = "tool_calls"
        else:
            status = re.search(r"\\?\"status\\?\":\s*\\?\"([a-z_]+)", tool_results[-1])
            message = {
                "role": "assistant",
                "content": f"Your order is {status.group(1) if status else 'unknown'}.",
            }
            finish = "stop"
        return {
            "id": "chatcmpl-e2e",
            "object": "chat.completion",
            "created": 0,
            "model": "lookup-then-answer",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
        }


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """URL of a fresh ``mlflow server`` subprocess; stopped (process group) on teardown."""
    port = free_port()
    process = start_mlflow_server(port, tmp_path / "server")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(process)


@pytest.fixture
def restore_mlflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo configure_tracking's global URIs and environment after the test."""
    import mlflow

    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACE_PROPAGATE_TO_OTEL_CONTEXT"):
        monkeypatch.delenv(key, raising=False)
    yield
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    mlflow.set_registry_uri(None)  # type: ignore[arg-type]


def test_register_and_trace_against_a_tracking_server(
    mlflow_server: str, restore_mlflow: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import SpanType
    from mlflow.tracing.constant import TraceMetadataKey

    from agent_release.agents.builder import ModelBinding, build_agent, build_model, load_toolset
    from agent_release.agents.support.data import SupportData
    from agent_release.pipelines.local_backend import LocalBackend
    from agent_release.pipelines.tracking import configure_tracking, traced_as
    from agent_release.steps.backend import ApprovalStatus, ModelSpec
    from agent_release.steps.deploy_variants import DeployConfig, deploy_variants
    from agent_release.steps.register_agents import register_agents
    from agent_release.steps.register_agents_config import AgentConfig

    experiment_id = configure_tracking(mlflow_server, "e2e-server")
    data_dir = REPO / "datasets" / "support"
    order_id = sorted(SupportData.load(data_dir).orders)[0]

    backend = LocalBackend(tmp_path / "state")
    spec = ModelSpec(kind="python", options={"class_path": f"{__name__}:LookupThenAnswerModel"})
    backend.ensure_package_group("support-agent")
    first = backend.register_package("support-agent", spec)
    backend.update_approval(first.arn, ApprovalStatus.APPROVED, "test: first release")
    backend.register_package("support-agent", spec)
    url = backend.start_runtime()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        deployed = deploy_variants(
            DeployConfig(endpoint_name=ENDPOINT, package_group="support-agent"), backend
        )
        config = AgentConfig(system_prompt="Answer order questions.", tools=["lookup_order"])
        report = register_agents(
            config, deployed, tracking_uri=mlflow_server, experiment="e2e-server", base_dir=REPO
        )
        again = register_agents(
            config, deployed, tracking_uri=mlflow_server, experiment="e2e-server", base_dir=REPO
        )
        challenger = report.for_role("challenger")
        assert challenger is not None
        model = build_model(ModelBinding(endpoint_name=ENDPOINT, variant=challenger.variant))
        agent = build_agent(
            model, "Answer order questions.", load_toolset("support", data_dir, ["lookup_order"])
        )
        with traced_as(challenger.logged_model_id):
            answer = str(agent(f"Where is my order {order_id}?"))
    finally:
        backend.stop_runtime()
        backend.close()

    assert report.changed is True and again.changed is False
    assert [a.logged_model_id for a in again.agents] == [a.logged_model_id for a in report.agents]

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    aliases = client.get_registered_model("support-agent").aliases
    assert set(aliases) == {"champion", "challenger"}
    version = client.get_model_version_by_alias("support-agent", "challenger")
    assert version.source == f"models:/{challenger.logged_model_id}"
    assert client.get_prompt_version("support-agent-system-prompt", 1).template == "Answer order questions."

    assert answer.startswith("Your order is ") and "unknown" not in answer
    traces = mlflow.search_traces(locations=[experiment_id], return_type="list", flush=True)
    assert len(traces) == 1
    trace = traces[0]
    assert trace.info.request_metadata[TraceMetadataKey.MODEL_ID] == challenger.logged_model_id
    types = [str(s.span_type) for s in trace.data.spans]
    assert types.count(SpanType.AGENT) == 1 and types.count(SpanType.TOOL) == 1
    assert types.count(SpanType.CHAT_MODEL) == 2
    assert trace.info.token_usage is not None
    assert trace.info.token_usage["input_tokens"] == 40 and trace.info.token_usage["output_tokens"] == 10
