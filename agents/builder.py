"""Build the agent of one variant: system prompt + tools + a ``SageMakerAIModel`` bound to endpoint and variant.

The same code path runs against the local runtime and against AWS: nothing here knows which. The local
runtime is reached because the pipeline sets ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` (botocore's standard
per-service endpoint variable) before models are built.

Strands agents are not re-entrant and accumulate history, so callers build a fresh ``Agent`` per case or
conversation with :func:`build_agent`, sharing one model object (thread-safe) per variant.

Every model's client reads botocore's service data (the endpoint rules, the SageMaker Runtime model) through
one data loader shared by the process (:class:`SharedLoaderClients`), so only the first model of a process
pays to parse it from disk.

Usage::

    model = build_model(ModelBinding(endpoint_name="support-agent", variant="challenger"))
    agent = build_agent(model, system_prompt, tools)
    result = agent("Where is my order ORD-10427?")
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_release.agents.user_imports import call_user_factory, import_user_object

if TYPE_CHECKING:
    from botocore.config import Config
    from botocore.loaders import Loader
    from strands import Agent
    from strands.models.sagemaker import SageMakerAIModel


@dataclass(frozen=True)
class ModelBinding:
    """Where a variant's model lives and how it is called."""

    endpoint_name: str
    variant: str | None
    region: str = "us-east-1"
    max_tokens: int = 512
    temperature: float = 0.0
    stream: bool = True
    # Read timeout for one model call and botocore's own retry budget: ``max_attempts`` counts the first call
    # too (standard mode retries throttling and 5xx with exponential backoff; the evaluation counts the
    # retries it observes).
    read_timeout_s: float = 60.0
    max_attempts: int = 4
    session_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def environment_region(default: str = "us-east-1") -> str:
    """The AWS region this process's environment names (``AWS_DEFAULT_REGION``, then ``AWS_REGION``)."""
    return os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or default


@functools.cache
def _shared_data_loader() -> Loader:
    from botocore.loaders import create_loader

    return create_loader()


class SharedLoaderClients:
    """What ``SageMakerAIModel`` asks of its ``boto_session``: ``client(service_name=..., config=...)``.

    Without a session, Strands creates a new boto3 session per model, and each new session parses
    botocore's JSON service data from disk again (the endpoint rules alone are over 1 MB): ``build_model``
    took 42-211 ms on the 2-core machine, 17-19 ms with the shared loader (``docs/performance.md``). Here
    every client gets a fresh botocore session of its own, so credentials, region and endpoint URL
    (``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``) are resolved from the environment when the client is made,
    as boto3 would; only botocore's read-only data loader, which caches what it parsed, is shared.
    """

    def __init__(self, region: str) -> None:
        self.region = region

    def client(self, service_name: str, config: Config | None = None) -> Any:
        """A botocore client for ``service_name`` in this object's region."""
        from botocore.session import Session

        session = Session()
        session.register_component("data_loader", _shared_data_loader())
        return session.create_client(service_name, region_name=self.region, config=config)


def build_model(binding: ModelBinding) -> SageMakerAIModel:
    """A Strands ``SageMakerAIModel`` for ``binding`` (pinned to the variant when one is given)."""
    from botocore.config import Config
    from strands.models.sagemaker import SageMakerAIModel

    endpoint_config: dict[str, Any] = {"endpoint_name": binding.endpoint_name, "region_name": binding.region}
    if binding.variant:
        endpoint_config["target_variant"] = binding.variant
    additional: dict[str, Any] = {}
    if binding.session_id:
        additional["SessionId"] = binding.session_id
    if additional:
        endpoint_config["additional_args"] = additional
    payload_config: dict[str, Any] = {
        "max_tokens": binding.max_tokens,
        "temperature": binding.temperature,
        "stream": binding.stream,
        **binding.extra,
    }
    client_config = Config(
        read_timeout=binding.read_timeout_s,
        connect_timeout=5,
        # botocore's own "max_attempts" key counts retries only (3 would mean 4 calls).
        retries={"mode": "standard", "total_max_attempts": binding.max_attempts},
        max_pool_connections=64,
    )
    return SageMakerAIModel(
        endpoint_config=endpoint_config,  # type: ignore[arg-type]
        payload_config=payload_config,  # type: ignore[arg-type]
        boto_client_config=client_config,
        # Duck-typed: Strands calls only ``client(service_name=, config=)`` on it (see the class).
        boto_session=SharedLoaderClients(binding.region),  # type: ignore[arg-type]
    )


def build_agent(
    model: Any,
    system_prompt: str,
    tools: Sequence[Any],
    *,
    name: str = "support-agent",
    trace_attributes: dict[str, str] | None = None,
) -> Agent:
    """A fresh Strands ``Agent`` (no history, quiet console) around a shared ``model``."""
    from strands import Agent

    return Agent(
        model=model,
        system_prompt=system_prompt,
        tools=list(tools),
        name=name,
        callback_handler=None,
        trace_attributes=trace_attributes or {},
    )


ToolsetFactory = Callable[[Path], list[Any]]


def load_toolset(toolset: str, data_dir: Path, only: Sequence[str] | None = None) -> list[Any]:
    """Tools of a toolset: the built-in ``support`` or an import path ``pkg.module:factory``.

    Raises ``ValueError`` (one line) for an unknown toolset or tool name, and for a factory that is not a
    function or does not return a list of Strands tools.
    """
    if toolset == "support":
        from agent_release.agents.support.tools import support_tools

        factory: ToolsetFactory = support_tools
    else:
        module_name, _, attr = toolset.partition(":")
        if not module_name or not attr:
            raise ValueError(
                f"toolset '{toolset}' is neither 'support' nor an import path 'pkg.module:factory'"
            )
        factory = import_user_object("toolset", toolset)  # UserImportError is a ValueError
        if not callable(factory):
            raise ValueError(
                f"toolset '{toolset}' is a {type(factory).__name__}, not a function (data_dir) -> tools"
            )
    tools = call_user_factory("toolset", toolset, factory, data_dir)  # UserImportError is a ValueError
    # A factory that returns something else would only fail when the agent is registered, after deployment.
    if not isinstance(tools, list | tuple) or not all(hasattr(t, "tool_spec") for t in tools):
        got = type(tools).__name__ if not isinstance(tools, list | tuple) else "a list holding non-tools"
        raise ValueError(f"toolset '{toolset}' returned {got}, not a list of Strands tools")
    tools = list(tools)
    if only is None:
        return tools
    by_name = {tool_name(t): t for t in tools}
    unknown = [n for n in only if n not in by_name]
    if unknown:
        raise ValueError(
            f"unknown tool(s) {', '.join(unknown)}; the toolset has {', '.join(sorted(by_name))}"
        )
    return [by_name[n] for n in only]


def toolset_data_sha256(toolset: str, data_dir: Path) -> str:
    """SHA-256 over the data a toolset reads: each file's path relative to ``data_dir`` and its bytes.

    The built-in ``support`` toolset reads three named files (``support.data.DATA_FILES``; the golden sets
    that may share its directory are not tool data). A user toolset's reads are not known, so every regular
    file under ``data_dir`` counts, except hidden ones and MLflow's default stores: a ``tool_data_dir`` of
    ``.`` must not make each run's own state (``.agent-release/``, ``mlflow.db``) a new agent version. A
    missing directory or file hashes as absent (the toolset itself reports it when it loads). Call after
    :func:`load_toolset` succeeded.
    """
    import hashlib

    if toolset == "support":
        from agent_release.agents.support.data import DATA_FILES

        files = [data_dir / name for name in DATA_FILES]
    else:
        files = sorted(
            p for p in (data_dir.rglob("*") if data_dir.is_dir() else ()) if is_project_data(p, data_dir)
        )
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(data_dir).as_posix().encode("utf-8") + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<absent>")
        digest.update(b"\0")
    return digest.hexdigest()


# Never tool data, wherever they sit under a user toolset's data directory (state and caches of runs).
_NOT_TOOL_DATA = frozenset({"mlflow.db", "mlruns", "__pycache__"})


def is_project_data(path: Path, data_dir: Path) -> bool:
    """Whether ``path`` under ``data_dir`` is data a step may read: a file outside hidden parts (``.git``,
    ``.env``, ``.agent-release``) and MLflow's default stores (the tool-data hash and the SageMaker bundle
    both skip the rest: it is a run's own state, or secrets)."""
    parts = path.relative_to(data_dir).parts
    return path.is_file() and not any(p.startswith(".") or p in _NOT_TOOL_DATA for p in parts)


def tool_name(tool: Any) -> str:
    """The name a Strands tool is called by."""
    return str(getattr(tool, "tool_name", None) or getattr(tool, "__name__", repr(tool)))


def tool_specs(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """The JSON tool specs Strands sends to the model (used to hash a toolset's schema)."""
    return [dict(t.tool_spec) for t in tools]
