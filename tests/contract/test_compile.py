"""``agent-release compile`` without AWS credentials: the definition's shape, parameters and stability."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.contract

ROOT = Path(__file__).resolve().parents[2]
# What the SDK stamps into every build: the build time (S3 paths, --func_step_s3_dir) and a fresh key pair.
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{3}")
_PUBLIC_KEY = re.compile(r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----\\n", re.S)


@pytest.fixture(scope="module")
def no_aws_credentials() -> Iterator[None]:
    """No credentials anywhere: environment cleared and a HOME without ~/.aws."""
    import os
    import tempfile

    saved = {k: v for k, v in os.environ.items() if k.startswith("AWS_") or k == "HOME"}
    for key in saved:
        os.environ.pop(key)
    with tempfile.TemporaryDirectory() as home:
        os.environ["HOME"] = home
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
        try:
            yield
        finally:
            for key in [k for k in os.environ if k.startswith("AWS_") or k == "HOME"]:
                os.environ.pop(key)
            os.environ.update(saved)


def _compile(config: Path, output: Path) -> dict[str, Any]:
    from click.testing import CliRunner

    from agent_release.pipelines.cli import main

    result = CliRunner().invoke(main, ["compile", "-c", str(config), "-o", str(output)])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(output.read_text())
    return data


@pytest.fixture(scope="module")
def compiled(no_aws_credentials: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("compile")
    first, second = out / "definition.json", out / "again.json"
    _compile(ROOT / "pipeline.yaml", first)
    _compile(ROOT / "pipeline.yaml", second)
    return first, second


def _steps(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}

    def walk(steps: list[dict[str, Any]]) -> None:
        for s in steps:
            found[s["Name"]] = s
            walk(s.get("Arguments", {}).get("IfSteps", []))
            walk(s.get("Arguments", {}).get("ElseSteps", []))

    walk(definition["Steps"])
    return found


def _depends(step: dict[str, Any]) -> set[str]:
    return set(step.get("DependsOn", []))


def test_steps_chain_deploy_register_evaluate_decide_condition(compiled: tuple[Path, Path]) -> None:
    from agent_release.pipelines.sagemaker_compiler import compiled_names

    definition = json.loads(compiled[0].read_text())
    steps = _steps(definition)
    names = compiled_names()

    assert "deploy_variants" in _depends(steps["register_agents"])
    assert "register_agents" in _depends(steps["evaluate_variants"])
    assert "evaluate_variants" in _depends(steps["decide_promotion"])
    condition = steps[names.condition]
    assert condition["Type"] == "Condition"
    assert _depends(condition) == {"decide_promotion"}
    (check,) = condition["Arguments"]["Conditions"]
    assert check["Type"] == "Equals" and check["RightValue"] == "promote"
    left = check["LeftValue"]["Std:JsonGet"]
    assert left["Path"] == "Result['decision']"
    assert "Steps.decide_promotion.OutputDataConfig.S3OutputPath" in json.dumps(left["S3Uri"])
    assert [s["Name"] for s in condition["Arguments"]["IfSteps"]] == ["promote_challenger"]
    assert [s["Name"] for s in condition["Arguments"]["ElseSteps"]] == [names.hold]
    # Every function step is a training job that runs our step entry point.
    for name in ("deploy_variants", "register_agents", "evaluate_variants", "decide_promotion"):
        assert steps[name]["Type"] == "Training"
        assert steps[name]["Arguments"]["RoleArn"].startswith("arn:aws:iam::")


def test_step_names_are_the_dag_step_function_names(compiled: tuple[Path, Path]) -> None:
    from agent_release.pipelines.dag import pipeline_steps
    from agent_release.pipelines.sagemaker_compiler import compiled_names

    definition = json.loads(compiled[0].read_text())
    dag_names = {s.name for s in pipeline_steps()}
    names = compiled_names()
    function_steps = {n for n, s in _steps(definition).items() if s["Type"] == "Training"}
    assert function_steps == dag_names | {names.hold}  # pipeline.yaml enables training: every DAG step runs


def test_every_override_is_a_declared_parameter(compiled: tuple[Path, Path]) -> None:
    from agent_release.pipelines.sagemaker_parameters import PARAMETERS

    definition = json.loads(compiled[0].read_text())
    declared = {p["Name"]: p for p in definition["Parameters"]}
    assert set(declared) == {p.name for p in PARAMETERS}
    referenced = set(re.findall(r'"Get": "Parameters\.([A-Za-z0-9]+)"', compiled[0].read_text()))
    assert referenced == set(declared), "every step receives every parameter, and only declared ones"
    assert declared["EndpointName"]["DefaultValue"] == "support-agent"
    assert declared["MinImprovement"] == {"Name": "MinImprovement", "Type": "Float", "DefaultValue": 0.02}
    assert declared["MinCompletedCases"]["Type"] == "Integer"
    assert declared["TrafficSchedule"]["DefaultValue"] == "10,50,100"
    assert declared["DatasetUri"]["DefaultValue"].startswith("s3://sagemaker-us-east-1-111122223333/")
    assert declared["DatasetUri"]["DefaultValue"].endswith("/golden.jsonl")


def test_guard_parameters_are_parameter_objects_and_plain_values_would_be_dropped(
    compiled: tuple[Path, Path],
) -> None:
    """The SDK serialises only Parameter objects; a plain value in parameters=[...] vanishes silently."""
    from sagemaker.core.workflow.parameters import Parameter
    from sagemaker.core.workflow.utilities import list_to_request

    from agent_release.pipelines.config import load_config
    from agent_release.pipelines.sagemaker_compiler import pipeline_parameters

    built = pipeline_parameters(load_config(ROOT / "pipeline.yaml"), "s3://bucket/golden.jsonl")
    assert built and all(isinstance(p, Parameter) for p in built)
    assert [p["Name"] for p in list_to_request(built)] == [p.name for p in built]
    # The hazard this guards against: the SDK's own serialiser drops a plain value without a word.
    assert list_to_request([*built, "plain-value"]) == list_to_request(built)


def test_definition_is_stable_apart_from_what_the_sdk_stamps(compiled: tuple[Path, Path]) -> None:
    first, second = (p.read_text() for p in compiled)
    assert _TIMESTAMP.search(first), "expected the SDK's build timestamp in the definition"

    def unstamped(text: str) -> str:
        return _PUBLIC_KEY.sub("<key>", _TIMESTAMP.sub("<built>", text))

    assert unstamped(first) == unstamped(second)
    assert first == json.dumps(json.loads(first), indent=2, sort_keys=True) + "\n"


def test_eval_shards_run_in_parallel_and_merge_before_the_decision(
    no_aws_credentials: None, tmp_path: Path
) -> None:
    from agent_release.pipelines.sagemaker_compiler import shard_step_name

    shutil.copytree(ROOT / "datasets", tmp_path / "datasets")
    data = yaml.safe_load((ROOT / "pipeline.yaml").read_text())
    data["sagemaker"]["eval_shards"] = 3  # beside the role the shipped file names
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    steps = _steps(_compile(tmp_path / "pipeline.yaml", tmp_path / "definition.json"))

    shards = [shard_step_name("evaluate_variants", i) for i in range(3)]
    for shard in shards:
        assert _depends(steps[shard]) >= {"register_agents"}
        assert not _depends(steps[shard]) & set(shards), "shards must not wait for each other"
        args = steps[shard]["Arguments"]["AlgorithmSpecification"]["ContainerArguments"]
        assert "--pipeline_step_name" in args
    assert _depends(steps["evaluate_variants"]) == set(shards)
    assert "evaluate_variants" in _depends(steps["decide_promotion"])


def _cli_environment(home: Path) -> dict[str, str]:
    """The user's environment without AWS credentials or configuration (as ``no_aws_credentials``)."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(home), AWS_EC2_METADATA_DISABLED="true")
    return env


def test_compile_prints_the_path_and_no_sdk_info_lines(tmp_path: Path) -> None:
    """The SDK logs "Uploading serialized function ..." at INFO for every step (to the throwaway stand-in S3).

    Run as a user runs it, in its own process: the SDK's ``sagemaker.remote_function`` logger writes through its
    own stderr handler, which an in-process runner does not capture.
    """
    import subprocess
    import sys

    output = tmp_path / "definition.json"
    command = ["compile", "-c", str(ROOT / "pipeline.yaml"), "-o", str(output)]
    proc = subprocess.run(
        [sys.executable, "-m", "agent_release.pipelines.cli", *command],
        capture_output=True,
        text=True,
        timeout=240,
        env=_cli_environment(tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(output)
    assert json.loads(output.read_text())["Steps"]
    info = [line for line in proc.stderr.splitlines() if re.search(r"\bINFO\b", line)]
    assert info == [], f"{len(info)} INFO lines on stderr, e.g. {info[:2]}"
    assert "Uploading" not in proc.stderr
    # The SDK's per-step notice that it leaves job names to each execution is by design, not a warning to act on.
    assert "Popping out 'TrainingJobName'" not in proc.stderr
    assert proc.stderr.strip() == "", proc.stderr[-2000:]


def test_compile_quiets_only_the_sdks_info_lines() -> None:
    """Warnings still show; with INFO enabled for our loggers (``-v``) the SDK's INFO lines show too."""
    import logging

    from agent_release.pipelines import sagemaker_target

    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    sdk = logging.getLogger("sagemaker.remote_function")
    target_logger = logging.getLogger(sagemaker_target.__name__)
    sdk_level, target_level = sdk.level, target_logger.level
    handler = Collect(level=logging.DEBUG)
    sdk.addHandler(handler)
    try:
        sdk.setLevel(logging.INFO)  # as the SDK sets it when it builds the logger
        target_logger.setLevel(logging.WARNING)  # what `agent-release` configures without -v
        with sagemaker_target._sdk_info_quieted():
            sdk.info("Uploading serialized function code to s3://bucket/key")
            sdk.warning("a warning the user must see")
            sdk.warning("Popping out 'TrainingJobName' from the pipeline definition by default since ...")
        assert [(r.levelno, r.getMessage()) for r in records] == [
            (logging.WARNING, "a warning the user must see")
        ]
        records.clear()
        # upsert builds under the same filter now (its 16 INFO upload lines used to stay, even before the one
        # error line of an upsert that failed): test_sagemaker_session9.py checks the command itself.
        sdk.info("after the build")
        assert records[-1].getMessage() == "after the build", "only quieted while the definition is built"

        records.clear()
        target_logger.setLevel(logging.DEBUG)  # what `agent-release -v` configures
        with sagemaker_target._sdk_info_quieted():
            sdk.info("Uploading serialized function code to s3://bucket/key")
        assert [r.levelno for r in records] == [logging.INFO]
    finally:
        sdk.removeHandler(handler)
        sdk.setLevel(sdk_level)
        target_logger.setLevel(target_level)
