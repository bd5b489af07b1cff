"""Score a case inside its own trace, so its scores are written with the trace in one transaction.

``mlflow.genai.evaluate`` scores traces that are already in the tracking store: it writes each score as its
own transaction (``create_assessment``) and reads every trace back afterwards, about 60 ms of CPU per case
on SQLite, which caps one process near 9 cases/s whatever the concurrency (docs/performance.md). This module
runs the *same* MLflow scorers the same way (``Scorer.run``, ``standardize_scorer_value``, scorer metadata,
a ``SCORER_ERROR`` feedback when a scorer raises, the dataset expectations as ``Expectation``\\ s) while the
case's root span is still open, and logs every assessment with ``mlflow.log_assessment``. MLflow keeps an
assessment logged on the *active* trace in memory and writes it with the trace itself (``start_trace``
persists ``TraceInfo.assessments`` in the same transaction), so a case costs one trace write instead of one
write per score plus a read-back.

A scorer that asks for ``trace`` sees the case's spans as they stand: every span has ended except the root
``eval_case`` span, whose inputs and outputs are already set.

Usage (inside the case's root span, i.e. the harness calls it)::

    scoring = InlineScoring(build_scorers(specs), expectations_by_case_id, run_id=run.info.run_id)
    values = scoring(outcome)        # {"answer_correctness": 1.0, ...}; assessments are on the trace
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers
import re
import threading
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import mlflow
from mlflow.entities import AssessmentError, AssessmentSource, AssessmentSourceType, Expectation, Feedback
from mlflow.genai.evaluation.utils import (
    add_scorer_metadata,
    make_code_type_assessment_source,
    standardize_scorer_value,
)
from mlflow.tracing.constant import AssessmentMetadataKey

from agent_release.steps.eval_harness import CaseOutcome
from agent_release.steps.scorers import BuiltScorer

logger = logging.getLogger(__name__)

__all__ = ["InlineScoring", "as_score", "error_text"]

# How much of a scorer's error message a per-case row keeps (the whole one is on the trace).
ERROR_TEXT_LIMIT = 300


def as_score(value: Any) -> float | None:
    """A feedback value as a number for the per-case table: bools become 0/1, and so do the ratings "yes" and
    "no" (what MLflow's own judges return, which ``mlflow.genai.evaluate`` averages the same way); other text
    and NaN become None."""
    if isinstance(value, str):
        rating = value.strip().lower()
        return 1.0 if rating == "yes" else 0.0 if rating == "no" else None
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def error_text(error: Any) -> str:
    """One line for a scorer's ``AssessmentError``: the exception's type (from its traceback) and message,
    else the error code and message; whitespace folded, at most :data:`ERROR_TEXT_LIMIT` characters."""
    message = " ".join(str(getattr(error, "error_message", None) or "").split())
    stack = str(getattr(error, "stack_trace", None) or "").splitlines()
    raised = next((m.group(1) for line in reversed(stack) if (m := _EXCEPTION_LINE.match(line))), None)
    label = raised or getattr(error, "error_code", None)
    line = f"{label}: {message}" if label and message else str(label or message or "scorer error")
    return line[:ERROR_TEXT_LIMIT]


# The line of a traceback that names the exception: "ValueError: ...", "pkg.errors.Boom", "KeyError: 'x'".
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")


def _wants_trace(scorer: Any) -> bool:
    try:
        return "trace" in inspect.signature(scorer.__call__).parameters
    except (TypeError, ValueError):
        return True


class InlineScoring:
    """Callable that scores one finished case and logs the assessments on its (still active) trace."""

    def __init__(
        self,
        scorers: Sequence[BuiltScorer],
        expectations: Mapping[str, Mapping[str, Any]],
        *,
        run_id: str | None,
    ) -> None:
        self.scorers = list(scorers)
        self.expectations = expectations
        self.run_id = run_id
        self._needs_trace = any(_wants_trace(b.scorer) for b in self.scorers)
        self._shared_lock = threading.Lock()
        self._shared: tuple[dict[str, dict[str, str]], AssessmentSource] | None = None

    def prepare(self) -> None:
        """Work out what every case's scoring shares, once: the scorer provenance MLflow attaches to each
        feedback (a digest of the scorer's definition, which re-serialises the scorer) and the source of the
        dataset's expectations. The first case scored does it if nothing did before; the evaluation runs it
        on its bookkeeping thread while the first wave of calls waits for the endpoint, instead of before
        the first case starts (6-9 ms on the 2-core machine)."""
        self._shared_parts()

    def _shared_parts(self) -> tuple[dict[str, dict[str, str]], AssessmentSource]:
        with self._shared_lock:  # scoring threads and the bookkeeping thread: computed once
            if self._shared is None:
                metadata = {b.name: _scorer_metadata(b.scorer) for b in self.scorers}
                self._shared = (metadata, _expectation_source())
            return self._shared

    def __call__(self, outcome: CaseOutcome) -> dict[str, float | None]:
        """Score ``outcome`` (call it inside the case's root span); returns feedback name -> number."""
        trace_id = mlflow.get_active_trace_id()
        if trace_id is None or trace_id != outcome.trace_id:
            raise RuntimeError(f"case {outcome.unit.key}: scoring must run inside the case's own trace")
        span = mlflow.get_current_active_span()
        root_span_id = span.span_id if span is not None else None
        unit = outcome.unit
        inputs = unit.scorer_inputs()
        expectations = dict(self.expectations.get(unit.case_id, {}))
        trace = _active_trace_snapshot(trace_id) if self._needs_trace else None
        values: dict[str, float | None] = {}
        # Feedback name -> the scorer it belongs to: each scorer's own name, and the names it gave on this
        # case. Another scorer's feedback of that name is refused, whichever runs first.
        owners: dict[str, str] = {b.name: b.name for b in self.scorers}
        outputs = outcome.outputs()
        scorer_metadata, expectation_source = self._shared_parts()
        for built in self.scorers:
            for given in self._run_scorer(built, inputs, outputs, expectations, trace):
                feedback = _checked_feedback(built.name, given, owners)
                owners.setdefault(feedback.name, built.name)
                feedback.metadata = {**scorer_metadata[built.name], **(feedback.metadata or {})}
                values[feedback.name] = None if feedback.error is not None else as_score(feedback.value)
                if feedback.error is not None:
                    outcome.scorer_errors[feedback.name] = error_text(feedback.error)
                self._log(trace_id, root_span_id, feedback)
        for name, value in expectations.items():
            self._log(trace_id, root_span_id, Expectation(name=name, value=value, source=expectation_source))
        return values

    @staticmethod
    def _run_scorer(
        built: BuiltScorer,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
        expectations: Mapping[str, Any],
        trace: Any,
    ) -> list[Any]:
        scorer = built.scorer
        try:
            value = scorer.run(inputs=inputs, outputs=outputs, expectations=expectations, trace=trace)
            feedbacks: list[Any] = standardize_scorer_value(scorer.name, value)
        except (Exception, SystemExit) as exc:  # a SCORER_ERROR feedback, as in mlflow.genai.evaluate
            # A scorer that calls sys.exit fails its row too, instead of ending the evaluation silently.
            if isinstance(exc, SystemExit):
                exc = RuntimeError(f"scorer exited (exit code {exc.code})")
            # Debug only: the evaluation logs one warning per scorer with its count and first error.
            logger.debug("scorer=<%s>, error=<%s> | scorer failed", scorer.name, exc)
            feedbacks = [
                Feedback(
                    name=scorer.name,
                    source=make_code_type_assessment_source(scorer.name),
                    error=AssessmentError(
                        error_code="SCORER_ERROR",
                        error_message=str(exc),
                        stack_trace=traceback.format_exc(),
                    ),
                )
            ]
        return feedbacks

    def _log(self, trace_id: str, root_span_id: str | None, assessment: Any) -> None:
        if self.run_id is not None:
            assessment.metadata = {
                **(assessment.metadata or {}),
                AssessmentMetadataKey.SOURCE_RUN_ID: self.run_id,
            }
            assessment.run_id = self.run_id  # read from the metadata only when the entity is built
        if root_span_id is not None:
            assessment.span_id = root_span_id
        mlflow.log_assessment(trace_id=trace_id, assessment=assessment)


def _checked_feedback(scorer_name: str, feedback: Any, owners: Mapping[str, str]) -> Any:
    """``feedback`` as given by scorer ``scorer_name``, or a ``SCORER_ERROR`` feedback in its place when it
    cannot stand as a score: a non-finite number (NaN or infinity would crash the variant's aggregates, and
    MLflow cannot serialise it on the trace; "not applicable" is None), or a name another scorer already
    gave this case (it would silently replace that scorer's score, e.g. a user scorer's ``Feedback`` named
    ``task_success`` overwriting the gate's primary metric)."""
    if feedback.error is not None:
        return feedback
    owner = owners.get(feedback.name)
    value = feedback.value
    if owner is not None and owner != scorer_name:
        problem, name = (
            f"gave a feedback named '{feedback.name}', the score of scorer '{owner}': name it apart",
            scorer_name,
        )
    elif isinstance(value, numbers.Real) and not math.isfinite(value):
        problem, name = f"returned {value!r}, not a finite number (None means not applicable)", feedback.name
    else:
        return feedback
    logger.debug("scorer=<%s>, problem=<%s> | feedback refused", scorer_name, problem)
    return Feedback(
        name=name,
        source=make_code_type_assessment_source(scorer_name),
        error=AssessmentError(error_code="SCORER_ERROR", error_message=problem),
    )


def _scorer_metadata(scorer: Any) -> dict[str, str]:
    """What ``mlflow.genai.evaluate`` attaches to a scorer's feedback (definition digest, registry ids)."""
    probe = Feedback(name=scorer.name, value=0.0)
    add_scorer_metadata(scorer, [probe])
    return dict(probe.metadata or {})


def _expectation_source() -> AssessmentSource:
    """Who the dataset's expectations come from: the user, resolved as ``mlflow.genai.evaluate`` does."""
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import MLFLOW_USER

    return AssessmentSource(
        source_type=AssessmentSourceType.HUMAN, source_id=resolve_tags().get(MLFLOW_USER, "unknown")
    )


def _active_trace_snapshot(trace_id: str) -> Any:
    """The in-progress trace (ended child spans, open root) for scorers that take ``trace``."""
    from mlflow.tracing.trace_manager import InMemoryTraceManager

    with InMemoryTraceManager.get_instance().get_trace(trace_id) as in_memory:  # type: ignore[no-untyped-call]
        return None if in_memory is None else in_memory.to_mlflow_trace()
