"""A resumed execution evaluates only the dataset bytes its validate step checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_release.pipelines.dag import dataset_hash, pinned_dataset_hash
from agent_release.pipelines.executor import StepFailed, StepRun
from agent_release.steps.validate_datasets import DatasetResult, DatasetValidationReport


def _validated(name: str, path: Path) -> DatasetValidationReport:
    result = DatasetResult(
        name=name, path=str(path), sha256=dataset_hash(path), n_rows=2, n_clusters=2, success=True
    )
    return DatasetValidationReport(success=True, datasets=(result,))


def test_a_dataset_edited_after_validation_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "golden.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n', encoding="utf-8")
    run = StepRun(execution_id="e1", outputs={"validate_datasets": _validated("golden", path)}, context=None)
    assert pinned_dataset_hash(run, "golden", path) == dataset_hash(path)

    path.write_text('{"id": "a"}\n', encoding="utf-8")  # edited while the execution was interrupted

    with pytest.raises(StepFailed, match=r"dataset golden .* changed after validate_datasets pinned it"):
        pinned_dataset_hash(run, "golden", path)


def test_without_a_validate_result_there_is_nothing_to_compare(tmp_path: Path) -> None:
    path = tmp_path / "shard.jsonl"
    path.write_text('{"id": "a"}\n', encoding="utf-8")
    run = StepRun(execution_id="e1", outputs={}, context=None)  # e.g. a remote step given only its inputs
    assert pinned_dataset_hash(run, "golden", path) == dataset_hash(path)
    other = StepRun(execution_id="e1", outputs={"validate_datasets": _validated("smoke", path)}, context=None)
    path.write_text('{"id": "b"}\n', encoding="utf-8")
    assert pinned_dataset_hash(other, "golden", path) == dataset_hash(path)  # golden was not pinned here


def test_the_refusal_names_both_hashes_by_their_first_twelve_hex_digits(tmp_path: Path) -> None:
    # Enough to tell the pinned file from the edited one (e.g. against `sha256sum`), short enough for one line.
    import hashlib

    path = tmp_path / "golden.jsonl"
    path.write_bytes(b'{"id": "a"}\n')
    run = StepRun(execution_id="e1", outputs={"validate_datasets": _validated("golden", path)}, context=None)
    path.write_bytes(b'{"id": "b"}\n')
    pinned = hashlib.sha256(b'{"id": "a"}\n').hexdigest()[:12]
    now = hashlib.sha256(b'{"id": "b"}\n').hexdigest()[:12]
    with pytest.raises(StepFailed) as info:
        pinned_dataset_hash(run, "golden", path)
    assert str(info.value) == (
        f"dataset golden ({path}) changed after validate_datasets pinned it (sha256 {pinned}, now {now}); "
        "start a new run so its data contract is checked again"
    )
