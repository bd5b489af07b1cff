"""Compile the DAG of :func:`agent_release.pipelines.dag.pipeline_steps` into a SageMaker Pipelines object.

Every DAG step becomes a ``@step`` function step named after its step function that runs
:func:`agent_release.pipelines.remote_step.run_pipeline_step` (the same adapter a local run calls, with the
SageMaker backend). The promotion branch is a ``ConditionStep`` on the decision step's return value:
``decision == "promote"`` runs ``promote_challenger`` (progressive shift with guards); otherwise
``promote_challenger_hold`` runs the same adapter, which records the reject/inconclusive outcome, its reason
and evidence in the registry and ledger without touching traffic. With ``sagemaker.eval_shards`` = n > 1
the evaluation runs as n parallel shard steps whose reports the ``evaluate_variants`` step merges.

Per-execution overrides are typed pipeline ``Parameter`` objects built from the one table in
:mod:`agent_release.pipelines.sagemaker_parameters`, passed to every step as top-level arguments.

The SageMaker SDK is imported inside the functions that build (it costs seconds and needs a default region).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent_release.pipelines import remote_step
from agent_release.pipelines.config import LoadedConfig
from agent_release.pipelines.dag import RunContext, pipeline_steps
from agent_release.pipelines.executor import StepDef, StepRun, topological_order
from agent_release.pipelines.project_bundle import build_bundle
from agent_release.pipelines.sagemaker_parameters import (
    PARAMETERS,
    bucket_of,
    default_values,
    image_uri_of,
    pipeline_name_of,
)
from agent_release.steps.backend import Backend

if TYPE_CHECKING:
    from sagemaker.core.workflow.parameters import Parameter
    from sagemaker.core.workflow.pipeline_context import PipelineSession
    from sagemaker.mlops.workflow import Pipeline

logger = logging.getLogger(__name__)

PROMOTE_DECISION = "promote"


@dataclass(frozen=True)
class CompiledNames:
    """Names of the SageMaker steps that are not one-to-one with a DAG step (all derived from DAG names)."""

    decide: str
    promote: str

    @property
    def condition(self) -> str:
        """The ConditionStep on the decision."""
        return f"{self.decide}_is_{PROMOTE_DECISION}"

    @property
    def hold(self) -> str:
        """The else branch: the promotion adapter recording a reject/inconclusive outcome."""
        return f"{self.promote}_hold"


def compiled_names() -> CompiledNames:
    """The decision and promotion step names, from the step functions themselves."""
    from agent_release.steps.decide_promotion import decide_promotion
    from agent_release.steps.promote_challenger import promote_challenger

    return CompiledNames(decide=decide_promotion.__name__, promote=promote_challenger.__name__)


def shard_step_name(evaluate: str, index: int) -> str:
    """Name of evaluation shard ``index``."""
    return f"{evaluate}_shard_{index}"


def pipeline_parameters(loaded: LoadedConfig, dataset_uri: str) -> list[Parameter]:
    """One typed SageMaker ``Parameter`` per overridable value, defaults from the config."""
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString

    defaults = default_values(loaded.config, dataset_uri)
    built: list[Parameter] = []
    for p in PARAMETERS:
        if p.kind == "float":
            built.append(ParameterFloat(name=p.name, default_value=float(defaults[p.name])))
        elif p.kind == "integer":
            built.append(ParameterInteger(name=p.name, default_value=int(defaults[p.name])))
        else:
            built.append(ParameterString(name=p.name, default_value=str(defaults[p.name])))
    return built


class _CompileTimeBackend:
    """Stands in for a backend while ``when`` predicates run at compile time (they read config only)."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"a step condition used backend.{name} at compile time")


def _static_steps(loaded: LoadedConfig) -> list[StepDef]:
    """The DAG steps this config runs: steps whose ``when`` is false for it are left out of the pipeline."""
    context = RunContext(
        loaded=loaded, backend=_as_backend(_CompileTimeBackend()), state_dir=loaded.base_dir, tracking_uri=""
    )
    probe = StepRun(execution_id="compile", outputs={}, context=context)
    return [s for s in topological_order(pipeline_steps()) if s.when is None or s.when(probe)]


def _as_backend(value: object) -> Backend:
    result: Backend = value  # type: ignore[assignment]
    return result


def _upload(session: PipelineSession, bucket: str, key: str, data: bytes) -> str:
    session.boto_session.client("s3").put_object(Bucket=bucket, Key=key, Body=data)
    return f"s3://{bucket}/{key}"


def _ancestors(steps: Sequence[StepDef], name: str) -> list[str]:
    by_name = {s.name: s for s in steps}
    seen: list[str] = []

    def visit(n: str) -> None:
        for dep in by_name[n].needs:
            if dep in by_name and dep not in seen:
                visit(dep)
                seen.append(dep)

    visit(name)
    return seen


def build_pipeline(loaded: LoadedConfig, session: PipelineSession) -> Pipeline:
    """The SageMaker pipeline for ``loaded``; uploads the project files (S3 via ``session``) it refers to.

    The session's default bucket is created when missing, once the project files are packed, so a project
    that cannot be shipped creates nothing.
    """
    from sagemaker.core.workflow.conditions import ConditionEquals
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.mlops.workflow import ConditionStep, Pipeline
    from sagemaker.mlops.workflow.function_step import step

    config = loaded.config
    sm = config.sagemaker
    name = pipeline_name_of(config)
    bucket = bucket_of(sm)
    inputs_prefix = f"agent-release/{name}/inputs"

    bundle = build_bundle(loaded)  # refuses files outside the project: before anything exists on S3
    session.default_bucket()  # creates the bucket when it does not exist yet
    bundle_uri = _upload(
        session, bucket, f"{inputs_prefix}/bundle-{hashlib.sha256(bundle).hexdigest()[:16]}.tar.gz", bundle
    )
    dataset_path = loaded.resolve(config.datasets[config.evaluate.dataset].path)
    dataset = dataset_path.read_bytes()
    dataset_uri = _upload(
        session,
        bucket,
        f"{inputs_prefix}/{hashlib.sha256(dataset).hexdigest()[:16]}/{dataset_path.name}",
        dataset,
    )
    parameters = pipeline_parameters(loaded, dataset_uri)

    common_names = ["files", "execution", *(f"{remote_step.PARAMETER}:{p.name}" for p in parameters)]
    common_values: list[Any] = [bundle_uri, ExecutionVariables.PIPELINE_EXECUTION_ID, *parameters]
    step_options: dict[str, Any] = {
        "instance_type": sm.instance_type,
        "image_uri": image_uri_of(sm),
        "role": sm.execution_role(),
        "keep_alive_period_in_seconds": 0,
        "environment_variables": {"AGENT_RELEASE_PIPELINE": name},
    }

    def function_step(step_name: str, adapter: StepDef, names: list[str], values: list[Any]) -> Any:
        decorated = step(
            remote_step.run_pipeline_step,
            name=step_name,
            display_name=step_name,
            description=adapter.description or adapter.name,
            **step_options,
        )
        return decorated(adapter.name, loaded.text, [*common_names, *names], *common_values, *values)

    steps = _static_steps(loaded)
    special = compiled_names()
    outputs: dict[str, Any] = {}
    condition: ConditionStep | None = None
    for adapter in steps:
        upstream = _ancestors(steps, adapter.name)
        names = [f"{remote_step.UPSTREAM}:{u}" for u in upstream]
        values = [outputs[u] for u in upstream]
        if adapter.name == special.promote:
            decision = outputs[special.decide]["decision"]
            promote = function_step(adapter.name, adapter, names, values)
            hold = function_step(special.hold, adapter, names, values)
            condition = ConditionStep(
                name=special.condition,
                conditions=[ConditionEquals(left=decision, right=PROMOTE_DECISION)],
                if_steps=[promote],
                else_steps=[hold],
            )
            continue
        if adapter.name == _evaluate_name() and sm.eval_shards > 1:
            shards = [
                function_step(
                    shard_step_name(adapter.name, i),
                    adapter,
                    [*names, remote_step.SHARD_INDEX, remote_step.SHARD_COUNT],
                    [*values, i, sm.eval_shards],
                )
                for i in range(sm.eval_shards)
            ]
            outputs[adapter.name] = function_step(
                adapter.name,
                adapter,
                [f"{remote_step.SHARD_OUTPUT}:{i}" for i in range(len(shards))],
                shards,
            )
            continue
        outputs[adapter.name] = function_step(adapter.name, adapter, names, values)
    if condition is None:
        raise RuntimeError(f"the DAG has no {special.promote} step to branch on")

    mlflow_config = None
    if sm.mlflow_tracking_arn:
        from sagemaker.core.shapes.shapes import MlflowConfig

        mlflow_config = MlflowConfig(
            mlflow_resource_arn=sm.mlflow_tracking_arn, mlflow_experiment_name=config.tracking.experiment
        )
    logger.info("pipeline=<%s>, steps=<%d>, shards=<%d> | pipeline built", name, len(steps), sm.eval_shards)
    return Pipeline(
        name=name,
        parameters=parameters,
        steps=[condition],
        sagemaker_session=session,
        mlflow_config=mlflow_config,
    )


def _evaluate_name() -> str:
    from agent_release.steps.evaluate_variants import evaluate_variants

    return evaluate_variants.__name__
