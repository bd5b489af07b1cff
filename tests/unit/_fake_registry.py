"""A tiny in-memory model registry implementing the Backend methods the training step calls."""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from agent_release.steps.backend import ApprovalStatus, BackendError, ModelPackage, ModelSpec


class FakeRegistry:
    """Model package groups held in a dict; versions count from 1 per group."""

    def __init__(self) -> None:
        self.groups: dict[str, list[ModelPackage]] = {}
        self.calls: list[str] = []
        self.audit: list[dict[str, Any]] = []
        self._clock = 1_000.0

    def ensure_package_group(self, group: str, description: str = "") -> None:
        self.calls.append("ensure_package_group")
        self.groups.setdefault(group, [])

    def register_package(
        self,
        group: str,
        model: ModelSpec,
        metadata: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> ModelPackage:
        self.calls.append("register_package")
        if group not in self.groups:
            raise BackendError(f"no package group {group}")
        version = len(self.groups[group]) + 1
        self._clock += 1
        package = ModelPackage(
            group=group,
            version=version,
            arn=f"arn:fake:model-package/{group}/{version}",
            model=model,
            approval_status=ApprovalStatus.PENDING,
            metadata=dict(metadata or {}),
            metrics=dict(metrics or {}),
            created_at=self._clock,
        )
        self.groups[group].append(package)
        return package

    def list_packages(self, group: str) -> list[ModelPackage]:
        self.calls.append("list_packages")
        return list(self.groups.get(group, []))

    def get_package(self, arn: str) -> ModelPackage:
        for packages in self.groups.values():
            for package in packages:
                if package.arn == arn:
                    return package
        raise BackendError(f"unknown package {arn}")

    def update_approval(self, arn: str, status: ApprovalStatus, description: str) -> ModelPackage:
        self.calls.append("update_approval")
        package = self.get_package(arn)
        updated = package.model_copy(update={"approval_status": status, "approval_description": description})
        packages = self.groups[package.group]
        packages[packages.index(package)] = updated
        return updated

    def append_audit(
        self,
        actor: str,
        action: str,
        subject: str,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
        execution_id: str | None = None,
    ) -> dict[str, Any]:
        """Keep the entry as a plain dict in ``audit`` (the hash chain is the real backends' business)."""
        self.calls.append("append_audit")
        entry = {
            "actor": actor,
            "action": action,
            "subject": subject,
            "reason": reason,
            "evidence": dict(evidence or {}),
            "execution_id": execution_id,
        }
        self.audit.append(entry)
        return entry

    def list_audit(self) -> list[SimpleNamespace]:
        """The entries, oldest first, with attribute access like ``AuditEntry``."""
        return [SimpleNamespace(**entry) for entry in self.audit]
