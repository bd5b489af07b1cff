"""Fixtures of the reliability drills (helpers in ``_drill.py``; the drill table in docs/reliability.md)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _drill import DrillProject, kill_group, make_project


@pytest.fixture
def drill_project(tmp_path: Path) -> DrillProject:
    """A fresh drill project with its own ``AGENT_RELEASE_HOME``."""
    return make_project(tmp_path)


@pytest.fixture
def reap() -> Iterator[Callable[[subprocess.Popen[str]], subprocess.Popen[str]]]:
    """Register a started process; it is killed (group) at teardown if it still runs."""
    started: list[subprocess.Popen[str]] = []

    def register(proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
        started.append(proc)
        return proc

    yield register
    for proc in started:
        if proc.poll() is None:
            kill_group(proc)
            proc.wait(timeout=30)
