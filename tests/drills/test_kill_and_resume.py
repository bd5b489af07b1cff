"""Kill drills: SIGKILL at every step boundary and in the middle of a traffic shift, then ``run --resume``.

One execution of the drill pipeline is driven through a chain of processes (module fixture ``chain``), every
one started with fake AWS credentials in its environment and ``--verbose`` logging:

1. ``run`` killed right after ``validate_datasets`` is stored, then ``run --resume`` killed after
   ``train_model``, ``deploy_variants``, ``register_agents``, ...: every step boundary up to
   ``decide_promotion``.
2. Before the ``evaluate_variants`` resume, the stored records of the three steps with outside side effects
   (registry, endpoint, MLflow) are erased: the state a crash leaves between a step's side effects and its
   record. They run again and must not duplicate anything. That resume is SIGKILLed in the middle of
   ``evaluate_variants``, as soon as its first variant's MLflow run exists; the next one evaluates again
   and must close the runs the killed attempt left RUNNING.
3. The resume that runs ``promote_challenger`` is frozen (SIGSTOP) as soon as the ledger shows its first
   weight change. While it holds the endpoint lock, a second ``run`` and a release manager's ``promote`` are
   started and must both fail at once naming the holder. Then the frozen run is SIGKILLed mid-shift.
4. ``run --resume`` restarts the shift (ledger ``resume``) and is killed after the step is stored; a last
   ``run --resume`` finds every step done and finishes the execution.

The tests below each check one property of what the chain left behind.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _drill import (
    ENDPOINT,
    STEP_NAMES,
    Drained,
    DrillProject,
    kill_group,
    make_project,
    one_error_line,
    result_json,
    wait_for,
)

# The module's fixture runs ten CLI processes in a row (about 150 s on a quiet 2-core machine); the
# default 300 s per-test timeout would cut it short on a loaded one.
pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(900)]

KILL_ENV = "AGENT_RELEASE_DRILL_KILL_AFTER_STEP"
# Distinctive fake credentials: if any of them shows up in an output, it leaked from the environment.
PLANTED_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEDRILL0000000",
    "AWS_SECRET_ACCESS_KEY": "drill/secret/Zq9fW3kLrT7vXy2NpB5mC8dH1jE4gA6sK",
    "AWS_SESSION_TOKEN": "FQoGZXIvYXdzEDRILLsessionTOKEN0only0for0tests0QWERTYuiop",
}
BAKE_S = 2.0  # long enough to freeze the run inside its first bake; the schedule is [50, 100]
RERUN_STEPS = ("train_model", "deploy_variants", "register_agents")


@dataclass
class Outcome:
    """How one process of the chain ended."""

    label: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float


@dataclass
class Chain:
    project: DrillProject
    execution_id: str
    outcomes: list[Outcome] = field(default_factory=list)
    contenders: dict[str, Outcome] = field(default_factory=dict)
    holder_pid: int = 0
    weights_at_kill: dict[str, float] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)


def _run(project: DrillProject, label: str, *args: str, kill_after: str | None = None) -> Outcome:
    env = {KILL_ENV: kill_after} if kill_after else {}
    started = time.monotonic()
    proc = project.cli("-v", "run", "-c", str(project.config), "--json", *args, **env)
    return Outcome(label, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def _erase_step_records(project: DrillProject, execution_id: str, names: tuple[str, ...]) -> None:
    conn = project.db()
    try:
        conn.executemany(
            "UPDATE steps SET status = 'running', output_json = NULL, finished_at = NULL"
            " WHERE execution_id = ? AND name = ?",
            [(execution_id, n) for n in names],
        )
        conn.commit()
    finally:
        conn.close()


def _state_db_writable(project: DrillProject) -> bool:
    """True when no process holds a write transaction on state.db (checked without waiting)."""
    conn = sqlite3.connect(project.home / "state.db", timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def _freeze_mid_shift(project: DrillProject, execution_id: str, proc: subprocess.Popen[str]) -> None:
    """Wait for the first weight change of the execution, then SIGSTOP the run (outside a DB transaction)."""

    def shifted() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"the promote resume exited ({proc.returncode}) before it shifted traffic")
        entries = project.backend().list_audit()
        return any(e.action == "weights" and e.execution_id == execution_id for e in entries)

    wait_for(shifted, 180, "the first weight change in the audit ledger")
    for _ in range(50):
        kill_group(proc, signal.SIGSTOP)
        if _state_db_writable(project):
            return
        kill_group(proc, signal.SIGCONT)  # frozen inside a transaction: let it commit and try again
        time.sleep(0.02)
    pytest.fail("could not freeze the run outside a state-database transaction")


def _evaluation_runs(project: DrillProject) -> list[sqlite3.Row]:
    """The ``evaluate-*`` runs in MLflow's store (read with SQL: no MLflow client in the polling loop)."""
    path = project.home / "mlflow.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        return list(conn.execute("SELECT run_uuid, name, status FROM runs WHERE name LIKE 'evaluate-%'"))
    except sqlite3.OperationalError:  # the store's tables are not created yet
        return []
    finally:
        conn.close()


def _killed_mid_evaluation(project: DrillProject, *args: str) -> Outcome:
    """A resume SIGKILLed as soon as its evaluation has a variant run: its cases are in flight."""
    before = {row["run_uuid"] for row in _evaluation_runs(project)}
    proc = project.popen("-v", "run", "-c", str(project.config), "--json", *args)
    drained = Drained(proc)
    started = time.monotonic()

    def evaluating() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"the resume exited ({proc.returncode}) before its evaluation started")
        new = [row for row in _evaluation_runs(project) if row["run_uuid"] not in before]
        return any(row["name"] != "evaluate-smoke" for row in new)

    try:
        wait_for(evaluating, 180, "the evaluation's first variant run")
    finally:
        kill_group(proc, signal.SIGKILL)
        proc.wait(timeout=60)
    out, err = drained.result()
    return Outcome("resume, killed mid-evaluation", proc.returncode, out, err, time.monotonic() - started)


def _contend(project: DrillProject) -> dict[str, Outcome]:
    """A second pipeline run and a release manager's promote, started together against the held lock."""
    commands = {
        "second run": ("-v", "run", "-c", str(project.config), "--json"),
        "promote": ("-v", "promote", "challenger", "-c", str(project.config), "-q"),
    }
    started = time.monotonic()
    procs = {label: project.popen(*args) for label, args in commands.items()}
    outcomes = {}
    for label, proc in procs.items():
        out, err = proc.communicate(timeout=180)
        outcomes[label] = Outcome(label, proc.returncode, out, err, time.monotonic() - started)
    return outcomes


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    project = make_project(tmp_path_factory.mktemp("kill-chain"), {"promote": {"bake_s": BAKE_S}})
    project.extra_env.update(PLANTED_SECRETS)

    first = _run(project, "run, killed after validate_datasets", kill_after=STEP_NAMES[0])
    executions = project.executions()
    assert len(executions) == 1, first.stderr[-3000:]
    result = Chain(project=project, execution_id=executions[0]["id"], outcomes=[first])
    resume = ("--resume", result.execution_id)

    for step in STEP_NAMES[1:6]:
        if step == "evaluate_variants":
            _erase_step_records(project, result.execution_id, RERUN_STEPS)
            result.outcomes.append(_killed_mid_evaluation(project, *resume))
        result.outcomes.append(_run(project, f"resume, killed after {step}", *resume, kill_after=step))

    holder = project.popen("-v", "run", "-c", str(project.config), "--json", *resume)
    drained = Drained(holder)
    started = time.monotonic()
    try:
        result.holder_pid = holder.pid
        _freeze_mid_shift(project, result.execution_id, holder)
        state = project.backend().describe_endpoint(ENDPOINT)
        result.weights_at_kill = {v.name: v.current_weight for v in state.variants}
        result.contenders = _contend(project)
    finally:
        kill_group(holder, signal.SIGKILL)
        holder.wait(timeout=60)
        out, err = drained.result()
    result.outcomes.append(
        Outcome("resume, killed mid-shift", holder.returncode, out, err, time.monotonic() - started)
    )

    result.outcomes.append(
        _run(project, "resume, killed after promote_challenger", *resume, kill_after=STEP_NAMES[6])
    )
    last = _run(project, "resume to the end", *resume)
    result.outcomes.append(last)
    result.final = result_json(subprocess.CompletedProcess([], last.returncode, last.stdout, last.stderr))
    # The figures docs/reliability.md quotes (shown with pytest -s).
    print(
        "\nkill chain:",
        "; ".join(f"{o.label}: exit {o.returncode}, {o.seconds:.1f} s" for o in result.outcomes),
    )
    print(
        "contenders:",
        "; ".join(f"{o.label}: exit {o.returncode}, {o.seconds:.1f} s" for o in result.contenders.values()),
    )
    yield result


def test_every_kill_landed_and_the_last_resume_finishes_the_execution(chain: Chain) -> None:
    killed = chain.outcomes[:-1]
    assert [o.returncode for o in killed] == [-signal.SIGKILL] * len(killed), [
        (o.label, o.returncode, o.stderr[-1500:]) for o in killed
    ]
    last = chain.outcomes[-1]
    assert last.returncode == 0, last.stderr[-3000:]
    assert chain.final["status"] == "succeeded"
    assert chain.final["decision"] == "promote"
    assert chain.final["ran"] == [] and chain.final["reused"] == list(STEP_NAMES)
    executions = chain.project.executions()
    assert [e["id"] for e in executions] == [chain.execution_id], "no contender started an execution"
    assert executions[0]["status"] == "succeeded"


def test_each_step_ran_once_except_the_ones_whose_record_was_lost(chain: Chain) -> None:
    steps = chain.project.steps(chain.execution_id)
    assert {name: row["status"] for name, row in steps.items()} == dict.fromkeys(STEP_NAMES, "succeeded")
    expected = {name: 2 if name in RERUN_STEPS else 1 for name in STEP_NAMES}
    expected["promote_challenger"] = 2  # killed mid-shift once, then completed
    expected["evaluate_variants"] = 2  # killed mid-evaluation once, then completed
    assert {name: row["attempts"] for name, row in steps.items()} == expected


def test_no_duplicated_registrations(chain: Chain) -> None:
    """Re-run train/deploy/register steps reuse what exists: one package, model version, LoggedModel each."""
    project = chain.project
    from agent_release.steps.backend import ApprovalStatus

    packages = project.backend().list_packages("support-model")
    assert [p.version for p in packages] == [1, 2]
    assert [p.approval_status for p in packages] == [ApprovalStatus.APPROVED, ApprovalStatus.APPROVED]

    client = project.mlflow_client()
    agent = "support-agent-drill"
    versions = client.search_model_versions(f"name = '{agent}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    experiment = client.get_experiment_by_name(agent)
    logged = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert sorted(m.name for m in logged) == [f"{agent}-challenger", f"{agent}-champion"]
    assert sorted(v.source for v in versions) == sorted(f"models:/{m.model_id}" for m in logged)
    prompts = client.search_prompt_versions(f"{agent}-system-prompt")
    assert len(list(prompts)) == 1
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'")
    assert sorted(r.info.run_name for r in runs) == [
        "evaluate-challenger",
        "evaluate-champion",
        "evaluate-smoke",
    ], "the evaluation finished once"


def test_runs_of_the_evaluation_killed_midway_are_closed_by_the_resume(chain: Chain) -> None:
    from agent_release.steps.abandoned_runs import ABANDONED_TAG, EVALUATION_KEY_TAG

    client = chain.project.mlflow_client()
    experiment = client.get_experiment_by_name("support-agent-drill")
    runs = client.search_runs([experiment.experiment_id])
    by_status: dict[str, list[Any]] = {}
    for run in runs:
        by_status.setdefault(run.info.status, []).append(run)
    assert "RUNNING" not in by_status, [r.info.run_name for r in by_status["RUNNING"]]
    killed = by_status.get("KILLED", [])
    # The killed attempt had its parent run and its first variant's run; the resume closed both.
    names = sorted(r.info.run_name for r in killed)
    assert names[-1] == "evaluate-smoke" and len(names) >= 2, names
    assert all(ABANDONED_TAG in r.data.tags for r in killed)
    digest = chain.project.step_output(chain.execution_id, "evaluate_variants")["dataset_hash"]
    assert {r.data.tags[EVALUATION_KEY_TAG] for r in runs} == {f"{chain.execution_id}:{digest[:16]}"}


def test_no_evaluation_data_lost(chain: Chain) -> None:
    evaluation = chain.project.step_output(chain.execution_id, "evaluate_variants")
    rows = evaluation["rows"]
    by_variant: dict[str, list[str]] = {}
    for row in rows:
        by_variant.setdefault(row["variant"], []).append(row["case_id"])
    assert sorted(by_variant) == ["challenger", "champion"]
    for variant, cases in by_variant.items():
        assert len(cases) == len(set(cases)) == 30, variant
    assert all(row["trace_id"] for row in rows), "every case keeps its MLflow trace"
    assert set(by_variant["champion"]) == set(by_variant["challenger"])


def test_killed_mid_shift_then_resumed_shifts_once(chain: Chain) -> None:
    assert chain.weights_at_kill == {"champion": 0.5, "challenger": 0.5}, "killed inside the 50% bake"
    entries = [e for e in chain.project.backend().list_audit() if e.execution_id == chain.execution_id]
    actions = [e.action for e in entries]
    assert actions.count("resume") == 1
    assert actions.count("promote") == 1 and actions[-1] == "promote"
    assert "rollback" not in actions
    resumed_at = actions.index("resume")
    before = [e.evidence["percent"] for e in entries[:resumed_at] if e.action == "weights"]
    after = [e.evidence["percent"] for e in entries[resumed_at:] if e.action == "weights"]
    assert before == [50.0], "the killed attempt got as far as the first step"
    assert after == [50.0, 100.0], "the resume ran the schedule once, from its first step"
    assert all(e.actor == "pipeline" for e in entries), "no contender wrote to the ledger"


def test_weights_end_consistent(chain: Chain) -> None:
    state = chain.project.backend().describe_endpoint(ENDPOINT)
    weights = {v.name: v.current_weight for v in state.variants}
    assert weights == {"champion": 0.0, "challenger": 1.0}
    assert all(v.current_weight == v.desired_weight for v in state.variants)
    client = chain.project.mlflow_client()
    aliases = dict(client.get_registered_model("support-agent-drill").aliases)
    challenger_version = next(
        v.version
        for v in client.search_model_versions("name = 'support-agent-drill'")
        if v.tags.get("agent_release.variant") == "challenger"
    )
    assert aliases == {"champion": int(challenger_version)}


def test_second_run_and_promote_fail_at_once_naming_the_running_pipeline(chain: Chain) -> None:
    holder = f"lock 'endpoint:{ENDPOINT}' is held by run pid {chain.holder_pid}"
    for label, outcome in chain.contenders.items():
        proc = subprocess.CompletedProcess([], outcome.returncode, outcome.stdout, outcome.stderr)
        line = one_error_line(proc)
        assert holder in line, (label, line)


def test_audit_ledger_verifies_and_tampering_is_detected(chain: Chain, tmp_path: Path) -> None:
    project = chain.project
    intact = project.cli("audit", "verify")
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout.startswith("audit ledger intact (")

    copy = DrillProject(root=project.root, home=tmp_path / "home-copy")
    shutil.copytree(project.home, copy.home, ignore=shutil.ignore_patterns("locks", "runtime.json"))
    conn = copy.db()
    conn.execute("UPDATE audit SET reason = 'approved by nobody' WHERE action = 'promote'")
    conn.commit()
    conn.close()
    line = one_error_line(copy.cli("audit", "verify"))
    assert "audit ledger tampered" in line and "was edited" in line


def _files_containing(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits += [f"{path}: {n.decode()}" for n in needles if n in data]
    return hits


def test_no_planted_secret_in_any_output(chain: Chain, tmp_path: Path) -> None:
    needles = [v.encode() for v in PLANTED_SECRETS.values()]
    # The search itself works: a planted copy is found.
    (tmp_path / "probe.bin").write_bytes(b"\x00\x01" + needles[1] + b"\xff")
    assert _files_containing(tmp_path, needles) == [f"{tmp_path / 'probe.bin'}: {needles[1].decode()}"]

    outputs = [*chain.outcomes, *chain.contenders.values()]
    assert sum(o.stderr.count("DEBUG ") for o in outputs) > 100, "verbose logging was on"
    for outcome in outputs:
        for needle in PLANTED_SECRETS.values():
            assert needle not in outcome.stdout and needle not in outcome.stderr, outcome.label
    assert _files_containing(chain.project.home, needles) == []
