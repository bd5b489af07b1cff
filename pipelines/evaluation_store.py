"""The per-case evaluation table in the state database (one row per case x variant x repeat).

The evaluation step returns every :class:`~agent_release.steps.evaluation_records.CaseResult`; the pipeline
writes them here (and the step logs the same table to MLflow) so that SQL, the report and later audits can
read the evidence behind a decision without MLflow. Saving is idempotent per execution: a resumed
evaluation replaces the rows of the earlier attempt instead of duplicating them.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from agent_release.pipelines.state_db import connect, ensure_schema
from agent_release.steps.evaluation_records import CaseResult, EvaluationReport

_DDL = """
CREATE TABLE IF NOT EXISTS evaluation_rows (
    execution_id TEXT NOT NULL,
    case_id TEXT NOT NULL,
    cluster TEXT NOT NULL,
    variant TEXT NOT NULL,
    role TEXT NOT NULL,
    repeat INTEGER NOT NULL,
    scores_json TEXT NOT NULL,
    error TEXT,
    latency_s REAL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost REAL NOT NULL,
    retries INTEGER NOT NULL,
    trace_id TEXT,
    dataset_hash TEXT NOT NULL,
    scorer_errors_json TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (execution_id, variant, case_id, repeat)
);
"""
# Added after the table was first shipped: a database made before it gets the column on its next save.
_ADDED_COLUMNS = {"scorer_errors_json": "TEXT NOT NULL DEFAULT '{}'"}
_COLUMNS = (
    "execution_id", "case_id", "cluster", "variant", "role", "repeat", "scores_json", "error", "latency_s",
    "input_tokens", "output_tokens", "cost", "retries", "trace_id", "dataset_hash", "scorer_errors_json",
)  # fmt: skip


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    present = {row[1] for row in conn.execute("PRAGMA table_info(evaluation_rows)")}
    for name, declaration in _ADDED_COLUMNS.items():
        if name not in present:
            conn.execute(f"ALTER TABLE evaluation_rows ADD COLUMN {name} {declaration}")


def save_evaluation_rows(state_dir: Path, execution_id: str, report: EvaluationReport) -> int:
    """Replace the rows of ``execution_id`` with ``report.rows``; return how many were written."""
    conn = connect(state_dir)
    try:
        ensure_schema(conn, _DDL)
        conn.execute("BEGIN IMMEDIATE")
        try:
            _add_missing_columns(conn)
            conn.execute("DELETE FROM evaluation_rows WHERE execution_id = ?", (execution_id,))
            conn.executemany(
                f"INSERT INTO evaluation_rows ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                [
                    (
                        execution_id, r.case_id, r.cluster, r.variant, r.role, r.repeat,
                        json.dumps(dict(r.scores), sort_keys=True), r.error, r.latency_s, r.input_tokens,
                        r.output_tokens, r.cost, r.retries, r.trace_id, report.dataset_hash,
                        json.dumps(dict(r.scorer_errors), sort_keys=True),
                    )
                    for r in report.rows
                ],
            )  # fmt: skip
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(report.rows)
    finally:
        conn.close()


def load_evaluation_rows(state_dir: Path, execution_id: str) -> list[CaseResult]:
    """The stored rows of an execution (empty when it has none)."""
    conn = connect(state_dir)
    try:
        ensure_schema(conn, _DDL)
        rows = conn.execute(
            "SELECT * FROM evaluation_rows WHERE execution_id = ? ORDER BY variant, case_id, repeat",
            (execution_id,),
        ).fetchall()
    finally:
        conn.close()
    # A database made before the column existed, and only read since (no save added it): no errors recorded.
    with_errors = bool(rows) and "scorer_errors_json" in rows[0].keys()  # noqa: SIM118 - a Row's "in" is by value
    return [
        CaseResult(
            case_id=r["case_id"], cluster=r["cluster"], variant=r["variant"], role=r["role"],
            repeat=r["repeat"], scores=json.loads(r["scores_json"]), error=r["error"], latency_s=r["latency_s"],
            input_tokens=r["input_tokens"], output_tokens=r["output_tokens"], cost=r["cost"],
            retries=r["retries"], trace_id=r["trace_id"],
            scorer_errors=json.loads(r["scorer_errors_json"]) if with_errors else {},
        )
        for r in rows
    ]  # fmt: skip
