"""Per-case evaluation evidence: the contract between ``evaluate_variants`` and ``decide_promotion``.

One :class:`CaseResult` per (case, variant, repeat). A case that errored or timed out is still a row, with
``error`` set and its scores counted as failures (never dropped): the gate's completeness depends on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from agent_release.steps.backend import Frozen

Role = Literal["champion", "challenger"]


class CaseResult(Frozen):
    """One evaluated case for one variant (and one repeat)."""

    case_id: str
    cluster: str
    variant: str
    role: Role
    repeat: int = 0
    # Scorer name -> value. Binary scorers use 0.0/1.0. None means "not applicable" (e.g. no expected tools)
    # or, when the name is also in ``scorer_errors``, that the scorer raised on this case.
    scores: Mapping[str, float | None] = Field(default_factory=dict)
    # Scorer name -> what it raised on this case (its SCORER_ERROR feedback is on the trace too). "*" means
    # the case could not be scored at all.
    scorer_errors: Mapping[str, str] = Field(default_factory=dict)
    error: str | None = None
    latency_s: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    retries: int = 0
    trace_id: str | None = None
    tags: Mapping[str, str] = Field(default_factory=dict)


class VariantEvaluation(Frozen):
    """Aggregates for one variant: per scorer mean, clustered SE and 95% CI."""

    variant: str
    role: Role
    cases_expected: int
    cases_completed: int
    cases_errored: int
    retries: int
    # Scorer name -> cases on which it raised (those rows have no score from it).
    scorer_errors: Mapping[str, int] = Field(default_factory=dict)
    mlflow_run_id: str | None = None
    logged_model_id: str | None = None
    # metric name -> {"mean", "se", "ci_low", "ci_high", "n", "n_clusters"}
    aggregates: Mapping[str, Mapping[str, float]] = Field(default_factory=dict)


class EvaluationReport(Frozen):
    """Everything the decision step needs, plus provenance for the audit ledger and the report."""

    dataset_name: str
    dataset_hash: str
    repeats: int
    scorer_specs: tuple[Mapping[str, Any], ...]
    variants: tuple[VariantEvaluation, ...]
    rows: tuple[CaseResult, ...]
    table_artifact_uri: str | None = None

    def rows_for(self, role: Role) -> list[CaseResult]:
        """Rows of the variant playing ``role``."""
        return [r for r in self.rows if r.role == role]


def usage_reported(input_tokens: int, output_tokens: int) -> bool:
    """Whether a case's model reported its token usage. A model call always reads some input tokens, so
    none at all means the server sent no usage (an OpenAI-compatible server that ignores
    ``stream_options.include_usage``, or sends ``usage: null``), not a free call."""
    return input_tokens > 0 or output_tokens > 0
