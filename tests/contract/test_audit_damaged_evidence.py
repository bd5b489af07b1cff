"""A ledger entry whose evidence is not a JSON object reads the same on both backends: listed, flagged, named.

The entry is damaged the way an edit of the stored ledger would (``local``: the ``evidence_json`` column of
``state.db``; ``sagemaker``: the entry object in S3 on the moto server, over HTTP), its hash left as it was.
Listing still returns every entry, the damaged one with its stored evidence under ``DAMAGED_EVIDENCE_KEY`` (what
``agent-release audit`` flags), and ``verify_audit`` names it instead of failing on it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent_release.pipelines.backend_rules import DAMAGED_EVIDENCE_KEY

pytestmark = pytest.mark.contract

# Evidence values an edit could leave in place of the object: each is valid JSON, none is an object. A string
# holding an object's JSON must not be decoded a second time and pass for evidence.
DAMAGE: list[Any] = ["", "{not json", [1, 2], None, 7, '{"percent": 10}']


def _damage_local(backend: Any, seq: int, evidence: Any) -> None:
    conn = sqlite3.connect(backend.state_dir / "state.db")
    with conn:
        conn.execute("UPDATE audit SET evidence_json = ? WHERE seq = ?", (json.dumps(evidence), seq))
    conn.close()


def _damage_s3(backend: Any, seq: int, evidence: Any) -> None:
    key = backend._audit_entry_key(seq)
    entry = json.loads(backend.s3.get_object(Bucket=backend.bucket, Key=key)["Body"].read())
    entry["evidence"] = evidence
    backend.s3.put_object(Bucket=backend.bucket, Key=key, Body=json.dumps(entry).encode("utf-8"))


@pytest.fixture(params=["local", "sagemaker"])
def ledger(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[Any, Callable[..., None]]]:
    """A backend whose ledger holds entries 1-3 (evidence ``{"percent": 0|10|20}``) and how to damage one."""
    if request.param == "local":
        from agent_release.pipelines.local_backend import LocalBackend

        local = LocalBackend(tmp_path / "state")
        backend: Any = local
        damage: Callable[..., None] = _damage_local
    else:
        local = None
        backend = request.getfixturevalue("sagemaker_backend")
        damage = _damage_s3
    for i in range(3):
        backend.append_audit("pipeline", "weights", f"ep/v{i}", f"step {i}", {"percent": i * 10})
    yield backend, damage
    if local is not None:
        local.close()


@pytest.mark.parametrize("evidence", DAMAGE, ids=repr)
def test_an_entry_whose_evidence_is_not_an_object_is_listed_flagged_and_named(
    ledger: tuple[Any, Callable[..., None]], evidence: Any
) -> None:
    backend, damage = ledger
    damage(backend, 2, evidence)

    entries = backend.list_audit()
    problems = backend.verify_audit()

    assert [e.seq for e in entries] == [1, 2, 3]
    assert list(entries[1].evidence) == [DAMAGED_EVIDENCE_KEY], entries[1].evidence
    assert json.loads(entries[1].evidence[DAMAGED_EVIDENCE_KEY]) == evidence, "the stored evidence is kept"
    assert dict(entries[0].evidence) == {"percent": 0} and dict(entries[2].evidence) == {"percent": 20}
    assert len(problems) == 1, problems
    assert problems[0].startswith("entry 2 is damaged or was edited: its evidence is "), problems
    assert "not a JSON object" in problems[0], problems
