"""`promote`, `rollback` and `serve` where nothing has run (no state directory): one line, exit 1, nothing created.

Outside a project, or in a project that has never run, there is nothing deployed to promote, roll back or
serve; the commands say so as `status` does instead of creating an empty `.agent-release/` (or `mlflow.db`) in
whatever directory they were started from.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from _shared.cli import assert_one_line_error, copy_project, run_cli

COMMANDS = {
    "promote": ["promote", "challenger"],
    "rollback": ["rollback"],
    "serve": ["serve", "--port", "0"],  # any free port: no clash with a server elsewhere
}
# Without the fix `serve` serves until killed; well past a refusal's interpreter start-up.
SERVE_REFUSAL_TIMEOUT_S = 30


def _run(args: list[str], cwd: Path, home: Path | None) -> subprocess.CompletedProcess[str]:
    try:
        return run_cli(args, cwd, home, timeout_s=SERVE_REFUSAL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`agent-release {' '.join(args)}` kept running instead of refusing", pytrace=False)


def _project_without_state(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


def _empty_directory(tmp_path: Path) -> Path:
    empty = tmp_path / "not-a-project"
    empty.mkdir()
    return empty


PLACES = {"empty directory": _empty_directory, "project that never ran": _project_without_state}


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_without_state_says_so_and_creates_nothing(command: str, place: str, tmp_path: Path) -> None:
    cwd = PLACES[place](tmp_path)
    before = sorted(p.name for p in cwd.iterdir())
    proc = _run(COMMANDS[command], cwd, home=None)
    assert_one_line_error(proc, f"no state directory at {cwd / '.agent-release'}", "nothing has run here")
    assert sorted(p.name for p in cwd.iterdir()) == before, f"{command} created state in {cwd}"


@pytest.mark.parametrize("command", ["promote", "rollback"])
def test_config_path_that_does_not_exist_creates_nothing(command: str, tmp_path: Path) -> None:
    cwd = _empty_directory(tmp_path)
    proc = _run([*COMMANDS[command], "-c", str(tmp_path / "missing" / "pipeline.yaml")], cwd, home=None)
    assert_one_line_error(proc, f"no state directory at {cwd / '.agent-release'}")
    assert list(cwd.iterdir()) == [] and not (tmp_path / "missing").exists()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_state_home_that_does_not_exist_is_not_created(command: str, tmp_path: Path) -> None:
    home = tmp_path / "nowhere" / ".agent-release"
    cwd = _empty_directory(tmp_path)
    proc = _run(COMMANDS[command], cwd, home=home)
    assert_one_line_error(proc, f"no state directory at {home}")
    assert not home.parent.exists() and list(cwd.iterdir()) == []
