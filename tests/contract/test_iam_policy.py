"""The execution-role policy allows every call the SageMaker backend makes, and no unused backend call."""

from __future__ import annotations

import fnmatch
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from agent_release.steps.backend import ApprovalStatus, ModelSpec, VariantSpec

pytestmark = pytest.mark.contract

ROOT = Path(__file__).resolve().parents[2]
# UpdateEndpoint: moto lacks it (botocore stubs cover it); Invoke*: the agents' model client calls them;
# AddTags: IAM requires it for CreateModel with Tags, which is one call.
NOT_EXERCISED_HERE = {
    "sagemaker:UpdateEndpoint",
    "sagemaker:InvokeEndpoint",
    "sagemaker:InvokeEndpointWithResponseStream",
    "sagemaker:AddTags",
}


def _allowed(policy: dict[str, Any], action: str, resource: str | None = None) -> bool:
    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow" or action not in statement["Action"]:
            continue
        if resource is None or any(fnmatch.fnmatchcase(resource, r) for r in statement["Resource"]):
            return True
    return False


@pytest.fixture(scope="module")
def recorded_backend_calls(boto_session: Any) -> tuple[set[str], list[str], Any]:
    """Every API call of one release cycle through SageMakerBackend, as IAM actions; plus resource ARNs."""
    import boto3

    from agent_release.pipelines.config import load_config
    from agent_release.pipelines.iam_policy import iam_action
    from agent_release.pipelines.sagemaker_backend import SageMakerBackend

    config = load_config(ROOT / "pipeline.yaml").config
    session = boto3.Session(region_name="us-east-1")
    bucket = f"iam-{uuid.uuid4().hex[:12]}"
    boto_session.client("s3").create_bucket(Bucket=bucket)
    calls: set[str] = set()

    def record(model: Any, **_: Any) -> None:
        calls.add(iam_action(model.service_model.signing_name, model.name))

    session.events.register("before-call.*.*", record)
    backend = SageMakerBackend(
        bucket=bucket,
        role_arn=config.sagemaker.role_arn,
        session=session,
        prefix=f"agent-release/{config.name}",
        poll_interval_s=1,
        wait_timeout_s=30,
    )
    group, endpoint = config.deploy.package_group, config.deploy.endpoint_name
    spec = ModelSpec(kind="container", artifact_uri="s3://m/model.tar.gz", options={"image_uri": "img:1"})
    backend.ensure_package_group(group)
    package = backend.register_package(group, spec, metadata={"seed": 1})
    backend.list_packages(group)
    backend.update_approval(package.arn, ApprovalStatus.APPROVED, "test")
    backend.deploy_endpoint(
        endpoint,
        [
            VariantSpec(name="champion", model=spec, package_arn=package.arn, initial_weight=1.0),
            VariantSpec(name=f"challenger-{uuid.uuid4().hex[:4]}", model=spec, initial_weight=0.0),
        ],
    )
    backend.update_weights(endpoint, {"champion": 0.5})
    backend.variant_metrics(endpoint, time.time() - 120)
    backend.list_endpoints()
    backend.append_audit("test", "promote", endpoint, "why")
    backend.list_audit()
    with backend.lock("release", "test"):
        pass
    sagemaker = session.client("sagemaker")
    arns = [str(sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointArn"])]
    config_name = sagemaker.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    arns.append(str(sagemaker.describe_endpoint_config(EndpointConfigName=config_name)["EndpointConfigArn"]))
    for variant in sagemaker.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]:
        arns.append(str(sagemaker.describe_model(ModelName=variant["ModelName"])["ModelArn"]))
    backend.delete_endpoint(endpoint)
    return calls, arns, config


def test_policy_allows_every_backend_call(recorded_backend_calls: tuple[set[str], list[str], Any]) -> None:
    from agent_release.pipelines.iam_policy import execution_role_policy

    calls, _arns, config = recorded_backend_calls
    policy = execution_role_policy(config)
    denied = sorted(c for c in calls if not _allowed(policy, c))
    assert not denied, f"calls the policy does not allow: {denied}"


def test_backend_statements_grant_nothing_the_backend_does_not_call(
    recorded_backend_calls: tuple[set[str], list[str], Any],
) -> None:
    from agent_release.pipelines.iam_policy import BACKEND_ACTIONS

    calls, _arns, _config = recorded_backend_calls
    # moto answers these, so the account under test is moto's: ARNs are checked in the test below.
    unused = sorted(BACKEND_ACTIONS - calls - NOT_EXERCISED_HERE)
    assert not unused, f"granted but never called: {unused}"


def test_policy_resources_match_what_the_backend_creates(
    recorded_backend_calls: tuple[set[str], list[str], Any],
) -> None:
    from agent_release.pipelines.iam_policy import execution_role_policy

    _calls, arns, config = recorded_backend_calls
    policy = execution_role_policy(config)
    account = config.sagemaker.role_arn.split(":")[4]
    for arn in arns:
        ours = arn.replace(":123456789012:", f":{account}:")  # moto's account -> the role's account
        kind = ours.split(":")[5].split("/")[0]
        action = {
            "endpoint": "sagemaker:DescribeEndpoint",
            "endpoint-config": "sagemaker:DescribeEndpointConfig",
            "model": "sagemaker:DescribeModel",
        }[kind]
        assert _allowed(policy, action, ours), f"{action} on {ours} is not allowed"


def test_policy_scopes_triggers_and_pass_role() -> None:
    from agent_release.pipelines.config import load_config
    from agent_release.pipelines.iam_policy import execution_role_policy, trust_policy

    config = load_config(ROOT / "pipeline.yaml").config
    policy = execution_role_policy(config)
    pipeline = "arn:aws:sagemaker:us-east-1:111122223333:pipeline/support-agent-release"
    assert _allowed(policy, "sagemaker:StartPipelineExecution", pipeline)
    assert not _allowed(policy, "sagemaker:StartPipelineExecution", pipeline.replace("support", "other"))
    (pass_role,) = [s for s in policy["Statement"] if "iam:PassRole" in s["Action"]]
    assert pass_role["Resource"] == [config.sagemaker.role_arn]
    assert pass_role["Condition"]["StringEquals"]["iam:PassedToService"] == "sagemaker.amazonaws.com"
    assert not any(
        a.endswith(":*") and a != "sagemaker-mlflow:*" for s in policy["Statement"] for a in s["Action"]
    )
    principals = trust_policy()["Statement"][0]["Principal"]["Service"]
    assert {"sagemaker.amazonaws.com", "events.amazonaws.com", "scheduler.amazonaws.com"} == set(principals)


def test_policy_lets_the_role_pull_the_serving_image_as_well_as_the_step_image() -> None:
    # Only the step image's repository was listed; CreateModel runs with this role and pulls the serving image.
    from agent_release.pipelines.config import load_config
    from agent_release.pipelines.iam_policy import execution_role_policy

    config = load_config(ROOT / "pipeline.yaml").config
    serving = "444455556666.dkr.ecr.eu-west-1.amazonaws.com/agent-release-serving:1"
    sagemaker = config.sagemaker.model_copy(update={"serving_image_uri": serving})
    policy = execution_role_policy(config.model_copy(update={"sagemaker": sagemaker}))
    repository = "arn:aws:ecr:eu-west-1:444455556666:repository/agent-release-serving"
    for action in ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"):
        assert _allowed(policy, action, repository), action
    assert not _allowed(policy, "ecr:BatchGetImage", repository.replace("serving", "other"))
    # Without a serving image, only the step image is pullable.
    assert not _allowed(execution_role_policy(config), "ecr:BatchGetImage", repository)
