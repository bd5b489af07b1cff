"""The part of Strands' ``Model`` interface a scripted test model does not script: its config.

A test model derives from :class:`ScriptedModelBase` and writes ``stream``; mixed with Strands' ``Model``
(``type("X", (MyModel, Model), {})``) it is a model an ``Agent`` accepts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any


class ScriptedModelBase:
    """Config held in a dict; structured output not supported."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config: dict[str, Any] = dict(config or {})

    def update_config(self, **kw: Any) -> None:
        self.config.update(kw)

    def get_config(self) -> dict[str, Any]:
        return self.config

    async def structured_output(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError
        yield
