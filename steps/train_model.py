"""Pipeline step: train the demo support model and register it as the challenger package.

``train_model(config, backend, base_dir, artifacts_dir)`` trains on ``config.data`` (the chosen cohorts),
saves the joblib artifact under ``artifacts_dir`` and registers it in ``config.package_group`` with status
PendingManualApproval, so only the evaluation gate can approve it. Training metadata (seed, cohorts, data
SHA-256, example count) is attached to the package; training accuracies go in its metrics.

Idempotent: when the group already holds a package trained from the same data hash, seed and cohorts, that
package is reused (and its artifact rebuilt if the file went missing) instead of registering a duplicate.

Bootstrap: a release needs a champion to compare against. On a fresh registry (no Approved package in the
group) and with ``bootstrap_champion`` on, the step first trains a baseline on the oldest cohort only and
registers and approves it as the first champion, recording why in the approval description and in the
audit ledger (action ``approve_bootstrap``: the one approval no gate decided; written before the approval,
once per package, so a resume after a kill completes it without a second entry). The demo then has a real
champion/challenger pair whose quality differs only through their training data. Both models are trained
before anything is created in the registry, so data one of them cannot be trained on fails the step with
no package group, package or approval left behind.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent_release.agents.demo_model.training import (
    TrainingDataError,
    file_sha256,
    load_examples,
    train_support_model,
)
from agent_release.steps.backend import ApprovalStatus, Backend, ModelPackage, ModelSpec
from agent_release.steps.ledger_actions import AUDIT_BOOTSTRAP_APPROVAL
from agent_release.steps.project_paths import project_path

logger = logging.getLogger(__name__)

ALL_COHORTS = "all"


class TrainConfig(BaseModel):
    """The ``train`` section of pipeline.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(
        default=True, description="Run the training step; when false the step does nothing."
    )
    data: str = Field(description="Training data (JSONL), relative to the directory of pipeline.yaml.")
    seed: int = Field(
        default=7,
        # numpy's and scikit-learn's range; in the model, so `agent-release schema` carries it too.
        ge=0,
        le=2**32 - 1,
        description="Random seed (0 to 2**32-1); the same data and seed give the same model file.",
    )
    package_group: str = Field(description="Model package group the trained model is registered in.")
    cohorts: list[str] | None = Field(
        default=None,
        min_length=1,  # an empty list would select no examples, found only after the bootstrap champion
        description="Data cohorts (the `cohort` field of each example) to train on; null = all.",
    )
    bootstrap_champion: bool = Field(
        default=True,
        description=(
            "When the group has no Approved package yet, also train a baseline on the oldest cohort only and "
            "approve it as the first champion, so a first run has a champion/challenger pair to compare."
        ),
    )


class TrainedPackage(BaseModel):
    """One package the step produced or reused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: str
    arn: str
    version: int
    artifact_uri: str
    reused: bool
    approval_status: ApprovalStatus
    metadata: Mapping[str, Any]
    metrics: Mapping[str, float]


class TrainReport(BaseModel):
    """What the step did: the challenger package and, on a fresh registry, the bootstrapped champion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    skipped: bool
    package_group: str
    challenger: TrainedPackage | None = None
    bootstrap_champion: TrainedPackage | None = None


def _cohort_key(cohorts: Sequence[str] | None) -> str:
    return ",".join(sorted(cohorts)) if cohorts else ALL_COHORTS


def _matches(package: ModelPackage, sha256: str, seed: int, cohort_key: str) -> bool:
    meta = package.metadata
    return (
        str(meta.get("data_sha256")) == sha256
        and str(meta.get("seed")) == str(seed)
        and str(meta.get("cohorts")) == cohort_key
        and package.model.kind == "demo"
    )


def _artifact_path(artifact_uri: str) -> Path:
    from agent_release.agents.demo_model.serving import artifact_path

    return artifact_path(artifact_uri)


@dataclass(frozen=True)
class _Prepared:
    """A package to reuse, or a model trained in memory and not yet saved or registered."""

    role: str
    cohorts: Sequence[str] | None
    existing: ModelPackage | None = None
    model: Any = None


def _prepare(
    *,
    role: str,
    config: TrainConfig,
    cohorts: Sequence[str] | None,
    backend: Backend,
    data_path: Path,
    sha256: str,
) -> _Prepared:
    """Find the package this training would reproduce, or train the model (raising on unusable data)."""
    key = _cohort_key(cohorts)
    existing = [
        p for p in backend.list_packages(config.package_group) if _matches(p, sha256, config.seed, key)
    ]
    if existing and existing[-1].model.artifact_uri:
        return _Prepared(role, cohorts, existing=existing[-1])
    return _Prepared(role, cohorts, model=train_support_model(data_path, seed=config.seed, cohorts=cohorts))


def _register(
    prepared: _Prepared,
    *,
    config: TrainConfig,
    backend: Backend,
    data_path: Path,
    sha256: str,
    artifacts_dir: Path,
) -> TrainedPackage:
    """Reuse the prepared package, or save the prepared model and register it."""
    role, cohorts = prepared.role, prepared.cohorts
    key = _cohort_key(cohorts)
    if prepared.existing is not None:
        package = prepared.existing
        artifact_uri = package.model.artifact_uri or ""
        if not _artifact_path(artifact_uri).is_file():
            # Same data and seed reproduce the same file, so rebuilding keeps the registered package valid.
            train_support_model(data_path, seed=config.seed, cohorts=cohorts).save(
                _artifact_path(artifact_uri)
            )
        logger.info(
            "group=<%s>, arn=<%s>, role=<%s> | reusing package", config.package_group, package.arn, role
        )
        return TrainedPackage(
            role=role,
            arn=package.arn,
            version=package.version,
            artifact_uri=artifact_uri,
            reused=True,
            approval_status=package.approval_status,
            metadata=package.metadata,
            metrics=package.metrics,
        )

    model = prepared.model
    file_name = f"demo-support-{sha256[:12]}-s{config.seed}-{key.replace(',', '+')}.joblib"
    path = model.save(artifacts_dir / file_name).resolve()
    accuracy: Mapping[str, float] = model.info["training_accuracy"]
    metadata = {
        "role": role,
        "trainer": "agent_release.steps.train_model",
        "data": config.data,
        "data_sha256": sha256,
        "seed": config.seed,
        "cohorts": key,
        "n_examples": int(model.info["n_examples"]),
        "artifact_sha256": file_sha256(path),
    }
    metrics = {f"training_accuracy_{name}": float(value) for name, value in accuracy.items()}
    package = backend.register_package(
        config.package_group,
        ModelSpec(kind="demo", artifact_uri=path.as_uri()),
        metadata=metadata,
        metrics=metrics,
    )
    logger.info(
        "group=<%s>, version=<%d>, role=<%s>, examples=<%d> | registered trained model",
        config.package_group,
        package.version,
        role,
        metadata["n_examples"],
    )
    return TrainedPackage(
        role=role,
        arn=package.arn,
        version=package.version,
        artifact_uri=path.as_uri(),
        reused=False,
        approval_status=package.approval_status,
        metadata=package.metadata,
        metrics=package.metrics,
    )


def _record_bootstrap_approval(
    backend: Backend,
    champion: TrainedPackage,
    reason: str,
    *,
    evidence: Mapping[str, Any],
    actor: str,
    execution_id: str | None,
) -> None:
    """Write the approval to the ledger before making it, once per package.

    Ledger first, as the promotion step does: if the process dies between the two, the resume finds no
    Approved package, reuses the same one (same data, seed, cohort) and approves it, and this finds its
    entry and does not write a second. The other order could leave an approval the ledger never saw.
    """
    if any(e.action == AUDIT_BOOTSTRAP_APPROVAL and e.subject == champion.arn for e in backend.list_audit()):
        return
    backend.append_audit(
        actor, AUDIT_BOOTSTRAP_APPROVAL, champion.arn, reason, evidence=evidence, execution_id=execution_id
    )


def train_model(
    config: TrainConfig,
    backend: Backend,
    base_dir: Path,
    artifacts_dir: Path,
    *,
    actor: str = "pipeline",
    execution_id: str | None = None,
) -> TrainReport:
    """Train, save and register the challenger (and bootstrap a champion on a fresh registry).

    ``actor`` and ``execution_id`` go on the ledger entry of a bootstrap approval.
    """
    if not config.enabled:
        return TrainReport(skipped=True, package_group=config.package_group)
    data_path = project_path(base_dir, config.data)
    examples = load_examples(data_path)
    if not examples:
        # Before anything is registered (the bootstrap champion trains on the oldest cohort of these).
        raise TrainingDataError(f"no training examples in {config.data}")
    sha256 = file_sha256(data_path)

    available = sorted({e.cohort for e in examples})
    unknown = sorted(set(config.cohorts or ()) - set(available))
    if unknown:
        raise TrainingDataError(f"cohorts {unknown} are not in {config.data} (it has {available})")
    # Naming every cohort is the same training set as naming none: one package, not two.
    cohorts = None if config.cohorts is None or set(config.cohorts) == set(available) else config.cohorts

    champion: TrainedPackage | None = None
    has_champion = any(
        p.approval_status == ApprovalStatus.APPROVED for p in backend.list_packages(config.package_group)
    )
    bootstrap = config.bootstrap_champion and not has_champion
    oldest = available[0]

    def prepare(role: str, trained_on: Sequence[str] | None) -> _Prepared:
        return _prepare(
            role=role, config=config, cohorts=trained_on, backend=backend, data_path=data_path, sha256=sha256
        )

    def register(prepared: _Prepared) -> TrainedPackage:
        return _register(
            prepared,
            config=config,
            backend=backend,
            data_path=data_path,
            sha256=sha256,
            artifacts_dir=artifacts_dir,
        )

    # Both models are trained before anything is registered or approved: data the challenger cannot be
    # trained on (a cohort with one intent) must not leave an approved bootstrap champion behind.
    prepared_champion = prepare("bootstrap_champion", [oldest]) if bootstrap else None
    prepared_challenger = prepare("challenger", cohorts)
    backend.ensure_package_group(config.package_group, "agent-release demo support models")
    if prepared_champion is not None:
        champion = register(prepared_champion)
        reason = (
            f"bootstrap champion: no Approved package in {config.package_group}; baseline trained on the "
            f"oldest cohort ({oldest}) so the first release has a champion to compare against"
        )
        _record_bootstrap_approval(
            backend,
            champion,
            reason,
            evidence={
                "package_group": config.package_group,
                "version": champion.version,
                "cohorts": [oldest],
                "data_sha256": sha256,
                "metrics": dict(champion.metrics),
            },
            actor=actor,
            execution_id=execution_id,
        )
        updated = backend.update_approval(champion.arn, ApprovalStatus.APPROVED, reason)
        champion = champion.model_copy(update={"approval_status": updated.approval_status})

    challenger = register(prepared_challenger)
    return TrainReport(
        skipped=False, package_group=config.package_group, challenger=challenger, bootstrap_champion=champion
    )
