"""User mistakes found by a sweep of the command line: each is one clear line, and leaves nothing behind.

Config files whose aliases never end or nest too deep, suites that name an unknown expectation, golden rows
with an object as cluster, a state database damaged inside a table, a state home under a file, ``--resume``
where nothing has run, Ctrl-C during ``promote``, ``serve`` on an address it cannot bind, names and tracking
settings that ``run`` would only refuse after training.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _shared.cli import copy_project, one_error_line, state_of_a_run
from _shared.pipeline_yaml import config_error, edit
from _shared.release_state import damage_executions_table
from click.testing import CliRunner

from agent_release.pipelines import cli
from agent_release.pipelines.config import ConfigError, parse_config
from agent_release.pipelines.state_db import StateDbUnavailable, connect, processes_with_open
from agent_release.steps.validate_datasets import DatasetError, cases_frame, load_suite

ROOT = Path(__file__).resolve().parents[2]


def invoke(args: list[str], home: Path) -> object:
    return CliRunner().invoke(
        cli.main, args, env={"AGENT_RELEASE_HOME": str(home), "AGENT_RELEASE_DEBUG": ""}
    )


# -- pipeline.yaml ----------------------------------------------------------------------------------------------


def test_self_referring_anchor_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^p\.yaml:2: an anchor refers to itself$"):
        parse_config("name: x\nloop: &x [*x]\n", source="p.yaml")


def test_nested_aliases_are_refused_before_they_expand() -> None:
    # 9**6 values once expanded: refused by count, not walked path by path (9 levels take hours).
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 6)]
    # Named at line 6, the list whose expansion (1 + 9 x 66,430 values) passes the limit first.
    with pytest.raises(ConfigError, match=r"^p\.yaml:6: aliases expand to more than 100000 values$"):
        parse_config("\n".join(lines) + "\n", source="p.yaml")


@pytest.mark.parametrize(
    "text", ["a: " + "[" * 5000 + "]" * 5000, "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(3000))]
)
def test_deep_nesting_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^p\.yaml: nested too deeply"):
        parse_config(text, source="p.yaml")


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path)


check = config_error


@pytest.mark.parametrize(
    ("edits", "key"),
    [
        ([("  endpoint_name: support-agent", '  endpoint_name: "support agent!"')], "deploy.endpoint_name"),
        (  # train.package_group must equal deploy.package_group
            [("package_group: support-model", "package_group: support_model")] * 2,
            "deploy.package_group",
        ),
        (  # a quote used to pass until register_agents pasted it into an MLflow filter, after deploying
            [
                (
                    "  endpoint_name: support-agent",
                    "  endpoint_name: support-agent\n  challenger_variant_name: chall'enger",
                )
            ],
            "deploy.challenger_variant_name",
        ),
        (
            [
                (
                    "  endpoint_name: support-agent",
                    '  endpoint_name: support-agent\n  champion_variant_name: "old champ"',
                )
            ],
            "deploy.champion_variant_name",
        ),
    ],
)
def test_names_the_backend_refuses_fail_validation(
    project: Path, edits: list[tuple[str, str]], key: str
) -> None:
    # Without the check, `run` trained and registered a package before deploy_variants refused the name.
    for old, new in edits:
        edit(project, old, new)
    message = check(project)
    assert f"{key}: " in message and "letters, digits and hyphens" in message, message


def test_empty_experiment_fails_validation(project: Path) -> None:
    # Without the check, `run` recorded an execution and blamed an outage: "once it is back: --resume".
    edit(project, "  experiment: support-agent", '  experiment: ""')
    assert "tracking.experiment: must name an MLflow experiment" in check(project)


def test_tracking_uri_from_the_environment_is_checked(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://x")
    message = check(project)
    assert (
        "$MLFLOW_TRACKING_URI 'bogus://x'" in message
        and "no tracking store for URI scheme 'bogus'" in message
    )


# -- datasets ---------------------------------------------------------------------------------------------------


def test_suite_with_an_unknown_expectation_type_is_an_error(tmp_path: Path) -> None:
    # GE logs such an entry with a traceback and drops it: the contract passed with the check missing.
    suite = tmp_path / "s.suite.json"
    suite.write_text(json.dumps({"name": "s", "expectations": [{"type": "expect_nonsense", "kwargs": {}}]}))
    with pytest.raises(DatasetError, match=r"expectations\[0\]: unknown expectation type 'expect_nonsense'"):
        load_suite(suite)


def test_a_misspelt_expectation_argument_is_named_with_its_entry(tmp_path: Path) -> None:
    # It used to read "not an expectation suite (1 validation error for ExpectColumnValuesToBeBetween)".
    suite = tmp_path / "s.suite.json"
    entries = [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}},
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "n", "min_value": 1, "max_vlaue": 5},
        },
    ]
    suite.write_text(json.dumps({"name": "s", "expectations": entries}))
    with pytest.raises(
        DatasetError,
        match=r"expectations\[1\] \(expect_column_values_to_be_between\): max_vlaue: extra fields not permitted$",
    ):
        load_suite(suite)


def test_expectation_on_a_missing_column_says_why(tmp_path: Path) -> None:
    from agent_release.steps.validate_datasets import DatasetSpec, validate_datasets

    (tmp_path / "d.jsonl").write_text('{"id": "A-0001", "input": "hi", "cluster": "c"}\n')
    expectation = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "nosuch"}}
    (tmp_path / "d.suite.json").write_text(json.dumps({"name": "d", "expectations": [expectation]}))
    report = validate_datasets({"d": DatasetSpec(path="d.jsonl", suite="d.suite.json")}, tmp_path)
    assert not report.success
    assert 'The column "nosuch" in BatchData does not exist' in report.failure_lines()[0]


@pytest.mark.parametrize("cluster", [{"a": 1}, ["a"]])
def test_an_object_as_cluster_is_judged_not_a_crash(cluster: object) -> None:
    rows = [{"id": "A-1", "input": "hi", "cluster": cluster}, {"id": "A-2", "input": "hi", "cluster": "c"}]
    frame = cases_frame(rows)
    assert list(frame["cluster"]) == [str(cluster), "c"]
    assert list(frame["cluster_size"]) == [1, 1]


# -- state ------------------------------------------------------------------------------------------------------


def test_state_home_under_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(
        StateDbUnavailable, match=r"cannot be created: Not a directory \(check AGENT_RELEASE_HOME\)"
    ):
        connect(tmp_path / "afile" / "state")


def test_status_with_a_state_home_that_is_a_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    one_error_line(invoke(["status"], tmp_path / "afile"), "is not a directory (check AGENT_RELEASE_HOME)")


def test_a_damaged_table_names_the_state_database(tmp_path: Path) -> None:
    from agent_release.pipelines.executor import ExecutionStore

    ExecutionStore(tmp_path).close()
    damage_executions_table(tmp_path)  # the file opens; the executions table does not read
    one_error_line(invoke(["report"], tmp_path), f"state database {tmp_path / 'state.db'} is damaged")


def test_lock_holders_are_named_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"")
    code = f"import time\nf = open({str(path)!r})\nprint('open', flush=True)\ntime.sleep(60)\n"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        deadline = time.monotonic() + 10
        found = processes_with_open(path)
        while not found and time.monotonic() < deadline:
            found = processes_with_open(path)
        # The holder is named by pid and command; its command (``python -c`` with newlines) is on one line.
        assert any(entry.startswith(f"pid {holder.pid} (") for entry in found), (holder.pid, found)
        assert all("\n" not in entry for entry in found), found
    finally:
        holder.kill()
        holder.wait()


# -- commands ---------------------------------------------------------------------------------------------------


def test_resume_where_nothing_has_run_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "nowhere"
    one_error_line(
        invoke(["run", "--resume", "20260101T000000-abcdef"], home), f"no state directory at {home}"
    )
    assert not home.exists()


def test_resume_without_an_id_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke(["run", "--resume", " "], tmp_path)
    assert result.exit_code == 2 and "--resume" in result.output  # type: ignore[attr-defined]
    assert list(tmp_path.iterdir()) == []


def test_interrupted_promote_does_not_point_at_run_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    from agent_release.pipelines import release_actions

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(release_actions, "promote_command", interrupted)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        line = one_error_line(
            invoke(["promote", "challenger"], state_of_a_run(tmp_path)), "interrupted", "rolled back"
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "--resume" not in line


def test_serve_names_the_address_it_cannot_bind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from agent_release.pipelines.runtime import server

    def busy(*_: object, **__: object) -> None:
        raise OSError(errno.EADDRINUSE, "Address already in use")

    monkeypatch.setattr(server, "serve", busy)
    one_error_line(
        invoke(["serve", "--port", "8123"], state_of_a_run(tmp_path)),
        "cannot serve on 127.0.0.1:8123: Address already in use",
        "--port",
    )


def test_serve_refuses_an_empty_host_that_would_bind_every_interface(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent_release.pipelines.runtime import server

    def must_not_serve(*_: object, **__: object) -> None:
        raise AssertionError("served")

    monkeypatch.setattr(server, "serve", must_not_serve)
    # `--host ''` listened on 0.0.0.0; leaving --host out means loopback.
    result = invoke(["serve", "--host", " "], state_of_a_run(tmp_path))
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert "Invalid value for --host: needs an address" in result.output  # type: ignore[attr-defined]


def test_resume_says_a_given_config_is_not_read(tmp_path: Path) -> None:
    # `run --resume ID -c other.yaml` resumed on the stored config and said nothing, so an edited (or
    # missing) file looked as if it had been read.
    home = tmp_path / "nowhere"
    result = CliRunner().invoke(
        cli.main,
        ["run", "--resume", "20260101T000000-abcdef", "-c", str(tmp_path / "edited.yaml")],
        env={"AGENT_RELEASE_HOME": str(home)},
    )
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        f"warning: {tmp_path / 'edited.yaml'} is not read: a resumed execution uses the pipeline.yaml stored "
        "when it started"
    )
    quiet = CliRunner().invoke(
        cli.main, ["run", "--resume", "20260101T000000-abcdef"], env={"AGENT_RELEASE_HOME": str(home)}
    )
    assert "warning" not in quiet.output
