"""The local executor: runs the DAG in-process in dependency order, persisting every step.

Each execution has an id; each step's status, timings, output (JSON of its typed report) and error are stored
in the state database as the step finishes, so ``run --resume ID`` continues a crashed or interrupted
execution with the stored config and without redoing finished steps. Steps re-run on resume are written to be
idempotent (deploy, register and approval changes compare with what exists first).

Usage::

    executor = LocalExecutor(ExecutionStore(state_dir))       # optional observer= gets step events
    execution_id = executor.start(cfg.name, loaded.path, loaded.text, steps)   # a new execution
    result = executor.run(execution_id, steps, context)
    result = executor.run(execution_id, steps, context, resume=True)           # continue an interrupted one
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from agent_release.pipelines.state_db import connect, ensure_schema, is_locked_error, locked_message
from agent_release.pipelines.terminal_text import escape_controls

logger = logging.getLogger(__name__)

ExecutionStatus = Literal["running", "succeeded", "failed", "held"]
StepStatus = Literal["pending", "running", "succeeded", "failed", "skipped"]

# Drill hook (docs/reliability.md): SIGKILL this process right after the named step is persisted, to prove
# that `run --resume` continues from the step boundary. Never set in normal use.
KILL_AFTER_STEP_ENV = "AGENT_RELEASE_DRILL_KILL_AFTER_STEP"

_DDL = """
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    config_path TEXT NOT NULL,
    config_text TEXT NOT NULL,
    status TEXT NOT NULL,
    decision TEXT,
    error TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    pid INTEGER
);
CREATE TABLE IF NOT EXISTS steps (
    execution_id TEXT NOT NULL REFERENCES executions(id),
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at REAL,
    finished_at REAL,
    output_json TEXT,
    error TEXT,
    PRIMARY KEY (execution_id, name)
);
"""


# When an execution ``e`` last did something: its start or end, or a step's start or end. A resumed older
# execution is then the latest, not the newer one it followed (ordered by start, `status`, `report` and
# `promote`'s held-execution lookup named the newer one).
LAST_ACTIVITY = (
    "MAX(e.started_at, COALESCE(e.finished_at, 0), COALESCE((SELECT MAX(MAX(COALESCE(s.started_at, 0), "
    "COALESCE(s.finished_at, 0))) FROM steps s WHERE s.execution_id = e.id), 0))"
)


class StepFailed(RuntimeError):
    """A step could not complete; the message is one line for the user."""


class ExecutionNotFound(ValueError):
    """``--resume`` named an execution that does not exist."""


class ExecutionSuperseded(ValueError):
    """``--resume`` named an execution that a later one replaced on its endpoint."""


@dataclass(frozen=True)
class StepDef:
    """One node of the DAG: a name (the step function's name), its upstream steps, how to run it."""

    name: str
    needs: tuple[str, ...]
    output_type: type[BaseModel]
    run: Callable[[StepRun], BaseModel | None]
    # Config-level condition (None = always): read only the config, so the SageMaker compiler can evaluate it
    # at compile time and leave the step out of the pipeline. A skipped step has no output.
    when: Callable[[StepRun], bool] | None = None
    # Run-time condition on upstream outputs (e.g. "a challenger was deployed"), checked when the step is due.
    run_if: Callable[[StepRun], bool] | None = None
    description: str = ""
    # Shown when ``when`` skips the step, so the user learns why (e.g. "no challenger deployed").
    skip_note: str = ""


@dataclass
class StepRun:
    """What a step sees while it runs: the execution id, upstream outputs and the shared context."""

    execution_id: str
    outputs: dict[str, BaseModel]
    context: Any

    def output(self, name: str) -> Any:
        """The typed output of upstream step ``name`` (KeyError if it was skipped or has not run)."""
        return self.outputs[name]

    def maybe(self, name: str) -> Any:
        """The output of ``name``, or None when it was skipped."""
        return self.outputs.get(name)


@dataclass
class ExecutionResult:
    """How an execution ended."""

    id: str
    status: ExecutionStatus
    outputs: dict[str, BaseModel] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    error: str | None = None
    decision: str | None = None


StepObserver = Callable[[str, str, Mapping[str, Any]], None]


def topological_order(steps: list[StepDef]) -> list[StepDef]:
    """Steps sorted so every step follows its ``needs``; raises ValueError on unknown names or cycles."""
    by_name = {s.name: s for s in steps}
    for s in steps:
        for dep in s.needs:
            if dep not in by_name:
                raise ValueError(f"step {s.name} needs unknown step {dep}")
    ordered: list[StepDef] = []
    state: dict[str, int] = {}

    def visit(s: StepDef, chain: tuple[str, ...]) -> None:
        if state.get(s.name) == 2:
            return
        if state.get(s.name) == 1:
            raise ValueError(f"cycle in DAG: {' -> '.join((*chain, s.name))}")
        state[s.name] = 1
        for dep in s.needs:
            visit(by_name[dep], (*chain, s.name))
        state[s.name] = 2
        ordered.append(s)

    for s in steps:
        visit(s, ())
    return ordered


class ExecutionStore:
    """Executions and steps in the state database."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._conn = connect(state_dir)
        ensure_schema(self._conn, _DDL)

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    def create(self, pipeline: str, config_path: Path, config_text: str, steps: list[StepDef]) -> str:
        """Insert a new execution with all steps pending; return its id."""
        execution_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        now = time.time()
        with self._tx() as c:
            c.execute(
                "INSERT INTO executions (id, pipeline, config_path, config_text, status, started_at, pid)"
                " VALUES (?, ?, ?, ?, 'running', ?, ?)",
                (execution_id, pipeline, str(config_path), config_text, now, os.getpid()),
            )
            c.executemany(
                "INSERT INTO steps (execution_id, name, position, status) VALUES (?, ?, ?, 'pending')",
                [(execution_id, s.name, i) for i, s in enumerate(steps)],
            )
        return execution_id

    def _tx(self) -> _Transaction:
        return _Transaction(self._conn)

    def execution(self, execution_id: str) -> sqlite3.Row | None:
        """The execution row, or None."""
        row: sqlite3.Row | None = self._conn.execute(
            "SELECT * FROM executions WHERE id = ?", (execution_id,)
        ).fetchone()
        return row

    def latest(self) -> sqlite3.Row | None:
        """The execution that last did something (see :data:`LAST_ACTIVITY`), or None."""
        row: sqlite3.Row | None = self._conn.execute(
            f"SELECT * FROM executions e ORDER BY {LAST_ACTIVITY} DESC LIMIT 1"
        ).fetchone()
        return row

    def deployed_after(self, execution_id: str) -> list[sqlite3.Row]:
        """Executions started after ``execution_id`` whose ``deploy_variants`` step succeeded (they may have
        put other models on an endpoint), oldest first."""
        return list(
            self._conn.execute(
                "SELECT e.* FROM executions e JOIN steps s ON s.execution_id = e.id "
                "WHERE s.name = 'deploy_variants' AND s.status = 'succeeded' "
                "AND e.started_at > (SELECT started_at FROM executions WHERE id = ?) ORDER BY e.started_at",
                (execution_id,),
            ).fetchall()
        )

    def recent(self, limit: int = 20) -> list[sqlite3.Row]:
        """Executions by their last activity, most recent first (see :data:`LAST_ACTIVITY`)."""
        return list(
            self._conn.execute(
                f"SELECT * FROM executions e ORDER BY {LAST_ACTIVITY} DESC LIMIT ?", (limit,)
            ).fetchall()
        )

    def step_outputs(self, name: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(execution id, stored output) of every execution whose step ``name`` succeeded with an output, by
        the execution's last activity, most recent first; read lazily, so a caller stopping at the first it
        wants parses no other (``plan`` reads the newest evaluation however many runs since skipped theirs)."""
        cursor = self._conn.execute(
            "SELECT e.id, s.output_json FROM executions e JOIN steps s ON s.execution_id = e.id "
            "WHERE s.name = ? AND s.status = 'succeeded' AND s.output_json IS NOT NULL "
            f"ORDER BY {LAST_ACTIVITY} DESC",
            (name,),
        )
        for row in cursor:
            yield row["id"], json.loads(row["output_json"])

    def steps(self, execution_id: str) -> list[sqlite3.Row]:
        """Steps of an execution in DAG order."""
        return list(
            self._conn.execute(
                "SELECT * FROM steps WHERE execution_id = ? ORDER BY position", (execution_id,)
            ).fetchall()
        )

    def step_output(self, execution_id: str, name: str) -> dict[str, Any] | None:
        """The stored JSON output of a succeeded step, or None."""
        row = self._conn.execute(
            "SELECT output_json FROM steps WHERE execution_id = ? AND name = ? AND status = 'succeeded'",
            (execution_id, name),
        ).fetchone()
        if row is None or row["output_json"] is None:
            return None
        data: dict[str, Any] = json.loads(row["output_json"])
        return data

    def mark_step(self, execution_id: str, name: str, status: StepStatus, **fields: Any) -> None:
        """Update a step's status and any of started_at, finished_at, output_json, error."""
        sets = ["status = ?"]
        values: list[Any] = [status]
        if status == "running":
            sets.append("attempts = attempts + 1")
        for key, value in fields.items():
            if key not in {"started_at", "finished_at", "output_json", "error"}:
                raise ValueError(key)
            sets.append(f"{key} = ?")
            values.append(value)
        values += [execution_id, name]
        with self._tx() as c:
            c.execute(f"UPDATE steps SET {', '.join(sets)} WHERE execution_id = ? AND name = ?", values)

    def finish(
        self,
        execution_id: str,
        status: ExecutionStatus,
        *,
        error: str | None = None,
        decision: str | None = None,
    ) -> None:
        """Mark the execution finished (or held) with its decision and error."""
        with self._tx() as c:
            c.execute(
                "UPDATE executions SET status = ?, error = ?, decision = COALESCE(?, decision),"
                " finished_at = ? WHERE id = ?",
                (status, error, decision, time.time(), execution_id),
            )

    def reopen(self, execution_id: str) -> None:
        """Mark a resumed execution running again under this process."""
        with self._tx() as c:
            c.execute(
                "UPDATE executions SET status = 'running', error = NULL, finished_at = NULL, pid = ? WHERE id = ?",
                (os.getpid(), execution_id),
            )
            c.execute(
                "UPDATE steps SET status = 'pending' WHERE execution_id = ? AND status IN ('running', 'failed')",
                (execution_id,),
            )

    def set_decision(self, execution_id: str, decision: str) -> None:
        """Record the gate's decision on the execution (shown by `status`)."""
        with self._tx() as c:
            c.execute("UPDATE executions SET decision = ? WHERE id = ?", (decision, execution_id))


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._conn.execute("ROLLBACK" if exc_type else "COMMIT")


class LocalExecutor:
    """Runs a list of :class:`StepDef` in dependency order with persistence and resume."""

    def __init__(self, store: ExecutionStore, observer: StepObserver | None = None) -> None:
        self.store = store
        self._observe = observer or (lambda step, event, info: None)

    def start(self, pipeline: str, config_path: Path, config_text: str, steps: list[StepDef]) -> str:
        """Create a new execution for ``steps`` and return its id (run it with :meth:`run`)."""
        return self.store.create(pipeline, config_path, config_text, topological_order(steps))

    def run(
        self, execution_id: str, steps: list[StepDef], context: Any, *, resume: bool = False
    ) -> ExecutionResult:
        """Run (or, with ``resume``, continue) ``execution_id``; never raises for a step failure."""
        ordered = topological_order(steps)
        result = ExecutionResult(id=execution_id, status="running")
        if resume:
            self.store.reopen(execution_id)
        stored = {row["name"]: row["status"] for row in self.store.steps(execution_id)}
        run = StepRun(execution_id=execution_id, outputs={}, context=context)
        for step in ordered:
            if stored.get(step.name) == "succeeded":
                data = self.store.step_output(execution_id, step.name)
                if data is not None:
                    run.outputs[step.name] = step.output_type.model_validate(data)
                result.reused.append(step.name)
                self._observe(step.name, "reused", {})
                continue
            if stored.get(step.name) == "skipped" or any(
                dep not in run.outputs and dep not in result.skipped for dep in step.needs
            ):
                result.skipped.append(step.name)
                continue
            if (step.when is not None and not step.when(run)) or (
                step.run_if is not None and not step.run_if(run)
            ):
                self.store.mark_step(
                    execution_id, step.name, "skipped", finished_at=time.time(), error=step.skip_note or None
                )
                result.skipped.append(step.name)
                self._observe(step.name, "skipped", {"reason": step.skip_note})
                continue
            started = time.time()
            self.store.mark_step(execution_id, step.name, "running", started_at=started)
            self._observe(step.name, "started", {})
            logger.info("execution=<%s>, step=<%s> | started", execution_id, step.name)
            try:
                output = step.run(run)
            except Exception as exc:  # a step failure is recorded, not raised: the run ends cleanly
                locked = is_locked_error(exc)
                message = locked_message(self.store.state_dir) if locked else first_line(exc)
                # The step's record keeps the rest of a multi-line message (flattened, capped), for
                # `report`; the run's error line shows its first line.
                detail = message if locked else one_line(exc)
                self.store.mark_step(execution_id, step.name, "failed", finished_at=time.time(), error=detail)
                self.store.finish(execution_id, "failed", error=f"{step.name}: {message}")
                self._observe(step.name, "failed", {"error": message})
                logger.info(
                    "execution=<%s>, step=<%s>, error=<%s> | failed", execution_id, step.name, message
                )
                if not isinstance(exc, StepFailed | ValueError):
                    logger.debug("step failure detail", exc_info=True)
                result.status = "failed"
                result.error = f"{step.name}: {message}"
                return result
            finished = time.time()
            if output is None:
                self.store.mark_step(execution_id, step.name, "skipped", finished_at=finished)
                result.skipped.append(step.name)
                self._observe(step.name, "skipped", {})
                continue
            run.outputs[step.name] = output
            self.store.mark_step(
                execution_id,
                step.name,
                "succeeded",
                finished_at=finished,
                output_json=output.model_dump_json(),
            )
            decision = getattr(output, "decision", None)
            if isinstance(decision, str):
                self.store.set_decision(execution_id, decision)
                result.decision = decision
            result.ran.append(step.name)
            self._observe(step.name, "succeeded", {"seconds": finished - started, "output": output})
            logger.info(
                "execution=<%s>, step=<%s>, seconds=<%.2f> | succeeded",
                execution_id,
                step.name,
                finished - started,
            )
            if os.environ.get(KILL_AFTER_STEP_ENV) == step.name:
                logger.warning("step=<%s> | drill: killing this process after the step", step.name)
                os.kill(os.getpid(), signal.SIGKILL)
        result.outputs = run.outputs
        final: ExecutionStatus = "succeeded"
        for out in run.outputs.values():
            if getattr(out, "held", False):
                final = "held"
        result.status = final
        for name, out in run.outputs.items():
            if name not in result.reused:
                continue
            decision = getattr(out, "decision", None)
            if isinstance(decision, str):
                result.decision = decision
        self.store.finish(execution_id, final, decision=result.decision)
        return result


# What one_line keeps of a message that spans lines: the whole first line, then up to this many characters.
ONE_LINE_MAX_CHARS = 300
# Line breaks as str.splitlines() knows them (the other control characters: terminal_text.escape_controls).
_LINE_BREAK = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def one_line(exc: BaseException) -> str:
    """An exception's message as one line (see :func:`flatten`), its type when the message is empty."""
    return flatten(str(exc)) or type(exc).__name__


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (see :func:`flatten`), its type when the message is empty.

    What the run's error line shows after a failed step's name (the step's own record keeps the rest, see
    :func:`one_line`): a step's exception may be a library's multi-line report, whose first line says what
    failed.
    """
    lines = str(exc).strip().splitlines()
    return flatten(lines[0]) if lines else type(exc).__name__


def flatten(text: str) -> str:
    """``text`` on one line: each line break shown as ``\\n``, other control characters as ``\\xNN``.

    A message quoting a user value that holds a newline (``agent-release report $'abc\\ndef'``) keeps what
    follows the newline instead of ending mid-sentence, and no value can break the line or drive the terminal.
    The first line is always kept whole; a message that goes on for many lines (a traceback-like report) is
    cut after :data:`ONE_LINE_MAX_CHARS` characters with "...".
    """
    text = text.strip()
    first_break = _LINE_BREAK.search(text)
    cut = len(text) if first_break is None else first_break.start()
    head, rest = text[:cut], _LINE_BREAK.sub(lambda _: "\\n", text[cut:])
    budget = max(ONE_LINE_MAX_CHARS - len(head), 0)
    if len(rest) > budget:
        rest = rest[:budget].rstrip() + "..."
    # No line break is left: what remains of the control characters is the terminal's (one definition).
    return escape_controls(head + rest)
