"""Deploy step: put the champion and challenger model packages behind one endpoint as production variants.

Call ``deploy_variants(DeployConfig(endpoint_name="support", package_group="support-agent"), backend)``.

Which packages:

- champion = the ``Approved`` package of the group promoted last (``backend.last_promoted``: the newest when
  no approval records its ledger entry), or an explicit ARN / version number;
- challenger = the newest ``PendingManualApproval`` package newer than the champion (or explicit).

Outcomes:

- both: two variants with ``champion_weight`` / ``challenger_weight``;
- no challenger: the champion alone (weight 1);
- no approved champion yet: a *bootstrap* — the challenger alone (weight 1), ``champion=None`` and
  ``bootstrap=True`` in the report, so the decision step treats it as a first release.

Re-running with the same packages (and faults) leaves the endpoint untouched and reports ``changed=False``
with its current weights: traffic that the promotion step shifted since is not reset.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field

from agent_release.steps.backend import (
    ApprovalStatus,
    Backend,
    BackendError,
    EndpointState,
    FaultSpec,
    Frozen,
    ModelPackage,
    VariantSpec,
    last_promoted,
)

logger = logging.getLogger(__name__)

Role = Literal["champion", "challenger"]
# Weights are relative; a bound far above any real share keeps their sum finite (1e308 + 1e308 is inf).
MAX_WEIGHT = 1_000_000.0


class DeployConfigError(ValueError):
    """The deploy section of the configuration cannot be satisfied (message is one line)."""


class DeployConfig(Frozen):
    """The ``deploy`` section of pipeline.yaml."""

    endpoint_name: str = Field(description="Endpoint that serves both variants.")
    package_group: str = Field(description="Model package group the champion and challenger come from.")
    champion: str | int = Field(
        default="approved",
        description="'approved' (the Approved package promoted last) or an explicit package ARN or version number.",
    )
    challenger: str | int | None = Field(
        default="latest_pending",
        description="'latest_pending' (newest PendingManualApproval package newer than the champion), an "
        "explicit package ARN or version number, or null for no challenger.",
    )
    champion_weight: float = Field(
        default=1.0,
        ge=0.0,
        le=MAX_WEIGHT,
        description="Initial relative weight of the champion (at most 1,000,000).",
    )
    challenger_weight: float = Field(
        default=0.0,
        ge=0.0,
        le=MAX_WEIGHT,
        description="Initial relative weight of the challenger, at most 1,000,000 (0 = reachable only by "
        "TargetVariant, which is how evaluation reaches it before any live traffic).",
    )
    champion_variant_name: str = Field(
        default="champion",
        description="Production variant name of the champion (letters, digits and hyphens, at most 63).",
    )
    challenger_variant_name: str = Field(
        default="challenger",
        description="Production variant name of the challenger (letters, digits and hyphens, at most 63).",
    )
    faults: dict[str, FaultSpec] = Field(
        default_factory=dict,
        description="Faults to inject per variant name (local runtime drills and tests).",
    )
    instance_type: str = Field(
        default="local", description="Instance type of each variant ('local' locally)."
    )


class DeployedVariant(Frozen):
    """One variant as deployed."""

    name: str
    role: Role
    package_arn: str
    version: int
    weight: float


class DeployReport(Frozen):
    """What the deploy step did."""

    endpoint_name: str
    package_group: str
    variants: tuple[DeployedVariant, ...]
    champion: DeployedVariant | None
    challenger: DeployedVariant | None
    bootstrap: bool = Field(description="No approved champion existed: the challenger is a first release.")
    changed: bool = Field(description="False when the endpoint already served exactly these packages.")


def _find(packages: list[ModelPackage], ref: str | int, what: str) -> ModelPackage:
    text = str(ref)
    for package in packages:
        if package.arn == text or (text.isdigit() and package.version == int(text)):
            return package
    raise DeployConfigError(f"{what} {text!r} is not a package of this group")


def resolve_packages(
    config: DeployConfig, packages: list[ModelPackage]
) -> tuple[ModelPackage | None, ModelPackage | None]:
    """The (champion, challenger) packages the config selects from ``packages`` (oldest first)."""
    if config.champion == "approved":
        # The package promoted last, as `status` and promotion name the champion: a release manager's
        # `promote` of an older version keeps it champion (the newest Approved undid that on the next run).
        approved = {str(p.version): p for p in packages if p.approval_status == ApprovalStatus.APPROVED}
        chosen = last_promoted(approved)
        champion = approved[chosen] if chosen is not None else None
    else:
        champion = _find(packages, config.champion, "champion")
    if config.challenger is None:
        challenger = None
    elif config.challenger == "latest_pending":
        floor = champion.version if champion else 0
        pending = [p for p in packages if p.approval_status == ApprovalStatus.PENDING and p.version > floor]
        challenger = max(pending, key=lambda p: p.version) if pending else None
    else:
        challenger = _find(packages, config.challenger, "challenger")
    if champion is not None and challenger is not None and champion.arn == challenger.arn:
        raise DeployConfigError(f"champion and challenger are the same package ({champion.arn})")
    return champion, challenger


def _warn_of_older_pending(packages: list[ModelPackage], champion: ModelPackage) -> None:
    """Name the pending packages ``latest_pending`` passes over because they are older than the champion (e.g.
    left over when a release manager promoted a newer one): otherwise they stay pending, never evaluated."""
    older = [
        p.version
        for p in packages
        if p.approval_status == ApprovalStatus.PENDING and p.version < champion.version
    ]
    if older:
        listed = ", ".join(f"v{v}" for v in sorted(older))
        logger.warning(
            "pending=<%s>, champion=<v%d> | not evaluated: older than the champion; name one in "
            "deploy.challenger to evaluate it, or register a new version",
            listed,
            champion.version,
        )


def _variant_spec(config: DeployConfig, name: str, package: ModelPackage, weight: float) -> VariantSpec:
    return VariantSpec(
        name=name,
        model=package.model,
        package_arn=package.arn,
        initial_weight=weight,
        instance_type=config.instance_type,
        faults=config.faults.get(name, FaultSpec()),
    )


def _same_deployment(current: EndpointState | None, wanted: list[VariantSpec]) -> bool:
    if current is None or len(current.variants) != len(wanted):
        return False
    by_name = {v.name: v for v in current.variants}
    for spec in wanted:
        have = by_name.get(spec.name)
        if have is None or (have.package_arn, have.model, have.faults, have.shadow) != (
            spec.package_arn,
            spec.model,
            spec.faults,
            spec.shadow,
        ):
            return False
    return True


def deploy_variants(config: DeployConfig, backend: Backend) -> DeployReport:
    """Deploy the champion and/or challenger of ``config.package_group`` to ``config.endpoint_name``."""
    names = {config.champion_variant_name, config.challenger_variant_name}
    if len(names) != 2:
        raise DeployConfigError("champion_variant_name and challenger_variant_name must differ")
    unknown = sorted(set(config.faults) - names)
    if unknown:
        raise DeployConfigError(
            f"faults name unknown variants: {', '.join(unknown)} (known: {', '.join(sorted(names))})"
        )

    packages = backend.list_packages(config.package_group)
    if not packages:
        raise BackendError(
            f"model package group {config.package_group!r} has no packages to deploy: enable `train:` to "
            "train and register one, or register your model first (`agent-release package register`; on "
            "SageMaker, in its Model Registry)"
        )
    champion, challenger = resolve_packages(config, packages)
    if champion is None and challenger is None:
        raise BackendError(
            f"model package group {config.package_group!r} has no Approved package and no pending one "
            "to deploy"
        )

    if champion is not None and challenger is None and config.challenger == "latest_pending":
        _warn_of_older_pending(packages, champion)

    roles: list[tuple[Role, str, ModelPackage, float]] = []
    if champion is not None and challenger is not None:
        if config.champion_weight + config.challenger_weight <= 0:
            raise DeployConfigError("champion_weight + challenger_weight must be > 0")
        roles.append(("champion", config.champion_variant_name, champion, config.champion_weight))
        roles.append(("challenger", config.challenger_variant_name, challenger, config.challenger_weight))
    elif champion is not None:
        roles.append(("champion", config.champion_variant_name, champion, 1.0))
    elif challenger is not None:
        roles.append(("challenger", config.challenger_variant_name, challenger, 1.0))
    specs = [_variant_spec(config, name, package, weight) for _, name, package, weight in roles]

    current = backend.describe_endpoint(config.endpoint_name)
    changed = not _same_deployment(current, specs)
    if changed:
        current = backend.deploy_endpoint(config.endpoint_name, specs)
        logger.info(
            "endpoint=<%s>, variants=<%s> | deployed", config.endpoint_name, ",".join(s.name for s in specs)
        )
    else:
        logger.info("endpoint=<%s> | already serving these packages, unchanged", config.endpoint_name)
    assert current is not None
    weights = {v.name: v.current_weight for v in current.variants}
    deployed = [
        DeployedVariant(
            name=name, role=role, package_arn=package.arn, version=package.version, weight=weights[name]
        )
        for role, name, package, _ in roles
    ]
    by_role = {d.role: d for d in deployed}
    return DeployReport(
        endpoint_name=config.endpoint_name,
        package_group=config.package_group,
        variants=tuple(deployed),
        champion=by_role.get("champion"),
        challenger=by_role.get("challenger"),
        bootstrap=champion is None,
        changed=changed,
    )
