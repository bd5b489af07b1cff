"""User mistakes found by a sweep of the agent, train, evaluate, decide and live-traffic sections.

Each was accepted by ``validate`` and failed (or quietly did the wrong thing) only in ``run``, after training,
deployment or the whole evaluation: live-traffic rows without ``input``, a user toolset without a prompt, a
prompt file that is a directory, a toolset factory that returns no tools, cost prices of the wrong shape or
keyed by a model name, a judge that cannot answer, an ``@scorer`` named where a factory belongs, a
lower-is-better primary metric, a guardrail facing the wrong way, a gate that needs more cases than the
dataset holds, training data that holds no examples. Each is now one line naming the key and its line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from _fake_registry import FakeRegistry
from _shared.cli import copy_project
from _shared.pipeline_yaml import config_error, edit, line_of
from click.testing import CliRunner

from agent_release.agents.demo_model.training import TrainingDataError
from agent_release.pipelines import cli
from agent_release.pipelines.config import ConfigError, load_config
from agent_release.pipelines.config_checks import check_config
from agent_release.pipelines.dag import live_inputs_of
from agent_release.steps.backend import Backend
from agent_release.steps.evaluate_config import ScorerSpec
from agent_release.steps.scorers import ScorerConfigError, build_scorer
from agent_release.steps.train_model import TrainConfig, train_model

ROOT = Path(__file__).resolve().parents[2]
SCORERS_END = "    - name: error\n"


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path)


check = config_error


def at(project: Path, needle: str, key: str) -> str:
    """The ``<file>:<line>: <key>: `` prefix an error about ``key`` (written on the line of ``needle``) has."""
    return f"{project / 'pipeline.yaml'}:{line_of(project, needle)}: {key}: "


# -- promote.live_traffic.inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"text": "Where is my order?"}\n', "live.jsonl:1: each row needs a non-empty text 'input'"),
        (
            '{"input": "ok"}\n\n["Where is my order?"]\n',
            "live.jsonl:3: expected a JSON object",
        ),
        ('{"input": "ok"}\n{"input": 42}\n', "live.jsonl:2: each row needs a non-empty text 'input'"),
        ('{"input": "ok"}\n{"input": \n', "live.jsonl:2: not valid JSON"),
        ("\n", "live.jsonl has no rows, so the canary would replay no traffic"),
    ],
)
def test_live_traffic_inputs_the_canary_cannot_replay_fail_validation(
    project: Path, text: str, why: str
) -> None:
    # Before: validate passed; `run` trained, deployed, evaluated and decided, then promote_challenger failed
    # with "'input'" (a KeyError), or replayed nothing so every canary step went unjudged and rolled back.
    (project / "live.jsonl").write_text(text)
    edit(project, "inputs: datasets/support/holdout_live.jsonl", "inputs: live.jsonl")
    message = check(project)
    assert message.startswith(at(project, "inputs: live.jsonl", "promote.live_traffic.inputs")), message
    assert why in message and "\n" not in message, message


def test_live_inputs_of_reads_the_input_of_every_row(project: Path) -> None:
    inputs = live_inputs_of(load_config(project / "pipeline.yaml"))
    assert len(inputs) == 100 and inputs[0] == "Where is my order ORD-49279? Thanks!"


def test_disabled_live_traffic_is_not_read(project: Path) -> None:
    (project / "live.jsonl").write_text("")
    edit(project, "    enabled: true\n    inputs: datasets/support/holdout_live.jsonl", "    enabled: false")
    check_config(load_config(project / "pipeline.yaml"))


def test_run_with_rows_without_input_stops_before_any_state(project: Path, tmp_path: Path) -> None:
    (project / "live.jsonl").write_text('{"text": "hi"}\n')
    edit(project, "inputs: datasets/support/holdout_live.jsonl", "inputs: live.jsonl")
    home = tmp_path / "home"
    result = CliRunner().invoke(
        cli.main,
        ["run", "-c", str(project / "pipeline.yaml")],
        env={"AGENT_RELEASE_HOME": str(home), "AGENT_RELEASE_DEBUG": ""},
    )
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "promote.live_traffic.inputs: " in lines[0] and "live.jsonl:1:" in lines[0], lines
    assert not home.exists()


# -- agent: toolset and system prompt ---------------------------------------------------------------------------


def _user_module(project: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> None:
    """Make ``name`` importable from ``project`` with ``body``, not the copy an earlier test imported."""
    (project / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(project))
    monkeypatch.delitem(sys.modules, name, raising=False)


def _user_toolset(project: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    _user_module(project, monkeypatch, "sweep_tools", body)


def test_user_toolset_without_a_prompt_fails_validation(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: register_agents refused it, after training and deployment.
    _user_toolset(
        project,
        monkeypatch,
        "from agent_release.agents.support.tools import support_tools\n"
        "def tools(data_dir):\n    return support_tools(data_dir)\n",
    )
    edit(project, "  toolset: support", "  toolset: sweep_tools:tools")
    message = check(project)
    assert message == (
        at(project, "toolset: sweep_tools", "agent.toolset")
        + "toolset 'sweep_tools:tools' has no built-in prompt: set agent.system_prompt or agent.system_prompt_file"
    )


@pytest.mark.parametrize(
    ("factory", "why"),
    [
        ("def tools(data_dir):\n    return None\n", "returned NoneType, not a list of Strands tools"),
        ("def tools(data_dir):\n    return ['lookup_order']\n", "returned a list holding non-tools"),
        ("tools = 3\n", "is a int, not a function (data_dir) -> tools"),
    ],
)
def test_toolset_factory_that_gives_no_tools_fails_validation(
    project: Path, monkeypatch: pytest.MonkeyPatch, factory: str, why: str
) -> None:
    # Before: a factory returning None or strings passed validate and failed in register_agents
    # (TypeError / AttributeError), after deployment.
    _user_toolset(project, monkeypatch, factory)
    edit(project, "  toolset: support", "  toolset: sweep_tools:tools\n  system_prompt: Help.")
    message = check(project)
    assert message.startswith(at(project, "toolset: sweep_tools", "agent.toolset")), message
    assert f"toolset 'sweep_tools:tools' {why}" in message, message


def test_toolset_without_a_module_is_named(project: Path) -> None:
    edit(project, "  toolset: support", '  toolset: ":tools"\n  system_prompt: Help.')
    assert check(project).endswith(
        "agent.toolset: toolset ':tools' is neither 'support' nor an import path 'pkg.module:factory'"
    )


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda p: p.mkdir(), "cannot be read: Is a directory"),
        (lambda p: p.write_bytes(b"\xff\xfe prompt"), "not UTF-8 text"),
    ],
)
def test_system_prompt_file_that_cannot_be_read_fails_validation(
    project: Path, make: Callable[[Path], object], why: str
) -> None:
    # Before: it exists, so validate passed; register_agents failed to read it after deployment (a
    # UnicodeDecodeError for a file that is not UTF-8).
    path = project / "prompt.txt"
    make(path)
    edit(project, "  toolset: support", "  toolset: support\n  system_prompt_file: prompt.txt")
    message = check(project)
    assert message == at(project, "system_prompt_file", "agent.system_prompt_file") + f"{path}: {why}"


# -- evaluate: scorers, prices, judge ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ("{prices: cheap}", "cost: prices must map a variant name (or 'default') to"),
        (
            "{prices: {default: {input_per_1k: x}}}",
            "cost: prices.default.input_per_1k: Input should be a valid number",
        ),
        ("{prices: {default: 3}}", "cost: prices.default: Input should be a valid dictionary"),
        ("{prices: {default: {input: 0.1}}}", "cost: prices.default.input: Extra inputs are not permitted"),
    ],
)
def test_cost_prices_of_the_wrong_shape_fail_validation(project: Path, args: str, why: str) -> None:
    # Before: a string failed with "ValueError: dictionary update sequence element #0 ..."; the others were
    # accepted and every case's cost scorer raised (a SCORER_ERROR, the score dropped) or cost 0.0.
    edit(project, "    - name: cost\n", f"    - name: cost\n      args: {args}\n")
    message = check(project)
    assert message.startswith(at(project, "- name: cost", "evaluate.scorers.6.name") + why), message


@pytest.mark.parametrize(
    ("old", "new", "needle", "key"),
    [
        ("    default: {input_per_1k", "    gpt-4o: {input_per_1k", "gpt-4o:", "evaluate.prices.gpt-4o"),
        (
            "    - name: cost\n",
            "    - name: cost\n      args: {prices: {llama3: {input_per_1k: 0.1}}}\n",
            "llama3",
            "evaluate.scorers.6.args.prices.llama3",
        ),
    ],
)
def test_prices_for_an_unknown_model_fail_validation(
    project: Path, old: str, new: str, needle: str, key: str
) -> None:
    # Before: accepted; prices are looked up by variant name, so both variants cost 0.0 on every case and the
    # cost guardrail compared zeros.
    edit(project, old, new)
    name = key.rsplit(".", 1)[1]
    assert check(project) == at(project, needle, key) + (
        f"no variant is named '{name}'; prices are keyed by variant name or 'default' "
        "(known: challenger, champion, default)"
    )


@pytest.mark.parametrize(
    ("old", "new", "key", "unpriced"),
    [
        ("    default: {input_per_1k", "    champion: {input_per_1k", "evaluate.prices", "challenger"),
        (
            "    - name: cost\n",
            "    - name: cost\n      args: {prices: {challenger: {input_per_1k: 0.1, output_per_1k: 0.2}}}\n",
            "evaluate.scorers.6.args.prices",
            "champion",
        ),
    ],
)
def test_a_price_table_that_leaves_a_variant_out_fails_validation(
    project: Path, old: str, new: str, key: str, unpriced: str
) -> None:
    # Before: accepted, and every one of the unpriced variant's cases cost 0.0 against the other's real cost;
    # the cost guardrail then held in its favour.
    edit(project, old, new)
    assert check(project).endswith(
        f"{key}: no price for variant '{unpriced}' and no 'default': its cases would cost 0.0 against the "
        "other's; price every variant or add a 'default'"
    ), check(project)


@pytest.mark.parametrize(
    ("judge", "why"),
    [
        (
            '{base_url: "localhost:8080", model: j}',
            "llm_judge: base_url must be an http(s) URL of the judge server",
        ),
        ('{base_url: "http://127.0.0.1:1", model: ""}', "llm_judge: model must name the judge model, got ''"),
        (
            '{base_url: "http://127.0.0.1:1", model: j, api_key_env: SWEEP_UNSET_KEY}',
            "llm_judge: api_key_env names $SWEEP_UNSET_KEY, which is not set",
        ),
    ],
)
def test_judge_that_cannot_answer_fails_validation(
    project: Path, monkeypatch: pytest.MonkeyPatch, judge: str, why: str
) -> None:
    # Before: accepted; every case's llm_judge call failed (a SCORER_ERROR), or went out without its key.
    monkeypatch.delenv("SWEEP_UNSET_KEY", raising=False)
    edit(project, "  prices:\n", f"  judge: {judge}\n  prices:\n")
    message = check(project)
    assert message.startswith(at(project, "judge:", "evaluate.judge") + why), message


def test_judge_args_are_checked_when_the_scorer_is_named(project: Path) -> None:
    edit(
        project,
        SCORERS_END,
        SCORERS_END + "    - name: llm_judge\n      args: {base_url: x, model: j, timeout_s: -1}\n",
    )
    message = check(project)
    assert message.startswith(at(project, "- name: llm_judge", "evaluate.scorers.8.name")), message
    assert "llm_judge: base_url must be an http(s) URL" in message


def test_judge_timeout_must_be_positive_seconds() -> None:
    spec = ScorerSpec(name="llm_judge", args={"base_url": "http://h:1", "model": "j", "timeout_s": "30"})
    with pytest.raises(
        ScorerConfigError, match=r"^llm_judge: timeout_s must be seconds in \(0, 3600\], got '30'$"
    ):
        build_scorer(spec)


def test_an_mlflow_scorer_named_where_a_factory_belongs(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: the @scorer was called as if it were a factory: "missing a required argument: 'outputs'".
    _user_module(
        project,
        monkeypatch,
        "sweep_scorers",
        "from mlflow.genai.scorers import scorer\n\n"
        "@scorer\ndef polite(outputs) -> float:\n    return float('please' in str(outputs))\n",
    )
    edit(project, SCORERS_END, SCORERS_END + "    - name: sweep_scorers:polite\n")
    assert check(project) == at(project, "sweep_scorers", "evaluate.scorers.8.name") + (
        "scorer 'sweep_scorers:polite' is an MLflow Scorer, not a factory: name a function that returns it "
        "(def polite_factory(): return polite)"
    )


# -- decide -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["latency_s", "cost", "error", "tokens", "latency"])
def test_lower_is_better_primary_metric_fails_validation(project: Path, metric: str) -> None:
    # Before: accepted; the gate promotes a challenger whose primary metric is higher: slower, costlier or
    # erring more.
    edit(project, "  primary_metric: task_success", f"  primary_metric: {metric}")
    assert check(project) == at(project, "primary_metric:", "decide.primary_metric") + (
        f"'{metric}' is lower-is-better, but the gate promotes a challenger whose primary metric is higher; "
        "gate on a quality score and keep it as a guardrail (direction: lower_is_better)"
    )


@pytest.mark.parametrize(
    ("metric", "direction", "known"),
    [
        ("error", "higher_is_better", "lower-is-better"),
        ("task_success", "lower_is_better", "higher-is-better"),
    ],
)
def test_guardrail_facing_the_wrong_way_fails_validation(
    project: Path, metric: str, direction: str, known: str
) -> None:
    edit(
        project,
        "  min_completed_cases: 100\n",
        f"  min_completed_cases: 100\n  guardrails:\n    - {{metric: {metric}, direction: {direction}, "
        "margin: 0.02, method: t}\n",
    )
    assert check(project) == at(project, f"metric: {metric}, direction", "decide.guardrails.0.direction") + (
        f"'{metric}' is {known}, so {direction} would guard the wrong way"
    )


def test_user_scorer_guardrail_direction_is_the_users(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _user_module(project, monkeypatch, "sweep_scorers", "def rude():\n    return lambda i, o, e: 0.0\n")
    edit(project, SCORERS_END, SCORERS_END + "    - name: sweep_scorers:rude\n")
    edit(
        project,
        "  min_completed_cases: 100\n",
        "  min_completed_cases: 100\n  guardrails:\n    - {metric: rude, direction: lower_is_better, margin: 0.1}\n",
    )
    check_config(load_config(project / "pipeline.yaml"))
    # Either way round: only the user knows which way their score is better.
    edit(project, "{metric: rude, direction: lower_is_better", "{metric: rude, direction: higher_is_better")
    check_config(load_config(project / "pipeline.yaml"))


def test_min_completed_cases_beyond_the_dataset_fails_validation(project: Path) -> None:
    # Before: accepted; after training, deployment and the whole evaluation every decision was inconclusive.
    edit(project, "  min_completed_cases: 100", "  min_completed_cases: 352")
    assert check(project) == at(project, "min_completed_cases", "decide.min_completed_cases") + (
        "352 is more than the 351 cases of dataset golden, so every decision would be inconclusive"
    )


def test_an_empty_evaluation_dataset_is_named_before_min_completed_cases(project: Path) -> None:
    # It said "1 is more than the 0 cases of dataset golden", asking for a value below the smallest allowed,
    # and `plan` advised giving the cases a 'cluster' key: the file has no rows.
    (project / "empty.jsonl").write_text("")
    edit(project, "    path: datasets/support/golden.jsonl", "    path: empty.jsonl")
    assert check(project) == at(project, "path: empty.jsonl", "datasets.golden.path") + (
        "dataset golden (empty.jsonl) has no rows, and it is the one evaluated"
    )
    result = CliRunner().invoke(cli.main, ["plan", "-c", str(project / "pipeline.yaml")])
    assert result.exit_code == 1
    assert result.output == "error: dataset golden (empty.jsonl) has no rows: there is nothing to plan\n"


def test_min_completed_cases_equal_to_the_dataset_passes(project: Path) -> None:
    edit(project, "  min_completed_cases: 100", "  min_completed_cases: 351")
    check_config(load_config(project / "pipeline.yaml"))


def _recluster(project: Path, cluster: Callable[[int], str | None]) -> None:
    import json

    # A copy beside pipeline.yaml: the project's datasets directory links to the repository's.
    source = project / "datasets/support/golden.jsonl"
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    for i, row in enumerate(rows):
        row["cluster"] = cluster(i)
    (project / "golden.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    edit(project, "    path: datasets/support/golden.jsonl", "    path: golden.jsonl")


def test_a_golden_set_in_one_cluster_fails_validation(project: Path) -> None:
    # Session 21: accepted (by a suite that does not count clusters); after deployment and the whole
    # evaluation the gate said "a clustered SE needs at least 2 clusters, got 1": inconclusive, always.
    _recluster(project, lambda i: "all")
    assert check(project) == at(project, "dataset: golden", "evaluate.dataset") + (
        "all 351 cases of dataset golden are in one cluster ('all'), and the gate's clustered comparison "
        "needs at least 2, so every decision would be inconclusive; give the cases the cluster of the "
        "situation they test, or leave `cluster` out to make each case its own"
    )


def test_a_golden_set_of_one_case_clusters_passes(project: Path) -> None:
    _recluster(project, lambda i: None)  # each case its own cluster
    check_config(load_config(project / "pipeline.yaml"))


# -- train ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("\n", "train.jsonl holds no training examples"),
        ('{"id": "x", "input": "hi"}\n', "x.jsonl:1: not a training example (Field required)"),
    ],
)
def test_training_data_without_examples_fails_validation(project: Path, text: str, why: str) -> None:
    # Before: only checked with cohorts set; an empty file failed the run with "list index out of range".
    name = "train.jsonl" if "no training" in why else "x.jsonl"
    (project / name).write_text(text)
    edit(project, "  data: datasets/support/train.jsonl", f"  data: {name}")
    message = check(project)
    assert message.startswith(at(project, f"data: {name}", "train.data")) and message.endswith(why), message


def _training_rows(keep: Callable[[dict[str, object]], bool]) -> str:
    import json

    rows = [json.loads(line) for line in (ROOT / "datasets/support/train.jsonl").open(encoding="utf-8")]
    return "".join(json.dumps(row) + "\n" for row in rows if keep(row))


@pytest.mark.parametrize(
    ("keep", "why"),
    [
        (lambda row: row["intent"] == "order_status", "training data needs at least two intents"),
        (
            lambda row: row["reason"] in (None, "damaged"),
            "training data has one `reason` ('damaged'): the reason classifier needs at least two",
        ),
    ],
    ids=["one-intent", "one-reason"],
)
def test_training_data_the_step_would_refuse_fails_validation(
    project: Path, keep: Callable[[dict[str, object]], bool], why: str
) -> None:
    # Before: validate passed; the run failed at train_model, after validating the datasets.
    (project / "train.jsonl").write_text(_training_rows(keep))
    edit(project, "  data: datasets/support/train.jsonl", "  data: train.jsonl")
    message = check(project)
    assert message.startswith(at(project, "data: train.jsonl", "train.data")), message
    assert f"train.jsonl: {why}" in message, message


def test_cohorts_the_step_would_refuse_fail_validation_under_train_cohorts(project: Path) -> None:
    (project / "train.jsonl").write_text(
        _training_rows(lambda row: row["cohort"] == "2026-q2" or row["intent"] == "kb_question")
    )
    edit(
        project,
        "  data: datasets/support/train.jsonl",
        "  data: train.jsonl\n  cohorts: [2026-q3]\n  bootstrap_champion: false",
    )
    message = check(project)
    assert message.startswith(at(project, "cohorts: [2026-q3]", "train.cohorts")), message
    assert message.endswith(
        "cohorts 2026-q3 of train.jsonl: training data needs at least two intents, found ['kb_question']"
    ), message


def test_a_bootstrap_cohort_the_step_would_refuse_is_a_warning(project: Path) -> None:
    """Only a fresh registry trains the oldest cohort alone, so validate warns and passes."""
    from agent_release.pipelines.config_checks import config_warnings

    (project / "train.jsonl").write_text(
        _training_rows(lambda row: row["cohort"] == "2026-q3" or row["intent"] == "order_status")
    )
    edit(project, "  data: datasets/support/train.jsonl", "  data: train.jsonl")
    loaded = load_config(project / "pipeline.yaml")
    check_config(loaded)
    (warning,) = [w for w in config_warnings(loaded) if "train.bootstrap_champion" in w]
    assert "oldest cohort (2026-q2) alone" in warning and "at least two intents" in warning, warning
    edit(project, "  data: train.jsonl", "  data: train.jsonl\n  bootstrap_champion: false")
    assert not [w for w in config_warnings(load_config(project / "pipeline.yaml")) if "train." in w]


@pytest.mark.parametrize(
    ("keep", "cohorts"), [(lambda row: row["cohort"] == "2026-q2", None), (lambda row: True, "[2026-q2]")]
)
def test_a_bootstrap_champion_that_would_be_the_challenger_again_is_a_warning(
    project: Path, keep: Callable[[dict[str, object]], bool], cohorts: str | None
) -> None:
    """One cohort to train on: the fresh registry's champion and the challenger were the same model (same
    examples, same seed, byte-identical files), registered twice and evaluated against each other."""
    from agent_release.pipelines.config_checks import config_warnings

    (project / "train.jsonl").write_text(_training_rows(keep))
    extra = f"\n  cohorts: {cohorts}" if cohorts else ""
    edit(project, "  data: datasets/support/train.jsonl", f"  data: train.jsonl{extra}")
    loaded = load_config(project / "pipeline.yaml")
    check_config(loaded)
    (warning,) = [w for w in config_warnings(loaded) if "train.bootstrap_champion" in w]
    assert "the same model twice" in warning, warning


def test_empty_cohort_list_fails_validation(project: Path) -> None:
    # Before: accepted; the run trained and approved a bootstrap champion, then found no challenger examples.
    edit(
        project,
        "  package_group: support-model\n\ndeploy",
        "  package_group: support-model\n  cohorts: []\n\ndeploy",
    )
    with pytest.raises(ConfigError) as info:
        load_config(project / "pipeline.yaml")
    assert str(info.value) == at(project, "cohorts: []", "train.cohorts") + (
        "List should have at least 1 item after validation, not 0"
    )


def test_training_on_an_empty_file_registers_nothing(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text("\n")
    registry = FakeRegistry()
    config = TrainConfig(data="train.jsonl", package_group="g")
    with pytest.raises(TrainingDataError, match=r"^no training examples in train\.jsonl$"):
        train_model(config, cast(Backend, registry), tmp_path, tmp_path / "artifacts")
    assert registry.list_packages("g") == [] and registry.list_audit() == []


def test_the_shipped_pipeline_still_passes(project: Path) -> None:
    check_config(load_config(project / "pipeline.yaml"))
