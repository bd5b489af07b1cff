"""Tracking set-up and agent tracing: one Strands agent call through the local SageMaker runtime is one
MLflow trace with AGENT, CHAT_MODEL and TOOL spans and token usage, linked to its agent version."""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agent_release.pipelines.tracking import configure_tracking, resolve_tracking_uri, traced_as
from agent_release.steps.register_agents import register_agents
from agent_release.steps.register_agents_config import AgentConfig, InferenceConfig

REPO = Path(__file__).resolve().parents[2]
ENDPOINT = "support-agent"
ORDER_ID = re.compile(r"ORD-\d+")


class LookupThenAnswerModel:
    """A chat-completions model served by the local runtime: asks for ``lookup_order`` on the order id in the
    user's message, then answers from the tool's result. Records the usage it reports."""

    reported_usage: ClassVar[list[dict[str, int]]] = []
    _lock = threading.Lock()

    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        messages = list(request["messages"])
        tool_results = [_text(m.get("content")) for m in messages if m.get("role") == "tool"]
        user_text = " ".join(_text(m.get("content")) for m in messages if m.get("role") == "user")
        usage = {
            "prompt_tokens": sum(len(_text(m.get("content")).split()) for m in messages),
            "completion_tokens": 0,
        }
        if not tool_results:
            match = ORDER_ID.search(user_text)
            order_id = match.group(0) if match else "ORD-0"
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call-1",
                        "type": "function",
                        "function": {"name": "lookup_order", "arguments": json.dumps({"order_id": order_id})},
                    }
                ],
            }
            finish, usage["completion_tokens"] = "tool_calls", 9
        else:
            status = re.search(r'"status":\s*"([a-z_]+)"', tool_results[-1])
            text = f"Your order is {status.group(1) if status else 'unknown'}."
            message = {"role": "assistant", "content": text}
            finish, usage["completion_tokens"] = "stop", len(text.split())
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        with self._lock:
            self.reported_usage.append(usage)
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": "lookup-then-answer",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage,
        }


def _text(content: Any) -> str:
    """Text of an OpenAI message content (a string or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in content)


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its schema migrated once (migrations take seconds; copies do not)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_uri(tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh SQLite tracking store; MLflow's global URIs and the environment are restored afterwards."""
    import mlflow

    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACE_PROPAGATE_TO_OTEL_CONTEXT"):
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "state").mkdir()
    shutil.copyfile(empty_store, tmp_path / "state" / "mlflow.db")
    yield f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}"
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    mlflow.set_registry_uri(None)  # type: ignore[arg-type]


def test_resolve_tracking_uri_prefers_config_then_environment_then_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:///elsewhere.db", tmp_path) == "sqlite:///elsewhere.db"


def test_configure_tracking_sets_environment_experiment_artifacts_and_one_autolog_processor(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    import mlflow
    from mlflow.strands.autolog import StrandsSpanProcessor
    from opentelemetry.trace import get_tracer_provider

    monkeypatch.setenv("MLFLOW_TRACE_PROPAGATE_TO_OTEL_CONTEXT", "false")
    monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "7")  # a user's own choice is kept

    first = configure_tracking(tracking_uri, "tracing-test")
    second = configure_tracking(tracking_uri, "tracing-test")

    assert first == second
    assert os.environ["MLFLOW_TRACE_PROPAGATE_TO_OTEL_CONTEXT"] == "true"
    assert os.environ["MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION"] == "true"
    assert os.environ["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"] == "7"
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert mlflow.get_tracking_uri() == tracking_uri == mlflow.get_registry_uri()
    experiment = mlflow.get_experiment(first)
    assert experiment.name == "tracing-test"
    assert experiment.artifact_location == (tmp_path / "state" / "artifacts" / "mlflow").resolve().as_uri()
    processors = get_tracer_provider()._active_span_processor._span_processors  # type: ignore[attr-defined]
    assert sum(isinstance(p, StrandsSpanProcessor) for p in processors) == 1

    # A deleted experiment of that name comes back rather than failing the run.
    mlflow.delete_experiment(first)
    assert configure_tracking(tracking_uri, "tracing-test") == first
    assert mlflow.get_experiment(first).lifecycle_stage == "active"


def test_one_agent_call_is_one_trace_with_agent_chat_and_tool_spans_linked_to_its_agent_version(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow.entities import SpanType
    from mlflow.tracing.constant import SpanAttributeKey, TraceMetadataKey

    from agent_release.agents.builder import ModelBinding, build_agent, build_model, load_toolset
    from agent_release.agents.support.data import SupportData
    from agent_release.pipelines.local_backend import LocalBackend
    from agent_release.steps.backend import ApprovalStatus, ModelSpec
    from agent_release.steps.deploy_variants import DeployConfig, deploy_variants
    from agent_release.steps.live_traffic import AgentConversations

    experiment_id = configure_tracking(tracking_uri, "tracing-test")
    data_dir = REPO / "datasets" / "support"
    order_id = sorted(SupportData.load(data_dir).orders)[0]
    LookupThenAnswerModel.reported_usage.clear()

    backend = LocalBackend(tmp_path / "state")
    spec = ModelSpec(kind="python", options={"class_path": f"{__name__}:LookupThenAnswerModel"})
    backend.ensure_package_group("support-agent")
    champion_package = backend.register_package("support-agent", spec)
    backend.update_approval(champion_package.arn, ApprovalStatus.APPROVED, "test: first release")
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
        config = AgentConfig(
            system_prompt="Answer order questions.",
            tools=["lookup_order"],
            inference=InferenceConfig(max_tokens=64),
        )
        report = register_agents(
            config, deployed, tracking_uri=tracking_uri, experiment="tracing-test", base_dir=REPO
        )
        challenger = report.for_role("challenger")
        champion = report.for_role("champion")
        assert challenger is not None and champion is not None
        model = build_model(
            ModelBinding(
                endpoint_name=ENDPOINT, variant=challenger.variant, max_tokens=challenger.inference.max_tokens
            )
        )
        agent = build_agent(
            model, "Answer order questions.", load_toolset("support", data_dir, challenger.tool_names)
        )
        with traced_as(challenger.logged_model_id):
            result = agent(f"Where is my order {order_id}?")
        reported = list(LookupThenAnswerModel.reported_usage)  # the challenger's calls only
        # A replayed live conversation (the canary's traffic) names the agent version that answered it; it
        # used to carry no model id at all.
        conversations = AgentConversations(
            ENDPOINT,
            "Answer order questions.",
            load_toolset("support", data_dir, champion.tool_names),
            inference=InferenceConfig(max_tokens=64),
            logged_models={a.variant: a.logged_model_id for a in report.agents},
        )
        conversations(champion.variant, f"Where is my order {order_id}?")
    finally:
        backend.stop_runtime()
        backend.close()

    assert str(result).strip().startswith("Your order is ")
    traces = mlflow.search_traces(locations=[experiment_id], return_type="list", flush=True)
    assert len(traces) == 2
    linked = mlflow.search_traces(
        locations=[experiment_id], model_id=challenger.logged_model_id, return_type="list"
    )
    assert len(linked) == 1
    trace = linked[0]
    assert trace.info.request_metadata[TraceMetadataKey.MODEL_ID] == challenger.logged_model_id
    (live,) = mlflow.search_traces(
        locations=[experiment_id], model_id=champion.logged_model_id, return_type="list"
    )
    assert live.info.trace_id != trace.info.trace_id
    assert any(span.attributes.get("live_variant") == champion.variant for span in live.data.spans)

    spans_by_type: dict[str, list[Any]] = {}
    for span in trace.data.spans:
        spans_by_type.setdefault(str(span.span_type), []).append(span)
    assert len(spans_by_type[SpanType.AGENT]) == 1
    assert len(spans_by_type[SpanType.CHAT_MODEL]) == 2  # ask for the tool, then answer
    assert [s.name for s in spans_by_type[SpanType.TOOL]] == ["execute_tool lookup_order"]
    tool_span = spans_by_type[SpanType.TOOL][0]
    assert order_id in json.dumps(tool_span.inputs)
    root = trace.data.spans[0]
    assert root.parent_id is None and root.span_type == SpanType.AGENT

    # Token usage: per model call on the CHAT_MODEL spans, and summed on the trace, equal to what the
    # served model reported over the wire.
    assert len(reported) == 2
    per_call = sorted(
        s.get_attribute(SpanAttributeKey.CHAT_USAGE)["input_tokens"]
        for s in spans_by_type[SpanType.CHAT_MODEL]
    )
    assert per_call == sorted(u["prompt_tokens"] for u in reported)
    usage = trace.info.token_usage
    assert usage is not None
    assert usage["input_tokens"] == sum(u["prompt_tokens"] for u in reported)
    assert usage["output_tokens"] == sum(u["completion_tokens"] for u in reported)


def test_a_store_error_mlflow_raises_is_not_also_logged_with_its_traceback(
    tracking_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A locked database used to print MLflow's "SQLAlchemy database error" with its traceback (twice, 75
    # lines) before the CLI's one-line error. The store raises that error anyway; it is logged at DEBUG now.
    import logging
    import sqlite3

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    experiment_id = configure_tracking(tracking_uri, "store-errors")
    run_id = MlflowClient(tracking_uri=tracking_uri).create_run(experiment_id).info.run_id
    with sqlite3.connect(tracking_uri.removeprefix("sqlite:///")) as db:  # an OperationalError at once
        db.execute("DROP TABLE tags")
    with caplog.at_level(logging.DEBUG, logger="mlflow.store.db.utils"), pytest.raises(MlflowException):
        MlflowClient(tracking_uri=tracking_uri).set_tag(run_id, "k", "v")
    store_records = [r for r in caplog.records if r.name == "mlflow.store.db.utils"]
    assert [r.levelname for r in store_records] == ["DEBUG"]
    assert store_records[0].getMessage().startswith("SQLAlchemy database error")


def test_span_costs_are_priced_from_the_bundled_catalog_without_a_network_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Unset, MLflow fetches its model catalog from github.com the first time a stored span has a model name:
    # an outbound call from every run, or about 7 s of retries on an offline machine.
    from mlflow.utils import providers

    from agent_release.steps.agent_tracing import apply_tracing_environment

    monkeypatch.delenv("MLFLOW_MODEL_CATALOG_URI", raising=False)
    monkeypatch.setattr(providers, "_remote_cache", None)  # nothing cached from an earlier test
    fetched: list[str] = []
    monkeypatch.setattr(providers, "_fetch_http_provider", lambda provider, url: fetched.append(url))

    apply_tracing_environment()
    providers.cost_per_token(
        model="gpt-4o-mini", prompt_tokens=10, completion_tokens=5, custom_llm_provider="openai"
    )
    assert fetched == []

    monkeypatch.setenv("MLFLOW_MODEL_CATALOG_URI", "https://catalog.example/latest")  # a user's own wins
    monkeypatch.setattr(providers, "_remote_cache", None)
    apply_tracing_environment()
    providers.cost_per_token(
        model="gpt-4o-mini", prompt_tokens=10, completion_tokens=5, custom_llm_provider="openai"
    )
    assert fetched and fetched[0].startswith("https://catalog.example/latest/")
