"""Helpers of the reliability drills: the drill project and process control (the `mlflow server` is in `_shared`).

A drill project is a copy of ``pipeline.drill.yaml`` beside a link to the shipped datasets, with its own state
directory.

Every drill runs the real ``agent-release`` command line in subprocesses (the unit that gets killed, locked out
or raced is a process), on the 30-case smoke set with short bakes, so one full run takes tens of seconds.
``DrillProject`` wraps what the drills need: running the CLI, editing the config, and reading what a run left
behind (executions and steps in ``state.db``, the ledger, endpoints and registry through ``LocalBackend``,
MLflow objects through ``MlflowClient``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DRILL_YAML = Path(__file__).with_name("pipeline.drill.yaml")
CLI = [sys.executable, "-m", "agent_release.pipelines.cli"]
STEP_NAMES = (
    "validate_datasets",
    "train_model",
    "deploy_variants",
    "register_agents",
    "evaluate_variants",
    "decide_promotion",
    "promote_challenger",
)
ENDPOINT = "support-drill"
# A full drill run is 30-60 s on a busy 2-core machine; this only stops a wedged process.
RUN_TIMEOUT_S = 300


def deep_merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, nested mappings key by key (a None value deletes the key)."""
    merged = dict(base)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@dataclass
class DrillProject:
    """One drill's project directory, config file and state directory (``AGENT_RELEASE_HOME``)."""

    root: Path
    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "pipeline.drill.yaml"

    def configure(self, changes: Mapping[str, Any]) -> None:
        """Merge ``changes`` into the drill config (e.g. ``{"promote": {"bake_s": 2}}``)."""
        data = yaml.safe_load(self.config.read_text())
        self.config.write_text(yaml.safe_dump(deep_merge(data, changes), sort_keys=False))

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "AGENT_RELEASE_HOME": str(self.home), "TQDM_DISABLE": "1", **self.extra_env}
        for key in ("AGENT_RELEASE_DEBUG", "MLFLOW_TRACKING_URI", "AGENT_RELEASE_DRILL_KILL_AFTER_STEP"):
            env.pop(key, None)
        env.update(extra)
        return env

    def cli(self, *args: str, timeout: float = RUN_TIMEOUT_S, **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``agent-release ARGS`` to completion in the project directory."""
        return subprocess.run(
            [*CLI, *args],
            cwd=self.root,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str, **env: str) -> subprocess.Popen[str]:
        """Start ``agent-release ARGS`` in its own process group (so a drill can signal all of it)."""
        return subprocess.Popen(
            [*CLI, *args],
            cwd=self.root,
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``agent-release run -c pipeline.drill.yaml --json ARGS``."""
        return self.cli("run", "-c", str(self.config), "--json", *args, **env)

    # -- what a run left behind ------------------------------------------------------------------------------
    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.home / "state.db", timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def executions(self) -> list[sqlite3.Row]:
        conn = self.db()
        try:
            return list(conn.execute("SELECT * FROM executions ORDER BY started_at"))
        finally:
            conn.close()

    def steps(self, execution_id: str) -> dict[str, sqlite3.Row]:
        conn = self.db()
        try:
            rows = conn.execute(
                "SELECT * FROM steps WHERE execution_id = ? ORDER BY position", (execution_id,)
            )
            return {row["name"]: row for row in rows}
        finally:
            conn.close()

    def step_output(self, execution_id: str, name: str) -> dict[str, Any]:
        row = self.steps(execution_id)[name]
        assert row["status"] == "succeeded", (name, row["status"], row["error"])
        data: dict[str, Any] = json.loads(row["output_json"])
        return data

    def backend(self) -> Any:
        from agent_release.pipelines.local_backend import LocalBackend

        return LocalBackend(self.home)

    def mlflow_client(self, tracking_uri: str | None = None) -> Any:
        from mlflow import MlflowClient

        uri = tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"
        return MlflowClient(tracking_uri=uri, registry_uri=uri)


def make_project(base: Path, changes: Mapping[str, Any] | None = None) -> DrillProject:
    """A drill project under ``base``: the drill config, a link to the datasets, an empty state dir."""
    root = base / "project"
    root.mkdir(parents=True)
    (root / "datasets").symlink_to(ROOT / "datasets")
    shutil.copy(DRILL_YAML, root / DRILL_YAML.name)
    project = DrillProject(root=root, home=base / "home")
    if changes:
        project.configure(changes)
    return project


def result_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The ``run --json`` result: the last stdout line that is a JSON object."""
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            data: dict[str, Any] = json.loads(line)
            return data
    raise AssertionError(f"no JSON result on stdout (exit {proc.returncode}): {proc.stderr[-3000:]}")


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """Assert the command failed the documented way (exit 1, no traceback) and return its ``error:`` line."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def kill_group(proc: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    """Signal ``proc``'s whole process group (it was started with ``start_new_session``)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


class Drained:
    """Reads a process's stdout and stderr in background threads while the drill waits on something else.

    A ``-v`` run writes hundreds of kilobytes to stderr; left undrained, the pipe fills (64 KiB) and the process
    blocks on a write, so a drill waiting for it to reach some state would wait forever.
    """

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._chunks: dict[str, list[str]] = {"out": [], "err": []}
        self._threads = [
            threading.Thread(target=self._read, args=(stream, key), daemon=True)
            for stream, key in ((proc.stdout, "out"), (proc.stderr, "err"))
            if stream is not None
        ]
        for t in self._threads:
            t.start()

    def _read(self, stream: Any, key: str) -> None:
        for chunk in iter(lambda: stream.read(65536), ""):
            self._chunks[key].append(chunk)

    def result(self, timeout_s: float = 60) -> tuple[str, str]:
        """(stdout, stderr) once the process has closed both pipes."""
        for t in self._threads:
            t.join(timeout_s)
        return "".join(self._chunks["out"]), "".join(self._chunks["err"])
