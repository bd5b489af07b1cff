"""`agent-release status` tells an execution whose process is gone from one that is still running."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from agent_release.pipelines.executor import ExecutionStore, StepDef, StepRun
from agent_release.pipelines.status import collect_status, render_status


def _noop(_: StepRun) -> None:
    return None


def _execution(state_dir: Path, pid: int) -> str:
    """An execution recorded as running by process ``pid`` (as if that process had started it)."""
    store = ExecutionStore(state_dir)
    try:
        step = StepDef(name="one", needs=(), output_type=BaseModel, run=_noop)
        execution_id = store.create("demo", state_dir / "pipeline.yaml", "name: demo\n", [step])
    finally:
        store.close()
    with sqlite3.connect(state_dir / "state.db") as conn:
        conn.execute("UPDATE executions SET pid = ? WHERE id = ?", (pid, execution_id))
    return execution_id


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_a_running_execution_whose_process_is_gone_is_interrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    execution_id = _execution(tmp_path, _dead_pid())
    last = collect_status(tmp_path, None)["last_execution"]
    assert last["id"] == execution_id and last["status"] == "running"
    assert last["interrupted"] is True
    render_status(collect_status(tmp_path, None))
    out = " ".join(capsys.readouterr().out.split())
    assert "interrupted" in out and f"agent-release run --resume {execution_id}" in out


def test_an_execution_whose_process_lives_is_not_interrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    _execution(tmp_path, os.getpid())
    assert collect_status(tmp_path, None)["last_execution"]["interrupted"] is False
    render_status(collect_status(tmp_path, None))
    assert "interrupted" not in capsys.readouterr().out
