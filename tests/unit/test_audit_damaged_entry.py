"""A ledger entry whose stored evidence is not JSON is reported by number, not as a JSON parser's traceback."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from _shared.cli import assert_one_line_error, run_cli

from agent_release.pipelines.backend_rules import DAMAGED_EVIDENCE_KEY
from agent_release.pipelines.local_backend import LocalBackend


def _ledger_with_damaged_entry(state_dir: Path, stored: str) -> None:
    backend = LocalBackend(state_dir)
    try:
        for i in range(3):
            backend.append_audit("pipeline", "weights", f"ep/v{i}", f"step {i}", {"percent": i * 10})
    finally:
        backend.close()
    conn = sqlite3.connect(state_dir / "state.db")
    with conn:
        conn.execute("UPDATE audit SET evidence_json = ? WHERE seq = 2", (stored,))
    conn.close()


DAMAGE = ["", "{not json", "[1, 2]"]


@pytest.mark.parametrize("stored", DAMAGE)
def test_verify_names_the_damaged_entry_and_listing_still_works(stored: str, tmp_path: Path) -> None:
    _ledger_with_damaged_entry(tmp_path, stored)
    backend = LocalBackend(tmp_path)
    try:
        problems = backend.verify_audit()
        entries = backend.list_audit()
    finally:
        backend.close()
    assert len(problems) == 1, problems
    assert problems[0].startswith("entry 2 is damaged or was edited: its evidence is")
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[1].evidence == {DAMAGED_EVIDENCE_KEY: stored}
    assert entries[2].evidence == {"percent": 20}


@pytest.mark.parametrize("stored", DAMAGE)
def test_audit_commands_on_a_damaged_entry(stored: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _ledger_with_damaged_entry(home, stored)

    verify = run_cli(["audit", "verify"], tmp_path, home)
    assert_one_line_error(verify, "audit ledger tampered: entry 2 is damaged")

    listing = run_cli(["audit"], tmp_path, home)
    assert listing.returncode == 0 and "Traceback" not in listing.stderr, listing.stderr
    lines = listing.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == ["#1", "#2", "#3"]
    assert "damaged evidence" in lines[1] and "damaged" not in lines[0] + lines[2]

    as_json = run_cli(["audit", "--json"], tmp_path, home)
    assert as_json.returncode == 0, as_json.stderr
    assert [json.loads(ln)["seq"] for ln in as_json.stdout.splitlines()] == [1, 2, 3]
