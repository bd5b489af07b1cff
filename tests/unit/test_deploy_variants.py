"""The deploy step against the local backend: which packages become which variants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent_release.pipelines.local_backend import LocalBackend
from agent_release.steps.backend import ApprovalStatus, BackendError, FaultSpec, ModelSpec
from agent_release.steps.deploy_variants import DeployConfig, DeployConfigError, deploy_variants

GROUP = "support"


@pytest.fixture
def backend(tmp_path: Path) -> LocalBackend:
    backend = LocalBackend(tmp_path)
    backend.ensure_package_group(GROUP)
    return backend


def register(backend: LocalBackend, tag: str, status: ApprovalStatus | None = None) -> str:
    package = backend.register_package(GROUP, ModelSpec(kind="demo", artifact_uri=f"/models/{tag}"))
    if status is not None:
        backend.update_approval(package.arn, status, "test")
    return package.arn


def config(**kwargs: object) -> DeployConfig:
    return DeployConfig.model_validate({"endpoint_name": "support-ep", "package_group": GROUP, **kwargs})


def test_champion_and_challenger_are_deployed_side_by_side(backend: LocalBackend) -> None:
    register(backend, "old", ApprovalStatus.APPROVED)
    champion = register(backend, "v2", ApprovalStatus.APPROVED)
    register(backend, "rejected", ApprovalStatus.REJECTED)
    register(backend, "older-pending")  # pending but superseded by the next one
    challenger = register(backend, "v5")

    report = deploy_variants(config(champion_weight=0.9, challenger_weight=0.1), backend)

    assert report.changed and not report.bootstrap
    assert [(v.name, v.role, v.package_arn, v.version, v.weight) for v in report.variants] == [
        ("champion", "champion", champion, 2, 0.9),
        ("challenger", "challenger", challenger, 5, 0.1),
    ]
    state = backend.describe_endpoint("support-ep")
    assert state is not None
    assert state.variant("challenger").model.artifact_uri == "/models/v5"


def test_rerun_with_same_packages_changes_nothing(backend: LocalBackend) -> None:
    register(backend, "v1", ApprovalStatus.APPROVED)
    register(backend, "v2")
    first = deploy_variants(config(), backend)
    backend.update_weights("support-ep", {"challenger": 1.0})  # e.g. the promotion step shifted traffic
    before = backend.describe_endpoint("support-ep")
    second = deploy_variants(config(), backend)
    assert first.changed and not second.changed
    assert backend.describe_endpoint("support-ep") == before
    assert {v.name: v.weight for v in second.variants} == {"champion": 1.0, "challenger": 1.0}
    register(backend, "v3")  # a newer challenger is a change
    third = deploy_variants(config(), backend)
    assert third.changed and third.challenger is not None and third.challenger.version == 3


def test_the_champion_is_the_approved_package_promoted_last_not_the_newest(backend: LocalBackend) -> None:
    # Before: the newest Approved package. A release manager who promoted v1 back over v2 (`promote
    # champion`) saw the next run redeploy v2 as champion at full traffic, undoing the rollback.
    def approve(arn: str, audit_seq: int) -> None:
        backend.update_approval(
            arn, ApprovalStatus.APPROVED, json.dumps({"status": "Approved", "audit_seq": audit_seq})
        )

    v1 = register(backend, "v1")
    approve(v1, 1)
    v2 = register(backend, "v2")
    approve(v2, 4)
    approve(v1, 11)  # the release manager's promote back, recorded after v2's
    register(backend, "v3")

    report = deploy_variants(config(), backend)

    assert report.champion is not None and report.champion.package_arn == v1
    assert report.challenger is not None and report.challenger.version == 3


def test_first_release_is_a_bootstrap_with_the_challenger_alone(backend: LocalBackend) -> None:
    arn = register(backend, "v1")
    report = deploy_variants(config(champion_weight=1.0, challenger_weight=0.0), backend)
    assert report.bootstrap and report.champion is None
    assert report.challenger is not None and report.challenger.package_arn == arn
    assert [(v.name, v.role, v.weight) for v in report.variants] == [("challenger", "challenger", 1.0)]


def test_no_challenger_deploys_the_champion_alone(backend: LocalBackend) -> None:
    register(backend, "v1")
    register(backend, "v2", ApprovalStatus.APPROVED)  # pending v1 is older than the champion: ignored
    report = deploy_variants(config(), backend)
    assert report.challenger is None and not report.bootstrap
    assert [(v.name, v.version, v.weight) for v in report.variants] == [("champion", 2, 1.0)]


def test_a_pending_package_older_than_the_champion_is_named_not_passed_over_silently(
    backend: LocalBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: the run skipped evaluation with "no pending package newer than the champion" and v1 stayed
    # pending for ever without a word about it.
    register(backend, "v1")
    register(backend, "v2", ApprovalStatus.APPROVED)
    with caplog.at_level("WARNING", logger="agent_release.steps.deploy_variants"):
        deploy_variants(config(), backend)
    assert "pending=<v1>, champion=<v2> | not evaluated: older than the champion" in caplog.text
    caplog.clear()
    register(backend, "v3")  # a newer pending package is the challenger: nothing to say
    with caplog.at_level("WARNING", logger="agent_release.steps.deploy_variants"):
        deploy_variants(config(), backend)
    assert caplog.text == ""


def test_explicit_packages_names_and_faults(backend: LocalBackend) -> None:
    first = register(backend, "v1", ApprovalStatus.APPROVED)
    register(backend, "v2", ApprovalStatus.APPROVED)
    report = deploy_variants(
        config(
            champion=first,
            challenger=2,
            champion_variant_name="blue",
            challenger_variant_name="green",
            faults={"green": {"error_rate": 0.5}},
            challenger_weight=0.5,
        ),
        backend,
    )
    assert [(v.name, v.version) for v in report.variants] == [("blue", 1), ("green", 2)]
    state = backend.describe_endpoint("support-ep")
    assert state is not None and state.variant("green").faults == FaultSpec(error_rate=0.5)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"champion": 9}, DeployConfigError, "not a package"),
        ({"champion": 1, "challenger": 1}, DeployConfigError, "same package"),
        ({"faults": {"nobody": {}}}, DeployConfigError, "nobody"),
        ({"champion_variant_name": "x", "challenger_variant_name": "x"}, DeployConfigError, "differ"),
    ],
)
def test_config_mistakes_are_clear_errors(
    backend: LocalBackend, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    register(backend, "v1", ApprovalStatus.APPROVED)
    with pytest.raises(error, match=message):
        deploy_variants(config(**kwargs), backend)


def test_nothing_to_deploy(backend: LocalBackend) -> None:
    with pytest.raises(BackendError, match="no packages"):
        deploy_variants(config(), backend)
    register(backend, "v1", ApprovalStatus.REJECTED)
    with pytest.raises(BackendError, match="no Approved package"):
        deploy_variants(config(), backend)


def test_config_is_strict() -> None:
    with pytest.raises(ValidationError):
        config(unknown_key=1)
    with pytest.raises(ValidationError):
        config(challenger_weight=-1)
    assert all(f.description for f in DeployConfig.model_fields.values())
