"""The SageMaker backend: the :class:`~agent_release.steps.backend.Backend` seam implemented with boto3.

Endpoints are SageMaker real-time endpoints whose production variants are SageMaker models (a container image
plus model data, or a JumpStart model); traffic moves with UpdateEndpointWeightsAndCapacities; guards read the
per-variant CloudWatch metrics of the ``AWS/SageMaker`` namespace; the model registry is SageMaker model
package groups and packages (our model spec, metadata and metrics ride in ``CustomerMetadataProperties``).
Everything else lives in one S3 bucket under ``prefix``:

- ``artifacts/<sha256>/<file>``: local model artifacts uploaded when a package is registered;
- ``endpoints/<name>.json``: the variant specs an endpoint was deployed with (SageMaker reports weights and
  status, not which package a variant serves);
- ``audit/entries/<seq:012d>.json``: the hash-chained ledger, one write-once object per entry (``PutObject``
  with ``If-None-Match: *`` makes concurrent appends safe: the loser of a race retries with the next seq),
  plus ``audit/HEAD.json`` so that deleting the newest entries is detectable;
- ``locks/<name>.json``: named locks, created with ``If-None-Match: *`` and released with ``If-Match``.

Usage::

    backend = SageMakerBackend(bucket="my-bucket", role_arn="arn:aws:iam::...:role/x", region="us-east-1")
    backend.deploy_endpoint(
        "support",
        [
            VariantSpec(name="champion", model=spec, initial_weight=1.0),
            VariantSpec(name="challenger", model=spec, initial_weight=0.0),
        ],
    )
    backend.update_weights("support", {"champion": 0.9, "challenger": 0.1})

boto3 honours ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>``, which is how the contract tests point
this class at a moto server.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import socket
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import ValidationError

from agent_release.pipelines.backend_rules import (
    DAMAGED_EVIDENCE_KEY,
    GENESIS_HASH,
    audit_hash,
    canonical_json,
    head_mismatch,
    missing_entries,
    read_evidence,
    validate_endpoint_spec,
    validate_weights,
)
from agent_release.steps.backend import (
    ApprovalStatus,
    AuditEntry,
    BackendError,
    EndpointState,
    LockBusyError,
    ModelPackage,
    ModelSpec,
    VariantMetrics,
    VariantSpec,
    VariantState,
)

if TYPE_CHECKING:
    import boto3
    from botocore.exceptions import ClientError

    from agent_release.pipelines.config import SageMakerConfig

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")
_MAX_NAME = 63
# CustomerMetadataProperties values are limited to 256 characters; longer values spill to S3.
_MAX_PROPERTY = 256
_PROPERTY_PREFIX = "agent-release."
_APPEND_ATTEMPTS = 25
# A ledger object that is not an entry is listed as a placeholder: seq from its key, this as actor and action,
# and at most this many characters of its text as the damaged evidence.
_ENTRY_KEY_RE = re.compile(r"(\d+)\.json$")
_UNREADABLE = "<unreadable>"
_DAMAGED_TEXT_MAX = 500

EndpointStatus = Literal["Creating", "Updating", "InService", "Failed", "Deleting"]
_STATUS: dict[str, EndpointStatus] = {
    "Creating": "Creating",
    "Updating": "Updating",
    "SystemUpdating": "Updating",
    "RollingBack": "Updating",
    "InService": "InService",
    "Deleting": "Deleting",
    "Failed": "Failed",
    "OutOfService": "Failed",
    "UpdateRollbackFailed": "Failed",
}

# (metric name, statistic, VariantMetrics field); ModelLatency/OverheadLatency are in microseconds.
_METRIC_QUERIES: tuple[tuple[str, str, str], ...] = (
    ("Invocations", "Sum", "invocations"),
    ("Invocation4XXErrors", "Sum", "errors_4xx"),
    ("Invocation5XXErrors", "Sum", "errors_5xx"),
    ("ModelLatency", "p50", "model_latency_ms_p50"),
    ("ModelLatency", "p95", "model_latency_ms_p95"),
    ("ModelLatency", "p99", "model_latency_ms_p99"),
    ("OverheadLatency", "p50", "overhead_latency_ms_p50"),
)

JumpStartResolver = Callable[[str, str | None, str, str], dict[str, Any]]
"""(model_id, model_version, instance_type, region) -> a CreateModel ``PrimaryContainer``."""


def resolve_jumpstart_container(
    model_id: str, model_version: str | None, instance_type: str, region: str
) -> dict[str, Any]:
    """Image, model data and environment of a JumpStart model, as the SageMaker SDK resolves them.

    Needs network access to the JumpStart metadata bucket of ``region``.
    """
    from sagemaker.core import environment_variables, image_uris, model_uris

    version = model_version or "*"
    image = image_uris.retrieve(
        framework=None,
        region=region,
        image_scope="inference",
        model_id=model_id,
        model_version=version,
        instance_type=instance_type,
    )
    model_data = model_uris.retrieve(
        region=region, model_id=model_id, model_version=version, model_scope="inference"
    )
    env = environment_variables.retrieve_default(
        region=region, model_id=model_id, model_version=version, script="inference"
    )
    return {"Image": image, "ModelDataUrl": model_data, "Environment": dict(env)}


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _error_message(exc: ClientError) -> str:
    message = str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
    return message.splitlines()[0] if message else _error_code(exc)


def _is_not_found(exc: ClientError) -> bool:
    code = _error_code(exc)
    message = _error_message(exc).lower()
    return code in {"ResourceNotFound", "NoSuchKey", "404", "NotFound"} or (
        code in {"ValidationException", "ValidationError"}
        and ("could not find" in message or "does not exist" in message or "not found" in message)
    )


def _is_precondition_failed(exc: ClientError) -> bool:
    # 412 when the object exists (or its ETag changed); 409 when a concurrent conditional write is in flight.
    return _error_code(exc) in {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def _resource_name(*parts: str, digest: str) -> str:
    """``part-part-digest`` shortened to SageMaker's 63-character limit, keeping the digest."""
    head = "-".join(p.strip("-") for p in parts if p)
    head = re.sub(r"[^a-zA-Z0-9-]", "-", head)
    room = _MAX_NAME - len(digest) - 1
    return f"{head[:room].rstrip('-')}-{digest}"


class _LedgerRead(NamedTuple):
    """One ledger object as read: the entry (a placeholder when unreadable) and why it is damaged."""

    entry: AuditEntry
    damage: str | None  # None when it reads
    readable: bool  # False: the object is not an entry at all; ``entry`` is a placeholder, its hash unknown


def _json_object(body: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """A ledger object's body as a JSON object, or None and why it is not one."""
    try:
        value = json.loads(body.decode("utf-8"))  # written as UTF-8: no other encoding is guessed
    except ValueError as exc:  # UnicodeDecodeError included
        return None, f"its object is not valid JSON ({exc})"
    if not isinstance(value, dict):
        return None, f"its object is {type(value).__name__}, not a JSON object"
    return value, None


def _read_audit_head(body: bytes) -> tuple[tuple[int, str] | None, str | None]:
    """(seq, hash) recorded in ``audit/HEAD.json``, or None and why it does not read."""
    head, damage = _json_object(body)
    if head is None:
        return None, damage
    seq, digest = head.get("seq"), head.get("hash")
    if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(digest, str):
        return None, "its object lacks an integer seq and a string hash"
    return (seq, digest), None


def _field_errors(exc: ValidationError) -> str:
    """``field: message; ...`` of a validation error, on one line."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'entry'}: {error['msg']}" for error in exc.errors()
    )


class SageMakerBackend:
    """boto3 implementation of the backend seam (SageMaker, CloudWatch and S3 in one region)."""

    def __init__(
        self,
        *,
        bucket: str,
        role_arn: str,
        region: str = "us-east-1",
        prefix: str = "agent-release",
        session: boto3.Session | None = None,
        default_instance_type: str = "ml.m5.large",
        serving_image_uri: str | None = None,
        poll_interval_s: float = 15.0,
        wait_timeout_s: float = 3600.0,
        lock_ttl_s: float = 6 * 3600.0,
        jumpstart_resolver: JumpStartResolver = resolve_jumpstart_container,
        generated_by: str | None = None,
    ) -> None:
        import boto3

        self.bucket = bucket
        # MetadataProperties.GeneratedBy of every package registered here (the pipeline's steps: its ARN, so
        # its on-new-package trigger can leave out the packages it trained itself); None: not set.
        self.generated_by = generated_by
        self.role_arn = role_arn
        self.region = region
        self.prefix = prefix.strip("/")
        self.default_instance_type = default_instance_type
        self.serving_image_uri = serving_image_uri
        self.poll_interval_s = poll_interval_s
        self.wait_timeout_s = wait_timeout_s
        self.lock_ttl_s = lock_ttl_s
        self._resolve_jumpstart = jumpstart_resolver
        self._session = session or boto3.Session(region_name=region)
        # Typed as Any: request and response shapes are plain dicts here, checked by botocore at call time.
        self.sagemaker: Any = self._session.client("sagemaker", region_name=region)
        self.s3: Any = self._session.client("s3", region_name=region)
        self.cloudwatch: Any = self._session.client("cloudwatch", region_name=region)

    @classmethod
    def from_config(cls, config: SageMakerConfig, pipeline_name: str) -> SageMakerBackend:
        """The backend a pipeline's steps use: bucket, role and region from the ``sagemaker:`` section.

        Packages it registers name the pipeline as ``MetadataProperties.GeneratedBy``
        (:func:`~agent_release.pipelines.sagemaker_parameters.package_source_of`).
        """
        from agent_release.pipelines.sagemaker_parameters import bucket_of, package_source_of

        return cls(
            bucket=bucket_of(config),
            role_arn=config.execution_role(),
            generated_by=package_source_of(config, pipeline_name),
            region=config.region,
            prefix=f"agent-release/{pipeline_name}",
            default_instance_type=config.instance_type,
            serving_image_uri=config.serving_image_uri,
        )

    # -- plumbing ------------------------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return "/".join((self.prefix, *parts))

    def _fail(self, what: str, exc: ClientError) -> BackendError:
        return BackendError(f"{what}: {_error_code(exc)}: {_error_message(exc)}")

    def _get_bytes(self, key: str) -> tuple[bytes, str] | None:
        """(body, ETag) of an S3 object, or None when it does not exist."""
        from botocore.exceptions import ClientError

        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise self._fail(f"reading s3://{self.bucket}/{key}", exc) from None
        return bytes(obj["Body"].read()), str(obj["ETag"])

    def _get_json(self, key: str) -> tuple[Any, str] | None:
        """(decoded JSON, ETag) of an S3 object, or None when it does not exist."""
        found = self._get_bytes(key)
        return (json.loads(found[0]), found[1]) if found is not None else None

    def _put_json(self, key: str, value: Any, **conditions: str) -> None:
        self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=canonical_json(value).encode("utf-8"),
            ContentType="application/json",
            **conditions,
        )

    def _list_keys(self, prefix: str) -> list[str]:
        paginator = self.s3.get_paginator("list_objects_v2")
        keys: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(str(obj["Key"]) for obj in page.get("Contents", []))
        return sorted(keys)

    def upload_artifact(self, path: Path) -> str:
        """Upload a local file (or a directory, as a tar.gz) to ``artifacts/<sha256>/`` and return its URI."""
        if path.is_dir():
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
                for item in sorted(path.rglob("*")):
                    if item.is_file():
                        info = tar.gettarinfo(str(item), arcname=str(item.relative_to(path)))
                        info.mtime = 0  # content-addressed: the same files give the same key
                        with item.open("rb") as fh:
                            tar.addfile(info, fh)
            data, filename = buffer.getvalue(), f"{path.name}.tar.gz"
        else:
            data, filename = path.read_bytes(), path.name
        key = self._key("artifacts", hashlib.sha256(data).hexdigest()[:32], filename)
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        logger.info("path=<%s>, key=<%s> | artifact uploaded", path, key)
        return f"s3://{self.bucket}/{key}"

    def _with_remote_artifact(self, model: ModelSpec) -> ModelSpec:
        """The same spec with a local ``artifact_uri`` replaced by its S3 copy."""
        uri = model.artifact_uri
        if uri is None or "://" in uri:
            return model
        path = Path(uri.removeprefix("file:")).expanduser()
        if not path.exists():
            raise BackendError(f"model artifact {uri!r} does not exist")
        return model.model_copy(update={"artifact_uri": self.upload_artifact(path)})

    # -- model registry ------------------------------------------------------------------------------------
    def _group_exists(self, group: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.sagemaker.describe_model_package_group(ModelPackageGroupName=group)
        except ClientError as exc:
            if _is_not_found(exc):
                return False
            raise self._fail(f"describing model package group {group!r}", exc) from None
        return True

    def ensure_package_group(self, group: str, description: str = "") -> None:
        """Create the model package group if it does not exist."""
        from botocore.exceptions import ClientError

        if not _NAME_RE.fullmatch(group) or len(group) > _MAX_NAME:
            raise BackendError(f"invalid model package group name {group!r}: letters, digits and hyphens")
        if self._group_exists(group):
            return
        try:
            self.sagemaker.create_model_package_group(
                ModelPackageGroupName=group, ModelPackageGroupDescription=description or group
            )
        except ClientError as exc:
            if "already exists" not in _error_message(exc).lower():
                raise self._fail(f"creating model package group {group!r}", exc) from None
        logger.info("group=<%s> | model package group ready", group)

    def _pack_properties(self, group: str, record: Mapping[str, Any]) -> dict[str, str]:
        properties: dict[str, str] = {}
        for field, value in record.items():
            text = canonical_json(value)
            if len(text) > _MAX_PROPERTY:
                key = self._key("registry", group, f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.json")
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=text.encode("utf-8"))
                text = f"s3://{self.bucket}/{key}"
            properties[_PROPERTY_PREFIX + field] = text
        return properties

    def _unpack_property(self, text: str | None) -> Any:
        if text is None:
            return None
        if text.startswith(f"s3://{self.bucket}/"):
            found = self._get_json(text.removeprefix(f"s3://{self.bucket}/"))
            return found[0] if found else None
        return json.loads(text)

    def _inference_specification(self, model: ModelSpec) -> dict[str, Any] | None:
        container = self._container_or_none(model)
        if container is None:
            return None
        return {
            "Containers": [
                {k: v for k, v in container.items() if k in {"Image", "ModelDataUrl", "Environment"}}
            ],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        }

    def register_package(
        self,
        group: str,
        model: ModelSpec,
        metadata: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> ModelPackage:
        """Register the next numbered version in ``group`` with status PendingManualApproval.

        A local ``artifact_uri`` is uploaded to S3 first; the stored spec names the S3 copy. With
        ``generated_by`` set, the package's ``MetadataProperties.GeneratedBy`` is that value.
        """
        from botocore.exceptions import ClientError

        if not self._group_exists(group):
            raise BackendError(f"model package group {group!r} does not exist")
        model = self._with_remote_artifact(model)
        request: dict[str, Any] = {
            "ModelPackageGroupName": group,
            "ModelApprovalStatus": ApprovalStatus.PENDING.value,
            "CustomerMetadataProperties": self._pack_properties(
                group,
                {
                    "model": model.model_dump(mode="json"),
                    "metadata": dict(metadata or {}),
                    "metrics": {k: float(v) for k, v in (metrics or {}).items()},
                },
            ),
        }
        spec = self._inference_specification(model)
        if spec is not None:
            request["InferenceSpecification"] = spec
        if self.generated_by:
            request["MetadataProperties"] = {"GeneratedBy": self.generated_by}
        try:
            arn = str(self.sagemaker.create_model_package(**request)["ModelPackageArn"])
        except ClientError as exc:
            raise self._fail(f"registering a package in {group!r}", exc) from None
        package = self.get_package(arn)
        logger.info("group=<%s>, version=<%d> | registered model package", group, package.version)
        return package

    def _package(self, described: Mapping[str, Any]) -> ModelPackage:
        properties: Mapping[str, str] = described.get("CustomerMetadataProperties") or {}
        model = self._unpack_property(properties.get(_PROPERTY_PREFIX + "model"))
        if model is None:  # registered by someone else: describe what SageMaker knows
            containers = (described.get("InferenceSpecification") or {}).get("Containers") or [{}]
            model = {
                "kind": "container",
                "artifact_uri": containers[0].get("ModelDataUrl"),
                "options": {"image_uri": containers[0].get("Image")} if containers[0].get("Image") else {},
            }
        created = described.get("CreationTime")
        return ModelPackage(
            group=str(described["ModelPackageGroupName"]),
            version=int(
                described.get("ModelPackageVersion") or str(described["ModelPackageArn"]).rsplit("/", 1)[1]
            ),
            arn=str(described["ModelPackageArn"]),
            model=ModelSpec.model_validate(model),
            approval_status=ApprovalStatus(
                described.get("ModelApprovalStatus", ApprovalStatus.PENDING.value)
            ),
            approval_description=str(described.get("ApprovalDescription") or ""),
            metadata=self._unpack_property(properties.get(_PROPERTY_PREFIX + "metadata")) or {},
            metrics=self._unpack_property(properties.get(_PROPERTY_PREFIX + "metrics")) or {},
            created_at=created.timestamp() if isinstance(created, datetime) else float(created or 0.0),
        )

    def list_packages(self, group: str) -> list[ModelPackage]:
        """All versions of ``group``, oldest first (empty when the group does not exist)."""
        from botocore.exceptions import ClientError

        arns: list[str] = []
        try:
            paginator = self.sagemaker.get_paginator("list_model_packages")
            for page in paginator.paginate(ModelPackageGroupName=group, ModelPackageType="Versioned"):
                arns.extend(str(s["ModelPackageArn"]) for s in page.get("ModelPackageSummaryList", []))
        except ClientError as exc:
            if _is_not_found(exc):
                return []
            raise self._fail(f"listing packages of {group!r}", exc) from None
        return sorted((self.get_package(arn) for arn in arns), key=lambda p: p.version)

    def get_package(self, arn: str) -> ModelPackage:
        """The package with this ARN; raises :class:`BackendError` when unknown."""
        from botocore.exceptions import ClientError

        try:
            described = self.sagemaker.describe_model_package(ModelPackageName=arn)
        except ClientError as exc:
            if _is_not_found(exc) or _error_code(exc) in {"ValidationException", "ValidationError"}:
                raise BackendError(f"no model package {arn!r}") from None
            raise self._fail(f"describing {arn}", exc) from None
        return self._package(described)

    def update_approval(self, arn: str, status: ApprovalStatus, description: str) -> ModelPackage:
        """Set the approval status with a description of who changed it and why."""
        from botocore.exceptions import ClientError

        status = ApprovalStatus(status)
        self.get_package(arn)  # a clear "no model package" before SageMaker's own wording
        try:
            self.sagemaker.update_model_package(
                ModelPackageArn=arn, ModelApprovalStatus=status.value, ApprovalDescription=description
            )
        except ClientError as exc:
            raise self._fail(f"updating approval of {arn}", exc) from None
        logger.info("package=<%s>, status=<%s> | approval updated", arn, status.value)
        return self.get_package(arn)

    # -- endpoints -----------------------------------------------------------------------------------------
    def _container_or_none(self, model: ModelSpec) -> dict[str, Any] | None:
        options = dict(model.options)
        environment = {str(k): str(v) for k, v in dict(options.get("environment") or {}).items()}
        if model.kind == "container" and options.get("jumpstart_model_id"):
            resolved = self._resolve_jumpstart(
                str(options["jumpstart_model_id"]),
                str(options["jumpstart_model_version"]) if options.get("jumpstart_model_version") else None,
                str(options.get("instance_type") or self.default_instance_type),
                self.region,
            )
            resolved.setdefault("Environment", {}).update(environment)
            return resolved
        image = options.get("image_uri") if model.kind == "container" else self.serving_image_uri
        if not image:
            return None
        container: dict[str, Any] = {"Image": str(image)}
        if model.artifact_uri:
            container["ModelDataUrl"] = model.artifact_uri
        if model.kind != "container":
            # The project's serving image reads the spec to load the demo/python/openai_compatible model.
            environment["AGENT_RELEASE_MODEL_SPEC"] = model.model_dump_json()
        if environment:
            container["Environment"] = environment
        return container

    def _container(self, model: ModelSpec) -> dict[str, Any]:
        container = self._container_or_none(model)
        if container is None:
            if model.kind == "container":
                raise BackendError(
                    "a 'container' model needs options.image_uri or options.jumpstart_model_id"
                )
            raise BackendError(
                f"model kind {model.kind!r} needs a serving image on SageMaker: set sagemaker.serving_image_uri"
            )
        return container

    def _ensure_model(self, model_name: str, spec: VariantSpec) -> None:
        from botocore.exceptions import ClientError

        try:
            self.sagemaker.describe_model(ModelName=model_name)
            return
        except ClientError as exc:
            if not _is_not_found(exc):
                raise self._fail(f"describing model {model_name}", exc) from None
        tags = [{"Key": "agent-release:variant", "Value": spec.name}]
        if spec.package_arn:
            tags.append({"Key": "agent-release:package-arn", "Value": spec.package_arn})
        try:
            self.sagemaker.create_model(
                ModelName=model_name,
                ExecutionRoleArn=self.role_arn,
                PrimaryContainer=self._container(spec.model),
                Tags=tags,
            )
        except ClientError as exc:
            raise self._fail(f"creating model {model_name}", exc) from None

    def _instance_type(self, spec: VariantSpec) -> str:
        return spec.instance_type if spec.instance_type.startswith("ml.") else self.default_instance_type

    def _ensure_endpoint_config(
        self, config_name: str, variants: Sequence[VariantSpec], models: list[str]
    ) -> None:
        from botocore.exceptions import ClientError

        try:
            self.sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
            return
        except ClientError as exc:
            if not _is_not_found(exc):
                raise self._fail(f"describing endpoint config {config_name}", exc) from None
        production = [
            {
                "VariantName": v.name,
                "ModelName": m,
                "InitialInstanceCount": v.instance_count,
                "InstanceType": self._instance_type(v),
                "InitialVariantWeight": v.initial_weight,
            }
            for v, m in zip(variants, models, strict=True)
            if not v.shadow
        ]
        # A shadow variant receives a copy of sample_percent of the requests: SageMaker samples shadow
        # traffic by the shadow variant's weight relative to the production weights.
        total = sum(v.initial_weight for v in variants if not v.shadow)
        shadow = [
            {
                "VariantName": v.name,
                "ModelName": m,
                "InitialInstanceCount": v.instance_count,
                "InstanceType": self._instance_type(v),
                "InitialVariantWeight": total * v.shadow_sample_percent / 100.0,
            }
            for v, m in zip(variants, models, strict=True)
            if v.shadow
        ]
        request: dict[str, Any] = {"EndpointConfigName": config_name, "ProductionVariants": production}
        if shadow:
            request["ShadowProductionVariants"] = shadow
        try:
            self.sagemaker.create_endpoint_config(**request)
        except ClientError as exc:
            raise self._fail(f"creating endpoint config {config_name}", exc) from None

    def _wait_in_service(self, name: str) -> None:
        from botocore.exceptions import WaiterError

        waiter = self.sagemaker.get_waiter("endpoint_in_service")
        delay = max(1, round(self.poll_interval_s))
        try:
            waiter.wait(
                EndpointName=name,
                WaiterConfig={"Delay": delay, "MaxAttempts": max(1, math.ceil(self.wait_timeout_s / delay))},
            )
        except WaiterError as exc:
            last = exc.last_response or {}
            reason = last.get("FailureReason") or last.get("EndpointStatus") or str(exc)
            raise BackendError(f"endpoint {name!r} did not reach InService: {reason}") from None

    def deploy_endpoint(self, name: str, variants: list[VariantSpec]) -> EndpointState:
        """Create the endpoint, or update it to exactly these variants; return once InService.

        Models and the endpoint config are named after a digest of the variant specs, so deploying the
        same variants again changes nothing and a changed set gets a new config (UpdateEndpoint).
        """
        from botocore.exceptions import ClientError

        validate_endpoint_spec(name, variants)
        variants = [v.model_copy(update={"model": self._with_remote_artifact(v.model)}) for v in variants]
        digest = hashlib.sha256(
            canonical_json([v.model_dump(mode="json") for v in variants]).encode("utf-8")
        ).hexdigest()[:10]
        models = [_resource_name(name, v.name, digest=digest) for v in variants]
        for model_name, spec in zip(models, variants, strict=True):
            self._ensure_model(model_name, spec)
        config_name = _resource_name(name, digest=digest)
        self._ensure_endpoint_config(config_name, variants, models)
        previous = self._get_json(self._key("endpoints", f"{name}.json"))
        record = {
            "endpoint": name,
            "config": config_name,
            "models": models,
            "variants": [v.model_dump(mode="json") for v in variants],
            "retired": sorted(
                set(previous[0].get("retired", [])) | {previous[0]["config"], *previous[0]["models"]}
            )
            if previous
            else [],
        }
        try:
            current = self.sagemaker.describe_endpoint(EndpointName=name)
        except ClientError as exc:
            if not _is_not_found(exc):
                raise self._fail(f"describing endpoint {name}", exc) from None
            current = None
        self._put_json(self._key("endpoints", f"{name}.json"), record)
        try:
            if current is None:
                self.sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=config_name)
            elif current.get("EndpointConfigName") != config_name:
                self.sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=config_name)
        except ClientError as exc:
            raise self._fail(f"deploying endpoint {name}", exc) from None
        self._wait_in_service(name)
        logger.info("endpoint=<%s>, config=<%s> | deployed", name, config_name)
        state = self.describe_endpoint(name)
        if state is None:
            raise BackendError(f"endpoint {name!r} vanished right after deployment")
        return state

    def describe_endpoint(self, name: str) -> EndpointState | None:
        """Current state, or None when there is no such endpoint."""
        from botocore.exceptions import ClientError

        try:
            described = self.sagemaker.describe_endpoint(EndpointName=name)
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise self._fail(f"describing endpoint {name}", exc) from None
        found = self._get_json(self._key("endpoints", f"{name}.json"))
        specs = {v["name"]: VariantSpec.model_validate(v) for v in (found[0]["variants"] if found else [])}
        states: list[VariantState] = []
        for shadow, key in ((False, "ProductionVariants"), (True, "ShadowProductionVariants")):
            for reported in described.get(key) or []:
                variant = str(reported["VariantName"])
                spec = specs.get(variant)
                # SageMaker omits the weight of a variant created with weight 0 in some responses.
                current = float(reported.get("CurrentWeight", 0.0))
                states.append(
                    VariantState(
                        name=variant,
                        model=spec.model if spec else ModelSpec(kind="container"),
                        package_arn=spec.package_arn if spec else None,
                        current_weight=current,
                        desired_weight=float(reported.get("DesiredWeight", current)),
                        shadow=shadow,
                        shadow_sample_percent=spec.shadow_sample_percent if spec else 0.0,
                    )
                )
        updated = described.get("LastModifiedTime")
        return EndpointState(
            name=name,
            status=_STATUS.get(str(described.get("EndpointStatus")), "Updating"),
            variants=tuple(states),
            updated_at=updated.timestamp() if isinstance(updated, datetime) else time.time(),
        )

    def list_endpoints(self) -> list[EndpointState]:
        """Every endpoint this backend deployed (with a record under ``endpoints/``) that still exists."""
        states: list[EndpointState] = []
        for key in self._list_keys(self._key("endpoints") + "/"):
            state = self.describe_endpoint(key.rsplit("/", 1)[1].removesuffix(".json"))
            if state is not None:
                states.append(state)
        return states

    def update_weights(self, name: str, weights: Mapping[str, float]) -> EndpointState:
        """UpdateEndpointWeightsAndCapacities: validated (known names, >= 0, at least one > 0).

        Variants not named keep their weight; returns once the endpoint is InService again.
        """
        from botocore.exceptions import ClientError

        state = self.describe_endpoint(name)
        if state is None:
            raise BackendError(f"no endpoint {name!r}")
        merged = validate_weights(state, weights)
        production = [v.name for v in state.variants if not v.shadow]
        try:
            self.sagemaker.update_endpoint_weights_and_capacities(
                EndpointName=name,
                DesiredWeightsAndCapacities=[
                    {"VariantName": v, "DesiredWeight": merged[v]} for v in production
                ],
            )
        except ClientError as exc:
            raise self._fail(f"updating weights of {name}", exc) from None
        self._wait_in_service(name)
        logger.info("endpoint=<%s>, weights=<%s> | weights updated", name, canonical_json(merged))
        new_state = self.describe_endpoint(name)
        if new_state is None:
            raise BackendError(f"endpoint {name!r} vanished during a weight update")
        return new_state

    def delete_endpoint(self, name: str) -> None:
        """Delete the endpoint, its endpoint configs and models (no error when absent)."""
        from botocore.exceptions import ClientError

        try:
            self.sagemaker.delete_endpoint(EndpointName=name)
        except ClientError as exc:
            if not _is_not_found(exc):
                raise self._fail(f"deleting endpoint {name}", exc) from None
        found = self._get_json(self._key("endpoints", f"{name}.json"))
        if found is not None:
            record = found[0]
            for config in {
                record["config"],
                *(r for r in record.get("retired", []) if r != record["config"]),
            }:
                self._delete_quietly(self.sagemaker.delete_endpoint_config, EndpointConfigName=config)
                self._delete_quietly(self.sagemaker.delete_model, ModelName=config)
            for model in record["models"]:
                self._delete_quietly(self.sagemaker.delete_model, ModelName=model)
            self.s3.delete_object(Bucket=self.bucket, Key=self._key("endpoints", f"{name}.json"))
        logger.info("endpoint=<%s> | deleted", name)

    @staticmethod
    def _delete_quietly(call: Callable[..., Any], **kwargs: str) -> None:
        from botocore.exceptions import ClientError

        try:
            call(**kwargs)
        except ClientError as exc:
            if not _is_not_found(exc):
                raise BackendError(f"cleaning up {kwargs}: {_error_message(exc)}") from None

    def variant_metrics(self, name: str, since: float) -> dict[str, VariantMetrics]:
        """Per-variant CloudWatch metrics (AWS/SageMaker, EndpointName + VariantName) since ``since``.

        One period covers the whole window, so sums are totals and percentiles are over the window.
        CloudWatch has aggregates only: ``latencies_ms`` and ``outcomes`` stay empty. Metrics arrive in
        CloudWatch about a minute after the calls.
        """
        state = self.describe_endpoint(name)
        if state is None:
            return {}
        now = time.time()
        period = max(60, math.ceil(max(now - since, 1.0) / 60.0) * 60)
        queries: list[dict[str, Any]] = []
        for i, variant in enumerate(state.variants):
            for j, (metric, stat, _field) in enumerate(_METRIC_QUERIES):
                queries.append(
                    {
                        "Id": f"v{i}m{j}",
                        "MetricStat": {
                            "Metric": {
                                "Namespace": "AWS/SageMaker",
                                "MetricName": metric,
                                "Dimensions": [
                                    {"Name": "EndpointName", "Value": name},
                                    {"Name": "VariantName", "Value": variant.name},
                                ],
                            },
                            "Period": period,
                            "Stat": stat,
                        },
                        "ReturnData": True,
                    }
                )
        values: dict[str, list[float]] = {}
        paginator = self.cloudwatch.get_paginator("get_metric_data")
        for page in paginator.paginate(
            MetricDataQueries=queries,
            StartTime=datetime.fromtimestamp(since, tz=UTC),
            EndTime=datetime.fromtimestamp(now + 60, tz=UTC),
        ):
            for result in page.get("MetricDataResults", []):
                values.setdefault(str(result["Id"]), []).extend(
                    float(v) for v in result.get("Values", []) if isinstance(v, int | float)
                )
        metrics: dict[str, VariantMetrics] = {}
        for i, variant in enumerate(state.variants):
            fields: dict[str, Any] = {"variant": variant.name}
            for j, (_metric, stat, field) in enumerate(_METRIC_QUERIES):
                found = values.get(f"v{i}m{j}", [])
                if stat == "Sum":
                    fields[field] = round(sum(found))
                elif found:
                    # A latency percentile in microseconds; with several periods, the worst is conservative.
                    fields[field] = max(found) / 1000.0
            metrics[variant.name] = VariantMetrics.model_validate(fields)
        return metrics

    def runtime_endpoint_url(self) -> str | None:
        """None: sagemaker-runtime clients use AWS's own endpoint."""
        return None

    # -- audit ledger --------------------------------------------------------------------------------------
    def _audit_entry_key(self, seq: int) -> str:
        return self._key("audit", "entries", f"{seq:012d}.json")

    def _audit_head_key(self) -> str:
        return self._key("audit", "HEAD.json")

    def _audit_keys(self) -> list[str]:
        return self._list_keys(self._key("audit", "entries") + "/")

    def _refuse_append(self, key: str, damage: str) -> BackendError:
        return BackendError(
            f"refusing to append to the audit ledger: s3://{self.bucket}/{key} is damaged or was edited "
            f"({damage}); run `agent-release audit verify`"
        )

    def append_audit(
        self,
        actor: str,
        action: str,
        subject: str,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
        execution_id: str | None = None,
    ) -> AuditEntry:
        """Append one entry to the hash-chained ledger and return it.

        The entry object is written with ``If-None-Match: *``: when another writer took the same seq first,
        S3 answers 412 and this writer re-reads the tail and tries the next seq.

        Raises BackendError, writing nothing, when the newest entry object or ``audit/HEAD.json`` does not
        read as a ledger record: a damaged chain is not extended (the new entry could not name the hash
        before it, and a damaged head would be left behind the entry).
        """
        from botocore.exceptions import ClientError

        evidence_value = json.loads(canonical_json(dict(evidence or {})))
        head = self._get_bytes(self._audit_head_key())
        if head is not None and (head_damage := _read_audit_head(head[0])[1]) is not None:
            raise self._refuse_append(self._audit_head_key(), head_damage)
        has_head = head is not None
        for _attempt in range(_APPEND_ATTEMPTS):
            keys = self._audit_keys()
            last = self._audit_entry_at(keys[-1], len(keys)) if keys else None
            if last is not None and not last.readable:
                raise self._refuse_append(keys[-1], str(last.damage))
            seq = last.entry.seq + 1 if last else 1
            if seq == 1 and not has_head:
                # Before the first entry the head names the genesis: a crash between that entry's put and
                # the head's move then leaves a head behind the ledger (consistent), not a missing one.
                self._advance_audit_head(0, GENESIS_HASH)
                has_head = True
            fields: dict[str, Any] = {
                "seq": seq,
                "at": time.time(),
                "actor": actor,
                "action": action,
                "subject": subject,
                "reason": reason,
                "evidence": evidence_value,
                "execution_id": execution_id,
                "prev_hash": last.entry.hash if last else GENESIS_HASH,
            }
            fields["hash"] = audit_hash(fields)
            try:
                self._put_json(self._audit_entry_key(seq), fields, IfNoneMatch="*")
            except ClientError as exc:
                if _is_precondition_failed(exc):
                    continue
                raise self._fail("appending to the audit ledger", exc) from None
            self._advance_audit_head(seq, str(fields["hash"]))
            logger.info(
                "actor=<%s>, action=<%s>, subject=<%s> | audit entry appended", actor, action, subject
            )
            return AuditEntry.model_validate(fields)
        raise BackendError(f"audit ledger is too busy: {_APPEND_ATTEMPTS} concurrent appends won the race")

    def _advance_audit_head(self, seq: int, digest: str) -> None:
        """Move ``audit/HEAD.json`` forward to ``seq`` unless a concurrent writer already moved it further."""
        from botocore.exceptions import ClientError

        key = self._audit_head_key()
        for _attempt in range(_APPEND_ATTEMPTS):
            found = self._get_bytes(key)
            if found is not None:
                head, damage = _read_audit_head(found[0])
                if head is None:  # damaged since append_audit checked it
                    raise BackendError(
                        f"moving the audit head: s3://{self.bucket}/{key} is damaged or was edited ({damage}); "
                        "run `agent-release audit verify`"
                    )
                if head[0] >= seq:
                    return
            condition = {"IfMatch": found[1]} if found is not None else {"IfNoneMatch": "*"}
            try:
                self._put_json(key, {"seq": seq, "hash": digest}, **condition)
                return
            except ClientError as exc:
                if not _is_precondition_failed(exc):
                    raise self._fail("moving the audit head", exc) from None
        raise BackendError("audit head is too busy to move")

    def list_audit(self) -> list[AuditEntry]:
        """The whole ledger, oldest first.

        An entry whose evidence is not a JSON object (its S3 object was edited or damaged) is listed with
        ``{DAMAGED_EVIDENCE_KEY: <the evidence as JSON text>}`` as its evidence, as the local backend lists
        one; :meth:`verify_audit` reports it. An entry object that does not read as an entry at all (not
        JSON, not a JSON object, fields missing or mistyped) is listed as a placeholder: its seq from the
        object key, actor and action ``<unreadable>``, the object's S3 URI as subject, why as reason, its
        text (truncated) under ``DAMAGED_EVIDENCE_KEY``, at 0 and empty hashes.
        """
        return [read.entry for read in self._audit_entries()]

    def _audit_entries(self) -> list[_LedgerRead]:
        """Every ledger entry, or a placeholder for an unreadable object, with why it is damaged."""
        entries: list[_LedgerRead] = []
        for position, key in enumerate(self._audit_keys(), start=1):
            read = self._audit_entry_at(key, position)
            if read is not None:
                entries.append(read)
        return entries

    def _audit_entry_at(self, key: str, position: int) -> _LedgerRead | None:
        """The entry stored at ``key`` (the ``position``-th key), or None when the object is gone."""
        found = self._get_bytes(key)
        if found is None:
            return None
        body = found[0]
        fields, damage = _json_object(body)
        if fields is not None:
            # The object holds the evidence decoded; the shared rule reads the JSON text the local ledger
            # stores, so both backends judge the same value the same way (a string is damage even when it
            # holds an object's JSON).
            evidence, evidence_damage = read_evidence(
                json.dumps(fields.get("evidence", {}), ensure_ascii=False)
            )
            try:
                entry = AuditEntry.model_validate({**fields, "evidence": evidence})
            except ValidationError as exc:
                damage = f"its object lacks or mistypes fields ({_field_errors(exc)})"
            else:
                return _LedgerRead(entry, evidence_damage, readable=True)
        match = _ENTRY_KEY_RE.search(key)
        text = body.decode("utf-8", errors="replace")
        if len(text) > _DAMAGED_TEXT_MAX:
            text = f"{text[:_DAMAGED_TEXT_MAX]}... ({len(text)} characters in all)"
        placeholder = AuditEntry(
            seq=int(match.group(1)) if match else position,
            at=0.0,
            actor=_UNREADABLE,
            action=_UNREADABLE,
            subject=f"s3://{self.bucket}/{key}",
            reason=f"damaged ledger entry: {damage}",
            evidence={DAMAGED_EVIDENCE_KEY: text},
            prev_hash="",
            hash="",
        )
        return _LedgerRead(placeholder, damage, readable=False)

    def verify_audit(self) -> list[str]:
        """Problems found in the ledger (empty when intact): edited, removed, reordered, truncated or damaged.

        An entry object that does not read as an entry is named once ("entry N is damaged or was edited:
        its object ..."; N from its key). Its hash is unknown, so the next entry's ``prev_hash`` is not
        checked against it (that would only repeat the same damage as a second, misleading message); a
        removal right after it still shows as a gap in the seqs, and the chain is checked again from the next
        readable entry on. A damaged ``audit/HEAD.json`` is a problem of its own, and then the ledger's end is
        not compared with it.
        """
        problems: list[str] = []
        # The head before the entries: an append stores its entry, then moves the head, so a ledger read
        # after its head may be ahead of it (consistent), never behind it unless entries were removed.
        found = self._get_bytes(self._audit_head_key())
        prev: str | None = GENESIS_HASH
        checked = self._audit_entries()
        expected_seq = 1
        for read in checked:
            entry = read.entry
            gap = missing_entries(expected_seq, entry.seq)
            if gap is not None:
                problems.append(gap)
            expected_seq = entry.seq + 1
            if read.damage is not None:
                problems.append(f"entry {entry.seq} is damaged or was edited: {read.damage}")
            elif audit_hash(entry.model_dump(mode="json")) != entry.hash:
                problems.append(f"entry {entry.seq} was edited (its hash does not match its content)")
            # After a gap the chain is broken by the removal just named; saying so again would mislead.
            if gap is None and read.readable and prev is not None and entry.prev_hash != prev:
                problems.append(
                    f"entry {entry.seq} does not follow the entry before it (removed or reordered)"
                )
            prev = entry.hash if read.readable else None
        if found is None:
            if checked:
                problems.append("the ledger's recorded head (audit/HEAD.json) is missing")
            return problems
        head, damage = _read_audit_head(found[0])
        if head is None:
            problems.append(
                f"the ledger's recorded head (audit/HEAD.json) is damaged or was edited: {damage}"
            )
        else:
            # An unreadable entry's hash is unknown.
            ends = [(read.entry.seq, read.entry.hash if read.readable else None) for read in checked]
            if (problem := head_mismatch(head[0], head[1], ends)) is not None:
                problems.append(problem)
        return problems

    # -- locks ---------------------------------------------------------------------------------------------
    @contextmanager
    def lock(self, name: str, owner: str) -> Iterator[None]:
        """Exclusive named lock across processes and machines; raises :class:`LockBusyError` when held.

        The lock is the S3 object ``locks/<name>.json`` created with ``If-None-Match: *``. A holder that died
        leaves it behind: after ``lock_ttl_s`` it counts as stale and is taken over with ``If-Match`` on its
        ETag (so two processes cannot both take it over).
        """
        from botocore.exceptions import ClientError

        key = self._key("locks", re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".json")
        token = uuid.uuid4().hex
        body = {
            "owner": owner,
            "token": token,
            "acquired_at": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        try:
            self._put_json(key, body, IfNoneMatch="*")
        except ClientError as exc:
            if not _is_precondition_failed(exc):
                raise self._fail(f"acquiring lock {name!r}", exc) from None
            self._take_over_stale(name, key, body)
        try:
            yield
        finally:
            self._release(key, token)

    def _take_over_stale(self, name: str, key: str, body: Mapping[str, Any]) -> None:
        from botocore.exceptions import ClientError

        found = self._get_json(key)
        if found is None:  # released between our write and our read: try once more
            try:
                self._put_json(key, body, IfNoneMatch="*")
                return
            except ClientError as exc:
                raise LockBusyError(f"lock {name!r} is held by another process") from exc
        holder, etag = found
        since = float(holder.get("acquired_at", 0.0))
        who = (
            f"{holder.get('owner', 'unknown')} (host {holder.get('host')}, pid {holder.get('pid')}, "
            f"since {time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(since))}Z)"
        )
        if time.time() - since < self.lock_ttl_s:
            raise LockBusyError(f"lock {name!r} is held by {who}")
        try:
            self._put_json(key, body, IfMatch=etag)
        except ClientError as exc:
            raise LockBusyError(f"lock {name!r} is held by {who}") from exc
        logger.warning("lock=<%s>, stale_holder=<%s> | took over a stale lock", name, who)

    def _release(self, key: str, token: str) -> None:
        from botocore.exceptions import ClientError

        found = self._get_json(key)
        if found is None or found[0].get("token") != token:
            return  # taken over as stale meanwhile: not ours to delete
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=key, IfMatch=found[1])
        except ClientError as exc:
            if not (_is_precondition_failed(exc) or _is_not_found(exc)):
                raise self._fail("releasing a lock", exc) from None
