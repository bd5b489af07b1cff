"""The command-line contract: bad input is one line on stderr with exit 1, usage errors exit 2, fast --help."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _shared.cli import assert_one_line_error
from _shared.pipeline_yaml import edit, line_of

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "agent_release.pipelines.cli"]


def run_cli(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENT_RELEASE_HOME": str(home)}
    env.pop("AGENT_RELEASE_DEBUG", None)
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """A copy of the default pipeline.yaml beside a link to the shipped datasets."""
    (tmp_path / "datasets").symlink_to(ROOT / "datasets")
    shutil.copy(ROOT / "pipeline.yaml", tmp_path / "pipeline.yaml")
    return tmp_path


@pytest.mark.parametrize("command", ["validate", "run"])
def test_malformed_yaml(project: Path, tmp_path: Path, command: str) -> None:
    edit(project, "  experiment: support-agent", "  experiment: [unclosed")
    proc = run_cli([command], project, tmp_path / "home")
    assert_one_line_error(proc, "malformed YAML", "pipeline.yaml:")


def test_unknown_key_names_path_and_line(project: Path, tmp_path: Path) -> None:
    edit(project, "  concurrency: 8 ", "  concurency: 8 ")
    proc = run_cli(["validate"], project, tmp_path / "home")
    err = assert_one_line_error(proc, "evaluate.concurency", "unknown key")
    assert f"pipeline.yaml:{line_of(project, 'concurency')}:" in err


def test_wrong_type_names_path(project: Path, tmp_path: Path) -> None:
    edit(project, "  bake_s: 10 ", "  bake_s: soon ")
    proc = run_cli(["validate"], project, tmp_path / "home")
    err = assert_one_line_error(proc, "promote.bake_s")
    assert f"pipeline.yaml:{line_of(project, 'bake_s: soon')}:" in err


def test_missing_referenced_file(project: Path, tmp_path: Path) -> None:
    edit(project, "datasets/support/golden.jsonl", "datasets/support/nope.jsonl")
    proc = run_cli(["validate"], project, tmp_path / "home")
    assert_one_line_error(proc, "datasets.golden.path", "file not found")


def test_empty_and_absent_files(project: Path, tmp_path: Path) -> None:
    (project / "pipeline.yaml").write_text("")
    assert_one_line_error(run_cli(["validate"], project, tmp_path / "home"), "empty")
    assert_one_line_error(
        run_cli(["validate", "-c", "missing.yaml"], project, tmp_path / "home"), "no such file"
    )


def test_bad_config_run_writes_nothing(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    edit(project, "  concurrency: 8 ", "  concurrency: sixteen ")
    assert_one_line_error(run_cli(["run"], project, home), "evaluate.concurrency")
    # Nothing deployed, registered or recorded: not even the state directory was created.
    assert not home.exists(), sorted(p.name for p in home.iterdir())


def test_usage_errors_exit_2(project: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    unknown_command = run_cli(["deploy-everything"], project, home)
    assert unknown_command.returncode == 2
    assert "Usage:" in unknown_command.stderr
    unknown_flag = run_cli(["run", "--fast"], project, home)
    assert unknown_flag.returncode == 2
    assert "No such option" in unknown_flag.stderr


HEAVY = ["mlflow", "strands", "great_expectations", "sagemaker", "pandas", "sklearn", "boto3", "scipy"]


def _loaded_after(snippet: str, modules: list[str]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has imported after running ``snippet``."""
    code = f"import sys\n{snippet}\nprint(','.join(m for m in {modules!r} if m in sys.modules))\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return [m for m in proc.stdout.strip().split(",") if m]


def test_help_imports_no_heavy_libraries() -> None:
    """`agent-release --help` must start fast: the heavy libraries load only inside the commands."""
    snippet = (
        "from click.testing import CliRunner\n"
        "from agent_release.pipelines.cli import main\n"
        "r = CliRunner().invoke(main, ['--help'])\n"
        "assert r.exit_code == 0, r.output"
    )
    assert _loaded_after(snippet, HEAVY) == []


def test_building_the_step_list_imports_no_mlflow() -> None:
    """`compile` and `run` build the DAG before any step runs; MLflow (~4 s to import) loads only in a step."""
    snippet = "from agent_release.pipelines.dag import pipeline_steps\nassert len(pipeline_steps()) == 7"
    assert _loaded_after(snippet, ["mlflow"]) == []


def test_schema_is_json_schema_of_the_config(project: Path, tmp_path: Path) -> None:
    import json

    proc = run_cli(["schema"], project, tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    assert schema["title"] == "PipelineConfig"
    assert {"datasets", "deploy", "evaluate", "decide", "promote"} <= set(schema["properties"])
    assert schema.get("additionalProperties") is False


def test_plan_reports_the_mde_of_the_golden_set(project: Path, tmp_path: Path) -> None:
    proc = run_cli(["plan", "--sd", "0.5", "--icc", "0.1"], project, tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    cases = len(
        [ln for ln in (ROOT / "datasets/support/golden.jsonl").read_text().splitlines() if ln.strip()]
    )
    assert f"{cases} cases" in out
    mde = float(out.split("MDE")[1].split()[0])
    assert 0.0 < mde < 0.5
    # The default gate asks for +0.02, far below what 351 clustered cases can detect: plan must warn.
    assert "warning" in out and "below the MDE" in out


@pytest.mark.slow
def test_run_on_a_corrupted_golden_set_deploys_nothing(tmp_path: Path) -> None:
    """A failing data contract stops the run at its first step: no package, endpoint or MLflow record."""
    import json
    import sqlite3

    project = tmp_path / "project"
    shutil.copytree(ROOT / "datasets", project / "datasets")
    shutil.copy(ROOT / "pipeline.yaml", project / "pipeline.yaml")
    golden = project / "datasets/support/golden.jsonl"
    cases = [json.loads(line) for line in golden.read_text().splitlines() if line.strip()]
    cases[1]["id"] = cases[0]["id"]  # duplicate id
    cases[2]["tags"]["intent"] = "time_travel"  # unknown intent
    golden.write_text("".join(json.dumps(c) + "\n" for c in cases))

    home = tmp_path / "home"
    proc = run_cli(["run"], project, home)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "validate_datasets" in last and "data contract failed" in last
    assert "Traceback" not in proc.stderr
    conn = sqlite3.connect(home / "state.db")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    for table in ("endpoints", "packages"):
        if table in tables:
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0, table
    steps = dict(conn.execute("SELECT name, status FROM steps").fetchall())
    assert steps["validate_datasets"] == "failed"
    assert {steps[s] for s in steps if s != "validate_datasets"} == {"pending"}
    if (home / "mlflow.db").exists():  # the tracking store may be set up, but nothing is registered or run
        from mlflow import MlflowClient

        client = MlflowClient(
            tracking_uri=f"sqlite:///{home / 'mlflow.db'}", registry_uri=f"sqlite:///{home / 'mlflow.db'}"
        )
        assert client.search_registered_models() == []
        experiments = client.search_experiments()
        assert client.search_runs([e.experiment_id for e in experiments]) == []
