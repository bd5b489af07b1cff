"""register_agents against a real MLflow SQLite store in tmp_path: what lands in MLflow, and idempotency."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_release.steps.deploy_variants import DeployedVariant, DeployReport
from agent_release.steps.evaluation_records import Role
from agent_release.steps.register_agents import (
    RegistrationError,
    promote_aliases,
    register_agents,
    tools_sha256,
)
from agent_release.steps.register_agents_config import AgentConfig, InferenceConfig
from agent_release.steps.registration_records import RegistrationReport

REPO = Path(__file__).resolve().parents[2]
ENDPOINT = "support-agent"


def deployed(
    champion_role: Role = "champion", challenger_role: Role = "challenger", *, count: int = 2
) -> DeployReport:
    group = "arn:aws:sagemaker:us-east-1:111122223333:model-package/support-agent"
    variants = (
        DeployedVariant(
            name="variant-a", role=champion_role, package_arn=f"{group}/1", version=1, weight=0.9
        ),
        DeployedVariant(
            name="variant-b", role=challenger_role, package_arn=f"{group}/2", version=2, weight=0.1
        ),
    )[:count]
    by_role = {v.role: v for v in variants}
    return DeployReport(
        endpoint_name=ENDPOINT,
        package_group="support-agent",
        variants=variants,
        champion=by_role.get("champion"),
        challenger=by_role.get("challenger"),
        bootstrap=False,
        changed=True,
    )


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its schema migrated once (migrations take seconds; copies do not)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_uri(tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh SQLite tracking store; MLflow's global URIs and the environment are restored afterwards."""
    import mlflow

    from agent_release.pipelines.tracking import configure_tracking

    # Recorded by monkeypatch so configure_tracking's environment changes are undone at teardown.
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACE_PROPAGATE_TO_OTEL_CONTEXT"):
        monkeypatch.delenv(key, raising=False)
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    configure_tracking(uri, "agents-test")
    yield uri
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    mlflow.set_registry_uri(None)  # type: ignore[arg-type]


def register(config: AgentConfig, uri: str, deploy: DeployReport | None = None) -> RegistrationReport:
    return register_agents(
        config, deploy or deployed(), tracking_uri=uri, experiment="agents-test", base_dir=REPO
    )


def client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def counts(uri: str, report: RegistrationReport) -> tuple[int, int, int]:
    """(logged models, registered model versions, prompt versions) in the store."""
    import mlflow

    c = client(uri)
    models = mlflow.search_logged_models(experiment_ids=[report.experiment_id], output_format="list")
    versions = c.search_model_versions("name = 'support-agent'")
    prompts = c.search_prompt_versions("support-agent-system-prompt")
    return len(models), len(versions), len(prompts)


def test_registers_one_agent_version_per_variant_with_aliases_params_and_prompt(tracking_uri: str) -> None:
    import mlflow

    config = AgentConfig(
        system_prompt="You answer support questions.", inference=InferenceConfig(max_tokens=64)
    )
    report = register(config, tracking_uri)

    assert report.changed is True
    assert report.tracking_uri == tracking_uri
    champion, challenger = report.for_role("champion"), report.for_role("challenger")
    assert champion is not None and challenger is not None
    assert champion.variant == "variant-a" and challenger.variant == "variant-b"
    assert champion.logged_model_id != challenger.logged_model_id

    c = client(tracking_uri)
    aliases = c.get_registered_model("support-agent").aliases
    assert aliases == {
        "champion": int(champion.registered_model_version or 0),
        "challenger": int(challenger.registered_model_version or 0),
    }
    version = c.get_model_version_by_alias("support-agent", "challenger")
    assert version.source == f"models:/{challenger.logged_model_id}"

    model = mlflow.get_logged_model(challenger.logged_model_id)
    assert model.experiment_id == report.experiment_id
    assert model.params["endpoint_name"] == ENDPOINT
    assert model.params["variant"] == "variant-b"
    assert model.params["package_arn"].endswith("/2") and model.params["package_version"] == "2"
    assert model.params["prompt_uri"] == "prompts:/support-agent-system-prompt/1" == challenger.prompt_uri
    assert model.params["tool_names"] == "lookup_order,check_refund_eligibility,search_kb"
    assert model.params["max_tokens"] == "64"
    assert model.params["tools_sha256"] == challenger.tools_hash
    # The prompt version is linked to the agent version that uses it.
    assert json.loads(model.tags["mlflow.linkedPrompts"]) == [
        {"name": "support-agent-system-prompt", "version": "1"}
    ]

    prompt = mlflow.genai.load_prompt(challenger.prompt_uri, link_to_model=False)
    assert prompt.template == "You answer support questions."


def test_tools_hash_is_the_sha256_of_the_tools_json_specs(tracking_uri: str) -> None:
    from agent_release.agents.builder import load_toolset, tool_specs

    report = register(AgentConfig(system_prompt="p", tools=["search_kb"]), tracking_uri)
    tools = load_toolset("support", REPO / "datasets" / "support", ["search_kb"])
    agent = report.agents[0]
    assert agent.tool_names == ("search_kb",)
    # Computed here from the specs Strands sends, independently of tools_sha256.
    canonical = json.dumps(tool_specs(tools), sort_keys=True, separators=(",", ":"), default=str)
    assert agent.tools_hash == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    # Key order must not matter, content must.
    specs = tool_specs(tools)
    reordered = [dict(reversed(list(s.items()))) for s in specs]
    assert tools_sha256(reordered) == agent.tools_hash
    assert tools_sha256([{**specs[0], "description": "other"}]) != agent.tools_hash


def test_second_run_with_nothing_changed_registers_nothing(tracking_uri: str) -> None:
    config = AgentConfig(system_prompt="You answer support questions.")
    first = register(config, tracking_uri)
    before = counts(tracking_uri, first)

    second = register(config, tracking_uri)

    assert second.changed is False
    assert counts(tracking_uri, second) == before == (2, 2, 1)
    assert [a.logged_model_id for a in second.agents] == [a.logged_model_id for a in first.agents]
    assert [a.registered_model_version for a in second.agents] == [
        a.registered_model_version for a in first.agents
    ]


def test_changed_prompt_creates_new_prompt_version_and_new_agent_versions(tracking_uri: str) -> None:
    first = register(AgentConfig(system_prompt="Version one."), tracking_uri)
    second = register(AgentConfig(system_prompt="Version two."), tracking_uri)

    assert second.changed is True
    assert {a.prompt_uri for a in second.agents} == {"prompts:/support-agent-system-prompt/2"}
    assert not {a.logged_model_id for a in first.agents} & {a.logged_model_id for a in second.agents}
    assert counts(tracking_uri, second) == (4, 4, 2)
    aliases = client(tracking_uri).get_registered_model("support-agent").aliases
    new_champion = second.for_role("champion")
    assert new_champion is not None
    assert aliases["champion"] == int(new_champion.registered_model_version or 0)


def test_a_reverted_prompt_finds_its_earlier_version_and_agent_versions_again(tracking_uri: str) -> None:
    # A -> B -> A used to register prompt version 3 (the text of version 1) and a new LoggedModel and model
    # version for each variant, although agents made of exactly those parts were registered already.
    first = register(AgentConfig(system_prompt="Version one."), tracking_uri)
    register(AgentConfig(system_prompt="Version two."), tracking_uri)

    reverted = register(AgentConfig(system_prompt="Version one."), tracking_uri)

    assert {a.prompt_uri for a in reverted.agents} == {"prompts:/support-agent-system-prompt/1"}
    assert [a.logged_model_id for a in reverted.agents] == [a.logged_model_id for a in first.agents]
    assert counts(tracking_uri, reverted) == (4, 4, 2)
    champion = reverted.for_role("champion")
    assert champion is not None
    aliases = client(tracking_uri).get_registered_model("support-agent").aliases
    assert aliases["champion"] == int(champion.registered_model_version or 0)


def test_changed_tool_selection_creates_new_agent_versions_but_no_new_prompt(tracking_uri: str) -> None:
    first = register(AgentConfig(system_prompt="Same prompt."), tracking_uri)
    second = register(AgentConfig(system_prompt="Same prompt.", tools=["lookup_order"]), tracking_uri)

    assert second.changed is True
    assert {a.tools_hash for a in second.agents}.isdisjoint({a.tools_hash for a in first.agents})
    assert counts(tracking_uri, second) == (4, 4, 1)


def test_swapped_roles_move_aliases_without_new_versions(tracking_uri: str) -> None:
    config = AgentConfig(system_prompt="Same prompt.")
    first = register(config, tracking_uri)
    swapped = register(config, tracking_uri, deployed("challenger", "champion"))

    assert swapped.changed is True
    assert counts(tracking_uri, swapped) == (2, 2, 1)
    aliases = client(tracking_uri).get_registered_model("support-agent").aliases
    old_champion, old_challenger = first.for_role("champion"), first.for_role("challenger")
    assert old_champion is not None and old_challenger is not None
    assert aliases == {
        "champion": int(old_challenger.registered_model_version or 0),
        "challenger": int(old_champion.registered_model_version or 0),
    }


def test_promote_aliases_moves_champion_and_drops_challenger(tracking_uri: str) -> None:
    report = register(AgentConfig(system_prompt="p"), tracking_uri)
    challenger = report.for_role("challenger")
    assert challenger is not None and challenger.registered_model_version is not None

    promote_aliases("support-agent", challenger.registered_model_version, tracking_uri=tracking_uri)

    aliases = client(tracking_uri).get_registered_model("support-agent").aliases
    assert aliases == {"champion": int(challenger.registered_model_version)}
    with pytest.raises(RegistrationError, match="no version 99"):
        promote_aliases("support-agent", 99, tracking_uri=tracking_uri)


def test_single_variant_removes_a_stale_challenger_alias(tracking_uri: str) -> None:
    register(AgentConfig(system_prompt="p"), tracking_uri)
    report = register(AgentConfig(system_prompt="p"), tracking_uri, deployed(count=1))
    assert report.changed is True
    assert set(client(tracking_uri).get_registered_model("support-agent").aliases) == {"champion"}


def test_the_promoted_package_redeployed_as_champion_stays_the_evaluated_version(tracking_uri: str) -> None:
    # After a promotion the next run deploys the challenger's package (2) in the champion slot, alone. It used
    # to become a new LoggedModel and model version, and the champion alias moved to that unevaluated one.
    config = AgentConfig(system_prompt="p")
    first = register(config, tracking_uri)
    challenger = first.for_role("challenger")
    assert challenger is not None and challenger.registered_model_version is not None
    promote_aliases("support-agent", challenger.registered_model_version, tracking_uri=tracking_uri)
    promoted = DeployedVariant(
        name="variant-a", role="champion", package_arn=challenger.package_arn, version=2, weight=1.0
    )
    redeploy = deployed(count=1).model_copy(update={"variants": (promoted,), "champion": promoted})

    again = register(config, tracking_uri, redeploy)

    champion = again.for_role("champion")
    assert champion is not None and champion.variant == "variant-a"
    assert champion.logged_model_id == challenger.logged_model_id
    assert champion.registered_model_version == challenger.registered_model_version
    assert again.changed is False
    assert counts(tracking_uri, again) == (2, 2, 1)
    aliases = client(tracking_uri).get_registered_model("support-agent").aliases
    assert aliases == {"champion": int(challenger.registered_model_version)}


def test_two_slots_of_one_deploy_made_of_the_same_parts_stay_two_agent_versions(tracking_uri: str) -> None:
    same = deployed()
    twin = same.variants[1].model_copy(update={"package_arn": same.variants[0].package_arn, "version": 1})
    report = register(
        AgentConfig(system_prompt="p"),
        tracking_uri,
        same.model_copy(update={"variants": (same.variants[0], twin)}),
    )
    assert len({a.logged_model_id for a in report.agents}) == 2


def test_changed_tool_data_is_a_new_agent_version(tracking_uri: str, tmp_path: Path) -> None:
    # The same tools over other data answer differently (a 7-day refund window instead of 30): it used to
    # reuse the LoggedModels, attributing both behaviours to one agent version.
    data = tmp_path / "tool-data"
    shutil.copytree(REPO / "datasets" / "support", data)
    config = AgentConfig(system_prompt="p", tool_data_dir=str(data))
    first = register(config, tracking_uri)
    assert register(config, tracking_uri).changed is False
    (data / "golden.jsonl").write_text("")  # not tool data: the agent is unchanged
    assert register(config, tracking_uri).changed is False
    policy = json.loads((data / "policy.json").read_text())
    (data / "policy.json").write_text(json.dumps({**policy, "return_window_days": 7}))

    second = register(config, tracking_uri)

    assert second.changed is True
    assert not {a.logged_model_id for a in first.agents} & {a.logged_model_id for a in second.agents}
    import mlflow

    params = [mlflow.get_logged_model(a.logged_model_id).params for a in (*first.agents, *second.agents)]
    assert len({p["tool_data_sha256"] for p in params}) == 2


def test_a_model_left_unlinked_by_an_interrupted_run_is_linked_by_the_next(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow import MlflowClient

    config = AgentConfig(system_prompt="p")
    real = MlflowClient.link_prompt_version_to_model

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("stopped between creating the model and linking its prompt")

    monkeypatch.setattr(MlflowClient, "link_prompt_version_to_model", crash)
    with pytest.raises(RuntimeError, match="stopped between"):
        register(config, tracking_uri)
    monkeypatch.setattr(MlflowClient, "link_prompt_version_to_model", real)

    report = register(config, tracking_uri)

    for agent in report.agents:
        linked = json.loads(mlflow.get_logged_model(agent.logged_model_id).tags["mlflow.linkedPrompts"])
        assert linked == [{"name": "support-agent-system-prompt", "version": "1"}]
    assert counts(tracking_uri, report)[0] == 2  # the unlinked model was found again, not duplicated


def test_prompt_file_and_default_prompt(tracking_uri: str, tmp_path: Path) -> None:
    import mlflow

    from agent_release.agents.support.prompts import SYSTEM_PROMPT

    report = register(AgentConfig(), tracking_uri)
    default = mlflow.genai.load_prompt(report.agents[0].prompt_uri, link_to_model=False)
    assert default.template == SYSTEM_PROMPT

    (tmp_path / "prompt.txt").write_text("From a file.", encoding="utf-8")
    from_file = register_agents(
        AgentConfig(system_prompt_file="prompt.txt", tool_data_dir=str(REPO / "datasets" / "support")),
        deployed(),
        tracking_uri=tracking_uri,
        experiment="agents-test",
        base_dir=tmp_path,
    )
    assert mlflow.genai.load_prompt(from_file.agents[0].prompt_uri, link_to_model=False).template == (
        "From a file."
    )


def test_user_mistakes_raise_one_line_errors(tracking_uri: str, tmp_path: Path) -> None:
    messages: list[str] = []
    with pytest.raises(RegistrationError, match="more than one deployed variant plays role champion") as info:
        register(AgentConfig(system_prompt="p"), tracking_uri, deployed("champion", "champion"))
    messages.append(str(info.value))
    with pytest.raises(RegistrationError, match="cannot be read") as info:
        register(AgentConfig(system_prompt_file="missing.txt"), tracking_uri)
    messages.append(str(info.value))
    with pytest.raises(RegistrationError, match="no deployed variants") as info:
        register(AgentConfig(system_prompt="p"), tracking_uri, deployed(count=0))
    messages.append(str(info.value))
    with pytest.raises(ValueError, match="unknown tool") as value_info:
        register(AgentConfig(system_prompt="p", tools=["nope"]), tracking_uri)
    messages.append(str(value_info.value))
    assert [m for m in messages if "\n" in m] == [], messages


def test_a_user_toolsets_data_hash_covers_its_files_but_not_the_runs_own_state(tmp_path: Path) -> None:
    # With tool_data_dir "." a run's own state sits under it: hashing that made every run a new version.
    from agent_release.agents.builder import toolset_data_sha256

    (tmp_path / "rates.csv").write_text("tier,rate\na,1\n")
    (tmp_path / ".agent-release").mkdir()
    (tmp_path / ".agent-release" / "state.db").write_bytes(b"one")
    (tmp_path / "mlflow.db").write_bytes(b"one")
    first = toolset_data_sha256("my_pkg.tools:factory", tmp_path)
    (tmp_path / ".agent-release" / "state.db").write_bytes(b"two")
    (tmp_path / "mlflow.db").write_bytes(b"two")
    assert toolset_data_sha256("my_pkg.tools:factory", tmp_path) == first
    (tmp_path / "rates.csv").write_text("tier,rate\na,2\n")
    assert toolset_data_sha256("my_pkg.tools:factory", tmp_path) != first
