"""An upstream that echoes the request's Authorization header in its error never puts the API key into the
runtime's error (stored in evaluation rows and traces, shown in the report). Security review, session 21."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from agent_release.pipelines.runtime.model_loader import (
    ModelInvocationError,
    OpenAICompatibleModel,
    redact_secret,
)

KEY = "sk-test-0123456789abcdefghijklmnopqrstuvwxyz"
REQUEST = {"messages": [{"role": "user", "content": "hi"}]}


def _echo_401(request: httpx.Request) -> httpx.Response:
    # As a debugging proxy or a misconfigured gateway does: the refused request, headers and all.
    return httpx.Response(401, json={"error": "unauthorized", "request_headers": dict(request.headers)})


def _echo_cut(request: httpx.Request) -> httpx.Response:
    # The error text quotes the first 500 characters: the key is cut in the middle.
    return httpx.Response(403, text="x" * 470 + request.headers["authorization"])


def _echo_200_error(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"error": {"message": f"key {request.headers['authorization']} revoked"}})


def _model(monkeypatch: pytest.MonkeyPatch, handler: Callable[[httpx.Request], httpx.Response]) -> Any:
    monkeypatch.setenv("UPSTREAM_TEST_KEY", KEY)
    model = OpenAICompatibleModel({"base_url": "http://upstream.test", "api_key_env": "UPSTREAM_TEST_KEY"})
    model._client = httpx.AsyncClient(transport=httpx.MockTransport(handler), headers=model._client.headers)
    return model


async def _stream(model: OpenAICompatibleModel) -> None:
    async for _ in model.stream(REQUEST):
        pass


@pytest.mark.parametrize("handler", [_echo_401, _echo_cut, _echo_200_error])
@pytest.mark.parametrize("streamed", [False, True])
def test_an_echoed_key_is_taken_out_of_the_error(
    monkeypatch: pytest.MonkeyPatch, handler: Callable[[httpx.Request], httpx.Response], streamed: bool
) -> None:
    model = _model(monkeypatch, handler)
    with pytest.raises(ModelInvocationError) as caught:
        asyncio.run(_stream(model) if streamed else model.complete(REQUEST))
    message = str(caught.value)
    assert KEY[:8] not in message and KEY[:8] not in json.dumps(caught.value.message)
    assert "***" in message
    assert message.startswith("upstream http://upstream.test/v1/chat/completions")


def test_redact_secret_keeps_text_without_the_key() -> None:
    assert redact_secret("answered 401: bad key", KEY) == "answered 401: bad key"
    assert redact_secret(f"a {KEY} b {KEY[:20]}", KEY) == "a *** b ***"
    assert redact_secret("sk-te is short", KEY) == "sk-te is short"
    assert redact_secret("anything", None) == "anything"
