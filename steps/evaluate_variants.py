"""Step 5: evaluate each registered agent on the golden dataset with MLflow and the configured scorers.

For every variant: one MLflow run (``evaluate-<variant>``, nested under one ``evaluate-<dataset>`` parent
run) with the agent's LoggedModel active, so each case's trace links to the model and to the run. The cases run
concurrently (:mod:`agent_release.steps.eval_harness`) and are scored with the scorers built from the config
(:mod:`agent_release.steps.scorers`), as assessments on each case's trace: by default inside the trace, so
the scores are written with it (:mod:`agent_release.steps.inline_scoring`); with ``scoring:
mlflow_evaluate``, by ``mlflow.genai.evaluate`` over the stored traces afterwards, without calling the agent
again. For a database tracking URI the traces are written row-first in batches by a writer process
(:mod:`agent_release.steps.trace_export`). A case whose trace never reached the store gets a stand-in trace
with its scores, so every row has one. The per-case table is logged with
``mlflow.log_table`` on each variant run and on the parent run; aggregates carry a standard error and a 95%
CI clustered by the case's cluster key.

Usage (the pipeline has set ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` and the tracking URI)::

    report = evaluate_variants(config.evaluate, registration, cases, dataset_name="golden",
                               dataset_hash=digest, system_prompt=prompt, tools_factory=lambda: tools,
                               experiment="agent-release")
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent_release.agents.builder import ModelBinding, build_agent, build_model, environment_region
from agent_release.agents.call_slots import slotted
from agent_release.steps.abandoned_runs import EVALUATION_KEY_TAG, check_evaluation_key, close_abandoned_runs
from agent_release.steps.agent_tracing import apply_tracing_environment, traced_as
from agent_release.steps.eval_harness import (
    CaseOutcome,
    CaseUnit,
    ModelCallRetries,
    ProgressEvent,
    log_stand_in_traces,
    run_cases,
)
from agent_release.steps.evaluate_config import EvaluateConfig
from agent_release.steps.evaluation_records import CaseResult, EvaluationReport, VariantEvaluation
from agent_release.steps.registration_records import RegisteredAgent, RegistrationReport
from agent_release.steps.run_bookkeeping import RunBookkeeping
from agent_release.steps.scorers import (
    BuiltScorer,
    build_scorers,
    case_cost,
    effective_specs,
    price_tables,
    score_bounds,
)
from agent_release.steps.store_calls import StoreCall, offload_store_calls
from agent_release.steps.validate_datasets import case_cluster

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from agent_release.steps.inline_scoring import InlineScoring

logger = logging.getLogger(__name__)

__all__ = ["EvaluationInputError", "ProgressEvent", "TraceFlushProgress", "evaluate_variants"]

CASES_TABLE = "eval_cases.json"
SCORER_SPECS_FILE = "scorer_specs.json"
# While a variant's final trace flush goes on, a progress note this often (seconds): with thousands of
# cases the writer can be tens of seconds behind the last case, which used to pass without a word.
FLUSH_PROGRESS_EVERY_S = 10.0


@dataclass(frozen=True)
class TraceFlushProgress:
    """Sent every :data:`FLUSH_PROGRESS_EVERY_S` while a variant's cases are done and its traces are still
    being written to MLflow: ``traces_left`` queued in this process (None when MLflow's own exporter
    writes them, which does not say), ``waited_s`` since the flush began."""

    variant: str
    traces_left: int | None
    waited_s: float


EvaluationProgress = ProgressEvent | TraceFlushProgress

ModelFactory = Callable[[RegisteredAgent], Any]


class TracesNotStored(RuntimeError):
    """Stand-in traces for cases whose own trace was not stored were refused by the store too."""


class EvaluationInputError(ValueError):
    """The cases or the registration cannot be evaluated (message is one line)."""


def evaluate_variants(
    config: EvaluateConfig,
    registration: RegistrationReport,
    cases: Sequence[Mapping[str, Any]],
    *,
    dataset_name: str,
    dataset_hash: str,
    system_prompt: str,
    tools_factory: Callable[[], list[Any]],
    experiment: str,
    progress: Callable[[EvaluationProgress], None] | None = None,
    model_factory: ModelFactory | None = None,
    region: str | None = None,
    evaluation_key: str | None = None,
) -> EvaluationReport:
    """Evaluate every registered agent on ``cases`` and return the per-case rows and per-variant aggregates.

    ``cases`` follow the golden schema (``id``, ``input``, ``expected_tool_calls``, ``expected_facts``,
    ``cluster``, ``tags``). ``tools_factory`` is called once per variant; the tools are shared by that
    variant's agents. ``model_factory`` overrides how a variant's model is built (default: a
    ``SageMakerAIModel`` bound to the endpoint and variant, with botocore retrying ``config.max_retries``
    times). ``evaluation_key``, the same for every attempt at this evaluation, tags its runs; the runs an
    interrupted attempt left RUNNING under it are marked KILLED first (:mod:`.abandoned_runs`). Raises
    :class:`EvaluationInputError` for unusable cases and
    :class:`~agent_release.steps.scorers.ScorerConfigError` for a bad scorer spec.
    """
    import mlflow

    # Imported here, not at the top: both import MLflow, and the CLI builds the step list (compile, run)
    # from this module without needing it.
    from agent_release.steps.trace_export import install_row_first_export

    apply_tracing_environment()
    row_first = install_row_first_export()
    units = _units(cases, config.repeats)
    expectations = {str(c["id"]): _expectations(c) for c in cases}
    scorers = build_scorers(effective_specs(config))
    specs = [b.spec for b in scorers]
    if not registration.agents:
        raise EvaluationInputError("no registered agents to evaluate")
    make_model = model_factory or _default_model_factory(config, region)
    key_tags = {EVALUATION_KEY_TAG: check_evaluation_key(evaluation_key)} if evaluation_key else {}

    experiment_id = mlflow.set_experiment(experiment).experiment_id
    client = mlflow.MlflowClient()
    if evaluation_key:
        close_abandoned_runs(client, experiment_id, evaluation_key)
    variants: list[VariantEvaluation] = []
    rows: list[CaseResult] = []
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"evaluate-{dataset_name}", tags=key_tags
    ) as parent:
        for index, agent in enumerate(registration.agents):
            evaluation, agent_rows = _evaluate_one(
                agent,
                client=client,
                # The parent's provenance is written with the first variant's, once that run exists:
                # queued earlier, its transaction would hold up the variant run's creation.
                also_record=[parent.info.run_id] if index == 0 else [],
                config=config,
                units=units,
                expectations=expectations,
                scorers=scorers,
                specs=specs,
                experiment_id=experiment_id,
                dataset_name=dataset_name,
                dataset_hash=dataset_hash,
                system_prompt=system_prompt,
                tools=tools_factory(),
                model=make_model(agent),
                progress=progress,
                row_first=row_first,
                key_tags=key_tags,
                # The last variant's writes carry the parent's combined table (to the writer process).
                parent_table=(
                    (parent.info.run_id, list(rows)) if index == len(registration.agents) - 1 else None
                ),
            )
            variants.append(evaluation)
            rows.extend(agent_rows)
        table_uri = f"{parent.info.artifact_uri.rstrip('/')}/{CASES_TABLE}"
    return EvaluationReport(
        dataset_name=dataset_name,
        dataset_hash=dataset_hash,
        repeats=config.repeats,
        scorer_specs=tuple(specs),
        variants=tuple(variants),
        rows=tuple(rows),
        table_artifact_uri=table_uri,
    )


def _default_model_factory(config: EvaluateConfig, region: str | None) -> ModelFactory:
    def make(agent: RegisteredAgent) -> Any:
        return build_model(
            ModelBinding(
                endpoint_name=agent.endpoint_name,
                variant=agent.variant,
                region=region or environment_region(),
                max_tokens=agent.inference.max_tokens,
                temperature=agent.inference.temperature,
                stream=agent.inference.stream,
                read_timeout_s=config.timeout_s,
                max_attempts=config.max_retries + 1,
            )
        )

    return make


def row_prices(config: EvaluateConfig, specs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The price table a row's ``cost`` is computed from: the ``cost`` scorer's own ``prices`` when it is
    configured (``args`` may set them instead of ``evaluate.prices``), read as the scorer reads them, so the
    row's cost, which the gate's cost guardrail and the report read, is the cost the scorer scored; else
    ``evaluate.prices``."""
    for spec in specs:
        if spec["name"] == "cost" and spec["args"].get("prices") is not None:
            return price_tables(spec["args"]["prices"])
    return {name: table.model_dump() for name, table in config.prices.items()}


def _units(cases: Sequence[Mapping[str, Any]], repeats: int) -> list[CaseUnit]:
    if not cases:
        raise EvaluationInputError("the evaluation dataset has no cases")
    seen: set[str] = set()
    base: list[CaseUnit] = []
    for i, case in enumerate(cases):
        if not case.get("id") or not isinstance(case.get("input"), str):
            raise EvaluationInputError(f"case #{i} needs an 'id' and a text 'input'")
        case_id = str(case["id"])
        if case_id in seen:
            raise EvaluationInputError(f"case id '{case_id}' appears twice")
        seen.add(case_id)
        tags = {str(k): str(v) for k, v in (case.get("tags") or {}).items()}
        base.append(CaseUnit(case_id, case_cluster(case), str(case["input"]), 0, tags))
    return [CaseUnit(u.case_id, u.cluster, u.input, r, u.tags) for r in range(repeats) for u in base]


def _expectations(case: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "expected_facts": list(case.get("expected_facts") or []),
        "expected_tool_calls": [
            {"name": c.get("name"), "arguments": dict(c.get("arguments") or {})}
            for c in case.get("expected_tool_calls") or []
        ],
    }


def _provenance(
    config: EvaluateConfig, dataset_name: str, dataset_hash: str, specs: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The params that make an evaluation run self-describing (parent and variant runs alike)."""
    return {
        "dataset_name": dataset_name,
        "dataset_hash": dataset_hash,
        "repeats": config.repeats,
        "concurrency": config.concurrency,
        "staged": config.staged_cases,
        "timeout_s": config.timeout_s,
        "max_retries": config.max_retries,
        "scorers": ",".join(str(s["name"]) for s in specs),
    }


def _log_provenance(
    books: RunBookkeeping,
    client: MlflowClient,
    run_id: str,
    params: Mapping[str, Any],
    specs: Sequence[Mapping[str, Any]],
    tags: Mapping[str, str] | None = None,
) -> None:
    """Queue ``params`` and ``tags`` (one transaction) and the exact scorer specs file for ``run_id``."""
    from mlflow.entities import Param, RunTag

    books.submit(
        client.log_batch,
        run_id,
        params=[Param(key, str(value)) for key, value in params.items()],
        tags=[RunTag(key, value) for key, value in (tags or {}).items()],
    )
    books.submit(client.log_dict, run_id, {"scorer_specs": list(specs)}, SCORER_SPECS_FILE)


def _evaluate_one(
    agent: RegisteredAgent,
    *,
    client: MlflowClient,
    also_record: Sequence[str],
    config: EvaluateConfig,
    units: Sequence[CaseUnit],
    expectations: Mapping[str, Mapping[str, Any]],
    scorers: Sequence[BuiltScorer],
    specs: Sequence[Mapping[str, Any]],
    experiment_id: str,
    dataset_name: str,
    dataset_hash: str,
    system_prompt: str,
    tools: list[Any],
    model: Any,
    progress: Callable[[EvaluationProgress], None] | None,
    row_first: bool,
    key_tags: Mapping[str, str],
    parent_table: tuple[str, list[CaseResult]] | None = None,
) -> tuple[VariantEvaluation, list[CaseResult]]:
    import mlflow
    from mlflow.entities import LoggedModelInput, Metric

    from agent_release.steps.inline_scoring import InlineScoring
    from agent_release.steps.trace_export import hurry_trace_writes, recording_stored_traces

    ModelCallRetries(max_attempts=config.max_retries + 1).attach(model)
    # Bounds the model calls in flight to ``concurrency`` while ``staged`` more cases get ready.
    slotted_model = slotted(model)
    with (
        # The key is written with the run itself: a kill before the bookkeeping thread's first write must
        # still leave a run the next attempt can find and close.
        mlflow.start_run(
            experiment_id=experiment_id,
            run_name=f"evaluate-{agent.variant}",
            nested=True,
            tags=dict(key_tags),
        ) as run,
        # Held until the first wave of model calls is on its way (run_cases' on_first_wave).
        RunBookkeeping(held=True) as books,
    ):
        run_id = run.info.run_id
        # Written while the first cases wait for the endpoint (see steps/run_bookkeeping.py).
        provenance = _provenance(config, dataset_name, dataset_hash, specs)
        _log_provenance(
            books,
            client,
            run_id,
            {**provenance, "variant": agent.variant, "role": agent.role, "endpoint": agent.endpoint_name},
            specs,
            tags={"agent_release.step": "evaluate_variants", "agent_release.variant": agent.variant},
        )
        for other_run_id in also_record:
            _log_provenance(books, client, other_run_id, provenance, specs)
        # The agent is the run's input; the metrics below name it too, which links them to its LoggedModel.
        # (mlflow.log_metrics(model_id=...) would log this input once per metric, ~25 ms at the end.)
        books.submit(client.log_inputs, run_id, models=[LoggedModelInput(agent.logged_model_id)])
        started = time.perf_counter()
        inline = InlineScoring(scorers, expectations, run_id=run_id) if config.scoring == "inline" else None
        if inline is not None:
            books.submit(inline.prepare)  # while the first wave waits, not before it starts
        with recording_stored_traces() as stored:
            with traced_as(agent.logged_model_id):
                outcomes = run_cases(
                    units,
                    make_agent=lambda unit: build_agent(
                        slotted_model, system_prompt, tools, trace_attributes={"eval.case_id": unit.case_id}
                    ),
                    staged=config.staged_cases,
                    variant=agent.variant,
                    concurrency=config.concurrency,
                    timeout_s=config.timeout_s,
                    progress=progress,
                    score=inline,
                    # Once the slots start to empty, traces are written as they come, not gathered.
                    on_tail=hurry_trace_writes,
                    on_first_wave=books.go,
                )
            ran = time.perf_counter()
            prices = row_prices(config, specs)
            bounds = score_bounds(specs)
            # The final flush is mostly a wait for the writer process. With inline scoring every case
            # already holds its scores, so the results are prepared in this process meanwhile; they are
            # prepared again only if a trace turns out missing and its stand-in changes the row.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-release-flush") as pool:
                flushing = pool.submit(mlflow.flush_trace_async_logging)
                prepared = (
                    None
                    if inline is None
                    else _results(outcomes, agent, _held_scores(outcomes), prices, bounds)
                )
                _wait_for_flush(flushing, agent.variant, progress)
        flushed = time.perf_counter()
        if inline is not None:
            # The row-first writer says which trace rows it committed; otherwise the store is asked.
            found = stored if row_first else _run_trace_ids(experiment_id, run_id)
            stood_in = _stand_in_missing(
                outcomes,
                found,
                run_id,
                experiment_id=experiment_id,
                logged_model_id=agent.logged_model_id,
                row_first=row_first,
                score=inline,
            )
            results = (
                prepared
                if prepared is not None and not stood_in
                else _results(outcomes, agent, _held_scores(outcomes), prices, bounds)
            )
        else:
            scores = _score(outcomes, expectations, scorers, experiment_id, run_id, agent)
            results = _results(outcomes, agent, scores, prices, bounds, with_means=False)
        logger.info(
            "variant=<%s>, run_s=<%.2f>, flush_s=<%.2f>, score_s=<%.2f> | evaluation timings",
            agent.variant,
            ran - started,
            flushed - ran,
            time.perf_counter() - flushed,
        )
        rows = results.rows
        books.wait()  # the bookkeeping is in (or its failure raised) before any result is logged
        # The variant's metrics, and on the last variant the parent run's table (every variant's rows), are
        # logged by the trace writer process, whose traces are all in, while this process logs the
        # variant's table (see steps/store_calls.py).
        now_ms = int(time.time() * 1000)
        metrics = [
            Metric(key, value, now_ms, 0, model_id=agent.logged_model_id, run_id=run_id)
            for key, value in results.metrics.items()
        ]
        calls = [StoreCall("log_batch", (run_id,), {"metrics": metrics})]
        if parent_table is not None:
            parent_run_id, earlier_rows = parent_table
            frame = _rows_frame([*earlier_rows, *rows])
            calls.append(
                StoreCall("log_table", (parent_run_id,), {"data": frame, "artifact_file": CASES_TABLE})
            )
        offloaded = offload_store_calls(calls)
        try:
            mlflow.log_table(data=results.frame, artifact_file=CASES_TABLE)
        except BaseException:
            offloaded.settle()  # the runs end (FAILED) only once the writer is done with them
            raise
        offloaded.wait()
    errored = sum(1 for r in rows if r.error)
    scorer_errors = scorer_error_counts(rows)
    for name, count in scorer_errors.items():
        first = next(r.scorer_errors[name] for r in rows if name in r.scorer_errors)
        logger.warning(
            "variant=<%s>, scorer=<%s>, cases=<%d>, first=<%s> | scorer raised; those rows have no score from it",
            agent.variant,
            name,
            count,
            first,
        )
    logger.info(
        "variant=<%s>, cases=<%d>, errors=<%d>, run_id=<%s> | evaluated",
        agent.variant,
        len(rows),
        errored,
        run_id,
    )
    evaluation = VariantEvaluation(
        variant=agent.variant,
        role=agent.role,
        cases_expected=len(units),
        cases_completed=len(rows) - errored,
        cases_errored=errored,
        retries=sum(r.retries for r in rows),
        scorer_errors=scorer_errors,
        mlflow_run_id=run_id,
        logged_model_id=agent.logged_model_id,
        aggregates=results.aggregates,
    )
    return evaluation, rows


def _wait_for_flush(
    flushing: Future[Any], variant: str, progress: Callable[[EvaluationProgress], None] | None
) -> None:
    """Wait for the final trace flush, telling ``progress`` every :data:`FLUSH_PROGRESS_EVERY_S` how many
    traces are still queued (only waits and reads the writer's backlog: the writing is the writer's)."""
    started = time.perf_counter()
    while True:
        try:
            flushing.result(timeout=FLUSH_PROGRESS_EVERY_S)
            return
        except FutureTimeout:
            if flushing.done():  # the flush itself raised a TimeoutError: not ours to wait out
                raise
            if progress is not None:
                progress(TraceFlushProgress(variant, _traces_queued(), time.perf_counter() - started))


def _traces_queued() -> int | None:
    """Traces queued for the row-first writer, not yet in a batch being written (None with MLflow's own
    exporter)."""
    from mlflow.tracing.provider import _get_trace_exporter

    from agent_release.steps.trace_export import RowFirstTraceExporter

    exporter = _get_trace_exporter()  # type: ignore[no-untyped-call]
    if not isinstance(exporter, RowFirstTraceExporter):
        return None
    pending, _busy = exporter.writer.backlog()
    return pending


@dataclass(frozen=True)
class _Results:
    """One variant's results, ready to log: the per-case rows, their aggregates and metrics, the table."""

    rows: list[CaseResult]
    aggregates: dict[str, dict[str, float]]
    metrics: dict[str, float]
    frame: Any


def _results(
    outcomes: Sequence[CaseOutcome],
    agent: RegisteredAgent,
    scores: Mapping[str, Mapping[str, float | None]],
    prices: Mapping[str, Mapping[str, float]],
    bounds: Mapping[str, tuple[float, float]],
    *,
    with_means: bool = True,
) -> _Results:
    """The rows of ``outcomes`` with ``scores`` (unit key -> name -> value), aggregated (CIs cut to
    ``bounds``, see :func:`aggregate_rows`), as metrics and as the per-case table. ``with_means``: also the
    ``<score>/mean`` metrics (``mlflow.genai.evaluate`` logs those itself)."""
    rows = [_row(o, agent, scores.get(o.unit.key, {}), prices) for o in outcomes]
    aggregates = aggregate_rows(rows, bounds)
    return _Results(
        rows, aggregates, _flat_metrics(aggregates, rows, with_means=with_means), _rows_frame(rows)
    )


def _held_scores(outcomes: Sequence[CaseOutcome]) -> dict[str, dict[str, float | None]]:
    """The scores each case logged inside its trace (inline scoring). Unit key -> name -> value."""
    return {o.unit.key: dict(o.scores) for o in outcomes}


def _run_trace_ids(experiment_id: str, run_id: str) -> set[str]:
    import mlflow

    found = mlflow.search_traces(
        locations=[experiment_id], run_id=run_id, return_type="list", include_spans=False
    )
    return {t.info.trace_id for t in found}


def _stand_in_missing(
    outcomes: Sequence[CaseOutcome],
    persisted: Collection[str],
    run_id: str,
    *,
    experiment_id: str,
    logged_model_id: str,
    row_first: bool,
    score: InlineScoring | None = None,
) -> bool:
    """Log a stand-in trace for every outcome whose trace is not among ``persisted``; True if any.

    The stand-ins link to the variant's LoggedModel as the cases' own traces do, and each must be stored:
    one the store refuses as well raises :class:`TracesNotStored` before any result is logged (a row whose
    trace id names no trace broke "every trace persisted" silently). ``row_first`` says the row-first
    writer records what it stores; otherwise the run's traces are searched.
    """
    import mlflow

    from agent_release.steps.trace_export import recording_stored_traces

    missing = {o.trace_id for o in outcomes if o.trace_id not in persisted}
    if not missing:
        return False
    logger.warning("run_id=<%s>, missing=<%d> | traces not exported; logging stand-ins", run_id, len(missing))
    standing_in = [o for o in outcomes if o.trace_id in missing]
    with recording_stored_traces() as stored, traced_as(logged_model_id):
        log_stand_in_traces(outcomes, missing, score=score)
        mlflow.flush_trace_async_logging()
    found = stored if row_first else _run_trace_ids(experiment_id, run_id)
    lost = [o for o in standing_in if o.trace_id not in found]
    if lost:
        raise TracesNotStored(
            f"{len(lost)} case(s) whose trace the tracking store did not keep could not be stored as stand-in "
            f"traces either (first: case {lost[0].unit.case_id!r}); no result of this evaluation was logged, "
            "and `run --resume` evaluates again"
        )
    return True


def _score(
    outcomes: Sequence[CaseOutcome],
    expectations: Mapping[str, Mapping[str, Any]],
    scorers: Sequence[BuiltScorer],
    experiment_id: str,
    run_id: str,
    agent: RegisteredAgent,
) -> dict[str, dict[str, float | None]]:
    """Score the outcomes' traces with ``mlflow.genai.evaluate``; unit key -> scorer name -> value."""
    import mlflow
    import pandas as pd
    from mlflow.entities import AssessmentError

    from agent_release.steps.inline_scoring import as_score, error_text

    traces = _run_traces(experiment_id, run_id)
    if _stand_in_missing(
        outcomes,
        traces,
        run_id,
        experiment_id=experiment_id,
        logged_model_id=agent.logged_model_id,
        row_first=False,
    ):
        traces = _run_traces(experiment_id, run_id)
    data = pd.DataFrame(
        [
            {
                "trace": traces[o.trace_id or ""],
                "inputs": o.unit.scorer_inputs(),
                "outputs": o.outputs(),
                "expectations": dict(expectations[o.unit.case_id]),
            }
            for o in outcomes
        ]
    )
    # evaluate prints a "✨ Evaluation completed" banner to stdout, which is the channel of `--json` results:
    # keep it in the debug log instead.
    banner = io.StringIO()
    with contextlib.redirect_stdout(banner):
        result = mlflow.genai.evaluate(
            data=data, scorers=[b.scorer for b in scorers], model_id=agent.logged_model_id
        )
    logger.debug("variant=<%s> | mlflow evaluate said: %s", agent.variant, banner.getvalue().strip())
    frame = result.result_df
    names = [b.name for b in scorers]
    by_trace: dict[str, dict[str, float | None]] = {}
    errors_by_trace: dict[str, dict[str, str]] = {}
    for record in frame.to_dict(orient="records") if frame is not None else []:
        trace_id = str(record.get("trace_id"))
        by_trace[trace_id] = {n: as_score(record.get(f"{n}/value")) for n in names}
        errors_by_trace[trace_id] = {}
        for n in names:
            code, message = _cell(record.get(f"{n}/error_code")), _cell(record.get(f"{n}/error_message"))
            if code or message:
                error = AssessmentError(error_code=code or "SCORER_ERROR", error_message=message)
                errors_by_trace[trace_id][n] = error_text(error)
    for o in outcomes:
        o.scorer_errors.update(errors_by_trace.get(o.trace_id or "", {}))
        if o.trace_id not in by_trace:
            # mlflow.genai.evaluate gave no result for this case (it returns no table at all when a score
            # cannot be serialised): the row must say it was not scored, not pass for "not applicable".
            o.scorer_errors["*"] = "mlflow.genai.evaluate returned no scores for this case"
    return {o.unit.key: by_trace.get(o.trace_id or "", {}) for o in outcomes}


def _cell(value: Any) -> str | None:
    """A cell of ``mlflow.genai.evaluate``'s result table as text; None when empty (None, or pandas' NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _run_traces(experiment_id: str, run_id: str) -> dict[str, Any]:
    import mlflow

    found = mlflow.search_traces(locations=[experiment_id], run_id=run_id, return_type="list")
    return {t.info.trace_id: t for t in found}


def _row(
    outcome: CaseOutcome,
    agent: RegisteredAgent,
    scores: Mapping[str, float | None],
    prices: Mapping[str, Mapping[str, float]],
) -> CaseResult:
    return CaseResult(
        case_id=outcome.unit.case_id,
        cluster=outcome.unit.cluster,
        variant=agent.variant,
        role=agent.role,
        repeat=outcome.unit.repeat,
        scores=dict(scores),
        error=outcome.error,
        latency_s=outcome.latency_s,
        input_tokens=outcome.input_tokens,
        output_tokens=outcome.output_tokens,
        cost=case_cost(agent.variant, outcome.input_tokens, outcome.output_tokens, prices),
        retries=outcome.retries,
        trace_id=outcome.trace_id,
        tags=dict(outcome.unit.tags),
        scorer_errors=dict(outcome.scorer_errors),
    )


def scorer_error_counts(rows: Sequence[CaseResult]) -> dict[str, int]:
    """Scorer name -> how many of ``rows`` it raised on."""
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        for name in row.scorer_errors:
            counts[name] += 1
    return dict(sorted(counts.items()))


def aggregate_rows(
    rows: Sequence[CaseResult], bounds: Mapping[str, tuple[float, float]] | None = None
) -> dict[str, dict[str, float]]:
    """Per score: mean, clustered SE and 95% CI over the rows that have it (K repeats share a cluster).

    With fewer than two clusters no SE exists: only ``mean``, ``n`` and ``n_clusters`` are given.
    ``bounds`` (score name -> the values it can take, :func:`~agent_release.steps.scorers.score_bounds`)
    cuts each CI to its score's range: the t interval around a rate near 0 or 1 on few clusters can
    otherwise reach values no case can score, such as a negative error rate.
    """
    from agent_release.steps.paired_stats import clustered_mean

    values: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for row in rows:
        for name, value in row.scores.items():
            if value is not None:
                values[name].append((value, row.cluster))
    aggregates: dict[str, dict[str, float]] = {}
    for name, pairs in sorted(values.items()):
        xs = [v for v, _ in pairs]
        clusters = [c for _, c in pairs]
        n_clusters = len(set(clusters))
        if n_clusters < 2:
            aggregates[name] = {
                "mean": sum(xs) / len(xs),
                "n": float(len(xs)),
                "n_clusters": float(n_clusters),
            }
            continue
        est = clustered_mean(xs, clusters)
        low, high = (bounds or {}).get(name, (-math.inf, math.inf))
        aggregates[name] = {
            "mean": est.mean,
            "se": est.se,
            "ci_low": max(est.ci_low, low),
            "ci_high": min(est.ci_high, high),
            "n": float(est.n),
            "n_clusters": float(est.n_clusters),
        }
    return aggregates


def _flat_metrics(
    aggregates: Mapping[str, Mapping[str, float]], rows: Sequence[CaseResult], *, with_means: bool
) -> dict[str, float]:
    # mlflow.genai.evaluate logs "<scorer>/mean" itself; inline scoring logs it here under the same name.
    # The other names add the clustered uncertainty.
    metrics = {
        "cases_completed": float(sum(1 for r in rows if not r.error)),
        "cases_errored": float(sum(1 for r in rows if r.error)),
        "retries": float(sum(r.retries for r in rows)),
        "scorer_errors": float(sum(len(r.scorer_errors) for r in rows)),
    }
    for name, agg in aggregates.items():
        if with_means:
            metrics[f"{name}/mean"] = agg["mean"]
        for key, out in (("se", "clustered_se"), ("ci_low", "ci95_low"), ("ci_high", "ci95_high")):
            if key in agg:
                metrics[f"{name}/{out}"] = agg[key]
    return metrics


def _rows_frame(rows: Sequence[CaseResult]) -> Any:
    import pandas as pd

    names = sorted({n for r in rows for n in r.scores})
    return pd.DataFrame(
        [
            {
                "case_id": r.case_id,
                "cluster": r.cluster,
                "variant": r.variant,
                "role": r.role,
                "repeat": r.repeat,
                **{f"score.{n}": r.scores.get(n) for n in names},
                "latency_s": r.latency_s,
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "cost": r.cost,
                "error": r.error,
                "retries": r.retries,
                "trace_id": r.trace_id,
                "tags": json.dumps(dict(r.tags), sort_keys=True),
                "scorer_errors": json.dumps(dict(r.scorer_errors), sort_keys=True),
            }
            for r in rows
        ]
    )
