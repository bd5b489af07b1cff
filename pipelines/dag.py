"""The pipeline's DAG, declared once: which step functions run, in what order, on which config section.

validate_datasets -> [train_model] -> deploy_variants -> register_agents -> evaluate_variants
-> decide_promotion -> promote_challenger (shift traffic, or hold with the reason)

Each :class:`StepDef` adapts a step function from ``steps/`` to the executor: it hands the function only its
own config section, the upstream reports it needs, and the backend. The local executor and the SageMaker
compiler both read :func:`pipeline_steps`; step names are the step functions' ``__name__``, never retyped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_release.pipelines.config import LoadedConfig
from agent_release.pipelines.executor import StepDef, StepFailed, StepRun
from agent_release.steps.backend import Backend


@dataclass
class RunContext:
    """Shared, process-local context of one execution (not persisted: rebuilt on resume)."""

    loaded: LoadedConfig
    backend: Backend
    state_dir: Path
    tracking_uri: str
    progress: Any = None  # pipelines.console.Progress-like: .eval_progress(variant) -> callback
    actor: str = "pipeline"
    extras: dict[str, Any] = field(default_factory=dict)

    def ensure_tracking(self) -> None:
        """Configure MLflow the first time a step needs it (not before: a run that stops at validation must
        leave no tracking store behind)."""
        if self.extras.get("tracking_ready"):
            return
        from agent_release.pipelines.tracking import configure_tracking

        configure_tracking(self.tracking_uri, self.loaded.config.tracking.experiment)
        self.extras["tracking_ready"] = True

    @property
    def artifacts_dir(self) -> Path:
        """Where trained models (``models/``) and MLflow artifacts go; reports go to ``<state_dir>/reports``."""
        return self.state_dir / "artifacts"


def _ctx(run: StepRun) -> RunContext:
    ctx: RunContext = run.context
    return ctx


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file (blank lines ignored); raises ValueError naming the bad line."""
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{i}: not valid JSON: {exc.msg}") from None
    return rows


def live_inputs_of(loaded: LoadedConfig) -> tuple[str, ...]:
    """The user messages ``promote.live_traffic.inputs`` replays: the text ``input`` of every row.

    Raises ValueError (one line naming the file and line) for a row that is not JSON, not an object, or has
    no non-empty text ``input``, and for a file without rows: the canary would send no traffic, so the guards
    could never judge a step. ``validate`` calls it too, so none of this is found only after the evaluation.
    """
    from agent_release.steps.validate_datasets import numbered_objects

    path = loaded.resolve(loaded.config.promote.live_traffic.inputs)
    inputs: list[str] = []
    for number, row in numbered_objects(path):  # DatasetError (a ValueError) names a bad file or line
        text = row.get("input")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path}:{number}: each row needs a non-empty text 'input' (the user message)")
        inputs.append(text)
    if not inputs:
        raise ValueError(
            f"{path} has no rows, so the canary would replay no traffic for the guards to judge "
            "(or set promote.live_traffic.enabled: false)"
        )
    return tuple(inputs)


def system_prompt_of(loaded: LoadedConfig) -> str:
    """The configured system prompt: inline text, a file, or the support agent's default."""
    agent = loaded.config.agent
    if agent.system_prompt is not None:
        return agent.system_prompt
    if agent.system_prompt_file is not None:
        return loaded.resolve(agent.system_prompt_file).read_text(encoding="utf-8")
    from agent_release.agents.support.prompts import SYSTEM_PROMPT

    return SYSTEM_PROMPT


def tools_factory_of(loaded: LoadedConfig) -> Callable[[], list[Any]]:
    """A zero-argument function building the configured tools (fresh objects per call)."""
    from agent_release.agents.builder import load_toolset

    agent = loaded.config.agent
    data_dir = loaded.resolve(agent.tool_data_dir)
    return lambda: load_toolset(agent.toolset, data_dir, agent.tools)


# -- step adapters --------------------------------------------------------------------------------------------


def _validate_datasets(run: StepRun) -> Any:
    from agent_release.steps.validate_datasets import validate_datasets

    ctx = _ctx(run)
    report = validate_datasets(ctx.loaded.config.datasets, ctx.loaded.base_dir)
    if not report.success:
        lines = report.failure_lines()
        more = f" (+{len(lines) - 1} more; see `agent-release validate`)" if len(lines) > 1 else ""
        raise StepFailed(f"data contract failed: {lines[0] if lines else 'see agent-release validate'}{more}")
    return report


def _train_model(run: StepRun) -> Any:
    from agent_release.steps.train_model import train_model

    ctx = _ctx(run)
    train = ctx.loaded.config.train
    assert train is not None  # guarded by `when`
    # Training lists the group's packages, then registers (and may bootstrap-approve) one: two runs for
    # different endpoints on one group (the endpoint lock keeps apart only runs of one endpoint) registered
    # the same model twice and approved two bootstrap champions.
    with ctx.backend.lock(
        f"package_group:{train.package_group}", f"run {run.execution_id} pid {os.getpid()}"
    ):
        return train_model(
            train,
            ctx.backend,
            ctx.loaded.base_dir,
            ctx.artifacts_dir / "models",
            actor=ctx.actor,
            execution_id=run.execution_id,
        )


def _deploy_variants(run: StepRun) -> Any:
    from agent_release.steps.deploy_variants import deploy_variants

    ctx = _ctx(run)
    return deploy_variants(ctx.loaded.config.deploy, ctx.backend)


def _register_agents(run: StepRun) -> Any:
    from agent_release.steps.register_agents import register_agents

    ctx = _ctx(run)
    ctx.ensure_tracking()
    cfg = ctx.loaded.config
    return register_agents(
        cfg.agent,
        run.output("deploy_variants"),
        tracking_uri=ctx.tracking_uri,
        experiment=cfg.tracking.experiment,
        base_dir=ctx.loaded.base_dir,
    )


def dataset_hash(path: Path) -> str:
    """sha256 of a dataset file's bytes (recorded with every evaluation that uses it)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


DATASET_SHARD_OF = "dataset_shard_of"
"""``RunContext.extras`` key: the whole dataset file a shard step's evaluation dataset was cut from."""


def pinned_dataset_hash(run: StepRun, name: str, path: Path) -> str:
    """The sha256 of dataset ``name`` at ``path``, refused if it differs from what validation pinned.

    A resumed execution keeps the validate step's result, so a file edited after the interruption would be
    evaluated without ever passing its data contract. When this execution has no validate result at hand (a
    remote step given only its direct inputs), there is nothing to compare with.
    """
    digest = dataset_hash(path)
    validated = run.maybe("validate_datasets")
    pinned = next((d.sha256 for d in validated.datasets if d.name == name), None) if validated else None
    if pinned is not None and pinned != digest:
        raise StepFailed(
            f"dataset {name} ({path}) changed after validate_datasets pinned it (sha256 {pinned[:12]}, now "
            f"{digest[:12]}); start a new run so its data contract is checked again"
        )
    return digest


def check_agent_parts(run: StepRun, loaded: LoadedConfig) -> None:
    """Refuse (:class:`StepFailed`) when the system prompt or the tool data changed after ``register_agents``
    recorded them: a resumed execution reuses that registration, and would evaluate or promote an agent
    version that never ran (its LoggedModel names the prompt and data it was registered with)."""
    from agent_release.steps.register_agents import agent_parts_changed

    registration = run.maybe("register_agents")
    for agent in registration.agents if registration is not None else ():
        changed = agent_parts_changed(loaded.config.agent, loaded.base_dir, agent)
        if changed is not None:
            raise StepFailed(
                f"{changed} changed after register_agents registered agent {agent.registered_model_name} "
                f"for variant {agent.variant}; start a new run so the agent is registered as it is now"
            )


def _evaluate_variants(run: StepRun) -> Any:
    from agent_release.steps.evaluate_variants import evaluate_variants

    ctx = _ctx(run)
    ctx.ensure_tracking()
    cfg = ctx.loaded.config
    check_agent_parts(run, ctx.loaded)
    spec = cfg.datasets[cfg.evaluate.dataset]
    path = ctx.loaded.resolve(spec.path)
    # A SageMaker shard step evaluates a slice of the file validation pinned: check the whole file.
    whole = ctx.extras.get(DATASET_SHARD_OF)
    if whole:
        pinned_dataset_hash(run, cfg.evaluate.dataset, Path(whole))
        digest = dataset_hash(path)
    else:
        digest = pinned_dataset_hash(run, cfg.evaluate.dataset, path)
    progress = ctx.progress.eval_progress if ctx.progress is not None else None
    report = evaluate_variants(
        cfg.evaluate,
        run.output("register_agents"),
        read_jsonl(path),
        dataset_name=cfg.evaluate.dataset,
        dataset_hash=digest,
        system_prompt=system_prompt_of(ctx.loaded),
        tools_factory=tools_factory_of(ctx.loaded),
        experiment=cfg.tracking.experiment,
        progress=progress,
        # The same for every attempt at this evaluation, and apart for each shard's slice of the data.
        evaluation_key=f"{run.execution_id}:{digest[:16]}",
    )
    from agent_release.pipelines.evaluation_store import save_evaluation_rows

    save_evaluation_rows(ctx.state_dir, run.execution_id, report)
    return report


def _decide_promotion(run: StepRun) -> Any:
    from agent_release.steps.decide_promotion import decide_promotion

    ctx = _ctx(run)
    return decide_promotion(ctx.loaded.config.decide, run.output("evaluate_variants"))


def _promote_challenger(run: StepRun) -> Any:
    from agent_release.steps.promote_challenger import PromotionInputs, promote_challenger

    ctx = _ctx(run)
    ctx.ensure_tracking()
    cfg = ctx.loaded.config
    check_agent_parts(run, ctx.loaded)
    live_inputs = live_inputs_of(ctx.loaded) if cfg.promote.live_traffic.enabled else ()
    return promote_challenger(
        cfg.promote,
        PromotionInputs(
            execution_id=run.execution_id,
            deployed=run.output("deploy_variants"),
            registration=run.output("register_agents"),
            evaluation=run.output("evaluate_variants"),
            decision=run.output("decide_promotion"),
            datasets=run.output("validate_datasets"),
            system_prompt=system_prompt_of(ctx.loaded),
            live_inputs=live_inputs,
            actor=ctx.actor,
            region=cfg.agent.region,
        ),
        ctx.backend,
        tools_factory=tools_factory_of(ctx.loaded),
        progress=ctx.progress,
    )


# Why evaluate, decide and promote are skipped when the deploy step found no challenger.
NO_CHALLENGER = "no challenger deployed: no pending package newer than the champion"


def pipeline_steps() -> list[StepDef]:
    """The DAG as executor steps. Output types are imported lazily by the caller's first use."""
    from agent_release.steps.decide_promotion import DecisionReport, decide_promotion
    from agent_release.steps.deploy_variants import DeployReport, deploy_variants
    from agent_release.steps.evaluate_variants import evaluate_variants
    from agent_release.steps.evaluation_records import EvaluationReport
    from agent_release.steps.promote_challenger import PromotionReport, promote_challenger
    from agent_release.steps.register_agents import register_agents
    from agent_release.steps.registration_records import RegistrationReport
    from agent_release.steps.train_model import TrainReport, train_model
    from agent_release.steps.validate_datasets import DatasetValidationReport, validate_datasets

    def train_enabled(run: StepRun) -> bool:
        train = _ctx(run).loaded.config.train
        return train is not None and train.enabled

    def has_challenger(run: StepRun) -> bool:
        # A scheduled run that finds no new package has nothing to evaluate or decide: the champion keeps
        # its traffic and the run ends successfully with no decision (status and the report say why).
        deployed = run.maybe(deploy_variants.__name__)
        # Without the deploy report (a remote step given only its direct inputs) the step's inputs decide.
        return deployed is None or deployed.challenger is not None

    return [
        StepDef(
            validate_datasets.__name__,
            (),
            DatasetValidationReport,
            _validate_datasets,
            description="Run the golden datasets' data contracts and pin their hashes.",
        ),
        StepDef(
            train_model.__name__,
            (validate_datasets.__name__,),
            TrainReport,
            _train_model,
            when=train_enabled,
            skip_note="train is not enabled in pipeline.yaml",
            description="Train a challenger and register it as a pending model package.",
        ),
        StepDef(
            deploy_variants.__name__,
            (validate_datasets.__name__, train_model.__name__),
            DeployReport,
            _deploy_variants,
            description="Deploy champion and challenger as variants of one endpoint.",
        ),
        StepDef(
            register_agents.__name__,
            (deploy_variants.__name__,),
            RegistrationReport,
            _register_agents,
            description="Register one agent version per variant in MLflow.",
        ),
        StepDef(
            evaluate_variants.__name__,
            (register_agents.__name__,),
            EvaluationReport,
            _evaluate_variants,
            run_if=has_challenger,
            skip_note=NO_CHALLENGER,
            description="Evaluate each variant's agent on the golden set.",
        ),
        StepDef(
            decide_promotion.__name__,
            (evaluate_variants.__name__,),
            DecisionReport,
            _decide_promotion,
            run_if=has_challenger,
            skip_note=NO_CHALLENGER,
            description="Paired, clustered comparison: promote, reject or inconclusive.",
        ),
        StepDef(
            promote_challenger.__name__,
            (decide_promotion.__name__,),
            PromotionReport,
            _promote_challenger,
            run_if=has_challenger,
            skip_note=NO_CHALLENGER,
            description="Shift traffic progressively with live guards, or hold; update registry and ledger.",
        ),
    ]
