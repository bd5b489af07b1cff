"""User mistakes get one clear line and change nothing: status outside a project, unreadable or empty datasets,
and the failure count of `validate`'s summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _shared.cli import assert_one_line_error, copy_project, run_cli

from agent_release.steps.validate_datasets import (
    DatasetError,
    DatasetResult,
    DatasetSpec,
    DatasetValidationReport,
    ExpectationFailure,
    validate_datasets,
)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = "datasets/support/golden.jsonl"
SMOKE = "datasets/support/smoke.jsonl"


# -- status outside a project --------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["status"], ["status", "--json"]])
def test_status_outside_a_project_creates_nothing_and_says_so(args: list[str], tmp_path: Path) -> None:
    elsewhere = tmp_path / "not-a-project"
    elsewhere.mkdir()
    proc = run_cli(args, elsewhere, home=None)
    assert_one_line_error(proc, f"no state directory at {elsewhere / '.agent-release'}")
    assert list(elsewhere.iterdir()) == [], "status created state outside a project"


def test_status_inside_a_project_reports_its_state(tmp_path: Path) -> None:
    from agent_release.pipelines.local_backend import LocalBackend

    project = copy_project(tmp_path / "project")
    LocalBackend(project / ".agent-release").close()  # the state a first run leaves behind
    proc = run_cli(["status", "--json"], project, home=None)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["state_dir"] == str((project / ".agent-release").resolve())
    assert data["endpoints"] == [] and data["last_execution"] is None


# -- datasets that cannot be read ------------------------------------------------------------------------------


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_dataset_that_is_not_utf8_is_one_line_naming_file_line_and_offset(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project", copy_datasets=True)
    golden = project / GOLDEN
    lines = _lines(golden)
    offset = len(lines[0]) + len(lines[1]) + 10
    lines[2] = lines[2][:10] + b"\xff" + lines[2][11:]  # a Latin-1 byte in line 3
    golden.write_bytes(b"".join(lines))
    err = assert_one_line_error(run_cli(["validate"], project, tmp_path / "home"), str(golden.resolve()))
    assert f"golden.jsonl:3: not valid UTF-8 (byte 0xff at offset {offset})" in err


def test_training_data_that_is_not_utf8_is_one_line_naming_file_line_and_offset(tmp_path: Path) -> None:
    """It was Python's bare decode error, naming neither the file nor the key."""
    project = copy_project(tmp_path / "project", copy_datasets=True)
    train = project / "datasets" / "support" / "train.jsonl"
    lines = _lines(train)
    offset = len(lines[0]) + len(lines[1]) + 10
    lines[2] = lines[2][:10] + b"\xe9" + lines[2][11:]  # a Latin-1 byte in line 3
    train.write_bytes(b"".join(lines))
    err = assert_one_line_error(run_cli(["validate"], project, tmp_path / "home"), "train.data")
    assert f"train.jsonl:3: not valid UTF-8 (byte 0xe9 at offset {offset})" in err


# json.dumps escapes the line breaks below U+0020 itself; these three it writes as they are.
LINE_SEPARATORS = ["\u2028", "\u2029", "\x85"]


@pytest.mark.parametrize("separator", LINE_SEPARATORS)
def test_a_line_separator_inside_a_json_string_does_not_split_the_row(separator: str, tmp_path: Path) -> None:
    """JSON strings may hold these characters unescaped (``json.dumps(..., ensure_ascii=False)`` writes them
    so); ``str.splitlines()`` cut such a row in two and called a valid file broken JSON."""
    from agent_release.agents.demo_model.training import load_examples
    from agent_release.steps.validate_datasets import numbered_objects

    golden = [json.loads(line) for line in (ROOT / GOLDEN).read_text(encoding="utf-8").splitlines()[:3]]
    golden[1]["input"] += f"{separator}P.S. thanks"
    (tmp_path / "golden.jsonl").write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in golden), encoding="utf-8"
    )
    rows = numbered_objects(tmp_path / "golden.jsonl")
    assert [number for number, _ in rows] == [1, 2, 3]
    assert rows[1][1]["input"].endswith(f"{separator}P.S. thanks")

    train = [json.loads(line) for line in (ROOT / "datasets/support/train.jsonl").open(encoding="utf-8")][:3]
    train[1]["text"] += f"{separator}thanks"  # after the labelled spans, so their offsets still hold
    (tmp_path / "train.jsonl").write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in train), encoding="utf-8"
    )
    examples = load_examples(tmp_path / "train.jsonl")
    assert len(examples) == 3 and examples[1].text.endswith(f"{separator}thanks")


@pytest.mark.parametrize("separator", LINE_SEPARATORS)
def test_a_line_separator_inside_a_kb_article_does_not_split_it(separator: str, tmp_path: Path) -> None:
    import shutil

    from agent_release.agents.support.data import SupportData

    data = tmp_path / "support"
    shutil.copytree(ROOT / "datasets" / "support", data)
    articles = [json.loads(line) for line in (data / "kb.jsonl").read_text(encoding="utf-8").splitlines()]
    articles[0]["body"] += f"{separator}See also: returns."
    (data / "kb.jsonl").write_text(
        "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in articles), encoding="utf-8"
    )
    kb = SupportData.load(data).kb
    assert len(kb) == len(articles) and kb[0].body.endswith(f"{separator}See also: returns.")


def test_suite_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "golden.jsonl").write_bytes((ROOT / GOLDEN).read_bytes())
    (tmp_path / "golden.suite.json").write_bytes(b'{"name": "caf\xe9"}\n')
    with pytest.raises(
        DatasetError, match=r"golden\.suite\.json:1: not valid UTF-8 \(byte 0xe9 at offset 13\)"
    ):
        validate_datasets({"golden": DatasetSpec(path="golden.jsonl", suite="golden.suite.json")}, tmp_path)


# -- an empty dataset ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_dataset_fails_with_one_line_not_one_per_expectation(content: str, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project", copy_datasets=True)
    (project / SMOKE).write_text(content)
    proc = run_cli(["validate"], project, tmp_path / "home")
    assert_one_line_error(proc, f"data contract failed: dataset smoke ({SMOKE}) has no rows")
    assert "(+" not in proc.stderr
    assert "expect_" not in proc.stdout, proc.stdout  # the suite's expectations are not listed one by one
    assert "golden: ok" in proc.stdout


# -- the "(+N more)" count of validate's summary ---------------------------------------------------------------


def test_validate_counts_only_failures_as_more(tmp_path: Path) -> None:
    """golden passes, smoke has two problems: the error names one and counts one more, not two."""
    project = copy_project(tmp_path / "project", copy_datasets=True)
    smoke = project / SMOKE
    cases = [json.loads(line) for line in smoke.read_text().splitlines() if line.strip()]
    cases[1]["id"] = cases[0]["id"]  # duplicate id
    cases[2]["tags"]["intent"] = "time_travel"  # unknown intent
    smoke.write_text("".join(json.dumps(c) + "\n" for c in cases))
    proc = run_cli(["validate"], project, tmp_path / "home")
    err = assert_one_line_error(proc, "data contract failed: smoke: ", "(+1 more)")
    assert "golden" not in err


def _result(name: str, *, success: bool, n_rows: int = 10, failures: int = 0) -> DatasetResult:
    return DatasetResult(
        name=name,
        path=f"{name}.jsonl",
        sha256="0" * 64,
        n_rows=n_rows,
        n_clusters=2,
        success=success,
        failures=tuple(
            ExpectationFailure(expectation=f"expect_{i}", column="id", unexpected_count=1)
            for i in range(failures)
        ),
    )


def test_failure_lines_leave_out_passing_datasets() -> None:
    report = DatasetValidationReport(
        success=False,
        datasets=(
            _result("golden", success=True),
            _result("smoke", success=False, failures=2),
            _result("empty", success=False, n_rows=0),
        ),
    )
    assert report.failure_lines() == [
        "smoke: expect_0(id) failed: 1 rows",
        "smoke: expect_1(id) failed: 1 rows",
        "dataset empty (empty.jsonl) has no rows",
    ]
    assert report.summary_lines()[0].startswith("golden: ok (")
