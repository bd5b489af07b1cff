"""Config mistakes that ``run`` used to hit only after training/deploying fail validation, on one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _shared.pipeline_yaml import edit, line_of

from agent_release.pipelines.config import ConfigError, check_referenced_files, load_config
from agent_release.pipelines.config_checks import ROW_FIELD_METRICS, check_config
from agent_release.steps.decide_promotion import _row_value
from agent_release.steps.evaluation_records import CaseResult

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "agent_release.pipelines.cli"]


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A copy of the default pipeline.yaml beside a link to the shipped datasets."""
    (tmp_path / "datasets").symlink_to(ROOT / "datasets")
    shutil.copy(ROOT / "pipeline.yaml", tmp_path / "pipeline.yaml")
    return tmp_path


def check(project: Path) -> None:
    """What ``validate`` and a new ``run`` do with the config before touching any state."""
    loaded = load_config(project / "pipeline.yaml")
    check_referenced_files(loaded)
    check_config(loaded)


def config_error(project: Path, *needles: str, line_needle: str | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        check(project)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    if line_needle is not None:
        assert f"pipeline.yaml:{line_of(project, line_needle)}: " in message, message
    return message


def run_cli(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENT_RELEASE_HOME": str(home)}
    env.pop("AGENT_RELEASE_DEBUG", None)
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# -- the shipped configs stay valid ----------------------------------------------------------------------


def test_shipped_pipeline_yaml_passes(project: Path) -> None:
    check(project)


def test_drill_config_passes(project: Path) -> None:
    shutil.copy(ROOT / "tests" / "drills" / "pipeline.drill.yaml", project / "pipeline.yaml")
    check(project)


# -- D5: duplicate keys ------------------------------------------------------------------------------------


def test_duplicate_top_level_key(project: Path) -> None:
    p = project / "pipeline.yaml"
    p.write_text(p.read_text() + "\ndecide:\n  primary_metric: task_success\n")
    n_lines = len(p.read_text().splitlines())
    message = config_error(project, "decide: duplicate key")
    assert f"pipeline.yaml:{n_lines - 1}: decide: duplicate key" in message


def test_duplicate_nested_key(project: Path) -> None:
    edit(project, "  min_improvement: 0.02\n", "  min_improvement: 0.02\n  min_improvement: 0.5\n")
    config_error(project, "decide.min_improvement: duplicate key", line_needle="min_improvement: 0.5")


def test_duplicate_key_inside_a_list_item(project: Path) -> None:
    edit(project, "      args: {mode: exact}", "      args: {mode: exact, mode: subset}")
    config_error(project, "evaluate.scorers.1.args.mode: duplicate key")


def test_duplicate_name_key(project: Path) -> None:
    p = project / "pipeline.yaml"
    p.write_text("name: a\n" + p.read_text())
    config_error(project, "name: duplicate key")


def test_two_merge_keys_in_one_mapping_are_no_duplicate(project: Path) -> None:
    # YAML merges every `<<` of a mapping: a second merge is not a key given twice.
    edit(project, "  golden:\n", "  golden: &golden\n")
    edit(
        project,
        "  smoke:\n    path: datasets/support/smoke.jsonl\n",
        "  smoke:\n    <<: *golden\n    <<: {path: datasets/support/smoke.jsonl}\n",
    )
    check(project)  # raised "datasets.smoke.<<: duplicate key" if the merges were counted as keys


# -- D4: scorers ---------------------------------------------------------------------------------------------


def test_unknown_scorer(project: Path) -> None:
    edit(project, "    - name: error\n", "    - name: error\n    - name: no_such_scorer\n")
    config_error(
        project, "evaluate.scorers.8.name", "unknown scorer 'no_such_scorer'", line_needle="no_such_scorer"
    )


def test_scorer_import_path_that_does_not_import(project: Path) -> None:
    edit(project, "    - name: error\n", "    - name: error\n    - name: 'nopkg.nomod:factory'\n")
    config_error(project, "evaluate.scorers.8.name", "cannot be imported", line_needle="nopkg.nomod")


def test_scorer_module_that_raises_on_import(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "boom_scorer.py").write_text("raise RuntimeError('kaboom')\n")
    monkeypatch.syspath_prepend(str(project))
    edit(project, "    - name: error\n", "    - name: error\n    - name: 'boom_scorer:factory'\n")
    config_error(project, "evaluate.scorers.8.name", "RuntimeError: kaboom", line_needle="boom_scorer")


def test_scorer_with_bad_args(project: Path) -> None:
    edit(project, "args: {mode: exact}", "args: {mode: sideways}")
    config_error(
        project,
        "evaluate.scorers.1.name",
        "tool_trajectory: mode must be exact, in_order or subset, got 'sideways'",
        line_needle="name: tool_trajectory",
    )


def test_scorer_listed_twice(project: Path) -> None:
    edit(project, "    - name: error\n", "    - name: error\n    - name: error\n")
    config_error(project, "evaluate.scorers.8.name", "'error' is produced twice")


def test_a_user_scorer_named_like_a_row_field_is_refused(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gate reads cost (and error, latency_s, tokens, retries) from each row's fields: a user scorer of that
    # name was accepted, shown in the aggregates, and ignored by the cost guardrail.
    (project / "my_costs.py").write_text(
        "def cost():\n    def score(inputs, outputs, expectations):\n        return 5.0\n    return score\n"
    )
    monkeypatch.syspath_prepend(str(project))
    edit(project, "    - name: cost\n", "    - name: 'my_costs:cost'\n")
    config_error(
        project, "evaluate.scorers.6.name", "scorer name 'cost' is a per-row field", line_needle="my_costs"
    )


# -- D4: metric names ------------------------------------------------------------------------------------------


def test_unknown_primary_metric(project: Path) -> None:
    edit(project, "primary_metric: task_success", "primary_metric: nonexistent_metric")
    config_error(
        project,
        "decide.primary_metric",
        "'nonexistent_metric' is not produced by any configured scorer",
        line_needle="nonexistent_metric",
    )


def test_primary_metric_whose_scorer_was_removed(project: Path) -> None:
    edit(project, "    - name: task_success\n", "")
    config_error(project, "decide.primary_metric", "'task_success'")


def test_unknown_guardrail_metric(project: Path) -> None:
    edit(
        project,
        "  min_completed_cases: 100\n",
        "  min_completed_cases: 100\n  guardrails:\n    - {metric: bogus, direction: lower_is_better, margin: 0.1}\n",
    )
    config_error(project, "decide.guardrails.0.metric", "'bogus'", line_needle="metric: bogus")


def test_row_field_metrics_are_read_from_the_row() -> None:
    """Every name ROW_FIELD_METRICS allows is one decide_promotion reads without a scorer."""
    # A row whose model reported its usage (without any, tokens and cost are unknown: None).
    row = CaseResult(
        case_id="c",
        cluster="k",
        variant="v",
        role="champion",
        latency_s=1.0,
        input_tokens=100,
        output_tokens=10,
    )
    for metric in ROW_FIELD_METRICS:
        assert _row_value(row, metric, binary=False) is not None, metric
    assert _row_value(row, "not_a_row_field", binary=False) is None


def test_metric_of_a_row_field_and_of_any_scorer_is_accepted(project: Path) -> None:
    edit(project, "primary_metric: task_success", "primary_metric: answer_correctness")
    check(project)
    # A row field is lower-is-better: a guardrail, not the primary metric (test_eval_config_sweep.py).
    edit(
        project,
        "  min_completed_cases: 100\n",
        "  min_completed_cases: 100\n  guardrails:\n    - {metric: retries, direction: lower_is_better, margin: 0.5}\n",
    )
    check(project)


# -- D4: tools ---------------------------------------------------------------------------------------------------


def test_unknown_tool(project: Path) -> None:
    edit(project, "  toolset: support\n", "  toolset: support\n  tools: [lookup_order, nosuch_tool]\n")
    config_error(project, "agent.tools", "nosuch_tool", line_needle="nosuch_tool")


def test_unknown_toolset(project: Path) -> None:
    edit(project, "  toolset: support\n", "  toolset: 'nopkg.tools:factory'\n")
    config_error(project, "agent.toolset", "cannot be imported", line_needle="nopkg.tools")


def test_known_tool_subset_passes(project: Path) -> None:
    edit(project, "  toolset: support\n", "  toolset: support\n  tools: [lookup_order, search_kb]\n")
    check(project)


# -- D4: deploy ----------------------------------------------------------------------------------------------------


def test_equal_variant_names(project: Path) -> None:
    edit(
        project,
        "  challenger_weight: 0.0\n",
        "  challenger_weight: 0.0\n  champion_variant_name: challenger\n",
    )
    config_error(project, "deploy.challenger_variant_name", "must differ")


def test_weights_sum_to_zero(project: Path) -> None:
    edit(project, "champion_weight: 1.0", "champion_weight: 0")
    config_error(project, "deploy.challenger_weight", "must be > 0", line_needle="challenger_weight")


def test_all_traffic_on_the_challenger_is_a_positive_weight_sum(project: Path) -> None:
    edit(project, "champion_weight: 1.0", "champion_weight: 0")
    edit(project, "challenger_weight: 0.0", "challenger_weight: 1.0")
    check(project)


# A quoted version number is text in YAML: '0' is no version, as 0 is not.
@pytest.mark.parametrize(("ref", "shown"), [("garbage", "'garbage'"), ("'0'", "'0'"), ("0", "0 is neither")])
def test_champion_reference_that_cannot_be_valid(project: Path, ref: str, shown: str) -> None:
    edit(project, "champion: approved ", f"champion: {ref} ")
    config_error(project, "deploy.champion", shown, line_needle=f"champion: {ref}")


def test_challenger_reference_that_cannot_be_valid(project: Path) -> None:
    edit(project, "challenger: latest_pending ", "challenger: newest ")
    config_error(
        project, "deploy.challenger", "'newest' is neither 'latest_pending'", line_needle="challenger: newest"
    )


@pytest.mark.parametrize("ref", ["3", "'3'", "'arn:aws:sagemaker:us-east-1:111122223333:model-package/g/3'"])
def test_champion_version_or_arn_passes(project: Path, ref: str) -> None:
    edit(project, "champion: approved ", f"champion: {ref} ")
    check(project)


def test_faults_on_unknown_variant(project: Path) -> None:
    edit(
        project,
        "  challenger_weight: 0.0\n",
        "  challenger_weight: 0.0\n  faults: {nosuch: {error_rate: 1.0}}\n",
    )
    config_error(project, "deploy.faults.nosuch", "unknown variant")


# -- D4: train ---------------------------------------------------------------------------------------------------


def test_seed_out_of_range(project: Path) -> None:
    edit(project, "seed: 7", "seed: 1180591620717411303424")
    config_error(project, "train.seed", "less than or equal to 4294967295", line_needle="seed: 1180")


def test_the_schema_carries_the_seed_range() -> None:
    # `agent-release schema` accepted a train.seed of -5 that `validate` refused.
    from agent_release.pipelines.config import PipelineConfig

    seed = PipelineConfig.model_json_schema()["$defs"]["TrainConfig"]["properties"]["seed"]
    assert (seed["minimum"], seed["maximum"]) == (0, 2**32 - 1)


def test_negative_seed(project: Path) -> None:
    edit(project, "seed: 7", "seed: -1")
    config_error(project, "train.seed", "greater than or equal to 0", line_needle="seed: -1")


def test_unknown_cohort(project: Path) -> None:
    edit(project, "  seed: 7\n", "  seed: 7\n  cohorts: [2026-q3, nosuch]\n")
    config_error(project, "train.cohorts", "nosuch", "2026-q2", line_needle="cohorts:")


def test_known_cohort_passes(project: Path) -> None:
    edit(project, "  seed: 7\n", "  seed: 7\n  cohorts: [2026-q3]\n")
    check(project)


# -- through the CLI: validate and run fail before any state exists ---------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("primary_metric: task_success", "primary_metric: nonexistent_metric", "decide.primary_metric"),
        ("  toolset: support\n", "  toolset: support\n  tools: [nosuch_tool]\n", "agent.tools"),
    ],
)
def test_validate_and_run_fail_before_touching_state(
    project: Path, tmp_path: Path, old: str, new: str, needle: str
) -> None:
    edit(project, old, new)
    home = tmp_path / "home"
    assert_one_line_error(run_cli(["validate"], project, home), needle, "pipeline.yaml:")
    assert_one_line_error(run_cli(["run"], project, home), needle, "pipeline.yaml:")
    # Nothing trained, registered, deployed or recorded: no state database was created.
    assert not (home / "state.db").exists()
    assert not (home / "mlflow.db").exists()
    assert not (project / ".agent-release").exists()


def test_cli_duplicate_key(project: Path, tmp_path: Path) -> None:
    p = project / "pipeline.yaml"
    p.write_text(p.read_text() + "\ndecide:\n  primary_metric: task_success\n")
    home = tmp_path / "home"
    assert_one_line_error(run_cli(["validate"], project, home), "decide: duplicate key")
    assert_one_line_error(run_cli(["run"], project, home), "decide: duplicate key")
    assert not (home / "state.db").exists()
