"""The HTML release report of one execution: evidence a release manager can read and hand to compliance.

Usage::

    path = render_report(state_dir, execution_id)   # -> <state_dir>/reports/<execution_id>.html

The page is self-contained (inline CSS, figures as inline SVG from matplotlib, no scripts, no network) and
is built only from what the execution stored: the execution row and step outputs in the state database
(:class:`~agent_release.pipelines.executor.ExecutionStore`) and the audit ledger entries of the execution
(:class:`~agent_release.pipelines.local_backend.LocalBackend`). A failed or partial execution renders with the
steps that finished and says which did not run. Step outputs are read with their report models; one that no
longer matches its model is named in the report and its section is left out (raw JSON where useful).

When the evaluation logged MLflow runs and the tracking store is reachable, the page is also logged as an
artifact (``agent-release-report/<id>.html``) of each run; that is best effort and never fails the render.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_release.pipelines import report_plots as plots
from agent_release.pipelines.atomic_write import write_text_atomically

if TYPE_CHECKING:
    from markupsafe import Markup

    from agent_release.steps.decide_promotion import DecisionReport
    from agent_release.steps.deploy_variants import DeployReport
    from agent_release.steps.evaluation_records import CaseResult, EvaluationReport
    from agent_release.steps.promote_challenger import PromotionReport
    from agent_release.steps.registration_records import RegistrationReport

__all__ = ["ReportError", "render_report", "report_path"]

logger = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATE_NAME = "report.html.j2"
MLFLOW_ARTIFACT_DIR = "agent-release-report"
# Where `mlflow ui` listens by default: the address to open after starting it on a local store.
LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"
# With more clusters than this, the breakdown shows the most and least improved ones only.
MAX_CLUSTERS_SHOWN = 20

# Step name -> (module, class) of its typed output.
REPORT_MODELS: dict[str, tuple[str, str]] = {
    "validate_datasets": ("agent_release.steps.validate_datasets", "DatasetValidationReport"),
    "train_model": ("agent_release.steps.train_model", "TrainReport"),
    "deploy_variants": ("agent_release.steps.deploy_variants", "DeployReport"),
    "register_agents": ("agent_release.steps.registration_records", "RegistrationReport"),
    "evaluate_variants": ("agent_release.steps.evaluation_records", "EvaluationReport"),
    "decide_promotion": ("agent_release.steps.decide_promotion", "DecisionReport"),
    "promote_challenger": ("agent_release.steps.promote_challenger", "PromotionReport"),
}
_COUNTED_FIELDS = ("latency_s", "cost", "input_tokens", "output_tokens", "retries")


class ReportError(ValueError):
    """The report cannot be built as asked (e.g. the execution does not exist)."""


def report_path(state_dir: Path, execution_id: str) -> Path:
    """Where the report of ``execution_id`` is written."""
    return state_dir / "reports" / f"{execution_id}.html"


def render_report(state_dir: Path, execution_id: str) -> Path:
    """Write ``<state_dir>/reports/<execution_id>.html``, log it to MLflow when possible; return its path.

    Raises :class:`ReportError` when the execution is unknown.
    """
    view = build_view(state_dir, execution_id)
    path = report_path(state_dir, execution_id)
    write_text_atomically(path, render_html(view))
    logger.info("execution=<%s>, path=<%s> | report written", execution_id, path)
    log_to_mlflow(path, view.mlflow)
    return path


# -- views: what the template shows -------------------------------------------------------------------------


@dataclass(frozen=True)
class StepView:
    """One step of the execution and, when it did not succeed, why."""

    name: str
    status: str
    started_at: float | None
    finished_at: float | None
    error: str | None
    note: str | None

    @property
    def seconds(self) -> float | None:
        """Wall time of the step, when it started and finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True)
class MetricCell:
    """A variant's clustered mean and 95% CI of one metric."""

    mean: float
    ci_low: float | None
    ci_high: float | None
    n: int | None
    n_clusters: int | None


@dataclass(frozen=True)
class ClusterRow:
    """Per-cluster means of the primary metric and their difference."""

    cluster: str
    n_cases: int
    champion: float
    challenger: float
    mean_difference: float


@dataclass(frozen=True)
class TimelineRow:
    """One event of the traffic timeline, flattened for a table row."""

    seconds: float
    at: float
    phase: str
    weights: Mapping[str, float]
    challenger_share: float
    readings: Sequence[Any]
    tripped: str | None
    note: str | None


@dataclass(frozen=True)
class RunLink:
    """One variant's MLflow evaluation run and agent version, with UI addresses when there is a UI."""

    variant: str
    role: str
    run_id: str | None
    run_url: str | None
    logged_model_id: str | None
    model_url: str | None
    trace_count: int


@dataclass
class MlflowView:
    """Where the evidence lives in MLflow."""

    tracking_uri: str
    ui_base: str | None
    hint: str | None
    experiment_id: str | None
    runs: list[RunLink] = field(default_factory=list)
    traces_url: str | None = None

    @property
    def run_ids(self) -> list[str]:
        """The evaluation run ids (the report is logged to each)."""
        return [r.run_id for r in self.runs if r.run_id]


@dataclass
class ReportView:
    """Everything the template renders."""

    execution: Mapping[str, Any]
    steps: list[StepView]
    mlflow: MlflowView
    generated_at: float
    config_text: str
    unreadable: dict[str, str] = field(default_factory=dict)
    datasets: list[dict[str, Any]] | None = None
    datasets_success: bool | None = None
    training: list[tuple[str, str]] | None = None
    deploy: DeployReport | None = None
    registration: RegistrationReport | None = None
    evaluation: EvaluationReport | None = None
    metric_rows: list[tuple[str, list[MetricCell | None]]] = field(default_factory=list)
    decision: DecisionReport | None = None
    primary_metric: str | None = None
    cluster_rows: list[ClusterRow] = field(default_factory=list)
    cluster_total: int = 0
    promotion: PromotionReport | None = None
    timeline: list[TimelineRow] = field(default_factory=list)
    rolled_back: bool = False
    audit: list[Any] = field(default_factory=list)
    audit_problems: list[str] | None = None
    audit_error: str | None = None
    figures: dict[str, Markup] = field(default_factory=dict)

    @property
    def not_run(self) -> list[StepView]:
        """Steps that did not finish successfully."""
        return [s for s in self.steps if s.status != "succeeded"]

    def step(self, name: str) -> StepView | None:
        """The named step, or None when the execution has no such step."""
        return next((s for s in self.steps if s.name == name), None)


# -- gathering ----------------------------------------------------------------------------------------------


def build_view(state_dir: Path, execution_id: str) -> ReportView:
    """Read the execution, its step outputs and audit entries into a :class:`ReportView`."""
    from agent_release.pipelines.executor import ExecutionStore

    store = ExecutionStore(state_dir)
    try:
        row = store.execution(execution_id)
        if row is None:
            raise ReportError(f"no execution {execution_id} in {state_dir}")
        execution = dict(row)
        step_rows = [dict(r) for r in store.steps(execution_id)]
    finally:
        store.close()

    config = _parse_config(execution.get("config_text") or "")
    view = ReportView(
        execution=execution,
        steps=[_step_view(r, execution["status"]) for r in step_rows],
        mlflow=MlflowView(tracking_uri="", ui_base=None, hint=None, experiment_id=None),
        generated_at=datetime.now(UTC).timestamp(),
        config_text=execution.get("config_text") or "",
    )
    outputs = {
        r["name"]: json.loads(r["output_json"])
        for r in step_rows
        if r["status"] == "succeeded" and r["output_json"]
    }
    parsed = {name: _parse_output(name, data, view.unreadable) for name, data in outputs.items()}

    _add_datasets(view, outputs.get("validate_datasets"), parsed.get("validate_datasets"))
    _add_training(view, outputs.get("train_model"), parsed.get("train_model"))
    view.deploy = parsed.get("deploy_variants")
    view.registration = parsed.get("register_agents")
    view.decision = parsed.get("decide_promotion")
    view.primary_metric = _primary_metric(view.decision, config)
    _add_evaluation(view, parsed.get("evaluate_variants"))
    _add_decision_figure(view)
    _add_promotion(view, parsed.get("promote_challenger"))
    view.mlflow = _mlflow_view(state_dir, config, view.registration, view.evaluation)
    _add_audit(view, state_dir, execution_id)
    return view


def _step_view(row: Mapping[str, Any], execution_status: str) -> StepView:
    status = row["status"]
    note = None
    if status == "pending":
        note = (
            "did not run: the execution stopped before this step"
            if execution_status in {"failed", "succeeded", "held"}
            else "has not run yet (the execution is running or was interrupted; `run --resume` continues it)"
        )
    elif status == "skipped":
        note = "skipped: not enabled in the config, or an upstream step was skipped"
    elif status == "running":
        note = "started but did not finish (interrupted)"
    elif status == "failed":
        note = "failed"
    return StepView(
        name=row["name"],
        status=status,
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        note=note,
    )


def _parse_config(text: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _parse_output(name: str, data: Any, unreadable: dict[str, str]) -> Any:
    """The step output as its report model, or None (noting why in ``unreadable``)."""
    from pydantic import BaseModel, ValidationError

    if name not in REPORT_MODELS:
        return None
    module_name, class_name = REPORT_MODELS[name]
    try:
        model = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        unreadable[name] = f"its report model {module_name}.{class_name} is not available ({exc})"
        return None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        unreadable[name] = f"its output does not match {class_name}: {exc.errors()[0].get('msg', exc)}"
        logger.warning("step=<%s> | stored output does not match its report model", name)
        return None


def _as_json(parsed: Any, raw: Any) -> Any:
    """The model's JSON form when it parsed (normalised), else the stored JSON as is."""
    return parsed.model_dump(mode="json") if parsed is not None else raw


def _add_datasets(view: ReportView, raw: Any, parsed: Any) -> None:
    data = _as_json(parsed, raw)
    if not isinstance(data, Mapping):
        return
    items = data.get("datasets", [])
    datasets = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        failures = item.get("failures") or []
        datasets.append(
            {
                "name": str(item.get("name", "?")),
                "path": item.get("path"),
                "sha256": item.get("sha256"),
                "rows": item.get("n_rows", item.get("rows")),
                "clusters": item.get("n_clusters", item.get("clusters")),
                "success": item.get("success"),
                "failures": [
                    _describe_failure(f) for f in (failures if isinstance(failures, list) else [failures])
                ],
            }
        )
    view.datasets = datasets
    success = data.get("success")
    if isinstance(success, bool):
        view.datasets_success = success
    elif datasets:
        view.datasets_success = all(d["success"] is not False for d in datasets)


def _describe_failure(failure: Any) -> str:
    """One line per failed expectation (the shape of ``validate_datasets.ExpectationFailure``, or any)."""
    if not isinstance(failure, Mapping):
        return str(failure)
    if "expectation" in failure:
        column = f"({failure['column']})" if failure.get("column") else ""
        count = failure.get("unexpected_count")
        what = f"{count} rows" if count else (failure.get("detail") or "failed")
        samples = failure.get("sample_ids") or []
        sample = f", e.g. {', '.join(map(str, samples))}" if samples else ""
        return f"{failure['expectation']}{column}: {what}{sample}"
    return ", ".join(f"{k}={_compact(v)}" for k, v in failure.items() if v is not None)


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``{"a": {"b": 1}}`` -> ``[("a.b", "1")]``: nested records as readable key/value rows."""
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and prefix.count(".") < 2:
            rows.extend(_flatten(value, name + "."))
        else:
            rows.append((name, _compact(value)))
    return rows


def _add_training(view: ReportView, raw: Any, parsed: Any) -> None:
    data = _as_json(parsed, raw)
    if isinstance(data, Mapping):
        view.training = _flatten(data)


def _primary_metric(decision: DecisionReport | None, config: Mapping[str, Any]) -> str | None:
    if decision is not None and decision.primary is not None:
        return decision.primary.metric
    decide = config.get("decide")
    if isinstance(decide, Mapping) and isinstance(decide.get("primary_metric"), str):
        return str(decide["primary_metric"])
    return "task_success"


# -- evaluation and decision --------------------------------------------------------------------------------


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _cell(aggregate: Mapping[str, float] | None) -> MetricCell | None:
    if aggregate is None:
        return None
    mean, low, high = aggregate.get("mean"), aggregate.get("ci_low"), aggregate.get("ci_high")
    n, clusters = aggregate.get("n"), aggregate.get("n_clusters")
    if mean is None or not _finite(mean):
        return None
    return MetricCell(
        mean=float(mean),
        ci_low=float(low) if low is not None and _finite(low) else None,
        ci_high=float(high) if high is not None and _finite(high) else None,
        n=int(n) if n is not None and _finite(n) else None,
        n_clusters=int(clusters) if clusters is not None and _finite(clusters) else None,
    )


def _add_evaluation(view: ReportView, evaluation: EvaluationReport | None) -> None:
    view.evaluation = evaluation
    if evaluation is None:
        return
    metrics = sorted(
        {m for v in evaluation.variants for m in v.aggregates}, key=lambda m: (m != view.primary_metric, m)
    )
    view.metric_rows = [(m, [_cell(v.aggregates.get(m)) for v in evaluation.variants]) for m in metrics]
    intervals: dict[str, list[plots.Interval]] = {}
    for metric, cells in view.metric_rows:
        shown = [
            plots.Interval(f"{v.variant} ({v.role})", c.mean, c.ci_low, c.ci_high)
            for v, c in zip(evaluation.variants, cells, strict=True)
            if c is not None and c.ci_low is not None and c.ci_high is not None
        ]
        if shown:
            intervals[metric] = shown
    execution_id = str(view.execution["id"])
    if intervals:
        view.figures["metrics"] = _svg(plots.metric_intervals_svg(intervals, salt=f"{execution_id}/metrics"))
    if view.primary_metric is not None:
        rows, total = cluster_breakdown(evaluation.rows, view.primary_metric)
        view.cluster_rows, view.cluster_total = rows, total
        if rows:
            bars = [plots.ClusterBar(r.cluster, r.mean_difference, r.n_cases) for r in rows]
            view.figures["clusters"] = _svg(
                plots.cluster_bars_svg(bars, metric=view.primary_metric, salt=f"{execution_id}/clusters")
            )


def _row_value(row: CaseResult, metric: str, binary: bool) -> float | None:
    """A row's value of ``metric`` with the gate's conventions (errored binary score = failure)."""
    if metric == "error":
        return 1.0 if row.error is not None else 0.0
    if metric in _COUNTED_FIELDS:
        value = getattr(row, metric)
        # A fast failure must not look like a speed-up.
        return None if value is None or (metric == "latency_s" and row.error is not None) else float(value)
    score = row.scores.get(metric)
    if score is None and row.error is not None and binary:
        return 0.0
    return score


def cluster_breakdown(rows: Sequence[CaseResult], metric: str) -> tuple[list[ClusterRow], int]:
    """Per-cluster champion and challenger means of ``metric`` over paired cases, and their difference.

    Repeats of a case are averaged first. Returns the rows to show, sorted from most improved to most
    worsened (all clusters, or the top and bottom ``MAX_CLUSTERS_SHOWN / 2`` when there are more), and the
    total number of clusters.
    """
    import pandas as pd

    observed = [r.scores.get(metric) for r in rows]
    binary = any(v is not None for v in observed) and all(v in (0.0, 1.0) for v in observed if v is not None)
    records = [
        {"cluster": r.cluster, "case_id": r.case_id, "role": r.role, "value": value}
        for r in rows
        if (value := _row_value(r, metric, binary)) is not None
    ]
    if not records:
        return [], 0
    frame = pd.DataFrame.from_records(records)
    per_case = frame.groupby(["cluster", "case_id", "role"])["value"].mean().unstack("role")
    if not {"champion", "challenger"} <= set(per_case.columns):
        return [], 0
    per_case = per_case.dropna(subset=["champion", "challenger"])
    per_case["difference"] = per_case["challenger"] - per_case["champion"]
    per_cluster = (
        per_case.groupby(level="cluster")
        .agg(
            n_cases=("difference", "size"),
            champion=("champion", "mean"),
            challenger=("challenger", "mean"),
            mean_difference=("difference", "mean"),
        )
        .sort_values(["mean_difference", "n_cases"], ascending=[False, False])
    )
    table = [
        ClusterRow(
            cluster=str(name),
            n_cases=int(r.n_cases),
            champion=float(r.champion),
            challenger=float(r.challenger),
            mean_difference=float(r.mean_difference),
        )
        for name, r in per_cluster.iterrows()
    ]
    if len(table) > MAX_CLUSTERS_SHOWN:
        half = MAX_CLUSTERS_SHOWN // 2
        table = table[:half] + table[-half:]
    return table, len(per_cluster)


def _add_decision_figure(view: ReportView) -> None:
    decision = view.decision
    if decision is None:
        return
    rows: list[plots.ForestRow] = []
    if decision.primary is not None:
        p = decision.primary
        rows.append(
            plots.ForestRow(
                f"{p.metric} ({p.confidence:.0%} CI)",
                p.estimate,
                p.ci_low,
                p.ci_high,
                reference=decision.min_improvement,
                reference_label=f"min improvement {decision.min_improvement:g}",
            )
        )
    for g in decision.guardrails:
        if g.estimate is None or g.ci_low is None or g.ci_high is None:
            continue
        # Lower-is-better metrics must stay below +margin; higher-is-better ones above -margin.
        limit = g.margin if g.direction == "lower_is_better" else -g.margin
        what = f"{g.metric} p95" if g.statistic == "p95" else g.metric
        rows.append(
            plots.ForestRow(
                f"{what} [{g.status}]", g.estimate, g.ci_low, g.ci_high, limit, f"margin {limit:+g}"
            )
        )
    if rows:
        view.figures["forest"] = _svg(plots.forest_svg(rows, salt=f"{view.execution['id']}/forest"))


# -- promotion ----------------------------------------------------------------------------------------------


def _share(weights: Mapping[str, float], variant: str | None) -> float:
    total = sum(weights.values())
    return 100.0 * weights.get(variant or "", 0.0) / total if total > 0 else 0.0


def _add_promotion(view: ReportView, promotion: PromotionReport | None) -> None:
    view.promotion = promotion
    if promotion is None:
        return
    view.rolled_back = promotion.action == "rolled_back" or any(
        e.phase == "rollback" for e in promotion.timeline
    )
    if not promotion.timeline:
        return
    start = promotion.timeline[0].at
    markers: list[plots.TrafficMarker] = []
    for event in promotion.timeline:
        share = _share(event.weights, promotion.challenger)
        view.timeline.append(
            TimelineRow(
                seconds=event.at - start,
                at=event.at,
                phase=event.phase,
                weights=event.weights,
                challenger_share=share,
                readings=list(event.readings.values()),
                tripped=event.tripped,
                note=event.note,
            )
        )
        if event.tripped:
            markers.append(plots.TrafficMarker(event.at - start, share, "trip"))
        if event.phase == "rollback":
            markers.append(plots.TrafficMarker(event.at - start, share, "rollback"))
    view.figures["traffic"] = _svg(
        plots.traffic_svg(
            [r.seconds for r in view.timeline],
            [r.challenger_share for r in view.timeline],
            markers,
            challenger=promotion.challenger or "challenger",
            salt=f"{view.execution['id']}/traffic",
        )
    )


# -- MLflow and audit ---------------------------------------------------------------------------------------


def _mlflow_view(
    state_dir: Path,
    config: Mapping[str, Any],
    registration: RegistrationReport | None,
    evaluation: EvaluationReport | None,
) -> MlflowView:
    from agent_release.pipelines.tracking import resolve_tracking_uri

    tracking = config.get("tracking")
    configured = tracking.get("uri") if isinstance(tracking, Mapping) else None
    # The URI the run actually used wins over re-resolving it now (the environment may have changed).
    uri = (
        registration.tracking_uri if registration is not None else resolve_tracking_uri(configured, state_dir)
    )
    ui_base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else None
    hint = None
    if ui_base is None:
        hint = (
            "open this tracking server's MLflow UI from SageMaker Studio"
            if uri.startswith("arn:")
            else f"mlflow ui --backend-store-uri {uri}"
        )
    experiment_id = registration.experiment_id if registration is not None else None
    view = MlflowView(tracking_uri=uri, ui_base=ui_base, hint=hint, experiment_id=experiment_id)
    base = ui_base or LOCAL_MLFLOW_UI
    models = {a.variant: a.logged_model_id for a in registration.agents} if registration is not None else {}
    variants = list(evaluation.variants) if evaluation is not None else []
    roles = {v.variant: v.role for v in variants}
    if registration is not None:
        roles.update({a.variant: roles.get(a.variant, a.role) for a in registration.agents})
    for name, role in roles.items():
        evaluated = next((v for v in variants if v.variant == name), None)
        run_id = evaluated.mlflow_run_id if evaluated is not None else None
        model_id = (evaluated.logged_model_id if evaluated is not None else None) or models.get(name)
        traces = sum(1 for r in evaluation.rows if r.variant == name and r.trace_id) if evaluation else 0
        view.runs.append(
            RunLink(
                variant=name,
                role=role,
                run_id=run_id,
                run_url=_ui_url(base, experiment_id, "runs", run_id),
                logged_model_id=model_id,
                model_url=_ui_url(base, experiment_id, "models", model_id),
                trace_count=traces,
            )
        )
    if experiment_id:
        view.traces_url = f"{base}/#/experiments/{experiment_id}/traces"
    return view


def _ui_url(base: str, experiment_id: str | None, kind: str, object_id: str | None) -> str | None:
    """The MLflow UI address of a run or logged model (the UI routes by experiment)."""
    if not experiment_id or not object_id:
        return None
    return f"{base}/#/experiments/{experiment_id}/{kind}/{object_id}"


def _add_audit(view: ReportView, state_dir: Path, execution_id: str) -> None:
    from agent_release.pipelines.local_backend import LocalBackend
    from agent_release.steps.backend import BackendError

    try:
        backend = LocalBackend(state_dir)
    except (BackendError, sqlite3.Error, OSError) as exc:
        view.audit_error = str(exc)
        return
    try:
        view.audit = [e for e in backend.list_audit() if e.execution_id == execution_id]
        view.audit_problems = backend.verify_audit()
    except (BackendError, sqlite3.Error, ValueError) as exc:
        view.audit_error = str(exc)
    finally:
        backend.close()


def _tracking_reachable(uri: str) -> bool:
    """Whether logging to ``uri`` can work now, checked cheaply (never creates a store)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :]).is_file()
    if uri.startswith(("http://", "https://")):
        import httpx

        try:
            return httpx.get(uri.rstrip("/") + "/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False
    # Other stores (databricks, SageMaker ARNs, SQL servers): let the client try; failures are caught.
    return True


def log_to_mlflow(path: Path, mlflow_view: MlflowView) -> list[str]:
    """Log the report file as an artifact of each evaluation run; return the run ids it was logged to.

    Best effort: an unreachable store or a failing run is logged as a warning, never raised.
    """
    run_ids = mlflow_view.run_ids
    if not run_ids:
        return []
    uri = mlflow_view.tracking_uri
    if not _tracking_reachable(uri):
        logger.info("tracking_uri=<%s> | not reachable; report not logged to MLflow", uri)
        return []
    logged: list[str] = []
    try:
        from agent_release.pipelines.tracking import apply_mlflow_environment, quiet_mlflow_logs

        apply_mlflow_environment()
        from mlflow import MlflowClient

        quiet_mlflow_logs()
        client = MlflowClient(tracking_uri=uri)
        for run_id in run_ids:
            try:
                client.log_artifact(run_id, str(path), artifact_path=MLFLOW_ARTIFACT_DIR)
                logged.append(run_id)
            except Exception:  # best effort: a deleted run or a read-only store must not fail the report
                logger.warning("run_id=<%s> | report not logged to MLflow", run_id, exc_info=True)
    except Exception:
        logger.warning("tracking_uri=<%s> | report not logged to MLflow", uri, exc_info=True)
    if logged:
        logger.info("runs=<%s> | report logged to MLflow", ",".join(logged))
    return logged


# -- HTML ---------------------------------------------------------------------------------------------------


def _svg(text: str) -> Markup:
    from markupsafe import Markup

    # Trusted: matplotlib escapes every label it writes, and the SVG holds no scripts or links.
    return Markup(text)


def _fmt_time(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _fmt_num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.3g}" if _small(value, digits) else f"{value:.{digits}f}"


def _fmt_signed(value: Any, digits: int = 3) -> str:
    if not _finite(value):
        return "—"
    return f"{value:+.3g}" if _small(value, digits) else f"{value:+.{digits}f}"


def _small(value: float, digits: int) -> bool:
    """Too small for ``digits`` decimals to show: such values (costs per case, their differences) keep 3
    significant digits instead (at 3 decimals a cost of 0.000732 read "0.001", its interval "[0.001, 0.001]")."""
    return value != 0 and abs(value) < 10.0 ** -(digits - 1)


def _fmt_pvalue(value: Any) -> str:
    """``= 0.0312`` or ``< 0.0001`` (a p-value of 2.4e-20 printed as "p = 0.0000")."""
    if not _finite(value):
        return "= —"
    return "< 0.0001" if value < 0.0001 else f"= {value:.4f}"


def _fmt_pct(value: Any, digits: int = 1) -> str:
    return f"{100.0 * value:.{digits}f}%" if _finite(value) else "—"


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    # Round first, then split: divmod(119.7, 60) printed "1 min 60 s".
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s"


def _fmt_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def render_html(view: ReportView) -> str:
    """The report page for ``view`` (jinja2 with autoescaping: every stored string is escaped)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        time=_fmt_time,
        num=_fmt_num,
        signed=_fmt_signed,
        pct=_fmt_pct,
        pvalue=_fmt_pvalue,
        duration=_fmt_duration,
        pretty_json=_fmt_json,
    )
    from agent_release import __version__

    return env.get_template(TEMPLATE_NAME).render(view=view, e=view.execution, version=__version__)
