"""Outage drills: the state database locked by another process, the MLflow tracking server unavailable.

One execution against a real ``mlflow server`` (module fixture ``outage``), in four acts:

1. another process holds ``BEGIN EXCLUSIVE`` on ``state.db`` → ``run`` fails with one line naming the
   database and that process, having recorded nothing;
2. the lock released, ``run`` with nothing listening on the configured tracking port → one line naming the
   tracking URI; the execution is recorded as failed, before registration, with live traffic untouched;
3. the server started, a new ``run`` begins; the server is SIGKILLed during the run's first step → the run
   fails at ``register_agents`` with one line; nothing registered, nothing promoted;
4. the server restarted on the same store, ``run --resume`` completes that execution.

MLflow's HTTP client retries a refused connection 7 times with exponential backoff by default (247 s
measured). Act 2 runs with the user's defaults: the pipeline probes the server's ``/health`` first and must
fail before that backoff could have run its course. Act 3 sets ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0``, because a server dying mid-run is
only noticed by MLflow's own client, and the drill measures our handling, not that wait.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from _drill import (
    ENDPOINT,
    STEP_NAMES,
    DrillProject,
    make_project,
    one_error_line,
    result_json,
    wait_for,
)
from _shared.mlflow_server import free_port, start_mlflow_server, stop_server

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

NO_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
DB_TIMEOUT_S = "1"

# Another process (think: a sqlite3 shell left open in a transaction) takes the write lock and holds it until
# its stdin closes.
HOLDER = """
import sqlite3, sys
from pathlib import Path
path = Path(sys.argv[1])
path.parent.mkdir(parents=True, exist_ok=True)
conn = sqlite3.connect(path, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@dataclass
class Outage:
    project: DrillProject
    tracking_uri: str
    holder_pid: int = 0
    acts: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    first_execution_id: str = ""
    execution_id: str = ""
    after_locked: dict[str, Any] = field(default_factory=dict)
    after_at_start: dict[str, Any] = field(default_factory=dict)
    after_mid_run: dict[str, Any] = field(default_factory=dict)


def _snapshot(project: DrillProject, execution_id: str | None) -> dict[str, Any]:
    """What a failed act left: executions, step statuses, endpoint weights, ledger actions."""
    if not (project.home / "state.db").exists():
        return {"executions": []}
    conn = project.db()
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        executions = (
            [dict(r) for r in conn.execute("SELECT id, status, error FROM executions")]
            if "executions" in tables
            else []
        )
    finally:
        conn.close()
    snap: dict[str, Any] = {"executions": executions}
    if execution_id is not None:
        snap["steps"] = {n: r["status"] for n, r in project.steps(execution_id).items()}
        backend = project.backend()
        state = backend.describe_endpoint(ENDPOINT)
        snap["weights"] = None if state is None else {v.name: v.current_weight for v in state.variants}
        snap["ledger"] = [e.action for e in backend.list_audit() if e.execution_id == execution_id]
    return snap


def _first_step_started(outage: Outage) -> bool:
    """True once a second execution exists and its first step has begun (its id goes to ``outage``)."""
    others = [
        e for e in _snapshot(outage.project, None)["executions"] if e["id"] != outage.first_execution_id
    ]
    if not others:
        return False
    outage.execution_id = others[0]["id"]
    return bool(outage.project.steps(outage.execution_id)["validate_datasets"]["status"] != "pending")


def _mlflow_default_backoff_s() -> float:
    """The least time MLflow's HTTP client spends backing off before it gives up on a refused connection.

    urllib3 sleeps ``factor * 2 ** (n - 1)`` seconds (at most ``DEFAULT_BACKOFF_MAX``) before retry n >= 2:
    with MLflow's defaults (7 retries, factor 2) 4 + 8 + 16 + 32 + 64 + 120 = 244 s, jitter not counted.
    """
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    )
    from urllib3.util.retry import Retry

    factor, retries = MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get(), MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()
    return float(sum(min(factor * 2 ** (n - 1), Retry.DEFAULT_BACKOFF_MAX) for n in range(2, retries + 1)))


def _timed(outage: Outage, act: str, proc_factory: Any) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    proc: subprocess.CompletedProcess[str] = proc_factory()
    outage.seconds[act] = time.monotonic() - started
    outage.acts[act] = proc
    return proc


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    base = tmp_path_factory.mktemp("outage")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    project = make_project(base, {"tracking": {"uri": uri}})
    result = Outage(project=project, tracking_uri=uri)
    server_store = base / "mlflow-server"

    # 1. The state database is write-locked by another process.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(project.home / "state.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result.holder_pid = holder.pid
        _timed(result, "locked", lambda: project.run(AGENT_RELEASE_DB_TIMEOUT_S=DB_TIMEOUT_S))
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    result.after_locked = _snapshot(project, None)

    # 2. Nothing listens on the tracking port.
    _timed(result, "tracking down at start", project.run)
    executions = _snapshot(project, None)["executions"]
    assert len(executions) == 1, result.acts["tracking down at start"].stderr[-3000:]
    result.first_execution_id = executions[0]["id"]
    result.after_at_start = _snapshot(project, result.first_execution_id)

    # 3. The server comes up, a new run starts, the server dies under it during the run's first step.
    server = start_mlflow_server(port, server_store)
    try:
        run = project.popen("run", "-c", str(project.config), "--json", **NO_RETRIES)
        try:
            wait_for(
                lambda: run.poll() is not None or _first_step_started(result), 180, "the run's first step"
            )
            stop_server(server, signal.SIGKILL)
            out, err = run.communicate(timeout=300)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait(timeout=30)
        result.acts["tracking dies mid-run"] = subprocess.CompletedProcess([], run.returncode, out, err)
    finally:
        stop_server(server)
    result.after_mid_run = _snapshot(project, result.execution_id)

    # 4. The server is back (same store); the execution is resumed to the end.
    server = start_mlflow_server(port, server_store)
    try:
        _timed(result, "resume", lambda: project.run("--resume", result.execution_id))
        yield result
    finally:
        stop_server(server)


def test_locked_state_database_is_one_clear_line_and_records_nothing(outage: Outage) -> None:
    line = one_error_line(outage.acts["locked"])
    db = outage.project.home / "state.db"
    assert f"state database {db} is locked by another process" in line, line
    assert f"pid {outage.holder_pid} (" in line, "names the process holding it"
    assert outage.after_locked["executions"] == [], "the refused run recorded nothing"


def test_tracking_down_at_start_fails_clearly_and_is_recorded(outage: Outage) -> None:
    line = one_error_line(outage.acts["tracking down at start"])
    assert outage.tracking_uri in line, f"names the tracking URI: {line}"
    assert f"{outage.tracking_uri}/health" in line, (
        f"the probe found it, not MLflow's retrying client: {line}"
    )
    # Liveness, not speed: without the probe, MLflow's client backs off for over four minutes before it gives
    # up, which is the hang this catches. The bound is that backoff itself (computed from MLflow's defaults); the
    # run also starts a Python process, the runtime and the first steps, which take far less.
    assert outage.seconds["tracking down at start"] < _mlflow_default_backoff_s(), outage.seconds
    snap = outage.after_at_start
    assert snap["executions"][0]["status"] == "failed", "not left 'running' forever"
    assert snap["executions"][0]["error"]
    assert all(snap["steps"][s] != "succeeded" for s in STEP_NAMES[3:]), "stopped before registration"
    assert snap["weights"] in (None, {"champion": 1.0, "challenger": 0.0}), "live traffic untouched"
    assert snap["ledger"] == []


def test_tracking_dying_mid_run_fails_at_registration_and_promotes_nothing(outage: Outage) -> None:
    line = one_error_line(outage.acts["tracking dies mid-run"])
    assert f"execution {outage.execution_id} failed at register_agents" in line, line
    snap = outage.after_mid_run
    assert snap["steps"] == {
        "validate_datasets": "succeeded",
        "train_model": "succeeded",
        "deploy_variants": "succeeded",
        "register_agents": "failed",
        "evaluate_variants": "pending",
        "decide_promotion": "pending",
        "promote_challenger": "pending",
    }
    assert snap["weights"] == {"champion": 1.0, "challenger": 0.0}, "live traffic untouched"
    # train_model ran on a fresh registry and approved the first champion; nothing else was decided.
    assert snap["ledger"] == ["approve_bootstrap"]


def test_resume_after_the_server_returns_completes_without_duplicates(outage: Outage) -> None:
    proc = outage.acts["resume"]
    result = result_json(proc)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result["id"] == outage.execution_id
    assert result["status"] == "succeeded" and result["decision"] == "promote"
    assert result["reused"] == list(STEP_NAMES[:3])
    assert result["ran"] == list(STEP_NAMES[3:])
    attempts = {n: r["attempts"] for n, r in outage.project.steps(outage.execution_id).items()}
    assert attempts == {**dict.fromkeys(STEP_NAMES, 1), "register_agents": 2}

    client = outage.project.mlflow_client(outage.tracking_uri)
    experiment = client.get_experiment_by_name("support-agent-drill")
    logged = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert sorted(m.name for m in logged) == [
        "support-agent-drill-challenger",
        "support-agent-drill-champion",
    ]
    assert len(client.search_model_versions("name = 'support-agent-drill'")) == 2
    assert not (outage.project.home / "mlflow.db").exists(), "everything went to the server"
    state = outage.project.backend().describe_endpoint(ENDPOINT)
    assert {v.name: v.current_weight for v in state.variants} == {"champion": 0.0, "challenger": 1.0}
