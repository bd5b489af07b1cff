"""Run the ``agent-release`` command line as a subprocess and check its one-line error contract."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "agent_release.pipelines.cli"]


def run_cli(
    args: list[str], cwd: Path, home: Path | None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """``agent-release ARGS`` in ``cwd``; ``home`` is AGENT_RELEASE_HOME (None: unset, the cwd decides)."""
    env = {**os.environ}
    env.pop("AGENT_RELEASE_DEBUG", None)
    env.pop("AGENT_RELEASE_HOME", None)
    if home is not None:
        env["AGENT_RELEASE_HOME"] = str(home)
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 1, exactly one ``error:`` line on stderr containing every needle, no traceback; the line."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def copy_project(target: Path, *, copy_datasets: bool = False) -> Path:
    """The default pipeline.yaml in ``target`` beside the shipped datasets (linked, or copied to edit)."""
    target.mkdir(parents=True, exist_ok=True)
    if copy_datasets:
        shutil.copytree(ROOT / "datasets", target / "datasets")
    else:
        (target / "datasets").symlink_to(ROOT / "datasets")
    shutil.copy(ROOT / "pipeline.yaml", target / "pipeline.yaml")
    return target


def one_error_line(result: Any, *needles: str) -> str:
    """A ``CliRunner`` result that exited 1 with exactly one ``error:`` line containing every needle."""
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return str(lines[0])


def state_of_a_run(home: Path) -> Path:
    """``home`` holding a state database, as a run leaves it (nothing deployed): what the commands that act
    on earlier state (promote, rollback, serve, status, ...) require before they do anything."""
    from agent_release.pipelines.local_backend import LocalBackend

    LocalBackend(home).close()
    return home


def models_project(project: Path, module: str, source: str) -> Path:
    """A project of a team's own models: ``models/<module>.py`` holding ``source``, the shipped datasets linked
    beside it (write its ``pipeline.yaml``, then run commands in it with :func:`run_in_project`)."""
    (project / "models").mkdir(parents=True)
    (project / "models" / f"{module}.py").write_text(source)
    (project / "datasets").symlink_to(ROOT / "datasets")
    return project


def run_in_project(project: Path, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    """``agent-release ARGS`` in ``project``: state in ``project/.agent-release``, ``project/models`` on
    ``PYTHONPATH`` (where the command and the runtime import the team's model classes)."""
    env = {k: v for k, v in os.environ.items() if k != "AGENT_RELEASE_DEBUG"}
    env["AGENT_RELEASE_HOME"] = str(project / ".agent-release")
    env["PYTHONPATH"] = str(project / "models")
    return subprocess.run(
        [*CLI, *args], cwd=project, env=env, capture_output=True, text=True, timeout=timeout_s
    )
