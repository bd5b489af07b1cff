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
    DATASET_SHA256,
    TRIP_REASON,
    build_execution,
    case_rows,
)
from markupsafe import escape

from agent_release.pipelines.executor import ExecutionStore
from agent_release.pipelines.report import ReportError, cluster_breakdown, render_report, report_path
from agent_release.steps.decide_promotion import DecisionReport
from agent_release.steps.evaluation_records import CaseResult
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
    from _report_fixtures import decision_config, evaluation_report

    from agent_release.steps.decide_promotion import decide_promotion

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
