"""Evaluation shards: split a golden set across parallel SageMaker steps and merge their reports.

Shard ``i`` of ``n`` evaluates every ``n``-th case starting at ``i`` (so each shard sees a spread of the file,
not one contiguous block of templates). The merge concatenates the per-case rows and recomputes every
variant's aggregates over all of them with the same function the evaluation step uses; the decision step
therefore sees the rows one unsharded evaluation would have produced. Each shard logs its own MLflow runs;
the merged report keeps the first shard's run ids and drops the per-shard table artifact.

Usage::

    rows = shard_cases(cases, index=2, count=4)
    report = merge_evaluations([shard0, shard1, shard2, shard3], dataset_hash="...")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from agent_release.steps.evaluation_records import EvaluationReport, VariantEvaluation

T = TypeVar("T")


class ShardError(ValueError):
    """Shard reports that cannot be merged (different datasets, scorers or variants)."""


def shard_cases(cases: Sequence[T], index: int, count: int) -> list[T]:
    """Every ``count``-th case starting at ``index`` (0-based); raises ValueError for a bad index."""
    if count < 1 or not 0 <= index < count:
        raise ShardError(f"shard index {index} is not in 0..{count - 1}")
    return list(cases[index::count])


def merge_evaluations(shards: Sequence[EvaluationReport], dataset_hash: str) -> EvaluationReport:
    """One report from the shard reports: rows concatenated, counts summed, aggregates recomputed."""
    from agent_release.steps.evaluate_variants import aggregate_rows, scorer_error_counts
    from agent_release.steps.scorers import score_bounds

    if not shards:
        raise ShardError("no shard reports to merge")
    first = shards[0]
    for other in shards[1:]:
        if (other.dataset_name, other.repeats, other.scorer_specs) != (
            first.dataset_name,
            first.repeats,
            first.scorer_specs,
        ):
            raise ShardError("shard reports disagree on dataset, repeats or scorers")
        if [v.variant for v in other.variants] != [v.variant for v in first.variants]:
            raise ShardError("shard reports evaluated different variants")
    rows = tuple(row for shard in shards for row in shard.rows)
    bounds = score_bounds(first.scorer_specs)
    variants: list[VariantEvaluation] = []
    for position, head in enumerate(first.variants):
        parts = [shard.variants[position] for shard in shards]
        variants.append(
            head.model_copy(
                update={
                    "cases_expected": sum(p.cases_expected for p in parts),
                    "cases_completed": sum(p.cases_completed for p in parts),
                    "cases_errored": sum(p.cases_errored for p in parts),
                    "retries": sum(p.retries for p in parts),
                    "scorer_errors": scorer_error_counts([r for r in rows if r.variant == head.variant]),
                    "aggregates": aggregate_rows([r for r in rows if r.variant == head.variant], bounds),
                }
            )
        )
    return first.model_copy(
        update={
            "dataset_hash": dataset_hash,
            "variants": tuple(variants),
            "rows": rows,
            "table_artifact_uri": None,
        }
    )
