"""The local state directory and its SQLite database.

Everything the embedded default persists lives under one directory: ``$AGENT_RELEASE_HOME``, or else
``.agent-release/`` in the current working directory (the CLI passes no project root). Inside it:

- ``state.db``: executions and steps (executor), endpoints, variants, model registry, invocation metrics,
  audit ledger (local backend), evaluation rows (evaluation_store);
- ``audit-head.json``: seq and hash of the newest ledger entry; ``locks/``: the local backend's file locks;
- ``mlflow.db``: the MLflow tracking store (SQLite), unless a tracking URI is configured;
- ``artifacts/``: trained models and MLflow artifacts; ``reports/``: the HTML reports.

Each module that owns tables declares its DDL and calls :func:`ensure_schema`; the connection settings (WAL,
busy timeout) are decided here once, because several processes (a running pipeline, ``serve``, a release
manager's ``promote``) share the file.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

STATE_DIR_ENV = "AGENT_RELEASE_HOME"
DEFAULT_STATE_DIRNAME = ".agent-release"
# How long a writer waits for another process's transaction before failing with "database is locked".
BUSY_TIMEOUT_S = 10.0
# Overrides BUSY_TIMEOUT_S (seconds); the reliability drills shorten it (docs/reliability.md).
DB_TIMEOUT_ENV = "AGENT_RELEASE_DB_TIMEOUT_S"

# The ledger's head (seq and hash of the newest entry), which the local backend replaces on every append.
AUDIT_HEAD_FILE = "audit-head.json"

_schema_lock = threading.Lock()
# Set by read_only(): connect() then opens the existing database read-only (see there).
_read_only_scope: ContextVar[bool] = ContextVar("agent_release_state_db_read_only", default=False)


def resolve_state_dir(project_root: Path | None = None) -> Path:
    """The state directory: ``$AGENT_RELEASE_HOME`` if set, else ``<project_root or cwd>/.agent-release``."""
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return ((project_root or Path.cwd()) / DEFAULT_STATE_DIRNAME).resolve()


# The mode a new state directory is created with (less the umask); an existing one keeps its own.
STATE_DIR_MODE = 0o750


def state_db_path(state_dir: Path) -> Path:
    """Path of the state database inside ``state_dir``."""
    return state_dir / "state.db"


def busy_timeout_s() -> float:
    """Seconds a writer waits for another process's transaction: ``$AGENT_RELEASE_DB_TIMEOUT_S`` or 10."""
    raw = os.environ.get(DB_TIMEOUT_ENV, "").strip()
    if not raw:
        return BUSY_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{DB_TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return value


class ReadOnlyConnection(sqlite3.Connection):
    """A connection to the state database opened read-only (SQLite ``mode=ro``); see :func:`read_only`."""


@contextmanager
def read_only() -> Iterator[None]:
    """Open every state database connection made in the block read-only, for commands that only look.

    The stores and the local backend open their connections through :func:`connect`; inside the block it
    opens the existing ``state.db`` with SQLite's ``mode=ro`` and :func:`ensure_schema` runs no DDL, so
    nothing is created (directory, file, table) or written, and a read-only state directory or file works.
    A table an older state database lacks is then missing, not created: readers treat it as empty.

    Usage::

        with read_only():
            backend = LocalBackend(state_dir)   # reads only
    """
    token = _read_only_scope.set(True)
    try:
        yield
    finally:
        _read_only_scope.reset(token)


def connect(
    state_dir: Path, *, timeout_s: float | None = None, read_only: bool | None = None
) -> sqlite3.Connection:
    """Open (creating if needed) the state database with the settings every process must share.

    The connection is in autocommit mode (``isolation_level=None``): callers open transactions explicitly with
    ``BEGIN IMMEDIATE`` where read-modify-write must be atomic across processes. ``timeout_s`` defaults to
    :func:`busy_timeout_s`. ``read_only`` (default: inside a :func:`read_only` block) opens the existing
    database read-only instead, a :class:`ReadOnlyConnection`.
    """
    timeout = busy_timeout_s() if timeout_s is None else timeout_s
    if _read_only_scope.get() if read_only is None else read_only:
        return _connect_read_only(state_db_path(state_dir), timeout)
    if state_dir.exists() and not state_dir.is_dir():
        raise StateDbUnavailable(f"state directory {state_dir} is not a directory (check AGENT_RELEASE_HOME)")
    try:
        # Not readable by other users (umask 022 made it 0755): the ledger, evaluation rows and traces hold
        # customer text. The group keeps read access, for an auditor running `audit verify`.
        state_dir.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:  # e.g. a parent is a file
        raise StateDbUnavailable(
            f"state directory {state_dir} cannot be created: {exc.strerror} (check AGENT_RELEASE_HOME)"
        ) from None
    path = state_db_path(state_dir)
    try:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.DatabaseError as exc:
        if is_locked_error(exc):
            raise
        raise StateDbUnavailable(_open_failure(path, exc)) from exc
    return conn


def unless_table_missing(read: Callable[[], T], empty: T) -> T:
    """``read()``, or ``empty`` when a table it reads does not exist: under :func:`read_only` nothing creates
    the tables an older or partly written state database lacks, and readers treat them as empty."""
    try:
        return read()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return empty
        raise


def _connect_read_only(path: Path, timeout: float) -> ReadOnlyConnection:
    """``path`` opened with SQLite's ``mode=ro``: never created, written or converted.

    A reader of a WAL database needs its ``-shm`` index: SQLite creates it (and an empty ``-wal``) beside the
    file when the directory is writable, and shares the one a running writer has. Where it can do neither (a
    read-only directory and no writer), the file is opened ``immutable``: nothing can be writing it then.
    """
    if not path.is_file():
        raise StateDbUnavailable(f"no state database at {path}")
    sidecars_usable = os.access(path.parent, os.W_OK) or Path(f"{path}-shm").exists()
    immutable = not sidecars_usable and not Path(f"{path}-wal").exists()
    uri = f"{path.absolute().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
    try:
        conn = sqlite3.connect(
            uri,
            uri=True,
            timeout=timeout,
            isolation_level=None,
            check_same_thread=False,
            factory=ReadOnlyConnection,
        )
        conn.row_factory = sqlite3.Row
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # reads the file now: damage shows here
    except sqlite3.DatabaseError as exc:
        if is_locked_error(exc):
            raise
        if is_damaged_error(exc):
            raise StateDbUnavailable(damaged_message(path, exc)) from exc
        raise StateDbUnavailable(f"state database {path} cannot be read: {exc}") from exc
    return conn


class StateDbUnavailable(RuntimeError):
    """The state database cannot be opened; ``str()`` names the file and the cause."""


def audit_head_problem(state_dir: Path) -> str | None:
    """Why the ledger's head file in ``state_dir`` can be neither read nor replaced, e.g. ``/x/audit-head.json
    is a directory, not a file``; None when it is a file or absent (the first append writes it).

    Every ledger append replaces the file after its entry is recorded, so a directory there makes each append
    fail after the change it records was made (a rollback whose weights moved with no entry), and a FIFO
    makes ``audit verify`` wait forever.
    """
    path = state_dir / AUDIT_HEAD_FILE
    try:
        if not path.exists() or path.is_file():
            return None
        kind = "a directory" if path.is_dir() else "a special file (a FIFO, socket or device)"
    except OSError as exc:
        return f"{path} cannot be looked up ({exc.strerror})"
    return f"{path} is {kind}, not a file"


def check_audit_head(state_dir: Path) -> None:
    """Raise :class:`StateDbUnavailable` (one line naming the file) when the ledger could not record an append.

    Called before a command changes anything it records in the ledger (``run``, ``promote``, ``rollback``).
    """
    problem = audit_head_problem(state_dir)
    if problem is not None:
        raise StateDbUnavailable(
            f"the audit ledger's head {problem}: nothing was changed, since the ledger could not record it "
            "(move it aside, then check the ledger with `agent-release audit verify`)"
        )


def is_damaged_error(exc: BaseException) -> bool:
    """True for SQLite's errors about a damaged file (at open, or when a query reaches a damaged page)."""
    text = str(exc)
    return isinstance(exc, sqlite3.DatabaseError) and ("not a database" in text or "malformed" in text)


def damaged_message(path: Path, exc: BaseException) -> str:
    """One line for a damaged state database: which file, and what to do."""
    return f"state database {path} is damaged ({exc}); move it aside or restore it from a backup"


def _open_failure(path: Path, exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if is_damaged_error(exc):
        return damaged_message(path, exc)
    unwritable = not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK))
    if ("unable to open" in text or "readonly" in text) and unwritable:
        return f"state database {path} cannot be opened for writing (read-only?): {text}"
    return f"state database {path} cannot be opened: {text}"


def ensure_schema(conn: sqlite3.Connection, ddl: str) -> None:
    """Run idempotent DDL (``CREATE TABLE IF NOT EXISTS ...``) once per connection; none on a read-only one."""
    if isinstance(conn, ReadOnlyConnection):
        return
    with _schema_lock:
        conn.executescript(ddl)


def is_locked_error(exc: BaseException) -> bool:
    """True for SQLite's "database is locked" (another process held a write transaction too long)."""
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc).lower()


def processes_with_open(path: Path, limit: int = 3) -> list[str]:
    """Other processes that have ``path`` open, as ``pid N (command)``; empty where /proc is unavailable.

    SQLite cannot say which connection holds its lock, so this names the candidates (every process with the
    file open, readers included) for the error message.
    """
    target = str(path.resolve())
    found: list[str] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fds = list((entry / "fd").iterdir())
            if not any(os.readlink(fd) == target for fd in fds):
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # the process exited, or it is not ours to inspect
            continue
        # One line: an argument may hold newlines (``python -c "..."``), and the message is one line.
        command = " ".join(" ".join(a.decode(errors="replace").split()) for a in argv if a)[:80]
        found.append(f"pid {entry.name} ({command})")
        if len(found) >= limit:
            break
    return found


def locked_message(state_dir: Path) -> str:
    """One line for a "database is locked" failure: which database, and the processes that have it open."""
    path = state_db_path(state_dir)
    holders = processes_with_open(path)
    who = f"another process (open in {', '.join(holders)})" if holders else "another process"
    return (
        f"state database {path} is locked by {who} for more than {busy_timeout_s():g} s; "
        "retry when it has finished"
    )
