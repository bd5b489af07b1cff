"""What every ``@step`` of the compiled SageMaker pipeline runs: the same step adapter as a local run.

The compiler decorates :func:`run_pipeline_step` (pickled by reference, so the step image must have
``agent_release`` installed) once per DAG step. In the training job it unpacks the project files, applies
the execution's parameter values to ``pipeline.yaml``, builds a :class:`SageMakerBackend`, rebuilds the typed
upstream reports from the JSON the upstream steps returned, and calls the step's adapter from
:func:`agent_release.pipelines.dag.pipeline_steps` with a :class:`RunContext`, exactly as the local executor
does. The return value is the step's report as JSON-ready data; ``ConditionStep`` reads fields of it.

Call :func:`run_remote_step` directly to run one step in-process (the tests do, with a local backend).
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from agent_release.pipelines.config import LoadedConfig, parse_config
from agent_release.pipelines.dag import (
    DATASET_SHARD_OF,
    RunContext,
    dataset_hash,
    pipeline_steps,
    read_jsonl,
)
from agent_release.pipelines.eval_shards import merge_evaluations, shard_cases
from agent_release.pipelines.executor import StepRun
from agent_release.pipelines.sagemaker_parameters import DATASET_URI, apply_overrides, pipeline_name_of
from agent_release.steps.backend import Backend

logger = logging.getLogger(__name__)

SKIPPED: dict[str, Any] = {"__skipped__": True}
"""What a step whose ``when`` is false returns (a @step must return a value)."""

EMPTY_SHARD: dict[str, Any] = {"__empty_shard__": True}
"""What an evaluation shard with no cases returns (more shards than cases): the merge leaves it out."""

# Prefixes of ``input_names`` entries in :func:`run_pipeline_step`.
UPSTREAM = "upstream"
PARAMETER = "param"
SHARD_OUTPUT = "shard_output"
FILES = "files"
EXECUTION = "execution"
SHARD_INDEX = "shard_index"
SHARD_COUNT = "shard_count"

BackendFactory = Callable[[LoadedConfig], Backend]

ENDPOINT_CHANGING_STEPS = frozenset({"deploy_variants", "promote_challenger"})
"""Steps that hold the endpoint lock while they run (see :func:`_endpoint_lock_for`)."""


class RemoteStepError(ValueError):
    """The compiled pipeline passed a step inputs it cannot use (a compiler/runtime version mismatch)."""


def run_pipeline_step(
    step_name: str, config_text: str, input_names: list[str], *input_values: Any
) -> dict[str, Any]:
    """Entry point of every @step: ``input_names[i]`` says what ``input_values[i]`` is.

    The SageMaker SDK resolves step outputs and pipeline parameters only when they are top-level arguments
    of the decorated function (not inside a dict), hence the flat, named argument list: ``upstream:<step>``,
    ``param:<Name>``, ``shard_output:<i>``, ``files``, ``execution``, ``shard_index``, ``shard_count``.
    """
    if len(input_names) != len(input_values):
        raise RemoteStepError(f"{len(input_names)} input names for {len(input_values)} values")
    upstream: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    shard_outputs: list[Any] = []
    extras: dict[str, Any] = {}
    for name, value in zip(input_names, input_values, strict=True):
        kind, _, key = name.partition(":")
        if kind == UPSTREAM:
            upstream[key] = value
        elif kind == PARAMETER:
            overrides[key] = value
        elif kind == SHARD_OUTPUT:
            shard_outputs.append(value)
        elif kind in {FILES, EXECUTION, SHARD_INDEX, SHARD_COUNT}:
            extras[kind] = value
        else:
            raise RemoteStepError(f"unknown input {name!r} of step {step_name}")
    shard = None
    if SHARD_INDEX in extras:
        shard = (int(extras[SHARD_INDEX]), int(extras[SHARD_COUNT]))
    return run_remote_step(
        step_name,
        config_text,
        upstream,
        overrides=overrides,
        files_uri=extras.get(FILES),
        execution_id=extras.get(EXECUTION),
        shard=shard,
        shard_outputs=shard_outputs,
    )


def _read_s3(uri: str) -> bytes:
    import boto3

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    data: bytes = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def _sagemaker_backend(loaded: LoadedConfig) -> Backend:
    from agent_release.pipelines.sagemaker_backend import SageMakerBackend

    return SageMakerBackend.from_config(loaded.config.sagemaker, pipeline_name_of(loaded.config))


def _prepare_config(
    config_text: str, overrides: Mapping[str, Any], workdir: Path, shard: tuple[int, int] | None
) -> tuple[LoadedConfig, Path]:
    """The execution's config under ``workdir`` and the full evaluation dataset's path."""
    data = apply_overrides(yaml.safe_load(config_text), overrides)
    config = parse_config(yaml.safe_dump(data, sort_keys=False), source="pipeline.yaml")
    name = config.evaluate.dataset
    dataset_uri = overrides.get(DATASET_URI)
    if dataset_uri:
        local = workdir / "_inputs" / Path(str(dataset_uri)).name
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(
            _read_s3(str(dataset_uri))
            if str(dataset_uri).startswith("s3://")
            else Path(str(dataset_uri)).read_bytes()
        )
        data["datasets"][name]["path"] = str(local)
    full_dataset = (workdir / str(data["datasets"][name]["path"])).resolve()
    if shard is not None:
        index, count = shard
        rows = shard_cases(read_jsonl(full_dataset), index, count)
        shard_file = workdir / "_inputs" / f"shard-{index}-of-{count}.jsonl"
        shard_file.parent.mkdir(parents=True, exist_ok=True)
        shard_file.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
        data["datasets"][name]["path"] = str(shard_file)
    text = yaml.safe_dump(data, sort_keys=False)
    path = workdir / "pipeline.yaml"
    path.write_text(text, encoding="utf-8")
    loaded = LoadedConfig(config=parse_config(text, source=str(path)), path=path, base_dir=workdir, text=text)
    return loaded, full_dataset


def run_remote_step(
    step_name: str,
    config_text: str,
    upstream: dict[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    files_uri: str | None = None,
    execution_id: str | None = None,
    shard: tuple[int, int] | None = None,
    shard_outputs: Sequence[Mapping[str, Any]] = (),
    backend_factory: BackendFactory | None = None,
) -> dict[str, Any]:
    """Run the DAG step ``step_name`` with upstream reports given as JSON data; return its report as data.

    ``shard=(i, n)`` evaluates only shard ``i`` of ``n`` of the golden set; ``shard_outputs`` (on the
    ``evaluate_variants`` step) merges shard reports instead of evaluating.
    """
    from agent_release.steps.evaluation_records import EvaluationReport

    steps = {s.name: s for s in pipeline_steps()}
    if step_name not in steps:
        raise RemoteStepError(f"unknown step {step_name!r} (steps: {', '.join(steps)})")
    with tempfile.TemporaryDirectory(prefix="agent-release-step-") as tmp:
        workdir = Path(tmp)
        if files_uri:
            from agent_release.pipelines.project_bundle import extract_bundle

            extract_bundle(_read_s3(files_uri), workdir)
        loaded, full_dataset = _prepare_config(config_text, dict(overrides or {}), workdir, shard)
        if shard_outputs:
            if all(o == SKIPPED for o in shard_outputs):
                # No challenger deployed: every shard skipped itself, and so does their merge (it has no
                # deploy report of its own to skip by).
                return dict(SKIPPED)
            reports = [EvaluationReport.model_validate(o) for o in shard_outputs if o != EMPTY_SHARD]
            if not reports:
                raise RemoteStepError("every evaluation shard was empty: the evaluation dataset has no cases")
            logger.info("step=<%s>, shards=<%d> | merging evaluation shards", step_name, len(reports))
            return merge_evaluations(reports, dataset_hash(full_dataset)).model_dump(mode="json")
        config = loaded.config
        backend = (backend_factory or _sagemaker_backend)(loaded)
        state_dir = workdir / ".agent-release"
        tracking_uri = (
            config.sagemaker.mlflow_tracking_arn
            or config.tracking.uri
            or f"sqlite:///{state_dir / 'mlflow.db'}"
        )
        state_dir.mkdir(parents=True, exist_ok=True)
        context = RunContext(
            loaded=loaded,
            backend=backend,
            state_dir=state_dir,
            tracking_uri=tracking_uri,
            actor="sagemaker-pipeline",
            extras={DATASET_SHARD_OF: str(full_dataset)} if shard is not None else {},
        )
        outputs = {
            name: steps[name].output_type.model_validate(value)
            for name, value in upstream.items()
            if value is not None and value != SKIPPED
        }
        run = StepRun(execution_id=execution_id or "sagemaker", outputs=outputs, context=context)
        step = steps[step_name]
        if (step.when is not None and not step.when(run)) or (
            step.run_if is not None and not step.run_if(run)
        ):
            logger.info("step=<%s> | skipped", step_name)
            return dict(SKIPPED)
        if shard is not None and not _shard_cases(loaded):
            # More shards than cases (eval_shards above a small set, or a smaller DatasetUri at start):
            # evaluating none would fail the step, and with it the execution.
            logger.info("step=<%s>, shard=<%d/%d> | no cases in this shard", step_name, *shard)
            return dict(EMPTY_SHARD)
        logger.info("step=<%s>, execution=<%s> | running", step_name, run.execution_id)
        with _endpoint_lock_for(step_name, backend, config.deploy.endpoint_name, run.execution_id):
            output = step.run(run)
        return dict(SKIPPED) if output is None else output.model_dump(mode="json")


def _shard_cases(loaded: LoadedConfig) -> list[dict[str, Any]]:
    """The cases of the evaluation dataset as this shard's config names it."""
    spec = loaded.config.datasets[loaded.config.evaluate.dataset]
    return read_jsonl(loaded.resolve(spec.path))


def _endpoint_lock_for(
    step_name: str, backend: Backend, endpoint: str, execution_id: str
) -> contextlib.AbstractContextManager[None]:
    """The endpoint lock for a step that changes the endpoint; nothing for the others.

    Each step of a SageMaker execution is its own job, so no process can hold the lock for a whole run as a
    local run does: the steps that change the endpoint hold it while they run. A step that finds it held
    (another execution deploying or shifting the same endpoint) fails with the holder's name;
    ``promote_challenger`` also refuses to act if the endpoint was redeployed after this execution's deploy.
    """
    if step_name not in ENDPOINT_CHANGING_STEPS:
        return contextlib.nullcontext()
    return backend.lock(f"endpoint:{endpoint}", f"sagemaker execution {execution_id}, step {step_name}")
