"""One behavioural suite for the backend seam, run against both implementations.

``local``: :class:`LocalBackend` on a temporary state directory. ``sagemaker``: :class:`SageMakerBackend`
against the moto server (real HTTP, SigV4). Where moto lacks an API the SageMaker side is covered by botocore
stubs in ``test_sagemaker_gaps.py`` (list in docs/aws.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_release.steps.backend import (
    ApprovalStatus,
    Backend,
    BackendError,
    LockBusyError,
    ModelSpec,
    VariantSpec,
)

pytestmark = pytest.mark.contract

REGION = "us-east-1"
MISSING_ARN = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/no-such-group/7"


@pytest.fixture(params=["local", "sagemaker"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        from agent_release.pipelines.local_backend import LocalBackend

        local = LocalBackend(tmp_path / "state")
        yield local
        local.close()
        return
    yield request.getfixturevalue("sagemaker_backend")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def model_spec(version: str) -> ModelSpec:
    """A model both backends can describe (the local runtime never serves it in this suite)."""
    return ModelSpec(
        kind="container",
        artifact_uri=f"s3://models/support/{version}/model.tar.gz",
        options={"image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/agent-serving:1"},
    )


def two_variants(endpoint_package: str | None = None) -> list[VariantSpec]:
    return [
        VariantSpec(
            name="champion", model=model_spec("v1"), package_arn=endpoint_package, initial_weight=1.0
        ),
        VariantSpec(name="challenger", model=model_spec("v2"), initial_weight=0.0),
    ]


# -- model registry ----------------------------------------------------------------------------------------


def test_registry_numbers_versions_and_keeps_what_was_registered(backend: Backend) -> None:
    group = unique("support-model")
    backend.ensure_package_group(group, "support agent models")
    backend.ensure_package_group(group, "again: no error, no duplicate")

    first = backend.register_package(
        group, model_spec("v1"), metadata={"seed": 7, "data": "train.jsonl"}, metrics={"accuracy": 0.81}
    )
    second = backend.register_package(group, model_spec("v2"))

    assert (first.version, second.version) == (1, 2)
    assert first.approval_status is ApprovalStatus.PENDING
    assert first.arn != second.arn
    listed = backend.list_packages(group)
    assert [p.version for p in listed] == [1, 2]
    assert listed[0].model == model_spec("v1")
    assert dict(listed[0].metadata) == {"seed": 7, "data": "train.jsonl"}
    assert dict(listed[0].metrics) == {"accuracy": 0.81}
    assert backend.get_package(second.arn) == listed[1]


def test_registry_approval_changes_status_and_description(backend: Backend) -> None:
    group = unique("approvals")
    backend.ensure_package_group(group)
    package = backend.register_package(group, model_spec("v1"))

    approved = backend.update_approval(package.arn, ApprovalStatus.APPROVED, "release-manager: gate passed")

    assert approved.approval_status is ApprovalStatus.APPROVED
    assert approved.approval_description == "release-manager: gate passed"
    assert backend.get_package(package.arn).approval_status is ApprovalStatus.APPROVED
    rejected = backend.update_approval(package.arn, ApprovalStatus.REJECTED, "rolled back")
    assert (
        backend.list_packages(group)[0].approval_status is rejected.approval_status is ApprovalStatus.REJECTED
    )


def test_registry_errors_are_backend_errors(backend: Backend) -> None:
    assert backend.list_packages(unique("never-created")) == []
    with pytest.raises(BackendError, match=f"no model package '{MISSING_ARN}'"):
        backend.get_package(MISSING_ARN)
    with pytest.raises(BackendError, match=f"no model package '{MISSING_ARN}'"):
        backend.update_approval(MISSING_ARN, ApprovalStatus.APPROVED, "nobody")
    with pytest.raises(BackendError, match=r"model package group 'no-group-\w+' does not exist"):
        backend.register_package(unique("no-group"), model_spec("v1"))


def test_registry_refuses_a_group_name_aws_would_refuse(backend: Backend) -> None:
    # Caught by both backends before anything is created, so a local run cannot name a group that the
    # SageMaker target would then refuse.
    with pytest.raises(BackendError, match=r"^invalid model package group name 'bad_name': letters"):
        backend.ensure_package_group("bad_name")


# -- endpoints ---------------------------------------------------------------------------------------------


def test_deploy_describe_and_list(backend: Backend) -> None:
    name = unique("support")
    package_arn = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/support-model/1"

    state = backend.deploy_endpoint(name, two_variants(package_arn))

    assert state.status == "InService"
    assert [v.name for v in state.variants] == ["champion", "challenger"]
    assert state.traffic_shares() == {"champion": 1.0, "challenger": 0.0}
    assert state.variant("champion").package_arn == package_arn
    assert state.variant("challenger").model == model_spec("v2")
    described = backend.describe_endpoint(name)
    assert described is not None
    assert described.variants == state.variants
    assert name in [e.name for e in backend.list_endpoints()]
    assert backend.describe_endpoint(unique("absent")) is None


def test_redeploying_the_same_variants_is_idempotent(backend: Backend) -> None:
    name = unique("idem")
    first = backend.deploy_endpoint(name, two_variants())
    again = backend.deploy_endpoint(name, two_variants())
    assert again.variants == first.variants
    assert again.status == "InService"


def test_deploy_rejects_invalid_requests(backend: Backend) -> None:
    with pytest.raises(BackendError, match="invalid endpoint name 'not a valid name!'"):
        backend.deploy_endpoint("not a valid name!", two_variants())
    quoted = [two_variants()[0], two_variants()[1].model_copy(update={"name": "chall'enger"})]
    with pytest.raises(BackendError, match='invalid variant name "chall\'enger"'):
        backend.deploy_endpoint(unique("quote"), quoted)
    with pytest.raises(BackendError, match="has duplicate variant names: champion"):
        backend.deploy_endpoint(unique("dup"), [two_variants()[0], two_variants()[0]])
    zero = [v.model_copy(update={"initial_weight": 0.0}) for v in two_variants()]
    with pytest.raises(BackendError, match="needs at least one production variant with weight > 0"):
        backend.deploy_endpoint(unique("zero"), zero)


def test_update_weights_moves_traffic_and_keeps_unnamed_variants(backend: Backend) -> None:
    name = unique("shift")
    backend.deploy_endpoint(name, two_variants())

    state = backend.update_weights(name, {"champion": 0.9, "challenger": 0.1})
    assert state.traffic_shares() == pytest.approx({"champion": 0.9, "challenger": 0.1})
    assert state.variant("challenger").current_weight == pytest.approx(0.1)

    state = backend.update_weights(name, {"challenger": 0.9})
    assert state.variant("champion").current_weight == pytest.approx(0.9)
    assert state.traffic_shares() == pytest.approx({"champion": 0.5, "challenger": 0.5})


@pytest.mark.parametrize(
    ("weights", "why"),
    [
        ({"canary": 1.0}, r"has no variant canary \(variants: champion, challenger\)"),
        ({"champion": -0.5}, r"weight of variant 'champion' must be a finite number >= 0, got -0\.5"),
        ({"champion": 0.0, "challenger": 0.0}, "needs at least one production variant with weight > 0"),
        ({"champion": float("nan")}, r"weight of variant 'champion' must be a finite number >= 0, got nan"),
    ],
    ids=["unknown-variant", "negative", "all-zero", "nan"],
)
def test_update_weights_rejects_invalid_weights_and_changes_nothing(
    backend: Backend, weights: dict[str, float], why: str
) -> None:
    name = unique("guarded")
    before = backend.deploy_endpoint(name, two_variants())
    # Refused by the backend's own check, with its reason: any BackendError (SageMaker's refusal of the call,
    # relayed as "updating weights of ...") would pass for a backend that sent the invalid weights.
    with pytest.raises(BackendError, match=why):
        backend.update_weights(name, weights)
    after = backend.describe_endpoint(name)
    assert after is not None
    assert after.traffic_shares() == before.traffic_shares()


def test_update_weights_of_unknown_endpoint_fails(backend: Backend) -> None:
    with pytest.raises(BackendError, match=r"no endpoint 'absent-\w+'"):
        backend.update_weights(unique("absent"), {"champion": 1.0})


def test_delete_endpoint(backend: Backend) -> None:
    name = unique("gone")
    backend.deploy_endpoint(name, two_variants())
    backend.delete_endpoint(name)
    assert backend.describe_endpoint(name) is None
    assert name not in [e.name for e in backend.list_endpoints()]
    backend.delete_endpoint(name)  # absent: no error


def test_metrics_of_an_idle_endpoint_list_every_variant_with_zero_calls(backend: Backend) -> None:
    import time

    name = unique("idle")
    backend.deploy_endpoint(name, two_variants())
    metrics = backend.variant_metrics(name, since=time.time() - 300)
    assert set(metrics) == {"champion", "challenger"}
    assert all(m.invocations == 0 and m.errors_5xx == 0 for m in metrics.values())


# -- audit ledger and locks --------------------------------------------------------------------------------


def test_audit_ledger_is_hash_chained_and_verifies(backend: Backend) -> None:
    first = backend.append_audit(
        "pipeline", "deploy", "support", "deployed challenger", {"weights": [1, 0]}, execution_id="exec-1"
    )
    second = backend.append_audit("alice", "promote", "support", "gate passed", {"decision": "promote"})
    third = backend.append_audit("pipeline", "rollback", "support", "guard tripped")

    assert [e.seq for e in (first, second, third)] == [1, 2, 3]
    assert second.prev_hash == first.hash and third.prev_hash == second.hash
    assert len({first.hash, second.hash, third.hash}) == 3
    listed = backend.list_audit()
    assert listed == [first, second, third]
    assert dict(listed[0].evidence) == {"weights": [1, 0]}
    assert listed[0].execution_id == "exec-1"
    verify = getattr(backend, "verify_audit")  # noqa: B009 - not (yet) part of the Backend protocol
    assert verify() == []


def test_lock_is_exclusive_and_released(backend: Backend) -> None:
    with backend.lock("release-support", "alice"):
        with pytest.raises(LockBusyError, match="alice"), backend.lock("release-support", "bob"):
            pytest.fail("two holders at once")
        with backend.lock("another-lock", "bob"):
            pass  # other names are independent
    with backend.lock("release-support", "bob"):
        pass  # released on exit


def test_lock_is_released_when_the_body_raises(backend: Backend) -> None:
    # The body's own error: a BackendError (a RuntimeError too) from taking the lock would not match.
    with pytest.raises(RuntimeError, match=r"^step failed$"), backend.lock("crashy", "alice"):
        raise RuntimeError("step failed")
    with backend.lock("crashy", "bob"):
        pass
