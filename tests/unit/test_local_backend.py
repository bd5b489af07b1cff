"""LocalBackend: registry, endpoints, metrics, hash-chained audit ledger and cross-process locks."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent_release.pipelines.local_backend import InvocationRecord, LocalBackend
from agent_release.steps.backend import (
    ApprovalStatus,
    Backend,
    BackendError,
    FaultSpec,
    LockBusyError,
    ModelSpec,
    VariantSpec,
)

MODEL = ModelSpec(kind="python", options={"class_path": "pkg.mod:Model"})


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path)


def test_implements_the_backend_protocol(backend: LocalBackend) -> None:
    assert isinstance(backend, Backend)


def test_registry_numbers_versions_and_records_approvals(backend: LocalBackend) -> None:
    assert backend.list_packages("support") == []
    with pytest.raises(BackendError, match="does not exist"):
        backend.register_package("support", MODEL)
    backend.ensure_package_group("support", "support agent models")
    backend.ensure_package_group("support")  # idempotent
    first = backend.register_package("support", MODEL, metadata={"git": "abc"}, metrics={"accuracy": 0.9})
    second = backend.register_package("support", MODEL.model_copy(update={"artifact_uri": "s3://x"}))
    assert (first.version, second.version) == (1, 2)
    assert first.approval_status == ApprovalStatus.PENDING
    assert first.arn != second.arn
    approved = backend.update_approval(first.arn, ApprovalStatus.APPROVED, "alice: passed evaluation run 7")
    assert approved.approval_status == ApprovalStatus.APPROVED
    assert approved.approval_description == "alice: passed evaluation run 7"
    # A second backend object (another process's view) reads the same registry.
    again = LocalBackend(backend.state_dir).list_packages("support")
    assert [(p.version, p.approval_status) for p in again] == [(1, "Approved"), (2, "PendingManualApproval")]
    assert again[0].metadata == {"git": "abc"} and again[0].metrics == {"accuracy": 0.9}
    assert backend.get_package(second.arn).model.artifact_uri == "s3://x"
    with pytest.raises(BackendError):
        backend.get_package("arn:nope")
    with pytest.raises(BackendError):
        backend.update_approval("arn:nope", ApprovalStatus.REJECTED, "x")


def test_endpoint_lifecycle_and_weight_validation(backend: LocalBackend) -> None:
    assert backend.describe_endpoint("ep") is None
    revision = backend.endpoint_revision()
    state = backend.deploy_endpoint(
        "ep",
        [
            VariantSpec(name="a", model=MODEL, initial_weight=1.0, package_arn="arn:1"),
            VariantSpec(name="b", model=MODEL, initial_weight=0.0, faults=FaultSpec(added_latency_ms=5)),
        ],
    )
    assert state.status == "InService"
    assert [(v.name, v.current_weight, v.desired_weight) for v in state.variants] == [
        ("a", 1, 1),
        ("b", 0, 0),
    ]
    assert state.variant("b").faults.added_latency_ms == 5
    assert backend.endpoint_revision() > revision

    updated = backend.update_weights("ep", {"b": 3.0})
    assert updated.traffic_shares() == {"a": 0.25, "b": 0.75}
    for bad, message in [
        ({"zzz": 1.0}, "no variant zzz"),
        ({"a": -1.0}, ">= 0"),
        ({"a": float("nan")}, ">= 0"),
        ({"a": 0.0, "b": 0.0}, "at least one"),
    ]:
        with pytest.raises(BackendError, match=message):
            backend.update_weights("ep", bad)
    assert backend.describe_endpoint("ep") == updated  # failed updates change nothing
    with pytest.raises(BackendError):
        backend.update_weights("missing", {"a": 1.0})

    redeployed = backend.deploy_endpoint("ep", [VariantSpec(name="c", model=MODEL, initial_weight=2.0)])
    assert [v.name for v in redeployed.variants] == ["c"]
    assert [e.name for e in backend.list_endpoints()] == ["ep"]
    backend.delete_endpoint("ep")
    backend.delete_endpoint("ep")
    assert backend.describe_endpoint("ep") is None


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([], "at least one variant"),
        ([VariantSpec(name="a", model=MODEL, initial_weight=0.0)], "weight > 0"),
        ([VariantSpec(name="a", model=MODEL, initial_weight=1.0)] * 2, "duplicate"),
    ],
)
def test_deploy_rejects_bad_variant_sets(
    backend: LocalBackend, variants: list[VariantSpec], message: str
) -> None:
    with pytest.raises(BackendError, match=message):
        backend.deploy_endpoint("ep", variants)


def test_variant_metrics_aggregate_recorded_invocations(backend: LocalBackend) -> None:
    backend.deploy_endpoint(
        "ep",
        [
            VariantSpec(name="a", model=MODEL, initial_weight=1.0),
            VariantSpec(name="idle", model=MODEL, initial_weight=0.0),
        ],
    )
    now = time.time()
    records = [InvocationRecord("ep", "a", now - 100, 200, 50.0, 1.0, False)]  # before the window
    records += [InvocationRecord("ep", "a", now + i, 200, float(i + 1), 0.5, False) for i in range(100)]
    records += [
        InvocationRecord("ep", "a", now + 200, 500, 3.0, 0.5, False),
        InvocationRecord("ep", "a", now + 201, 400, None, 0.2, False),
    ]
    backend.record_invocations(records)
    metrics = backend.variant_metrics("ep", since=now)
    idle = metrics["idle"]
    assert (idle.invocations, idle.errors_4xx, idle.errors_5xx) == (0, 0, 0)
    assert idle.model_latency_ms_p50 is None
    a = metrics["a"]
    assert (a.invocations, a.errors_4xx, a.errors_5xx) == (102, 1, 1)
    # Linear interpolation over the 100 answered calls' latencies 1..100 (the 5xx's 3.0 is not among them).
    assert a.model_latency_ms_p50 == pytest.approx(50.5)
    assert a.model_latency_ms_p95 == pytest.approx(95.05)
    assert a.model_latency_ms_p99 == pytest.approx(99.01)
    assert a.overhead_latency_ms_p50 == pytest.approx(0.5)
    assert a.outcomes[-2:] == (False, True)
    assert a.latencies_ms[:3] == (1.0, 2.0, 3.0)


def test_a_bakes_repeated_looks_read_only_the_new_invocations(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Session 21: each look of a bake (every 0.5 s) read and summarised every call since the bake began:
    # 0.31-0.57 s per look at 99,000 calls. Asked again with the same ``since``, the backend now reads only the
    # rows written since its last answer, and answers what a full read would.
    backend.deploy_endpoint(
        "ep",
        [
            VariantSpec(name="a", model=MODEL, initial_weight=0.9),
            VariantSpec(name="b", model=MODEL, initial_weight=0.1),
        ],
    )
    now = time.time()
    rows_read: list[int] = []
    real_query = backend._query

    def counting_query(sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        rows = real_query(sql, params)
        if "FROM invocations" in sql:
            rows_read.append(len(rows))
        return rows

    monkeypatch.setattr(backend, "_query", counting_query)

    def calls(start: int, n: int, at: float | None = None) -> list[InvocationRecord]:
        return [
            InvocationRecord(
                "ep", "ab"[i % 2], now + (at if at is not None else i), 500 if i % 7 == 0 else 200, i % 40 + 1.0,
                0.5, False,
            )
            for i in range(start, start + n)
        ]  # fmt: skip

    def full_read(since: float) -> dict[str, object]:
        return dict(LocalBackend(backend.state_dir).variant_metrics("ep", since=since))

    backend.record_invocations([InvocationRecord("ep", "a", now - 5, 200, 9.0, 0.5, False), *calls(0, 200)])
    assert backend.variant_metrics("ep", since=now) == full_read(now)
    backend.record_invocations(calls(200, 5))
    assert backend.variant_metrics("ep", since=now) == full_read(now)
    assert backend.variant_metrics("ep", since=now) == full_read(now)  # nothing new
    assert rows_read == [200, 5, 0]
    # A call stamped before the newest one read but written after it still lands in time order.
    backend.record_invocations(calls(205, 1, at=10.5))
    assert backend.variant_metrics("ep", since=now) == full_read(now)
    # Another window (the next bake) starts with a full read.
    backend.record_invocations(calls(206, 3))
    assert backend.variant_metrics("ep", since=now + 100) == full_read(now + 100)
    assert rows_read[3:] == [1, 108]


def test_a_bake_that_looks_before_the_first_call_ever_still_counts_it(backend: LocalBackend) -> None:
    # The window's first look finds no row on a new state database; its next look reads the rows after the
    # last one read, so the very first call recorded (rowid 1) must not count as read already.
    backend.deploy_endpoint("ep", [VariantSpec(name="a", model=MODEL, initial_weight=1.0)])
    now = time.time()
    assert backend.variant_metrics("ep", since=now)["a"].invocations == 0
    backend.record_invocations([InvocationRecord("ep", "a", now + 1, 200, 10.0, 0.5, False)])
    assert backend.variant_metrics("ep", since=now)["a"].invocations == 1


def test_most_in_flight_overlaps_calls_from_their_records(backend: LocalBackend) -> None:
    now = time.time()

    def call(
        variant: str, start: float, model_ms: float, overhead_ms: float = 0.0, shadow: bool = False
    ) -> InvocationRecord:
        end = now + start + (model_ms + overhead_ms) / 1000.0
        return InvocationRecord("ep", variant, end, 200, model_ms, overhead_ms, shadow)

    backend.record_invocations(
        [
            call("a", 0.0, 1000.0),  # 0.0-1.0 s
            call("a", 0.2, 500.0, 100.0),  # 0.2-0.8 s, overhead counted
            call("a", 0.5, 100.0),  # 0.5-0.6 s: three at once
            call("a", 1.0, 100.0),  # 1.0-1.1 s, after the three
            call("b", 0.3, 1000.0),  # another variant
            call("a", 0.4, 1000.0, shadow=True),  # a shadow copy is not a client's call
            InvocationRecord("ep", "a", now - 10, 200, 5000.0, 0.0, False),  # ended before the window
        ]
    )
    assert backend.most_in_flight("ep", since=now, variant="a") == (3, 4)
    assert backend.most_in_flight("ep", since=now) == (4, 5)
    assert backend.most_in_flight("other", since=now) == (0, 0)


def test_audit_chain_appends_and_verifies(backend: LocalBackend) -> None:
    first = backend.append_audit(
        "pipeline", "deploy", "ep", "new challenger", {"weights": {"a": 1.0}}, "exec-1"
    )
    second = backend.append_audit("alice", "promote", "challenger", "CI above margin", {"delta": 0.04})
    assert first.prev_hash == "0" * 64 and second.prev_hash == first.hash
    assert [e.seq for e in backend.list_audit()] == [1, 2]
    assert backend.list_audit()[0] == first
    assert backend.verify_audit() == []


def _tamper(backend: LocalBackend, sql: str) -> None:
    conn = sqlite3.connect(backend.state_dir / "state.db")
    conn.executescript(sql)
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("UPDATE audit SET reason = 'nothing to see' WHERE seq = 2", "entry 2 was edited"),
        ("UPDATE audit SET evidence_json = '{\"delta\":0.5}' WHERE seq = 2", "entry 2 was edited"),
        ("DELETE FROM audit WHERE seq = 2", "entry 2 is missing"),
        ("DELETE FROM audit WHERE seq = 3", "recorded head is entry 3"),
        (
            "UPDATE audit SET seq = 100 WHERE seq = 1; UPDATE audit SET seq = 1 WHERE seq = 2; "
            "UPDATE audit SET seq = 2 WHERE seq = 100",
            "entry 1 was edited",
        ),
    ],
)
def test_audit_verify_detects_tampering(backend: LocalBackend, sql: str, expected: str) -> None:
    for i in range(3):
        backend.append_audit("pipeline", "step", f"s{i}", "r", {"delta": i / 100})
    assert backend.verify_audit() == []
    _tamper(backend, sql)
    problems = backend.verify_audit()
    assert any(expected in p for p in problems), problems


def _append_many(state_dir: str, count: int) -> None:
    appender = LocalBackend(Path(state_dir))
    for i in range(count):
        appender.append_audit("pipeline", "weights", "other-endpoint/challenger", f"step {i}", {"percent": i})
    appender.close()


def test_audit_verify_while_another_process_appends_finds_nothing(backend: LocalBackend) -> None:
    # verify read the entries, then the head; an append between the two (or one whose head was written
    # before its commit) read as "ledger ends at entry N but its recorded head is entry N+1", and that
    # refused `rollback` while any other pipeline was writing to the ledger.
    backend.append_audit("pipeline", "weights", "support/challenger", "seed")
    appender = multiprocessing.get_context("spawn").Process(
        target=_append_many, args=(str(backend.state_dir), 150)
    )
    appender.start()
    problems: list[str] = []
    checks = 0
    while appender.is_alive() or checks == 0:
        problems.extend(backend.verify_audit())
        checks += 1
    appender.join(60)
    assert appender.exitcode == 0
    assert len(backend.list_audit()) == 151
    assert problems == [], f"{len(problems)} false alarms in {checks} checks: {problems[:3]}"


def test_an_interrupt_after_the_head_moved_leaves_a_ledger_that_verifies(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The head was written inside the append's transaction: an interrupt after it (SIGTERM is raised as
    # KeyboardInterrupt) rolled the entry back but left the head naming it, and every later verify, so
    # every later rollback, promote and run, failed.
    backend.append_audit("pipeline", "weights", "support/challenger", "first")
    real_write = backend._write_audit_head

    def write_then_interrupt(seq: int, digest: str) -> None:
        real_write(seq, digest)
        raise KeyboardInterrupt("signal 15")

    monkeypatch.setattr(backend, "_write_audit_head", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        backend.append_audit("pipeline", "rollback", "support/challenger", "second")
    monkeypatch.undo()
    assert [e.reason for e in backend.list_audit()] == ["first", "second"]
    assert backend.verify_audit() == []


def test_a_head_left_behind_by_a_crash_verifies_until_entries_it_named_are_removed(
    backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = backend.state_dir / "audit-head.json"
    # Killed between the first entry's commit and the head's move: the genesis head written before it.
    monkeypatch.setattr(backend, "_advance_audit_head", lambda: None)
    backend.append_audit("pipeline", "weights", "support/challenger", "first")
    assert json.loads(head.read_text()) == {"seq": 0, "hash": "0" * 64}
    assert backend.verify_audit() == []
    monkeypatch.undo()
    for reason in ("second", "third"):
        backend.append_audit("pipeline", "weights", "support/challenger", reason)
    assert json.loads(head.read_text())["seq"] == 3
    _tamper(backend, "DELETE FROM audit WHERE seq = 3")
    assert backend.verify_audit() == ["ledger ends at entry 2 but its recorded head is entry 3"]
    head.write_text(json.dumps({"seq": 2, "hash": "f" * 64}))
    assert backend.verify_audit() == [
        "entry 2 is not the entry the ledger's recorded head names (replaced or edited)"
    ]
    head.write_text(json.dumps({"seq": "2", "hash": "f" * 64}))
    assert backend.verify_audit() == [
        f"the ledger's recorded head {head} is damaged "
        "(TypeError: seq must be a whole number of at least 0 and hash a string)"
    ]


def _hold_lock(
    state_dir: str, ready: multiprocessing.synchronize.Event, release: multiprocessing.synchronize.Event
) -> None:
    backend = LocalBackend(Path(state_dir))
    with backend.lock("promote", "bob@laptop"):
        ready.set()
        release.wait(20)


def test_lock_is_exclusive_across_processes_and_names_the_holder(backend: LocalBackend) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(backend.state_dir), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(LockBusyError, match="bob@laptop"), backend.lock("promote", "alice"):
            pass
        with backend.lock("other-lock", "alice"):  # other names are independent
            pass
    finally:
        release.set()
        holder.join(30)
    other = LocalBackend(backend.state_dir)
    with (
        backend.lock("promote", "alice"),
        pytest.raises(LockBusyError, match="alice"),
        other.lock("promote", "c"),
    ):
        pass


def test_a_busy_lock_names_the_holder_once_and_says_what_to_do(backend: LocalBackend) -> None:
    pid = os.getpid()
    with (
        backend.lock("endpoint:e", f"run pid {pid}"),
        pytest.raises(LockBusyError) as info,
        LocalBackend(backend.state_dir).lock("endpoint:e", "alice"),
    ):
        pass
    message = str(info.value)
    # It used to read "held by run pid N (pid N, since ...)" and stop there.
    assert message.startswith(f"lock 'endpoint:e' is held by run pid {pid} (since ")
    assert message.count(f"pid {pid}") == 1 and message.endswith("; retry when it has finished")


def test_runtime_url_is_found_through_the_state_dir(backend: LocalBackend) -> None:
    assert backend.runtime_endpoint_url() is None
    url = backend.start_runtime()
    try:
        assert url.startswith("http://127.0.0.1:")
        assert LocalBackend(backend.state_dir).runtime_endpoint_url() == url
        assert json.loads((backend.state_dir / "runtime.json").read_text())["url"] == url
    finally:
        backend.stop_runtime()
    assert backend.runtime_endpoint_url() is None


def test_a_removed_middle_entry_is_named_once_and_the_entries_after_it_are_not_called_missing(
    backend: LocalBackend,
) -> None:
    # It reported entry 4 of 1, 2, 4, 5 as missing too, and entry 4 as not following its predecessor.
    for i in range(5):
        backend.append_audit("pipeline", "step", f"s{i}", "r", {"delta": i / 100})
    _tamper(backend, "DELETE FROM audit WHERE seq = 3")
    assert backend.verify_audit() == ["entry 3 is missing (next entry found is 4)"]
    _tamper(backend, "DELETE FROM audit WHERE seq = 2")
    assert backend.verify_audit() == ["entries 2-3 are missing (next entry found is 4)"]


def test_a_file_where_the_locks_directory_belongs_is_named(backend: LocalBackend) -> None:
    # mkdir said "[Errno 17] File exists: '.../locks'", which says neither what is wrong nor what to do.
    locks = backend.state_dir / "locks"
    if locks.is_dir():
        locks.rmdir()
    locks.write_text("not a directory")
    with (
        pytest.raises(
            NotADirectoryError, match=r"locks is not a directory \(it holds the state's file locks\)"
        ) as info,
        backend.lock("endpoint:support", "bob"),
    ):
        pass
    assert (info.value.errno, info.value.filename) == (errno.ENOTDIR, str(locks))


def test_weight_updates_and_deletions_move_the_revision_a_running_runtime_polls(
    backend: LocalBackend,
) -> None:
    # The runtime polls endpoint_revision() to notice changes: a weight change it missed would keep sending
    # traffic by the old weights while the ledger said otherwise, a deletion it missed keep serving.
    deployed = backend.deploy_endpoint(
        "ep",
        [
            VariantSpec(name="a", model=MODEL, initial_weight=1.0),
            VariantSpec(name="b", model=MODEL, initial_weight=0.0),
        ],
    )
    revision = backend.endpoint_revision()
    updated = backend.update_weights("ep", {"b": 1.0})
    assert backend.endpoint_revision() > revision
    assert updated.updated_at > deployed.updated_at
    revision = backend.endpoint_revision()
    backend.delete_endpoint("ep")
    assert backend.endpoint_revision() > revision


def test_faults_change_one_variant_of_one_endpoint(backend: LocalBackend) -> None:
    # The rollback drills break the challenger of one endpoint; a variant of the same name elsewhere keeps
    # answering, and the runtime notices the change (the revision moves).
    for endpoint in ("ep", "other"):
        backend.deploy_endpoint(
            endpoint,
            [
                VariantSpec(name="champion", model=MODEL, initial_weight=1.0),
                VariantSpec(name="challenger", model=MODEL, initial_weight=0.0),
            ],
        )
    revision = backend.endpoint_revision()
    state = backend.set_faults("ep", "challenger", FaultSpec(error_rate=0.5))
    assert backend.endpoint_revision() > revision
    assert state == backend.describe_endpoint("ep")
    assert [(v.name, v.faults.error_rate) for v in state.variants] == [("champion", 0.0), ("challenger", 0.5)]
    other = backend.describe_endpoint("other")
    assert other is not None and [v.faults for v in other.variants] == [FaultSpec(), FaultSpec()]
    with pytest.raises(BackendError, match=r"^endpoint 'ep' has no variant 'blue'$"):
        backend.set_faults("ep", "blue", FaultSpec(hang=True))
    with pytest.raises(BackendError, match=r"^endpoint 'gone' has no variant 'champion'$"):
        backend.set_faults("gone", "champion", FaultSpec(hang=True))


def test_an_approval_status_may_be_given_by_its_aws_spelling_and_an_unknown_one_changes_nothing(
    backend: LocalBackend,
) -> None:
    backend.ensure_package_group("support")
    package = backend.register_package("support", MODEL)
    rejected = backend.update_approval(package.arn, "Rejected", "alice: guard rollback")  # type: ignore[arg-type]
    assert rejected.approval_status is ApprovalStatus.REJECTED
    with pytest.raises(ValueError, match="'approved' is not a valid ApprovalStatus"):
        backend.update_approval(package.arn, "approved", "bob")  # type: ignore[arg-type]
    assert backend.get_package(package.arn).approval_description == "alice: guard rollback"


def test_a_released_lock_leaves_no_holder_named(backend: LocalBackend) -> None:
    # The holder file names who holds the lock for a contender's error: once released, it must not name a
    # holder that has gone (a contender racing the next holder's write would blame the previous one).
    with backend.lock("endpoint:e", "alice"):
        assert [p.name for p in (backend.state_dir / "locks").glob("*.holder")] == ["endpoint_e.holder"]
    assert list((backend.state_dir / "locks").glob("*.holder")) == []


@pytest.mark.parametrize(
    ("sql", "first", "more"),
    [
        ("", None, None),
        ("UPDATE audit SET reason = 'x' WHERE seq = 2", "entry 2 was edited", ""),
        ("UPDATE audit SET reason = 'x' WHERE seq IN (1, 2)", "entry 1 was edited", " (+1 more)"),
        ("UPDATE audit SET reason = 'x'", "entry 1 was edited", " (+2 more)"),
    ],
)
def test_a_change_is_refused_on_a_ledger_that_fails_verification_naming_its_first_problem(
    backend: LocalBackend, sql: str, first: str | None, more: str | None
) -> None:
    from agent_release.pipelines.local_backend import LedgerUnverified, refuse_a_broken_ledger

    for i in range(3):
        backend.append_audit("pipeline", "step", f"s{i}", "r")
    _tamper(backend, sql)
    if first is None:
        refuse_a_broken_ledger(backend)  # intact: nothing to refuse
        return
    with pytest.raises(LedgerUnverified) as info:
        refuse_a_broken_ledger(backend)
    assert str(info.value).startswith(
        f"the audit ledger fails verification: {first} (its hash does not match its content){more}; "
        "nothing was changed"
    )


def test_a_busy_lock_fails_at_once_rather_than_waiting(backend: LocalBackend) -> None:
    # A second `run` or `promote` on the endpoint must fail at once (docs/reliability.md: exit 1 after
    # 1.1 s, most of it imports), not wait for the holder.
    with backend.lock("endpoint:e", "alice"):
        started = time.monotonic()
        with pytest.raises(LockBusyError), LocalBackend(backend.state_dir).lock("endpoint:e", "bob"):
            pass
        # Well under a second even on a loaded machine; waiting one second for the holder would exceed it.
        assert time.monotonic() - started < 0.9


def test_a_runtime_file_left_by_a_dead_serve_names_no_runtime(backend: LocalBackend) -> None:
    # `serve` killed with SIGKILL leaves runtime.json behind: its URL must not be handed out as live.
    from agent_release.pipelines.local_backend import read_runtime_file

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    runtime_file = backend.state_dir / "runtime.json"
    runtime_file.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": gone.pid}))
    assert read_runtime_file(backend.state_dir) is None
    assert backend.runtime_endpoint_url() is None
    runtime_file.write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": os.getpid()}))
    assert read_runtime_file(backend.state_dir) == "http://127.0.0.1:9"
