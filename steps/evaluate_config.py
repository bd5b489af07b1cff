"""Configuration of the ``evaluate_variants`` step (the ``evaluate:`` section of pipeline.yaml)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from agent_release.steps.backend import Frozen

# Upper bounds no real configuration reaches; beyond them a typo (1e308) would hang or overflow a run.
MAX_TIMEOUT_S = 3_600.0  # an hour per case
MAX_PRICE_PER_1K = 1_000.0  # currency units per 1,000 tokens


class ScorerSpec(Frozen):
    """One scorer: a built-in name (see "Built-in scorers" at the end of docs/pipeline-yaml.md) or an import
    path 'pkg.module:factory'."""

    name: str = Field(description="Registered scorer name or import path of a scorer factory.")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the factory.")


class PriceTable(Frozen):
    """Token prices used by the cost scorer (currency units per 1,000 tokens)."""

    input_per_1k: float = Field(
        default=0.0, ge=0.0, le=MAX_PRICE_PER_1K, description="Price of 1,000 prompt tokens (at most 1,000)."
    )
    output_per_1k: float = Field(
        default=0.0,
        ge=0.0,
        le=MAX_PRICE_PER_1K,
        description="Price of 1,000 completion tokens (at most 1,000).",
    )


class JudgeConfig(Frozen):
    """An optional LLM judge reached over an OpenAI-compatible API (off unless configured)."""

    base_url: str = Field(
        description=(
            "OpenAI-compatible base URL of the judge model server, with its API prefix: the judge posts to "
            "`<base_url>/chat/completions`, e.g. `http://127.0.0.1:8080/v1`; a bare server root such as "
            "`http://127.0.0.1:8080` gets `/v1`, as a model package's `base_url` does."
        )
    )
    model: str = Field(description="Model name sent to the judge server.")
    api_key_env: str | None = Field(default=None, description="Environment variable holding the API key.")


class EvaluateConfig(Frozen):
    """How each variant's agent is evaluated on a golden dataset."""

    dataset: str = Field(default="golden", description="Name of a dataset declared under `datasets:`.")
    concurrency: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Model calls in flight at once per variant: the endpoint's capacity (at most 256).",
    )
    staged: int | None = Field(
        default=None,
        ge=0,
        le=256,
        description=(
            "Cases made ready beyond `concurrency` (agent built, spans open) so that a call slot is "
            "taken the moment one frees; they wait for the slot, and that wait is not counted in their "
            "latency or timeout. 0 turns it off; default: a quarter of `concurrency`, at least 1."
        ),
    )
    timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=MAX_TIMEOUT_S,
        description="Per-case timeout in seconds (at most 3,600); a timed-out case is an error row.",
    )
    max_retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description="Retries with backoff for throttling and 5xx per model call (at most 10).",
    )
    repeats: int = Field(
        default=1, ge=1, le=20, description="K: how many times each case is run (at most 20)."
    )
    scorers: list[ScorerSpec] = Field(
        default_factory=lambda: [
            ScorerSpec(name="answer_correctness"),
            ScorerSpec(name="tool_trajectory", args={"mode": "exact"}),
            ScorerSpec(name="tool_arguments"),
            ScorerSpec(name="task_success"),
            ScorerSpec(name="latency"),
            ScorerSpec(name="tokens"),
            ScorerSpec(name="cost"),
            ScorerSpec(name="error"),
        ],
        description="Scorers as name + args.",
    )
    prices: dict[str, PriceTable] = Field(
        default_factory=dict,
        description="Price table per variant name; the key 'default' applies to variants not listed.",
    )
    judge: JudgeConfig | None = Field(default=None, description="LLM judge; None disables the judge scorer.")
    scoring: Literal["inline", "mlflow_evaluate"] = Field(
        default="inline",
        description=(
            "Where the scorers run. 'inline': inside each case's trace, the scores written with the trace "
            "in one transaction (several times faster). 'mlflow_evaluate': mlflow.genai.evaluate over the "
            "finished traces, one write per score."
        ),
    )

    @property
    def staged_cases(self) -> int:
        """How many cases get ready beyond ``concurrency``: ``staged`` if set, else a quarter, at least 1."""
        return self.staged if self.staged is not None else max(1, self.concurrency // 4)
