"""What the run console prints for a bake that goes on because the guards cannot judge the step yet."""

from __future__ import annotations

from pathlib import Path

import pytest
from _shared.console import captured_console

from agent_release.pipelines.console import RunConsole


def test_a_log_gets_one_line_when_a_bake_goes_on_past_its_period() -> None:
    run_console, out = captured_console(terminal=False)
    update = run_console.bake_progress("canary 10%", 10.0)
    update(5.0, 10.0, "2 calls, 0 errors")
    update(10.2, 30.0, "3 calls, 0 errors; baking on until 5 calls (up to 30s)")
    update(12.0, 30.0, "4 calls, 0 errors; baking on until 5 calls (up to 30s)")
    assert out.getvalue().splitlines() == [
        "  canary 10%: baking 10s",
        "  canary 10%: after 10s, 3 calls, 0 errors; baking on until 5 calls (up to 30s)",
    ]


def test_a_log_gets_only_the_bake_line_when_the_step_is_judged_in_time() -> None:
    run_console, out = captured_console(terminal=False)
    update = run_console.bake_progress("canary 50%", 10.0)
    update(10.0, 10.0, "12 calls, 0 errors")
    assert out.getvalue().splitlines() == ["  canary 50%: baking 10s"]


def test_the_bar_stretches_to_the_limit_while_the_bake_goes_on() -> None:
    run_console, _ = captured_console(terminal=True)
    update = run_console.bake_progress("canary 10%", 10.0)
    progress = run_console._progress
    assert progress is not None
    (task,) = progress.tasks
    update(10.5, 30.0, "3 calls; baking on until 5 calls (up to 30s)")
    assert (task.total, task.completed) == (30.0, 10.5)
    assert task.fields["extra"].endswith("(up to 30s)")
    run_console._stop_progress()


def test_quiet_prints_nothing() -> None:
    run_console, out = captured_console(terminal=False)
    run_console.quiet = True
    run_console.bake_progress("canary 10%", 10.0)(11.0, 30.0, "baking on")
    assert out.getvalue() == ""


def test_off_a_terminal_a_long_line_is_not_wrapped(capsys: pytest.CaptureFixture[str]) -> None:
    # Off a terminal rich wrapped at 80 columns: "report:" and the report's path came out on two lines.
    run = RunConsole()
    assert not run.interactive
    reason = "endpoint support did not answer in 30 s; " * 5
    run.step_event("evaluate_variants", "failed", {"error": reason.strip()})
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"✗ evaluate_variants: {reason.strip()}"], lines


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (
            "rolled_back",
            "execution e-1 succeeded, decision promote, rolled back: challenger error rate 31% > 5%",
        ),
        ("promoted", "execution e-1 succeeded, decision promote"),
        # The gate's reject: no canary ran, so nothing was rolled back.
        ("rejected", "execution e-1 succeeded, decision promote"),
    ],
)
def test_the_run_footer_says_when_a_promoted_release_was_rolled_back(action: str, expected: str) -> None:
    # It used to read "succeeded, decision promote" after the guards had rolled the canary back.
    from agent_release.pipelines.cli import _print_run_footer
    from agent_release.pipelines.executor import ExecutionResult
    from agent_release.steps.promote_challenger import PromotionReport

    run_console, out = captured_console(terminal=False)
    promotion = PromotionReport.model_construct(action=action, reason="challenger error rate 31% > 5%")
    result = ExecutionResult(
        id="e-1", status="succeeded", decision="promote", outputs={"promote_challenger": promotion}
    )
    _print_run_footer(run_console, result, None)
    assert out.getvalue().splitlines()[0] == expected


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        (
            {"action": "rolled_back", "reason": "challenger error rate 31% > 5%"},
            {"action": "rolled_back", "reason": "challenger error rate 31% > 5%"},
        ),
        (
            {"action": "promoted", "reason": "every guard green"},
            {"action": "promoted", "reason": "every guard green"},
        ),
        (None, None),  # the promotion step did not run (e.g. the gate found nothing to decide on)
    ],
)
def test_run_json_says_what_the_promotion_did_not_only_the_gates_decision(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    outputs: dict[str, str] | None,
    expected: dict[str, str] | None,
) -> None:
    # `run --json` said {"status": "succeeded", "decision": "promote"} after a guard had rolled the canary
    # back: a script could not tell a promoted challenger from a rolled-back one.
    import json

    from click.testing import CliRunner

    from agent_release.pipelines import cli, local_run
    from agent_release.pipelines.executor import ExecutionResult
    from agent_release.steps.promote_challenger import PromotionReport

    promotion = {"promote_challenger": PromotionReport.model_construct(**outputs)} if outputs else {}
    result = ExecutionResult(id="e-1", status="succeeded", decision="promote", outputs=promotion)
    monkeypatch.setattr(local_run, "run_local", lambda *_a, **_k: result)
    monkeypatch.setattr(cli, "_render_report_quietly", lambda *_a: None)
    config = tmp_path / "pipeline.yaml"
    config.write_text("name: x\n")
    invoked = CliRunner().invoke(
        cli.main, ["run", "-c", str(config), "--json"], env={"AGENT_RELEASE_HOME": str(tmp_path / "home")}
    )
    assert invoked.exit_code == 0, invoked.output
    data = json.loads(invoked.output.strip().splitlines()[-1])
    assert data["decision"] == "promote" and data["promotion"] == expected


def test_a_log_gets_an_evaluation_progress_line_every_period_and_one_at_the_end() -> None:
    from agent_release.pipelines.console import PLAIN_PROGRESS_EVERY_S
    from agent_release.steps.eval_harness import ProgressEvent

    run_console, out = captured_console(terminal=False)
    every = PLAIN_PROGRESS_EVERY_S
    # A long evaluation: 400 cases over 3.5 periods; a log silent until the end looks hung (and CI jobs
    # that end a step silent for minutes kill it).
    for done in range(1, 401):
        run_console.eval_progress(
            ProgressEvent("challenger", done, 400, done // 100, 0, done * 3.5 * every / 400)
        )
    lines = out.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert lines[0].startswith("  challenger: 115/400 cases, errors 1 ")
    assert lines[-1].startswith("  challenger: 400/400 cases, errors 4 ")
    # A short one keeps its single line.
    short, out = captured_console(terminal=False)
    for done in range(1, 31):
        short.eval_progress(ProgressEvent("champion", done, 30, 0, 0, done * 0.1))
    assert out.getvalue().splitlines() == ["  champion: 30/30 cases, errors 0  10.0 cases/s"]


def test_the_final_trace_flush_gets_a_line_each_time_the_evaluation_reports_it() -> None:
    # Session 21: 4,500 cases x 3 repeats ended a variant's cases, then wrote its traces for 25 s without
    # a word. The evaluation now reports the wait every 10 s (tests/unit/test_evaluate_variants.py).
    from agent_release.steps.eval_harness import ProgressEvent
    from agent_release.steps.evaluate_variants import TraceFlushProgress

    run_console, out = captured_console(terminal=False)
    run_console.eval_progress(ProgressEvent("challenger", 30, 30, 0, 0, 3.0))
    run_console.eval_progress(TraceFlushProgress("challenger", 1234, 10.02))
    run_console.eval_progress(TraceFlushProgress("challenger", 0, 20.0))
    run_console.eval_progress(TraceFlushProgress("challenger", None, 30.0))
    assert out.getvalue().splitlines() == [
        "  challenger: 30/30 cases, errors 0  10.0 cases/s",
        "  challenger: writing traces to MLflow, 1234 queued (10s)",
        "  challenger: writing traces to MLflow (20s)",
        "  challenger: writing traces to MLflow (30s)",
    ]
    terminal, screen = captured_console(terminal=True)
    terminal.eval_progress(ProgressEvent("champion", 30, 30, 0, 0, 3.0))
    terminal.eval_progress(TraceFlushProgress("champion", 7, 10.0))
    terminal._stop_progress()
    assert "writing traces to MLflow, 7 queued (10s)" in screen.getvalue()


def test_a_decision_step_line_says_the_decision_and_its_reason() -> None:
    # DecisionReport has no summary(): its step line is built from its decision and reason.
    from types import SimpleNamespace

    from agent_release.steps.decide_promotion import DecisionReport

    run_console, out = captured_console(terminal=False)
    decision = DecisionReport.model_construct(decision="promote", reason="task_success +0.29 [+0.12, +0.46]")
    run_console.step_event("decide_promotion", "succeeded", {"output": decision, "seconds": 2.04})
    # An output with a reason but no decision gets no summary (and does not break the run).
    run_console.step_event("other", "succeeded", {"output": SimpleNamespace(reason="why", decision=None)})
    assert out.getvalue().splitlines() == [
        "✓ decide_promotion (2.0s) — PROMOTE: task_success +0.29 [+0.12, +0.46]",
        "✓ other (0.0s)",
    ]


def test_a_resumed_step_says_it_was_already_done() -> None:
    run_console, out = captured_console(terminal=False)
    run_console.step_event("deploy_variants", "reused", {})
    assert out.getvalue().splitlines() == ["↺ deploy_variants already done (resumed)"]


def test_a_finished_or_failed_step_stops_its_progress_bars() -> None:
    # A bar left running after its step would keep redrawing under the next step's lines.
    run_console, _ = captured_console(terminal=True)
    run_console.eval_progress({"variant": "challenger", "done": 3, "total": 10})
    assert run_console._progress is not None and run_console._tasks
    run_console.step_event("evaluate_variants", "succeeded", {"seconds": 1.0})
    assert run_console._progress is None and not run_console._tasks
    run_console.bake_progress("canary 10%", 10.0)
    assert run_console._progress is not None
    run_console.step_event("promote_challenger", "failed", {"error": "endpoint gone"})
    assert run_console._progress is None and not run_console._tasks


def test_an_evaluation_event_missing_its_counts_reads_as_zero() -> None:
    run_console, out = captured_console(terminal=False)
    run_console.eval_progress({"variant": "challenger"})
    run_console.eval_progress({"variant": "champion", "done": 5, "total": 5})
    assert out.getvalue().splitlines() == [
        "  challenger: 0/0 cases, errors 0  0.0 cases/s",
        "  champion: 5/5 cases, errors 0  0.0 cases/s",
    ]
