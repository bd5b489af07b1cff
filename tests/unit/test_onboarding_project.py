"""A team adopting agent-release for its own agent (an IT helpdesk, not the demo's customer support).

Each test builds that project in ``tmp_path`` (``_shared/helpdesk_project.py``) and proves one thing that used
to work for the demo only: training data with no refund ``reason``, a golden-set tag other than ``intent`` and
``difficulty`` in the data contract, the demo model's answers for tools it was not written for, a scorer or
toolset module beside pipeline.yaml (the error now names the ``PYTHONPATH`` that fixes it), and keys left at
the demo's default paths (the error now says they were not set and what to set).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _shared.cli import assert_one_line_error, run_cli
from _shared.helpdesk_project import REPLIES, write_helpdesk_project
from _shared.pipeline_yaml import edit

from agent_release.agents.demo_model.chat import SupportChatModel
from agent_release.agents.demo_model.compose import ToolOutcome, compose_answer
from agent_release.agents.demo_model.model import load_trained_model
from agent_release.agents.demo_model.training import (
    TrainingDataError,
    check_trainable,
    load_examples,
    train_support_model,
)
from agent_release.pipelines.config import ConfigError, check_referenced_files, load_config
from agent_release.pipelines.config_checks import config_warnings
from agent_release.pipelines.local_backend import LocalBackend
from agent_release.steps.backend import BackendError
from agent_release.steps.deploy_variants import DeployConfig, deploy_variants
from agent_release.steps.validate_datasets import DatasetSpec, cases_frame, validate_datasets

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    return write_helpdesk_project(tmp_path / "helpdesk")


def _tool(name: str, argument: str) -> dict[str, object]:
    schema = {"type": "object", "properties": {argument: {"type": "string"}}, "required": [argument]}
    return {"type": "function", "function": {"name": name, "parameters": schema}}


TOOLS = [
    _tool("reset_password", "username"),
    _tool("lookup_ticket", "ticket_id"),
    _tool("search_runbook", "query"),
]


def _first_call(model: SupportChatModel, text: str) -> dict[str, object]:
    answer = model.complete({"messages": [{"role": "user", "content": text}], "tools": TOOLS})
    call = answer["choices"][0]["message"]["tool_calls"][0]["function"]
    return {"name": call["name"], "arguments": json.loads(call["arguments"])}


# -- training data with no `reason` ------------------------------------------------------------------------------


def test_training_data_without_reasons_trains_a_model_that_calls_the_projects_tools(project: Path) -> None:
    # Before: "training data needs refund examples with at least two reasons", from validate and the step alike:
    # the demo model family could not be trained for any agent without the demo's refund tool.
    trained = train_support_model(project / "datasets/train.jsonl", seed=7)
    assert trained.reason is None and "reason" not in trained.info["training_accuracy"]
    model = SupportChatModel(trained)
    assert _first_call(model, "Any update on ticket INC-40037") == {
        "name": "lookup_ticket",
        "arguments": {"ticket_id": "INC-40037"},
    }
    assert _first_call(model, "Please reset the password for ben.kim")["name"] == "reset_password"


def test_training_data_with_a_single_reason_is_still_refused_with_the_fix(project: Path) -> None:
    examples = load_examples(project / "datasets/train.jsonl")
    one_reason = [e.model_copy(update={"reason": "vpn"}) if i == 0 else e for i, e in enumerate(examples)]
    with pytest.raises(
        TrainingDataError, match=r"one `reason` \('vpn'\).*set `reason` to null on every example"
    ):
        check_trainable(one_reason)


def test_a_tool_less_intent_answers_with_the_reply_it_was_trained_on(project: Path) -> None:
    # Before: the reply field did not exist (an example with one was refused), and every tool-less intent but
    # `escalate` answered with the demo shop's greeting: "Hello! I'm the shop's support assistant...".
    model = SupportChatModel(train_support_model(project / "datasets/train.jsonl", seed=7))
    for text, intent in (("thanks, that fixed it", "thanks"), ("I want to talk to a person", "escalate")):
        answer = model.complete({"messages": [{"role": "user", "content": text}], "tools": TOOLS})
        assert answer["choices"][0]["message"]["content"] == REPLIES[intent]


def test_a_model_saved_before_replies_were_learned_still_answers(project: Path, tmp_path: Path) -> None:
    trained = train_support_model(project / "datasets/train.jsonl", seed=7)
    del trained.__dict__["replies"]  # as an older file unpickles
    path = trained.save(tmp_path / "old.joblib")
    model = SupportChatModel(load_trained_model(path))
    answer = model.complete(
        {"messages": [{"role": "user", "content": "thanks, that fixed it"}], "tools": TOOLS}
    )
    assert answer["choices"][0]["message"]["content"].startswith("Hello! I'm the shop's support assistant")


# -- the data contract sees every tag ---------------------------------------------------------------------------


def test_a_projects_own_tag_is_a_column_its_data_contract_can_check(project: Path) -> None:
    # Before: only the demo's `intent` and `difficulty` tags became columns; a suite expectation on `priority`
    # failed with 'The column "priority" in BatchData does not exist' whatever the data held.
    golden = project / "datasets/golden.jsonl"
    rows = [json.loads(line) for line in golden.read_text().splitlines()]
    assert "priority" in cases_frame(rows).columns
    spec = {"golden": DatasetSpec(path="datasets/golden.jsonl", suite="datasets/golden.suite.json")}
    assert validate_datasets(spec, project).success

    rows[4]["tags"]["priority"] = "urgent"
    golden.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = validate_datasets(spec, project)
    failures = [f for d in report.datasets for f in d.failures]
    assert not report.success
    assert [(f.column, f.sample_ids) for f in failures] == [("priority", ("HD-005",))], failures


def test_a_tag_named_like_a_computed_column_does_not_replace_it() -> None:
    rows = [{"id": "a", "input": "x", "cluster": "c", "tags": {"cluster_size": "big", "id": "z"}}]
    frame = cases_frame(rows)
    assert list(frame["id"]) == ["a"] and list(frame["cluster_size"]) == [1]


# -- the demo model family's answers for other tools ------------------------------------------------------------


def test_nothing_found_by_a_projects_tool_is_not_worded_as_a_missing_order() -> None:
    # Before: "I could not find an order with the id . Please double-check the id." for a ticket or a user.
    result = {"found": False, "ticket_id": "INC-99999"}
    answer = compose_answer([ToolOutcome("lookup_ticket", json.dumps(result), result)])
    assert "order" not in answer and "lookup_ticket" in answer and "INC-99999" in answer
    order = {"found": False, "order_id": "ORD-1", "message": "no order with id ORD-1"}
    assert "could not find an order with the id ORD-1" in compose_answer(
        [ToolOutcome("lookup_order", json.dumps(order), order)]
    )


def test_a_message_key_in_a_projects_tool_result_does_not_end_the_plan() -> None:
    # Before: any result with a "message" and no "decision" counted as a failed tool (the refund tool's
    # unknown-reason answer), so a two-step plan stopped after a result such as {"status": ..., "message": ...}.
    ok = {"found": True, "username": "ana.ross", "status": "reset", "message": "temporary password sent"}
    assert not ToolOutcome("reset_password", json.dumps(ok), ok).failed
    refused = {"found": True, "order_id": "ORD-1", "message": "unknown reason 'x'"}
    assert ToolOutcome("check_refund_eligibility", json.dumps(refused), refused).failed


# -- a module beside pipeline.yaml ------------------------------------------------------------------------------


def test_a_module_beside_pipeline_yaml_fails_with_the_pythonpath_that_fixes_it(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: "... cannot be imported: No module named 'itdesk'", nothing about where Python looks or what to
    # set; the docs' `PYTHONPATH=.` is wrong too when `-c` names a file in another directory, as here.
    monkeypatch.delenv("PYTHONPATH", raising=False)
    proc = run_cli(["validate", "-c", str(project / "pipeline.yaml")], cwd=tmp_path, home=tmp_path / "h")
    assert_one_line_error(
        proc,
        "No module named 'itdesk'",
        f"'itdesk' is in {project}, which Python does not search: run with PYTHONPATH={project}",
    )
    assert not (tmp_path / "h").exists()


def test_the_pythonpath_the_error_names_makes_the_project_valid(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(project))
    proc = run_cli(["validate", "-c", str(project / "pipeline.yaml")], cwd=tmp_path, home=tmp_path / "h")
    assert proc.returncode == 0, proc.stderr
    assert "golden: ok (48 rows, 16 clusters" in proc.stdout


# -- keys left at the demo's default paths ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "key", "fix"),
    [
        (
            "    inputs: datasets/live.jsonl\n",
            "promote.live_traffic.inputs",
            "set promote.live_traffic.inputs to a JSONL file of held-out inputs, or "
            "promote.live_traffic.enabled: false",
        ),
        ("  tool_data_dir: data\n", "agent.tool_data_dir", "set agent.tool_data_dir"),
    ],
)
def test_a_key_left_at_the_demos_default_path_says_it_was_not_set(
    project: Path, old: str, key: str, fix: str
) -> None:
    # Before: "<key>: file not found: <project>/datasets/support/...", a path the project never wrote.
    edit(project, old, "")
    with pytest.raises(ConfigError) as info:
        check_referenced_files(load_config(project / "pipeline.yaml"))
    message = str(info.value)
    assert f"{key}: not set, so it is the demo's default {project}/datasets/support" in message, message
    assert message.endswith(fix) or fix in message, message


def test_a_missing_file_the_project_named_is_still_file_not_found(project: Path) -> None:
    edit(project, "inputs: datasets/live.jsonl", "inputs: datasets/gone.jsonl")
    with pytest.raises(ConfigError, match=r"promote.live_traffic.inputs: file not found: .*gone.jsonl$"):
        check_referenced_files(load_config(project / "pipeline.yaml"))


# -- a project with no package and no training ------------------------------------------------------------------


def test_deploying_from_an_empty_package_group_names_both_ways_to_fill_it(tmp_path: Path) -> None:
    # Before: "model package group 'helpdesk-model' has no packages to deploy" and no next step (a project
    # without `train:` must register its model itself).
    backend = LocalBackend(tmp_path / "home")
    try:
        backend.ensure_package_group("helpdesk-model")
        config = DeployConfig(endpoint_name="helpdesk-agent", package_group="helpdesk-model")
        with pytest.raises(BackendError) as info:
            deploy_variants(config, backend)
    finally:
        backend.close()
    assert str(info.value).endswith(
        "has no packages to deploy: enable `train:` to train and register one, or register your model first "
        "(`agent-release package register`; on SageMaker, in its Model Registry)"
    ), info.value


# -- agent.name of a project's own agent ------------------------------------------------------------------------


def test_an_agent_of_a_projects_own_toolset_is_not_registered_under_the_demos_name(project: Path) -> None:
    # Before: with agent.name left out the helpdesk agent, its prompt and its versions were registered in
    # MLflow as "support-agent", the demo's, beside (or into) the support agent's on a shared server.
    edit(project, "  name: helpdesk-agent\n", "")
    assert (
        load_config(project / "pipeline.yaml").config.agent.name == "helpdesk-agent"
    )  # deploy.endpoint_name
    edit(project, "  toolset: itdesk.tools:helpdesk_tools\n", "  toolset: support\n")
    assert (
        load_config(project / "pipeline.yaml").config.agent.name == "support-agent"
    )  # the demo's, as before


def test_an_agent_name_the_project_sets_is_kept(project: Path) -> None:
    edit(project, "  name: helpdesk-agent\n", "  name: it-desk\n")
    assert load_config(project / "pipeline.yaml").config.agent.name == "it-desk"


# -- expected tools the agent does not have ---------------------------------------------------------------------


def _rewrite(path: Path, old: str, new: str, count: int) -> None:
    text = path.read_text()
    assert text.count(old) >= count, old
    path.write_text(text.replace(old, new, count))


def test_golden_cases_and_training_examples_expecting_tools_the_agent_lacks_are_warned_about(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: `validate` said "valid" with no word: a case expecting a misspelt tool or an argument the tool
    # does not take can never match, and a model trained on such trajectories plans calls it cannot make.
    monkeypatch.syspath_prepend(str(project))
    _rewrite(project / "datasets/golden.jsonl", '"name": "reset_password"', '"name": "reset_pasword"', 2)
    _rewrite(project / "datasets/golden.jsonl", '"arguments": {"ticket_id"', '"arguments": {"ticket"', 1)
    _rewrite(project / "datasets/train.jsonl", '"name": "search_runbook"', '"name": "search_kb"', 1)
    warnings = [
        w for w in config_warnings(load_config(project / "pipeline.yaml")) if "tools do not have" in w
    ]
    assert len(warnings) == 2, warnings
    golden, train = warnings
    assert golden.startswith(f"{project / 'pipeline.yaml'}:7: datasets.golden.path: 3 cases expect ")
    assert "'reset_pasword', 'lookup_ticket(ticket)' (e.g. HD-001, HD-002, HD-005)" in golden, golden
    assert "its tools: lookup_ticket(ticket_id), reset_password(username), search_runbook(query)" in golden
    assert train.startswith(
        f"{project / 'pipeline.yaml'}:10: train.data: 1 training examples call 'search_kb'"
    )


def test_the_demo_and_the_helpdesk_project_expect_only_tools_their_agents_have(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(project))
    for path in (project / "pipeline.yaml", ROOT / "pipeline.yaml"):
        warnings = config_warnings(load_config(path))
        assert not [w for w in warnings if "tools do not have" in w], warnings
