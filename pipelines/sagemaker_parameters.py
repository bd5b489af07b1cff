"""The values a user may override per SageMaker pipeline execution, declared once.

Each :class:`ParameterDef` names a typed SageMaker pipeline ``Parameter`` and the pipeline.yaml key it
overrides. The compiler turns the table into ``ParameterString``/``ParameterFloat``/``ParameterInteger``
objects (defaults from the config), ``start`` checks and converts ``NAME=VALUE`` overrides against it, and
each remote step applies the values it receives to the config before running. This module does not import
the SageMaker SDK, so the remote steps and the CLI can use it cheaply.

Usage::

    values = coerce_overrides({"MinImprovement": "0.05"})     # -> {"MinImprovement": 0.05}
    data = apply_overrides(yaml_data, values)                   # pipeline.yaml data with the values set
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from agent_release.pipelines.backend_rules import is_sagemaker_name
from agent_release.pipelines.config import PipelineConfig, SageMakerConfig, format_validation_error

ParameterKind = Literal["string", "float", "integer"]
DATASET_URI = "DatasetUri"


class ParameterOverrideError(ValueError):
    """A ``--parameter NAME=VALUE`` names no pipeline parameter or has a value of the wrong type."""


@dataclass(frozen=True)
class ParameterDef:
    """One overridable value: the SageMaker parameter name, its type and the config key it sets."""

    name: str
    kind: ParameterKind
    key: tuple[str, ...]  # path in pipeline.yaml; () for DatasetUri, which replaces a dataset file
    description: str


PARAMETERS: tuple[ParameterDef, ...] = (
    ParameterDef(
        "EndpointName", "string", ("deploy", "endpoint_name"), "Endpoint the variants are deployed to."
    ),
    ParameterDef(
        DATASET_URI, "string", (), "S3 URI of the golden JSONL set to evaluate (default: the bundled one)."
    ),
    ParameterDef("MinImprovement", "float", ("decide", "min_improvement"), "Required primary-metric gain."),
    ParameterDef("Alpha", "float", ("decide", "alpha"), "One-sided error rate of the promotion decision."),
    ParameterDef("MinCompletedCases", "integer", ("decide", "min_completed_cases"), "Paired cases needed."),
    ParameterDef("MaxErrorRate", "float", ("promote", "guards", "max_error_rate"), "Live guard error bound."),
    ParameterDef("TrafficSchedule", "string", ("promote", "schedule"), "Canary shares, e.g. '10,50,100'."),
    ParameterDef("PromotionMode", "string", ("promote", "mode"), "auto or manual."),
)


def parameter_def(name: str) -> ParameterDef:
    """The definition called ``name``; raises :class:`ParameterOverrideError` naming the known ones."""
    for p in PARAMETERS:
        if p.name == name:
            return p
    known = ", ".join(p.name for p in PARAMETERS)
    raise ParameterOverrideError(f"unknown pipeline parameter {name!r} (parameters: {known})")


def _exact(number: float) -> str:
    """``number`` as short as it reads back unchanged: ``10`` for 10.0, every digit of 12.3456789 (``:g``
    alone kept six, which changed the percentages shifted and could merge two steps into one refused)."""
    short = f"{number:g}"
    return short if float(short) == number else repr(number)


def _encode(value: Any) -> Any:
    # TrafficSchedule is a list in pipeline.yaml and a comma-separated string as a parameter.
    if isinstance(value, list | tuple):
        return ",".join(_exact(float(v)) for v in value)
    return value


def default_values(config: PipelineConfig, dataset_uri: str) -> dict[str, str | float | int]:
    """The default of every parameter: the value in ``config`` (``dataset_uri`` for DatasetUri)."""
    data = config.model_dump(mode="json")
    values: dict[str, str | float | int] = {}
    for p in PARAMETERS:
        if not p.key:
            values[p.name] = dataset_uri
            continue
        node: Any = data
        for part in p.key:
            node = node[part]
        values[p.name] = _encode(node)
    return values


def coerce_overrides(overrides: Mapping[str, str]) -> dict[str, str | float | int]:
    """``NAME=VALUE`` strings converted to each parameter's type; raises :class:`ParameterOverrideError`."""
    values: dict[str, str | float | int] = {}
    for name, raw in overrides.items():
        p = parameter_def(name)
        try:
            value = float(raw) if p.kind == "float" else int(raw) if p.kind == "integer" else raw
        except ValueError:
            raise ParameterOverrideError(f"parameter {name} expects {p.kind}, got {raw!r}") from None
        # float() takes "nan" and "inf", and "1e400" overflows to inf: no config value means either.
        if isinstance(value, float) and not math.isfinite(value):
            raise ParameterOverrideError(f"parameter {name} expects a finite float, got {raw!r}")
        values[name] = value
    return values


def check_override_values(data: Mapping[str, Any], values: Mapping[str, str | float | int]) -> None:
    """Raise :class:`ParameterOverrideError` for a typed override the execution's steps would refuse.

    ``data`` is pipeline.yaml as parsed YAML, ``values`` the output of :func:`coerce_overrides`. Each value
    is applied alone and the result validated as the remote steps validate it (``apply_overrides`` then the
    config model), so ``start`` refuses ``Alpha=5`` or ``PromotionMode=yolo`` before an execution starts
    that would fail in its first step; the error names the parameter and the config key.

    Usage::

        check_override_values(yaml.safe_load(loaded.text), coerce_overrides({"Alpha": "0.1"}))
    """
    for name, value in values.items():
        parameter_def(name)  # an unknown name fails here, naming the known ones
        if name == DATASET_URI:
            if not re.fullmatch(r"s3://[^/]+/.+", str(value)):
                raise ParameterOverrideError(
                    f"parameter {name} expects an S3 URI s3://bucket/key of a JSONL file, got {value!r} "
                    "(the steps run on AWS and cannot read a local path)"
                )
            continue
        if name == "EndpointName" and not is_sagemaker_name(str(value)):
            raise ParameterOverrideError(
                f"parameter {name} {value!r} is not an endpoint name: use letters, digits and hyphens, "
                "starting and ending with a letter or digit (max 63)"
            )
        try:
            applied = apply_overrides(data, {name: value})
        except ValueError:  # TrafficSchedule: a part that is no number
            raise ParameterOverrideError(
                f"parameter {name} expects comma-separated numbers (e.g. 10,50,100), got {value!r}"
            ) from None
        try:
            PipelineConfig.model_validate(applied)
        except ValidationError as exc:
            problem = format_validation_error(exc, {}, "").removeprefix(": ")
            raise ParameterOverrideError(f"parameter {name}={value!r} is refused: {problem}") from None
    try:  # each value passed alone; together they may still break a rule across keys
        PipelineConfig.model_validate(apply_overrides(data, values))
    except ValidationError as exc:
        problem = format_validation_error(exc, {}, "").removeprefix(": ")
        given = " ".join(f"{n}={v!r}" for n, v in values.items())
        raise ParameterOverrideError(f"parameters {given} are refused together: {problem}") from None


def apply_overrides(data: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of pipeline.yaml ``data`` with parameter ``values`` set at their keys (DatasetUri ignored).

    Raises :class:`ParameterOverrideError` naming the parameter for a TrafficSchedule part that is no number.
    """
    result: dict[str, Any] = copy.deepcopy(dict(data))
    for name, value in values.items():
        p = parameter_def(name)
        if not p.key:
            continue
        node = result
        for part in p.key[:-1]:
            node = node.setdefault(part, {})
        if p.key == ("promote", "schedule"):
            try:
                node[p.key[-1]] = [float(v) for v in re.split(r"[,\s]+", str(value).strip()) if v]
            except ValueError:
                # Not only `start` passes values here: a remote step gets whatever the execution was started
                # with (console, boto3, a schedule), where float()'s own message names no parameter.
                raise ParameterOverrideError(
                    f"parameter {name} expects comma-separated numbers (e.g. 10,50,100), got {value!r}"
                ) from None
        else:
            node[p.key[-1]] = value
    return result


def account_of(role_arn: str) -> str:
    """The AWS account id in an IAM role ARN."""
    parts = role_arn.split(":")
    if len(parts) < 5 or not parts[4].isdigit():
        raise ParameterOverrideError(f"sagemaker.role_arn {role_arn!r} is not an IAM role ARN")
    return parts[4]


def bucket_of(config: SageMakerConfig) -> str:
    """The configured bucket, or SageMaker's default bucket name for the role's account and region."""
    return config.bucket or f"sagemaker-{config.region}-{account_of(config.execution_role())}"


def image_uri_of(config: SageMakerConfig) -> str:
    """The @step image: ``sagemaker.image_uri``, else ``agent-release:<version>`` in the role account's ECR.

    The steps unpickle a reference to ``agent_release``, so the image must have this package installed
    (docs/aws.md shows the Dockerfile); the SDK's default images do not.
    """
    if config.image_uri:
        return config.image_uri
    from importlib.metadata import PackageNotFoundError, version

    try:
        tag = version("agent-release")
    except PackageNotFoundError:
        tag = "latest"
    return f"{account_of(config.execution_role())}.dkr.ecr.{config.region}.amazonaws.com/agent-release:{tag}"


def pipeline_name_of(config: PipelineConfig) -> str:
    """The SageMaker pipeline name: ``sagemaker.pipeline_name`` or the pipeline's ``name``."""
    return config.sagemaker.pipeline_name or config.name


def package_source_of(config: SageMakerConfig, pipeline_name: str) -> str:
    """What the pipeline's own steps write as ``MetadataProperties.GeneratedBy`` of the packages they register.

    The pipeline's ARN as SageMaker forms it (the role's partition and account, the name lowercased). The
    on-new-package trigger of ``upsert`` matches only packages without this value, so a package the pipeline
    trained itself does not start another execution of it.
    """
    role = config.execution_role()
    partition, account = role.split(":")[1], account_of(role)
    return f"arn:{partition}:sagemaker:{config.region}:{account}:pipeline/{pipeline_name.lower()}"
