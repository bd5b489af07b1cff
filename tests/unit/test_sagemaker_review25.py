"""The SageMaker target review (session 25): what the compiled pipeline's steps, its parameters, its project
bundle and its IAM policy got wrong, each driven the way the target drives it (no AWS needed)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml
from _shared.cli import copy_project
from test_sagemaker_remote import shard_upstream

from agent_release.pipelines.config import PipelineConfig, load_config, parse_config
from agent_release.pipelines.local_backend import LocalBackend
from agent_release.pipelines.remote_step import EMPTY_SHARD, SKIPPED, run_remote_step
from agent_release.pipelines.sagemaker_parameters import apply_overrides, default_values
from agent_release.steps.deploy_variants import DeployedVariant, DeployReport

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "pipeline.yaml").read_text()


def test_the_merge_of_skipped_shards_is_skipped_too(tmp_path: Path) -> None:
    # No challenger deployed: every shard skipped itself and their merge failed validating the markers as
    # evaluation reports, so with eval_shards > 1 every run that found nothing new failed.
    backend = LocalBackend(tmp_path / "state")
    dataset = tmp_path / "golden.jsonl"
    dataset.write_text('{"id": "c0", "input": "hi"}\n')
    champion = DeployedVariant(name="champion", role="champion", package_arn="arn:x/1", version=1, weight=1.0)
    deployed = DeployReport(
        endpoint_name="support-agent",
        package_group="support-model",
        variants=(champion,),
        champion=champion,
        challenger=None,
        bootstrap=False,
        changed=False,
    ).model_dump(mode="json")
    overrides = {"DatasetUri": str(dataset)}
    shards = [
        run_remote_step(
            "evaluate_variants",
            TEXT,
            {"deploy_variants": deployed},
            overrides=overrides,
            shard=(i, 2),
            backend_factory=lambda _l: backend,
        )
        for i in range(2)
    ]
    assert shards == [SKIPPED, SKIPPED]
    merged = run_remote_step(
        "evaluate_variants",
        TEXT,
        {},
        overrides=overrides,
        shard_outputs=shards,
        backend_factory=lambda _l: backend,
    )
    assert merged == SKIPPED
    backend.close()


def test_a_shard_without_cases_is_left_out_not_a_failed_step(tmp_path: Path) -> None:
    # Three cases in four shards: the fourth evaluated none and failed the execution.
    backend = LocalBackend(tmp_path / "state")
    dataset = tmp_path / "golden.jsonl"
    dataset.write_text(
        "".join(f'{{"id": "c{i}", "input": "hi {i}", "cluster": "k{i % 2}"}}\n' for i in range(3))
    )
    upstream = shard_upstream(dataset, n_rows=3, n_clusters=2)
    empty = run_remote_step(
        "evaluate_variants",
        TEXT,
        upstream,
        overrides={"DatasetUri": str(dataset)},
        shard=(3, 4),
        backend_factory=lambda _l: backend,
    )
    assert empty == EMPTY_SHARD
    backend.close()


def test_the_traffic_schedule_parameter_keeps_every_digit() -> None:
    # `:g` kept six significant digits: 12.3456789 became 12.3457, and 99.9999999 became 100 (then refused).
    for schedule in ([12.3456789, 100.0], [99.9999999, 100.0], [10.0, 10.0000001, 100.0]):
        data = yaml.safe_load(TEXT)
        data["promote"]["schedule"] = schedule
        config = PipelineConfig.model_validate(data)
        encoded = default_values(config, "s3://bucket/golden.jsonl")["TrafficSchedule"]
        again = PipelineConfig.model_validate(apply_overrides(data, {"TrafficSchedule": encoded}))
        assert again.promote.schedule == schedule


def test_the_bundle_of_a_project_root_tool_data_dir_leaves_out_secrets_and_state(tmp_path: Path) -> None:
    # tool_data_dir: . shipped .env, .git/, .agent-release/state.db and mlflow.db to S3 (and made the
    # bundle's hash, so the definition, change on every run).
    from agent_release.pipelines.project_bundle import build_bundle

    project = copy_project(tmp_path / "project", copy_datasets=True)
    config = project / "pipeline.yaml"
    config.write_text(config.read_text().replace("tool_data_dir: datasets/support", "tool_data_dir: ."))
    (project / ".env").write_text("AWS_SECRET_ACCESS_KEY=...\n")
    (project / ".git").mkdir()
    (project / ".git" / "config").write_text("[core]\n")
    (project / ".agent-release").mkdir()
    (project / ".agent-release" / "state.db").write_bytes(b"state")
    (project / "mlflow.db").write_bytes(b"tracking")
    (project / "notes.md").write_text("tool data the step may read\n")
    bundle = build_bundle(load_config(config))
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
        names = tar.getnames()
    assert "notes.md" in names and "pipeline.yaml" in names
    assert [n for n in names if n.startswith(".") or "/." in n or n == "mlflow.db"] == []


def test_every_arn_of_the_policy_is_in_the_roles_partition() -> None:
    # Only the role itself was arn:aws-cn:...; every other ARN said arn:aws:, which grants nothing in China.
    from agent_release.pipelines.iam_policy import execution_role_policy

    text = TEXT.replace("arn:aws:iam::111122223333:role/", "arn:aws-cn:iam::111122223333:role/").replace(
        "region: us-east-1", "region: cn-north-1"
    )
    policy = execution_role_policy(parse_config(text, source="pipeline.yaml"))
    arns = [r for s in policy["Statement"] for r in s["Resource"] if r != "*"]
    assert arns and all(r.startswith("arn:aws-cn:") for r in arns), json.dumps(arns, indent=1)


def test_a_symlinked_project_file_ships_under_the_name_pipeline_yaml_uses(tmp_path: Path) -> None:
    # A dataset (or a tool-data file) that is a symlink inside the project was bundled under its target's
    # name, so the remote step, which reads pipeline.yaml's names, did not find it; compile accepted it.
    from agent_release.pipelines.config import check_referenced_files
    from agent_release.pipelines.project_bundle import build_bundle, extract_bundle

    project = copy_project(tmp_path / "project", copy_datasets=True)
    support = project / "datasets" / "support"
    (project / "versions").mkdir()
    golden = support / "golden.jsonl"
    golden.rename(project / "versions" / "golden-v3.jsonl")
    golden.symlink_to(Path("..", "..", "versions", "golden-v3.jsonl"))
    tool_file = next(p for p in sorted(support.iterdir()) if p.is_file() and not p.is_symlink())
    kept = tool_file.read_bytes()
    tool_file.rename(project / "versions" / tool_file.name)
    tool_file.symlink_to(project / "versions" / tool_file.name)

    extracted = tmp_path / "step"
    names = extract_bundle(build_bundle(load_config(project / "pipeline.yaml")), extracted)
    assert "datasets/support/golden.jsonl" in names and f"datasets/support/{tool_file.name}" in names
    shutil.copy(project / "pipeline.yaml", extracted / "pipeline.yaml")
    check_referenced_files(load_config(extracted / "pipeline.yaml"))  # every file where the step looks
    assert (extracted / "datasets" / "support" / tool_file.name).read_bytes() == kept


def test_a_project_file_linking_outside_the_project_is_refused_in_one_line(tmp_path: Path) -> None:
    # A symlink inside the tool-data directory that points outside the project ended compile with a
    # ValueError traceback; it must be refused like a `../` path (the bundle would carry a file from
    # elsewhere on the machine to S3).
    from agent_release.pipelines.config import ConfigError
    from agent_release.pipelines.project_bundle import build_bundle

    project = copy_project(tmp_path / "project", copy_datasets=True)
    outside = tmp_path / "credentials"
    outside.write_text("secret\n")
    (project / "datasets" / "support" / "notes.txt").symlink_to(outside)
    with pytest.raises(ConfigError, match=r"agent\.tool_data_dir: .*notes\.txt links outside the project"):
        build_bundle(load_config(project / "pipeline.yaml"))
