"""Scoring inside the case's trace: the same feedback mlflow.genai.evaluate writes, persisted with the trace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracing.constant import AssessmentMetadataKey

from agent_release.steps.eval_harness import CaseOutcome, CaseUnit
from agent_release.steps.evaluate_config import EvaluateConfig, ScorerSpec
from agent_release.steps.inline_scoring import InlineScoring, as_score
from agent_release.steps.scorers import build_scorers, effective_specs

EXPECTATIONS = {
    "c1": {
        "expected_facts": ["shipped"],
        "expected_tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "ORD-1"}}],
    }
}


def exploding_scorer() -> Any:
    from mlflow.genai.scorers import scorer

    @scorer(name="explodes")
    def explodes(outputs: Any) -> float:
        raise ValueError("scorer bug")

    return explodes


def span_counting_scorer() -> Any:
    from mlflow.genai.scorers import scorer

    @scorer(name="tool_spans")
    def tool_spans(trace: Any) -> int:
        return sum(1 for s in trace.data.spans if s.span_type == "TOOL")

    return tool_spans


@pytest.fixture
def experiment(tmp_path: Path) -> Iterator[str]:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # An explicit artifact location: MLflow's default for a database store is ./mlruns in the working directory.
    mlflow.create_experiment("inline-scoring", artifact_location=(tmp_path / "artifacts").as_uri())
    yield mlflow.set_experiment("inline-scoring").experiment_id
    mlflow.set_tracking_uri(None)


def _outcome(answer: str, tool_calls: list[dict[str, Any]], error: str | None = None) -> CaseOutcome:
    return CaseOutcome(
        unit=CaseUnit("c1", "k1", "Where is ORD-1?"),
        variant="challenger",
        answer=answer,
        tool_calls=tool_calls,
        error=error,
        latency_s=0.4,
        input_tokens=100,
        output_tokens=20,
    )


def _score_in_trace(scoring: InlineScoring, outcome: CaseOutcome) -> dict[str, float | None]:
    import mlflow

    with mlflow.start_span(name="eval_case", span_type="AGENT") as root:
        with mlflow.start_span(name="lookup_order", span_type="TOOL"):
            pass
        root.set_outputs(outcome.outputs())
        outcome.trace_id = root.trace_id
        values = scoring(outcome)
    mlflow.flush_trace_async_logging()
    return values


def test_scores_and_expectations_are_persisted_with_the_trace(experiment: str) -> None:
    import mlflow

    scorers = build_scorers(effective_specs(EvaluateConfig()))
    with mlflow.start_run() as run:
        scoring = InlineScoring(scorers, EXPECTATIONS, run_id=run.info.run_id)
        good = _outcome(
            "Your order ORD-1 has shipped.", [{"name": "lookup_order", "arguments": {"order_id": "ORD-1"}}]
        )
        values = _score_in_trace(scoring, good)
    assert values["task_success"] == 1.0 and values["answer_correctness"] == 1.0
    assert values["tool_trajectory"] == 1.0 and values["error"] == 0.0
    assert values["latency"] == pytest.approx(0.4)

    trace = mlflow.get_trace(good.trace_id or "")
    assert trace is not None
    feedback = {a.name: a for a in trace.info.assessments if a.feedback is not None}
    expectations = {a.name: a for a in trace.info.assessments if a.expectation is not None}
    assert set(feedback) == {b.name for b in scorers}
    assert set(expectations) == {"expected_facts", "expected_tool_calls"}
    assert expectations["expected_facts"].value == ["shipped"]
    root = next(s for s in trace.data.spans if s.parent_id is None)
    for name, assessment in feedback.items():
        assert as_score(assessment.value) == values[name]
        assert assessment.span_id == root.span_id
        assert assessment.run_id == run.info.run_id
        assert assessment.source.source_type == "CODE"
        assert (assessment.metadata or {}).get(AssessmentMetadataKey.SCORER_DIGEST, "").startswith("sha256:")


def test_what_every_case_shares_is_worked_out_once_whoever_asks_first(
    experiment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    import mlflow

    from agent_release.steps import inline_scoring

    worked_out: list[str] = []
    scorer_metadata = inline_scoring._scorer_metadata

    def counted(scorer: Any) -> dict[str, str]:
        worked_out.append(scorer.name)
        time.sleep(0.005)  # long enough for the case below to ask while prepare() is at it
        return scorer_metadata(scorer)

    monkeypatch.setattr(inline_scoring, "_scorer_metadata", counted)
    scorers = build_scorers(effective_specs(EvaluateConfig()))
    with mlflow.start_run() as run:
        scoring = InlineScoring(scorers, EXPECTATIONS, run_id=run.info.run_id)
        assert worked_out == []  # not when the scoring is made, before the first case starts
        preparing = threading.Thread(target=scoring.prepare)
        preparing.start()
        case = _outcome("Your order has shipped.", [])
        _score_in_trace(scoring, case)
        preparing.join()
        scoring.prepare()
    assert sorted(worked_out) == sorted(b.name for b in scorers)  # once per scorer
    trace = mlflow.get_trace(case.trace_id or "")
    assert trace is not None
    digests = [
        (a.metadata or {}).get(AssessmentMetadataKey.SCORER_DIGEST, "") for a in trace.info.assessments
    ]
    assert len([d for d in digests if d.startswith("sha256:")]) == len(scorers)


def test_a_wrong_answer_scores_zero(experiment: str) -> None:
    scorers = build_scorers(effective_specs(EvaluateConfig()))
    scoring = InlineScoring(scorers, EXPECTATIONS, run_id=None)
    values = _score_in_trace(scoring, _outcome("I cannot help with that.", []))
    assert values["task_success"] == 0.0 and values["answer_correctness"] == 0.0
    assert values["tool_trajectory"] == 0.0


def test_a_failing_scorer_is_an_error_feedback_not_a_lost_row(experiment: str) -> None:
    import mlflow

    scorers = build_scorers(
        [ScorerSpec(name="error"), ScorerSpec(name="test_inline_scoring:exploding_scorer")]
    )
    scoring = InlineScoring(scorers, EXPECTATIONS, run_id=None)
    outcome = _outcome("shipped", [])
    values = _score_in_trace(scoring, outcome)
    assert values == {"error": 0.0, "explodes": None}
    trace = mlflow.get_trace(outcome.trace_id or "")
    assert trace is not None
    (failed,) = [a for a in trace.info.assessments if a.name == "explodes"]
    assert failed.feedback.error is not None
    assert failed.feedback.error.error_code == "SCORER_ERROR"
    assert "scorer bug" in (failed.feedback.error.error_message or "")
    # The row says the scorer raised (not "not applicable"), with the exception as its traceback names it.
    assert outcome.scorer_errors == {"explodes": "ValueError: scorer bug"}


def test_a_scorer_asking_for_the_trace_sees_the_cases_spans(experiment: str) -> None:
    # Beside a built-in that does not ask for the trace: one scorer asking is enough for the snapshot.
    scorers = build_scorers(
        [ScorerSpec(name="error"), ScorerSpec(name="test_inline_scoring:span_counting_scorer")]
    )
    scoring = InlineScoring(scorers, EXPECTATIONS, run_id=None)
    assert _score_in_trace(scoring, _outcome("shipped", [])) == {"error": 0.0, "tool_spans": 1.0}


def test_scoring_outside_the_cases_trace_is_refused(experiment: str) -> None:
    scoring = InlineScoring(build_scorers([ScorerSpec(name="error")]), EXPECTATIONS, run_id=None)
    outcome = _outcome("shipped", [])
    outcome.trace_id = "tr-not-active"
    with pytest.raises(RuntimeError, match="inside the case's own trace"):
        scoring(outcome)


def test_error_text_is_one_bounded_line() -> None:
    from mlflow.entities import AssessmentError

    from agent_release.steps.inline_scoring import ERROR_TEXT_LIMIT, error_text

    raised = AssessmentError(
        error_code="SCORER_ERROR",
        error_message="bad\nvalue",
        stack_trace="Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: 'bad\nvalue'\n",
    )
    assert error_text(raised) == "KeyError: bad value"  # the type from the traceback, the message folded
    assert error_text(AssessmentError(error_code="JUDGE_TIMEOUT", error_message="no\n answer")) == (
        "JUDGE_TIMEOUT: no answer"
    )
    assert len(error_text(AssessmentError(error_code="E", error_message="x" * 5000))) == ERROR_TEXT_LIMIT
    # Half a line is the half there is; nothing at all still says what happened.
    assert error_text(AssessmentError(error_code="JUDGE_TIMEOUT")) == "JUDGE_TIMEOUT"
    assert error_text(None) == "scorer error"


def test_as_score_reads_ratings_and_bools_as_one_and_zero_and_other_text_as_none() -> None:
    from mlflow.genai.judges import CategoricalRating

    assert [as_score(v) for v in ("yes", " No ", CategoricalRating.YES, True, False)] == [
        1.0,
        0.0,
        1.0,
        1.0,
        0.0,
    ]
    assert [as_score(v) for v in (3, 0.25, -1)] == [3.0, 0.25, -1.0]
    # "maybe", text that looks like a number, no value, NaN and a value that is no number: not a score.
    assert [as_score(v) for v in ("maybe", "0.5", None, float("nan"), {"score": 1})] == [None] * 5


def test_a_feedback_that_cannot_stand_as_a_score_becomes_its_scorers_error() -> None:
    from mlflow.entities import AssessmentError, Feedback

    from agent_release.steps.inline_scoring import _checked_feedback

    owners = {"task_success": "task_success", "shout": "shout"}
    fine = Feedback(name="shout", value=0.5)
    assert _checked_feedback("shout", fine, owners) is fine
    own_extra = Feedback(name="shout_detail", value=1.0)  # a name no scorer owns yet is the scorer's to take
    assert _checked_feedback("shout", own_extra, owners) is own_extra
    raised = Feedback(name="shout", error=AssessmentError(error_code="SCORER_ERROR", error_message="boom"))
    assert _checked_feedback("shout", raised, owners) is raised

    taken = _checked_feedback("shout", Feedback(name="task_success", value=1.0), owners)
    assert taken.name == "shout" and taken.error.error_code == "SCORER_ERROR"
    assert "feedback named 'task_success', the score of scorer 'task_success'" in taken.error.error_message
    for value in (float("inf"), float("-inf"), float("nan")):
        refused = _checked_feedback("shout", Feedback(name="shout", value=value), owners)
        assert refused.name == "shout" and refused.error.error_code == "SCORER_ERROR"
        assert "not a finite number" in refused.error.error_message
