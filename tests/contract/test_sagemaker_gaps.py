"""SageMaker-only behaviour: what moto implements is tested against moto; where it lacks an API
(UpdateEndpoint, CloudWatch percentiles, ListPipelineExecutionSteps, failed deployments) botocore's
Stubber answers with the documented response shapes instead. docs/aws.md lists the gaps.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

from agent_release.steps.backend import BackendError, LockBusyError, ModelSpec, VariantSpec

pytestmark = pytest.mark.contract

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/serving:1"
ARN = "arn:aws:sagemaker:us-east-1:123456789012:resource/stubbed"


def spec(version: str) -> ModelSpec:
    return ModelSpec(kind="container", artifact_uri=f"s3://m/{version}.tar.gz", options={"image_uri": IMAGE})


def variants(*names: str) -> list[VariantSpec]:
    return [
        VariantSpec(name=n, model=spec(n), initial_weight=1.0 if i == 0 else 0.0) for i, n in enumerate(names)
    ]


def _endpoint(name: str, config: str, status: str, weights: dict[str, float]) -> dict[str, Any]:
    now = datetime.now(tz=UTC)
    return {
        "EndpointName": name,
        "EndpointArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{name}",
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "CreationTime": now,
        "LastModifiedTime": now,
        "ProductionVariants": [
            {"VariantName": v, "CurrentWeight": w, "DesiredWeight": w} for v, w in weights.items()
        ],
    }


# -- UpdateEndpoint (moto: not implemented) ----------------------------------------------------------------


def test_redeploying_changed_variants_updates_the_endpoint_and_waits(sagemaker_backend: Any) -> None:
    backend = sagemaker_backend
    name = f"upd-{uuid.uuid4().hex[:6]}"
    first = backend.deploy_endpoint(name, variants("champion", "challenger"))
    assert first.status == "InService"
    old_config = backend.sagemaker.describe_endpoint(EndpointName=name)["EndpointConfigName"]

    wanted = variants("champion", "challenger-v3")
    with Stubber(backend.sagemaker) as stub:
        for _ in wanted:  # models are new: describe fails, create succeeds
            stub.add_client_error("describe_model", "ValidationException", "Could not find model")
            stub.add_response(
                "create_model",
                {"ModelArn": ARN},
                {"ModelName": ANY, "ExecutionRoleArn": ANY, "PrimaryContainer": ANY, "Tags": ANY},
            )
        stub.add_client_error(
            "describe_endpoint_config", "ValidationException", "Could not find endpoint config"
        )
        stub.add_response(
            "create_endpoint_config",
            {"EndpointConfigArn": ARN},
            {"EndpointConfigName": ANY, "ProductionVariants": ANY},
        )
        stub.add_response(
            "describe_endpoint",
            _endpoint(name, old_config, "InService", {"champion": 1.0}),
            {"EndpointName": name},
        )
        stub.add_response(
            "update_endpoint", {"EndpointArn": ARN}, {"EndpointName": name, "EndpointConfigName": ANY}
        )
        stub.add_response(
            "describe_endpoint", _endpoint(name, "new", "Updating", {"champion": 1.0}), {"EndpointName": name}
        )
        stub.add_response(
            "describe_endpoint",
            _endpoint(name, "new", "InService", {"champion": 1.0, "challenger-v3": 0.0}),
            {"EndpointName": name},
        )
        stub.add_response(
            "describe_endpoint",
            _endpoint(name, "new", "InService", {"champion": 1.0, "challenger-v3": 0.0}),
            {"EndpointName": name},
        )
        state = backend.deploy_endpoint(name, wanted)
        stub.assert_no_pending_responses()
    assert [v.name for v in state.variants] == ["champion", "challenger-v3"]
    assert state.variant("challenger-v3").model == spec("challenger-v3")  # from the S3 deployment record


def test_a_failed_deployment_raises_with_sagemakers_reason(sagemaker_backend: Any) -> None:
    backend = sagemaker_backend
    name = f"bad-{uuid.uuid4().hex[:6]}"
    with Stubber(backend.sagemaker) as stub:
        stub.add_client_error("describe_model", "ValidationException", "Could not find model")
        stub.add_response("create_model", {"ModelArn": ARN})
        stub.add_client_error(
            "describe_endpoint_config", "ValidationException", "Could not find endpoint config"
        )
        stub.add_response("create_endpoint_config", {"EndpointConfigArn": ARN})
        stub.add_client_error(
            "describe_endpoint", "ValidationException", f'Could not find endpoint "{name}".'
        )
        stub.add_response("create_endpoint", {"EndpointArn": ARN})
        failed = _endpoint(name, "c", "Failed", {"champion": 1.0})
        failed["FailureReason"] = "Image pull failed: repository does not exist"
        stub.add_response("describe_endpoint", failed)
        with pytest.raises(BackendError, match="Image pull failed"):
            backend.deploy_endpoint(name, variants("champion"))


# -- CloudWatch metrics ------------------------------------------------------------------------------------


def test_metric_sums_come_from_cloudwatch(sagemaker_backend: Any, boto_session: Any) -> None:
    backend = sagemaker_backend
    name = f"cw-{uuid.uuid4().hex[:6]}"
    backend.deploy_endpoint(name, variants("champion", "challenger"))
    since = time.time() - 60
    cloudwatch = boto_session.client("cloudwatch")
    for variant, calls, errors in (("champion", 40, 1), ("challenger", 10, 3)):
        dims = [{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": variant}]
        cloudwatch.put_metric_data(
            Namespace="AWS/SageMaker",
            MetricData=[
                {"MetricName": "Invocations", "Dimensions": dims, "Value": calls, "Unit": "None"},
                {"MetricName": "Invocation5XXErrors", "Dimensions": dims, "Value": errors, "Unit": "None"},
            ],
        )
    metrics = backend.variant_metrics(name, since)
    assert (metrics["champion"].invocations, metrics["champion"].errors_5xx) == (40, 1)
    assert (metrics["challenger"].invocations, metrics["challenger"].errors_5xx) == (10, 3)
    assert metrics["challenger"].errors_4xx == 0
    assert metrics["challenger"].latencies_ms == ()  # CloudWatch has aggregates only


def test_latency_percentiles_are_read_per_variant_in_milliseconds(sagemaker_backend: Any) -> None:
    """moto computes no percentile statistics: a stub answers GetMetricData as CloudWatch does."""
    backend = sagemaker_backend
    name = f"pct-{uuid.uuid4().hex[:6]}"
    backend.deploy_endpoint(name, variants("champion", "challenger"))
    seen: list[dict[str, Any]] = []

    def answer(queries: list[dict[str, Any]]) -> dict[str, Any]:
        results = []
        for q in queries:
            stat = q["MetricStat"]
            metric, variant = stat["Metric"]["MetricName"], stat["Metric"]["Dimensions"][1]["Value"]
            scale = 2.0 if variant == "challenger" else 1.0
            value = {
                "Invocations": 100.0,
                "Invocation4XXErrors": 2.0,
                "Invocation5XXErrors": 0.0,
                "OverheadLatency": 5000.0,
            }.get(metric, {"p50": 120000.0, "p95": 250000.0, "p99": 400000.0}.get(stat["Stat"], 0.0) * scale)
            results.append(
                {
                    "Id": q["Id"],
                    "Label": q["Id"],
                    "Timestamps": [datetime.now(tz=UTC)],
                    "Values": [value],
                    "StatusCode": "Complete",
                }
            )
        return {"MetricDataResults": results, "Messages": []}

    backend.cloudwatch.meta.events.register(
        "provide-client-params.cloudwatch.GetMetricData", lambda params, **_: seen.append(params)
    )
    with Stubber(backend.cloudwatch) as stub:
        stub.add_response("get_metric_data", answer(_expected_queries(name)))
        metrics = backend.variant_metrics(name, time.time() - 600)
    request = seen[0]
    dims = {
        tuple(sorted((d["Name"], d["Value"]) for d in q["MetricStat"]["Metric"]["Dimensions"]))
        for q in request["MetricDataQueries"]
    }
    assert dims == {(("EndpointName", name), ("VariantName", v)) for v in ("champion", "challenger")}
    assert {q["MetricStat"]["Period"] % 60 for q in request["MetricDataQueries"]} == {0}
    assert metrics["champion"].model_latency_ms_p95 == pytest.approx(250.0)
    assert metrics["challenger"].model_latency_ms_p99 == pytest.approx(800.0)
    assert metrics["champion"].overhead_latency_ms_p50 == pytest.approx(5.0)
    assert (metrics["champion"].invocations, metrics["champion"].errors_4xx) == (100, 2)


def _expected_queries(name: str) -> list[dict[str, Any]]:
    from agent_release.pipelines.sagemaker_backend import _METRIC_QUERIES

    queries = []
    for i, variant in enumerate(("champion", "challenger")):
        for j, (metric, stat, _field) in enumerate(_METRIC_QUERIES):
            queries.append(
                {
                    "Id": f"v{i}m{j}",
                    "MetricStat": {
                        "Metric": {
                            "MetricName": metric,
                            "Dimensions": [
                                {"Name": "EndpointName", "Value": name},
                                {"Name": "VariantName", "Value": variant},
                            ],
                        },
                        "Stat": stat,
                    },
                }
            )
    return queries


# -- ListPipelineExecutionSteps (moto: not implemented) ----------------------------------------------------


def test_execution_steps_are_listed_in_order(boto_session: Any) -> None:
    from agent_release.pipelines.sagemaker_target import describe_execution_steps

    client = boto_session.client("sagemaker")
    arn = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/p/execution/abc"
    with Stubber(client) as stub:
        stub.add_response(
            "list_pipeline_execution_steps",
            {
                "PipelineExecutionSteps": [
                    {
                        "StepName": "decide_promotion",
                        "StepStatus": "Succeeded",
                        "StartTime": datetime(2026, 1, 1, 3, 10, tzinfo=UTC),
                    },
                    {
                        "StepName": "promote_challenger_hold",
                        "StepStatus": "Failed",
                        "FailureReason": "lock held",
                        "StartTime": datetime(2026, 1, 1, 3, 12, tzinfo=UTC),
                    },
                ]
            },
            {"PipelineExecutionArn": arn, "SortOrder": "Ascending"},
        )
        lines = describe_execution_steps(client, arn)
    assert lines[0].startswith("decide_promotion  Succeeded")
    assert lines[1].startswith("promote_challenger_hold  Failed") and lines[1].endswith("lock held")


# -- S3 ledger and locks (moto implements conditional writes) ----------------------------------------------


def test_an_edited_or_truncated_ledger_fails_verification(sagemaker_backend: Any) -> None:
    backend = sagemaker_backend
    for i in range(3):
        backend.append_audit("pipeline", "weights", "support", f"step {i}")
    assert backend.verify_audit() == []

    key = backend._audit_entry_key(2)
    entry = backend.s3.get_object(Bucket=backend.bucket, Key=key)["Body"].read()
    backend.s3.put_object(Bucket=backend.bucket, Key=key, Body=entry.replace(b"step 1", b"step X"))
    assert any("entry 2 was edited" in p for p in backend.verify_audit())

    backend.s3.put_object(Bucket=backend.bucket, Key=key, Body=entry)
    backend.s3.delete_object(Bucket=backend.bucket, Key=backend._audit_entry_key(3))
    assert any("recorded head is entry 3" in p for p in backend.verify_audit())


def test_a_head_behind_the_ledger_verifies_and_one_ahead_of_it_does_not(
    sagemaker_backend: Any, monkeypatch: Any
) -> None:
    # verify listed the entries, then read the head: an append finishing in between (entry put, then head
    # moved) read as "ledger ends at entry N but its recorded head is entry N+1", which refuses rollback.
    backend = sagemaker_backend
    real_advance = backend._advance_audit_head
    # Killed between the entry's put and the head's move (the genesis head before the entry is written).
    monkeypatch.setattr(
        backend, "_advance_audit_head", lambda seq, digest: real_advance(seq, digest) if seq == 0 else None
    )
    backend.append_audit("pipeline", "weights", "support", "first, head never moved")
    head = json.loads(
        backend.s3.get_object(Bucket=backend.bucket, Key=backend._audit_head_key())["Body"].read()
    )
    assert head == {"seq": 0, "hash": "0" * 64}  # the genesis head, written before the first entry
    assert backend.verify_audit() == []
    monkeypatch.setattr(backend, "_advance_audit_head", real_advance)
    backend.append_audit("pipeline", "weights", "support", "second")
    assert backend.verify_audit() == []

    real_entries = backend._audit_entries
    appended: list[int] = []

    def entries_after_an_append() -> Any:
        if not appended:  # another writer's whole append lands between the head read and the listing
            appended.append(backend.append_audit("pipeline", "weights", "support", "concurrent").seq)
        return real_entries()

    monkeypatch.setattr(backend, "_audit_entries", entries_after_an_append)
    assert backend.verify_audit() == [] and appended == [3]
    monkeypatch.setattr(backend, "_audit_entries", real_entries)

    backend.s3.delete_object(Bucket=backend.bucket, Key=backend._audit_entry_key(3))
    assert backend.verify_audit() == ["ledger ends at entry 2 but its recorded head is entry 3"]
    backend.s3.put_object(
        Bucket=backend.bucket, Key=backend._audit_head_key(), Body=json.dumps({"seq": -1, "hash": "x"})
    )
    assert backend.verify_audit() == [
        "the ledger's recorded head names entry -1, which no ledger has (edited)"
    ]


def test_an_append_that_loses_the_race_takes_the_next_seq(sagemaker_backend: Any, monkeypatch: Any) -> None:
    backend = sagemaker_backend
    backend.append_audit("a", "x", "s", "first")
    real_keys = backend._audit_keys
    calls = {"n": 0}

    def stale_then_real() -> list[str]:
        calls["n"] += 1
        keys: list[str] = real_keys()
        if calls["n"] == 1:
            backend.append_audit("b", "x", "s", "the other writer")  # wins seq 2 meanwhile
            return keys  # our writer still believes the tail is entry 1
        return keys

    monkeypatch.setattr(backend, "_audit_keys", stale_then_real)
    entry = backend.append_audit("a", "x", "s", "second writer")
    monkeypatch.undo()
    assert entry.seq == 3
    assert [e.reason for e in backend.list_audit()] == ["first", "the other writer", "second writer"]
    assert backend.verify_audit() == []


def test_a_stale_lock_is_taken_over_and_the_old_holder_does_not_release_it(
    sagemaker_backend: Any, bucket: str, boto_session: Any
) -> None:
    from agent_release.pipelines.sagemaker_backend import SageMakerBackend

    impatient = SageMakerBackend(
        bucket=bucket, role_arn=sagemaker_backend.role_arn, session=boto_session, lock_ttl_s=0.0
    )
    old = sagemaker_backend.lock("release", "crashed-run")
    old.__enter__()
    with impatient.lock("release", "new-run"):
        old.__exit__(None, None, None)  # the old holder wakes up: must not delete the new holder's lock
        with pytest.raises(LockBusyError, match="new-run"), sagemaker_backend.lock("release", "third"):
            pass


# -- models ------------------------------------------------------------------------------------------------


def test_jumpstart_models_use_the_resolved_container(bucket: str, boto_session: Any) -> None:
    from agent_release.pipelines.sagemaker_backend import SageMakerBackend

    asked: list[tuple[str, str | None, str, str]] = []

    def resolver(model_id: str, version: str | None, instance: str, region: str) -> dict[str, Any]:
        asked.append((model_id, version, instance, region))
        return {
            "Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-lmi:1",
            "ModelDataUrl": f"s3://jumpstart-cache/{model_id}/model.tar.gz",
            "Environment": {"OPTION_X": "1"},
        }

    backend = SageMakerBackend(
        bucket=bucket,
        role_arn="arn:aws:iam::123456789012:role/r",
        session=boto_session,
        jumpstart_resolver=resolver,
        poll_interval_s=1,
    )
    model = ModelSpec(
        kind="container",
        options={"jumpstart_model_id": "huggingface-llm-qwen3-8b", "environment": {"MAX_TOKENS": "512"}},
    )
    name = f"js-{uuid.uuid4().hex[:6]}"
    backend.deploy_endpoint(name, [VariantSpec(name="champion", model=model, initial_weight=1.0)])
    config = backend.sagemaker.describe_endpoint_config(
        EndpointConfigName=backend.sagemaker.describe_endpoint(EndpointName=name)["EndpointConfigName"]
    )
    container = backend.sagemaker.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    assert asked == [("huggingface-llm-qwen3-8b", None, "ml.m5.large", "us-east-1")]
    assert container["PrimaryContainer"]["Image"].endswith("djl-lmi:1")
    assert container["PrimaryContainer"]["Environment"] == {"OPTION_X": "1", "MAX_TOKENS": "512"}


def test_non_container_models_need_a_serving_image(sagemaker_backend: Any) -> None:
    demo = ModelSpec(kind="demo", artifact_uri="s3://m/demo.joblib")
    # It said "set sagemaker.image_uri", the @step image, which does not fix it.
    with pytest.raises(
        BackendError, match=r"needs a serving image on SageMaker: set sagemaker\.serving_image_uri$"
    ):
        sagemaker_backend.deploy_endpoint(
            f"demo-{uuid.uuid4().hex[:6]}", [VariantSpec(name="champion", model=demo, initial_weight=1.0)]
        )


def test_local_artifacts_are_uploaded_when_registered(sagemaker_backend: Any, tmp_path: Path) -> None:
    artifact = tmp_path / "model.joblib"
    artifact.write_bytes(b"trained weights")
    group = f"g-{uuid.uuid4().hex[:6]}"
    sagemaker_backend.ensure_package_group(group)
    package = sagemaker_backend.register_package(
        group, ModelSpec(kind="demo", artifact_uri=str(artifact)), metadata={"notes": "x" * 600}
    )
    uri = package.model.artifact_uri
    assert uri is not None and uri.startswith(f"s3://{sagemaker_backend.bucket}/")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    assert sagemaker_backend.s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"trained weights"
    assert package.metadata["notes"] == "x" * 600  # longer than a metadata property: spilled to S3
