"""The local backend: model registry, endpoints, invocation metrics and audit ledger in ``state.db``.

``LocalBackend(state_dir)`` implements :class:`agent_release.steps.backend.Backend` with SQLite (the shared
state database of :mod:`agent_release.pipelines.state_db`) and the loopback endpoint runtime
(:mod:`agent_release.pipelines.runtime`). Several processes may use one state directory at once (a running
pipeline, ``agent-release serve``, a release manager's ``promote``): writes that read before they write run in
``BEGIN IMMEDIATE`` transactions, and named locks are file locks (``locks/<name>.lock``) that the OS releases
when a process dies. The ledger's head (seq and hash of the newest entry) is also kept in ``audit-head.json``.

Usage::

    backend = LocalBackend(Path(".agent-release"))
    backend.deploy_endpoint(
        "support",
        [
            VariantSpec(name="champion", model=spec, initial_weight=1.0),
            VariantSpec(name="challenger", model=spec, initial_weight=0.0),
        ],
    )
    url = backend.start_runtime()          # sagemaker-runtime clients use endpoint_url=url
    backend.update_weights("support", {"champion": 0.9, "challenger": 0.1})
    backend.stop_runtime()
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from filelock import FileLock, Timeout

from agent_release.pipelines import state_db
from agent_release.pipelines.backend_rules import (
    GENESIS_HASH,
    audit_hash,
    canonical_json,
    check_package_group_name,
    head_mismatch,
    missing_entries,
    read_evidence,
    validate_endpoint_spec,
    validate_weights,
)
from agent_release.pipelines.call_timeline import CallTimeline, call_timeline
from agent_release.pipelines.invocation_window import InvocationWindow
from agent_release.steps.backend import (
    ApprovalStatus,
    AuditEntry,
    BackendError,
    EndpointState,
    FaultSpec,
    LockBusyError,
    ModelPackage,
    ModelSpec,
    VariantMetrics,
    VariantSpec,
    VariantState,
)

if TYPE_CHECKING:
    from agent_release.pipelines.runtime.server import RuntimeServer

logger = logging.getLogger(__name__)

LOCAL_REGION = "local"
LOCAL_ACCOUNT = "000000000000"
RUNTIME_FILE = "runtime.json"

DDL = """
CREATE TABLE IF NOT EXISTS package_groups (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS packages (
    arn TEXT PRIMARY KEY,
    group_name TEXT NOT NULL REFERENCES package_groups(name),
    version INTEGER NOT NULL,
    model_json TEXT NOT NULL,
    approval_status TEXT NOT NULL,
    approval_description TEXT NOT NULL,
    metadata_json TEXT NOT NULL,
    metrics_json TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (group_name, version)
);
CREATE TABLE IF NOT EXISTS endpoints (
    name TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS variants (
    endpoint TEXT NOT NULL REFERENCES endpoints(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    model_json TEXT NOT NULL,
    package_arn TEXT,
    current_weight REAL NOT NULL,
    desired_weight REAL NOT NULL,
    shadow INTEGER NOT NULL,
    shadow_sample_percent REAL NOT NULL,
    faults_json TEXT NOT NULL,
    PRIMARY KEY (endpoint, name)
);
-- One row, bumped by every endpoint change, so a running runtime notices changes with one cheap read.
CREATE TABLE IF NOT EXISTS endpoint_revision (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL
);
INSERT OR IGNORE INTO endpoint_revision (id, revision) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS invocations (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL,
    variant TEXT NOT NULL,
    at REAL NOT NULL,
    status INTEGER NOT NULL,
    model_latency_ms REAL,
    overhead_latency_ms REAL,
    shadow INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS invocations_by_endpoint_time ON invocations (endpoint, at);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    reason TEXT NOT NULL,
    evidence_json TEXT NOT NULL,
    execution_id TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""


class InvocationRecord(NamedTuple):
    """One call answered (or refused) by the runtime, as stored in ``invocations``.

    ``status`` is the status the *model* produced (500 for a model failure even though the client sees
    SageMaker's 424 ModelError), so 4xx/5xx counts mean what CloudWatch's Invocation4XX/5XXErrors mean.
    """

    endpoint: str
    variant: str
    at: float
    status: int
    model_latency_ms: float | None
    overhead_latency_ms: float | None
    shadow: bool


class LocalBackend:
    """SQLite-backed :class:`~agent_release.steps.backend.Backend` for one state directory.

    Thread-safe: one connection, serialised by a lock (transactions must not interleave across threads).
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self._conn = state_db.connect(self.state_dir)
        state_db.ensure_schema(self._conn, DDL)
        self._db_lock = threading.RLock()
        self._runtime: RuntimeServer | None = None
        # Endpoint -> the calls since the last ``since`` asked about, kept so a bake's looks read only new rows.
        self._windows: dict[str, InvocationWindow] = {}
        self._windows_lock = threading.Lock()

    def close(self) -> None:
        """Stop the runtime if this backend started one and close the database connection."""
        self.stop_runtime()
        with self._db_lock:
            self._conn.close()

    # -- plumbing ------------------------------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: readers in it see no concurrent writer's half-done change."""
        with self._db_lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._db_lock:
            return list(self._conn.execute(sql, params))

    # -- model registry ------------------------------------------------------------------------------------
    def ensure_package_group(self, group: str, description: str = "") -> None:
        """Create the model package group if it does not exist."""
        check_package_group_name(group)
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO package_groups (name, description, created_at) VALUES (?, ?, ?)",
                (group, description, time.time()),
            )

    def register_package(
        self,
        group: str,
        model: ModelSpec,
        metadata: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> ModelPackage:
        """Register the next numbered version in ``group`` with status PendingManualApproval."""
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM package_groups WHERE name = ?", (group,)).fetchone() is None:
                raise BackendError(f"model package group {group!r} does not exist")
            (last,) = conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM packages WHERE group_name = ?", (group,)
            ).fetchone()
            version = int(last) + 1
            package = ModelPackage(
                group=group,
                version=version,
                arn=f"arn:aws:sagemaker:{LOCAL_REGION}:{LOCAL_ACCOUNT}:model-package/{group.lower()}/{version}",
                model=model,
                approval_status=ApprovalStatus.PENDING,
                metadata=dict(metadata or {}),
                metrics={k: float(v) for k, v in (metrics or {}).items()},
                created_at=time.time(),
            )
            conn.execute(
                "INSERT INTO packages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    package.arn,
                    group,
                    version,
                    model.model_dump_json(),
                    package.approval_status.value,
                    "",
                    json.dumps(dict(package.metadata)),
                    json.dumps(dict(package.metrics)),
                    package.created_at,
                ),
            )
        logger.info("group=<%s>, version=<%d> | registered model package", group, version)
        return package

    @staticmethod
    def _package(row: sqlite3.Row) -> ModelPackage:
        return ModelPackage(
            group=row["group_name"],
            version=row["version"],
            arn=row["arn"],
            model=ModelSpec.model_validate_json(row["model_json"]),
            approval_status=ApprovalStatus(row["approval_status"]),
            approval_description=row["approval_description"],
            metadata=json.loads(row["metadata_json"]),
            metrics=json.loads(row["metrics_json"]),
            created_at=row["created_at"],
        )

    def list_package_groups(self) -> list[str]:
        """The names of the model package groups, in name order (local backend only: ``package list``); none
        on a read-only look at a database without a registry yet."""
        no_rows: list[sqlite3.Row] = []
        rows = state_db.unless_table_missing(
            lambda: self._query("SELECT name FROM package_groups ORDER BY name"), no_rows
        )
        return [row["name"] for row in rows]

    def list_packages(self, group: str) -> list[ModelPackage]:
        """All versions of ``group``, oldest first (empty when the group does not exist, or, on a read-only
        look, when the database has no registry yet: an empty ``state.db`` said "no such table: packages")."""
        no_rows: list[sqlite3.Row] = []
        rows = state_db.unless_table_missing(
            lambda: self._query("SELECT * FROM packages WHERE group_name = ? ORDER BY version", (group,)),
            no_rows,
        )
        return [self._package(r) for r in rows]

    def get_package(self, arn: str) -> ModelPackage:
        """The package with this ARN; raises :class:`BackendError` when unknown."""
        rows = self._query("SELECT * FROM packages WHERE arn = ?", (arn,))
        if not rows:
            raise BackendError(f"no model package {arn!r}")
        return self._package(rows[0])

    def update_approval(self, arn: str, status: ApprovalStatus, description: str) -> ModelPackage:
        """Set the approval status with a description of who changed it and why."""
        status = ApprovalStatus(status)
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE packages SET approval_status = ?, approval_description = ? WHERE arn = ?",
                (status.value, description, arn),
            )
            if cursor.rowcount == 0:
                raise BackendError(f"no model package {arn!r}")
        logger.info("package=<%s>, status=<%s> | approval updated", arn, status.value)
        return self.get_package(arn)

    # -- endpoints -----------------------------------------------------------------------------------------
    def deploy_endpoint(self, name: str, variants: list[VariantSpec]) -> EndpointState:
        """Create the endpoint, or update it to exactly these variants; return once InService."""
        validate_endpoint_spec(name, variants)
        now = time.time()
        with self._write() as conn:
            conn.execute(
                "INSERT INTO endpoints (name, status, updated_at) VALUES (?, 'InService', ?) "
                "ON CONFLICT(name) DO UPDATE SET status = 'InService', updated_at = excluded.updated_at",
                (name, now),
            )
            conn.execute("DELETE FROM variants WHERE endpoint = ?", (name,))
            conn.executemany(
                "INSERT INTO variants VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        name,
                        v.name,
                        i,
                        v.model.model_dump_json(),
                        v.package_arn,
                        v.initial_weight,
                        v.initial_weight,
                        int(v.shadow),
                        v.shadow_sample_percent,
                        v.faults.model_dump_json(),
                    )
                    for i, v in enumerate(variants)
                ],
            )
            self._bump_revision(conn)
        logger.info("endpoint=<%s>, variants=<%s> | deployed", name, ",".join(v.name for v in variants))
        state = self.describe_endpoint(name)
        assert state is not None
        return state

    @staticmethod
    def _bump_revision(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE endpoint_revision SET revision = revision + 1 WHERE id = 1")

    def endpoint_revision(self) -> int:
        """A counter that changes whenever any endpoint changes (the runtime polls it)."""
        (row,) = self._query("SELECT revision FROM endpoint_revision WHERE id = 1")
        return int(row[0])

    def _endpoints(self, where: str, params: Sequence[Any]) -> list[EndpointState]:
        with self._db_lock:
            endpoints = list(self._conn.execute(f"SELECT * FROM endpoints {where} ORDER BY name", params))
            variant_rows = list(self._conn.execute("SELECT * FROM variants ORDER BY endpoint, ordinal"))
        by_endpoint: dict[str, list[VariantState]] = {}
        for r in variant_rows:
            by_endpoint.setdefault(r["endpoint"], []).append(
                VariantState(
                    name=r["name"],
                    model=ModelSpec.model_validate_json(r["model_json"]),
                    package_arn=r["package_arn"],
                    current_weight=r["current_weight"],
                    desired_weight=r["desired_weight"],
                    shadow=bool(r["shadow"]),
                    shadow_sample_percent=r["shadow_sample_percent"],
                    faults=FaultSpec.model_validate_json(r["faults_json"]),
                )
            )
        return [
            EndpointState(
                name=e["name"],
                status=e["status"],
                variants=tuple(by_endpoint.get(e["name"], ())),
                updated_at=e["updated_at"],
            )
            for e in endpoints
        ]

    def describe_endpoint(self, name: str) -> EndpointState | None:
        """Current state, or None when there is no such endpoint."""
        found = self._endpoints("WHERE name = ?", (name,))
        return found[0] if found else None

    def list_endpoints(self) -> list[EndpointState]:
        """Every endpoint this backend manages."""
        return self._endpoints("", ())

    def update_weights(self, name: str, weights: Mapping[str, float]) -> EndpointState:
        """UpdateEndpointWeightsAndCapacities: validated (known names, >= 0, at least one > 0).

        Variants not named keep their weight. The local runtime applies weights at once, so the current and
        desired weights are equal afterwards.
        """
        with self._write() as conn:
            state = self._endpoints_in_tx(conn, name)
            merged = validate_weights(state, weights)
            conn.executemany(
                "UPDATE variants SET current_weight = ?, desired_weight = ? WHERE endpoint = ? AND name = ?",
                [(w, w, name, variant) for variant, w in merged.items()],
            )
            conn.execute("UPDATE endpoints SET updated_at = ? WHERE name = ?", (time.time(), name))
            self._bump_revision(conn)
        logger.info("endpoint=<%s>, weights=<%s> | weights updated", name, canonical_json(merged))
        new_state = self.describe_endpoint(name)
        assert new_state is not None
        return new_state

    def _endpoints_in_tx(self, conn: sqlite3.Connection, name: str) -> EndpointState:
        # Inside a transaction already holding _db_lock (RLock), so _endpoints can re-enter it.
        del conn
        found = self._endpoints("WHERE name = ?", (name,))
        if not found:
            raise BackendError(f"no endpoint {name!r}")
        return found[0]

    def set_faults(self, name: str, variant: str, faults: FaultSpec) -> EndpointState:
        """Change the faults the runtime injects into one variant (rollback drills, tests)."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE variants SET faults_json = ? WHERE endpoint = ? AND name = ?",
                (faults.model_dump_json(), name, variant),
            )
            if cursor.rowcount == 0:
                raise BackendError(f"endpoint {name!r} has no variant {variant!r}")
            self._bump_revision(conn)
        state = self.describe_endpoint(name)
        assert state is not None
        return state

    def delete_endpoint(self, name: str) -> None:
        """Delete the endpoint (no error when absent)."""
        with self._write() as conn:
            conn.execute("DELETE FROM endpoints WHERE name = ?", (name,))
            self._bump_revision(conn)
        logger.info("endpoint=<%s> | deleted", name)

    # -- invocation metrics ----------------------------------------------------------------------------
    def record_invocations(self, records: Iterable[InvocationRecord]) -> int:
        """Store a batch of invocation records (the runtime flushes its buffer here); returns the count."""
        rows = [
            (r.endpoint, r.variant, r.at, r.status, r.model_latency_ms, r.overhead_latency_ms, int(r.shadow))
            for r in records
        ]
        if rows:
            with self._write() as conn:
                conn.executemany(
                    "INSERT INTO invocations (endpoint, variant, at, status, model_latency_ms, "
                    "overhead_latency_ms, shadow) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
        return len(rows)

    def most_in_flight(self, name: str, since: float, variant: str | None = None) -> tuple[int, int]:
        """(most calls served at once, calls recorded) for endpoint ``name`` since the epoch time ``since``.

        Read from the runtime's invocation records (``variant`` only, when given; shadow copies left out):
        each call ends at ``at`` and lasted its model plus overhead latency, from the request's arrival to
        the last byte of the answer. This is the endpoint's own view of a client's concurrency. The runtime
        flushes its records about every half second: a caller expecting N calls polls until N are in.
        """
        calls = self.call_windows(name, since, variant)
        return call_timeline(calls, slots=1).most_in_flight, len(calls)

    def call_timeline(self, name: str, since: float, slots: int, variant: str | None = None) -> CallTimeline:
        """How the calls to endpoint ``name`` since ``since`` filled ``slots`` (see :mod:`.call_timeline`);
        the same records as :meth:`most_in_flight`."""
        return call_timeline(self.call_windows(name, since, variant), slots)

    def call_windows(self, name: str, since: float, variant: str | None = None) -> list[tuple[float, float]]:
        """``(start, end)`` in epoch seconds of each call to endpoint ``name`` that ended at or after
        ``since`` (``variant`` only, when given; shadow copies left out), from the invocation records."""
        query = (
            "SELECT at, model_latency_ms, overhead_latency_ms FROM invocations "
            "WHERE endpoint = ? AND at >= ? AND shadow = 0"
        )
        params: tuple[Any, ...] = (name, since)
        if variant is not None:
            query += " AND variant = ?"
            params += (variant,)
        windows: list[tuple[float, float]] = []
        for r in self._query(query, params):
            took_s = ((r["model_latency_ms"] or 0.0) + (r["overhead_latency_ms"] or 0.0)) / 1000.0
            windows.append((r["at"] - took_s, r["at"]))
        return windows

    def variant_metrics(self, name: str, since: float) -> dict[str, VariantMetrics]:
        """Per-variant metrics for invocations at or after the epoch time ``since``.

        Every deployed variant appears (with zero counts when idle); the runtime flushes its records about
        every half second, so the newest calls may take that long to show. Asked again with the same
        ``since`` (a bake's looks), only the rows written since the last call are read
        (:class:`~agent_release.pipelines.invocation_window.InvocationWindow`).
        """
        columns = "id, endpoint, variant, at, status, model_latency_ms, overhead_latency_ms, shadow"
        with self._windows_lock:
            window = self._windows.get(name)
            if window is None or window.since != since:
                window = self._windows[name] = InvocationWindow(name, since)
                rows = self._query(
                    f"SELECT {columns} FROM invocations WHERE endpoint = ? AND at >= ?", (name, since)
                )
            else:
                # From the last rowid read (rowids grow in commit order); the unary + keeps SQLite off the
                # (endpoint, at) index, which would walk every row since ``since`` again.
                rows = self._query(
                    f"SELECT {columns} FROM invocations WHERE id > ? AND +endpoint = ? AND +at >= ?",
                    (window.last_id, name, since),
                )
            window.add(
                (
                    r["id"],
                    InvocationRecord(
                        r["endpoint"],
                        r["variant"],
                        r["at"],
                        r["status"],
                        r["model_latency_ms"],
                        r["overhead_latency_ms"],
                        bool(r["shadow"]),
                    ),
                )
                for r in rows
            )
            state = self.describe_endpoint(name)
            return window.metrics(v.name for v in state.variants) if state else window.metrics(())

    # -- runtime -------------------------------------------------------------------------------------------
    def start_runtime(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start the endpoint runtime for this state directory in a background thread; return its URL."""
        if self._runtime is None:
            from agent_release.pipelines.runtime.server import RuntimeServer

            server = RuntimeServer(self.state_dir, host=host, port=port)
            server.start()
            self._runtime = server
        assert self._runtime.url is not None
        return self._runtime.url

    def stop_runtime(self) -> None:
        """Stop the runtime started by :meth:`start_runtime` (no-op when none is running)."""
        if self._runtime is not None:
            self._runtime.stop()
            self._runtime = None

    def runtime_endpoint_url(self) -> str | None:
        """URL of the runtime this backend started, else of a live ``agent-release serve``, else None."""
        if self._runtime is not None:
            return self._runtime.url
        return read_runtime_file(self.state_dir)

    # -- audit ledger --------------------------------------------------------------------------------------
    def append_audit(
        self,
        actor: str,
        action: str,
        subject: str,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
        execution_id: str | None = None,
    ) -> AuditEntry:
        """Append one entry to the hash-chained ledger and return it.

        The head file (seq and hash of the newest entry, kept outside the database so that removing the
        newest entries shows) moves only once the entry is committed: written before the ``COMMIT``, it named
        an entry that an interrupt or a failed commit then rolled back, and every later ``audit verify``
        failed. A head behind the ledger (a crash between the commit and the head's move) is consistent:
        :meth:`verify_audit` checks the entries after it by their chain.
        """
        evidence_json = canonical_json(dict(evidence or {}))
        with self._write() as conn:
            last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            if last is None and not self._audit_head_path().exists():
                # Before the first entry the head names the genesis: a crash right after that entry's commit
                # then leaves a head behind the ledger, never a ledger without its head.
                self._write_audit_head(0, GENESIS_HASH)
            fields: dict[str, Any] = {
                "seq": (last["seq"] + 1) if last else 1,
                "at": time.time(),
                "actor": actor,
                "action": action,
                "subject": subject,
                "reason": reason,
                "evidence": json.loads(evidence_json),
                "execution_id": execution_id,
                "prev_hash": last["hash"] if last else GENESIS_HASH,
            }
            fields["hash"] = audit_hash(fields)
            conn.execute(
                "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    fields["seq"],
                    fields["at"],
                    actor,
                    action,
                    subject,
                    reason,
                    evidence_json,
                    execution_id,
                    fields["prev_hash"],
                    fields["hash"],
                ),
            )
        self._advance_audit_head()
        logger.info("actor=<%s>, action=<%s>, subject=<%s> | audit entry appended", actor, action, subject)
        return AuditEntry.model_validate(fields)

    def _advance_audit_head(self) -> None:
        """Point the head file at the newest committed entry.

        Under the database's write lock, as appends are: two processes' heads then land in the order of
        their entries, and neither can put an older head over a newer one.
        """
        try:
            with self._write() as conn:
                last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                if last is not None:
                    self._write_audit_head(last["seq"], last["hash"])
        except OSError as exc:
            # The entry is recorded; failing the append now would report as undone what was done.
            logger.warning(
                "path=<%s>, error=<%s> | the ledger's head was not moved; `audit verify` checks the newer "
                "entries by their chain",
                self._audit_head_path(),
                exc,
            )

    def _audit_head_path(self) -> Path:
        return self.state_dir / state_db.AUDIT_HEAD_FILE

    def _write_audit_head(self, seq: int, digest: str) -> None:
        tmp = self._audit_head_path().with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"seq": seq, "hash": digest}))
            os.replace(tmp, self._audit_head_path())
        except OSError:
            with suppress(OSError):
                tmp.unlink()
            raise

    def list_audit(self) -> list[AuditEntry]:
        """The whole ledger, oldest first.

        An entry whose stored evidence is not a JSON object (the database was edited or damaged) is listed
        with ``{DAMAGED_EVIDENCE_KEY: <the stored text>}`` as its evidence; :meth:`verify_audit` reports it.
        """
        return [entry for entry, _ in self._audit_entries()]

    def _audit_entries(self) -> list[tuple[AuditEntry, str | None]]:
        """Every ledger entry with why its evidence is unreadable (None when it reads)."""
        entries: list[tuple[AuditEntry, str | None]] = []
        # A read-only look (state_db.read_only) at a database no backend has written yet has no audit table.
        no_rows: list[sqlite3.Row] = []
        rows = state_db.unless_table_missing(lambda: self._query("SELECT * FROM audit ORDER BY seq"), no_rows)
        for r in rows:
            evidence, damage = read_evidence(r["evidence_json"])
            entry = AuditEntry(
                seq=r["seq"],
                at=r["at"],
                actor=r["actor"],
                action=r["action"],
                subject=r["subject"],
                reason=r["reason"],
                evidence=evidence,
                execution_id=r["execution_id"],
                prev_hash=r["prev_hash"],
                hash=r["hash"],
            )
            entries.append((entry, damage))
        return entries

    def verify_audit(self) -> list[str]:
        """Problems found in the ledger (empty when intact): edited, removed, reordered, truncated entries.

        The head file is read before the entries, and entries after the one it names are checked by their
        chain only: another process may append (entry first, head after its commit) while this reads, so a
        ledger ahead of its head is consistent; one that ends before the head, or whose entry at the head's
        seq has another hash, is not.
        """
        problems: list[str] = []
        head_path = self._audit_head_path()
        head: Any = None
        head_damage: str | None = None
        head_exists = head_path.exists()
        if head_exists:
            try:
                head = json.loads(head_path.read_text())
                if not isinstance(head, dict) or "seq" not in head or "hash" not in head:
                    raise KeyError("seq and hash are required")
                if type(head["seq"]) is not int or head["seq"] < 0 or not isinstance(head["hash"], str):
                    raise TypeError("seq must be a whole number of at least 0 and hash a string")
            except (ValueError, TypeError, KeyError) as exc:
                head_damage = f"{type(exc).__name__}: {exc}"
        prev = GENESIS_HASH
        checked = self._audit_entries()
        entries = [entry for entry, _ in checked]
        expected_seq = 1
        for entry, damage in checked:
            gap = missing_entries(expected_seq, entry.seq)
            if gap is not None:
                problems.append(gap)
            expected_seq = entry.seq + 1
            fields = entry.model_dump(mode="json")
            if damage is not None:
                problems.append(f"entry {entry.seq} is damaged or was edited: {damage}")
            elif audit_hash(fields) != entry.hash:
                problems.append(f"entry {entry.seq} was edited (its hash does not match its content)")
            # After a gap the chain is broken by the removal just named; saying so again would mislead.
            if gap is None and entry.prev_hash != prev:
                problems.append(
                    f"entry {entry.seq} does not follow the entry before it (removed or reordered)"
                )
            prev = entry.hash
        if head_damage is not None:
            problems.append(f"the ledger's recorded head {head_path} is damaged ({head_damage})")
        elif head_exists:
            problem = head_mismatch(head["seq"], head["hash"], [(e.seq, e.hash) for e in entries])
            if problem is not None:
                problems.append(problem)
        elif entries:
            problems.append("the ledger's recorded head (audit-head.json) is missing")
        return problems

    # -- locks ---------------------------------------------------------------------------------------------
    @contextmanager
    def lock(self, name: str, owner: str) -> Iterator[None]:
        """Exclusive named lock across processes; raises :class:`LockBusyError` at once when held elsewhere.

        A file lock (``locks/<name>.lock``): the OS releases it when the holder dies, so no stale locks.
        """
        lock_dir = self.state_dir / "locks"
        if lock_dir.exists() and not lock_dir.is_dir():
            # mkdir would say "[Errno 17] File exists", which does not say what is wrong or what to do.
            raise NotADirectoryError(
                20,
                f"{lock_dir} is not a directory (it holds the state's file locks): move it aside",
                str(lock_dir),
            )
        lock_dir.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        holder_file = lock_dir / f"{safe}.holder"
        # thread_local=False + not reentrant semantics across instances: each call opens its own lock file
        # descriptor, and flock() conflicts between descriptors even inside one process.
        file_lock = FileLock(lock_dir / f"{safe}.lock", thread_local=False)
        try:
            file_lock.acquire(timeout=0)
        except Timeout:
            holder = holder_file.read_text().strip() if holder_file.exists() else "unknown"
            raise LockBusyError(f"lock {name!r} is held by {holder}; retry when it has finished") from None
        try:
            pid = f"pid {os.getpid()}"
            since = f"since {time.strftime('%Y-%m-%dT%H:%M:%S')}"
            # A run's owner already names its pid ("run pid N"): say it once.
            holder_file.write_text(f"{owner} ({since})" if pid in owner else f"{owner} ({pid}, {since})")
            yield
        finally:
            holder_file.unlink(missing_ok=True)
            file_lock.release()


class LedgerUnverified(RuntimeError):
    """The audit ledger fails verification; ``str()`` is one line naming the first problem."""


def refuse_a_broken_ledger(backend: LocalBackend) -> None:
    """Raise :class:`LedgerUnverified` when ``backend``'s ledger fails ``verify_audit``.

    Called before a command changes anything it records in the ledger (``run``, ``promote``, ``rollback``):
    its append would write a new head over a ledger with an entry removed or edited, and ``audit verify``
    would then call the result intact.
    """
    problems = backend.verify_audit()
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise LedgerUnverified(
            f"the audit ledger fails verification: {problems[0]}{more}; nothing was changed, since it would "
            "extend that ledger (see `agent-release audit verify`; restore the state directory from a backup)"
        )


def write_runtime_file(state_dir: Path, url: str) -> None:
    """Record a running runtime's URL so other processes on this state directory can find it."""
    path = state_dir / RUNTIME_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    os.replace(tmp, path)


def remove_runtime_file(state_dir: Path, url: str) -> None:
    """Remove the runtime file if it still names ``url``."""
    path = state_dir / RUNTIME_FILE
    try:
        if json.loads(path.read_text()).get("url") == url:
            path.unlink()
    except (OSError, ValueError):
        pass


def read_runtime_file(state_dir: Path) -> str | None:
    """URL of a live runtime recorded in ``state_dir``, or None (missing file or dead process)."""
    try:
        info = json.loads((state_dir / RUNTIME_FILE).read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    url = info.get("url")
    return url if isinstance(url, str) else None
