"""A SageMaker ledger object that does not read as an entry (or a damaged head) is reported, never a traceback.

Each test damages the bucket on the moto server over HTTP the way an edit of the S3 objects would: an entry
object (``audit/entries/<seq>.json``) or ``audit/HEAD.json`` rewritten as text that is not JSON, JSON that is not
an object, or an object without the fields of an entry. Reading the ledger still answers: ``list_audit`` lists a
flagged placeholder for the unreadable entry (seq from its key, its text under ``DAMAGED_EVIDENCE_KEY``),
``verify_audit`` names it once, and ``append_audit`` refuses to extend a chain whose newest entry or head is
damaged, writing nothing.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent_release.pipelines.backend_rules import DAMAGED_EVIDENCE_KEY
from agent_release.steps.backend import BackendError

pytestmark = pytest.mark.contract


def _without(*fields: str) -> Any:
    """A damage: the stored entry with ``fields`` removed."""
    return lambda entry: json.dumps({k: v for k, v in entry.items() if k not in fields}).encode("utf-8")


def _with(**values: Any) -> Any:
    """A damage: the stored entry with ``values`` written over its fields."""
    return lambda entry: json.dumps({**entry, **values}).encode("utf-8")


# Rewrites of a stored entry (its fields -> new body) and the start of the reason ``verify_audit`` gives.
ENTRY_DAMAGE: dict[str, tuple[Any, str]] = {
    "not JSON": (lambda _: b'{"seq": 2, "hash": ', "its object is not valid JSON ("),
    "empty": (lambda _: b"", "its object is not valid JSON ("),
    "not UTF-8": (lambda _: b"\xff\x00garbage", "its object is not valid JSON ('utf-8' codec can't decode"),
    "JSON array": (lambda entry: json.dumps(list(entry.values())).encode("utf-8"), "its object is list, not"),
    "JSON null": (lambda _: b"null", "its object is NoneType, not a JSON object"),
    "JSON string": (lambda entry: json.dumps(json.dumps(entry)).encode("utf-8"), "its object is str, not"),
    "no hash": (_without("hash"), "its object lacks or mistypes fields (hash: Field required)"),
    "no seq, prev_hash, action": (
        _without("seq", "prev_hash", "action"),
        "its object lacks or mistypes fields (",
    ),
    "seq not a number": (_with(seq="two"), "its object lacks or mistypes fields (seq: "),
    "unknown field": (_with(signed_by="mallory"), "its object lacks or mistypes fields (signed_by: "),
}

# Rewrites of audit/HEAD.json.
HEAD_DAMAGE: dict[str, bytes] = {
    "not JSON": b'{"seq": 3,',
    "JSON array": b"[3]",
    "no hash": b'{"seq": 3}',
    "seq not a number": b'{"seq": "3", "hash": "abc"}',
}


@pytest.fixture
def backend(sagemaker_backend: Any) -> Any:
    """The SageMaker backend on a fresh moto bucket whose ledger holds entries 1-3."""
    for i in range(3):
        sagemaker_backend.append_audit("pipeline", "weights", f"ep/v{i}", f"step {i}", {"percent": i * 10})
    return sagemaker_backend


def _stored(backend: Any, key: str) -> bytes:
    return bytes(backend.s3.get_object(Bucket=backend.bucket, Key=key)["Body"].read())


def _damage_entry(backend: Any, seq: int, damage: Any) -> None:
    key = backend._audit_entry_key(seq)
    entry = json.loads(_stored(backend, key))
    backend.s3.put_object(Bucket=backend.bucket, Key=key, Body=damage(entry))


def _head_key(backend: Any) -> str:
    return str(backend._key("audit", "HEAD.json"))


def _damage_head(backend: Any, body: bytes) -> None:
    backend.s3.put_object(Bucket=backend.bucket, Key=_head_key(backend), Body=body)


def _snapshot(backend: Any) -> dict[str, bytes]:
    """Every object under the ledger's prefix, by key."""
    keys = backend._list_keys(backend._key("audit") + "/")
    return {key: _stored(backend, key) for key in keys}


@pytest.mark.parametrize("damage", ENTRY_DAMAGE, ids=str)
def test_an_unreadable_entry_object_is_listed_as_a_placeholder_and_named_once(
    backend: Any, damage: str
) -> None:
    rewrite, reason = ENTRY_DAMAGE[damage]
    _damage_entry(backend, 2, rewrite)
    key = backend._audit_entry_key(2)

    entries = backend.list_audit()
    problems = backend.verify_audit()

    assert [e.seq for e in entries] == [1, 2, 3]
    placeholder = entries[1]
    assert placeholder.action == "<unreadable>" and placeholder.actor == "<unreadable>", placeholder
    assert placeholder.subject == f"s3://{backend.bucket}/{key}"
    assert placeholder.execution_id is None and placeholder.hash == "" and placeholder.prev_hash == ""
    assert list(placeholder.evidence) == [DAMAGED_EVIDENCE_KEY]
    assert placeholder.evidence[DAMAGED_EVIDENCE_KEY] == _stored(backend, key).decode(
        "utf-8", errors="replace"
    )
    assert dict(entries[0].evidence) == {"percent": 0} and dict(entries[2].evidence) == {"percent": 20}
    # One line for the damaged entry; entry 3's link to it is not reported a second time.
    assert problems == [problems[0]] and problems[0].startswith(
        f"entry 2 is damaged or was edited: {reason}"
    ), problems
    assert "\n" not in problems[0]


def test_the_placeholder_keeps_a_bounded_part_of_a_large_object(backend: Any) -> None:
    _damage_entry(backend, 2, lambda _: b"x" * 100_000)

    text = backend.list_audit()[1].evidence[DAMAGED_EVIDENCE_KEY]

    assert text.startswith("x" * 500) and len(text) < 600 and text.endswith("(100000 characters in all)"), (
        text
    )


def test_a_damaged_middle_entry_does_not_stop_appends_and_the_chain_is_checked_after_it(backend: Any) -> None:
    _damage_entry(backend, 2, lambda _: b"not json")
    backend.append_audit("pipeline", "weights", "ep/v3", "step 3", {"percent": 30})
    # An edit after the damaged entry is still found.
    _damage_entry(backend, 4, _with(reason="edited"))

    problems = backend.verify_audit()

    assert [e.seq for e in backend.list_audit()] == [1, 2, 3, 4]
    assert len(problems) == 2, problems
    assert problems[0].startswith("entry 2 is damaged or was edited: its object is not valid JSON (")
    assert problems[1] == "entry 4 was edited (its hash does not match its content)"


@pytest.mark.parametrize("damage", ["not JSON", "JSON array", "no hash"])
def test_append_refuses_to_extend_a_chain_whose_newest_entry_is_unreadable(backend: Any, damage: str) -> None:
    rewrite, reason = ENTRY_DAMAGE[damage]
    _damage_entry(backend, 3, rewrite)
    before = _snapshot(backend)

    with pytest.raises(BackendError) as raised:
        backend.append_audit("operator", "rollback", "ep/champion", "manual rollback", {"trigger": "manual"})

    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("refusing to append to the audit ledger: ")
    assert (
        f"s3://{backend.bucket}/{backend._audit_entry_key(3)} is damaged or was edited ({reason}" in message
    )
    assert message.endswith("; run `agent-release audit verify`"), message
    assert _snapshot(backend) == before, "nothing is written"
    # The ledger still reads: the tail is named once (its hash is unknown, so the head's is not compared).
    problems = backend.verify_audit()
    assert len(problems) == 1 and problems[0].startswith("entry 3 is damaged or was edited: "), problems


@pytest.mark.parametrize("damage", HEAD_DAMAGE, ids=str)
def test_a_damaged_head_is_a_problem_and_append_refuses_to_write(backend: Any, damage: str) -> None:
    _damage_head(backend, HEAD_DAMAGE[damage])
    before = _snapshot(backend)

    problems = backend.verify_audit()
    entries = backend.list_audit()
    with pytest.raises(BackendError) as raised:
        backend.append_audit("pipeline", "weights", "ep/v3", "step 3", {"percent": 30})

    assert [e.seq for e in entries] == [1, 2, 3] and all(e.action == "weights" for e in entries)
    assert len(problems) == 1, problems
    assert problems[0].startswith(
        "the ledger's recorded head (audit/HEAD.json) is damaged or was edited: its "
    ), problems
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(
        f"refusing to append to the audit ledger: s3://{backend.bucket}/{_head_key(backend)} is damaged"
    ), message
    assert message.endswith("run `agent-release audit verify`"), message
    assert _snapshot(backend) == before, "nothing is written"


def test_a_removed_middle_entry_is_named_once_and_the_entries_after_it_are_not_called_missing(
    backend: Any,
) -> None:
    backend.append_audit("pipeline", "weights", "ep/v3", "step 3", {"percent": 30})
    backend.s3.delete_object(Bucket=backend.bucket, Key=backend._audit_entry_key(2))

    assert backend.verify_audit() == ["entry 2 is missing (next entry found is 3)"]

    backend.s3.delete_object(Bucket=backend.bucket, Key=backend._audit_entry_key(3))
    assert backend.verify_audit() == ["entries 2-3 are missing (next entry found is 4)"]
