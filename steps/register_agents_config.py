"""Configuration of the ``register_agents`` step (the ``agent:`` section of pipeline.yaml)."""

from __future__ import annotations

import re

from pydantic import Field

from agent_release.steps.backend import Frozen

# Above any model's context window; beyond it a typo would be sent to the model server as is.
MAX_TOKENS = 1_000_000


class InferenceConfig(Frozen):
    """Inference parameters sent with every model call (Strands ``payload_config``)."""

    max_tokens: int = Field(
        default=512,
        gt=0,
        le=MAX_TOKENS,
        description="Upper bound on generated tokens per model call (at most 1,000,000).",
    )
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="Sampling temperature (0 to 2).")
    stream: bool = Field(
        default=True, description="Use InvokeEndpointWithResponseStream (True) or InvokeEndpoint (False)."
    )


BUILT_IN_TOOLSET = "support"
AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


class AgentConfig(Frozen):
    """The agent registered once per deployed variant: prompt, tools and inference parameters."""

    name: str = Field(
        default="support-agent",
        pattern=AGENT_NAME.pattern,
        description="Agent name; also the MLflow registered model and prompt name prefix. Left out, it is "
        "'support-agent' with the built-in toolset and deploy.endpoint_name with a toolset of your own.",
    )
    system_prompt: str | None = Field(
        default=None,
        description="System prompt text. Give at most one of system_prompt / system_prompt_file. With neither, "
        "toolset 'support' uses its built-in prompt; any other toolset needs one.",
    )
    system_prompt_file: str | None = Field(
        default=None, description="Path (relative to pipeline.yaml) of a file holding the system prompt."
    )
    toolset: str = Field(
        default="support",
        description="Built-in toolset name ('support') or an import path 'pkg.module:factory' of a function "
        "(data_dir: Path) -> list of Strands tools.",
    )
    tools: list[str] | None = Field(
        default=None, description="Subset of the toolset's tool names to give the agent (None = all)."
    )
    tool_data_dir: str = Field(
        default="datasets/support",
        description="Directory the tools read (relative to pipeline.yaml); tools cannot read outside it.",
    )
    inference: InferenceConfig = Field(default_factory=InferenceConfig, description="Inference parameters.")
    region: str = Field(default="us-east-1", description="AWS region the SageMaker runtime client signs for.")
