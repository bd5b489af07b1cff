"""A Strands Agent with SageMakerAIModel completes a tool round trip through the local endpoint runtime."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agent_release.pipelines.local_backend import LocalBackend
from agent_release.steps.backend import ModelSpec, VariantSpec

ORDERS = {"A17": "shipped", "B42": "delayed"}


class OrderLookupModel:
    """Calls ``lookup_order`` for the order id in the user's message; answers from the tool result."""

    def __init__(self, variant: str) -> None:
        self.variant = variant

    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        messages = request["messages"]
        last = messages[-1]
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        base = {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": self.variant}
        if last["role"] == "tool":
            message = {"role": "assistant", "content": f"[{self.variant}] order status: {last['content']}"}
            return {
                **base,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": usage,
            }
        text = last["content"] if isinstance(last["content"], str) else last["content"][0]["text"]
        order_id = text.split()[-1].strip("?")
        assert [t["function"]["name"] for t in request.get("tools", [])] == ["lookup_order"]
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "lookup_order", "arguments": json.dumps({"order_id": order_id})},
        }
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return {
            **base,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            "usage": usage,
        }


@pytest.fixture
def runtime_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    backend = LocalBackend(tmp_path)
    variants = [
        VariantSpec(
            name=name,
            model=ModelSpec(
                kind="python",
                options={"class_path": f"{__name__}:OrderLookupModel", "init": {"variant": name}},
            ),
            initial_weight=weight,
        )
        for name, weight in (("champion", 1.0), ("challenger", 0.0))
    ]
    backend.deploy_endpoint("support", variants)
    url = backend.start_runtime()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": url,
    }.items():
        monkeypatch.setenv(key, value)
    try:
        yield url
    finally:
        backend.close()


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize(("target", "order_id"), [(None, "A17"), ("challenger", "B42")])
def test_agent_tool_round_trip(runtime_url: str, stream: bool, target: str | None, order_id: str) -> None:
    from strands import Agent, tool
    from strands.models.sagemaker import SageMakerAIModel

    looked_up: list[str] = []

    @tool
    def lookup_order(order_id: str) -> str:
        """Look up the shipping status of an order.

        Args:
            order_id: The order identifier.
        """
        looked_up.append(order_id)
        return ORDERS[order_id]

    endpoint_config: dict[str, Any] = {"endpoint_name": "support", "region_name": "us-east-1"}
    if target:
        endpoint_config["target_variant"] = target
    model = SageMakerAIModel(
        endpoint_config=endpoint_config, payload_config={"max_tokens": 64, "stream": stream}
    )
    agent = Agent(model=model, tools=[lookup_order], callback_handler=None)

    result = agent(f"Where is order {order_id}?")

    assert looked_up == [order_id]
    variant = target or "champion"  # weight 1.0 / 0.0: without a target everything goes to the champion
    assert str(result).strip() == f"[{variant}] order status: {ORDERS[order_id]}"
    assert result.stop_reason == "end_turn"
    assert result.metrics.cycle_count == 2
    assert result.metrics.accumulated_usage["totalTokens"] == 30
