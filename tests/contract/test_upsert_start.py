"""``upsert`` + ``start`` + ``executions`` of the compiled pipeline against the moto server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.contract

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def upserted(moto_url: str) -> list[str]:
    from agent_release.pipelines.sagemaker_target import upsert_pipeline

    return upsert_pipeline(ROOT / "pipeline.yaml").splitlines()


def test_upsert_creates_the_pipeline_with_the_compiled_definition(
    upserted: list[str], boto_session: Any
) -> None:
    pipeline_arn = upserted[0]
    assert pipeline_arn.endswith(":pipeline/support-agent-release")
    described = boto_session.client("sagemaker").describe_pipeline(PipelineName="support-agent-release")
    assert described["PipelineArn"] == pipeline_arn
    assert described["RoleArn"] == "arn:aws:iam::111122223333:role/agent-release-pipeline"
    definition = json.loads(described["PipelineDefinition"])
    assert {p["Name"] for p in definition["Parameters"]} >= {"EndpointName", "DatasetUri", "MinImprovement"}
    # The project files and the dataset the definition points at were uploaded to the configured bucket.
    uri = next(p["DefaultValue"] for p in definition["Parameters"] if p["Name"] == "DatasetUri")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    body = boto_session.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body == (ROOT / "datasets/support/golden.jsonl").read_bytes()


def test_upsert_schedules_the_pipeline_from_schedule_cron(upserted: list[str], boto_session: Any) -> None:
    from agent_release.pipelines.sagemaker_target import schedule_name

    assert any(line.startswith("schedule ") for line in upserted)
    schedule = boto_session.client("scheduler").get_schedule(Name=schedule_name("support-agent-release"))
    assert schedule["ScheduleExpression"] == "cron(0 3 ? * MON *)"
    assert schedule["Target"]["Arn"] == upserted[0]
    assert schedule["Target"]["RoleArn"] == "arn:aws:iam::111122223333:role/agent-release-pipeline"


def test_upsert_adds_a_rule_that_starts_the_pipeline_on_a_new_package(
    upserted: list[str], boto_session: Any
) -> None:
    from agent_release.pipelines.sagemaker_target import package_rule_name

    events = boto_session.client("events")
    rule = events.describe_rule(Name=package_rule_name("support-agent-release"))
    pattern = json.loads(rule["EventPattern"])
    assert pattern["source"] == ["aws.sagemaker"]
    assert pattern["detail-type"] == ["SageMaker Model Package State Change"]
    assert pattern["detail"]["ModelPackageGroupName"] == ["support-model"]
    # Packages the pipeline's own train step registers (GeneratedBy: the pipeline) do not start it again.
    own = "arn:aws:sagemaker:us-east-1:111122223333:pipeline/support-agent-release"
    assert pattern["detail"]["$or"] == [
        {"MetadataProperties": {"GeneratedBy": [{"exists": False}]}},
        {"MetadataProperties": {"GeneratedBy": [{"anything-but": [own]}]}},
    ]
    (target,) = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert target["Arn"] == upserted[0]
    assert "SageMakerPipelineParameters" in target
    assert any(line == f"trigger {rule['Arn']}" for line in upserted)


def test_upsert_twice_updates_in_place(upserted: list[str], boto_session: Any) -> None:
    from agent_release.pipelines.sagemaker_target import package_rule_name, upsert_pipeline

    again = upsert_pipeline(ROOT / "pipeline.yaml").splitlines()
    assert again[0] == upserted[0]
    # The same schedule and trigger are updated, not added beside the first ones (nothing old is left to remove).
    assert again == [line for line in upserted if not line.startswith("removed ")]
    pages = boto_session.client("sagemaker").get_paginator("list_pipelines").paginate()
    names = [p["PipelineName"] for page in pages for p in page["PipelineSummaries"]]
    assert names.count("support-agent-release") == 1
    events = boto_session.client("events")
    (target,) = events.list_targets_by_rule(Rule=package_rule_name("support-agent-release"))["Targets"]
    assert target["Arn"] == upserted[0]


def test_start_with_typed_overrides_and_list_executions(upserted: list[str], boto_session: Any) -> None:
    from agent_release.pipelines.sagemaker_target import list_executions, start_pipeline

    arn = start_pipeline(ROOT / "pipeline.yaml", {"MinImprovement": "0.05", "EndpointName": "support-canary"})
    assert arn.startswith(upserted[0] + "/execution/")
    parameters = boto_session.client("sagemaker").list_pipeline_parameters_for_execution(
        PipelineExecutionArn=arn
    )
    given = {p["Name"]: p["Value"] for p in parameters["PipelineParameters"]}
    assert given == {"MinImprovement": "0.05", "EndpointName": "support-canary"}
    assert any(line.startswith(arn) for line in list_executions(ROOT / "pipeline.yaml"))


def test_start_rejects_unknown_or_mistyped_parameters(moto_url: str) -> None:
    from agent_release.pipelines.sagemaker_parameters import ParameterOverrideError
    from agent_release.pipelines.sagemaker_target import start_pipeline

    with pytest.raises(ParameterOverrideError, match="unknown pipeline parameter"):
        start_pipeline(ROOT / "pipeline.yaml", {"Treshold": "0.1"})
    with pytest.raises(ParameterOverrideError, match="expects float"):
        start_pipeline(ROOT / "pipeline.yaml", {"Alpha": "five percent"})
