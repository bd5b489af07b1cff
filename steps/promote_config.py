"""Configuration of the promotion steps (the ``promote:`` section of pipeline.yaml)."""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agent_release.steps.backend import Frozen

# Upper bounds no real configuration reaches; beyond them a typo (1e308) would hang a canary or a bake.
MAX_BAKE_S = 86_400.0  # a day per step
MAX_LATENCY_MS = 3_600_000.0  # an hour
MAX_MIN_INVOCATIONS = 1_000_000
MAX_REQUESTS_PER_S = 1_000.0
MAX_SCHEDULE_STEPS = 100


class GuardConfig(Frozen):
    """Live guards checked during every bake; any trip rolls traffic back to the champion."""

    max_error_rate: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Challenger live error rate above which the guard trips (once it is above it with "
        "1 - msprt_alpha confidence).",
    )
    max_latency_p95_ms: float | None = Field(
        default=None,
        gt=0,
        le=MAX_LATENCY_MS,
        description="Challenger live p95 model latency bound in ms, at most 3,600,000 (an hour; None = no "
        "bound). The guard trips once more than 5% of the challenger's calls are slower, with 1 - msprt_alpha "
        "confidence.",
    )
    msprt_alpha: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="Level of the always-valid sequential test (challenger worse) and of the error-rate and "
        "latency guards' confidence bounds.",
    )
    min_invocations: int = Field(
        default=10,
        ge=0,
        le=MAX_MIN_INVOCATIONS,
        description="Challenger calls needed in a bake before its guards are read (at most 1,000,000). "
        "A canary step with fewer bakes on, up to promote.max_bake_s; `validate` warns when replayed "
        "traffic (requests_per_s x bake x a step's share) falls short.",
    )
    unjudged: Literal["rollback", "promote"] = Field(
        default="rollback",
        description="A canary step that still has fewer than min_invocations challenger calls at "
        "promote.max_bake_s was not judged. rollback: traffic back to the champion, the package left "
        "pending approval (`agent-release promote` retries). promote: carry on, on the offline evidence "
        "alone (the promote entry lists the unjudged steps).",
    )


class LiveTrafficConfig(Frozen):
    """Replays held-out inputs against the endpoint during bakes (local drills and demos)."""

    enabled: bool = Field(default=True, description="Send replayed traffic during bakes.")
    inputs: str = Field(
        default="datasets/support/holdout_live.jsonl",
        description="JSONL file of held-out inputs (field 'input'), relative to pipeline.yaml.",
    )
    requests_per_s: float = Field(
        default=10.0,
        gt=0,
        le=MAX_REQUESTS_PER_S,
        description="Conversations started per second (at most 1,000).",
    )
    concurrency: int = Field(
        default=4, ge=1, le=64, description="Conversations in flight at once (at most 64)."
    )


class ShadowConfig(Frozen):
    """Optional shadow phase: mirror a share of live traffic to the challenger before any user sees it."""

    enabled: bool = Field(default=False, description="Run a shadow phase before the canary.")
    sample_percent: float = Field(default=50.0, gt=0, le=100, description="Share of requests mirrored.")
    bake_s: float = Field(
        default=5.0,
        gt=0,
        le=MAX_BAKE_S,
        description="Length of the shadow phase in seconds (at most 86,400: a day).",
    )


class PromotionConfig(Frozen):
    """How a promoted challenger receives traffic."""

    mode: Literal["auto", "manual"] = Field(
        default="auto",
        description="auto: shift traffic on a promote decision. manual: stop after the decision with the "
        "challenger pending approval; `agent-release promote` continues.",
    )
    schedule: list[float] = Field(
        default_factory=lambda: [10.0, 50.0, 100.0],
        max_length=MAX_SCHEDULE_STEPS,
        description="Challenger traffic share (percent) per step, increasing, ending at 100 (at most 100 "
        "steps).",
    )
    bake_s: float = Field(
        default=5.0, gt=0, le=MAX_BAKE_S, description="Bake time per step in seconds (at most 86,400: a day)."
    )
    max_bake_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_BAKE_S,
        description="Longest a canary step bakes while it waits for guards.min_invocations challenger calls "
        "(seconds, at least bake_s, at most 86,400; None = 3 x bake_s, capped at a day).",
    )
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

    @model_validator(mode="after")
    def _max_bake_covers_bake(self) -> PromotionConfig:
        if self.max_bake_s is not None and self.max_bake_s < self.bake_s:
            raise ValueError(f"max_bake_s ({self.max_bake_s:g}) must be at least bake_s ({self.bake_s:g})")
        return self

    @property
    def step_bake_limit_s(self) -> float:
        """How long a canary step may bake waiting for calls: ``max_bake_s``, else 3 x ``bake_s`` (<= a day)."""
        if self.max_bake_s is not None:
            return self.max_bake_s
        return min(3.0 * self.bake_s, max(MAX_BAKE_S, self.bake_s))


class ThinBake(Frozen):
    """A bake whose replayed traffic is expected to give the challenger too few calls for the guards."""

    phase: Literal["canary", "shadow"] = Field(
        description="Which bakes: the canary steps or the shadow phase."
    )
    percents: tuple[float, ...] = Field(description="Challenger share(s) of those bakes (percent).")
    expected_calls: tuple[float, ...] = Field(description="Expected challenger calls per bake, in order.")
    bake_s: float = Field(description="The configured bake (seconds).")
    limit_s: float = Field(
        description="The longest such a bake may run waiting for calls (canary: max_bake_s; shadow: bake_s)."
    )
    unjudged_percents: tuple[float, ...] = Field(
        description="The shares still short of min_calls at limit_s: the guards will not judge those bakes."
    )
    min_calls: int = Field(description="Calls the guards need before they judge a bake.")
    sufficient_bake_s: float | None = Field(
        description="Shortest bake (seconds, rounded up) that would give every such bake enough calls; None "
        "when even the longest allowed bake would not."
    )


def _sufficient_bake_s(requests_per_s: float, percent: float, min_calls: int) -> float | None:
    needed = min_calls / (requests_per_s * percent / 100.0)
    rounded = math.ceil(needed) if needed >= 1 else math.ceil(needed * 10) / 10
    return float(rounded) if rounded <= MAX_BAKE_S else None


def thin_bakes(config: PromotionConfig) -> list[ThinBake]:
    """Bakes whose expected challenger calls (requests/s x bake x challenger share) are below min_invocations.

    Each replayed conversation makes at least one model call, so requests_per_s x bake_s x share is a
    conservative estimate of the calls the guards will see. A canary step that is short of
    ``guards.min_invocations`` at ``bake_s`` bakes on up to ``max_bake_s``; one still short then is
    "unjudged" (``guards.unjudged`` says what follows). Only replayed traffic can be estimated: with
    ``live_traffic`` off the calls come from real users and nothing is returned.
    """
    live = config.live_traffic
    if not live.enabled:
        return []
    min_calls = max(config.guards.min_invocations, 1)
    found: list[ThinBake] = []
    phases: list[tuple[Literal["canary", "shadow"], list[float], float, float]] = [
        ("canary", list(config.schedule), config.bake_s, config.step_bake_limit_s)
    ]
    if config.shadow.enabled:
        phases.insert(
            0, ("shadow", [config.shadow.sample_percent], config.shadow.bake_s, config.shadow.bake_s)
        )
    for phase, percents, bake_s, limit_s in phases:
        thin = [(p, live.requests_per_s * bake_s * p / 100.0) for p in percents]
        thin = [(p, calls) for p, calls in thin if calls < min_calls]
        if thin:
            found.append(
                ThinBake(
                    phase=phase,
                    percents=tuple(p for p, _ in thin),
                    expected_calls=tuple(calls for _, calls in thin),
                    bake_s=bake_s,
                    limit_s=limit_s,
                    unjudged_percents=tuple(
                        p for p, _ in thin if live.requests_per_s * limit_s * p / 100.0 < min_calls
                    ),
                    min_calls=min_calls,
                    sufficient_bake_s=_sufficient_bake_s(
                        live.requests_per_s, min(p for p, _ in thin), min_calls
                    ),
                )
            )
    return found
