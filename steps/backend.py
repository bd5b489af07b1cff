"""The backend seam: every side effect a step has on endpoints, the model registry and the audit ledger.

Steps receive a :class:`Backend` and never import boto3 or the SageMaker SDK. Two implementations exist:
``agent_release.pipelines.local_backend.LocalBackend`` (SQLite state + the loopback endpoint runtime) and
``agent_release.pipelines.sagemaker_backend.SageMakerBackend`` (boto3). One behavioural test suite
(``tests/contract/test_backend_behaviour.py``) runs against both.

The records below are frozen pydantic models so they serialise to JSON for the executor's step store and
for SageMaker ``@step`` return values alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from enum import StrEnum
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    """Base for immutable records: unknown fields are errors, instances are hashable values."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ApprovalStatus(StrEnum):
    """SageMaker Model Registry approval states (same spelling as the AWS API)."""

    PENDING = "PendingManualApproval"
    APPROVED = "Approved"
    REJECTED = "Rejected"


ModelKind = Literal["demo", "python", "openai_compatible", "container"]


class ModelSpec(Frozen):
    """What serves a variant.

    - ``demo``: the project's trained support model; ``artifact_uri`` points at its saved file.
    - ``python``: ``options["class_path"]`` = "package.module:ClassName" of a class answering chat-completions.
    - ``openai_compatible``: ``options["base_url"]`` (and optional ``model``, ``api_key_env``) of an
      upstream OpenAI-compatible server (llama.cpp server, Ollama, vLLM).
    - ``container``: SageMaker only: ``options["image_uri"]`` (+ ``artifact_uri`` as model data) or
      ``options["jumpstart_model_id"]``.
    """

    kind: ModelKind
    artifact_uri: str | None = None
    options: Mapping[str, Any] = Field(default_factory=dict)


class FaultSpec(Frozen):
    """Faults the local runtime injects into one variant (tests and rollback drills only)."""

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Share of calls answered with 5xx.")
    added_latency_ms: float = Field(
        default=0.0,
        ge=0.0,
        le=3_600_000.0,
        description="Latency added to every call in ms (at most 3,600,000: an hour).",
    )
    hang: bool = Field(default=False, description="Never answer (the client times out).")


class ModelPackage(Frozen):
    """One numbered version in a model package group."""

    group: str
    version: int
    arn: str
    model: ModelSpec
    approval_status: ApprovalStatus
    approval_description: str = ""
    metadata: Mapping[str, Any] = Field(default_factory=dict)
    metrics: Mapping[str, float] = Field(default_factory=dict)
    created_at: float


class VariantSpec(Frozen):
    """A production (or shadow) variant to deploy."""

    name: str
    model: ModelSpec
    package_arn: str | None = None
    initial_weight: float = Field(ge=0.0)
    instance_type: str = "local"
    instance_count: int = 1
    shadow: bool = False
    shadow_sample_percent: float = Field(default=0.0, ge=0.0, le=100.0)
    faults: FaultSpec = Field(default_factory=FaultSpec)


class VariantState(Frozen):
    """A deployed variant as described by the backend."""

    name: str
    model: ModelSpec
    package_arn: str | None
    current_weight: float
    desired_weight: float
    shadow: bool = False
    shadow_sample_percent: float = 0.0
    faults: FaultSpec = Field(default_factory=FaultSpec)


class EndpointState(Frozen):
    """An endpoint and its variants; ``status`` mirrors SageMaker's EndpointStatus."""

    name: str
    status: Literal["Creating", "Updating", "InService", "Failed", "Deleting"]
    variants: tuple[VariantState, ...]
    updated_at: float

    def variant(self, name: str) -> VariantState:
        """The variant called ``name``; raises ``KeyError`` when there is none."""
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def traffic_shares(self) -> dict[str, float]:
        """Share of live traffic per production variant: w / sum(w) (shadow variants excluded)."""
        prod = [v for v in self.variants if not v.shadow]
        total = sum(v.current_weight for v in prod)
        return {v.name: (v.current_weight / total if total > 0 else 0.0) for v in prod}


class VariantMetrics(Frozen):
    """Per-variant invocation metrics over a window, in the spirit of CloudWatch's AWS/SageMaker namespace."""

    variant: str
    invocations: int
    errors_4xx: int
    errors_5xx: int
    model_latency_ms_p50: float | None = None
    model_latency_ms_p95: float | None = None
    model_latency_ms_p99: float | None = None
    overhead_latency_ms_p50: float | None = None
    # Raw per-call observations in the window, oldest first (the local runtime has them; CloudWatch gives
    # aggregates only, so the SageMaker backend leaves these empty and guards fall back to the aggregates).
    latencies_ms: tuple[float, ...] = ()
    outcomes: tuple[bool, ...] = ()


class AuditEntry(Frozen):
    """One hash-chained ledger record."""

    seq: int
    at: float
    actor: str
    action: str
    subject: str
    reason: str
    evidence: Mapping[str, Any] = Field(default_factory=dict)
    execution_id: str | None = None
    prev_hash: str
    hash: str


class BackendError(RuntimeError):
    """A backend operation failed for a reason the user can act on (message is one line)."""


class LockBusyError(BackendError):
    """Another process holds the named lock."""


@runtime_checkable
class Backend(Protocol):
    """Side effects available to steps. Implementations: local (SQLite + runtime) and SageMaker (boto3)."""

    # -- model registry ------------------------------------------------------------------------------------
    def ensure_package_group(self, group: str, description: str = "") -> None:
        """Create the model package group if it does not exist."""

    def register_package(
        self,
        group: str,
        model: ModelSpec,
        metadata: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> ModelPackage:
        """Register the next numbered version in ``group`` with status PendingManualApproval."""

    def list_packages(self, group: str) -> list[ModelPackage]:
        """All versions of ``group``, oldest first (empty when the group does not exist)."""

    def get_package(self, arn: str) -> ModelPackage:
        """The package with this ARN; raises :class:`BackendError` when unknown."""

    def update_approval(self, arn: str, status: ApprovalStatus, description: str) -> ModelPackage:
        """Set the approval status with a description of who changed it and why."""

    # -- endpoints -----------------------------------------------------------------------------------------
    def deploy_endpoint(self, name: str, variants: list[VariantSpec]) -> EndpointState:
        """Create the endpoint, or update it to exactly these variants; return once InService."""

    def describe_endpoint(self, name: str) -> EndpointState | None:
        """Current state, or None when there is no such endpoint."""

    def list_endpoints(self) -> list[EndpointState]:
        """Every endpoint this backend manages."""

    def update_weights(self, name: str, weights: Mapping[str, float]) -> EndpointState:
        """UpdateEndpointWeightsAndCapacities: validated (known names, >= 0, at least one > 0)."""

    def delete_endpoint(self, name: str) -> None:
        """Delete the endpoint (no error when absent)."""

    def variant_metrics(self, name: str, since: float) -> dict[str, VariantMetrics]:
        """Per-variant metrics for invocations at or after the epoch time ``since``."""

    def runtime_endpoint_url(self) -> str | None:
        """URL for sagemaker-runtime clients (the local runtime), or None for AWS's own endpoint."""

    # -- audit ledger and locks ----------------------------------------------------------------------------
    def append_audit(
        self,
        actor: str,
        action: str,
        subject: str,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
        execution_id: str | None = None,
    ) -> AuditEntry:
        """Append one entry to the hash-chained ledger and return it."""

    def list_audit(self) -> list[AuditEntry]:
        """The whole ledger, oldest first."""

    def verify_audit(self) -> list[str]:
        """Problems found in the ledger's hash chain (edited, removed, reordered entries); empty = intact."""

    def lock(self, name: str, owner: str) -> AbstractContextManager[None]:
        """Exclusive named lock across processes; raises :class:`LockBusyError` when held elsewhere."""


def iter_production(state: EndpointState) -> Iterator[VariantState]:
    """The non-shadow variants of ``state``."""
    return (v for v in state.variants if not v.shadow)


def last_promoted(packages: Mapping[str, ModelPackage]) -> str | None:
    """Of ``packages`` (variant name -> the package it serves), the variant whose Approved package was promoted
    last: by the ledger sequence its approval description records (a release manager promoting an older
    version makes it champion again), then the newest package, then the highest version. None when none is
    Approved. Promotion and ``status`` both name the champion with it, so they never disagree."""
    approved = [
        (approval_audit_seq(p.approval_description), p.created_at, p.version, name)
        for name, p in packages.items()
        if p.approval_status == ApprovalStatus.APPROVED
    ]
    return max(approved)[3] if approved else None


def approval_audit_seq(description: str | None) -> int:
    """The ledger sequence number an approval description records (-1 when it records none)."""
    try:
        seq = json.loads(description or "").get("audit_seq")
    except (ValueError, AttributeError):
        return -1
    return int(seq) if isinstance(seq, int) else -1
