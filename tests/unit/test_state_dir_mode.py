"""A new state directory is not readable by other users: the ledger, evaluation rows and traces in it hold
customer text (security review, session 21). An existing directory keeps the mode its owner gave it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_release.pipelines.executor import ExecutionStore
from agent_release.pipelines.state_db import connect


@pytest.fixture()
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_state_directory_shuts_out_other_users(tmp_path: Path, umask_022: None) -> None:
    state_dir = tmp_path / "project" / ".agent-release"
    ExecutionStore(state_dir).close()
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o750
    # SQLite creates the database 0644 under this umask: the directory is what keeps other users out.
    assert stat.S_IMODE((state_dir / "state.db").stat().st_mode) == 0o644


def test_an_existing_state_directory_keeps_its_mode(tmp_path: Path, umask_022: None) -> None:
    state_dir = tmp_path / "shared"
    state_dir.mkdir()
    state_dir.chmod(0o775)
    connect(state_dir).close()
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o775
