"""The local state directory and its SQLite database.

Everything the embedded default persists lives under one directory: ``.agent-release/`` in the project root,
or ``$AGENT_RELEASE_HOME``. Inside it:

- ``state.db``: executions and steps (executor), endpoints, variants, model registry, invocation metrics,
  audit ledger, evaluation rows (local backend);
- ``mlflow.db``: the MLflow tracking store (SQLite), unless a tracking URI is configured;
- ``artifacts/``: trained models, reports and MLflow artifacts.

Each module that owns tables declares its DDL and calls :func:`ensure_schema`; the connection settings (WAL,
busy timeout) are decided here once, because several processes (a running pipeline, ``serve``, a release
manager's ``promote``) share the file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

STATE_DIR_ENV = "AGENT_RELEASE_HOME"
DEFAULT_STATE_DIRNAME = ".agent-release"
# How long a writer waits for another process's transaction before failing with "database is locked".
BUSY_TIMEOUT_S = 10.0

_schema_lock = threading.Lock()


def resolve_state_dir(project_root: Path | None = None) -> Path:
    """The state directory: ``$AGENT_RELEASE_HOME`` if set, else ``<project_root or cwd>/.agent-release``."""
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return ((project_root or Path.cwd()) / DEFAULT_STATE_DIRNAME).resolve()


def state_db_path(state_dir: Path) -> Path:
    """Path of the state database inside ``state_dir``."""
    return state_dir / "state.db"


def connect(state_dir: Path, *, timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """Open (creating if needed) the state database with the settings every process must share.

    The connection is in autocommit mode (``isolation_level=None``): callers open transactions explicitly with
    ``BEGIN IMMEDIATE`` where read-modify-write must be atomic across processes.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        state_db_path(state_dir), timeout=timeout_s, isolation_level=None, check_same_thread=False
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def ensure_schema(conn: sqlite3.Connection, ddl: str) -> None:
    """Run idempotent DDL (``CREATE TABLE IF NOT EXISTS ...``) once per connection."""
    with _schema_lock:
        conn.executescript(ddl)
