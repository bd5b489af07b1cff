"""The dataset-validation step: Great Expectations contracts over the golden sets."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent_release.steps.validate_datasets import (
    DatasetError,
    DatasetSpec,
    DatasetValidationReport,
    validate_datasets,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {
    name: DatasetSpec(path=f"datasets/support/{name}.jsonl", suite=f"datasets/support/{name}.suite.json")
    for name in ("golden", "smoke", "holdout_live")
}


@pytest.fixture(scope="module")
def shipped_report() -> DatasetValidationReport:
    return validate_datasets(SHIPPED, ROOT)


def _copy(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    shutil.copy(ROOT / "datasets/support/golden.suite.json", tmp_path / "golden.suite.json")
    (tmp_path / "golden.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def _golden_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (ROOT / "datasets/support/golden.jsonl").read_text().splitlines()]


SPEC = {"golden": DatasetSpec(path="golden.jsonl", suite="golden.suite.json")}


def test_shipped_datasets_pass_and_are_pinned(shipped_report: DatasetValidationReport) -> None:
    assert shipped_report.success, shipped_report.summary_lines()
    golden = shipped_report.dataset("golden")
    assert golden.sha256 == hashlib.sha256((ROOT / "datasets/support/golden.jsonl").read_bytes()).hexdigest()
    assert golden.n_rows >= 300 and golden.n_clusters >= 30 and golden.failures == ()
    assert shipped_report.summary_lines()[0].startswith("golden: ok (")


def test_corrupted_copy_fails_naming_each_problem(tmp_path: Path) -> None:
    rows = _golden_rows()
    rows[6]["id"] = rows[0]["id"]
    del rows[7]["input"]
    rows[9]["tags"]["intent"] = "sales_pitch"
    report = validate_datasets(SPEC, _copy(tmp_path, rows))
    assert not report.success and not report.dataset("golden").success
    lines = report.summary_lines()
    dup = rows[0]["id"]
    assert f"golden: expect_column_values_to_be_unique(id) failed: 2 rows, e.g. {dup}" in lines
    assert f"golden: expect_column_values_to_not_be_null(input) failed: 1 rows, e.g. {rows[7]['id']}" in lines
    assert f"golden: expect_column_values_to_be_in_set(intent) failed: 1 rows, e.g. {rows[9]['id']}" in lines
    assert len(lines) == 3


def test_many_failing_rows_are_counted_and_the_first_five_named(tmp_path: Path) -> None:
    # Every row's intent is outside the contract's set: the count covers all of them and the sample names
    # the first five rows in file order. GE is asked for a summary with the first few failing rows (it used
    # to list every one, de-duplicated in a list: quadratic); this pins that the summary says the same.
    rows = _golden_rows()
    for row in rows:
        row["tags"]["intent"] = "sales_pitch"
    bad_intent = next(
        f
        for f in validate_datasets(SPEC, _copy(tmp_path, rows)).datasets[0].failures
        if f.expectation == "expect_column_values_to_be_in_set"
    )
    assert bad_intent.unexpected_count == len(rows)
    assert bad_intent.sample_ids == tuple(row["id"] for row in rows[:5])


def test_small_clusters_missing_ids_and_missing_columns_are_reported(tmp_path: Path) -> None:
    rows = _golden_rows()
    rows[3]["cluster"] = "lonely-cluster"
    del rows[4]["id"]
    for row in rows:
        del row["expected_facts"]
    failures = {
        (f.expectation, f.column): f
        for f in validate_datasets(SPEC, _copy(tmp_path, rows)).datasets[0].failures
    }
    assert failures["expect_column_values_to_be_between", "cluster_size"].sample_ids == (rows[3]["id"],)
    assert failures["expect_column_values_to_not_be_null", "id"].sample_ids == ("line 5",)
    assert ("expect_column_to_exist", "n_expected_facts") in failures


def test_missing_or_unparsable_files_raise_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read dataset") as missing:
        validate_datasets(SPEC, tmp_path)
    assert "\n" not in str(missing.value)
    _copy(tmp_path, _golden_rows()[:5])
    with (tmp_path / "golden.jsonl").open("a") as f:
        f.write("{not json\n")
    with pytest.raises(DatasetError, match=r"golden.jsonl:6: not valid JSON") as info:
        validate_datasets(SPEC, tmp_path)
    assert "\n" not in str(info.value)
    (tmp_path / "golden.jsonl").write_text(json.dumps(_golden_rows()[0]) + "\n")
    (tmp_path / "golden.suite.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="not an expectation suite") as not_a_suite:
        validate_datasets(SPEC, tmp_path)
    assert "\n" not in str(not_a_suite.value)


def test_dataset_spec_is_strict() -> None:
    with pytest.raises(ValidationError):
        DatasetSpec(path="a.jsonl", suite="a.suite.json", extra="x")  # type: ignore[call-arg]
    spec = DatasetSpec(path="a.jsonl", suite="a.suite.json")
    with pytest.raises(ValidationError):
        spec.path = "b.jsonl"  # type: ignore[misc]


def _holdout(tmp_path: Path, rows: list[dict[str, Any]]) -> DatasetValidationReport:
    shutil.copy(ROOT / "datasets/support/holdout_live.suite.json", tmp_path / "holdout_live.suite.json")
    (tmp_path / "holdout_live.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"holdout_live": DatasetSpec(path="holdout_live.jsonl", suite="holdout_live.suite.json")}
    return validate_datasets(spec, tmp_path)


def _holdout_rows() -> list[dict[str, Any]]:
    text = (ROOT / "datasets/support/holdout_live.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_holdout_clusters_must_be_many_and_none_may_swallow_the_set(tmp_path: Path) -> None:
    rows = _holdout_rows()
    report = _holdout(tmp_path, rows)
    assert report.success, report.summary_lines()

    # One cluster takes over a fifth of the cases: the clustered comparison would rest on one template.
    swallowed = [r["id"] for r in rows[:20]]
    for row in rows[:20]:
        row["cluster"] = "one-big-cluster"
    failures = {(f.expectation, f.column): f for f in _holdout(tmp_path, rows).datasets[0].failures}
    too_big = failures["expect_column_values_to_be_between", "cluster_size"]
    assert too_big.unexpected_count == 20 and set(too_big.sample_ids) <= set(swallowed)

    # Every case in one of three clusters (an export that lost the cluster key, say).
    for number, row in enumerate(rows):
        row["cluster"] = f"bucket-{number % 3}"
    failures = {(f.expectation, f.column): f for f in _holdout(tmp_path, rows).datasets[0].failures}
    assert failures["expect_column_unique_value_count_to_be_between", "cluster"].detail == "observed 3"
    assert ("expect_column_values_to_be_between", "cluster_size") in failures


def test_no_shipped_cluster_size_bound_is_vacuous() -> None:
    """Every row's cluster holds at least that row: ``cluster_size >= 1`` alone could never fail."""
    for name in SHIPPED:
        suite = json.loads((ROOT / f"datasets/support/{name}.suite.json").read_text())
        bounds = [
            e["kwargs"]
            for e in suite["expectations"]
            if e["type"] == "expect_column_values_to_be_between" and e["kwargs"]["column"] == "cluster_size"
        ]
        assert bounds, f"{name}: no cluster size expectation"
        for kwargs in bounds:
            assert kwargs.get("max_value") is not None or kwargs.get("min_value", 0) > 1, (name, kwargs)
        cluster_counts = [
            e for e in suite["expectations"] if e["type"] == "expect_column_unique_value_count_to_be_between"
        ]
        assert [e["kwargs"]["column"] for e in cluster_counts] == ["cluster"], name
        assert cluster_counts[0]["kwargs"]["min_value"] > 1, name


def test_duplicate_case_ids_fail_the_contract_whatever_the_suite(tmp_path: Path) -> None:
    # A suite without expect_column_values_to_be_unique let these through `validate`; the run then trained,
    # deployed and registered before evaluate_variants stopped at "case id 'X' appears twice".
    rows = _golden_rows()
    rows[7]["id"] = rows[3]["id"]
    rows[9]["id"] = 7
    rows[10]["id"] = "7"  # the evaluation keys rows by the id as text: 7 and "7" are the same case
    suite = tmp_path / "lenient.suite.json"
    suite.write_text(json.dumps({"name": "lenient", "expectations": []}))
    spec = {"golden": DatasetSpec(path="golden.jsonl", suite=str(suite))}
    report = validate_datasets(spec, _copy(tmp_path, rows))
    assert not report.success
    (line,) = [line for line in report.summary_lines() if "case_id_is_unique" in line]
    head, _, samples = line.partition(", e.g. ")
    assert head == "golden: case_id_is_unique(id) failed: 4 rows"
    assert sorted(samples.split(", ")) == sorted([rows[3]["id"], "7"])


def test_cases_the_evaluation_cannot_read_fail_the_contract_whatever_the_suite(tmp_path: Path) -> None:
    # Each of these passed the golden suite and then stopped the run at evaluate_variants, after training and
    # deployment ("case #3 needs an 'id' and a text 'input'", or an AttributeError on the tags).
    rows = _golden_rows()
    rows[2]["input"] = ["where", "is", "my", "order"]
    rows[3]["input"] = 42
    rows[4]["tags"] = ["refund"]
    rows[5]["expected_tool_calls"] = ["lookup_order"]
    rows[6]["expected_facts"] = "refund in 5 days"
    report = validate_datasets(SPEC, _copy(tmp_path, rows))
    assert not report.success
    lines = report.summary_lines()
    assert (
        f"golden: case_has_a_text_input(input) failed: 2 rows, e.g. {rows[2]['id']}, {rows[3]['id']}" in lines
    )
    assert f"golden: case_tags_are_an_object(tags) failed: 1 rows, e.g. {rows[4]['id']}" in lines
    expected_calls = f"golden: case_expected_tool_calls_are_objects(expected_tool_calls) failed: 1 rows, e.g. {rows[5]['id']}"
    assert expected_calls in lines
    assert (
        f"golden: case_expected_facts_are_a_list(expected_facts) failed: 1 rows, e.g. {rows[6]['id']}"
        in lines
    )


def test_an_expected_tool_call_without_a_name_fails_the_contract(tmp_path: Path) -> None:
    # It passed with a warning that the case expects a tool 'None', and every such case scored 0 trajectory.
    rows = _golden_rows()
    rows[2]["expected_tool_calls"] = [{"arguments": {"order_id": "ORD-1"}}]
    rows[3]["expected_tool_calls"] = [{"name": "  ", "arguments": {}}]
    rows[4]["expected_tool_calls"] = [{"name": 7}]
    lines = validate_datasets(SPEC, _copy(tmp_path, rows)).summary_lines()
    refs = ", ".join(str(rows[i]["id"]) for i in (2, 3, 4))
    assert (
        f"golden: case_expected_tool_calls_are_objects(expected_tool_calls) failed: 3 rows, e.g. {refs}"
        in lines
    )


def test_a_null_input_is_reported_once(tmp_path: Path) -> None:
    rows = _golden_rows()
    rows[1]["input"] = None
    lines = validate_datasets(SPEC, _copy(tmp_path, rows)).summary_lines()
    # The suite's not-null expectation names it; the shape rule for the same row is not repeated.
    assert lines == [
        f"golden: expect_column_values_to_not_be_null(input) failed: 1 rows, e.g. {rows[1]['id']}"
    ]


def test_clusters_are_counted_as_the_evaluation_counts_them(tmp_path: Path) -> None:
    """A case with a null or empty cluster is a cluster of its own in the evaluation, the gate and ``plan``;
    the validation report used to count all null ones as none and all empty ones as one."""
    from agent_release.steps.evaluate_variants import _units

    rows = _golden_rows()
    rows[0]["cluster"] = rows[1]["cluster"] = None
    rows[2]["cluster"] = rows[3]["cluster"] = ""

    golden = validate_datasets(SPEC, _copy(tmp_path, rows)).dataset("golden")

    assert golden.n_clusters == len({u.cluster for u in _units(rows, repeats=1)})
    assert golden.n_clusters == len({r["cluster"] for r in rows[4:]}) + 4


def test_the_pinned_hash_is_of_the_bytes_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is read once: a second read (after the contract ran) could hash bytes nobody validated."""
    _copy(tmp_path, _golden_rows())
    data = (tmp_path / "golden.jsonl").read_bytes()
    reads: list[Path] = []
    real = Path.read_bytes

    def counting(path: Path) -> bytes:
        if path.name == "golden.jsonl":
            reads.append(path)
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", counting)
    golden = validate_datasets(SPEC, tmp_path).dataset("golden")

    assert len(reads) == 1
    assert golden.sha256 == hashlib.sha256(data).hexdigest()
