"""Load a saved demo model for serving: ``load_demo_model(artifact_uri)``.

The local endpoint runtime calls this for variants of kind ``demo``; ``artifact_uri`` is the path of the
joblib file written by the training step, as a plain path or a ``file://`` URI.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from agent_release.agents.chat_model import ChatCompletionModel
from agent_release.agents.demo_model.chat import SupportChatModel
from agent_release.agents.demo_model.model import load_trained_model


def artifact_path(artifact_uri: str) -> Path:
    """Local path of ``artifact_uri`` (plain path or ``file://``); raises ``ValueError`` for other schemes."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme in ("", "local"):
        return Path(artifact_uri.removeprefix("local:"))
    raise ValueError(f"demo models load from local files only, not {artifact_uri}")


def load_demo_model(artifact_uri: str) -> ChatCompletionModel:
    """The chat-completions model saved at ``artifact_uri`` (raises ``ValueError`` when it cannot load)."""
    path = artifact_path(artifact_uri)
    if not path.is_file():
        raise ValueError(f"demo model artifact not found: {path}")
    trained = load_trained_model(path)
    name = f"demo-support-{str(trained.info.get('data_sha256', ''))[:8]}-s{trained.info.get('seed', '')}"
    return SupportChatModel(trained, name=name)
