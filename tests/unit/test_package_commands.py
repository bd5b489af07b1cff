"""`agent-release package register` / `package list`: a model the team serves itself, registered from the CLI.

Every refusal is one line, exit 1, and registers nothing (no state directory when the options are wrong); an
approval at registration is allowed only as a group's first champion and is in the ledger before it is made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
from _shared.cli import copy_project, one_error_line
from click.testing import CliRunner

from agent_release.pipelines.cli import main
from agent_release.pipelines.local_backend import LocalBackend
from agent_release.pipelines.package_commands import REGISTRABLE_KINDS, parse_options
from agent_release.steps.backend import ApprovalStatus

OPENAI = ["--kind", "openai_compatible", "-o", "base_url=http://127.0.0.1:8080"]


class AnswersEverything:
    """A model class with the runtime's ``complete`` method (imported by path in these tests)."""

    def __init__(self, answer: str = "Noted.") -> None:
        self.answer = answer

    def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": self.answer}}]}


class NoCompleteMethod:
    pass


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The default project (deploy.package_group: support-model), its state under ``home``."""
    root = copy_project(tmp_path / "project")
    monkeypatch.chdir(root)
    monkeypatch.setenv("AGENT_RELEASE_HOME", str(tmp_path / "home"))
    return root


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def _home(project: Path) -> Path:
    return project.parent / "home"


def _packages(project: Path, group: str = "support-model") -> list[Any]:
    backend = LocalBackend(_home(project))
    try:
        return backend.list_packages(group)
    finally:
        backend.close()


def test_register_defaults_to_the_configs_group_and_pending(project: Path) -> None:
    result = _cli("package", "register", *OPENAI, "-o", "model=qwen2.5", "-o", "timeout_s=30")
    assert result.exit_code == 0, result.output
    assert "registered support-model v1 (openai_compatible): PendingManualApproval" in result.output
    (package,) = _packages(project)
    assert package.approval_status == ApprovalStatus.PENDING
    # JSON values are read as JSON: the timeout is a number, the model name stays a string.
    assert dict(package.model.options) == {
        "base_url": "http://127.0.0.1:8080",
        "model": "qwen2.5",
        "timeout_s": 30,
    }


def test_list_shows_every_version_newest_first(project: Path) -> None:
    assert _cli("package", "register", *OPENAI, "--description", "qwen 7b").exit_code == 0
    python = f"class_path={__name__}:AnswersEverything"
    assert (
        _cli("package", "register", "--kind", "python", "-o", python, "-o", 'init={"answer": "ok"}').exit_code
        == 0
    )
    listed = _cli("package", "list", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(r["version"], r["kind"]) for r in rows] == [(2, "python"), (1, "openai_compatible")]
    assert rows[0]["target"] == f"{__name__}:AnswersEverything"
    assert rows[1]["description"] == "qwen 7b"
    table = _cli("package", "list").output.splitlines()
    assert table[0].startswith("v2") and "PendingManualApproval" in table[0]
    # The description is shown as --json has it.
    assert table[1].endswith("http://127.0.0.1:8080  (qwen 7b)"), table[1]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--kind", "openai_compatible", "-o", "base_url=127.0.0.1:8080"],
            "base_url must be the http(s) URL",
        ),
        (["--kind", "openai_compatible", "-o", "base-url=http://h"], "has no option base-url"),
        (["--kind", "openai_compatible", "-o", "model=qwen"], "needs -o base_url="),
        ([*OPENAI, "-o", "timeout_s=0"], "timeout_s must be a number of seconds above 0"),
        ([*OPENAI, "-o", "timeout_s=NaN"], "timeout_s must be a number"),
        ([*OPENAI, "-o", "api_key_env=my key"], "api_key_env must name an environment variable"),
        ([*OPENAI, "-o", "base_url=http://h"], "option base_url is given twice"),
        ([*OPENAI, "-o", "timeout_s"], "is not KEY=VALUE"),
        (
            ["--kind", "python", "-o", "class_path=no_such_module_x:Model"],
            "No module named 'no_such_module_x'",
        ),
        (["--kind", "python", "-o", f"class_path={__name__}:NoCompleteMethod"], "has no complete(request)"),
        (
            ["--kind", "python", "-o", "class_path=just_a_module"],
            "class_path must be 'package.module:ClassName'",
        ),
        (
            ["--kind", "python", "-o", f"class_path={__name__}:AnswersEverything", "-o", "init=[1]"],
            "init must be",
        ),
        # Registered, it failed every case of the evaluation with "takes no arguments" before a reject.
        (
            ["--kind", "python", "-o", f"class_path={__name__}:AnswersEverything", "-o", 'init={"size": 2}'],
            f"init does not fit the constructor of {__name__}:AnswersEverything: got an unexpected keyword "
            "argument 'size'",
        ),
        (["--group", "bad_name", *OPENAI], "invalid model package group name 'bad_name'"),
    ],
)
def test_a_refused_package_is_one_line_and_creates_no_state(
    project: Path, args: list[str], needle: str
) -> None:
    one_error_line(_cli("package", "register", *args), needle)
    assert not _home(project).exists()


def test_a_class_without_complete_is_pointed_at_the_protocol_where_it_lives(project: Path) -> None:
    """The error names the module a user can import the protocol from (it once named the runtime's loader)."""
    from agent_release.agents.chat_model import ChatCompletionModel

    result = _cli("package", "register", "--kind", "python", "-o", f"class_path={__name__}:NoCompleteMethod")
    one_error_line(result, "see ChatCompletionModel in agent_release.agents.chat_model)")
    assert ChatCompletionModel.__module__ == "agent_release.agents.chat_model"


@pytest.mark.parametrize("option", ["--approve", "--description"])
def test_text_that_is_not_utf8_is_refused_before_anything_is_registered(project: Path, option: str) -> None:
    # A byte that is not UTF-8 on the command line reaches Python as a lone surrogate. With --approve the
    # package was registered, then the ledger's hash failed to encode it: exit 1 with a stray pending package.
    result = _cli("package", "register", *OPENAI, option, "first champion \udc9b2J")
    assert result.exit_code == 2, result.output
    assert "is not valid UTF-8 (a stray byte at character 16)" in result.output
    assert not _home(project).exists()


def test_a_model_name_read_as_a_number_says_how_to_quote_it(project: Path) -> None:
    # `-o model=7` said only "model must be the upstream's model name, got 7".
    one_error_line(
        _cli("package", "register", *OPENAI, "-o", "model=7"),
        """model must be the upstream's model name, got 7 (read as JSON: quote it as text, -o 'model="7"')""",
    )
    assert _cli("package", "register", *OPENAI, "-o", 'model="7"').exit_code == 0
    assert [p.model.options["model"] for p in _packages(project)] == ["7"]
    # An object is no model name to quote: the hint wrote Python's repr (-o 'model="{'a': 1}"').
    line = one_error_line(_cli("package", "register", *OPENAI, "-o", 'model={"a": 1}'), "got {'a': 1}")
    assert "quote it" not in line
    one_error_line(
        _cli("package", "register", *OPENAI, "-o", "model=true"),
        """got True (read as JSON: quote it as text, -o 'model="true"')""",
    )


def test_without_a_config_the_group_must_be_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENT_RELEASE_HOME", str(tmp_path / "home"))
    one_error_line(_cli("package", "register", *OPENAI), "name the model package group with --group")
    assert _cli("package", "register", "--group", "helpdesk-llm", *OPENAI).exit_code == 0
    listed = _cli("package", "list", "--group", "helpdesk-llm", "--json")
    assert [r["group"] for r in json.loads(listed.output)] == ["helpdesk-llm"]


def test_approve_makes_the_first_champion_and_the_ledger_says_so_first(project: Path) -> None:
    result = _cli("package", "register", *OPENAI, "--approve", "current production LLM")
    assert result.exit_code == 0, result.output
    (package,) = _packages(project)
    assert package.approval_status == ApprovalStatus.APPROVED
    backend = LocalBackend(_home(project))
    try:
        (entry,) = backend.list_audit()
        assert backend.verify_audit() == []
    finally:
        backend.close()
    assert (entry.action, entry.subject) == ("approve_bootstrap", package.arn)
    assert "current production LLM" in entry.reason
    assert entry.actor.startswith("user:")


def test_approve_is_refused_once_the_group_has_a_champion_and_registers_nothing(project: Path) -> None:
    assert _cli("package", "register", *OPENAI, "--approve", "first").exit_code == 0
    one_error_line(
        _cli("package", "register", *OPENAI, "--approve", "skip the gate"),
        "support-model already has an Approved package (v1)",
        "only through the gate",
    )
    assert [p.version for p in _packages(project)] == [1]
    backend = LocalBackend(_home(project))
    try:
        assert len(backend.list_audit()) == 1
    finally:
        backend.close()


def test_approve_needs_a_one_line_reason(project: Path) -> None:
    assert _cli("package", "register", *OPENAI, "--approve", " ").exit_code == 2
    assert _cli("package", "register", *OPENAI, "--approve", "a\nb").exit_code == 2
    assert not _home(project).exists()


def test_list_reads_only_and_names_the_groups_that_exist(project: Path) -> None:
    one_error_line(_cli("package", "list"), "no state directory")
    assert not _home(project).exists()
    assert _cli("package", "register", "--group", "helpdesk-llm", *OPENAI).exit_code == 0
    db = _home(project) / "state.db"
    before = db.stat().st_mtime_ns
    one_error_line(_cli("package", "list"), "support-model has no packages", "groups here: helpdesk-llm")
    assert db.stat().st_mtime_ns == before


def test_the_cli_offers_exactly_the_registrable_kinds() -> None:
    register = main.commands["package"].commands["register"]  # type: ignore[attr-defined]
    (kind,) = [p for p in register.params if p.name == "kind"]
    assert isinstance(kind.type, click.Choice)
    assert tuple(kind.type.choices) == REGISTRABLE_KINDS


def test_option_values_read_as_json_where_they_can() -> None:
    assert parse_options(["a=1", "b=x", 'c={"k": [1]}', "d=true", "e=http://h:1/v1", "f="]) == {
        "a": 1,
        "b": "x",
        "c": {"k": [1]},
        "d": True,
        "e": "http://h:1/v1",
        "f": "",
    }


def test_a_model_module_in_the_current_directory_gets_the_exact_pythonpath_fix(project: Path) -> None:
    (project / "helpdesk_models_not_on_path.py").write_text(
        "class M:\n    def complete(self, r):\n        return {}\n"
    )
    line = one_error_line(
        _cli("package", "register", "--kind", "python", "-o", "class_path=helpdesk_models_not_on_path:M"),
        "No module named 'helpdesk_models_not_on_path'",
    )
    assert line.endswith(f"which Python does not search: run with PYTHONPATH={project.resolve()}"), line
    assert not _home(project).exists()


def test_list_on_an_empty_state_database_says_nothing_is_registered(project: Path) -> None:
    # A 0-byte state.db (a database nothing has written yet) said "OperationalError: no such table: packages".
    _home(project).mkdir()
    (_home(project) / "state.db").write_bytes(b"")
    one_error_line(_cli("package", "list"), "has no packages (no package is registered here yet)")
    assert (_home(project) / "state.db").read_bytes() == b""  # a look only: nothing created
