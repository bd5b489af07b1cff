"""User mistakes found by a sweep of the release-manager and read-only commands: one clear line, nothing changed.

``AGENT_RELEASE_HOME`` naming an existing directory that holds no state (status, audit, report, promote and
rollback created an empty ``state.db`` there and reported a clean state), a ``pipeline.yaml`` whose endpoint
name changed since the run, ``--schedule`` values that break the schedule's rules or are empty, blank variant
and execution ids, ``audit verify --json`` printing text, and ``plan --sd`` large enough to overflow.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from _shared.cli import copy_project, one_error_line
from _shared.pipeline_yaml import edit
from _shared.release_state import ENDPOINT
from _shared.release_state import deploy_half_way_canary as deploy
from click.testing import CliRunner

from agent_release.pipelines import cli
from agent_release.pipelines.local_backend import LocalBackend
from agent_release.steps.paired_stats import StatsInputError
from agent_release.steps.power import minimum_detectable_effect

ROOT = Path(__file__).resolve().parents[2]


def invoke(args: list[str], home: Path) -> Any:
    return CliRunner().invoke(
        cli.main, args, env={"AGENT_RELEASE_HOME": str(home), "AGENT_RELEASE_DEBUG": ""}
    )


def usage_error(result: Any, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    for needle in needles:
        assert needle in last, (needle, last)
    return last


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


def snapshot(home: Path) -> tuple[dict[str, float], int, bytes]:
    """Weights, ledger length and the ledger's head file: what a refused command must leave as it was."""
    backend = LocalBackend(home)
    try:
        state = backend.describe_endpoint(ENDPOINT)
        weights = {v.name: v.current_weight for v in state.variants} if state else {}
        return weights, len(backend.list_audit()), (home / "audit-head.json").read_bytes()
    finally:
        backend.close()


# -- a home that holds no state ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["status"], ["status", "--json"], ["audit"], ["audit", "verify"], ["audit", "--json"], ["report"]],
)
def test_read_only_commands_refuse_an_existing_directory_without_state(
    args: list[str], tmp_path: Path
) -> None:
    # AGENT_RELEASE_HOME=~ (or the project itself): they created state.db there and reported "none deployed".
    home = tmp_path / "not-a-state-dir"
    home.mkdir()
    one_error_line(invoke(args, home), f"no state database in {home}", "AGENT_RELEASE_HOME")
    assert list(home.iterdir()) == []


@pytest.mark.parametrize("args", [["promote", "challenger"], ["rollback"]])
def test_release_actions_refuse_an_existing_directory_without_state(
    args: list[str], project: Path, tmp_path: Path
) -> None:
    home = tmp_path / "not-a-state-dir"
    home.mkdir()
    result = invoke([*args, "-c", str(project / "pipeline.yaml")], home)
    one_error_line(result, f"no state database in {home}")
    assert list(home.iterdir()) == []


# -- pipeline.yaml changed since the run ------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["promote", "challenger"], ["rollback"]])
def test_a_renamed_endpoint_names_the_key_and_what_is_deployed(
    args: list[str], project: Path, tmp_path: Path
) -> None:
    # It said "endpoint support-agent-v2 is not deployed; run the pipeline first": a run would deploy a second
    # endpoint beside the one the user meant.
    home = tmp_path / "state"
    deploy(home)
    before = snapshot(home)
    edit(project, f"  endpoint_name: {ENDPOINT}", f"  endpoint_name: {ENDPOINT}-v2")
    config = project / "pipeline.yaml"
    one_error_line(
        invoke([*args, "-c", str(config)], home),
        f"endpoint {ENDPOINT}-v2 (deploy.endpoint_name in {config}) is not deployed",
        f"deployed here: {ENDPOINT} (pass -c",
    )
    assert snapshot(home) == before


def test_promote_where_nothing_is_deployed_says_so(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "state"
    LocalBackend(home).close()  # a state without endpoints
    line = one_error_line(
        invoke(["promote", "challenger", "-c", str(project / "pipeline.yaml")], home),
        f"endpoint {ENDPOINT} is not deployed; nothing is (run the pipeline first)",
    )
    assert "deployed here" not in line


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ('{"text": "hi"}\n', "live.jsonl:1: each row needs a non-empty text 'input'"),
        ("[1, 2]\n", "live.jsonl:1: expected a JSON object"),
        ('{"input": 5}\n', "live.jsonl:1: each row needs a non-empty text 'input'"),
        ("\n", "live.jsonl has no rows, so the canary would replay no traffic"),
    ],
)
def test_promote_with_unusable_live_traffic_names_the_file_and_line(
    rows: str, needle: str, project: Path, tmp_path: Path
) -> None:
    # It printed "error: 'input'" or "error: TypeError: list indices must be integers or slices, not str",
    # replayed 5 as "5", or shifted with no traffic for the guards to judge.
    home = tmp_path / "state"
    deploy(home)
    before = snapshot(home)
    (project / "live.jsonl").write_text(rows)
    edit(project, "inputs: datasets/support/holdout_live.jsonl", "inputs: live.jsonl")
    one_error_line(invoke(["promote", "challenger", "-c", str(project / "pipeline.yaml")], home), needle)
    assert snapshot(home) == before


# -- --schedule, VARIANT, EXECUTION_ID --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "rule"),
    [
        ("50,20", "schedule [50.0, 20.0]: schedule must increase strictly"),
        ("0", "schedule [0.0]: schedule percentages must be in (0, 100]"),
        ("150", "schedule [150.0]: schedule percentages must be in (0, 100]"),
        ("-10,100", "schedule [-10.0, 100.0]: schedule percentages must be in (0, 100]"),
        ("10,50", "schedule [10.0, 50.0]: schedule must end at 100"),
        ("", "needs at least one step"),
        (" ", "needs at least one step"),
    ],
)
def test_a_schedule_breaking_its_rules_is_a_usage_error_before_anything_is_read(
    schedule: str, rule: str, tmp_path: Path
) -> None:
    # They were refused only after the state and config loaded (exit 1, "Value error, ..."), or, empty,
    # silently replaced by the configured schedule.
    home = tmp_path / "nowhere"
    line = usage_error(invoke(["promote", "challenger", "--schedule", schedule], home), "'--schedule'", rule)
    assert "Value error" not in line
    assert not home.exists()


def test_a_valid_schedule_with_spaces_still_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from agent_release.pipelines import release_actions

    home = tmp_path / "nowhere"
    one_error_line(
        invoke(["promote", "challenger", "--schedule", " 10, 50 ,100"], home), "no state directory"
    )
    # Where there is state, the promotion is handed the steps as written.
    given: list[object] = []

    def promote_command(*_: object, schedule: object = None, **__: object) -> None:
        given.append(schedule)
        raise RuntimeError("stop here")

    monkeypatch.setattr(release_actions, "promote_command", promote_command)
    state = tmp_path / "state"
    LocalBackend(state).close()
    previous = signal.getsignal(signal.SIGTERM)  # promote installs its SIGTERM handler
    try:
        one_error_line(invoke(["promote", "challenger", "--schedule", " 10, 50 ,100"], state), "stop here")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert given == [[10.0, 50.0, 100.0]]


@pytest.mark.parametrize("variant", ["", "  "])
def test_a_blank_variant_is_a_usage_error(variant: str, tmp_path: Path) -> None:
    # It read "endpoint support-agent has no variant  (variants: ...)": the name at fault was invisible.
    usage_error(invoke(["promote", variant], tmp_path), "VARIANT", "needs a variant name")


@pytest.mark.parametrize("execution_id", ["", "  "])
def test_a_blank_execution_id_is_a_usage_error(execution_id: str, tmp_path: Path) -> None:
    # `report ""` (an unset $ID) rendered the latest execution's report as if it were the one asked for.
    usage_error(invoke(["report", execution_id], tmp_path), "EXECUTION_ID", "needs an execution id")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("reason", "rule"),
    [
        ("", "needs a reason"),
        ("   ", "needs a reason"),
        ("line one\nline two", "must be one line"),
        # A byte that is not UTF-8 on the command line (a lone surrogate in Python): the weights moved, then
        # the ledger's hash failed to encode the reason, so traffic changed with no ledger entry (exit 1).
        ("back \udc9b2J", "is not valid UTF-8 (a stray byte at character 6)"),
    ],
)
def test_a_blank_or_multi_line_rollback_reason_is_refused_before_any_weight_moves(
    reason: str, rule: str, project: Path, tmp_path: Path
) -> None:
    # It rolled back and recorded "manual rollback: ; champion back to 100%", or an entry `audit` printed
    # over two lines.
    home = tmp_path / "state"
    deploy(home)
    before = snapshot(home)
    usage_error(invoke(["rollback", "-c", str(project / "pipeline.yaml"), "--reason", reason], home), rule)
    assert snapshot(home) == before


def test_status_with_a_named_config_that_is_missing_says_so(tmp_path: Path) -> None:
    # It ignored the typo and showed the default tracking URI as if the named config had none.
    LocalBackend(tmp_path).close()
    one_error_line(invoke(["status", "-c", "typo.yaml"], tmp_path), "typo.yaml: no such file (-c/--config)")


@pytest.mark.parametrize(
    ("home", "needle"),
    [
        ("~no-such-user-here/state", "AGENT_RELEASE_HOME='~no-such-user-here/state': "),
        ("x" * 5000, "cannot be looked up: File name too long (check AGENT_RELEASE_HOME)"),
    ],
)
def test_a_home_that_cannot_be_resolved_is_named(home: str, needle: str) -> None:
    # "error: Could not determine home directory." and "error: [Errno 36] File name too long: ..." named no
    # variable.
    one_error_line(invoke(["status"], Path(home)), needle)


# -- audit verify --json ----------------------------------------------------------------------------------------


def _ledger(home: Path, entries: int) -> None:
    backend = LocalBackend(home)
    try:
        for i in range(entries):
            backend.append_audit("pipeline", "weights", f"ep/v{i}", f"step {i}", {"percent": i * 10})
    finally:
        backend.close()


def test_audit_verify_json_prints_json(tmp_path: Path) -> None:
    # --json was accepted and ignored: "audit ledger intact (2 entries)" where a script expected JSON.
    _ledger(tmp_path, 2)
    result = invoke(["audit", "verify", "--json"], tmp_path)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"intact": True, "entries": 2, "problems": []}


def test_audit_verify_json_on_a_tampered_ledger_fails_with_the_problems(tmp_path: Path) -> None:
    _ledger(tmp_path, 3)
    conn = sqlite3.connect(tmp_path / "state.db")
    with conn:
        conn.execute("UPDATE audit SET reason = 'edited' WHERE seq = 2")
    conn.close()
    result = CliRunner().invoke(
        cli.main,
        ["audit", "verify", "--json"],
        env={"AGENT_RELEASE_HOME": str(tmp_path), "AGENT_RELEASE_DEBUG": ""},
    )
    assert result.exit_code == 1
    stdout, _, stderr = result.output.partition("\n")
    data = json.loads(stdout)
    assert data["intact"] is False and data["entries"] == 3 and data["problems"]
    assert stderr.strip() == f"error: audit ledger tampered: {data['problems'][0]}" + (
        f" (+{len(data['problems']) - 1} more)" if len(data["problems"]) > 1 else ""
    )


# -- plan --sd --------------------------------------------------------------------------------------------------


def test_plan_with_a_huge_sd_answers_instead_of_overflowing(project: Path, tmp_path: Path) -> None:
    # It printed "error: OverflowError: (34, 'Numerical result out of range')": sd**2 overflowed.
    result = invoke(["plan", "-c", str(project / "pipeline.yaml"), "--sd", "1e200"], tmp_path / "none")
    assert result.exit_code == 0, result.output
    mde = next(line for line in result.output.splitlines() if line.startswith("MDE"))
    assert math.isfinite(float(mde.split()[1])) and float(mde.split()[1]) > 1e198


def test_an_mde_too_large_for_a_float_names_sd_diff() -> None:
    with pytest.raises(StatsInputError, match=r"^sd_diff 1\.7e\+308 is too large: the minimum detectable"):
        minimum_detectable_effect(4, 2, sd_diff=1.7e308)


# -- a ledger that fails verification ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        ("DELETE FROM audit WHERE seq = 2", "entry 2 is missing (next entry found is 3)"),
        ("UPDATE audit SET reason = 'edited' WHERE seq = 2", "entry 2 was edited"),
        # The newest entry and the head that recorded it both gone: only the missing head shows it.
        ("DELETE FROM audit WHERE seq = 3", "the ledger's recorded head (audit-head.json) is missing"),
    ],
)
@pytest.mark.parametrize("args", [["promote", "challenger"], ["rollback"], ["run"]])
def test_commands_that_extend_the_ledger_refuse_one_that_fails_verification(
    tamper: str, problem: str, args: list[str], project: Path, tmp_path: Path
) -> None:
    # promote wrote a new head over a ledger with its newest entry and head removed, and `audit verify` then
    # called it intact; with an entry edited, promote and rollback extended the tampered ledger.
    home = tmp_path / "state"
    deploy(home)
    backend = LocalBackend(home)
    for i in (2, 3):
        backend.append_audit("pipeline", "weights", f"{ENDPOINT}/challenger", f"step {i}", {"percent": 50})
    backend.close()
    conn = sqlite3.connect(home / "state.db")
    with conn:
        conn.execute(tamper)
    conn.close()
    head = home / "audit-head.json"
    if "head" in problem:
        head.unlink()
    before = snapshot_without_head(home)
    head_before = head.read_bytes() if head.exists() else None

    # One line, no traceback (one_error_line checks both), naming the first problem.
    one_error_line(
        invoke([*args, "-c", str(project / "pipeline.yaml")], home),
        f"the audit ledger fails verification: {problem}",
        "nothing was changed",
    )

    assert snapshot_without_head(home) == before
    # The head file is left as it was too: still absent where it was removed, byte for byte the same where the
    # tamper left it (a head moved over the tampered ledger would have `audit verify` vouch for it).
    assert (head.read_bytes() if head.exists() else None) == head_before, "the head was written"


def snapshot_without_head(home: Path) -> tuple[dict[str, float], list[tuple[int, str]], int]:
    """Weights, the ledger's entries and the number of executions: what a refused command must not change."""
    backend = LocalBackend(home)
    try:
        state = backend.describe_endpoint(ENDPOINT)
        weights = {v.name: v.current_weight for v in state.variants} if state else {}
        entries = [(e.seq, e.reason) for e in backend.list_audit()]
    finally:
        backend.close()
    conn = sqlite3.connect(home / "state.db")
    try:
        executions = (
            conn.execute("SELECT count(*) FROM executions").fetchone()[0] if _has_executions(conn) else 0
        )
    finally:
        conn.close()
    return weights, entries, executions


def _has_executions(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'executions'").fetchone() is not None


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "-c", ""],
        ["run", "-c", ""],
        ["status", "-c", " "],
        ["compile", "-o", ""],
        ["compile", "-o", " "],
    ],
)
def test_a_blank_file_path_is_a_usage_error(args: list[str], tmp_path: Path) -> None:
    # `-c ''` read the current directory ("error: .: is a directory"); `-o ' '` wrote a file named " ".
    usage_error(invoke(args, tmp_path), "needs a file path, got an empty one")
    assert list(tmp_path.iterdir()) == []
