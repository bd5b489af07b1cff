"""`agent-release audit --execution ID --last N`: a long ledger read a release at a time.

A team's ledger grows by a few entries per release; after a year `audit` printed every entry. `list` now
filters by the execution that wrote an entry and keeps the newest N; `verify` refuses the filters (a chain is
verified whole).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent_release.pipelines.cli import main
from agent_release.pipelines.local_backend import LocalBackend


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    backend = LocalBackend(home)
    try:
        for release in range(3):
            for action in ("weights", "promote"):
                backend.append_audit(
                    "pipeline", action, "support-agent", f"release {release}", execution_id=f"ex-{release}"
                )
        backend.append_audit("user:ops", "rollback", "support-agent", "by hand")
    finally:
        backend.close()
    monkeypatch.setenv("AGENT_RELEASE_HOME", str(home))
    return home


def _audit(*args: str) -> Any:
    return CliRunner().invoke(main, ["audit", *args])


def _seqs(result: Any) -> list[int]:
    assert result.exit_code == 0, result.output
    return [json.loads(line)["seq"] for line in result.stdout.splitlines()]


def test_list_filters_by_execution_and_keeps_the_newest(home: Path) -> None:
    assert _seqs(_audit("--json")) == [1, 2, 3, 4, 5, 6, 7]
    assert _seqs(_audit("--json", "--execution", "ex-1")) == [3, 4]
    assert _seqs(_audit("--json", "--last", "2")) == [6, 7]
    assert _seqs(_audit("--json", "--execution", "ex-2", "--last", "1")) == [6]
    text = _audit("list", "--execution", "ex-0")
    assert text.exit_code == 0 and [line.split()[0] for line in text.stdout.splitlines()] == ["#1", "#2"]


def test_an_execution_with_no_entries_lists_nothing_and_says_so(home: Path) -> None:
    result = _audit("--execution", "ex-9")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "no ledger entry was written by execution ex-9" in result.stderr


@pytest.mark.parametrize(
    "args", [["verify", "--last", "2"], ["verify", "--execution", "ex-1"], ["--last", "0"]]
)
def test_verify_takes_no_filter_and_last_is_positive(home: Path, args: list[str]) -> None:
    result = _audit(*args)
    assert result.exit_code == 2, result.output
