"""Step 4: register one agent version per deployed variant in MLflow.

For each variant of the deployed endpoint this records, with MLflow's own APIs:

- the system prompt in the Prompt Registry (``mlflow.genai.register_prompt``; a new version only when no
  version holds the text yet), URI ``prompts:/<agent>-system-prompt/<version>``;
- a LoggedModel (``mlflow.create_external_model``) whose params pin everything the agent is made of:
  endpoint, variant, model package, prompt URI, tool names, a SHA-256 of the tools' JSON specs, a SHA-256
  of the data the tools read and the inference parameters. A LoggedModel made of the same parts is reused
  rather than duplicated, also when the agent now serves from another variant slot (the promoted challenger
  deployed as the champion stays the version that was evaluated; its ``variant`` param names the slot it was
  first registered from);
- a version of the registered model ``<agent>`` pointing at ``models:/<model_id>``;
- registered-model aliases ``champion`` / ``challenger`` following the variants' roles.

Re-running with nothing changed registers nothing and returns ``changed=False``. The pipeline calls
``agent_release.pipelines.tracking.configure_tracking`` first (experiment, artifact location, autolog).

Usage::

    report = register_agents(config.agent, deploy_report, tracking_uri=uri, experiment="agent-release",
                             base_dir=project_dir)
    champion = report.for_role("champion")
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_release.agents.builder import load_toolset, tool_name, tool_specs, toolset_data_sha256
from agent_release.steps.deploy_variants import DeployedVariant, DeployReport
from agent_release.steps.evaluation_records import Role
from agent_release.steps.project_paths import project_path
from agent_release.steps.register_agents_config import AgentConfig
from agent_release.steps.registration_records import RegisteredAgent, RegistrationReport

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModel

logger = logging.getLogger(__name__)

ROLES: tuple[Role, ...] = ("champion", "challenger")
FINGERPRINT_TAG = "agent_release.fingerprint"
AGENT_TAG = "agent_release.agent"
VARIANT_TAG = "agent_release.variant"


class RegistrationError(ValueError):
    """The agent cannot be registered for a reason the user can fix (message is one line)."""


@dataclass(frozen=True)
class _Toolset:
    names: tuple[str, ...]
    sha256: str
    data_sha256: str


def register_agents(
    config: AgentConfig,
    deployed: DeployReport,
    *,
    tracking_uri: str,
    experiment: str,
    base_dir: Path,
) -> RegistrationReport:
    """Register prompt, LoggedModel, model version and alias of every deployed variant's agent.

    ``base_dir`` is the directory relative paths in ``config`` are resolved against (pipeline.yaml's).
    Raises :class:`RegistrationError` for a missing prompt file, no variants, or two variants sharing a role,
    and ``ValueError`` for an unknown toolset or tool name.
    """
    import mlflow
    from mlflow import MlflowClient

    roles = [v.role for v in deployed.variants]
    if not roles:
        raise RegistrationError(f"endpoint '{deployed.endpoint_name}' has no deployed variants to register")
    duplicated = sorted({r for r in roles if roles.count(r) > 1})
    if duplicated:
        raise RegistrationError(f"more than one deployed variant plays role {', '.join(duplicated)}")

    system_prompt = load_system_prompt(config, base_dir)
    toolset = _describe_toolset(config, base_dir)

    # Fluent APIs (register_prompt, create_external_model, register_model) use the global URIs.
    if mlflow.get_tracking_uri() != tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment_id = _experiment_id(client, experiment)

    prompt_name = f"{config.name}-system-prompt"
    prompt_uri, changed = _ensure_prompt(client, prompt_name, system_prompt, config.name)

    params_of = {
        v.name: _agent_params(config, deployed.endpoint_name, v, prompt_uri, toolset)
        for v in deployed.variants
    }
    slotless = [_identity(p, with_variant=False) for p in params_of.values()]
    agents: list[RegisteredAgent] = []
    for variant in deployed.variants:
        params = params_of[variant.name]
        # An agent version is what it is made of, not the slot it is served from: after a promotion the
        # next run deploys the promoted package as the champion variant, and it must stay the registry
        # version that was evaluated and carries the champion alias (a new LoggedModel here moved the alias
        # to an unevaluated version). Two variants of one deploy made of the same parts stay apart by slot.
        with_variant = slotless.count(_identity(params, with_variant=False)) > 1
        model, created_model = _ensure_logged_model(
            experiment_id,
            f"{config.name}-{variant.name}",
            params,
            with_variant=with_variant,
            agent=config.name,
            variant=variant.name,
        )
        prompt_version = prompt_uri.rsplit("/", 1)[1]
        if not _links_prompt(model, prompt_name, prompt_version):
            # Also for a model found again: a run that stopped between creating and linking left it unlinked.
            client.link_prompt_version_to_model(prompt_name, prompt_version, model.model_id)
        version, created_version = _ensure_model_version(client, config.name, model.model_id, variant.name)
        changed = changed or created_model or created_version
        agents.append(
            RegisteredAgent(
                variant=variant.name,
                role=variant.role,
                endpoint_name=deployed.endpoint_name,
                package_arn=variant.package_arn,
                package_version=variant.version,
                logged_model_id=model.model_id,
                prompt_uri=prompt_uri,
                registered_model_name=config.name,
                registered_model_version=version,
                tool_names=toolset.names,
                tools_hash=toolset.sha256,
                inference=config.inference,
                system_prompt_sha256=text_sha256(system_prompt),
                tool_data_sha256=toolset.data_sha256,
            )
        )
        logger.info(
            "agent=<%s>, variant=<%s>, role=<%s>, logged_model=<%s>, version=<%s> | agent registered",
            config.name,
            variant.name,
            variant.role,
            model.model_id,
            version,
        )

    wanted: dict[str, str | None] = {role: None for role in ROLES}
    for agent in agents:
        wanted[agent.role] = agent.registered_model_version
    changed = _sync_aliases(client, config.name, wanted) or changed
    return RegistrationReport(
        tracking_uri=tracking_uri, experiment_id=experiment_id, agents=tuple(agents), changed=changed
    )


def promote_aliases(
    registered_model_name: str, new_champion_version: str | int, *, tracking_uri: str | None = None
) -> None:
    """Point the ``champion`` alias at ``new_champion_version`` and remove the ``challenger`` alias.

    For the promotion step once the challenger has taken all traffic. ``tracking_uri`` defaults to the
    current registry URI.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        client.get_model_version(registered_model_name, str(new_champion_version))
    except MlflowException:
        raise RegistrationError(
            f"registered model '{registered_model_name}' has no version {new_champion_version}"
        ) from None
    _sync_aliases(client, registered_model_name, {"champion": str(new_champion_version), "challenger": None})


def text_sha256(text: str) -> str:
    """sha256 of ``text``'s UTF-8 bytes (a system prompt's, as :class:`RegisteredAgent` records it)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def agent_parts_changed(config: AgentConfig, base_dir: Path, agent: RegisteredAgent) -> str | None:
    """What of the system prompt and the tool data differs now from what ``agent`` was registered with (one
    line), or None. A resumed execution reuses its registration, and evaluating or promoting with other
    parts would credit the evidence to an agent version that never ran."""
    if agent.system_prompt_sha256 is not None:
        now = text_sha256(load_system_prompt(config, base_dir))
        if now != agent.system_prompt_sha256:
            return f"the system prompt (sha256 {agent.system_prompt_sha256[:12]}, now {now[:12]})"
    if agent.tool_data_sha256 is not None:
        now = toolset_data_sha256(config.toolset, project_path(base_dir, config.tool_data_dir))
        if now != agent.tool_data_sha256:
            return f"the tool data in {config.tool_data_dir} (sha256 {agent.tool_data_sha256[:12]}, now {now[:12]})"
    return None


def load_system_prompt(config: AgentConfig, base_dir: Path) -> str:
    """The system prompt text: inline, from ``system_prompt_file``, or the built-in support prompt."""
    if config.system_prompt is not None:
        return config.system_prompt
    if config.system_prompt_file is not None:
        path = project_path(base_dir, config.system_prompt_file)
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RegistrationError(
                f"agent.system_prompt_file '{path}' cannot be read: {exc.strerror}"
            ) from None
    if config.toolset == "support":
        from agent_release.agents.support.prompts import SYSTEM_PROMPT

        return SYSTEM_PROMPT
    raise RegistrationError(
        f"agent.system_prompt or agent.system_prompt_file is required for toolset '{config.toolset}'"
    )


def tools_sha256(specs: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 of tool specs as canonical JSON (key order and whitespace do not matter)."""
    canonical = json.dumps(list(specs), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _describe_toolset(config: AgentConfig, base_dir: Path) -> _Toolset:
    data_dir = project_path(base_dir, config.tool_data_dir)
    tools = load_toolset(config.toolset, data_dir, config.tools)
    return _Toolset(
        names=tuple(tool_name(t) for t in tools),
        sha256=tools_sha256(tool_specs(tools)),
        # The same tools over other data (a refund window of 7 days instead of 30) answer differently.
        data_sha256=toolset_data_sha256(config.toolset, data_dir),
    )


def _experiment_id(client: MlflowClient, experiment: str) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is not None and found.lifecycle_stage == "active":
        return str(found.experiment_id)
    if found is not None:
        client.restore_experiment(found.experiment_id)
        return str(found.experiment_id)
    # configure_tracking normally created it already (with the state directory's artifact location).
    return str(client.create_experiment(experiment))


def _ensure_prompt(client: MlflowClient, name: str, text: str, agent: str) -> tuple[str, bool]:
    """URI of a prompt version holding ``text``: the newest that does, else a newly registered one.

    Reverting the prompt to an earlier text finds that text's version again (and with it the agent versions
    built on it) instead of registering a duplicate.
    """
    import mlflow

    # cache_ttl_seconds=0: an alias lookup is otherwise cached for a minute, and "latest" must be current.
    latest = mlflow.genai.load_prompt(
        f"prompts:/{name}@latest", allow_missing=True, link_to_model=False, cache_ttl_seconds=0
    )
    if latest is not None and latest.template == text:
        return f"prompts:/{name}/{latest.version}", False
    if latest is not None:
        same = [int(v.version) for v in _prompt_versions(client, name) if v.template == text]
        if same:
            return f"prompts:/{name}/{max(same)}", False
    registered = mlflow.genai.register_prompt(
        name=name,
        template=text,
        commit_message=f"agent-release: system prompt of agent {agent}",
        tags={AGENT_TAG: agent, "agent_release.sha256": text_sha256(text)},
    )
    logger.info("prompt=<%s>, version=<%s> | prompt version registered", name, registered.version)
    return f"prompts:/{name}/{registered.version}", True


def _prompt_versions(client: MlflowClient, name: str) -> Iterator[Any]:
    """Every version of prompt ``name`` (all pages)."""
    token: str | None = None
    while True:
        page = client.search_prompt_versions(name, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _agent_params(
    config: AgentConfig,
    endpoint_name: str,
    variant: DeployedVariant,
    prompt_uri: str,
    toolset: _Toolset,
) -> dict[str, str]:
    """Everything the agent version is made of, as MLflow params (strings)."""
    inference = config.inference
    return {
        "agent": config.name,
        "endpoint_name": endpoint_name,
        "variant": variant.name,
        "package_arn": variant.package_arn,
        "package_version": str(variant.version),
        "prompt_uri": prompt_uri,
        "toolset": config.toolset,
        "tool_names": ",".join(toolset.names),
        "tools_sha256": toolset.sha256,
        "tool_data_sha256": toolset.data_sha256,
        "max_tokens": str(inference.max_tokens),
        "temperature": repr(float(inference.temperature)),
        "stream": str(inference.stream).lower(),
        "region": config.region,
    }


def _identity(params: Mapping[str, str], *, with_variant: bool) -> dict[str, str]:
    """What identifies an agent version among its params: all of them but the variant slot, unless asked."""
    return {k: v for k, v in params.items() if with_variant or k != "variant"}


def _links_prompt(model: LoggedModel, prompt_name: str, prompt_version: str) -> bool:
    """Whether ``model`` is linked to that prompt version already (MLflow's ``mlflow.linkedPrompts`` tag)."""
    try:
        linked = json.loads(model.tags.get("mlflow.linkedPrompts") or "[]")
    except ValueError:
        return False
    return any(
        isinstance(entry, dict)
        and entry.get("name") == prompt_name
        and str(entry.get("version")) == prompt_version
        for entry in linked
    )


def _ensure_logged_model(
    experiment_id: str,
    name: str,
    params: dict[str, str],
    *,
    with_variant: bool,
    agent: str,
    variant: str,
) -> tuple[LoggedModel, bool]:
    """The agent's LoggedModel whose params match ``params`` on :func:`_identity` (found by a fingerprint
    tag), created (named ``name``, with ``params``) when there is none."""
    import mlflow

    identity = _identity(params, with_variant=with_variant)
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()
    candidates = mlflow.search_logged_models(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{AGENT_TAG}` = '{agent}' AND tags.`{FINGERPRINT_TAG}` = '{fingerprint}'",
        output_format="list",
    )
    for candidate in sorted(candidates, key=lambda m: m.creation_timestamp or 0):
        found = _identity(dict(candidate.params), with_variant=with_variant)
        if found == identity and str(candidate.status) == "READY":
            return candidate, False
    model = mlflow.create_external_model(
        name=name,
        params=params,
        tags={FINGERPRINT_TAG: fingerprint, AGENT_TAG: agent, VARIANT_TAG: variant},
        model_type="agent",
        experiment_id=experiment_id,
    )
    logger.info("logged_model=<%s>, name=<%s> | logged model created", model.model_id, name)
    return model, True


def _ensure_model_version(
    client: MlflowClient, registered_model_name: str, model_id: str, variant: str
) -> tuple[str, bool]:
    """The registered model version whose source is ``models:/<model_id>``, registered when missing."""
    import mlflow
    from mlflow.exceptions import MlflowException

    source = f"models:/{model_id}"
    try:
        existing = list(
            client.search_model_versions(f"name = '{registered_model_name}' AND source_path = '{source}'")
        )
    except MlflowException:
        # Registries that cannot filter on source_path: list the model's versions and match here.
        every = client.search_model_versions(f"name = '{registered_model_name}'")
        existing = [v for v in every if v.source == source]
    if existing:
        return str(min(int(v.version) for v in existing)), False
    with _mlflow_event_logs_off():
        version = mlflow.register_model(source, registered_model_name, tags={VARIANT_TAG: variant})
    logger.info(
        "registered_model=<%s>, version=<%s>, source=<%s> | model version registered",
        registered_model_name,
        version.version,
        source,
    )
    return str(version.version), True


@contextmanager
def _mlflow_event_logs_off() -> Iterator[None]:
    # register_model prints "Successfully registered model ..." straight to stderr through MLflow's event
    # stream; the step logs the same fact through our own logger instead.
    from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

    was_enabled = MLFLOW_LOGGING_STREAM.enabled
    MLFLOW_LOGGING_STREAM.enabled = False
    try:
        yield
    finally:
        MLFLOW_LOGGING_STREAM.enabled = was_enabled


def _sync_aliases(client: MlflowClient, name: str, wanted: Mapping[str, str | None]) -> bool:
    """Set or delete aliases so that each points at ``wanted[alias]``; True when any moved."""
    current = dict(client.get_registered_model(name).aliases)
    moved = False
    for alias, version in wanted.items():
        have = current.get(alias)
        have_text = None if have is None else str(have)
        if have_text == version:
            continue
        if version is None:
            client.delete_registered_model_alias(name, alias)
        else:
            client.set_registered_model_alias(name, alias, version)
        logger.info("registered_model=<%s>, alias=<%s>, version=<%s> | alias moved", name, alias, version)
        moved = True
    return moved
