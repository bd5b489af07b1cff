"""The SageMaker Pipelines target behind ``agent-release compile / upsert / start / executions``.

- :func:`compile_definition` writes the pipeline definition JSON with no AWS account: the SDK must upload
  the pickled step function and the project files to S3 to produce a definition, so a moto server started
  for the purpose on 127.0.0.1 (dummy credentials) plays S3. The S3 URIs in the JSON name the configured
  bucket (``sagemaker.bucket`` or ``sagemaker-<region>-<account of role_arn>``); ``upsert`` uploads the same
  content-addressed files there for real.
- :func:`upsert_pipeline` creates or updates the pipeline with the ambient AWS credentials, then its triggers:
  an EventBridge Scheduler schedule from ``schedule.cron`` and, with ``schedule.on_new_package``, an
  EventBridge rule on "SageMaker Model Package State Change" for the deploy package group that starts an
  execution (not for the packages the pipeline's own steps register); it removes the triggers an earlier
  release named differently for the same pipeline.
- Every command here needs ``sagemaker.role_arn`` (:func:`require_role`): it has no default.
- :func:`start_pipeline` and :func:`list_executions` start and list executions.

The definition is written with sorted keys and two-space indentation so it diffs in review; what the SDK
stamps (the build timestamp in S3 paths and ``--func_step_s3_dir``, the per-build
``REMOTE_FUNCTION_SECRET_KEY``) is the only part that changes between two compiles of the same files.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from agent_release.pipelines.atomic_write import write_text_atomically
from agent_release.pipelines.config import (
    ConfigError,
    LoadedConfig,
    PipelineConfig,
    check_referenced_files,
    load_config,
)
from agent_release.pipelines.iam_policy import state_prefixes
from agent_release.pipelines.sagemaker_parameters import (
    DATASET_URI,
    ParameterOverrideError,
    apply_overrides,
    bucket_of,
    check_override_values,
    coerce_overrides,
    package_source_of,
    pipeline_name_of,
)
from agent_release.steps.log_filters import filtered_loggers

if TYPE_CHECKING:
    import boto3

logger = logging.getLogger(__name__)

PACKAGE_EVENT = "SageMaker Model Package State Change"
_OFFLINE_ENV_REMOVE = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


class TargetError(ValueError):
    """The SageMaker target cannot do what was asked (message is one line)."""


@contextmanager
def _environment(values: Mapping[str, str], remove: tuple[str, ...] = ()) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in (*values, *remove)}
    try:
        for key in remove:
            os.environ.pop(key, None)
        os.environ.update(values)
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def offline_aws(region: str) -> Iterator[boto3.Session]:
    """A boto3 session whose every call goes to a throwaway moto server on loopback (dummy credentials)."""
    import boto3

    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise TargetError(
            "compile needs moto[server] to stand in for S3: pip install 'moto[server]'"
        ) from None

    # The stand-in server's request log is noise to a user compiling a definition.
    werkzeug_log = logging.getLogger("werkzeug")
    previous_level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "offline-compile",
            "AWS_SECRET_ACCESS_KEY": "offline-compile",
            "AWS_DEFAULT_REGION": region,
            "SAGEMAKER_VALIDATE_ROLE": "false",
        }
        with _environment(env, remove=_OFFLINE_ENV_REMOVE):
            yield boto3.Session(region_name=region)
    finally:
        server.stop()
        werkzeug_log.setLevel(previous_level)


# The SDK's loggers. ``sagemaker.remote_function`` has its own INFO-level stream handler and does not propagate,
# so the CLI's logging set-up (WARNING unless -v) does not reach it. Filters on a logger see only the records
# logged on it, so the module that logs the job-name notice below is named too.
_SDK_LOGGERS = ("sagemaker", "sagemaker.remote_function", "sagemaker.core.workflow.utilities")
# The SDK warns once per @step that it leaves the step's job name out of the definition "since it will be
# overridden at pipeline execution time" (suggesting PipelineDefinitionConfig). That is the design here: each
# execution names its jobs, and no job-name prefix is configured; the warning says nothing a user should act on.
_JOB_NAME_NOTICE = "Popping out 'TrainingJobName' from the pipeline definition"


def _warning_or_worse(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING and not _is_job_name_notice(record)


def _is_job_name_notice(record: logging.LogRecord) -> bool:
    return record.getMessage().startswith(_JOB_NAME_NOTICE)


@contextmanager
def _sdk_info_quieted() -> Iterator[None]:
    """Keep the SageMaker SDK's loggers to WARNING and above for the block, unless INFO was asked for (``-v``).

    Building a definition makes the SDK log "Uploading serialized function code/arguments to s3://..." at INFO
    for every step: 16 lines before ``compile``'s path or ``upsert``'s ARNs (or before the one-line error of an
    ``upsert`` that fails), although during ``compile`` those uploads only reach the throwaway stand-in server.
    Warnings and errors still show, except the per-step job-name notice (``_JOB_NAME_NOTICE``); with ``-v``
    (this module's logger enabled for INFO) nothing is changed.
    A filter rather than a level: the SDK sets its logger to INFO when it first builds it, which may come later.
    """
    if logger.isEnabledFor(logging.INFO):
        yield
        return
    with filtered_loggers(_SDK_LOGGERS, _warning_or_worse):
        yield


def _pipeline_session(loaded: LoadedConfig, boto_session: boto3.Session) -> Any:
    from sagemaker.core.workflow.pipeline_context import PipelineSession

    # No bucket yet: build_pipeline creates it once the project files are packed, so a config that cannot
    # be shipped (a dataset outside the project directory) leaves nothing behind.
    return PipelineSession(boto_session=boto_session, default_bucket=bucket_of(loaded.config.sagemaker))


def _load(config_path: Path | str) -> LoadedConfig:
    """The config as ``validate`` checks it (without the data contracts), before anything is built or sent.

    A config ``run`` would refuse (an unknown scorer, an endpoint name SageMaker refuses) would otherwise be
    compiled and upserted, and only fail in the first step of every execution on AWS.
    """
    from agent_release.pipelines.config_checks import check_config

    loaded = load_config(config_path)
    require_role(loaded, config_path)
    check_referenced_files(loaded)
    check_config(loaded, modules_may_be_missing=True)  # user modules may be in the step image only
    check_region(loaded.config.sagemaker.region)
    return loaded


def require_role(loaded: LoadedConfig, config_path: Path | str) -> str:
    """``sagemaker.role_arn``, or :class:`ConfigError` naming the file and saying to set it.

    It has no default: the role is embedded in the definition (the pipeline's, every step's, the schedule's
    and the trigger's role) and names the account of the default bucket and image, so a default would put an
    account that is not the user's into AWS without a word. Local commands never ask for it.
    """
    try:
        return loaded.config.sagemaker.execution_role()
    except ConfigError as exc:
        raise ConfigError(f"{Path(config_path).expanduser()}: {exc}") from None


def check_region(region: str) -> None:
    """Raise :class:`TargetError` unless ``region`` is one where this botocore knows SageMaker is offered.

    Against AWS an unknown region fails only when its endpoint cannot be resolved, after the retries of
    every call; ``compile`` would write a definition naming a bucket in it.
    """
    import boto3

    session = boto3.Session()
    known = {
        r
        for partition in session.get_available_partitions()
        for r in session.get_available_regions("sagemaker", partition_name=partition)
    }
    if region not in known:
        raise TargetError(
            f"sagemaker.region {region!r} is not a region SageMaker is offered in (known to this botocore: "
            f"{len(known)} regions, e.g. us-east-1, eu-west-1); check the spelling, or upgrade boto3 for a new region"
        )


def _client_error_line(exc: Exception, doing: str) -> str:
    """One line for an AWS refusal of ``doing``: the operation, the error code and AWS's message."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return f"{doing}: {exc}"
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "?"))
    message = str(error.get("Message", "")).strip()
    if message.startswith("<"):
        # A markup body botocore could not parse (an XML error where JSON was expected, a proxy's HTML page):
        # its Code and Message elements, if any, instead of the raw document.
        found_code = re.search(r"<Code>(.*?)</Code>", message, re.S)
        found_message = re.search(r"<Message>(.*?)</Message>", message, re.S)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        code = found_code.group(1).strip() if found_code else f"HTTP {status}"
        message = (
            found_message.group(1).strip()
            if found_message
            else "the answer is no AWS error (a proxy, or AWS_ENDPOINT_URL pointing elsewhere?)"
        )
    line = f"{doing}: AWS refused {exc.operation_name} ({code}): {message}"
    if code in _CREDENTIAL_CODES:
        line += " (refresh or replace the AWS credentials)"
    elif code in _DENIED_CODES:
        line += " (the deployer's credentials lack this permission)"
    return line


_CREDENTIAL_CODES = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "RequestExpired",
    }
)
_DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})


def _is_missing_pipeline(exc: Exception) -> bool:
    """True for the answer to a call on a pipeline that does not exist (AWS: ResourceNotFound)."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    error = exc.response.get("Error", {})
    message = str(error.get("Message", "")).lower()
    return error.get("Code") == "ResourceNotFound" or (
        error.get("Code") == "ValidationException"
        and ("could not find pipeline" in message or "does not exist" in message)
    )


@contextmanager
def _aws_errors(doing: str, pipeline: str = "", region: str = "") -> Iterator[None]:
    """Re-raise an AWS refusal inside the block as a one-line :class:`TargetError` saying what was being done.

    ``pipeline``/``region``: the pipeline the calls are about; a call on a pipeline that does not exist then
    says so and points at ``upsert``.
    """
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

    try:
        yield
    except (NoCredentialsError, PartialCredentialsError):
        raise  # the CLI's own message for missing credentials
    except ClientError as exc:
        if pipeline and _is_missing_pipeline(exc):
            raise TargetError(
                f"no SageMaker pipeline {pipeline!r} in {region}: create it with `agent-release upsert` first"
            ) from None
        raise TargetError(_client_error_line(exc, doing)) from None
    except BotoCoreError as exc:  # endpoint unreachable, bad parameter shapes: no AWS answer at all
        raise TargetError(f"{doing}: {exc}") from None


def definition_json(loaded: LoadedConfig, boto_session: boto3.Session) -> str:
    """The pipeline definition as stable JSON (sorted keys, indented) built through ``boto_session``."""
    from agent_release.pipelines.sagemaker_compiler import build_pipeline

    pipeline = build_pipeline(loaded, _pipeline_session(loaded, boto_session))
    return json.dumps(json.loads(pipeline.definition()), indent=2, sort_keys=True) + "\n"


def compile_definition(config_path: Path | str, output: Path | str) -> Path:
    """Write the SageMaker pipeline definition of ``config_path`` to ``output`` (no AWS account needed)."""
    loaded = _load(config_path)
    with offline_aws(loaded.config.sagemaker.region) as boto_session, _sdk_info_quieted():
        text = definition_json(loaded, boto_session)
    path = Path(output)
    try:
        write_text_atomically(path, text)  # a failed write keeps the previous definition whole
    except OSError as exc:
        raise OSError(f"cannot write the pipeline definition to {path}: {exc.strerror or exc}") from None
    logger.info("pipeline=<%s>, path=<%s> | definition written", pipeline_name_of(loaded.config), path)
    return path


def _boto_session(loaded: LoadedConfig) -> boto3.Session:
    import boto3

    # The SDK's modules need a default region at import time (NoRegionError otherwise).
    os.environ.setdefault("AWS_DEFAULT_REGION", loaded.config.sagemaker.region)
    return boto3.Session(region_name=loaded.config.sagemaker.region)


def _schedule(expression: str, name: str) -> Any:
    """An SDK ``PipelineSchedule`` from ``cron(...)``, ``rate(n unit)`` or ``at(...)`` in pipeline.yaml."""
    from datetime import datetime

    from sagemaker.mlops.workflow.triggers import PipelineSchedule

    text = expression.strip()
    inner = text[text.find("(") + 1 : -1].strip() if text.endswith(")") else text
    if text.startswith("cron("):
        return PipelineSchedule(name=name, cron=inner)
    if text.startswith("rate("):
        value, _, unit = inner.partition(" ")
        return PipelineSchedule(name=name, rate=(int(value), unit.strip()))
    if text.startswith("at("):
        return PipelineSchedule(name=name, at=datetime.fromisoformat(inner))
    raise TargetError(f"schedule.cron {expression!r}: expected cron(...), rate(...) or at(...)")


def package_rule_pattern(group: str, own_packages: str) -> dict[str, Any]:
    """EventBridge pattern: a new package (PendingManualApproval) registered in ``group`` by anyone but the
    pipeline itself, whose steps register theirs with ``MetadataProperties.GeneratedBy`` = ``own_packages``.

    Approval changes emit the same event type; matching only the pending status keeps the pipeline's own
    approve/reject updates from starting another execution. The event's ``detail`` is the package's
    description (DescribeModelPackage, ``MetadataProperties`` included), so the pipeline's ``train`` step,
    which registers into this very group, does not start one more execution per package it trains; a package
    without ``GeneratedBy`` (registered by hand, by another job) or generated by something else still does.
    """
    return {
        "source": ["aws.sagemaker"],
        "detail-type": [PACKAGE_EVENT],
        "detail": {
            "ModelPackageGroupName": [group],
            "ModelApprovalStatus": ["PendingManualApproval"],
            "$or": [
                {"MetadataProperties": {"GeneratedBy": [{"exists": False}]}},
                {"MetadataProperties": {"GeneratedBy": [{"anything-but": [own_packages]}]}},
            ],
        },
    }


# EventBridge rule and Scheduler schedule names: at most 64 characters.
_TRIGGER_NAME_MAX = 64


def _trigger_name(pipeline_name: str, suffix: str) -> str:
    """``<pipeline>-<suffix>``, or, when that is longer than 64, a cut name with a digest of the full name.

    Cutting alone would give two long pipeline names that differ only after the cut the same rule and
    schedule: each ``upsert`` would retarget, and one without a schedule delete, the other pipeline's.
    """
    import hashlib

    name = f"{pipeline_name}-{suffix}"
    if len(name) <= _TRIGGER_NAME_MAX:
        return name
    digest = hashlib.sha256(pipeline_name.encode()).hexdigest()[:8]
    keep = _TRIGGER_NAME_MAX - len(suffix) - len(digest) - 2
    return f"{pipeline_name[:keep]}-{digest}-{suffix}"


def _unless_missing(call: Callable[[], Any]) -> Any:
    """``call()``; None when AWS answers that what it names does not exist (``ResourceNotFoundException``)."""
    from botocore.exceptions import ClientError

    try:
        return call()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        return None


def _delete_schedule(boto_session: boto3.Session, name: str) -> None:
    """Delete the schedule ``name`` (default group) if it exists.

    The SDK's ``Pipeline.delete_triggers`` does the same but logs a WARNING that the schedule "does not
    exist" on every ``upsert`` of a pipeline that never had one.
    """
    _unless_missing(lambda: boto_session.client("scheduler").delete_schedule(Name=name))


def _old_trigger_name(pipeline_name: str, suffix: str) -> str:
    """What releases before the digest of :func:`_trigger_name` named a trigger: ``<pipeline>-<suffix>`` cut at 64."""
    return f"{pipeline_name}-{suffix}"[:_TRIGGER_NAME_MAX]


def _remove_old_named_triggers(
    boto_session: boto3.Session, pipeline_name: str, pipeline_arn: str
) -> list[str]:
    """Remove the rule and schedule an earlier release named for this pipeline; one output line per removal.

    Releases before the digest in :func:`_trigger_name` cut a long name at 64 characters, and the new name of
    the same trigger differs: after an upgrade the old-named rule and schedule would go on starting the
    pipeline beside the new ones. A trigger counts as this pipeline's only when its target is the pipeline: a
    cut name may be shared with another long pipeline name, whose trigger is left alone, and a target someone
    added to the old rule stays with the rule.
    """
    lines: list[str] = []
    rule = _old_trigger_name(pipeline_name, "on-new-package")
    if rule != package_rule_name(pipeline_name):
        events = boto_session.client("events")
        targets = (_unless_missing(lambda: events.list_targets_by_rule(Rule=rule)) or {}).get("Targets", [])
        ours = [str(t["Id"]) for t in targets if t.get("Arn") == pipeline_arn]
        if ours:
            events.remove_targets(Rule=rule, Ids=ours)
            if len(ours) == len(targets):
                events.delete_rule(Name=rule)
                lines.append(f"removed old-named trigger rule {rule}")
            else:
                lines.append(f"removed the pipeline from old-named rule {rule} (its other targets stay)")
    schedule = _old_trigger_name(pipeline_name, "schedule")
    if schedule != schedule_name(pipeline_name):
        scheduler = boto_session.client("scheduler")
        target = (_unless_missing(lambda: scheduler.get_schedule(Name=schedule)) or {}).get("Target", {})
        if target.get("Arn") == pipeline_arn:
            scheduler.delete_schedule(Name=schedule)
            lines.append(f"removed old-named schedule {schedule}")
    return lines


def package_rule_name(pipeline_name: str) -> str:
    """Name of the on-new-package EventBridge rule of a pipeline (unique per pipeline name, at most 64)."""
    return _trigger_name(pipeline_name, "on-new-package")


def schedule_name(pipeline_name: str) -> str:
    """Name of the EventBridge Scheduler schedule of a pipeline (unique per pipeline name, at most 64)."""
    return _trigger_name(pipeline_name, "schedule")


def _sync_package_rule(loaded: LoadedConfig, boto_session: boto3.Session, pipeline_arn: str) -> str | None:
    config = loaded.config
    events = boto_session.client("events")
    rule = package_rule_name(pipeline_name_of(config))
    if not config.schedule.on_new_package:

        def remove_rule() -> None:
            events.remove_targets(Rule=rule, Ids=["start-pipeline"])
            events.delete_rule(Name=rule)

        _unless_missing(remove_rule)
        return None
    rule_arn = str(
        events.put_rule(
            Name=rule,
            EventPattern=json.dumps(
                package_rule_pattern(
                    config.deploy.package_group, package_source_of(config.sagemaker, pipeline_name_of(config))
                ),
                sort_keys=True,
            ),
            State="ENABLED",
            Description=f"Start {pipeline_name_of(config)} when a package is registered in "
            f"{config.deploy.package_group} (not by the pipeline itself)",
        )["RuleArn"]
    )
    events.put_targets(
        Rule=rule,
        Targets=[
            {
                "Id": "start-pipeline",
                "Arn": pipeline_arn,
                "RoleArn": config.sagemaker.execution_role(),
                # The pipeline picks the newest pending package itself (deploy.challenger); defaults suffice.
                "SageMakerPipelineParameters": {"PipelineParameterList": []},
            }
        ],
    )
    return rule_arn


def upsert_pipeline(config_path: Path | str) -> str:
    """Create or update the pipeline and its schedule/trigger; returns its ARN, then one line per trigger and
    one per old-named trigger removed (:func:`_remove_old_named_triggers`).

    Raises :class:`TargetError` (one line) when AWS refuses a call; one refused after the pipeline was
    written says so, since the pipeline then runs with its previous triggers until ``upsert`` is rerun.
    """
    from agent_release.pipelines.sagemaker_compiler import build_pipeline

    loaded = _load(config_path)
    config = loaded.config
    role = config.sagemaker.execution_role()
    boto_session = _boto_session(loaded)
    with _aws_errors(f"upsert of pipeline {pipeline_name_of(config)!r}"), _sdk_info_quieted():
        pipeline = build_pipeline(loaded, _pipeline_session(loaded, boto_session))
        response = pipeline.upsert(role_arn=role, description=config.description or None)
    pipeline_arn = str(response["PipelineArn"])
    lines = [pipeline_arn]
    name = schedule_name(pipeline.name)
    with (
        _aws_errors(
            f"pipeline {pipeline_arn} is written but its schedule/trigger is not (rerun `agent-release upsert` "
            "once fixed)"
        ),
        _sdk_info_quieted(),
    ):
        if config.schedule.cron:
            arns = pipeline.put_triggers([_schedule(config.schedule.cron, name)], role_arn=role)
            lines.extend(f"schedule {arn}" for arn in arns)
        else:
            _delete_schedule(boto_session, name)
        rule_arn = _sync_package_rule(loaded, boto_session, pipeline_arn)
        if rule_arn:
            lines.append(f"trigger {rule_arn}")
        # After the new triggers exist, so that no moment is without them.
        lines.extend(_remove_old_named_triggers(boto_session, pipeline.name, pipeline_arn))
    logger.info("pipeline=<%s>, triggers=<%d> | upserted", pipeline_arn, len(lines) - 1)
    return "\n".join(lines)


def start_pipeline(
    config_path: Path | str, overrides: dict[str, str], warn: Callable[[str], None] | None = None
) -> str:
    """Start an execution with ``NAME=VALUE`` parameter overrides (checked and typed); returns its ARN.

    The overridden config passes the checks ``validate`` and ``upsert`` apply (e.g. ``MinCompletedCases``
    above the golden set's cases). ``warn`` is told of an override the execution role's generated policy
    (``agent-release iam-policy``) does not cover: another endpoint, or a dataset outside the pipeline's
    S3 prefixes. The role may allow more than that policy, so those are warnings, not errors.

    Raises :class:`ParameterOverrideError` for an override the steps would refuse, :class:`TargetError` when
    the pipeline does not exist (yet) or AWS refuses the call.
    """
    from agent_release.pipelines.config_checks import check_config

    values = coerce_overrides(overrides)
    loaded = load_config(config_path)
    require_role(loaded, config_path)
    data = yaml.safe_load(loaded.text)
    check_override_values(data, values)
    if values:
        overridden = PipelineConfig.model_validate(apply_overrides(data, values))
        try:
            check_config(
                LoadedConfig(overridden, loaded.path, loaded.base_dir, loaded.text),
                modules_may_be_missing=True,
            )
        except ConfigError as exc:
            given = " ".join(f"{n}={v!r}" for n, v in values.items())
            raise ParameterOverrideError(f"{given}: {str(exc).split(': ', 1)[-1]}") from None
        for message in _outside_the_policy(loaded.config, values):
            if warn is not None:
                warn(message)
    sm = loaded.config.sagemaker
    check_region(sm.region)
    name = pipeline_name_of(loaded.config)
    boto_session = _boto_session(loaded)
    from sagemaker.core.workflow.pipeline_context import PipelineSession
    from sagemaker.mlops.workflow import Pipeline

    session = PipelineSession(boto_session=boto_session)
    with _aws_errors(f"start of pipeline {name!r}", pipeline=name, region=sm.region):
        execution = Pipeline(name=name, sagemaker_session=session).start(parameters=values or None)
    arn = str(execution.arn)
    logger.info("execution=<%s> | started", arn)
    return arn


def _outside_the_policy(config: PipelineConfig, values: Mapping[str, Any]) -> list[str]:
    """Overrides that the execution role's generated policy does not cover (see :func:`start_pipeline`)."""
    messages = []
    endpoint = values.get("EndpointName")
    if endpoint is not None and str(endpoint).lower() != config.deploy.endpoint_name.lower():
        messages.append(
            f"EndpointName={endpoint!r} is outside the policy `agent-release iam-policy` generates, which "
            f"covers endpoint {config.deploy.endpoint_name!r} (deploy.endpoint_name): the steps will be denied "
            "unless the role allows it"
        )
    dataset = values.get(DATASET_URI)
    if dataset is not None:
        allowed = [f"s3://{bucket_of(config.sagemaker)}/{prefix}" for prefix in state_prefixes(config)]
        if not any(str(dataset).startswith(prefix) for prefix in allowed):
            messages.append(
                f"{DATASET_URI}={dataset!r} is outside the policy `agent-release iam-policy` generates, which "
                f"lets the steps read under {' and '.join(allowed)}: the steps will be denied unless the role "
                "allows it"
            )
    return messages


def list_executions(config_path: Path | str) -> list[str]:
    """Executions of the pipeline, newest first: ``ARN  STATUS  START-TIME`` per line.

    Raises :class:`TargetError` when the pipeline does not exist (yet) or AWS refuses the call.
    """
    loaded = load_config(config_path)
    require_role(loaded, config_path)
    sm = loaded.config.sagemaker
    check_region(sm.region)
    name = pipeline_name_of(loaded.config)
    client = _boto_session(loaded).client("sagemaker")
    lines: list[str] = []
    paginator = client.get_paginator("list_pipeline_executions")
    with _aws_errors(f"listing executions of pipeline {name!r}", pipeline=name, region=sm.region):
        for page in paginator.paginate(PipelineName=name, SortOrder="Descending"):
            for summary in page.get("PipelineExecutionSummaries", []):
                started = summary.get("StartTime")
                lines.append(
                    f"{summary['PipelineExecutionArn']}  {summary.get('PipelineExecutionStatus', '?')}  "
                    f"{started.isoformat() if started is not None else '-'}"
                )
    return lines


def describe_execution_steps(client: Any, execution_arn: str) -> list[str]:
    """Steps of one execution in start order: ``NAME  STATUS  START-TIME  [failure reason]`` per line.

    ``client`` is a boto3 SageMaker client (ListPipelineExecutionSteps; moto does not implement it).
    """
    lines: list[str] = []
    paginator = client.get_paginator("list_pipeline_execution_steps")
    for page in paginator.paginate(PipelineExecutionArn=execution_arn, SortOrder="Ascending"):
        for s in page.get("PipelineExecutionSteps", []):
            started = s.get("StartTime")
            line = f"{s['StepName']}  {s.get('StepStatus', '?')}  {started.isoformat() if started else '-'}"
            if s.get("FailureReason"):
                line += f"  {s['FailureReason']}"
            lines.append(line)
    return lines
