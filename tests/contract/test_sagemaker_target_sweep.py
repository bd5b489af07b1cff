"""Bad input to the SageMaker target commands (compile, upsert, start, executions, iam-policy) against moto.

The standard: a user mistake gets one ``error:`` line naming the key or value at fault, exit 1 (2 for usage),
no traceback, and nothing is left on AWS half-way. Each test runs the CLI as a subprocess against the
session's moto server and then looks at what exists there.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from _shared.cli import ROOT, assert_one_line_error, copy_project, run_cli

pytestmark = pytest.mark.contract

Edit = Callable[[dict[str, Any]], None]


def _project(tmp_path: Path, edit: Edit | None = None) -> Path:
    """The default project with its own datasets (the target ships only files under the project) and a
    unique pipeline name and bucket, edited by ``edit``."""
    project = copy_project(tmp_path / "project", copy_datasets=True)
    data = yaml.safe_load((project / "pipeline.yaml").read_text())
    tag = uuid.uuid4().hex[:10]
    data["sagemaker"] = {
        "pipeline_name": f"sweep-{tag}",
        "bucket": f"sweep-{tag}",
        "role_arn": "arn:aws:iam::123456789012:role/agent-release-pipeline",
    }
    if edit is not None:
        edit(data)
    (project / "pipeline.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return project


def _sagemaker(**values: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        data["sagemaker"].update(values)

    return edit


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(list(args), cwd=project, home=project / ".agent-release")


def _config(project: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((project / "pipeline.yaml").read_text())
    return data


def _bucket_exists(boto_session: Any, name: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        boto_session.client("s3").head_bucket(Bucket=name)
    except ClientError:
        return False
    return True


def _bucket_names(boto_session: Any) -> set[str]:
    return {b["Name"] for b in boto_session.client("s3").list_buckets()["Buckets"]}


def _pipeline_names(boto_session: Any) -> set[str]:
    pages = boto_session.client("sagemaker").get_paginator("list_pipelines").paginate()
    return {p["PipelineName"] for page in pages for p in page["PipelineSummaries"]}


# -- sagemaker: section mistakes are refused when the file loads, before any AWS call --------------------------


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        # A role name instead of an ARN: the SDK looked it up through IAM after creating the bucket.
        (
            _sagemaker(
                role_arn="agent-release-pipeline",
                image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/a:1",
            ),
            ("sagemaker.role_arn: 'agent-release-pipeline' is not an IAM role ARN",),
        ),
        # A user ARN: accepted and upserted as the pipeline's execution role.
        (
            _sagemaker(role_arn="arn:aws:iam::123456789012:user/bob"),
            ("sagemaker.role_arn: 'arn:aws:iam::123456789012:user/bob' is not an IAM role ARN",),
        ),
        # A bucket S3 refuses (moto creates it; AWS answers InvalidBucketName after nothing useful).
        (_sagemaker(bucket="My_Bucket"), ("sagemaker.bucket: 'My_Bucket' is not an S3 bucket name",)),
        # An S3 URI where the bucket name goes: botocore's multi-line ParamValidationError.
        (
            _sagemaker(bucket="s3://my-bucket/prefix"),
            ("sagemaker.bucket: 's3://my-bucket/prefix' is not an S3 bucket name", "without s3://"),
        ),
        # A region by city name: CreatePipeline failed after uploading everything.
        (_sagemaker(region="Frankfurt"), ("sagemaker.region: 'Frankfurt' is not an AWS region code",)),
        # CreatePipeline's name pattern has no underscore; 256 characters at most.
        (
            _sagemaker(pipeline_name="my_pipeline"),
            ("sagemaker.pipeline_name: 'my_pipeline' is not a SageMaker pipeline name",),
        ),
        (_sagemaker(pipeline_name="p" * 300), ("sagemaker.pipeline_name: 'pppp", "(at most 256)")),
    ],
    ids=[
        "role-name",
        "user-arn",
        "bucket-underscore",
        "bucket-s3-uri",
        "region-city",
        "name-underscore",
        "name-300",
    ],
)
def test_upsert_refuses_a_bad_sagemaker_section_and_creates_nothing(
    tmp_path: Path, boto_session: Any, edit: Edit, needles: tuple[str, ...]
) -> None:
    project = _project(tmp_path, edit)
    pipelines, buckets = _pipeline_names(boto_session), _bucket_names(boto_session)

    line = assert_one_line_error(_cli(project, "upsert"), *needles)

    assert line.startswith("error: pipeline.yaml:")  # the line of the key in the file
    assert _pipeline_names(boto_session) == pipelines
    assert _bucket_names(boto_session) == buckets


def test_compile_refuses_a_role_name_with_the_key_not_an_iam_lookup(tmp_path: Path, moto_url: str) -> None:
    project = _project(
        tmp_path,
        _sagemaker(
            role_arn="agent-release-pipeline", image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/a:1"
        ),
    )
    proc = _cli(project, "compile", "-o", "definition.json")
    # Before: "error: NoSuchEntityException: An error occurred (NoSuchEntity) when calling the GetRole ...".
    assert_one_line_error(proc, "sagemaker.role_arn: 'agent-release-pipeline' is not an IAM role ARN")
    assert not (project / "definition.json").exists()


def test_an_unknown_region_is_refused_by_every_command_before_any_call(
    tmp_path: Path, boto_session: Any
) -> None:
    project = _project(tmp_path, _sagemaker(region="eu-nowhere-9"))
    expected = "sagemaker.region 'eu-nowhere-9' is not a region SageMaker is offered in"
    # Before: upsert uploaded everything, then "ClientError: An error occurred (500) when calling the
    # CreatePipeline operation (reached max retries: 4): <!doctype html>"; compile and iam-policy exited 0.
    assert_one_line_error(_cli(project, "upsert"), expected)
    assert_one_line_error(_cli(project, "compile", "-o", "definition.json"), expected)
    assert_one_line_error(_cli(project, "iam-policy"), expected)
    assert_one_line_error(_cli(project, "start"), expected)
    assert_one_line_error(_cli(project, "executions"), expected)
    assert not (project / "definition.json").exists()
    assert not _bucket_exists(boto_session, _config(project)["sagemaker"]["bucket"])


def test_a_dataset_outside_the_project_creates_no_bucket(tmp_path: Path, boto_session: Any) -> None:
    outside = str(ROOT / "datasets/support/golden.jsonl")

    def edit(data: dict[str, Any]) -> None:
        data["datasets"]["golden"]["path"] = outside

    project = _project(tmp_path, edit)
    assert_one_line_error(_cli(project, "upsert"), "datasets.golden.path", "outside the project directory")
    # Before: the bucket was created before the project files were packed and refused.
    assert not _bucket_exists(boto_session, _config(project)["sagemaker"]["bucket"])


def test_a_user_scorer_installed_only_in_the_step_image_still_compiles(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["evaluate"]["scorers"].append({"name": "team_scorers_in_image.quality:politeness"})

    project = _project(tmp_path, edit)
    # validate imports user scorers, so it refuses here, where the module is not installed ...
    assert_one_line_error(_cli(project, "validate"), "team_scorers_in_image")
    # ... but the SageMaker target may find it in the step image: compile warns and writes the definition.
    proc = _cli(project, "compile", "-o", str(tmp_path / "definition.json"))
    assert proc.returncode == 0, proc.stderr
    assert "module=<team_scorers_in_image.quality> | not importable here" in proc.stderr
    assert (tmp_path / "definition.json").is_file()


def test_a_config_validate_refuses_is_not_upserted(tmp_path: Path, boto_session: Any) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["evaluate"]["scorers"].append({"name": "answer_corectness"})

    project = _project(tmp_path, edit)
    # Before: upserted (exit 0); every execution would fail in its first step on AWS.
    assert_one_line_error(
        _cli(project, "upsert"), "evaluate.scorers.8.name: unknown scorer 'answer_corectness'"
    )
    assert _config(project)["sagemaker"]["pipeline_name"] not in _pipeline_names(boto_session)
    assert not _bucket_exists(boto_session, _config(project)["sagemaker"]["bucket"])


# -- long names ---------------------------------------------------------------------------------------------------


def test_long_pipeline_names_keep_distinct_triggers_of_at_most_64_characters() -> None:
    from agent_release.pipelines.sagemaker_target import package_rule_name, schedule_name

    first, second = "a" * 70 + "-one", "a" * 70 + "-two"
    for name_of in (schedule_name, package_rule_name):
        # Before: both were cut to the same 64 characters, so one pipeline's upsert replaced the other's.
        assert name_of(first) != name_of(second)
        assert len(name_of(first)) == len(name_of(second)) == 64
    assert schedule_name("support-agent-release") == "support-agent-release-schedule"
    assert package_rule_name("support-agent-release") == "support-agent-release-on-new-package"


# -- start / executions -------------------------------------------------------------------------------------------


def test_start_and_executions_before_upsert_say_to_upsert(tmp_path: Path, moto_url: str) -> None:
    project = _project(tmp_path)
    name = _config(project)["sagemaker"]["pipeline_name"]
    expected = (
        f"error: no SageMaker pipeline '{name}' in us-east-1: create it with `agent-release upsert` first"
    )
    # Before: "error: ClientError: An error occurred (ValidationException) when calling the ... operation".
    assert assert_one_line_error(_cli(project, "start")) == expected
    assert assert_one_line_error(_cli(project, "executions")) == expected


@pytest.fixture(scope="module")
def upserted_project(tmp_path_factory: pytest.TempPathFactory, moto_url: str) -> Iterator[Path]:
    project = _project(tmp_path_factory.mktemp("upserted"))
    proc = _cli(project, "upsert")
    assert proc.returncode == 0, proc.stderr
    yield project


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("Alpha=5", "error: parameter Alpha=5.0 is refused: decide.alpha: Input should be less than 0.5"),
        ("Alpha=nan", "error: parameter Alpha expects a finite float, got 'nan'"),
        ("MinImprovement=1e400", "error: parameter MinImprovement expects a finite float, got '1e400'"),
        (
            "MinCompletedCases=-3",
            "error: parameter MinCompletedCases=-3 is refused: decide.min_completed_cases: "
            "Input should be greater than or equal to 1",
        ),
        (
            "PromotionMode=yolo",
            "error: parameter PromotionMode='yolo' is refused: promote.mode: Input should be 'auto' or 'manual'",
        ),
        (
            "TrafficSchedule=abc",
            "error: parameter TrafficSchedule expects comma-separated numbers (e.g. 10,50,100), got 'abc'",
        ),
        (
            "TrafficSchedule=50,10",
            "error: parameter TrafficSchedule='50,10' is refused: promote.schedule: schedule must increase strictly",
        ),
        ("MaxErrorRate=-1", "error: parameter MaxErrorRate=-1.0 is refused: promote.guards.max_error_rate: "),
        ("EndpointName=bad_name!", "error: parameter EndpointName 'bad_name!' is not an endpoint name"),
        ("EndpointName=", "error: parameter EndpointName '' is not an endpoint name"),
        ("DatasetUri=/tmp/golden.jsonl", "error: parameter DatasetUri expects an S3 URI s3://bucket/key"),
        # A rule `validate` and `upsert` apply across keys and files; `start` used to let it through.
        (
            "MinCompletedCases=100000",
            "error: MinCompletedCases=100000: decide.min_completed_cases: 100000 is more than the ",
        ),
    ],
)
def test_start_refuses_an_override_the_steps_would_refuse_and_starts_nothing(
    upserted_project: Path, boto_session: Any, override: str, expected: str
) -> None:
    name = _config(upserted_project)["sagemaker"]["pipeline_name"]
    client = boto_session.client("sagemaker")
    before = client.list_pipeline_executions(PipelineName=name)["PipelineExecutionSummaries"]

    # Before: exit 0 and an execution that would fail in its first step on AWS.
    line = assert_one_line_error(_cli(upserted_project, "start", "-p", override))

    assert line.startswith(expected), line
    assert client.list_pipeline_executions(PipelineName=name)["PipelineExecutionSummaries"] == before


def test_start_refuses_a_parameter_given_twice(upserted_project: Path, boto_session: Any) -> None:
    name = _config(upserted_project)["sagemaker"]["pipeline_name"]
    client = boto_session.client("sagemaker")
    before = client.list_pipeline_executions(PipelineName=name)["PipelineExecutionSummaries"]

    proc = _cli(upserted_project, "start", "-p", "Alpha=0.1", "-p", "Alpha=0.2")

    # Before: the later value silently won.
    assert proc.returncode == 2, proc.stderr
    assert "Invalid value for --parameter: Alpha given twice (Alpha=0.1, Alpha=0.2)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert client.list_pipeline_executions(PipelineName=name)["PipelineExecutionSummaries"] == before


def test_start_with_valid_overrides_still_starts(upserted_project: Path, boto_session: Any) -> None:
    proc = _cli(upserted_project, "start", "-p", "Alpha=0.1", "-p", "TrafficSchedule=20,100")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", "overrides inside the generated policy warn of nothing"
    given = boto_session.client("sagemaker").list_pipeline_parameters_for_execution(
        PipelineExecutionArn=proc.stdout.strip()
    )["PipelineParameters"]
    assert {p["Name"]: p["Value"] for p in given} == {"Alpha": "0.1", "TrafficSchedule": "20,100"}


# -- denied calls -------------------------------------------------------------------------------------------------


@pytest.fixture
def deployer_denied(boto_session: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Credentials of an IAM user denied ``action_denied``, with moto checking IAM for the test's duration."""
    from moto import settings

    iam = boto_session.client("iam")
    user = f"deployer-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName="deploy",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "*", "Resource": "*"},
                    {"Effect": "Deny", "Action": "events:PutRule", "Resource": "*"},
                ],
            }
        ),
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    yield user


def test_a_denied_trigger_says_the_pipeline_was_written_but_not_its_schedule(
    tmp_path: Path, deployer_denied: str
) -> None:
    import boto3

    project = _project(tmp_path)
    name = _config(project)["sagemaker"]["pipeline_name"]

    proc = _cli(project, "upsert")

    # The error is the only line: the SDK's INFO upload notices no longer precede it.
    line = assert_one_line_error(proc)
    for needle in (
        f":pipeline/{name} is written but its schedule/trigger is not (rerun `agent-release upsert` once fixed)",
        f"AWS refused PutRule (AccessDenied): User: arn:aws:iam::123456789012:user/{deployer_denied} is not "
        "authorized to perform: events:PutRule",
        "(the deployer's credentials lack this permission)",
    ):
        assert needle in line, (needle, line)
    # Before: "error: ClientError: An error occurred (403) ... <?xml ..." with no word about the pipeline.
    assert line.startswith("error: pipeline arn:aws:sagemaker:")
    deployer = boto3.Session(region_name="us-east-1")  # the deployer's keys, from the environment
    assert name in _pipeline_names(deployer)  # as the line says: written, and upsert again completes it


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("EndpointName=support-canary", "EndpointName='support-canary' is outside the policy"),
        (
            "DatasetUri=s3://other-bucket/golden.jsonl",
            "DatasetUri='s3://other-bucket/golden.jsonl' is outside",
        ),
    ],
)
def test_start_warns_of_an_override_the_generated_policy_does_not_cover(
    upserted_project: Path, override: str, needle: str
) -> None:
    # It started silently; on AWS the steps would then be denied CreateEndpoint / s3:GetObject.
    proc = _cli(upserted_project, "start", "-p", override)
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"warning: {needle}") and "unless the role allows it" in line, line
