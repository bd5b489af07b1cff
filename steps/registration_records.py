"""What ``register_agents`` produces and ``evaluate_variants`` / promotion consume."""

from __future__ import annotations

from pydantic import Field

from agent_release.steps.backend import Frozen
from agent_release.steps.evaluation_records import Role
from agent_release.steps.register_agents_config import InferenceConfig


class RegisteredAgent(Frozen):
    """One agent version in MLflow, bound to one endpoint variant."""

    variant: str
    role: Role
    endpoint_name: str
    package_arn: str | None
    package_version: int | None
    logged_model_id: str = Field(description="MLflow LoggedModel id (traces link to it).")
    prompt_uri: str = Field(description="prompts:/<name>/<version> of the system prompt.")
    registered_model_name: str
    registered_model_version: str | None
    tool_names: tuple[str, ...]
    tools_hash: str
    inference: InferenceConfig
    # What the agent was registered with, so a resumed execution can tell that the files changed since (None
    # in a report stored before these were recorded).
    system_prompt_sha256: str | None = None
    tool_data_sha256: str | None = None


class RegistrationReport(Frozen):
    """Agents registered for an execution."""

    tracking_uri: str
    experiment_id: str
    agents: tuple[RegisteredAgent, ...]
    changed: bool = Field(description="False when every agent version already existed (idempotent re-run).")

    def for_role(self, role: Role) -> RegisteredAgent | None:
        """The agent playing ``role``, if any."""
        return next((a for a in self.agents if a.role == role), None)
