"""The SageMaker target against the moto server: the execution role is never a silent default, the
on-new-package trigger ignores the packages the pipeline trains itself, ``upsert`` removes the triggers an
earlier release named differently, and a failing ``upsert`` prints its one error line and nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from _shared.cli import CLI, assert_one_line_error, copy_project, run_cli

pytestmark = pytest.mark.contract

ROLE_ARN = "arn:aws:iam::123456789012:role/agent-release-pipeline"  # moto's account

Edit = Callable[[dict[str, Any]], None]


def _project(tmp_path: Path, edit: Edit | None = None, *, role: bool = True) -> Path:
    """The default project with its own datasets, a unique pipeline name, bucket and package group."""
    project = copy_project(tmp_path / "project", copy_datasets=True)
    data = yaml.safe_load((project / "pipeline.yaml").read_text())
    tag = uuid.uuid4().hex[:10]
    data["sagemaker"] = {"pipeline_name": f"s9-{tag}", "bucket": f"s9-{tag}"}
    if role:
        data["sagemaker"]["role_arn"] = ROLE_ARN
    data["deploy"]["package_group"] = data["train"]["package_group"] = f"s9-group-{tag}"
    if edit is not None:
        edit(data)
    (project / "pipeline.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return project


def _config(project: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((project / "pipeline.yaml").read_text())
    return data


def _cli(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if env is None:
        return run_cli(list(args), cwd=project, home=project / ".agent-release")
    full = {**os.environ, "AGENT_RELEASE_HOME": str(project / ".agent-release"), **env}
    full.pop("AGENT_RELEASE_DEBUG", None)
    return subprocess.run(
        [*CLI, *args], cwd=project, env=full, capture_output=True, text=True, timeout=180, check=False
    )


def _bucket_names(boto_session: Any) -> set[str]:
    return {b["Name"] for b in boto_session.client("s3").list_buckets()["Buckets"]}


def _pipeline_names(boto_session: Any) -> set[str]:
    pages = boto_session.client("sagemaker").get_paginator("list_pipelines").paginate()
    return {p["PipelineName"] for page in pages for p in page["PipelineSummaries"]}


# -- 1. sagemaker.role_arn has no default ---------------------------------------------------------------------


def test_target_commands_refuse_a_project_without_role_arn_and_create_nothing(
    tmp_path: Path, boto_session: Any
) -> None:
    project = _project(tmp_path, role=False)
    buckets, pipelines = _bucket_names(boto_session), _pipeline_names(boto_session)
    expected = (
        "error: pipeline.yaml: sagemaker.role_arn is not set: the SageMaker target needs the pipeline's"
    )

    # Before: compile wrote a definition (and upsert created a pipeline) whose role and default bucket named
    # the example account 111122223333, without a word.
    for command in (
        ["compile", "-o", "definition.json"],
        ["upsert"],
        ["start"],
        ["executions"],
        ["iam-policy"],
    ):
        line = assert_one_line_error(_cli(project, *command), "docs/aws.md")
        assert line.startswith(expected), (command, line)

    assert not (project / "definition.json").exists()
    assert _bucket_names(boto_session) == buckets
    assert _pipeline_names(boto_session) == pipelines


def test_local_commands_need_no_role_and_validate_says_what_the_target_will_need(tmp_path: Path) -> None:
    project = _project(tmp_path, role=False)

    validated = _cli(project, "validate")
    assert validated.returncode == 0, validated.stderr
    (warning,) = [ln for ln in validated.stdout.splitlines() if ln.startswith("warning: ")]
    assert "pipeline.yaml:" in warning and "sagemaker.role_arn: is not set: compile, upsert, start" in warning
    planned = _cli(project, "plan", "--sd", "0.5", "--icc", "0.1")
    assert planned.returncode == 0, planned.stderr

    def local_only(data: dict[str, Any]) -> None:
        del data["sagemaker"], data["schedule"]

    local = _project(tmp_path / "local", local_only, role=False)
    validated = _cli(local, "validate")
    assert validated.returncode == 0, validated.stderr
    assert "warning" not in validated.stdout  # nothing about AWS for a project that never goes there


def test_the_shipped_pipeline_names_its_role_explicitly() -> None:
    from _shared.cli import ROOT

    data = yaml.safe_load((ROOT / "pipeline.yaml").read_text())
    assert data["sagemaker"]["role_arn"].startswith("arn:aws:iam::")


# -- 2. the on-new-package trigger and the pipeline's own training -------------------------------------------


def _package_event(described: dict[str, Any]) -> dict[str, Any]:
    """The EventBridge entry SageMaker sends for a package: its description as ``detail`` (docs/aws.md)."""
    detail = {k: v for k, v in described.items() if k != "ResponseMetadata"}
    return {
        "Source": "aws.sagemaker",
        "DetailType": "SageMaker Model Package State Change",
        "Resources": [described["ModelPackageArn"]],
        "Detail": json.dumps(detail, default=str),
    }


def test_a_package_the_pipeline_trains_itself_does_not_start_it_again(
    tmp_path: Path, boto_session: Any
) -> None:
    from agent_release.pipelines.config import load_config
    from agent_release.pipelines.sagemaker_backend import SageMakerBackend
    from agent_release.pipelines.sagemaker_target import package_rule_name
    from agent_release.steps.backend import ApprovalStatus, ModelSpec

    project = _project(tmp_path)  # train.enabled and schedule.on_new_package, as shipped
    upserted = _cli(project, "upsert")
    assert upserted.returncode == 0, upserted.stderr
    config = load_config(project / "pipeline.yaml").config
    assert config.train is not None and config.train.enabled and config.schedule.on_new_package
    group, name = config.deploy.package_group, _config(project)["sagemaker"]["pipeline_name"]

    # moto stores the rule but cannot start a pipeline: the pattern upsert stored goes on a probe rule on a bus
    # of its own, whose target is a queue.
    sqs, events, sagemaker = (boto_session.client(s) for s in ("sqs", "events", "sagemaker"))
    pattern = events.describe_rule(Name=package_rule_name(name))["EventPattern"]
    bus = events.create_event_bus(Name=f"probe-{uuid.uuid4().hex[:8]}")["EventBusArn"].rsplit("/", 1)[1]
    queue = sqs.create_queue(QueueName=bus)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name="probe", EventBusName=bus, EventPattern=pattern, State="ENABLED")
    events.put_targets(Rule="probe", EventBusName=bus, Targets=[{"Id": "probe", "Arn": queue_arn}])

    # The train step's package, registered by the backend the pipeline's steps build.
    steps_backend = SageMakerBackend.from_config(config.sagemaker, name)
    steps_backend.ensure_package_group(group)
    trained = steps_backend.register_package(group, ModelSpec(kind="demo", options={"quality": 0.9}))
    # A package someone registers from outside the pipeline (another training job, a person).
    outside = sagemaker.create_model_package(
        ModelPackageGroupName=group, ModelApprovalStatus="PendingManualApproval"
    )["ModelPackageArn"]
    for arn in (trained.arn, outside):
        described = sagemaker.describe_model_package(ModelPackageName=arn)
        events.put_events(Entries=[{**_package_event(described), "EventBusName": bus}])
    # The pipeline approving a package later is the same event type with another status.
    steps_backend.update_approval(outside, ApprovalStatus.APPROVED, "promoted")
    approved = sagemaker.describe_model_package(ModelPackageName=outside)
    assert approved["ModelApprovalStatus"] == "Approved"
    events.put_events(Entries=[{**_package_event(approved), "EventBusName": bus}])

    received = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
        "Messages", []
    )
    started_for = [json.loads(m["Body"])["detail"]["ModelPackageArn"] for m in received]
    # Before: [trained.arn, outside]: every package the pipeline trained started one more execution of it.
    assert started_for == [outside]


def test_the_steps_backend_names_the_pipeline_as_generated_by(tmp_path: Path, boto_session: Any) -> None:
    from agent_release.pipelines.config import load_config
    from agent_release.pipelines.sagemaker_backend import SageMakerBackend
    from agent_release.steps.backend import ModelSpec

    project = _project(tmp_path)
    config = load_config(project / "pipeline.yaml").config
    name = _config(project)["sagemaker"]["pipeline_name"]
    boto_session.client("s3").create_bucket(Bucket=_config(project)["sagemaker"]["bucket"])
    backend = SageMakerBackend.from_config(config.sagemaker, name)
    backend.ensure_package_group(config.deploy.package_group)
    package = backend.register_package(config.deploy.package_group, ModelSpec(kind="demo"))
    described = boto_session.client("sagemaker").describe_model_package(ModelPackageName=package.arn)
    assert described["MetadataProperties"] == {
        "GeneratedBy": f"arn:aws:sagemaker:us-east-1:123456789012:pipeline/{name.lower()}"
    }


# -- 3. triggers named by an earlier release -------------------------------------------------------------------


def _long_name(data: dict[str, Any]) -> None:
    data["sagemaker"]["pipeline_name"] = f"{data['sagemaker']['pipeline_name']}-{'long' * 15}"


def _legacy(name: str, suffix: str) -> str:
    """How releases before the digest named a trigger: ``<pipeline>-<suffix>`` cut at 64 characters."""
    return f"{name}-{suffix}"[:64]


def _old_release_triggers(boto_session: Any, name: str, target_arn: str) -> tuple[str, str]:
    """The rule and schedule an earlier release's ``upsert`` left for pipeline ``name`` (target ``target_arn``)."""
    rule, schedule = _legacy(name, "on-new-package"), _legacy(name, "schedule")
    events = boto_session.client("events")
    pattern = {"source": ["aws.sagemaker"], "detail-type": ["SageMaker Model Package State Change"]}
    events.put_rule(Name=rule, EventPattern=json.dumps(pattern), State="ENABLED")
    events.put_targets(
        Rule=rule,
        Targets=[
            {
                "Id": "start-pipeline",
                "Arn": target_arn,
                "RoleArn": ROLE_ARN,
                "SageMakerPipelineParameters": {"PipelineParameterList": []},
            }
        ],
    )
    boto_session.client("scheduler").create_schedule(
        Name=schedule,
        ScheduleExpression="cron(0 3 ? * MON *)",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": target_arn, "RoleArn": ROLE_ARN},
    )
    return rule, schedule


def _rule_exists(boto_session: Any, name: str) -> bool:
    return bool(boto_session.client("events").list_rules(NamePrefix=name)["Rules"])


def _schedule_exists(boto_session: Any, name: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        boto_session.client("scheduler").get_schedule(Name=name)
    except ClientError:
        return False
    return True


def test_upsert_removes_the_triggers_an_earlier_release_named_for_this_pipeline(
    tmp_path: Path, boto_session: Any
) -> None:
    from agent_release.pipelines.sagemaker_target import package_rule_name, schedule_name

    project = _project(tmp_path, _long_name)
    name = _config(project)["sagemaker"]["pipeline_name"]
    first = _cli(project, "upsert")
    assert first.returncode == 0, first.stderr
    pipeline_arn = first.stdout.splitlines()[0]
    old_rule, old_schedule = _old_release_triggers(boto_session, name, pipeline_arn)
    assert old_rule != package_rule_name(name) and old_schedule != schedule_name(name)

    again = _cli(project, "upsert")

    assert again.returncode == 0, again.stderr
    # Before: both stayed, so every new package and every Monday started the pipeline twice.
    assert not _rule_exists(boto_session, old_rule)
    assert not _schedule_exists(boto_session, old_schedule)
    assert f"removed old-named trigger rule {old_rule}" in again.stdout
    assert f"removed old-named schedule {old_schedule}" in again.stdout
    assert _rule_exists(boto_session, package_rule_name(name))
    assert _schedule_exists(boto_session, schedule_name(name))


def test_upsert_leaves_an_old_named_trigger_that_starts_another_pipeline(
    tmp_path: Path, boto_session: Any
) -> None:
    project = _project(tmp_path, _long_name)
    name = _config(project)["sagemaker"]["pipeline_name"]
    # Cut names were shared by long names that differ only after the cut: this one starts the other pipeline.
    other = f"arn:aws:sagemaker:us-east-1:123456789012:pipeline/{name.lower()}-other"
    old_rule, old_schedule = _old_release_triggers(boto_session, name, other)

    upserted = _cli(project, "upsert")

    assert upserted.returncode == 0, upserted.stderr
    assert _rule_exists(boto_session, old_rule)
    assert _schedule_exists(boto_session, old_schedule)
    assert "removed" not in upserted.stdout


# -- 4. the SDK's INFO lines -----------------------------------------------------------------------------------


def test_a_failing_upsert_prints_only_its_error_line(tmp_path: Path, moto_url: str) -> None:
    project = _project(tmp_path)
    # EventBridge unreachable: the pipeline is written, the trigger is not.
    unreachable = {"AWS_ENDPOINT_URL_EVENTBRIDGE": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}

    proc = _cli(project, "upsert", env=unreachable)

    # Before: 16 "sagemaker.remote_function INFO  Uploading serialized function ..." lines, then the error.
    line = assert_one_line_error(proc, "is written but its schedule/trigger is not")
    assert "Uploading" not in proc.stderr, line


def test_upsert_is_quiet_and_verbose_shows_the_sdk_info_lines(tmp_path: Path, moto_url: str) -> None:
    project = _project(tmp_path)
    quiet = _cli(project, "upsert")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr.strip() == "", quiet.stderr[-2000:]
    verbose = _cli(project, "-v", "upsert")
    assert verbose.returncode == 0, verbose.stderr
    assert "Uploading serialized function code to s3://" in verbose.stderr


def test_upsert_without_a_schedule_says_nothing_about_one(tmp_path: Path, boto_session: Any) -> None:
    from agent_release.pipelines.sagemaker_target import schedule_name

    def no_cron(data: dict[str, Any]) -> None:
        del data["schedule"]["cron"]

    project = _project(tmp_path, no_cron)
    for _ in range(2):  # the first removes nothing; neither may warn about the schedule it did not find
        proc = _cli(project, "upsert")
        assert proc.returncode == 0, proc.stderr
        # Before: "WARNING sagemaker.mlops.workflow.pipeline: Pipeline Schedule ... does not exist. ..."
        assert proc.stderr.strip() == "", proc.stderr[-2000:]
        assert not any(line.startswith("schedule ") for line in proc.stdout.splitlines())
    assert not _schedule_exists(boto_session, schedule_name(_config(project)["sagemaker"]["pipeline_name"]))
