"""A path under ``~`` in pipeline.yaml is the same file for ``validate`` and for the steps ``run`` calls."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent_release.pipelines.config import check_referenced_files, load_config
from agent_release.steps.register_agents import load_system_prompt
from agent_release.steps.validate_datasets import DatasetSpec, validate_datasets

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    (home / "golden").mkdir(parents=True)
    for name in ("golden.jsonl", "golden.suite.json"):
        shutil.copy(ROOT / "datasets" / "support" / name, home / "golden" / name)
    (home / "prompt.txt").write_text("You answer in one sentence.")
    monkeypatch.setenv("HOME", str(home))
    return home


def test_a_home_relative_dataset_is_read_by_the_step_where_validate_found_it(
    home: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    spec = DatasetSpec(path="~/golden/golden.jsonl", suite="~/golden/golden.suite.json")

    # It used to open <project>/~/golden/golden.jsonl: "cannot read dataset", after validate had passed.
    report = validate_datasets({"golden": spec}, project)

    assert report.success and report.datasets[0].n_rows == len(
        (home / "golden" / "golden.jsonl").read_text().splitlines()
    )


def test_a_home_relative_prompt_file_is_the_one_validate_checked(home: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "datasets").symlink_to(ROOT / "datasets")
    text = (
        (ROOT / "pipeline.yaml")
        .read_text()
        .replace("  toolset: support\n", "  toolset: support\n  system_prompt_file: ~/prompt.txt\n", 1)
    )
    (project / "pipeline.yaml").write_text(text)
    loaded = load_config(project / "pipeline.yaml")
    check_referenced_files(loaded)  # validate's check: the file exists where ~ points

    assert load_system_prompt(loaded.config.agent, project) == "You answer in one sentence."
