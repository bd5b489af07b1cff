"""The code a SageMaker @step runs, in-process: parameters, upstream reports, shards, project files."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from agent_release.steps.evaluation_records import CaseResult, EvaluationReport, VariantEvaluation

ROOT = Path(__file__).resolve().parents[2]


def _evaluation(
    n_cases: int = 200, seed: int = 3, champion_p: float = 0.6, challenger_p: float = 0.9
) -> EvaluationReport:
    rng = random.Random(seed)
    rows: list[CaseResult] = []
    for i in range(n_cases):
        for variant, role, p in (
            ("champion", "champion", champion_p),
            ("challenger", "challenger", challenger_p),
        ):
            success = 1.0 if rng.random() < p else 0.0
            latency = 0.5 + rng.random()
            rows.append(
                CaseResult(
                    case_id=f"case-{i}",
                    cluster=f"template-{i % 40}",
                    variant=variant,
                    role=role,  # type: ignore[arg-type]
                    scores={"task_success": success, "latency_s": latency, "cost": 0.001, "error": 0.0},
                    latency_s=latency,
                    cost=0.001,
                )
            )
    return EvaluationReport(
        dataset_name="golden",
        dataset_hash="0" * 64,
        repeats=1,
        scorer_specs=({"name": "task_success"},),
        variants=tuple(
            VariantEvaluation(
                variant=v,
                role=v,
                cases_expected=n_cases,
                cases_completed=n_cases,  # type: ignore[arg-type]
                cases_errored=0,
                retries=0,
            )
            for v in ("champion", "challenger")
        ),
        rows=tuple(rows),
    )


@pytest.fixture
def local_backend(tmp_path: Path) -> Any:
    from agent_release.pipelines.local_backend import LocalBackend

    backend = LocalBackend(tmp_path / "state")
    yield lambda _loaded: backend
    backend.close()


def test_decide_step_runs_the_dag_adapter_with_the_execution_parameters(local_backend: Any) -> None:
    from agent_release.pipelines.config import load_config
    from agent_release.pipelines.remote_step import run_remote_step
    from agent_release.steps.decide_promotion import decide_promotion

    text = (ROOT / "pipeline.yaml").read_text()
    evaluation = _evaluation()
    upstream = {"evaluate_variants": evaluation.model_dump(mode="json")}

    result = run_remote_step("decide_promotion", text, upstream, backend_factory=local_backend)
    direct = decide_promotion(load_config(ROOT / "pipeline.yaml").config.decide, evaluation)
    assert result == direct.model_dump(mode="json")
    assert result["decision"] == "promote"

    strict = run_remote_step(
        "decide_promotion", text, upstream, overrides={"MinImprovement": 0.6}, backend_factory=local_backend
    )
    assert strict["decision"] != "promote"
    assert strict["min_improvement"] == 0.6


def test_steps_that_change_the_endpoint_hold_its_lock(local_backend: Any) -> None:
    from agent_release.pipelines.config import load_config
    from agent_release.pipelines.dag import pipeline_steps
    from agent_release.pipelines.remote_step import ENDPOINT_CHANGING_STEPS, run_remote_step
    from agent_release.steps.backend import BackendError, LockBusyError

    assert {s.name for s in pipeline_steps()} >= ENDPOINT_CHANGING_STEPS
    text = (ROOT / "pipeline.yaml").read_text()
    endpoint = load_config(ROOT / "pipeline.yaml").config.deploy.endpoint_name
    backend = local_backend(None)
    holder = "sagemaker execution other-exec, step deploy_variants"
    with backend.lock(f"endpoint:{endpoint}", holder):
        for step in sorted(ENDPOINT_CHANGING_STEPS):
            with pytest.raises(LockBusyError, match="other-exec"):
                run_remote_step(step, text, {}, execution_id="this-exec", backend_factory=local_backend)
        # A step that leaves the endpoint alone runs meanwhile.
        upstream = {"evaluate_variants": _evaluation().model_dump(mode="json")}
        assert run_remote_step("decide_promotion", text, upstream, backend_factory=local_backend)["decision"]
    # Free again: the step takes the lock under its own name, and gives it back even when it fails (no package).
    taken: list[str] = []
    original = backend.lock

    def spy(name: str, owner: str) -> Any:
        taken.append(f"{name} by {owner}")
        return original(name, owner)

    backend.lock = spy
    with pytest.raises(BackendError, match="has no packages to deploy"):
        run_remote_step("deploy_variants", text, {}, execution_id="this-exec", backend_factory=local_backend)
    assert taken == [f"endpoint:{endpoint} by sagemaker execution this-exec, step deploy_variants"]
    with original(f"endpoint:{endpoint}", "next holder"):
        pass


def test_run_pipeline_step_routes_named_inputs(local_backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_release.pipelines import remote_step

    seen: dict[str, Any] = {}

    def fake(step_name: str, config_text: str, upstream: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        seen.update(step=step_name, upstream=upstream, **kwargs)
        return {"ok": True}

    monkeypatch.setattr(remote_step, "run_remote_step", fake)
    out = remote_step.run_pipeline_step(
        "evaluate_variants",
        "name: x",
        ["files", "execution", "param:Alpha", "upstream:register_agents", "shard_index", "shard_count"],
        "s3://b/bundle.tar.gz",
        "exec-9",
        0.01,
        {"agents": []},
        2,
        4,
    )
    assert out == {"ok": True}
    assert seen["upstream"] == {"register_agents": {"agents": []}}
    assert seen["overrides"] == {"Alpha": 0.01}
    assert (seen["files_uri"], seen["execution_id"], seen["shard"]) == (
        "s3://b/bundle.tar.gz",
        "exec-9",
        (2, 4),
    )
    with pytest.raises(remote_step.RemoteStepError):
        remote_step.run_pipeline_step("decide_promotion", "", ["bogus:x"], 1)


def test_shards_partition_the_cases() -> None:
    from agent_release.pipelines.eval_shards import ShardError, shard_cases

    cases = list(range(23))
    shards = [shard_cases(cases, i, 4) for i in range(4)]
    assert sorted(c for s in shards for c in s) == cases
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1
    with pytest.raises(ShardError):
        shard_cases(cases, 4, 4)


def test_merged_shards_equal_one_unsharded_evaluation(local_backend: Any, tmp_path: Path) -> None:
    from agent_release.pipelines.dag import dataset_hash
    from agent_release.pipelines.eval_shards import shard_cases
    from agent_release.pipelines.remote_step import run_remote_step
    from agent_release.steps.evaluate_variants import aggregate_rows

    whole = _evaluation(n_cases=30)
    # A scorer that raised on some challenger rows: each shard counts its own, the merge counts them all.
    failing = {"case-3", "case-4", "case-17"}
    whole = whole.model_copy(
        update={
            "rows": tuple(
                r.model_copy(update={"scorer_errors": {"picky": "LookupError: x"}})
                if r.case_id in failing and r.variant == "challenger"
                else r
                for r in whole.rows
            )
        }
    )
    case_ids = sorted({r.case_id for r in whole.rows})
    parts = []
    for i in range(3):
        mine = set(shard_cases(case_ids, i, 3))
        rows = tuple(r for r in whole.rows if r.case_id in mine)
        parts.append(
            whole.model_copy(
                update={
                    "rows": rows,
                    "variants": tuple(
                        v.model_copy(update={"cases_expected": len(mine), "cases_completed": len(mine)})
                        for v in whole.variants
                    ),
                }
            ).model_dump(mode="json")
        )
    dataset = tmp_path / "golden.jsonl"
    dataset.write_text('{"id": "case-0", "input": "hi"}\n')

    merged = EvaluationReport.model_validate(
        run_remote_step(
            "evaluate_variants",
            (ROOT / "pipeline.yaml").read_text(),
            {},
            overrides={"DatasetUri": str(dataset)},
            shard_outputs=parts,
            backend_factory=local_backend,
        )
    )
    assert sorted((r.case_id, r.variant) for r in merged.rows) == sorted(
        (r.case_id, r.variant) for r in whole.rows
    )
    assert merged.dataset_hash == dataset_hash(dataset)
    challenger = next(v for v in merged.variants if v.variant == "challenger")
    assert challenger.cases_expected == 30
    assert challenger.scorer_errors == {"picky": 3}
    assert next(v for v in merged.variants if v.variant != "challenger").scorer_errors == {}
    expected = aggregate_rows([r for r in whole.rows if r.variant == "challenger"])
    assert challenger.aggregates["task_success"]["mean"] == pytest.approx(expected["task_success"]["mean"])
    assert challenger.aggregates["task_success"]["se"] == pytest.approx(expected["task_success"]["se"])


def test_merged_shards_cut_each_interval_to_its_scores_range() -> None:
    from agent_release.pipelines.eval_shards import merge_evaluations
    from agent_release.steps.evaluate_variants import aggregate_rows

    whole = _evaluation(n_cases=30, challenger_p=0.97)
    shards = [
        whole.model_copy(update={"rows": tuple(r for r in whole.rows if int(r.case_id[5:]) % 2 == k)})
        for k in (0, 1)
    ]
    merged = merge_evaluations(shards, "1" * 64)
    challenger = next(v for v in merged.variants if v.variant == "challenger")
    loose = aggregate_rows([r for r in whole.rows if r.variant == "challenger"])["task_success"]
    assert loose["ci_high"] > 1.0  # the t interval passes the largest success rate there is ...
    assert challenger.aggregates["task_success"]["ci_high"] == 1.0  # ... the merged one stops at it
    assert challenger.aggregates["task_success"]["ci_low"] == pytest.approx(loose["ci_low"])


def test_project_bundle_is_reproducible_and_restores_the_referenced_files(tmp_path: Path) -> None:
    from agent_release.pipelines.config import load_config
    from agent_release.pipelines.project_bundle import build_bundle, extract_bundle

    loaded = load_config(ROOT / "pipeline.yaml")
    first, second = build_bundle(loaded), build_bundle(loaded)
    assert first == second
    names = extract_bundle(first, tmp_path)
    assert "datasets/support/golden.jsonl" in names
    assert (tmp_path / "datasets/support/golden.jsonl").read_bytes() == (
        ROOT / "datasets/support/golden.jsonl"
    ).read_bytes()


def test_parameter_overrides_are_typed_and_land_on_their_keys() -> None:
    import yaml

    from agent_release.pipelines.sagemaker_parameters import (
        ParameterOverrideError,
        apply_overrides,
        coerce_overrides,
    )

    values = coerce_overrides(
        {
            "MinCompletedCases": "50",
            "TrafficSchedule": "5, 25,100",
            "EndpointName": "canary",
            "MaxErrorRate": "0.2",
        }
    )
    assert values == {
        "MinCompletedCases": 50,
        "TrafficSchedule": "5, 25,100",
        "EndpointName": "canary",
        "MaxErrorRate": 0.2,
    }
    data = apply_overrides(yaml.safe_load((ROOT / "pipeline.yaml").read_text()), values)
    assert data["decide"]["min_completed_cases"] == 50
    assert data["promote"]["schedule"] == [5.0, 25.0, 100.0]
    assert data["deploy"]["endpoint_name"] == "canary"
    # The one key three levels deep: every level but the last is walked, not only the first.
    assert data["promote"]["guards"]["max_error_rate"] == 0.2
    assert "max_error_rate" not in data["promote"]
    with pytest.raises(ParameterOverrideError):
        coerce_overrides({"MinCompletedCases": "many"})


def shard_upstream(dataset: Path, *, n_rows: int, n_clusters: int) -> dict[str, Any]:
    """The upstream reports an evaluation shard step gets: ``dataset`` pinned by validation, no agents."""
    from agent_release.pipelines.dag import dataset_hash
    from agent_release.steps.registration_records import RegistrationReport
    from agent_release.steps.validate_datasets import DatasetResult, DatasetValidationReport

    result = DatasetResult(
        name="golden",
        path=str(dataset),
        sha256=dataset_hash(dataset),
        n_rows=n_rows,
        n_clusters=n_clusters,
        success=True,
    )
    return {
        "validate_datasets": DatasetValidationReport(success=True, datasets=(result,)).model_dump(
            mode="json"
        ),
        "register_agents": RegistrationReport(
            tracking_uri="sqlite:///unused.db", experiment_id="0", agents=(), changed=False
        ).model_dump(mode="json"),
    }


def test_a_shard_step_checks_the_whole_pinned_dataset(
    local_backend: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent_release.pipelines.dag import read_jsonl
    from agent_release.pipelines.executor import StepFailed
    from agent_release.pipelines.remote_step import run_remote_step
    from agent_release.steps import evaluate_variants as evaluate_module

    dataset = tmp_path / "golden.jsonl"
    dataset.write_text("".join(f'{{"id": "case-{i}", "input": "hi {i}"}}\n' for i in range(6)))
    upstream = shard_upstream(dataset, n_rows=6, n_clusters=6)
    evaluated: list[list[str]] = []

    def fake_evaluate(config: Any, registration: Any, cases: Any, **kwargs: Any) -> Any:
        evaluated.append([c["id"] for c in cases])  # what the step would evaluate: the shard's cases
        return _evaluation(n_cases=3)

    fake_evaluate.__name__ = "evaluate_variants"  # the DAG names its steps after the step functions
    monkeypatch.setattr(evaluate_module, "evaluate_variants", fake_evaluate)
    # The step configures MLflow tracking, and mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI: keep
    # that from leaking into later tests' CLI subprocesses (monkeypatch restores the variable).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'leak-guard.db'}")

    def shard_step() -> Any:
        return run_remote_step(
            "evaluate_variants",
            (ROOT / "pipeline.yaml").read_text(),
            upstream,
            overrides={"DatasetUri": str(dataset)},
            shard=(0, 2),
            backend_factory=local_backend,
        )

    shard_step()  # the shard file differs from the pinned file, the whole dataset does not
    assert len(evaluated) == 1 and 0 < len(evaluated[0]) < 6
    assert set(evaluated[0]) <= {r["id"] for r in read_jsonl(dataset)}
    dataset.write_text('{"id": "case-0", "input": "edited"}\n')
    with pytest.raises(StepFailed, match="changed after validate_datasets pinned it"):
        shard_step()
    assert len(evaluated) == 1
    import mlflow

    mlflow.set_tracking_uri(None)
