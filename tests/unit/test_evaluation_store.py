"""The per-case table in the state database keeps every row's evidence, scorer errors included."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent_release.pipelines.evaluation_store import load_evaluation_rows, save_evaluation_rows
from agent_release.pipelines.state_db import state_db_path
from agent_release.steps.evaluation_records import CaseResult, EvaluationReport

ROWS = (
    CaseResult(
        case_id="C-1", cluster="k1", variant="challenger", role="challenger",
        scores={"task_success": 1.0, "picky": None}, scorer_errors={"picky": "LookupError: no order id"},
        latency_s=0.5, input_tokens=10, output_tokens=2, cost=0.1, trace_id="tr-1",
    ),
    CaseResult(case_id="C-2", cluster="k2", variant="challenger", role="challenger", scores={"task_success": 0.0}),
)  # fmt: skip


def _report(rows: tuple[CaseResult, ...] = ROWS) -> EvaluationReport:
    return EvaluationReport(
        dataset_name="golden", dataset_hash="sha256:1", repeats=1, scorer_specs=(), variants=(), rows=rows
    )


def test_rows_round_trip_with_their_scorer_errors(tmp_path: Path) -> None:
    assert save_evaluation_rows(tmp_path, "ex-1", _report()) == 2
    loaded = {r.case_id: r for r in load_evaluation_rows(tmp_path, "ex-1")}
    assert loaded["C-1"] == ROWS[0].model_copy(update={"tags": {}})
    assert loaded["C-2"].scorer_errors == {}


def test_a_table_made_before_scorer_errors_gets_the_column_on_its_next_save(tmp_path: Path) -> None:
    old_ddl = """CREATE TABLE evaluation_rows (
        execution_id TEXT NOT NULL, case_id TEXT NOT NULL, cluster TEXT NOT NULL, variant TEXT NOT NULL,
        role TEXT NOT NULL, repeat INTEGER NOT NULL, scores_json TEXT NOT NULL, error TEXT, latency_s REAL,
        input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cost REAL NOT NULL,
        retries INTEGER NOT NULL, trace_id TEXT, dataset_hash TEXT NOT NULL,
        PRIMARY KEY (execution_id, variant, case_id, repeat))"""
    path = state_db_path(tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute(old_ddl)
        conn.execute(
            "INSERT INTO evaluation_rows VALUES ('ex-0', 'C-9', 'k', 'champion', 'champion', 0, '{}', NULL, "
            "NULL, 0, 0, 0.0, 0, NULL, 'sha256:0')"
        )
    assert [r.scorer_errors for r in load_evaluation_rows(tmp_path, "ex-0")] == [{}]  # read as it is
    save_evaluation_rows(tmp_path, "ex-1", _report())
    assert {r.case_id: r.scorer_errors for r in load_evaluation_rows(tmp_path, "ex-1")}["C-1"] == {
        "picky": "LookupError: no order id"
    }
    assert [r.case_id for r in load_evaluation_rows(tmp_path, "ex-0")] == ["C-9"]  # older rows kept


def test_a_resumed_evaluation_replaces_the_rows_of_the_earlier_attempt(tmp_path: Path) -> None:
    # Saving is idempotent per execution: the second attempt's rows replace the first's (none duplicated,
    # none of the first attempt's left over), and other executions' rows stay.
    save_evaluation_rows(tmp_path, "ex-1", _report())
    save_evaluation_rows(tmp_path, "ex-2", _report())
    assert save_evaluation_rows(tmp_path, "ex-1", _report(ROWS[1:])) == 1
    assert [r.case_id for r in load_evaluation_rows(tmp_path, "ex-1")] == ["C-2"]
    assert [r.case_id for r in load_evaluation_rows(tmp_path, "ex-2")] == ["C-1", "C-2"]


def test_an_execution_without_rows_loads_none_even_before_any_evaluation_was_saved(tmp_path: Path) -> None:
    assert load_evaluation_rows(tmp_path, "ex-1") == []
