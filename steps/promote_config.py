"""Configuration of the promotion steps (the ``promote:`` section of pipeline.yaml)."""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from pydantic import Field, field_validator

from agent_release.steps.backend import Frozen


class GuardConfig(Frozen):
    """Live guards checked during every bake; any trip rolls traffic back to the champion."""

    max_error_rate: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Challenger live error rate above which the guard trips."
    )
    max_latency_p95_ms: float | None = Field(
        default=None, gt=0, description="Challenger live p95 model latency bound (None = no bound)."
    )
    msprt_alpha: float = Field(
        default=0.05, gt=0, lt=1, description="Level of the always-valid sequential test (challenger worse)."
    )
    min_invocations: int = Field(
        default=10, ge=0, description="Challenger calls needed in a bake before its guards are read."
    )


class LiveTrafficConfig(Frozen):
    """Replays held-out inputs against the endpoint during bakes (local drills and demos)."""

    enabled: bool = Field(default=True, description="Send replayed traffic during bakes.")
    inputs: str = Field(
        default="datasets/support/holdout_live.jsonl",
        description="JSONL file of held-out inputs (field 'input'), relative to pipeline.yaml.",
    )
    requests_per_s: float = Field(default=10.0, gt=0, description="Conversations started per second.")
    concurrency: int = Field(default=4, ge=1, le=64, description="Conversations in flight at once.")


class ShadowConfig(Frozen):
    """Optional shadow phase: mirror a share of live traffic to the challenger before any user sees it."""

    enabled: bool = Field(default=False, description="Run a shadow phase before the canary.")
    sample_percent: float = Field(default=50.0, gt=0, le=100, description="Share of requests mirrored.")
    bake_s: float = Field(default=5.0, gt=0, description="Length of the shadow phase in seconds.")


class PromotionConfig(Frozen):
    """How a promoted challenger receives traffic."""

    mode: Literal["auto", "manual"] = Field(
        default="auto",
        description="auto: shift traffic on a promote decision. manual: stop after the decision with the "
        "challenger pending approval; `agent-release promote` continues.",
    )
    schedule: list[float] = Field(
        default_factory=lambda: [10.0, 50.0, 100.0],
        description="Challenger traffic share (percent) per step, increasing, ending at 100.",
    )
    bake_s: float = Field(default=5.0, gt=0, description="Bake time per step in seconds.")
    guards: GuardConfig = Field(default_factory=GuardConfig, description="Live guards.")
    live_traffic: LiveTrafficConfig = Field(default_factory=LiveTrafficConfig, description="Replay source.")
    shadow: ShadowConfig = Field(default_factory=ShadowConfig, description="Shadow phase.")

    @field_validator("schedule")
    @classmethod
    def _schedule_increases_to_100(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("schedule must list at least one step")
        if any(not 0 < p <= 100 for p in v):
            raise ValueError("schedule percentages must be in (0, 100]")
        if any(b <= a for a, b in pairwise(v)):
            raise ValueError("schedule must increase strictly")
        if v[-1] != 100:
            raise ValueError("schedule must end at 100")
        return v
