"""The real pipeline.yaml, end to end, as `make demo` runs it — then once more, as next week's scheduled run.

One module-scoped run (a few minutes) backs several checks of the issues' "done when" lists: training, both
variants deployed and evaluated on the full golden set (one row per case per variant), a clear real difference,
a promote through the whole schedule recorded in the ledger, MLflow agent versions with aliases, the
`status --json` contract and the report.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "agent_release.pipelines.cli"]

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Only this project's state: an MLFLOW_TRACKING_URI left by another test would redirect the run.
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env["AGENT_RELEASE_HOME"] = str(home)
    return subprocess.run([*CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("demo-home")
    first = cli(home, "run", "--json")
    assert first.returncode == 0, first.stderr[-3000:]
    return {"home": home, "result": json.loads(first.stdout)}


def golden_ids() -> list[str]:
    lines = (ROOT / "datasets/support/golden.jsonl").read_text().splitlines()
    return [json.loads(line)["id"] for line in lines if line.strip()]


def test_run_succeeds_and_promotes(demo: dict[str, Any]) -> None:
    result = demo["result"]
    assert result["status"] == "succeeded"
    assert result["decision"] == "promote"
    assert result["ran"] == [
        "validate_datasets",
        "train_model",
        "deploy_variants",
        "register_agents",
        "evaluate_variants",
        "decide_promotion",
        "promote_challenger",
    ]
    assert Path(result["report"]).is_file()


def test_every_golden_case_is_a_row_for_both_variants(demo: dict[str, Any]) -> None:
    conn = sqlite3.connect(demo["home"] / "state.db")
    rows = conn.execute(
        "SELECT role, case_id, scores_json, error FROM evaluation_rows WHERE execution_id = ?",
        (demo["result"]["id"],),
    ).fetchall()
    ids = sorted(golden_ids())
    by_role: dict[str, list[str]] = {}
    success: dict[str, list[float]] = {}
    for role, case_id, scores, _error in rows:
        by_role.setdefault(role, []).append(case_id)
        success.setdefault(role, []).append(json.loads(scores).get("task_success") or 0.0)
    assert sorted(by_role["champion"]) == ids
    assert sorted(by_role["challenger"]) == ids
    champion = sum(success["champion"]) / len(success["champion"])
    challenger = sum(success["challenger"]) / len(success["challenger"])
    # A real difference that comes from training data: clear, but neither model is perfect.
    assert challenger - champion > 0.1, (champion, challenger)
    assert 0.5 < champion < challenger < 1.0


def test_ledger_records_the_whole_schedule_and_verifies(demo: dict[str, Any]) -> None:
    home = demo["home"]
    entries = [json.loads(line) for line in cli(home, "audit", "--json").stdout.splitlines()]
    mine = [e for e in entries if e["execution_id"] == demo["result"]["id"]]
    actions = [e["action"] for e in mine]
    assert actions[0] == "approve_bootstrap", "the fresh registry's first champion was approved by the run"
    assert actions.count("weights") == 3
    assert actions[-1] == "promote"
    verify = cli(home, "audit", "verify")
    assert verify.returncode == 0, verify.stderr
    assert "intact" in verify.stdout


def test_status_json_contract(demo: dict[str, Any]) -> None:
    proc = cli(demo["home"], "status", "--json")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["state_dir"] == str(demo["home"])
    assert status["tracking_uri"].startswith("sqlite:///")
    (endpoint,) = status["endpoints"]
    assert endpoint["name"] == "support-agent"
    weights = {v["name"]: v["weight"] for v in endpoint["variants"]}
    roles = {v["name"]: v["role"] for v in endpoint["variants"]}
    assert weights == {"champion": 0.0, "challenger": 1.0}
    assert roles["challenger"] == "champion"  # the promoted package now holds the champion role
    assert status["last_execution"]["decision"] == "promote"


def test_mlflow_lists_both_agent_versions_with_aliases(demo: dict[str, Any]) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = f"sqlite:///{demo['home'] / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions("name='support-agent'")
    assert len(versions) == 2
    # The demo promotes: the champion alias moved to the challenger's version, whose alias is gone.
    champion = client.get_model_version_by_alias("support-agent", "champion")
    assert champion.tags["agent_release.variant"] == "challenger"
    assert int(champion.version) == max(int(v.version) for v in versions)
    with pytest.raises(MlflowException, match="alias challenger not found"):
        client.get_model_version_by_alias("support-agent", "challenger")
    models = client.search_logged_models(
        experiment_ids=[client.get_experiment_by_name("support-agent").experiment_id]
    )
    params = [m.params for m in models]
    assert {p["variant"] for p in params} == {"champion", "challenger"}
    assert all(p["prompt_uri"].startswith("prompts:/") for p in params)


def test_next_scheduled_run_with_nothing_new_changes_nothing(demo: dict[str, Any]) -> None:
    home = demo["home"]
    before = cli(home, "audit", "--json").stdout.splitlines()
    second = cli(home, "run", "--json")
    assert second.returncode == 0, second.stderr[-3000:]
    result = json.loads(second.stdout)
    assert result["status"] == "succeeded"
    assert result["decision"] is None
    assert {"evaluate_variants", "decide_promotion", "promote_challenger"} <= set(result["skipped"])
    assert cli(home, "audit", "--json").stdout.splitlines() == before
