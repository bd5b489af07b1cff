"""User mistakes found by the session-9 sweep of the command line: each is one clear line, and changes nothing.

A newline in a user value (an execution id, a path, ``AGENT_RELEASE_HOME``) cut the one-line error at the
newline; YAML ``true`` and quoted numbers were taken as numbers in ``pipeline.yaml``; ``audit-head.json`` being
a directory failed with a raw errno message after a rollback had already moved the weights; ``status`` opened
the state database read-write (creating tables) and failed on a read-only state directory; a TrafficSchedule
that is no number failed a SageMaker step with float()'s message.
"""

from __future__ import annotations

import collections.abc
import json
import os
import shutil
import sqlite3
import tempfile
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from _shared.cli import ROOT, assert_one_line_error, copy_project, one_error_line, run_cli, state_of_a_run
from _shared.release_state import ENDPOINT, damage_executions_table
from _shared.release_state import deploy_half_way_canary as deploy
from click.testing import CliRunner
from pydantic import BaseModel

from agent_release.pipelines import cli
from agent_release.pipelines.config import ConfigError, PipelineConfig, lax_scalar, parse_config
from agent_release.pipelines.executor import (
    ONE_LINE_MAX_CHARS,
    ExecutionStore,
    first_line,
    flatten,
    one_line,
)
from agent_release.pipelines.local_backend import LocalBackend
from agent_release.pipelines.state_db import connect, read_only
from agent_release.pipelines.status import collect_status


def invoke(args: list[str], home: Path) -> Any:
    return CliRunner().invoke(
        cli.main, args, env={"AGENT_RELEASE_HOME": str(home), "AGENT_RELEASE_DEBUG": ""}
    )


def weights_and_ledger(home: Path) -> tuple[dict[str, float], int]:
    backend = LocalBackend(home)
    try:
        state = backend.describe_endpoint(ENDPOINT)
        assert state is not None
        return {v.name: v.current_weight for v in state.variants}, len(backend.list_audit())
    finally:
        backend.close()


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


# -- 1. a newline in a user value -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["report", "abc\ndef"], "no execution abc\\ndef; nothing has run here yet"),
        (["run", "--resume", "abc\ndef"], "no execution with id abc\\ndef (see `agent-release status`)"),
        (["status", "-c", "typo\nname.yaml"], "typo\\nname.yaml: no such file (-c/--config)"),
        (["validate", "-c", "typo\nname.yaml"], "typo\\nname.yaml: no such file"),
    ],
)
def test_a_newline_in_a_value_keeps_the_whole_error_on_one_line(
    args: list[str], needle: str, tmp_path: Path
) -> None:
    # It printed "error: no execution abc" (and "error: typo"): the rest of the line was dropped.
    home = state_of_a_run(tmp_path / "home")
    assert_one_line_error(run_cli(args, tmp_path, home), needle)


def test_a_newline_in_agent_release_home_keeps_the_error_on_one_line(tmp_path: Path) -> None:
    home = tmp_path / "no\nsuch"
    line = assert_one_line_error(
        run_cli(["status"], tmp_path, home), f"no state directory at {tmp_path}/no\\nsuch"
    )
    assert line.endswith("(run from the project directory or set AGENT_RELEASE_HOME)")


def test_a_message_the_cli_prints_itself_is_one_line_too(tmp_path: Path) -> None:
    # damaged_message() reaches the console without one_line(): a state dir with a newline split it.
    home = tmp_path / "state\nhome"
    ExecutionStore(home).close()
    damage_executions_table(home)
    one_error_line(invoke(["report"], home), f"state database {tmp_path}/state\\nhome/state.db is damaged")


def test_flatten_escapes_line_breaks_and_control_characters() -> None:
    assert flatten("no execution abc\ndef") == "no execution abc\\ndef"
    assert flatten("a\r\nb\rc\u2028d") == "a\\nb\\nc\\nd"
    assert flatten("x\x1b[2Jy\x00z\tw") == "x\\x1b[2Jy\\x00z\tw"  # no terminal escape gets through
    assert flatten("  one line  ") == "one line"


def test_one_line_caps_a_long_multi_line_message_but_keeps_the_first_line_whole() -> None:
    traceback = "Traceback (most recent call last):\n" + '  File "x.py", line 1, in f\n' * 200 + "E: boom"
    text = one_line(RuntimeError(traceback))
    assert text.startswith("Traceback (most recent call last):\\n  File") and text.endswith("...")
    assert len(text) <= ONE_LINE_MAX_CHARS + 3 and "\n" not in text
    long_first = "x" * (2 * ONE_LINE_MAX_CHARS)
    assert one_line(ValueError(f"{long_first}\nmore")) == f"{long_first}..."
    assert one_line(ValueError(long_first)) == long_first  # a single line is never shortened
    assert one_line(ValueError("")) == "ValueError"


def test_a_failed_runs_error_line_is_the_first_line_with_nothing_that_drives_the_terminal() -> None:
    # The run's error line names the step and its first line (tests/unit/test_executor.py), without raw
    # control characters; the step's own record keeps the whole message through one_line.
    assert first_line(RuntimeError("step \x1b[31mbroke\nsecond line")) == "step \\x1b[31mbroke"
    assert first_line(RuntimeError("  ")) == "RuntimeError"


# -- 2. numbers in pipeline.yaml --------------------------------------------------------------------------------

DEFAULT_YAML = (ROOT / "pipeline.yaml").read_text()


def _edited(old: str, new: str) -> tuple[str, int]:
    """The default pipeline.yaml with ``old`` replaced by ``new``, and the 1-based line it is on."""
    assert old in DEFAULT_YAML, old
    text = DEFAULT_YAML.replace(old, new, 1)
    return text, text[: text.index(new)].count("\n") + 1


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        (
            "concurrency: 8",
            "concurrency: true",
            "evaluate.concurrency",
            "expected an integer, got the boolean true",
        ),
        (
            "concurrency: 8",
            'concurrency: "16"',
            "evaluate.concurrency",
            "expected an integer, got the string '16' (write the number without quotes)",
        ),
        ("bake_s: 10", "bake_s: false", "promote.bake_s", "expected a number, got the boolean false"),
        ("alpha: 0.05", 'alpha: "0.05"', "decide.alpha", "expected a number, got the string '0.05'"),
        ("seed: 7", "seed: yes", "train.seed", "expected an integer, got the boolean true"),
        ("temperature: 0.0", "temperature: false", "agent.inference.temperature", "expected a number"),
        (
            "schedule: [10, 50, 100]",
            "schedule: [10, true, 100]",
            "promote.schedule.1",
            "got the boolean true",
        ),
        ("input_per_1k: 0.0005", 'input_per_1k: "5e-4"', "evaluate.prices.default.input_per_1k", "'5e-4'"),
        (
            "champion: approved",
            "champion: true",
            "deploy.champion",
            "expected an integer or a name, got the boolean",
        ),
        (
            "requests_per_s: 15",
            "requests_per_s: on",
            "promote.live_traffic.requests_per_s",
            "the boolean true",
        ),
    ],
)
def test_a_boolean_or_a_quoted_number_is_no_number(old: str, new: str, key: str, message: str) -> None:
    # Each was accepted: `concurrency: true` ran 1 case at a time, `"16"` became 16.
    text, line = _edited(old, new)
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="p.yaml")
    assert str(info.value).startswith(f"p.yaml:{line}: {key}: "), str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("bake_s: 10", "bake_s: .nan", "promote.bake_s"),
        ("temperature: 0.0", "temperature: .NaN", "agent.inference.temperature"),
        ("alpha: 0.05", "alpha: .nan", "decide.alpha"),
    ],
)
def test_nan_is_named_as_not_a_number(old: str, new: str, key: str) -> None:
    # A bounded field said "Input should be less than or equal to 2" (or 3600, 0.5, ...) for .nan.
    text, line = _edited(old, new)
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="p.yaml")
    assert str(info.value) == f"p.yaml:{line}: {key}: expected a number, got NaN (.nan)"


def test_validate_names_the_key_and_line_of_a_boolean_number(project: Path, tmp_path: Path) -> None:
    path = project / "pipeline.yaml"
    text, line = _edited("concurrency: 8", "concurrency: true")
    path.write_text(text)
    assert_one_line_error(
        run_cli(["validate"], project, tmp_path / "home"),
        f"error: pipeline.yaml:{line}: evaluate.concurrency: expected an integer, got the boolean true",
    )
    assert not (tmp_path / "home").exists()


def _numeric_fields(
    model: type[BaseModel], key: tuple[Any, ...] = ()
) -> list[tuple[tuple[Any, ...], bool, bool]]:
    """Every number field under ``model``: (key path, takes floats, takes text too); maps get key "k", lists 0."""
    found: list[tuple[tuple[Any, ...], bool, bool]] = []
    for name, field in model.model_fields.items():
        stack: list[tuple[Any, tuple[Any, ...]]] = [(field.annotation, (*key, name))]
        while stack:
            annotation, path = stack.pop()
            union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
            members = typing.get_args(annotation) if union else (annotation,)
            if int in members or float in members:
                found.append((path, float in members, str in members))
                continue
            for member in members:
                origin, args = typing.get_origin(member), typing.get_args(member)
                if isinstance(member, type) and issubclass(member, BaseModel):
                    found += _numeric_fields(member, path)
                elif origin in (dict, collections.abc.Mapping) and args:
                    stack.append((args[1], (*path, "k")))
                elif origin in (list, tuple) and args:
                    stack.append((args[0], (*path, 0)))
    return found


def _at(path: tuple[Any, ...], value: Any) -> Any:
    data: Any = value
    for part in reversed(path):
        data = [data] if isinstance(part, int) else {part: data}
    return data


def test_every_number_field_takes_numbers_and_refuses_booleans_and_quoted_numbers() -> None:
    fields = _numeric_fields(PipelineConfig)
    assert len(fields) >= 35, fields  # every section's numbers were found
    for path, takes_floats, takes_text in fields:
        for good in (3, 3.5) if takes_floats else (3,):  # a float field still takes an int
            assert lax_scalar(PipelineConfig, _at(path, good)) is None, (path, good)
        for bad in (True, False) if takes_text else (True, False, "3", " 1e3 "):
            found = lax_scalar(PipelineConfig, _at(path, bad))
            assert found is not None and found[0] == path, (path, bad, found)


def _bool_fields(model: type[BaseModel], key: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every field under ``model`` that takes a boolean and nothing else (maps get key "k", lists 0)."""
    found: list[tuple[Any, ...]] = []
    for name, field in model.model_fields.items():
        annotation, path = field.annotation, (*key, name)
        union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        members = [
            m for m in (typing.get_args(annotation) if union else (annotation,)) if m is not type(None)
        ]
        if members == [bool]:
            found.append(path)
        for member in members:
            if isinstance(member, type) and issubclass(member, BaseModel):
                found += _bool_fields(member, path)
    return found


def test_every_boolean_field_refuses_strings_and_numbers() -> None:
    fields = _bool_fields(PipelineConfig)
    assert len(fields) >= 4, fields  # train.enabled, agent.inference.stream, the promote switches, ...
    for path in fields:
        for good in (True, False):
            assert lax_scalar(PipelineConfig, _at(path, good)) is None, (path, good)
        for bad in ("yes", "false", "0", 1, 0):
            found = lax_scalar(PipelineConfig, _at(path, bad))
            assert found is not None and found[0] == path, (path, bad, found)
            assert "expected true or false" in found[1], found


def test_a_quoted_boolean_in_pipeline_yaml_is_one_line_naming_its_line() -> None:
    old = "  enabled: true"
    assert old in DEFAULT_YAML
    line = DEFAULT_YAML.splitlines().index(old) + 1
    with pytest.raises(ConfigError) as caught:
        parse_config(DEFAULT_YAML.replace(old, '  enabled: "no"', 1), source="p.yaml")
    assert str(caught.value) == (
        f"p.yaml:{line}: train.enabled: expected true or false, got the string 'no' "
        "(write true or false without quotes)"
    )
    # YAML's own unquoted spellings are booleans before any check sees them, and stay accepted.
    train = parse_config(DEFAULT_YAML.replace(old, "  enabled: no", 1), source="p.yaml").train
    assert train is not None and train.enabled is False


@pytest.mark.parametrize(("length", "shown"), [(40, "y" * 40), (41, "y" * 40 + "...")])
def test_a_long_quoted_boolean_is_quoted_up_to_40_characters(length: int, shown: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            DEFAULT_YAML.replace("  enabled: true", f'  enabled: "{"y" * length}"', 1), source="p.yaml"
        )
    assert f"got the string '{shown}' (write true or false without quotes)" in str(caught.value)


def test_numbers_of_every_kind_still_parse() -> None:
    text = DEFAULT_YAML
    for old, new in [
        ("temperature: 0.0", "temperature: 0"),  # an int where a float is expected
        ("timeout_s: 60", "timeout_s: 60.5"),
        ("schedule: [10, 50, 100]", "schedule: [10.0, 50, 100]"),
        ("champion: approved", "champion: 1"),  # a version number
        ("min_improvement: 0.02", "min_improvement: 2e-2"),
    ]:
        assert old in text, old  # an edit that matched nothing would test the default instead
        text = text.replace(old, new, 1)
    config = parse_config(text, source="p.yaml")
    assert config.agent.inference.temperature == 0.0 and config.evaluate.timeout_s == 60.5
    assert config.promote.schedule == [10.0, 50.0, 100.0] and config.deploy.champion == 1


# -- 3. audit-head.json is no file ------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["rollback"], ["promote", "challenger"]])
def test_a_directory_as_the_ledger_head_is_refused_before_the_weights_move(
    args: list[str], project: Path, tmp_path: Path
) -> None:
    # rollback moved the weights to the champion, then failed with "[Errno 21] Is a directory:
    # '.../audit-head.tmp' -> '.../audit-head.json'": no ledger entry, and a temporary file left behind.
    home = tmp_path / "state"
    deploy(home)
    head = home / "audit-head.json"
    head.unlink()
    head.mkdir()
    before = weights_and_ledger(home)
    one_error_line(
        invoke([*args, "-c", str(project / "pipeline.yaml")], home),
        f"the audit ledger's head {head} is a directory, not a file: nothing was changed",
    )
    assert weights_and_ledger(home) == before
    assert sorted(p.name for p in home.iterdir()) == ["audit-head.json", "state.db"]


def test_run_refuses_a_directory_as_the_ledger_head_before_it_starts(project: Path, tmp_path: Path) -> None:
    home = state_of_a_run(tmp_path / "state")
    (home / "audit-head.json").mkdir()
    one_error_line(
        invoke(["run", "-q", "-c", str(project / "pipeline.yaml")], home),
        f"the audit ledger's head {home / 'audit-head.json'} is a directory",
    )
    store = ExecutionStore(home)
    try:
        assert store.latest() is None  # no execution was started
    finally:
        store.close()


def test_audit_verify_reports_a_directory_as_a_damaged_head(tmp_path: Path) -> None:
    # It printed "error: [Errno 21] Is a directory: '.../audit-head.json'", and --json printed no JSON.
    home = tmp_path / "state"
    deploy(home)
    head = home / "audit-head.json"
    head.unlink()
    head.mkdir()
    problem = f"the ledger's recorded head {head} is a directory, not a file"
    one_error_line(invoke(["audit", "verify"], home), f"audit ledger tampered: {problem}")
    result = invoke(["audit", "verify", "--json"], home)
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"intact": False, "entries": 1, "problems": [problem]}
    assert invoke(["audit"], home).exit_code == 0  # the entries still list


def test_audit_verify_does_not_wait_on_a_fifo_head(tmp_path: Path) -> None:
    home = tmp_path / "state"
    deploy(home)
    head = home / "audit-head.json"
    head.unlink()
    os.mkfifo(head)
    proc = run_cli(["audit", "verify"], tmp_path, home, timeout_s=60)  # it waited forever to read the FIFO
    assert_one_line_error(proc, f"the ledger's recorded head {head} is a special file")


# -- 4. status reads only ---------------------------------------------------------------------------------------


def _files(home: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in home.iterdir() if p.is_file()}


def _assert_untouched(home: Path, before: dict[str, tuple[bytes, int]]) -> None:
    after = _files(home)
    assert after["state.db"] == before["state.db"], "status changed state.db"
    for name in set(after) - set(before):
        # SQLite's index of a WAL database, which any reader needs, and an empty WAL: nothing written.
        assert name in {"state.db-shm", "state.db-wal"}, f"status created {name}"
        assert name != "state.db-wal" or after[name][0] == b""


def test_status_writes_nothing_to_the_state_database(tmp_path: Path) -> None:
    # A state database with the backend's tables only: status created the executor's tables in it.
    home = state_of_a_run(tmp_path / "state")
    before = _files(home)
    result = invoke(["status", "--json"], home)
    assert result.exit_code == 0, result.output
    assert (
        json.loads(result.output)["endpoints"] == [] and json.loads(result.output)["last_execution"] is None
    )
    _assert_untouched(home, before)


def test_status_of_a_read_only_state_directory(tmp_path: Path) -> None:
    home = tmp_path / "state"
    deploy(home)
    (home / "state.db").chmod(0o444)
    home.chmod(0o555)
    try:
        before = _files(home)
        result = invoke(["status", "--json"], home)
        assert result.exit_code == 0, result.output
        variants = json.loads(result.output)["endpoints"][0]["variants"]
        assert {v["name"]: v["weight"] for v in variants} == {"champion": 0.5, "challenger": 0.5}
        _assert_untouched(home, before)
    finally:
        home.chmod(0o755)


def record_connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The database argument of every ``sqlite3.connect`` from now on (URIs say how it was opened)."""
    opened: list[str] = []
    real_connect = sqlite3.connect

    def spy(database: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(database))
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", spy)
    return opened


def test_audit_lists_and_verifies_a_read_only_ledger_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "state"
    deploy(home)
    opened = record_connections(monkeypatch)
    (home / "state.db").chmod(0o444)
    home.chmod(0o555)
    try:
        before = _files(home)
        listed = invoke(["audit"], home)
        assert listed.exit_code == 0, listed.output
        assert f"pipeline weights {ENDPOINT}/challenger: canary step 50%" in listed.output
        verified = invoke(["audit", "verify", "--json"], home)
        assert verified.exit_code == 0, verified.output
        assert json.loads(verified.output) == {"intact": True, "entries": 1, "problems": []}
        _assert_untouched(home, before)
    finally:
        home.chmod(0o755)
    assert opened and all(uri.endswith("state.db?mode=ro") or "immutable=1" in uri for uri in opened), opened


def test_audit_of_a_state_database_no_backend_wrote_is_an_empty_ledger(tmp_path: Path) -> None:
    home = tmp_path / "state"
    home.mkdir()
    sqlite3.connect(home / "state.db").execute("CREATE TABLE executions (id TEXT)").connection.commit()
    before = _files(home)
    listed = invoke(["audit", "--json"], home)
    assert listed.exit_code == 0 and listed.output == "", listed.output
    verified = invoke(["audit", "verify"], home)
    assert verified.exit_code == 0 and "audit ledger intact (0 entries)" in verified.output, verified.output
    _assert_untouched(home, before)


def test_status_opens_every_connection_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "state"
    deploy(home)
    opened = record_connections(monkeypatch)
    collect_status(home, None)
    assert len(opened) == 2 and all(uri.endswith("state.db?mode=ro") for uri in opened), opened


def test_a_read_only_connection_refuses_writes_and_creates_no_tables(tmp_path: Path) -> None:
    home = state_of_a_run(tmp_path / "state")
    with read_only():
        conn = connect(home)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("CREATE TABLE t (x)")
    finally:
        conn.close()
    with read_only():
        store = ExecutionStore(home)  # its DDL is not run
    try:
        with pytest.raises(sqlite3.OperationalError, match="no such table: executions"):
            store.latest()
    finally:
        store.close()


def test_a_read_only_directory_without_a_wal_index_opens_immutable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where SQLite could not create the -shm index (a directory this user may not write), mode=ro alone fails
    # with "attempt to write a readonly database"; root can always write, so the check is made to say no.
    home = tmp_path / "state"
    deploy(home)
    opened = record_connections(monkeypatch)
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode, **kw: mode != os.W_OK and real_access(path, mode, **kw)
    )
    data = collect_status(home, None)
    assert data["endpoints"][0]["name"] == ENDPOINT
    assert opened and all(uri.endswith("?mode=ro&immutable=1") for uri in opened), opened


@pytest.mark.skipif(not hasattr(os, "fork") or os.geteuid() != 0, reason="drops from root to another user")
def test_status_as_a_user_who_may_not_write_the_state_directory() -> None:
    # The real case: the connection that ran PRAGMA journal_mode=WAL and the DDL failed with "state database
    # ... cannot be opened for writing (read-only?): attempt to write a readonly database".
    top = Path(tempfile.mkdtemp(prefix="agent-release-ro-"))  # under /tmp, where "nobody" may look
    try:
        top.chmod(0o755)
        home = top / "state"
        deploy(home)
        home.chmod(0o555)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            try:
                os.setgid(65534)
                os.setuid(65534)
                message = json.dumps(collect_status(home, None)["endpoints"][0]["variants"][0]["weight"])
            except BaseException as exc:
                message = f"{type(exc).__name__}: {exc}"
            os.write(write_end, message.encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as fh:
            answer = fh.read()
        os.waitpid(pid, 0)
        assert answer == "0.5"
        assert sorted(p.name for p in home.iterdir()) == ["audit-head.json", "state.db"]
    finally:
        for path in (top, *top.rglob("*")):
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(top)


# -- 5. TrafficSchedule outside `start` -------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["10,x", "10,,50;100", "ten"])
def test_a_remote_step_names_a_traffic_schedule_that_is_no_number(schedule: str) -> None:
    # An execution started from the console or boto3 reaches the step without `start`'s checks: it failed with
    # "ValueError: could not convert string to float: 'x'".
    from agent_release.pipelines.remote_step import run_remote_step
    from agent_release.pipelines.sagemaker_parameters import ParameterOverrideError, apply_overrides

    expected = f"parameter TrafficSchedule expects comma-separated numbers (e.g. 10,50,100), got {schedule!r}"
    with pytest.raises(ParameterOverrideError) as info:
        run_remote_step("decide_promotion", DEFAULT_YAML, {}, overrides={"TrafficSchedule": schedule})
    assert str(info.value) == expected
    with pytest.raises(ParameterOverrideError):
        apply_overrides(yaml.safe_load(DEFAULT_YAML), {"TrafficSchedule": schedule})


def test_status_with_a_config_that_does_not_load_says_so_and_still_answers(tmp_path: Path) -> None:
    """status reads state, so a broken pipeline.yaml does not stop it; but the tracking URI it then shows is
    the default, and it used to show that as if it were the configured one, silently."""
    project = copy_project(tmp_path / "project")
    text = (project / "pipeline.yaml").read_text()
    (project / "pipeline.yaml").write_text(text.replace("evaluate:", "evaluate:\n  concurency: 8", 1))
    home = state_of_a_run(tmp_path / "home")

    proc = run_cli(["status", "--json"], project, home)

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tracking_uri"] == f"sqlite:///{home}/mlflow.db"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "concurency" in lines[0], lines
    assert "the tracking URI shown is the default" in lines[0]
