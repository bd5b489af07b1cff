"""evaluate_variants with a scripted Strands model: rows, errors, timeouts, repeats, aggregates, provenance."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from _shared.eval_world import register
from _shared.fake_model import ScriptedModelBase

from agent_release.steps.eval_harness import CaseOutcome, CaseUnit, ProgressEvent, tool_calls_of
from agent_release.steps.evaluate_config import EvaluateConfig, PriceTable, ScorerSpec
from agent_release.steps.evaluate_variants import (
    EvaluationInputError,
    aggregate_rows,
    evaluate_variants,
    row_prices,
    scorer_error_counts,
)
from agent_release.steps.evaluation_records import CaseResult
from agent_release.steps.registration_records import RegisteredAgent, RegistrationReport
from agent_release.steps.scorers import registered_scorers, score_bounds


class ScriptedModel(ScriptedModelBase):
    """A Strands model whose reply depends on the user's text: 'fail' raises, 'slow' stalls, 'ORD-' looks up."""

    def __init__(self, answer: str = "Your order has shipped.") -> None:
        super().__init__()
        self.answer = answer

    async def stream(
        self, messages: list[Any], tool_specs: Any = None, system_prompt: Any = None, **_: Any
    ) -> AsyncIterator[Any]:
        text = messages[0]["content"][0]["text"]
        if "fail" in text:
            raise RuntimeError("upstream exploded")
        if "slow" in text:
            await asyncio.sleep(1.5)
        if "hang" in text:
            await asyncio.sleep(30)
        has_result = any("toolResult" in block for m in messages for block in m["content"])
        yield {"messageStart": {"role": "assistant"}}
        if "list-arguments" in text and not has_result:  # valid JSON, but no object
            yield {"contentBlockStart": {"start": {"toolUse": {"toolUseId": "t1", "name": "lookup_order"}}}}
            yield {"contentBlockDelta": {"delta": {"toolUse": {"input": "[1, 2]"}}}}
            yield {"contentBlockStop": {}}
            yield {"messageStop": {"stopReason": "tool_use"}}
        elif "ORD-" in text and not has_result:
            order = text.split()[-1]
            yield {"contentBlockStart": {"start": {"toolUse": {"toolUseId": "t1", "name": "lookup_order"}}}}
            yield {"contentBlockDelta": {"delta": {"toolUse": {"input": json.dumps({"order_id": order})}}}}
            yield {"contentBlockStop": {}}
            yield {"messageStop": {"stopReason": "tool_use"}}
        else:
            yield {"contentBlockDelta": {"delta": {"text": self.answer}}}
            yield {"contentBlockStop": {}}
            yield {"messageStop": {"stopReason": "end_turn"}}
        yield {
            "metadata": {
                "usage": {"inputTokens": 100, "outputTokens": 10, "totalTokens": 110},
                "metrics": {"latencyMs": 1},
            }
        }


def _strands_model(answer: str = "Your order has shipped.") -> Any:
    from strands.models.model import Model

    cls = type("ScriptedStrandsModel", (ScriptedModel, Model), {})
    return cls(answer)


def _tools() -> list[Any]:
    from strands import tool

    @tool
    def lookup_order(order_id: str) -> dict[str, str]:
        """Look up an order by id."""
        return {"order_id": order_id, "status": "shipped"}

    return [lookup_order]


CASES = [
    {
        "id": f"C-{i}",
        "input": f"where is my order ORD-1000{i}",
        "expected_tool_calls": [{"name": "lookup_order", "arguments": {"order_id": f"ORD-1000{i}"}}],
        "expected_facts": ["shipped"],
        "cluster": f"k{i % 3}",
        "tags": {"intent": "order_status"},
    }
    for i in range(6)
] + [
    {"id": "C-fail", "input": "please fail", "expected_facts": ["shipped"], "cluster": "k0"},
    {"id": "C-slow", "input": "slow question", "expected_facts": ["shipped"], "cluster": "k1"},
]


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # An explicit artifact location: MLflow's default for a database store is ./mlruns in the working directory.
    mlflow.create_experiment("eval-test", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.strands.autolog()
    yield "eval-test"
    mlflow.set_tracking_uri(None)


def _registration(tracking: str) -> RegistrationReport:
    """Champion and challenger, each with its own MLflow LoggedModel, in the test's experiment."""
    return register(tracking, {"champion": "champion", "challenger": "challenger"})


@pytest.mark.slow
def test_evaluate_variants_end_to_end_with_scripted_model(
    tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import mlflow

    from agent_release.steps.inline_scoring import InlineScoring

    # Where each variant's scoring works out what its cases share: the bookkeeping thread, not the step's.
    prepared_on: list[str] = []
    prepare = InlineScoring.prepare

    def recorded_prepare(self: InlineScoring) -> None:
        prepared_on.append(threading.current_thread().name)
        prepare(self)

    monkeypatch.setattr(InlineScoring, "prepare", recorded_prepare)
    registration = _registration(tracking)
    config = EvaluateConfig(
        concurrency=4,
        timeout_s=1.0,
        repeats=2,
        prices={"default": PriceTable(input_per_1k=1.0, output_per_1k=2.0)},
    )
    events: list[ProgressEvent] = []
    # The champion's answer lacks the expected fact, so the two variants must score differently.
    answers = {"champion": "Your order is on its way.", "challenger": "Your order has shipped."}
    report = evaluate_variants(
        config,
        registration,
        CASES,
        dataset_name="golden",
        dataset_hash="sha256:abc",
        system_prompt="You are a support agent.",
        tools_factory=_tools,
        experiment=tracking,
        progress=events.append,
        model_factory=lambda agent: _strands_model(answers[agent.variant]),
    )
    assert report.dataset_hash == "sha256:abc"
    assert len(report.rows) == 2 * len(CASES) * 2
    assert {s["name"] for s in report.scorer_specs} >= {"task_success", "cost", "tool_trajectory"}
    cost_spec = next(s for s in report.scorer_specs if s["name"] == "cost")
    assert cost_spec["args"]["prices"]["default"] == {"input_per_1k": 1.0, "output_per_1k": 2.0}

    challenger = report.rows_for("challenger")
    by_case = {(r.case_id, r.repeat): r for r in challenger}
    ok = by_case[("C-1", 1)]
    assert ok.error is None
    assert ok.scores["task_success"] == 1.0
    assert ok.scores["tool_arguments"] == 1.0
    assert ok.input_tokens == 200  # two model calls of 100 prompt tokens
    assert ok.cost == pytest.approx((200 * 1.0 + 20 * 2.0) / 1000)
    assert ok.scores["cost"] == pytest.approx(ok.cost)
    assert ok.trace_id and ok.tags == {"intent": "order_status"}
    failed = by_case[("C-fail", 0)]
    assert failed.error is not None and "upstream exploded" in failed.error
    assert failed.scores["error"] == 1.0 and failed.scores["answer_correctness"] == 0.0
    slow = by_case[("C-slow", 0)]
    assert slow.error is not None and slow.error.startswith("TimeoutError")
    assert slow.scores["task_success"] == 0.0

    assert len(prepared_on) == 2 and all(n.startswith("agent-release-run-bookkeeping") for n in prepared_on)
    ev = {v.variant: v for v in report.variants}
    assert ev["challenger"].cases_expected == 16
    assert ev["challenger"].cases_errored == 4 and ev["challenger"].cases_completed == 12
    agg = ev["challenger"].aggregates["task_success"]
    assert agg["mean"] == pytest.approx(12 / 16)
    assert agg["n_clusters"] == 3 and agg["ci_low"] < agg["mean"] < agg["ci_high"]

    # Progress: one event per case, ending at the total.
    challenger_events = [e for e in events if e.variant == "challenger"]
    assert [e.done for e in challenger_events] == list(range(1, 17))
    assert challenger_events[-1].errors == 4

    # MLflow: one run per variant linked to its LoggedModel, traces persisted, provenance recorded.
    run = mlflow.get_run(ev["challenger"].mlflow_run_id)
    assert run.data.params["dataset_hash"] == "sha256:abc"
    assert run.data.metrics["task_success/mean"] == pytest.approx(12 / 16)
    assert "task_success/clustered_se" in run.data.metrics
    specs = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/scorer_specs.json")
    assert specs["scorer_specs"] == list(report.scorer_specs)
    table = mlflow.load_table("eval_cases.json", run_ids=[run.info.run_id])
    assert len(table) == 16 and set(table["case_id"]) == {c["id"] for c in CASES}
    traces = mlflow.search_traces(run_id=run.info.run_id, return_type="list")
    assert {t.info.trace_id for t in traces} == {r.trace_id for r in challenger}
    linked = mlflow.search_traces(model_id=ev["challenger"].logged_model_id, return_type="list")
    assert len(linked) == 16
    trace = mlflow.get_trace(ok.trace_id)
    names = [s.name for s in trace.data.spans]
    assert names[0] == "eval_case" and len(names) > 2  # Strands' spans nest under the case span
    assert {a.name for a in trace.info.assessments} >= {"task_success", "expected_facts"}
    model = mlflow.get_logged_model(ev["challenger"].logged_model_id)
    assert any(m.key == "task_success/mean" for m in model.metrics or [])
    # The agent is the run's one model input (logged once, not once per metric).
    assert [m.model_id for m in run.inputs.model_inputs] == [ev["challenger"].logged_model_id]
    assert run.data.params["variant"] == "challenger" and run.data.params["scorers"]
    assert run.data.tags["agent_release.variant"] == "challenger"
    # The parent run records the same provenance (written beside the first variant's cases).
    parent = mlflow.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.params["dataset_hash"] == "sha256:abc"
    assert parent.data.params["scorers"] == run.data.params["scorers"]
    assert "variant" not in parent.data.params
    parent_specs = mlflow.artifacts.load_dict(f"{parent.info.artifact_uri}/scorer_specs.json")
    assert parent_specs == specs
    # The parent's table holds every variant's rows; it and the last variant's metrics are logged by the
    # trace writer process (steps/store_calls.py), before either run ends.
    parent_table = mlflow.load_table("eval_cases.json", run_ids=[parent.info.run_id])
    assert len(parent_table) == 32
    assert parent_table["variant"].value_counts().to_dict() == {"challenger": 16, "champion": 16}
    for evaluation in report.variants:
        variant_run = mlflow.get_run(evaluation.mlflow_run_id)
        assert variant_run.info.status == "FINISHED"
        assert variant_run.data.metrics["task_success/mean"] == evaluation.aggregates["task_success"]["mean"]
    assert parent.info.status == "FINISHED"

    assert ev["champion"].aggregates["task_success"]["mean"] == 0.0
    assert ev["champion"].aggregates["tool_trajectory"]["mean"] == pytest.approx(12 / 16)
    assert report.table_artifact_uri and report.table_artifact_uri.endswith("eval_cases.json")


def test_aggregate_rows_matches_hand_computed_clustered_se() -> None:
    # values 1,0,1,1 in clusters a,a,b,c: mean .75; cluster residual sums -.5,.25,.25; shares .5,.25,.25;
    # CR2: Var = sum S_g^2 / (1 - p_g) / n^2 = (.25/.5 + .0625/.75 + .0625/.75) / 16 = 1/24 -> SE 0.2041.
    rows = [
        CaseResult(case_id=str(i), cluster=c, variant="v", role="challenger", scores={"s": v, "na": None})
        for i, (v, c) in enumerate([(1.0, "a"), (0.0, "a"), (1.0, "b"), (1.0, "c")])
    ]
    agg = aggregate_rows(rows)
    assert agg["s"]["mean"] == pytest.approx(0.75)
    assert agg["s"]["se"] == pytest.approx(math.sqrt(1 / 24))
    assert agg["s"]["n_clusters"] == 3
    assert "na" not in agg
    single = aggregate_rows(rows[:2])
    assert single["s"] == {"mean": 0.5, "n": 2.0, "n_clusters": 1.0}


def test_aggregate_rows_cuts_an_interval_to_the_scores_range() -> None:
    # One error in 12 cases over 4 clusters: the t interval around 1/12 reaches below zero, a rate no
    # variant can have. Cut to the error scorer's range it starts at 0; the mean and SE are untouched.
    values = [1.0] + [0.0] * 11
    rows = [
        CaseResult(case_id=str(i), cluster="abcd"[i % 4], variant="v", role="challenger", scores={"error": v})
        for i, v in enumerate(values)
    ]
    loose = aggregate_rows(rows)["error"]
    assert loose["ci_low"] < 0.0
    cut = aggregate_rows(rows, score_bounds([{"name": "error", "args": {}}]))["error"]
    assert cut["ci_low"] == 0.0
    assert cut["ci_high"] == loose["ci_high"]
    assert (cut["mean"], cut["se"]) == (loose["mean"], loose["se"])


def test_two_clusters_are_enough_for_a_standard_error() -> None:
    # "With fewer than two clusters no SE exists": two have one. Values 1,0 / 1,1 in clusters a / b: mean .75,
    # cluster residual sums -.5 and .5, shares .5 each; CR2: Var = 2 * (.25 / .5) / 16 = 1/16 -> SE 0.25.
    rows = [
        CaseResult(case_id=str(i), cluster=c, variant="v", role="challenger", scores={"s": v})
        for i, (v, c) in enumerate([(1.0, "a"), (0.0, "a"), (1.0, "b"), (1.0, "b")])
    ]
    agg = aggregate_rows(rows)["s"]
    assert agg["mean"] == pytest.approx(0.75)
    assert agg["se"] == pytest.approx(0.25)
    assert (agg["n"], agg["n_clusters"]) == (4.0, 2.0)
    assert agg["ci_low"] < 0.75 < agg["ci_high"]


def test_flat_metrics_give_counts_means_and_the_clustered_uncertainty() -> None:
    from agent_release.steps.evaluate_variants import _flat_metrics

    rows = [
        CaseResult(
            case_id=str(i),
            cluster="abc"[i % 3],
            variant="v",
            role="challenger",
            scores={"s": float(i % 2), "one": 1.0 if i == 0 else None},
            error="boom" if i == 5 else None,
            retries=i % 2,
            scorer_errors={"picky": "LookupError: x"} if i < 2 else {},
        )
        for i in range(6)
    ]
    aggregates = aggregate_rows(rows)
    metrics = _flat_metrics(aggregates, rows, with_means=True)
    s = aggregates["s"]
    assert metrics == {
        "cases_completed": 5.0,
        "cases_errored": 1.0,
        "retries": 3.0,
        "scorer_errors": 2.0,
        "s/mean": 0.5,
        "s/clustered_se": s["se"],
        "s/ci95_low": s["ci_low"],
        "s/ci95_high": s["ci_high"],
        "one/mean": 1.0,  # one cluster: a mean and no uncertainty
    }
    # mlflow.genai.evaluate logs "<score>/mean" itself.
    assert _flat_metrics(aggregates, rows, with_means=False) == {
        k: v for k, v in metrics.items() if not k.endswith("/mean")
    }


def test_scorer_errors_are_counted_per_scorer_in_name_order() -> None:
    rows = [
        CaseResult(case_id=str(i), cluster="a", variant="v", role="challenger", scorer_errors=errors)
        for i, errors in enumerate([{"zeta": "x", "alpha": "y"}, {}, {"zeta": "z"}])
    ]
    counts = scorer_error_counts(rows)
    assert counts == {"alpha": 1, "zeta": 2} and list(counts) == ["alpha", "zeta"]


def test_every_built_in_scorer_declares_its_range_and_user_scorers_have_none() -> None:
    names = registered_scorers()
    assert set(score_bounds([{"name": n, "args": {}} for n in names])) == set(names)
    assert score_bounds([{"name": "my_pkg.scoring:politeness", "args": {}}]) == {}


def test_tool_calls_of_reads_assistant_tool_uses() -> None:
    messages = [
        {"role": "user", "content": [{"text": "hi"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "1", "name": "a", "input": {"x": 1}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "1", "content": []}}]},
    ]
    assert tool_calls_of(messages) == [{"name": "a", "arguments": {"x": 1}}]


def _agent() -> RegisteredAgent:
    """The shared fixtures' registered challenger, for the step's pure helpers (nothing is called or logged)."""
    from _report_fixtures import registration_report

    agent = registration_report(Path("state")).for_role("challenger")
    assert agent is not None
    return agent


def test_a_row_carries_the_outcome_its_scores_and_its_cost() -> None:
    from _report_fixtures import CHALLENGER

    from agent_release.steps.evaluate_variants import _row

    outcome = CaseOutcome(
        unit=CaseUnit("C-1", "k1", "where is ORD-1", repeat=2, tags={"intent": "order_status"}),
        variant=CHALLENGER,
        answer="shipped",
        error="TimeoutError: case took longer than 1 s",
        latency_s=1.0,
        input_tokens=1000,
        output_tokens=500,
        retries=2,
        trace_id="tr-1",
        scorer_errors={"picky": "LookupError: x"},
    )
    prices = {"default": {"input_per_1k": 1.0, "output_per_1k": 2.0}, CHALLENGER: {"input_per_1k": 0.5}}
    row = _row(outcome, _agent(), {"error": 1.0, "picky": None}, prices)
    assert row == CaseResult(
        case_id="C-1",
        cluster="k1",
        variant=CHALLENGER,
        role="challenger",
        repeat=2,
        scores={"error": 1.0, "picky": None},
        scorer_errors={"picky": "LookupError: x"},
        error="TimeoutError: case took longer than 1 s",
        latency_s=1.0,
        input_tokens=1000,
        output_tokens=500,
        cost=0.5,  # the variant's own prices (no output price: 0), also for an errored case
        retries=2,
        trace_id="tr-1",
        tags={"intent": "order_status"},
    )


def test_a_case_result_without_evidence_is_a_first_repeat_that_used_and_cost_nothing() -> None:
    # The defaults a row falls back on when its writer leaves a field out (test rows, shard reports).
    row = CaseResult(case_id="C-1", cluster="k1", variant="challenger", role="challenger")
    assert (row.repeat, row.input_tokens, row.output_tokens, row.cost, row.retries) == (0, 0, 0, 0.0, 0)
    assert (row.error, row.latency_s, row.trace_id) == (None, None, None)
    assert (row.scores, row.scorer_errors, row.tags) == ({}, {}, {})


def test_a_rows_prices_are_the_cost_scorers_own_when_its_args_set_them() -> None:
    config = EvaluateConfig(prices={"default": PriceTable(input_per_1k=1.0, output_per_1k=2.0)})
    configured = {"default": {"input_per_1k": 1.0, "output_per_1k": 2.0}}
    own = {"challenger": {"input_per_1k": 3.0}}
    assert row_prices(config, [{"name": "cost", "args": {"prices": own}}]) == {
        "challenger": {"input_per_1k": 3.0, "output_per_1k": 0.0}
    }
    # No prices of its own (or no cost scorer, or another scorer's "prices"): evaluate.prices.
    assert row_prices(config, [{"name": "cost", "args": {"prices": None}}]) == configured
    assert row_prices(config, [{"name": "my_pkg.scoring:cost", "args": {"prices": own}}]) == configured
    assert row_prices(config, []) == configured


def test_a_row_costs_what_the_cost_scorer_scores_whatever_way_its_own_prices_are_written() -> None:
    from agent_release.steps.scorers import build_scorer, case_cost, cost

    # The scorer reads its prices as evaluate.prices are read (PriceTable): a quoted number is a number and a
    # table without a price is free. The row's cost used to read them raw: the quoted price raised a TypeError
    # in every row once all cases had run, and the empty table fell back to 'default' (1.0 instead of 0.0).
    prices = {"default": {"input_per_1k": "0.5", "output_per_1k": 1}, "challenger": {}}
    spec = build_scorer(ScorerSpec(name="cost", args={"prices": prices})).spec
    table = row_prices(EvaluateConfig(), [spec])
    for variant, expected in (("champion", 0.5 + 0.01), ("challenger", 0.0)):
        scored = cost(prices=prices)({}, {"variant": variant, "input_tokens": 1000, "output_tokens": 10}, {})
        assert scored == pytest.approx(expected)
        assert case_cost(variant, 1000, 10, table) == pytest.approx(expected)


def test_units_run_every_case_once_per_repeat_with_its_cluster_and_tags() -> None:
    from agent_release.steps.evaluate_variants import _units

    cases = [
        {"id": "a", "input": "q1", "cluster": "k1", "tags": {"intent": 3}},
        {"id": 7, "input": "q2"},  # no cluster: a cluster of its own, named by its id
    ]
    units = _units(cases, 2)
    assert [(u.case_id, u.cluster, u.input, u.repeat) for u in units] == [
        ("a", "k1", "q1", 0),
        ("7", "7", "q2", 0),
        ("a", "k1", "q1", 1),
        ("7", "7", "q2", 1),
    ]
    assert units[0].tags == {"intent": "3"} and units[1].tags == {}
    for bad in ({"input": "q"}, {"id": "", "input": "q"}, {"id": "b"}, {"id": "b", "input": ["q"]}):
        with pytest.raises(EvaluationInputError, match="case #1 needs an 'id' and a text 'input'"):
            _units([cases[0], bad], 1)
    with pytest.raises(EvaluationInputError, match="case id '7' appears twice"):
        _units([cases[1], {"id": "7", "input": "again"}], 1)


def test_expectations_default_to_no_facts_and_no_calls() -> None:
    from agent_release.steps.evaluate_variants import _expectations

    assert _expectations({"id": "a", "input": "q"}) == {"expected_facts": [], "expected_tool_calls": []}
    case = {
        "expected_facts": ("shipped",),
        "expected_tool_calls": [
            {"name": "lookup_order", "arguments": {"order_id": "ORD-1"}},
            {"name": "ping"},
        ],
    }
    assert _expectations(case) == {
        "expected_facts": ["shipped"],
        "expected_tool_calls": [
            {"name": "lookup_order", "arguments": {"order_id": "ORD-1"}},
            {"name": "ping", "arguments": {}},
        ],
    }


def test_an_empty_cell_of_mlflow_evaluates_table_is_none() -> None:
    from agent_release.steps.evaluate_variants import _cell

    assert _cell(None) is None and _cell(math.nan) is None
    assert _cell("SCORER_ERROR") == "SCORER_ERROR"
    assert (_cell(0), _cell(0.5)) == ("0", "0.5")


def _evaluate_challenger(
    tracking: str, config: EvaluateConfig, cases: list[dict[str, Any]], **extra: Any
) -> Any:
    """``evaluate_variants`` of the challenger alone, on the scripted model, with these cases (``extra``:
    more keyword arguments of ``evaluate_variants``)."""
    registration = _registration(tracking)
    return evaluate_variants(
        config,
        registration.model_copy(update={"agents": registration.agents[1:]}),
        cases,
        dataset_name="d",
        dataset_hash="h",
        system_prompt="p",
        tools_factory=_tools,
        experiment=tracking,
        model_factory=lambda _a: _strands_model(),
        **extra,
    )


def _scored_with(*scorers: str, scoring: str = "inline") -> EvaluateConfig:
    """Two cases in flight, a 10 s timeout and these scorers, by name or import path, in this order."""
    return EvaluateConfig(
        concurrency=2,
        timeout_s=10,
        scoring=scoring,  # type: ignore[arg-type]
        scorers=[ScorerSpec(name=name) for name in scorers],
    )


def test_bad_cases_are_rejected(tracking: str) -> None:
    registration = _registration(tracking)
    kwargs: dict[str, Any] = {
        "dataset_name": "d",
        "dataset_hash": "h",
        "system_prompt": "p",
        "tools_factory": _tools,
        "experiment": tracking,
        "model_factory": lambda _a: _strands_model(),
    }
    with pytest.raises(EvaluationInputError, match="appears twice"):
        evaluate_variants(EvaluateConfig(), registration, [CASES[0], CASES[0]], **kwargs)
    with pytest.raises(EvaluationInputError, match="no cases"):
        evaluate_variants(EvaluateConfig(), registration, [], **kwargs)


def test_hung_case_is_an_error_row_with_a_stand_in_trace(tracking: str) -> None:
    import mlflow

    cases = [
        CASES[0],
        {"id": "C-hang", "input": "hang forever", "expected_facts": ["shipped"], "cluster": "k9"},
    ]
    report = _evaluate_challenger(tracking, EvaluateConfig(concurrency=2, timeout_s=0.3), cases)
    rows = {r.case_id: r for r in report.rows}
    hung = rows["C-hang"]
    assert hung.error is not None and hung.error.startswith("TimeoutError")
    assert hung.scores["error"] == 1.0
    trace = mlflow.get_trace(hung.trace_id)
    assert trace.info.tags.get("eval.stand_in") == "true"
    assert rows["C-0"].error is None and rows["C-0"].scores["task_success"] == 1.0


def test_tool_arguments_that_are_no_json_object_are_a_row_not_the_end_of_the_evaluation(
    tracking: str,
) -> None:
    import mlflow

    # Strands keeps arguments like "[1, 2]" as the parsed list; reading them as a dict raised a TypeError
    # that escaped the case, failed both runs and lost every row (and a resume failed the same way).
    odd = {
        "id": "C-list",
        "input": "list-arguments ORD-10001",
        "expected_tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "ORD-10001"}}],
        "expected_facts": ["shipped"],
        "cluster": "k9",
    }
    report = _evaluate_challenger(tracking, _scored_with("tool_arguments", "task_success"), [CASES[0], odd])
    rows = {r.case_id: r for r in report.rows}
    assert sorted(rows) == ["C-0", "C-list"]
    root = next(
        span for span in mlflow.get_trace(rows["C-list"].trace_id).data.spans if span.parent_id is None
    )
    assert root.outputs["tool_calls"] == [
        {"name": "lookup_order", "arguments": [1, 2]}
    ]  # as the model sent them
    assert rows["C-list"].scores["tool_arguments"] == 0.0 and rows["C-0"].scores["tool_arguments"] == 1.0
    run = mlflow.get_run(report.variants[0].mlflow_run_id)
    assert run.info.status == "FINISHED"


def test_models_sign_for_the_region_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_release.agents.builder import environment_region

    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    assert environment_region() == "us-east-1"
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert environment_region() == "eu-west-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")  # the variable the pipeline itself sets
    assert environment_region() == "eu-central-1"
    # The models the step builds sign for it (the client is what actually calls SageMaker).
    from agent_release.steps.evaluate_variants import _default_model_factory

    agent = _agent()
    model = _default_model_factory(EvaluateConfig(), None)(agent)
    assert model.client.meta.region_name == "eu-central-1"
    pinned = _default_model_factory(EvaluateConfig(), "ap-south-1")(agent)  # the pipeline's agent.region wins
    assert pinned.client.meta.region_name == "ap-south-1"


def test_a_trace_row_the_store_refused_gets_a_stand_in_without_reading_traces_back(
    tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which traces are stored comes from the writer's own commits: a refused row is noticed, no search."""
    import mlflow

    from agent_release.steps import trace_export

    monkeypatch.setenv("AGENT_RELEASE_TRACE_WRITER", "thread")  # the writes happen here, where they can fail
    real_write = trace_export.write_batch
    refused: list[str] = []

    def refuse_c1(client: Any, batch: Any) -> list[str]:
        keep = []
        for trace, prompts in batch:
            tags = trace.info.tags
            if tags.get("eval.case_id") == "C-1" and "eval.stand_in" not in tags:
                refused.append(trace.info.trace_id)
            else:
                keep.append((trace, prompts))
        return [*real_write(client, keep), *(t.info.trace_id for t, _ in batch if t.info.trace_id in refused)]

    monkeypatch.setattr(trace_export, "write_batch", refuse_c1)
    monkeypatch.setattr(mlflow, "search_traces", lambda *a, **k: pytest.fail("traces read back"))
    report = _evaluate_challenger(tracking, EvaluateConfig(concurrency=4, timeout_s=10), CASES[:4])
    monkeypatch.undo()
    rows = {r.case_id: r for r in report.rows}
    assert len(refused) == 1 and rows["C-1"].trace_id not in refused
    stand_in = mlflow.get_trace(rows["C-1"].trace_id)
    assert stand_in is not None and stand_in.info.tags.get("eval.stand_in") == "true"
    # Linked to the variant's LoggedModel as the cases' own traces are (it was logged outside that link).
    assert stand_in.info.trace_metadata.get("mlflow.modelId") == report.variants[0].logged_model_id
    assert rows["C-1"].scores["task_success"] == 1.0
    assert {a.name for a in stand_in.info.assessments} >= {"task_success", "error"}
    for case_id in ("C-0", "C-2", "C-3"):
        trace = mlflow.get_trace(rows[case_id].trace_id)
        assert trace is not None and "eval.stand_in" not in trace.info.tags
    # The results are first prepared during the final flush, before the refusal is known: the logged table
    # must still name the stand-in, not the refused trace.
    table = mlflow.load_table("eval_cases.json", run_ids=[report.variants[0].mlflow_run_id])
    assert dict(zip(table["case_id"], table["trace_id"], strict=True)) == {
        case_id: row.trace_id for case_id, row in rows.items()
    }


def test_a_stand_in_the_store_refuses_too_fails_the_evaluation_before_any_result(
    tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing checked that a stand-in was stored: the row then named a trace that does not exist."""
    import mlflow

    from agent_release.steps import trace_export
    from agent_release.steps.evaluate_variants import TracesNotStored

    monkeypatch.setenv("AGENT_RELEASE_TRACE_WRITER", "thread")
    real_write = trace_export.write_batch

    def refuse_c1_always(client: Any, batch: Any) -> list[str]:
        refused = [t.info.trace_id for t, _ in batch if t.info.tags.get("eval.case_id") == "C-1"]
        keep = [(t, p) for t, p in batch if t.info.trace_id not in refused]
        return [*real_write(client, keep), *refused]

    monkeypatch.setattr(trace_export, "write_batch", refuse_c1_always)
    with pytest.raises(
        TracesNotStored, match=r"^1 case\(s\) whose trace .* \(first: case 'C-1'\); no result"
    ):
        _evaluate_challenger(tracking, EvaluateConfig(concurrency=4, timeout_s=10), CASES[:4])
    monkeypatch.undo()
    (run,) = mlflow.search_runs(
        experiment_names=[tracking],
        filter_string="tags.mlflow.runName = 'evaluate-challenger'",
        output_format="list",
    )
    assert run.info.status == "FAILED"
    assert "eval_cases.json" not in {f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id)}


def fails_on_slow_questions() -> Any:
    """A user scorer that raises on one kind of case (it reads an output key only some cases have)."""
    from mlflow.genai.scorers import scorer

    @scorer(name="picky")
    def picky(inputs: Any, outputs: Any) -> float:
        if "ORD-" not in inputs["input"]:
            raise LookupError(f"no order id in case {inputs['case_id']}")
        return 1.0

    return picky


@pytest.mark.parametrize("scoring", ["inline", "mlflow_evaluate"])
def test_a_scorer_that_raises_is_recorded_on_its_rows_not_taken_for_not_applicable(
    tracking: str, scoring: str
) -> None:
    import mlflow

    cases = [
        *CASES[:3],
        {"id": "C-plain", "input": "hello there", "expected_facts": ["shipped"], "cluster": "k9"},
    ]
    config = _scored_with("task_success", "test_evaluate_variants:fails_on_slow_questions", scoring=scoring)
    report = _evaluate_challenger(tracking, config, cases)
    rows = {r.case_id: r for r in report.rows}
    plain = rows["C-plain"]
    assert plain.error is None and plain.scores.get("picky") is None
    # Inline scoring has the traceback; mlflow.genai.evaluate's result table only the error code and message.
    raised = "LookupError" if scoring == "inline" else "SCORER_ERROR"
    assert plain.scorer_errors == {"picky": f"{raised}: no order id in case C-plain"}
    assert all(rows[c].scorer_errors == {} and rows[c].scores["picky"] == 1.0 for c in ("C-0", "C-1", "C-2"))
    (variant,) = report.variants
    assert variant.scorer_errors == {"picky": 1}
    run = mlflow.get_run(variant.mlflow_run_id)
    assert run.data.metrics["scorer_errors"] == 1.0
    table = mlflow.load_table("eval_cases.json", run_ids=[run.info.run_id]).set_index("case_id")
    assert json.loads(table.loc["C-plain", "scorer_errors"]) == plain.scorer_errors
    assert json.loads(table.loc["C-0", "scorer_errors"]) == {}


def test_runs_an_interrupted_attempt_left_running_are_closed_by_the_next_attempt(tracking: str) -> None:
    import mlflow

    from agent_release.steps.abandoned_runs import ABANDONED_TAG, EVALUATION_KEY_TAG

    client = mlflow.MlflowClient()
    experiment_id = client.get_experiment_by_name(tracking).experiment_id

    def left_behind(key: str, status: str = "RUNNING") -> str:
        """A run as a process killed mid-evaluation leaves it (or, for other statuses, as one that ended)."""
        run = client.create_run(experiment_id, tags={EVALUATION_KEY_TAG: key})
        if status != "RUNNING":
            client.set_terminated(run.info.run_id, status=status)
        return str(run.info.run_id)

    parent, variant = left_behind("exec-1:abc"), left_behind("exec-1:abc")
    finished = left_behind("exec-1:abc", status="FINISHED")
    other_execution, other_shard = left_behind("exec-2:abc"), left_behind("exec-1:def")
    report = _evaluate_challenger(
        tracking, EvaluateConfig(concurrency=2), CASES[:2], evaluation_key="exec-1:abc"
    )

    for run_id in (parent, variant):
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert "later attempt" in run.data.tags[ABANDONED_TAG]
    assert client.get_run(finished).info.status == "FINISHED"
    for run_id in (other_execution, other_shard):
        assert client.get_run(run_id).info.status == "RUNNING"
        assert ABANDONED_TAG not in client.get_run(run_id).data.tags
    # This attempt's own runs carry the key, so an attempt after it could close them in turn.
    evaluated = client.get_run(report.variants[0].mlflow_run_id)
    assert evaluated.info.status == "FINISHED" and evaluated.data.tags[EVALUATION_KEY_TAG] == "exec-1:abc"
    parent_id = evaluated.data.tags["mlflow.parentRunId"]
    assert client.get_run(parent_id).data.tags[EVALUATION_KEY_TAG] == "exec-1:abc"


def test_an_evaluation_key_mlflow_cannot_search_for_is_refused() -> None:
    from agent_release.steps.abandoned_runs import check_evaluation_key

    assert check_evaluation_key("20261207T044713-abc123:0123456789abcdef") == (
        "20261207T044713-abc123:0123456789abcdef"
    )
    for bad in ("it's", "", "x" * 251, "a b"):
        with pytest.raises(ValueError, match="evaluation key"):
            check_evaluation_key(bad)


def test_closing_abandoned_runs_returns_the_ids_it_marked_killed(caplog: pytest.LogCaptureFixture) -> None:
    """The ids are the function's answer (its docstring), and the log says which runs were closed; the store
    is only asked for RUNNING runs of the key."""
    import logging
    from types import SimpleNamespace

    from agent_release.steps.abandoned_runs import ABANDONED_TAG, EVALUATION_KEY_TAG, close_abandoned_runs

    calls: list[tuple[str, ...]] = []

    class Client:
        def search_runs(self, experiment_ids: list[str], filter_string: str, max_results: int) -> list[Any]:
            calls.append(("search", *experiment_ids, filter_string))
            return [
                SimpleNamespace(info=SimpleNamespace(run_id=run_id)) for run_id in ("r-parent", "r-variant")
            ]

        def set_tag(self, run_id: str, key: str, value: str) -> None:
            calls.append(("tag", run_id, key))

        def set_terminated(self, run_id: str, status: str) -> None:
            calls.append(("end", run_id, status))

    with caplog.at_level(logging.INFO, logger="agent_release.steps.abandoned_runs"):
        closed = close_abandoned_runs(Client(), "7", "exec-1:abc")  # type: ignore[arg-type]
    assert closed == ["r-parent", "r-variant"]
    assert "key=<exec-1:abc>, runs=<r-parent,r-variant>" in caplog.text
    assert calls == [
        ("search", "7", f"tags.`{EVALUATION_KEY_TAG}` = 'exec-1:abc' AND attributes.status = 'RUNNING'"),
        ("tag", "r-parent", ABANDONED_TAG),
        ("end", "r-parent", "KILLED"),
        ("tag", "r-variant", ABANDONED_TAG),
        ("end", "r-variant", "KILLED"),
    ]


def infinite_on_orders() -> Any:
    """A user row scorer that returns infinity on order questions and NaN on the others."""

    def score(inputs: Any, outputs: Any, expectations: Any) -> float:
        return math.inf if "ORD-" in inputs["input"] else math.nan

    return score


def shouts_task_success() -> Any:
    """A user scorer whose Feedback is named like the built-in ``task_success``, the gate's primary metric."""
    from mlflow.entities import Feedback
    from mlflow.genai.scorers import scorer

    @scorer(name="shout")
    def shout(outputs: Any) -> Any:
        return Feedback(name="task_success", value=1.0)

    return shout


def not_finite_scorer() -> Any:
    """An MLflow scorer whose Feedback carries infinity."""
    from mlflow.entities import Feedback
    from mlflow.genai.scorers import scorer

    @scorer(name="unbounded")
    def unbounded(outputs: Any) -> Any:
        return Feedback(name="unbounded", value=-math.inf)

    return unbounded


@pytest.mark.parametrize("scoring", ["inline", "mlflow_evaluate"])
def test_a_non_finite_score_is_a_scorer_error_on_its_row_not_a_crash(tracking: str, scoring: str) -> None:

    config = _scored_with("task_success", "test_evaluate_variants:infinite_on_orders", scoring=scoring)
    cases = [*CASES[:3], {"id": "C-plain", "input": "hello there", "expected_facts": [], "cluster": "k9"}]
    report = _evaluate_challenger(tracking, config, cases)
    (variant,) = report.variants
    assert variant.scorer_errors == {"infinite_on_orders": 4}
    for row in report.rows:
        assert row.scores.get("infinite_on_orders") is None
        assert "not a finite number" in row.scorer_errors["infinite_on_orders"]
    assert "infinite_on_orders" not in variant.aggregates
    assert variant.aggregates["task_success"]["n"] == 4.0


def test_a_feedback_named_like_another_scorer_cannot_overwrite_its_score(tracking: str) -> None:
    # Listed first: the built-in's own score must win whatever the order.
    config = _scored_with(
        "test_evaluate_variants:shouts_task_success",
        "task_success",
        "test_evaluate_variants:not_finite_scorer",
    )
    cases = [
        *CASES[:2],
        {"id": "C-fail", "input": "please fail", "expected_facts": ["shipped"], "cluster": "k9"},
    ]
    report = _evaluate_challenger(tracking, config, cases)
    rows = {r.case_id: r for r in report.rows}
    # The failed case scores 0.0 on task_success, as the built-in says, not the user scorer's 1.0.
    assert rows["C-fail"].scores["task_success"] == 0.0
    assert rows["C-0"].scores["task_success"] == 1.0
    for row in report.rows:
        assert "task_success" not in row.scorer_errors
        assert "named 'task_success'" in row.scorer_errors["shout"]
        assert "not a finite number" in row.scorer_errors["unbounded"]
    (variant,) = report.variants
    assert variant.aggregates["task_success"]["mean"] == pytest.approx(2 / 3)
    assert variant.scorer_errors == {"shout": 3, "unbounded": 3}


def test_cases_mlflow_evaluate_left_unscored_say_so(tracking: str) -> None:
    config = _scored_with(
        "task_success", "test_evaluate_variants:not_finite_scorer", scoring="mlflow_evaluate"
    )
    report = _evaluate_challenger(tracking, config, CASES[:3])
    # MLflow returns no result table when a feedback cannot be serialised: no row may pass for "not
    # applicable".
    assert sorted(row.case_id for row in report.rows) == sorted(str(c["id"]) for c in CASES[:3])
    for row in report.rows:
        assert row.scorer_errors, row
        assert row.scores.get("task_success") is not None or "*" in row.scorer_errors


def test_a_row_costs_what_the_cost_scorer_scored_when_its_args_set_the_prices(tracking: str) -> None:
    # The prices are given to the scorer only (the docs allow it); evaluate.prices is empty. The row's cost
    # is what the gate's cost guardrail and the report read: it used to be 0.0 here, for both variants.
    prices = {"default": {"input_per_1k": 1.0, "output_per_1k": 2.0}}
    config = EvaluateConfig(
        concurrency=2, timeout_s=10, scorers=[ScorerSpec(name="cost", args={"prices": prices})]
    )
    report = _evaluate_challenger(tracking, config, CASES[:2])
    assert sorted(row.case_id for row in report.rows) == sorted(str(c["id"]) for c in CASES[:2])
    for row in report.rows:
        assert row.cost == pytest.approx((row.input_tokens * 1.0 + row.output_tokens * 2.0) / 1000)
        assert row.cost > 0 and row.scores["cost"] == pytest.approx(row.cost)


def rates_yes_or_no() -> Any:
    """A user scorer that rates like MLflow's own judges: a yes/no ``CategoricalRating``."""
    from mlflow.entities import Feedback
    from mlflow.genai.judges import CategoricalRating
    from mlflow.genai.scorers import scorer

    @scorer(name="judged")
    def judged(inputs: Any) -> Any:
        rating = CategoricalRating.YES if "ORD-" in inputs["input"] else CategoricalRating.NO
        return Feedback(name="judged", value=rating, rationale="order question or not")

    return judged


@pytest.mark.parametrize("scoring", ["inline", "mlflow_evaluate"])
def test_yes_no_ratings_score_one_and_zero_as_mlflow_averages_them(tracking: str, scoring: str) -> None:

    config = _scored_with("test_evaluate_variants:rates_yes_or_no", scoring=scoring)
    cases = [*CASES[:3], {"id": "C-plain", "input": "hello there", "cluster": "k9"}]
    report = _evaluate_challenger(tracking, config, cases)
    # They were None on every row ("not applicable"): a gate on this metric had nothing to compare.
    assert {r.case_id: r.scores.get("judged") for r in report.rows} == {
        "C-0": 1.0,
        "C-1": 1.0,
        "C-2": 1.0,
        "C-plain": 0.0,
    }
    (variant,) = report.variants
    assert variant.aggregates["judged"]["mean"] == pytest.approx(0.75)


def test_a_long_final_trace_flush_is_reported_while_it_waits(
    tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Session 21: with 4,500 cases a variant's final flush took 9-25 s after its last case, and nothing was
    # reported meanwhile. Here the flush waits until it has been reported (or gives up after 20 s).
    import threading

    import mlflow

    from agent_release.steps import evaluate_variants as module

    monkeypatch.setattr(module, "FLUSH_PROGRESS_EVERY_S", 0.01)
    reported = threading.Event()
    real_flush = mlflow.flush_trace_async_logging

    def slow_flush(*args: Any, **kwargs: Any) -> None:
        reported.wait(20)
        real_flush(*args, **kwargs)

    monkeypatch.setattr(mlflow, "flush_trace_async_logging", slow_flush)
    events: list[Any] = []

    def progress(event: Any) -> None:
        events.append(event)
        if isinstance(event, module.TraceFlushProgress):
            reported.set()

    report = _evaluate_challenger(
        tracking, EvaluateConfig(concurrency=2, timeout_s=10), CASES, progress=progress
    )
    flushes = [e for e in events if isinstance(e, module.TraceFlushProgress)]
    assert reported.is_set() and flushes, events
    assert {e.variant for e in flushes} == {"challenger"}
    assert all(isinstance(e.traces_left, int) and e.traces_left >= 0 for e in flushes)  # the row-first writer
    # Reported after the cases: the last case's event comes first.
    assert isinstance(events[0], ProgressEvent) and events.index(flushes[0]) > max(
        i for i, e in enumerate(events) if isinstance(e, ProgressEvent)
    )
    assert len(report.rows) == len(CASES) and all(r.trace_id for r in report.rows)


@pytest.mark.timeout(20)  # the old loop spun on the error for ever
def test_a_flush_that_raises_timeout_error_is_raised_not_waited_on() -> None:
    # The flush's own TimeoutError is concurrent.futures' TimeoutError (the same class since Python 3.11):
    # the progress loop must re-raise it, not take it for its own slice ending and spin on it.
    from concurrent.futures import Future

    from agent_release.steps import evaluate_variants as module

    failed: Future[None] = Future()
    failed.set_exception(TimeoutError("writer did not answer"))
    reports: list[Any] = []
    with pytest.raises(TimeoutError, match="writer did not answer"):
        module._wait_for_flush(failed, "challenger", reports.append)
    assert reports == []
