"""The rules both backends share (pipelines/backend_rules.py): the audit hash and what ``verify_audit`` says
of a ledger and its recorded head, checked on the functions themselves (the backends' own tests tamper with
SQLite rows and S3 objects)."""

from __future__ import annotations

import hashlib

import pytest

from agent_release.pipelines.backend_rules import (
    GENESIS_HASH,
    audit_hash,
    canonical_json,
    head_mismatch,
    is_sagemaker_name,
)


def test_the_audit_hash_is_sha256_of_the_sorted_compact_utf8_json_of_the_fields() -> None:
    # Ledgers already written, in SQLite and in S3, verify only while these bytes stay the same: keys sorted
    # (so the order a dict was built or stored in does not matter), no spaces, non-ASCII text as UTF-8.
    fields = {"seq": 1, "reason": "café ✓", "evidence": {"b": 1, "a": [1.5, None]}, "hash": "not hashed"}
    expected = '{"evidence":{"a":[1.5,null],"b":1},"reason":"café ✓","seq":1}'
    assert canonical_json({k: v for k, v in fields.items() if k != "hash"}) == expected
    assert audit_hash(fields) == hashlib.sha256(expected.encode("utf-8")).hexdigest()
    assert audit_hash(dict(reversed(fields.items()))) == audit_hash(fields)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_canonical_json_refuses_what_json_has_no_text_for(value: float) -> None:
    # json.dumps would write NaN or Infinity, which no JSON reader takes back: the ledger stays plain JSON.
    with pytest.raises(ValueError):
        canonical_json({"delta": value})


def test_a_genesis_head_verifies_only_with_the_genesis_hash() -> None:
    assert head_mismatch(0, GENESIS_HASH, []) is None
    assert head_mismatch(0, GENESIS_HASH, [(1, "a" * 64)]) is None  # the first entry's head never moved
    assert head_mismatch(0, "f" * 64, [(1, "a" * 64)]) == (
        "the ledger's recorded head names entry 0 with a hash other than the genesis (edited)"
    )


def test_a_ledger_emptied_under_a_head_naming_its_first_entry_does_not_verify() -> None:
    # Every entry removed (here the only one): no seq gap and no chain to break, so the head is all that shows it.
    assert head_mismatch(1, "a" * 64, []) == "ledger ends at entry 0 but its recorded head is entry 1"
    assert head_mismatch(1, "a" * 64, [(1, "a" * 64)]) is None


def test_a_sagemaker_name_has_at_most_63_characters() -> None:
    assert is_sagemaker_name("a" * 63)
    assert is_sagemaker_name("a-" * 31 + "b")  # 63, hyphens inside
    assert not is_sagemaker_name("a" * 64)
