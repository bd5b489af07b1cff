"""Shared pieces of the evaluation end-to-end tests and the trace writer drills: a python-kind model served
by the local runtime, the endpoint, MLflow tracking in a temporary directory, and a registration of
LoggedModels."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_release.pipelines.local_backend import LocalBackend
from agent_release.steps.backend import FaultSpec, ModelSpec, VariantSpec
from agent_release.steps.register_agents_config import InferenceConfig
from agent_release.steps.registration_records import RegisteredAgent, RegistrationReport

ENDPOINT = "support-eval"


class LookupModel:
    """Chat-completions model: asks ``lookup_order`` for an ``ORD-`` id in the question, else answers directly."""

    def __init__(self, variant: str = "v") -> None:
        self.variant = variant

    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        messages = request["messages"]
        last = messages[-1]
        usage = {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48}
        base = {"id": "chatcmpl-eval", "object": "chat.completion", "created": 0, "model": self.variant}
        text = last["content"] if isinstance(last["content"], str) else last["content"][0]["text"]
        words = [w.strip("?.,!") for w in str(text).split()]
        order = next((w for w in words if w.startswith("ORD-")), None)
        if last["role"] == "tool" or order is None or not request.get("tools"):
            message = {"role": "assistant", "content": f"Order status: shipped. ({self.variant})"}
            return {
                **base,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            }
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "lookup_order", "arguments": json.dumps({"order_id": order})},
        }
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return {
            **base,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            "usage": usage,
        }


def lookup_tools() -> list[Any]:
    """One Strands tool, ``lookup_order``, answering from a fixed table."""
    from strands import tool

    @tool
    def lookup_order(order_id: str) -> dict[str, str]:
        """Status of an order by its id."""
        return {"order_id": order_id, "status": "shipped"}

    return [lookup_order]


def make_cases(n: int, *, with_tool: bool = True, clusters: int = 10) -> list[dict[str, Any]]:
    """``n`` golden-schema cases; with ``with_tool`` each asks about an order (a tool round trip)."""
    cases = []
    for i in range(n):
        order = f"ORD-{10000 + i}"
        cases.append(
            {
                "id": f"E-{i:04d}",
                "input": f"Where is my order {order}?" if with_tool else f"What is your refund window? #{i}",
                "expected_tool_calls": [{"name": "lookup_order", "arguments": {"order_id": order}}]
                if with_tool
                else [],
                "expected_facts": ["shipped"],
                "cluster": f"c{i % clusters}",
                "tags": {"intent": "order_status" if with_tool else "kb_question", "difficulty": "easy"},
            }
        )
    return cases


@dataclass
class EvalWorld:
    backend: LocalBackend
    url: str
    experiment: str


def start_world(state_dir: Path, faults: Mapping[str, FaultSpec], class_path: str) -> EvalWorld:
    """Deploy one variant per ``faults`` entry (python-kind ``class_path``) and start the runtime."""
    import mlflow

    backend = LocalBackend(state_dir)
    variants = [
        VariantSpec(
            name=name,
            model=ModelSpec(kind="python", options={"class_path": class_path, "init": {"variant": name}}),
            initial_weight=1.0,
            faults=fault,
        )
        for name, fault in faults.items()
    ]
    backend.deploy_endpoint(ENDPOINT, variants)
    url = backend.start_runtime()
    mlflow.set_tracking_uri(f"sqlite:///{state_dir / 'mlflow.db'}")
    # An explicit artifact location: MLflow's default for a database store is ./mlruns in the working directory.
    mlflow.create_experiment("eval-e2e", artifact_location=(state_dir / "artifacts").as_uri())
    mlflow.strands.autolog()
    return EvalWorld(backend, url, "eval-e2e")


@contextmanager
def challenger_world(state_dir: Path, monkeypatch: Any, added_latency_ms: float) -> Iterator[EvalWorld]:
    """:func:`start_world` with one ``challenger`` variant of :class:`LookupModel`, ``added_latency_ms`` per
    call, the AWS variables pointing at it (through pytest's ``monkeypatch``); stopped afterwards."""
    import mlflow

    world = start_world(
        state_dir,
        {"challenger": FaultSpec(added_latency_ms=added_latency_ms)},
        "_shared.eval_world:LookupModel",
    )
    for key, value in aws_env(world.url).items():
        monkeypatch.setenv(key, value)
    try:
        yield world
    finally:
        world.backend.close()
        mlflow.set_tracking_uri(None)


@contextmanager
def traced_store(tmp_path: Path, monkeypatch: Any, experiment: str) -> Iterator[None]:
    """A SQLite tracking store under ``tmp_path`` with ``experiment`` active and Strands autologged, traced as
    in an evaluation (Strands' spans nest in the case's trace); the tracking URI is reset afterwards."""
    import mlflow

    from agent_release.steps.agent_tracing import TRACING_ENV

    for key, value in TRACING_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # An explicit artifact location: MLflow's default for a database store is ./mlruns in the working dir.
    mlflow.set_experiment(
        experiment_id=mlflow.create_experiment(
            experiment, artifact_location=(tmp_path / "artifacts").as_uri()
        )
    )
    mlflow.strands.autolog()
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)


def aws_env(url: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": url,
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "32",
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "64",
    }


def register(experiment: str, variants: Mapping[str, str], *, stream: bool = False) -> RegistrationReport:
    """A RegistrationReport with one MLflow LoggedModel per variant (variant name -> role)."""
    import mlflow

    experiment_id = mlflow.set_experiment(experiment).experiment_id
    agents = []
    for variant, role in variants.items():
        model = mlflow.create_external_model(name=f"support-agent-{variant}")
        agents.append(
            RegisteredAgent(
                variant=variant,
                role=role,
                endpoint_name=ENDPOINT,
                package_arn=None,
                package_version=None,  # type: ignore[arg-type]
                logged_model_id=model.model_id,
                prompt_uri="prompts:/support/1",
                registered_model_name="support-agent",
                registered_model_version=None,
                tool_names=("lookup_order",),
                tools_hash="h",
                inference=InferenceConfig(stream=stream, max_tokens=64),
            )
        )
    return RegistrationReport(
        tracking_uri=mlflow.get_tracking_uri(),
        experiment_id=experiment_id,
        agents=tuple(agents),
        changed=True,
    )
