"""The HTML release report of a stored execution: complete, rolled back, promoted, partial and failed."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from _report_fixtures import (
    CHALLENGER,
    CHAMPION,
    CONFIG_TEXT,
    DATASET_SHA256,
    STEP_ORDER,
    TRIP_REASON,
    build_execution,
    case_rows,
    decision_config,
    evaluation_report,
)
from markupsafe import escape

from agent_release.pipelines.executor import ExecutionStore, StepDef
from agent_release.pipelines.report import ReportError, cluster_breakdown, render_report, report_path
from agent_release.steps.decide_promotion import DecisionReport, decide_promotion
from agent_release.steps.evaluation_records import CaseResult, EvaluationReport
from agent_release.steps.promote_challenger import PromotionReport

EVIL = '<script>alert("x")</script>'


class _Resources(HTMLParser):
    """Collects tags, and the URLs of everything a browser would fetch while loading the page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.fetched: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = {k: v or "" for k, v in attrs}
        if (
            tag in {"img", "script", "iframe", "embed", "source", "audio", "video", "input"}
            and "src" in values
        ):
            self.fetched.append(values["src"])
        if tag == "link" and "href" in values:
            self.fetched.append(values["href"])
        if tag in {"image", "use", "feimage"}:  # SVG elements that can load a URL
            self.fetched.extend(
                v for k, v in values.items() if k in {"href", "xlink:href"} and not v.startswith("#")
            )
        if tag == "object" and "data" in values:
            self.fetched.append(values["data"])
        if tag == "a" and "href" in values:
            self.links.append(values["href"])


def _parse(text: str) -> _Resources:
    parser = _Resources()
    parser.feed(text)
    return parser


def _stored(state_dir: Path, execution_id: str, step: str) -> dict[str, object]:
    store = ExecutionStore(state_dir)
    try:
        output = store.step_output(execution_id, step)
    finally:
        store.close()
    assert output is not None
    return output


@pytest.fixture(scope="module")
def rolled_back(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    state_dir = tmp_path_factory.mktemp("rolled-back")
    execution_id = build_execution(state_dir, rolled_back=True, audit_reason_suffix=f" {EVIL}")
    path = render_report(state_dir, execution_id)
    return state_dir, execution_id, path.read_text(encoding="utf-8")


def test_report_is_written_under_the_state_directory(rolled_back: tuple[Path, str, str]) -> None:
    state_dir, execution_id, text = rolled_back
    path = report_path(state_dir, execution_id)
    assert path == state_dir / "reports" / f"{execution_id}.html"
    assert path.read_text(encoding="utf-8") == text
    assert f"<title>Release report {execution_id} · support-release</title>" in text


def test_report_shows_the_decision_and_its_reason(rolled_back: tuple[Path, str, str]) -> None:
    state_dir, execution_id, text = rolled_back
    decision = DecisionReport.model_validate(_stored(state_dir, execution_id, "decide_promotion"))
    callout = re.search(r'<section id="decision">(.*?)</section>', text, re.DOTALL)
    assert callout is not None
    assert f"{decision.decision.upper()}: {CHALLENGER} vs {CHAMPION}" in callout.group(1)
    assert escape(decision.reason) in callout.group(1)
    assert decision.primary is not None
    # The paired difference and the minimum improvement it is judged against.
    assert f"{decision.primary.estimate:+.3f}" in text
    assert f"{decision.min_improvement:+.3f}" in text


def test_report_counts_each_variants_scorer_errors(rolled_back: tuple[Path, str, str]) -> None:
    _, _, text = rolled_back
    section = re.search(r'<section id="evaluation">(.*?)</section>', text, re.DOTALL)
    assert section is not None
    rows = re.findall(
        r"<tr><td>([^<]+)</td><td>([^<]+)</td>.*?<td>([^<]*)</td></tr>", section.group(1), re.DOTALL
    )
    assert {(variant, errors) for variant, _, errors in rows} == {
        (CHALLENGER, "answer_correctness: 2"),
        (CHAMPION, "none"),
    }


def test_report_has_inline_svg_figures(rolled_back: tuple[Path, str, str]) -> None:
    _, _, text = rolled_back
    figures = re.findall(r"<figure>\s*<svg.*?</svg>", text, re.DOTALL)
    assert len(figures) == 4  # per-variant CIs, forest plot, clusters, traffic timeline
    forest = next(f for f in figures if "min improvement" in f)
    assert "margin" in forest
    assert "<?xml" not in text and "<!DOCTYPE svg" not in text


def test_report_shows_dataset_hash_and_contract(rolled_back: tuple[Path, str, str]) -> None:
    _, _, text = rolled_back
    datasets = re.search(r'<section id="datasets">(.*?)</section>', text, re.DOTALL)
    assert datasets is not None
    assert DATASET_SHA256 in datasets.group(1)
    assert "passed" in datasets.group(1)


def test_report_lists_this_executions_audit_entries_only(rolled_back: tuple[Path, str, str]) -> None:
    _, _, text = rolled_back
    audit = re.search(r'<section id="audit">(.*?)</section>', text, re.DOTALL)
    assert audit is not None
    assert audit.group(1).count("<tr>") == 1 + 3  # header + weights, weights, rollback
    assert "challenger at 50%" in audit.group(1)
    assert escape(TRIP_REASON) in audit.group(1)
    assert "an earlier release" not in audit.group(1)
    assert "intact" in audit.group(1)


def test_report_escapes_stored_text(rolled_back: tuple[Path, str, str]) -> None:
    _, _, text = rolled_back
    assert EVIL not in text
    assert escape(EVIL) in text
    assert "script" not in _parse(text).tags


def test_report_loads_nothing_from_the_network(rolled_back: tuple[Path, str, str]) -> None:
    _, _, text = rolled_back
    page = _parse(text)
    assert page.fetched == []
    assert "@import" not in text
    assert re.findall(r"url\((?!#)", text) == []  # only the SVGs' own clip paths
    # The sqlite store has no UI server: run addresses are shown as text with the `mlflow ui` hint.
    assert not [link for link in page.links if link.startswith(("http:", "https:", "//"))]
    assert "mlflow ui --backend-store-uri sqlite:///" in text


def test_rollback_is_shown_on_the_timeline(rolled_back: tuple[Path, str, str]) -> None:
    state_dir, execution_id, text = rolled_back
    promotion = PromotionReport.model_validate(_stored(state_dir, execution_id, "promote_challenger"))
    traffic = re.search(r'<section id="traffic">(.*?)</section>', text, re.DOTALL)
    assert traffic is not None
    section = traffic.group(1)
    assert "ROLLED BACK" in section
    assert "rollback to champion" in section  # legend of the rollback marker in the figure
    assert "guard tripped" in section
    assert escape(promotion.reason) in section
    # One table row per timeline event, with the challenger share at each.
    assert section.count("<tr>") == 1 + len(promotion.timeline)
    assert "50%</td>" in section and "0%</td>" in section


def test_promoted_release_has_no_rollback(tmp_path: Path) -> None:
    execution_id = build_execution(tmp_path, rolled_back=False)
    text = render_report(tmp_path, execution_id).read_text(encoding="utf-8")
    traffic = re.search(r'<section id="traffic">(.*?)</section>', text, re.DOTALL)
    assert traffic is not None
    assert "ROLLED BACK" not in traffic.group(1)
    assert "rollback to champion" not in traffic.group(1)
    assert "promoted" in traffic.group(1)
    assert "100%</td>" in traffic.group(1)


def test_failed_execution_renders_what_exists_and_names_missing_steps(tmp_path: Path) -> None:
    execution_id = build_execution(tmp_path, fail_at="evaluate_variants")
    text = render_report(tmp_path, execution_id).read_text(encoding="utf-8")
    assert re.search(r"Status</dt><dd><span class=\"badge bad\">failed", text)
    assert "evaluate_variants: endpoint support did not answer in 30 s" in text
    assert DATASET_SHA256 in text  # validate_datasets finished
    assert "arn:local:package/support/4" in text  # deploy_variants finished
    steps = re.search(r'<section id="steps">(.*?)</section>', text, re.DOTALL)
    assert steps is not None
    missing = re.search(
        r'<p class="missing">Did not run or did not finish:(.*?)</p>', steps.group(1), re.DOTALL
    )
    assert missing is not None
    for name in ("evaluate_variants", "decide_promotion", "promote_challenger"):
        assert f"<code>{name}</code>" in missing.group(1)
    assert "deploy_variants" not in missing.group(1)
    assert "No decision" in text
    assert "<svg" not in text  # no evaluation, no figures
    assert "step <code>promote_challenger</code>" in text


def test_unreadable_step_output_is_named_and_the_rest_renders(tmp_path: Path) -> None:
    execution_id = build_execution(tmp_path)
    store = ExecutionStore(tmp_path)
    try:
        store.mark_step(
            execution_id, "decide_promotion", "succeeded", output_json=json.dumps({"decision": 1})
        )
    finally:
        store.close()
    text = render_report(tmp_path, execution_id).read_text(encoding="utf-8")
    assert "output unreadable: its output does not match DecisionReport" in text
    assert DATASET_SHA256 in text
    assert "ROLLED BACK" in text


def test_unknown_execution_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no execution nope"):
        render_report(tmp_path, "nope")


def test_cluster_breakdown_pairs_cases_and_averages_repeats() -> None:
    def row(
        case: str, cluster: str, role: str, value: float | None, *, repeat: int = 0, error: str | None = None
    ) -> CaseResult:
        variant = CHALLENGER if role == "challenger" else CHAMPION
        return CaseResult(
            case_id=case,
            cluster=cluster,
            variant=variant,
            role=role,
            repeat=repeat,
            scores={"ok": value},
            error=error,
        )

    rows = [
        row("a1", "A", "champion", 0.0),
        row("a1", "A", "challenger", 1.0),
        row("a2", "A", "champion", 1.0),
        row("a2", "A", "challenger", 1.0),
        row("a2", "A", "challenger", 0.0, repeat=1),
        row("b1", "B", "champion", 1.0),
        row("b1", "B", "challenger", None, error="timeout"),
        row("c1", "C", "champion", 1.0),  # unpaired: left out
    ]
    table, total = cluster_breakdown(rows, "ok")
    assert total == 2
    by_cluster = {r.cluster: r for r in table}
    # A: a1 differs by +1, a2 by mean(1, 0) - 1 = -0.5 -> +0.25 over 2 cases.
    assert by_cluster["A"].n_cases == 2
    assert by_cluster["A"].mean_difference == pytest.approx(0.25)
    assert by_cluster["A"].challenger == pytest.approx(0.75)
    # B: the errored binary row counts as a failure, as the gate counts it.
    assert by_cluster["B"].mean_difference == pytest.approx(-1.0)
    assert [r.cluster for r in table] == ["A", "B"]


def test_cluster_breakdown_shows_extremes_of_many_clusters() -> None:
    rows = case_rows()
    many = [r.model_copy(update={"cluster": f"{r.cluster}-{r.case_id[-1]}"}) for r in rows]
    table, total = cluster_breakdown(many, "task_success")
    assert total == 48
    assert len(table) == 20
    differences = [r.mean_difference for r in table]
    assert differences == sorted(differences, reverse=True)


@pytest.mark.slow  # MLflow import and SQLite store migrations: ~10-20 s on a busy 2-core machine
def test_report_is_logged_to_the_mlflow_runs(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from agent_release.pipelines.tracking import configure_tracking

    uri = f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    experiment_id = configure_tracking(uri, "agent-release", artifact_root=tmp_path / "artifacts" / "mlflow")
    client = MlflowClient(tracking_uri=uri)
    run_ids = {variant: client.create_run(experiment_id).info.run_id for variant in (CHAMPION, CHALLENGER)}
    execution_id = build_execution(tmp_path, run_ids=dict(run_ids))

    render_report(tmp_path, execution_id)

    for run_id in run_ids.values():
        names = [a.path for a in client.list_artifacts(run_id, "agent-release-report")]
        assert names == [f"agent-release-report/{execution_id}.html"]


def test_unreachable_tracking_store_is_not_created(tmp_path: Path) -> None:
    execution_id = build_execution(tmp_path)  # run ids recorded, but no mlflow.db exists
    path = render_report(tmp_path, execution_id)
    assert path.is_file()
    assert not (tmp_path / "mlflow.db").exists()


def test_a_rolled_back_release_leads_with_the_rollback_not_a_green_promote(
    rolled_back: tuple[Path, str, str], tmp_path: Path
) -> None:
    # The header said "Decision: promote" in green and the Decision section a green PROMOTE; ROLLED BACK
    # appeared only further down, in the Traffic section.
    _, _, text = rolled_back
    header = re.search(r"<header>(.*?)</header>", text, re.DOTALL)
    decision = re.search(r'<section id="decision">(.*?)</section>', text, re.DOTALL)
    assert header is not None and decision is not None
    assert '<span class="badge bad">rolled_back</span>' in header.group(1)
    first_callout = re.search(
        r'<div class="callout ([a-z]+)"[^>]*><p class="headline">([^<]*)', decision.group(1)
    )
    assert first_callout is not None
    assert first_callout.groups() == ("bad", "ROLLED BACK after the gate's PROMOTE")

    promoted = build_execution(tmp_path, rolled_back=False)
    clean = render_report(tmp_path, promoted).read_text(encoding="utf-8")
    assert "rolled_back</span>" not in clean.split("</header>")[0]
    assert 'role="alert"' not in clean.split('<section id="decision">')[1].split("</section>")[0]


@pytest.mark.parametrize(
    ("value", "num", "signed"),
    [
        (0.000732, "0.000732", "+0.000732"),
        (1.75e-05, "1.75e-05", "+1.75e-05"),
        (-9.05e-06, "-9.05e-06", "-9.05e-06"),
        (0.0, "0.000", "+0.000"),
        (0.25, "0.250", "+0.250"),
        (12.3456, "12.346", "+12.346"),
    ],
)
def test_small_values_keep_three_significant_digits(value: float, num: str, signed: str) -> None:
    # A cost of 0.000732 with interval [0.000676, 0.000789] read "0.001 [0.001, 0.001]".
    from agent_release.pipelines.report import _fmt_num, _fmt_signed

    assert (_fmt_num(value), _fmt_signed(value)) == (num, signed)


def test_a_tiny_p_value_is_not_printed_as_zero_and_guardrail_bounds_name_their_level(
    rolled_back: tuple[Path, str, str],
) -> None:
    from agent_release.pipelines.report import _fmt_pvalue

    assert (_fmt_pvalue(2.41e-20), _fmt_pvalue(0.03121)) == ("< 0.0001", "= 0.0312")
    state_dir, execution_id, text = rolled_back
    decision = DecisionReport.model_validate(_stored(state_dir, execution_id, "decide_promotion"))
    assert decision.guardrails, "the fixture has guardrails"
    level = round((1 - 2 * decision.alpha) * 100)
    assert f'<th class="num">Bounds ({level}% CI)</th>' in text


def test_a_decision_taken_before_pairing_does_not_show_zero_paired_cases(tmp_path: Path) -> None:
    # A reject for the challenger's error rate (rule 1) read "Paired cases 0 (5 completed by both, 0 clusters)".
    execution_id = build_execution(tmp_path, rolled_back=False)
    rows = [
        r.model_copy(update={"error": "ModelError: injected fault"}) if r.role == "challenger" else r
        for r in case_rows()
    ]
    decision = decide_promotion(
        decision_config(), evaluation_report(rows, {CHAMPION: None, CHALLENGER: None})
    )
    assert decision.decision == "reject" and decision.primary is None
    store = ExecutionStore(tmp_path)
    try:
        store.mark_step(execution_id, "decide_promotion", "succeeded", output_json=decision.model_dump_json())
    finally:
        store.close()

    text = render_report(tmp_path, execution_id).read_text(encoding="utf-8")

    comparison = text.split('<section id="comparison">')[1].split("</section>")[0]
    assert "not compared: the gate decided before pairing" in comparison
    assert "Paired cases</dt><dd>0 (" not in comparison


def _step_notes(text: str) -> dict[str, str]:
    """Step name -> the text of its Detail cell in the Steps table."""
    steps = text.split('<section id="steps">')[1].split("</section>", maxsplit=1)[0]
    rows = re.findall(r"<tr><td><code>([a-z_]+)</code></td>(.*?)</tr>", steps, re.DOTALL)
    return {name: " ".join(cells.rsplit("<td>", 1)[1].removesuffix("</td>").split()) for name, cells in rows}


def test_each_step_that_did_not_succeed_says_why_by_how_the_execution_ended(tmp_path: Path) -> None:
    # A step left pending by a failed execution did not run and will not; one left pending by an execution
    # still recorded as running can be resumed; a step recorded as running was interrupted.
    failed = build_execution(tmp_path, fail_at="evaluate_variants")
    notes = _step_notes(render_report(tmp_path, failed).read_text(encoding="utf-8"))
    assert notes["decide_promotion"] == "did not run: the execution stopped before this step"
    assert notes["promote_challenger"] == "did not run: the execution stopped before this step"
    assert "did not run" not in notes["deploy_variants"]

    store = ExecutionStore(tmp_path)
    try:
        defs = [StepDef(name, (), model, lambda run: None) for name, model in STEP_ORDER]
        running = store.create("support-release", tmp_path / "pipeline.yaml", CONFIG_TEXT, defs)
        store.mark_step(running, "validate_datasets", "running", started_at=1.0)
    finally:
        store.close()
    notes = _step_notes(render_report(tmp_path, running).read_text(encoding="utf-8"))
    assert notes["validate_datasets"] == "started but did not finish (interrupted)"
    assert notes["train_model"].startswith("has not run yet (the execution is running or was interrupted;")


def test_the_primary_metric_comes_from_the_decision_then_the_config_then_the_default() -> None:
    # The per-cluster breakdown and the metric table lead with this metric: a gate that decided before
    # pairing has no primary result, and the config's `decide.primary_metric` must still be the one shown.
    from agent_release.pipelines.report import _primary_metric

    config = {"decide": {"primary_metric": "tool_trajectory"}}
    assert _primary_metric(None, config) == "tool_trajectory"
    assert _primary_metric(None, {"decide": {"primary_metric": 3}}) == "task_success"
    assert _primary_metric(None, {"decide": "tool_trajectory"}) == "task_success"
    assert _primary_metric(None, {}) == "task_success"
    decision = decide_promotion(decision_config(), evaluation_report(case_rows(), {}))
    assert decision.primary is not None
    assert _primary_metric(decision, config) == decision.primary.metric == "task_success"


def test_a_metric_cell_drops_bounds_and_counts_that_are_not_finite() -> None:
    # A one-cluster estimate has no standard error: its bounds must read "—", not "[nan, inf]".
    from agent_release.pipelines.report import MetricCell, _cell

    nan, inf = float("nan"), float("inf")
    cell = _cell({"mean": 0.5, "ci_low": nan, "ci_high": inf, "n": nan, "n_clusters": inf})
    assert cell == MetricCell(mean=0.5, ci_low=None, ci_high=None, n=None, n_clusters=None)
    assert _cell({"mean": 0.25, "ci_low": 0.1, "ci_high": 0.4, "n": 48.0, "n_clusters": 12.0}) == MetricCell(
        mean=0.25, ci_low=0.1, ci_high=0.4, n=48, n_clusters=12
    )
    assert _cell({"mean": nan, "ci_low": 0.1, "ci_high": 0.4}) is None
    assert _cell(None) is None


def test_the_metric_table_leads_with_the_primary_metric_and_shows_each_cells_interval_and_counts(
    rolled_back: tuple[Path, str, str],
) -> None:
    state_dir, execution_id, text = rolled_back
    evaluation = EvaluationReport.model_validate(_stored(state_dir, execution_id, "evaluate_variants"))
    section = text.split('<section id="evaluation">')[1].split("</section>")[0]
    metrics = re.findall(r"<tr><td>([a-z_]+)(?: <span class=\"badge muted\">primary</span>)?</td>", section)
    assert metrics == ["task_success", "latency_s", "tool_trajectory"]
    champion = next(v for v in evaluation.variants if v.role == "champion")
    agg = champion.aggregates["task_success"]
    # 48 cases in 12 clusters per variant (case_rows); the bounds at 3 decimals.
    assert (agg["n"], agg["n_clusters"]) == (48, 12)
    assert (
        f'{agg["mean"]:.3f} <span class="note">[{agg["ci_low"]:.3f}, {agg["ci_high"]:.3f}]</span>' in section
    )
    assert '<span class="note">n=48, 12 clusters</span>' in section


def test_the_forest_plot_draws_each_lower_is_better_guardrail_at_plus_its_margin(
    rolled_back: tuple[Path, str, str],
) -> None:
    # A lower-is-better difference must stay below +margin; drawn at -margin the line sat on the wrong side.
    state_dir, execution_id, text = rolled_back
    decision = DecisionReport.model_validate(_stored(state_dir, execution_id, "decide_promotion"))
    forest = next(
        f for f in re.findall(r"<figure>\s*<svg.*?</svg>", text, re.DOTALL) if "min improvement" in f
    )
    lower = [g for g in decision.guardrails if g.direction == "lower_is_better" and g.ci_low is not None]
    assert lower, "the fixture has lower-is-better guardrails"
    for g in lower:
        assert f"margin +{g.margin:g}" in forest
        assert f"margin -{g.margin:g}" not in forest


def _metric_rows(champion: list[CaseResult], challenger: list[CaseResult]) -> list[CaseResult]:
    return [r.model_copy(update={"variant": CHAMPION, "role": "champion"}) for r in champion] + [
        r.model_copy(update={"variant": CHALLENGER, "role": "challenger"}) for r in challenger
    ]


def test_cluster_breakdown_of_latency_leaves_out_a_fast_failure_and_a_missing_value() -> None:
    # An errored call that returned fast must not look like a speed-up; a row without latency is no value.
    def row(case: str, latency: float | None, error: str | None = None) -> CaseResult:
        return CaseResult(
            case_id=case, cluster="A", variant="x", role="champion", latency_s=latency, error=error
        )

    rows = _metric_rows(
        [row("a1", 1.0), row("a2", 1.0), row("a3", 1.0)],
        [row("a1", 2.0), row("a2", 0.1, error="timeout"), row("a3", None)],
    )
    table, total = cluster_breakdown(rows, "latency_s")
    assert total == 1
    (only,) = table
    assert (only.n_cases, only.champion, only.challenger, only.mean_difference) == (1, 1.0, 2.0, 1.0)


def test_cluster_breakdown_of_the_error_rate_counts_each_errored_case_as_one() -> None:
    def row(case: str, cluster: str, error: str | None = None) -> CaseResult:
        return CaseResult(case_id=case, cluster=cluster, variant="x", role="champion", error=error)

    rows = _metric_rows(
        [row("a1", "A"), row("a2", "A"), row("b1", "B")],
        [row("a1", "A", error="timeout"), row("a2", "A"), row("b1", "B")],
    )
    table, total = cluster_breakdown(rows, "error")
    assert total == 2
    by_cluster = {r.cluster: r for r in table}
    # A: the challenger errored on one of 2 cases, the champion on none -> error rate +0.5.
    assert (by_cluster["A"].champion, by_cluster["A"].challenger, by_cluster["A"].mean_difference) == (
        0.0,
        0.5,
        0.5,
    )
    assert (by_cluster["B"].champion, by_cluster["B"].challenger, by_cluster["B"].mean_difference) == (
        0.0,
        0.0,
        0.0,
    )


def test_the_traffic_timeline_counts_seconds_from_the_first_change_and_marks_the_trip(
    rolled_back: tuple[Path, str, str],
) -> None:
    state_dir, execution_id, text = rolled_back
    promotion = PromotionReport.model_validate(_stored(state_dir, execution_id, "promote_challenger"))
    section = text.split('<section id="traffic">')[1].split("</section>")[0]
    seconds = re.findall(r'<tr><td class="num">([^<]+)</td>', section)
    start = promotion.timeline[0].at
    assert seconds == [f"{e.at - start:.1f}" for e in promotion.timeline] == ["0.0", "3.0", "3.2"]
    figure = re.search(r"<figure>\s*<svg.*?</svg>", section, re.DOTALL)
    assert figure is not None
    # The legend names each kind of marker drawn: the guard's trip at 50% and the rollback.
    assert "guard tripped" in figure.group(0) and "rollback to champion" in figure.group(0)


def test_mlflow_links_follow_the_ui_routes_and_count_each_variants_own_traces(tmp_path: Path) -> None:
    from _report_fixtures import registration_report

    from agent_release.pipelines.report import _mlflow_view

    # Half the challenger's cases have no trace; the champion's evaluation run was never logged.
    rows = [
        r.model_copy(update={"trace_id": None})
        if r.role == "challenger" and r.case_id.endswith(("0", "1"))
        else r
        for r in case_rows()
    ]
    evaluation = evaluation_report(rows, {CHAMPION: None, CHALLENGER: "run-4"})
    # The agent version the evaluation ran wins over the one registered (a re-registration may follow).
    variants = tuple(
        v.model_copy(update={"logged_model_id": "m-evaluated"}) if v.role == "challenger" else v
        for v in evaluation.variants
    )
    evaluation = evaluation.model_copy(update={"variants": variants})
    registration = registration_report(tmp_path).model_copy(
        update={"tracking_uri": "http://mlflow.example:5000/"}
    )
    view = _mlflow_view(tmp_path, {}, registration, evaluation)
    ui = "http://mlflow.example:5000/#/experiments/1"
    assert (view.ui_base, view.hint, view.traces_url) == ("http://mlflow.example:5000", None, f"{ui}/traces")
    runs = {r.variant: r for r in view.runs}
    assert runs[CHALLENGER].run_url == f"{ui}/runs/run-4"
    assert runs[CHALLENGER].model_url == f"{ui}/models/m-evaluated"
    assert (runs[CHAMPION].run_id, runs[CHAMPION].run_url) == (None, None)
    assert runs[CHAMPION].model_url == f"{ui}/models/m-{CHAMPION}"
    assert (runs[CHAMPION].trace_count, runs[CHALLENGER].trace_count) == (48, 24)
    assert view.run_ids == ["run-4"]


def test_mlflow_runs_are_listed_from_the_registration_when_the_evaluation_did_not_run(tmp_path: Path) -> None:
    execution_id = build_execution(tmp_path, fail_at="evaluate_variants")
    text = render_report(tmp_path, execution_id).read_text(encoding="utf-8")
    mlflow = text.split('<section id="mlflow">')[1].split("</section>")[0]
    for variant in (CHAMPION, CHALLENGER):
        assert f"<code>m-{variant}</code>" in mlflow  # the agent version it registered
    assert mlflow.count('<td class="num">0</td>') == 2  # no evaluation, no traces
    # Without a registration either there is nothing to link to.
    none_registered = build_execution(tmp_path, fail_at="register_agents")
    text = render_report(tmp_path, none_registered).read_text(encoding="utf-8")
    assert "No MLflow runs were recorded for this execution." in text


def test_missing_and_non_finite_numbers_are_printed_as_such_never_as_none() -> None:
    # A guardrail with no estimate (too few cases) has estimate None: the cell reads "—", not "None".
    from agent_release.pipelines.report import _fmt_num, _fmt_pct, _fmt_pvalue, _fmt_signed

    nan, inf = float("nan"), float("inf")
    assert [_fmt_signed(v) for v in (None, nan, inf)] == ["—", "—", "—"]
    assert [_fmt_num(v) for v in (None, nan, -inf, 7, True)] == ["—", "nan", "-inf", "7", "True"]
    assert [_fmt_pct(v) for v in (None, nan, 0.1234)] == ["—", "—", "12.3%"]
    assert [_fmt_pvalue(v) for v in (None, nan, 0.0001)] == ["= —", "= —", "= 0.0001"]


def test_small_means_below_the_last_decimal_shown() -> None:
    # At `digits` decimals, values under 10^-(digits-1) keep 3 significant digits; from there on the fixed
    # decimals show them (0.01 at 3 decimals is "0.010", a weight of 0.1 at 2 is "0.10").
    from agent_release.pipelines.report import _fmt_num, _fmt_signed

    assert (_fmt_num(0.01), _fmt_num(0.00999), _fmt_signed(-0.01)) == ("0.010", "0.00999", "-0.010")
    assert (_fmt_num(0.1, 2), _fmt_num(0.05, 2), _fmt_num(1.0, 1), _fmt_num(0.25, 1)) == (
        "0.10",
        "0.05",
        "1.0",
        "0.25",
    )


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "—"),
        (0.8, "0.8 s"),
        (59.0, "59.0 s"),
        (60.0, "1 min 0 s"),
        (125.4, "2 min 5 s"),
        (3725.0, "62 min 5 s"),
        # Rounded before splitting: 119.7 s read "1 min 60 s", 59.96 s "60.0 s".
        (119.7, "2 min 0 s"),
        (59.96, "1 min 0 s"),
    ],
)
def test_durations_read_in_seconds_then_minutes(seconds: float | None, shown: str) -> None:
    from agent_release.pipelines.report import _fmt_duration

    assert _fmt_duration(seconds) == shown


def test_the_challengers_share_is_its_percentage_of_the_total_weight() -> None:
    from agent_release.pipelines.report import _share

    assert _share({CHAMPION: 0.9, CHALLENGER: 0.1}, CHALLENGER) == pytest.approx(10.0)
    assert _share({CHAMPION: 3.0, CHALLENGER: 1.0}, CHALLENGER) == pytest.approx(25.0)  # weights, not shares
    assert _share({CHAMPION: 1.0}, CHALLENGER) == 0.0
    assert _share({CHAMPION: 1.0, CHALLENGER: 0.0}, None) == 0.0
    assert (
        _share({CHAMPION: 0.0, CHALLENGER: 0.0}, CHALLENGER) == 0.0
    )  # no traffic at all, not a division by 0
