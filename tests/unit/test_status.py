"""`agent-release status` tells an execution whose process is gone from one that is still running."""

from __future__ import annotations

import json
import os
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


def _execution(state_dir: Path, pid: int, promotion: dict[str, str] | None = None) -> str:
    """An execution recorded as running by process ``pid`` (as if that process had started it), with
    ``promotion`` as its promotion step's stored output when given."""
    store = ExecutionStore(state_dir)
    try:
        steps = [
            StepDef(name=n, needs=(), output_type=BaseModel, run=_noop) for n in ("one", "promote_challenger")
        ]
        execution_id = store.create("demo", state_dir / "pipeline.yaml", "name: demo\n", steps)
        if promotion is not None:
            store.mark_step(
                execution_id, "promote_challenger", "succeeded", output_json=json.dumps(promotion)
            )
            store.finish(execution_id, "succeeded", decision="promote")
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


def _ledger(state_dir: Path, *entries: tuple[str, str, str | None]) -> None:
    """Append (actor, action, execution id) entries about endpoint ``ep``'s challenger to the ledger."""
    from agent_release.pipelines.local_backend import LocalBackend

    backend = LocalBackend(state_dir)
    try:
        for actor, action, execution_id in entries:
            backend.append_audit(actor, action, "ep/challenger", "test", {}, execution_id)
    finally:
        backend.close()


@pytest.mark.parametrize(
    ("ledger", "state", "says", "not_says"),
    [
        ([], "none", "it had changed no traffic", "Nothing guards"),
        ([("run", "weights", "SELF"), ("run", "weights", "SELF")], "stopped", "Nothing guards", "records"),
        ([("run", "weights", "SELF"), ("run", "promote", "SELF")], "finished", "audit #2: promote", "guards"),
        (
            # Another execution's decision changes no traffic; the release manager's rollback does.
            [("run", "weights", "SELF"), ("run", "decision", "OTHER"), ("alice", "rollback", None)],
            "overtaken",
            "alice acted on ep (audit #3: rollback)",
            "Nothing guards",
        ),
    ],
)
def test_an_interrupted_execution_says_where_its_shift_stands_by_the_ledger(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    ledger: list[tuple[str, str, str | None]],
    state: str,
    says: str,
    not_says: str,
) -> None:
    execution_id = _execution(tmp_path, _dead_pid())
    _ledger(tmp_path, *((a, act, execution_id if e == "SELF" else e) for a, act, e in ledger))
    shift = collect_status(tmp_path, None)["last_execution"]["shift"]
    assert shift["state"] == state
    render_status(collect_status(tmp_path, None))
    out = " ".join(capsys.readouterr().out.split())
    assert says in out and not_says not in out, out
    assert f"agent-release run --resume {execution_id}" in out


@pytest.mark.parametrize("guard_tripped_first", [False, True])
def test_a_shift_stopped_by_ctrl_c_is_not_read_as_ended(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], guard_tripped_first: bool
) -> None:
    # Ctrl-C or SIGTERM mid-bake: the promotion step restores the champion and records a rollback with
    # trigger "error", which its resume does not take for an outcome (it walks the schedule again). status
    # used to call that shift ended and say the resume only "records the execution's end".
    from agent_release.pipelines.local_backend import LocalBackend

    execution_id = _execution(tmp_path, _dead_pid())
    backend = LocalBackend(tmp_path)
    try:
        backend.append_audit("run", "weights", "ep/challenger", "canary step 50%", {}, execution_id)
        if guard_tripped_first:  # Ctrl-C while the guard's rollback was being recorded: that is the outcome
            backend.append_audit(
                "run", "rollback", "ep/challenger", "guard", {"trigger": "guard"}, execution_id
            )
        backend.append_audit(
            "run",
            "rollback",
            "ep/challenger",
            "promotion failed mid-shift (interrupted (signal 15)); champion back to 100%",
            {"trigger": "error", "error": "interrupted (signal 15)"},  # as restore_after_error writes it
            execution_id,
        )
    finally:
        backend.close()
    shift = collect_status(tmp_path, None)["last_execution"]["shift"]
    render_status(collect_status(tmp_path, None))
    out = " ".join(capsys.readouterr().out.split())
    if guard_tripped_first:  # the promotion step's resume does not act again after a guard's rollback
        assert shift["state"] == "finished" and shift["audit_seq"] == 2
        assert "records the execution's end" in out, out
        return
    assert shift["state"] == "restored" and shift["audit_seq"] == 2
    assert f"agent-release run --resume {execution_id}` restarts the shift from its first step" in out, out
    assert "records the execution's end" not in out and "Nothing guards" not in out


@pytest.mark.parametrize(
    ("promotion", "shown"),
    [
        ({"action": "rolled_back", "reason": "challenger error rate 31% > 5%"}, "promotion: rolled back"),
        ({"action": "promoted", "reason": "every guard green"}, "promotion: promoted"),
    ],
)
def test_the_last_run_says_what_its_promotion_did_not_only_the_gates_decision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], promotion: dict[str, str], shown: str
) -> None:
    # It read "succeeded  decision: promote" after a guard had rolled the canary back.
    _execution(tmp_path, os.getpid(), promotion)
    last = collect_status(tmp_path, None)["last_execution"]
    assert last["decision"] == "promote" and last["promotion"] == promotion
    render_status(collect_status(tmp_path, None))
    out = capsys.readouterr().out
    assert f"decision: promote  {shown}" in out
    # Off a terminal each line stays whole (rich used to wrap the tracking URI at 80 columns).
    assert f"tracking URI  sqlite:///{tmp_path}/mlflow.db" in out.splitlines()


def test_a_run_whose_promotion_has_not_run_has_no_promotion(tmp_path: Path) -> None:
    _execution(tmp_path, os.getpid())
    assert collect_status(tmp_path, None)["last_execution"]["promotion"] is None


def test_status_names_each_variants_role_share_and_package_from_the_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The --json contract: the champion serves the Approved package, the challenger the pending one, each
    # with its weight and share of traffic (a canary left half-way by deploy_half_way_canary).
    from _shared.release_state import ENDPOINT, deploy_half_way_canary

    from agent_release.pipelines.local_backend import LocalBackend

    deploy_half_way_canary(tmp_path)
    backend = LocalBackend(tmp_path)
    try:
        arns = {v.name: v.package_arn for v in backend.list_endpoints()[0].variants}
    finally:
        backend.close()
    (endpoint,) = collect_status(tmp_path, None)["endpoints"]
    assert (endpoint["name"], endpoint["status"]) == (ENDPOINT, "InService")
    assert sorted(endpoint["variants"], key=lambda v: v["name"]) == [
        {
            "name": "challenger",
            "weight": 0.5,
            "share": 0.5,
            "role": "challenger",
            "package_arn": arns["challenger"],
            "package_version": 2,
            "approval_status": "PendingManualApproval",
            "shadow": False,
        },
        {
            "name": "champion",
            "weight": 0.5,
            "share": 0.5,
            "role": "champion",
            "package_arn": arns["champion"],
            "package_version": 1,
            "approval_status": "Approved",
            "shadow": False,
        },
    ]
    render_status(collect_status(tmp_path, None))
    rows = [" ".join(line.replace("│", " ").split()) for line in capsys.readouterr().out.splitlines()]
    assert "champion champion 0.5 50% v1 Approved" in rows
    assert "challenger challenger 0.5 50% v2 PendingManualApproval" in rows
    assert "last run none yet (`agent-release run`)" in rows


def test_a_running_execution_that_recorded_no_process_is_interrupted(tmp_path: Path) -> None:
    # No pid recorded: no process can be shown to be running it, so status must not call it live (which
    # would hide that a shift it was making is unguarded).
    store = ExecutionStore(tmp_path)
    try:
        store.create("demo", tmp_path / "pipeline.yaml", "name: demo\n", [])
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "state.db") as conn:
        conn.execute("UPDATE executions SET pid = NULL")
    last = collect_status(tmp_path, None)["last_execution"]
    assert last["status"] == "running" and last["interrupted"] is True


def test_a_promotion_outcome_without_a_reason_says_so_with_an_empty_reason() -> None:
    from agent_release.pipelines.status import promotion_outcome

    assert promotion_outcome("no_change", None) == {"action": "no_change", "reason": ""}
    assert promotion_outcome("promoted", "all guards green") == {
        "action": "promoted",
        "reason": "all guards green",
    }
    assert promotion_outcome(None, "left over") is None
    assert promotion_outcome("", "left over") is None


def test_a_variant_without_a_package_or_role_shows_dashes(capsys: pytest.CaptureFixture[str]) -> None:
    # A variant deployed from a model outside the registry has no package, version, approval or role.
    variant = {
        "name": "byo",
        "weight": 1.0,
        "share": 1.0,
        "role": None,
        "package_arn": None,
        "package_version": None,
        "approval_status": None,
        "shadow": False,
    }
    shadow = variant | {"name": "mirror", "weight": 0.0, "share": 0.0, "shadow": True}
    data = {
        "state_dir": "/s",
        "tracking_uri": "sqlite:///s/mlflow.db",
        "last_execution": None,
        "endpoints": [{"name": "ep", "status": "InService", "variants": [variant, shadow]}],
    }
    render_status(data)
    rows = [" ".join(line.replace("│", " ").split()) for line in capsys.readouterr().out.splitlines()]
    assert "byo - 1 100% - -" in rows
    assert "mirror (shadow) - 0 0% - -" in rows
