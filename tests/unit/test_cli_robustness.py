"""Command-line robustness: SIGTERM takes the same rollback path as Ctrl-C for commands that shift traffic."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from _shared.cli import state_of_a_run

from agent_release.pipelines import cli


def test_sigterm_raises_keyboard_interrupt_like_sigint() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    try:
        cli._install_sigterm_handler()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize(
    ("args", "module", "action"),
    [
        (["run"], "agent_release.pipelines.local_run", "run_local"),
        (["promote", "challenger"], "agent_release.pipelines.release_actions", "promote_command"),
        (["rollback"], "agent_release.pipelines.release_actions", "rollback_command"),
    ],
)
def test_shifting_commands_turn_sigterm_into_an_interrupt_before_acting(
    args: list[str], module: str, action: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib

    from click.testing import CliRunner

    handlers: list[object] = []

    def acting(*_: object, **__: object) -> None:
        handlers.append(signal.getsignal(signal.SIGTERM))
        raise RuntimeError("stop here")

    monkeypatch.setattr(importlib.import_module(module), action, acting)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        result = CliRunner().invoke(cli.main, args, env={"AGENT_RELEASE_HOME": str(state_of_a_run(tmp_path))})
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 1 and "stop here" in result.output
    assert handlers == [cli._sigterm_as_interrupt]  # in place when the command started acting


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["promote", "challenger", "--schedule", "abc"], "--schedule"),
        (["plan", "--sd", "-1"], "--sd"),
        (["plan", "--sd", "nan"], "--sd"),
        (["plan", "--icc", "5"], "--icc"),
    ],
)
def test_bad_numeric_options_are_usage_errors(args: list[str], option: str, tmp_path: object) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli.main, args, env={"AGENT_RELEASE_HOME": str(tmp_path)})
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.output
    assert option in result.output


def test_serve_port_zero_prints_the_bound_port(tmp_path: Path) -> None:
    import re
    import subprocess
    import sys

    env = {**os.environ, "AGENT_RELEASE_HOME": str(state_of_a_run(tmp_path))}
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_release.pipelines.cli", "serve", "--port", "0"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=15)
    match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert match, line
    assert int(match.group(1)) != 0, line


def test_serve_port_in_use_prints_only_the_error(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "AGENT_RELEASE_HOME": str(state_of_a_run(tmp_path))}
        proc = subprocess.run(
            [sys.executable, "-m", "agent_release.pipelines.cli", "serve", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1, proc.stderr
    assert "serving" not in proc.stderr
    assert proc.stderr.startswith(f"error: cannot serve on 127.0.0.1:{port}: "), proc.stderr


def test_interrupt_message_names_the_execution(capsys: pytest.CaptureFixture[str]) -> None:
    from agent_release.pipelines.local_run import RunInterrupted

    @cli.handle_errors
    def interrupted() -> None:
        raise RunInterrupted("exec-123")

    with pytest.raises(SystemExit) as info:
        interrupted()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "--resume exec-123" in err
    assert "<id>" not in err


@pytest.mark.parametrize("args", [["audit"], ["audit", "verify"], ["report"]])
def test_read_only_commands_do_not_create_state(args: list[str], tmp_path: Path) -> None:
    from click.testing import CliRunner

    home = tmp_path / "nowhere" / ".agent-release"
    result = CliRunner().invoke(cli.main, args, env={"AGENT_RELEASE_HOME": str(home)})
    assert result.exit_code == 1, result.output
    assert f"no state directory at {home}" in result.output
    assert not home.exists()


def test_state_home_that_is_a_file_is_named(tmp_path: Path) -> None:
    from agent_release.pipelines.state_db import StateDbUnavailable, connect

    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(StateDbUnavailable, match="is not a directory"):
        connect(afile)


def test_corrupt_state_db_names_the_path(tmp_path: Path) -> None:
    from agent_release.pipelines.state_db import StateDbUnavailable, connect

    (tmp_path / "state.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateDbUnavailable, match=str(tmp_path / "state.db")):
        connect(tmp_path)


@pytest.mark.parametrize("head", ["garbage", "{}"])
def test_damaged_audit_head_fails_verify_with_a_clear_reason(head: str, tmp_path: Path) -> None:
    from agent_release.pipelines.local_backend import LocalBackend

    backend = LocalBackend(tmp_path)
    backend._audit_head_path().write_text(head)
    problems = backend.verify_audit()
    assert problems and "audit-head.json is damaged" in problems[0]
