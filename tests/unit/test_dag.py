"""The DAG's helpers: reading a JSONL dataset as the evaluation and `plan` do."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from agent_release.pipelines.dag import read_jsonl
from agent_release.pipelines.executor import StepDef


def test_read_jsonl_returns_the_rows_and_ignores_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "golden.jsonl"
    path.write_text('{"id": "a"}\n\n   \n{"id": "b"}\n\n', encoding="utf-8")
    assert read_jsonl(path) == [{"id": "a"}, {"id": "b"}]


def test_read_jsonl_names_the_bad_line_by_its_number_in_the_file(tmp_path: Path) -> None:
    # Blank lines count: the number is the one an editor shows.
    path = tmp_path / "golden.jsonl"
    path.write_text('{"id": "a"}\n\n{"id": \n', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:3: not valid JSON: Expecting value$"):
        read_jsonl(path)


@pytest.mark.parametrize(
    ("train", "runs"),
    [("  enabled: true\n", True), ("  enabled: false\n", False), (None, False)],
    ids=["enabled", "disabled", "absent"],
)
def test_train_model_runs_only_when_train_is_enabled(tmp_path: Path, train: str | None, runs: bool) -> None:
    # Its skip note says "train is not enabled in pipeline.yaml": absent or `enabled: false` alike.
    from _shared.cli import copy_project

    from agent_release.pipelines.config import load_config
    from agent_release.pipelines.dag import RunContext, pipeline_steps
    from agent_release.pipelines.executor import StepRun

    config_path = copy_project(tmp_path / "project") / "pipeline.yaml"
    text = config_path.read_text()
    assert "\ntrain:" in text and "\n  enabled: true\n" in text
    if train is None:
        start = text.index("\ntrain:")
        end = text.index("\n", text.index("package_group:", start))
        text = text[:start] + text[end:]
    else:
        text = text.replace("\n  enabled: true\n", "\n" + train, 1)
    config_path.write_text(text)
    loaded = load_config(config_path)
    assert (loaded.config.train is None) == (train is None)
    step = next(s for s in pipeline_steps() if s.name == "train_model")
    context = RunContext(
        loaded=loaded,
        backend=None,  # type: ignore[arg-type]  # the condition reads only the config
        state_dir=tmp_path / "state",
        tracking_uri="sqlite://",
    )
    assert step.when is not None and step.when(StepRun(execution_id="e", outputs={}, context=context)) is runs
    assert step.skip_note == "train is not enabled in pipeline.yaml"


def test_evaluate_decide_and_promote_run_only_when_a_challenger_was_deployed() -> None:
    # A scheduled run that finds no new package skips them with NO_CHALLENGER; a remote step given only its
    # direct inputs (no deploy report at hand) runs, and its inputs decide.
    from _report_fixtures import deploy_report

    from agent_release.pipelines.dag import NO_CHALLENGER, pipeline_steps
    from agent_release.pipelines.executor import StepRun

    with_challenger = deploy_report()
    champion_only = with_challenger.model_copy(
        update={"challenger": None, "variants": with_challenger.variants[:1]}
    )
    gated = [s for s in pipeline_steps() if s.run_if is not None]
    assert [s.name for s in gated] == ["evaluate_variants", "decide_promotion", "promote_challenger"]
    for step in gated:
        assert step.skip_note == NO_CHALLENGER

        def due(outputs: dict[str, Any], step: StepDef = step) -> bool:
            assert step.run_if is not None
            return step.run_if(StepRun(execution_id="e", outputs=outputs, context=None))

        assert due({"deploy_variants": with_challenger}) is True
        assert due({"deploy_variants": champion_only}) is False
        assert due({}) is True
