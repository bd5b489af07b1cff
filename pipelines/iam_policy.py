"""A least-privilege IAM policy for the pipeline's execution role, generated from pipeline.yaml.

The role (``sagemaker.role_arn``) is used three ways: SageMaker Pipelines assumes it to launch the ``@step``
training jobs; the jobs run with it (the SageMaker backend's calls); EventBridge and EventBridge Scheduler
assume it to start the pipeline. Each statement below covers exactly the calls of one of those parts, scoped
to the pipeline's resources: endpoints, configs and models named after ``deploy.endpoint_name``, the deploy
package group, the pipeline's S3 prefixes, the step image's ECR repository, the MLflow tracking server.

Usage::

    policy = execution_role_policy(loaded.config)    # dict, json.dumps() it into `aws iam put-role-policy`
    trust = trust_policy()                           # the role's trust policy

``tests/contract/test_iam_policy.py`` records every call the SageMaker backend makes against moto and checks
that each one is allowed here, and that nothing in the backend statements goes unused.
"""

from __future__ import annotations

from typing import Any

from agent_release.pipelines.config import PipelineConfig
from agent_release.pipelines.sagemaker_parameters import account_of, bucket_of, image_uri_of, pipeline_name_of

# The SageMaker API calls of SageMakerBackend, by resource kind.
ENDPOINT_ACTIONS = (
    "sagemaker:CreateEndpoint",
    "sagemaker:DeleteEndpoint",
    "sagemaker:DescribeEndpoint",
    "sagemaker:UpdateEndpoint",
    "sagemaker:UpdateEndpointWeightsAndCapacities",
    "sagemaker:InvokeEndpoint",
    "sagemaker:InvokeEndpointWithResponseStream",
)
ENDPOINT_CONFIG_ACTIONS = (
    "sagemaker:CreateEndpointConfig",
    "sagemaker:DeleteEndpointConfig",
    "sagemaker:DescribeEndpointConfig",
)
MODEL_ACTIONS = (
    "sagemaker:CreateModel",
    "sagemaker:DeleteModel",
    "sagemaker:DescribeModel",
    "sagemaker:AddTags",
)
PACKAGE_ACTIONS = (
    "sagemaker:CreateModelPackageGroup",
    "sagemaker:DescribeModelPackageGroup",
    "sagemaker:CreateModelPackage",
    "sagemaker:DescribeModelPackage",
    "sagemaker:ListModelPackages",
    "sagemaker:UpdateModelPackage",
)
STATE_OBJECT_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")
METRIC_ACTIONS = ("cloudwatch:GetMetricData",)
# What SageMaker Pipelines does with the role to run a @step (a training job).
TRAINING_JOB_ACTIONS = (
    "sagemaker:CreateTrainingJob",
    "sagemaker:DescribeTrainingJob",
    "sagemaker:StopTrainingJob",
    "sagemaker:AddTags",
)
BACKEND_ACTIONS = frozenset(
    (
        *ENDPOINT_ACTIONS,
        *ENDPOINT_CONFIG_ACTIONS,
        *MODEL_ACTIONS,
        *PACKAGE_ACTIONS,
        *STATE_OBJECT_ACTIONS,
        *METRIC_ACTIONS,
        "s3:ListBucket",
    )
)


def partition_of(role_arn: str) -> str:
    """The AWS partition of an ARN (``aws``, ``aws-cn``, ``aws-us-gov``): every ARN of the policy is in the
    role's (a policy naming ``arn:aws:`` resources grants nothing in China or GovCloud)."""
    return role_arn.split(":")[1] if role_arn.count(":") >= 2 else "aws"


def _sagemaker_arn(config: PipelineConfig, resource: str) -> str:
    sm = config.sagemaker
    role = sm.execution_role()
    return f"arn:{partition_of(role)}:sagemaker:{sm.region}:{account_of(role)}:{resource}"


def _statement(sid: str, actions: tuple[str, ...], resources: list[str], **extra: Any) -> dict[str, Any]:
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(set(actions)), "Resource": resources, **extra}


def execution_role_policy(config: PipelineConfig) -> dict[str, Any]:
    """The IAM policy document (``Version`` 2012-10-17) for ``sagemaker.role_arn``.

    Raises :class:`~agent_release.pipelines.config.ConfigError` when the config names no role: the policy
    grants ``iam:PassRole`` on it and is scoped to its account.
    """
    sm = config.sagemaker
    role = sm.execution_role()
    account = account_of(role)
    partition = partition_of(role)
    name = pipeline_name_of(config)
    endpoint = config.deploy.endpoint_name
    group = config.deploy.package_group
    bucket = bucket_of(sm)
    prefixes = state_prefixes(config)
    image = image_uri_of(sm)
    statements = [
        _statement("Endpoints", ENDPOINT_ACTIONS, [_sagemaker_arn(config, f"endpoint/{endpoint.lower()}")]),
        _statement(
            "EndpointConfigsAndModels",
            (*ENDPOINT_CONFIG_ACTIONS, *MODEL_ACTIONS),
            [
                _sagemaker_arn(config, f"endpoint-config/{endpoint.lower()}-*"),
                _sagemaker_arn(config, f"model/{endpoint.lower()}-*"),
            ],
        ),
        _statement(
            "ModelRegistry",
            PACKAGE_ACTIONS,
            [
                _sagemaker_arn(config, f"model-package-group/{group.lower()}"),
                _sagemaker_arn(config, f"model-package/{group.lower()}/*"),
            ],
        ),
        _statement("StepJobs", TRAINING_JOB_ACTIONS, [_sagemaker_arn(config, "training-job/*")]),
        _statement(
            "StartPipelineFromTriggers",
            ("sagemaker:StartPipelineExecution",),
            [_sagemaker_arn(config, f"pipeline/{name.lower()}")],
        ),
        _statement(
            "PassRoleToSageMaker",
            ("iam:PassRole",),
            [role],
            Condition={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        ),
        _statement(
            "StateObjects", STATE_OBJECT_ACTIONS, [f"arn:{partition}:s3:::{bucket}/{p}*" for p in prefixes]
        ),
        _statement(
            "ListStatePrefixes",
            ("s3:ListBucket", "s3:GetBucketLocation"),
            [f"arn:{partition}:s3:::{bucket}"],
        ),
        # GetMetricData and GetAuthorizationToken have no resource-level permissions.
        _statement("VariantMetrics", METRIC_ACTIONS, ["*"]),
        _statement("PullStepImageToken", ("ecr:GetAuthorizationToken",), ["*"]),
        _statement(
            "Logs",
            ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"),
            [
                f"arn:{partition}:logs:{sm.region}:{account}:log-group:/aws/sagemaker/TrainingJobs:*",
                f"arn:{partition}:logs:{sm.region}:{account}:log-group:/aws/sagemaker/Endpoints/{endpoint}:*",
            ],
        ),
    ]
    # The step image (the @step jobs) and the serving image (CreateModel runs with this role and pulls it).
    repositories = [
        arn for uri in (image, sm.serving_image_uri) if uri and (arn := _ecr_repository(uri, partition))
    ]
    if repositories:
        statements.append(
            _statement(
                "PullImages",
                ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"),
                sorted(set(repositories)),
            )
        )
    if sm.mlflow_tracking_arn:
        statements.append(_statement("ManagedMlflow", ("sagemaker-mlflow:*",), [sm.mlflow_tracking_arn]))
    return {"Version": "2012-10-17", "Statement": statements}


def state_prefixes(config: PipelineConfig) -> list[str]:
    """The S3 key prefixes the policy lets the steps read and write in the pipeline's bucket: step code,
    arguments and results (the SDK's, under the pipeline name) and our state (under ``agent-release/``)."""
    name = pipeline_name_of(config)
    return [f"agent-release/{name}/", f"{name}/"]


def _ecr_repository(image_uri: str, partition: str = "aws") -> str | None:
    """The ARN of the ECR repository of ``image_uri`` (None for an image outside ECR)."""
    if ".dkr.ecr." not in image_uri:
        return None
    registry, _, repository = image_uri.partition("/")
    account = registry.split(".", 1)[0]
    region = registry.split(".dkr.ecr.", 1)[1].split(".", 1)[0]
    return f"arn:{partition}:ecr:{region}:{account}:repository/{repository.split(':', 1)[0].split('@', 1)[0]}"


def trust_policy() -> dict[str, Any]:
    """Who may assume the execution role: SageMaker (pipelines, jobs, endpoints), EventBridge, Scheduler."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {
                    "Service": ["events.amazonaws.com", "sagemaker.amazonaws.com", "scheduler.amazonaws.com"]
                },
                "Action": "sts:AssumeRole",
            }
        ],
    }


def iam_action(service: str, operation: str) -> str:
    """The IAM action a boto3 call needs (``service``: botocore signing name; ``operation``: CamelCase)."""
    if service == "s3":
        return {
            "ListObjectsV2": "s3:ListBucket",
            "HeadObject": "s3:GetObject",
            "HeadBucket": "s3:ListBucket",
        }.get(operation, f"s3:{operation}")
    if service in {"sagemaker-runtime", "runtime.sagemaker"}:
        return f"sagemaker:{operation}"
    prefix = {"monitoring": "cloudwatch", "cloudwatch": "cloudwatch"}.get(service, service)
    return f"{prefix}:{operation}"
