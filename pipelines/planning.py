"""``agent-release plan``: the minimum detectable effect (MDE) of the configured golden set.

The MDE depends on the number of cases, how they cluster, the repeats K and the variance of per-case
differences. The variance comes from the last completed evaluation when there is one (its observed SD and
intra-cluster correlation), otherwise from a stated assumption (defaults: SD 0.5, the largest a difference of
two binary scores usually has, and ICC 0.1). ``--sd`` and ``--icc`` replace either value, observed or
assumed, and the plan says which values it used and where each came from; given both, the state is not
read and the design is the golden set's own. The plan warns when the gate's
``min_improvement`` is below the MDE: real gains that small would mostly end inconclusive.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from agent_release.pipelines.config import check_referenced_files, load_config
from agent_release.pipelines.dag import read_jsonl
from agent_release.steps.paired_stats import StatsInputError
from agent_release.steps.power import format_effect
from agent_release.steps.validate_datasets import case_cluster, case_ref

if TYPE_CHECKING:
    from agent_release.steps.decide_promotion import PowerPlan

DEFAULT_SD = 0.5
DEFAULT_ICC = 0.1


def confidence_label(alpha: float) -> str:
    """The one-sided confidence level of ``alpha`` as a percentage: 0.05 -> "95%", 0.025 -> "97.5%"."""
    return f"{round((1.0 - alpha) * 100.0, 6):g}%"


def _last_evaluation(state_dir: Path) -> tuple[str, object] | None:
    """(execution id, EvaluationReport) of the newest execution with a finished, paired evaluation."""
    from agent_release.pipelines.executor import ExecutionStore
    from agent_release.steps.evaluation_records import EvaluationReport

    if not (state_dir / "state.db").exists():
        return None
    store = ExecutionStore(state_dir)
    try:
        for execution_id, data in store.step_outputs("evaluate_variants"):
            report = EvaluationReport.model_validate(data)
            # Only a paired evaluation says anything about the variance of differences.
            if report.rows_for("champion") and report.rows_for("challenger"):
                return execution_id, report
    finally:
        store.close()
    return None


def plan_power(
    config_path: Path, state_dir: Path, *, assumed_sd: float | None = None, assumed_icc: float | None = None
) -> list[str]:
    """Lines describing the design, its MDE and any warning."""
    from agent_release.steps.decide_promotion import power_plan, power_plan_from_evaluation
    from agent_release.steps.evaluation_records import EvaluationReport

    loaded = load_config(config_path)
    check_referenced_files(loaded)
    cfg = loaded.config
    spec = cfg.datasets[cfg.evaluate.dataset]
    cases = read_jsonl(loaded.resolve(spec.path))
    if not cases:  # not "needs at least 2 clusters ... give the cases a 'cluster' key": there are no cases
        raise StatsInputError(
            f"dataset {cfg.evaluate.dataset} ({spec.path}) has no rows: there is nothing to plan"
        )
    # Counted as the evaluation counts them: cases by id, a case without a cluster is a cluster of its own.
    cluster_of = {case_ref(c, number): case_cluster(c) for number, c in enumerate(cases, 1)}
    # Cases per cluster: unequal clusters make the clustered SE larger than their count alone says.
    cluster_sizes = sorted(Counter(cluster_of.values()).values())
    n_cases, n_clusters = len(cluster_of), len(cluster_sizes)
    repeats = cfg.evaluate.repeats
    lines = [
        f"golden set     {cfg.evaluate.dataset}: {n_cases} cases in {n_clusters} clusters, K={repeats}",
        f"gate           {cfg.decide.primary_metric}: promote when the one-sided "
        f"{confidence_label(cfg.decide.alpha)} lower confidence bound of the paired difference exceeds "
        f"{cfg.decide.min_improvement:g} (one-sided alpha {cfg.decide.alpha:g})",
    ]
    both_given = assumed_sd is not None and assumed_icc is not None
    last = None if both_given else _last_evaluation(state_dir)  # nothing of it would be used
    if last is not None and isinstance(last[1], EvaluationReport):
        plan = power_plan_from_evaluation(
            cfg.decide, last[1], sd_diff=assumed_sd, icc=assumed_icc, cluster_sizes=cluster_sizes
        )
        source = _variance_source(plan, f"observed in execution {last[0]}", assumed_sd, assumed_icc)
    else:
        sd = assumed_sd if assumed_sd is not None else DEFAULT_SD
        icc = assumed_icc if assumed_icc is not None else DEFAULT_ICC
        plan = power_plan(
            cfg.decide, n_cases, n_clusters, repeats, sd_diff=sd, icc=icc, cluster_sizes=cluster_sizes
        )
        note = "" if both_given else " (no evaluation yet)"
        source = _variance_source(plan, "assumed", assumed_sd, assumed_icc, note=note)
    m = plan.mde
    lines += [
        f"variance       {source}",
        f"design effect  {m.design_effect:.2f} (effective n {m.effective_n:.0f}), clustered SE {format_effect(m.se)}",
        f"MDE            {format_effect(m.mde)} at {m.power:.0%} power",
        f"promotable     true gains of about {format_effect(plan.smallest_promotable_effect)} or more",
    ]
    if plan.warning:
        lines.append(f"warning        {plan.warning}")
    return lines


def _variance_source(
    plan: PowerPlan, otherwise: str, given_sd: float | None, given_icc: float | None, *, note: str = ""
) -> str:
    """Where the plan's SD and ICC came from, e.g. "SD 0.3 as given, ICC 0.12 observed in execution X"."""
    sd, icc = plan.mde.sd_diff, plan.mde.icc
    parts = [
        f"SD {sd:.3g} {'as given' if given_sd is not None else otherwise}",
        f"ICC {icc:.3g} {'as given' if given_icc is not None else otherwise}"
        if icc is not None
        else "ICC n/a",
    ]
    hint = "" if given_sd is not None and given_icc is not None else "; --sd/--icc change them"
    return ", ".join(parts) + note + hint
