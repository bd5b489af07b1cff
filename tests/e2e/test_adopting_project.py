"""docs/adopting.md, step 8, run as written on a project that is not the demo: an IT-helpdesk agent.

The project (``_shared/helpdesk_project.py``) has its own tools and scorer module beside pipeline.yaml
(``PYTHONPATH`` set to its directory, as the page says), its own prompt, golden set with its own tag and
contract, and training data without the demo's refund reasons. From the project directory, with no
``AGENT_RELEASE_HOME`` (the state goes to ``.agent-release/`` there): validate, plan, run, status, report,
audit verify, then the release manager's way back to the replaced model (rollback refused with the command
to use, then ``promote champion``).
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
from _shared.helpdesk_project import write_helpdesk_project

CLI = [sys.executable, "-m", "agent_release.pipelines.cli"]

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]


def cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    hidden = ("AGENT_RELEASE_HOME", "AGENT_RELEASE_DEBUG", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    env["PYTHONPATH"] = str(project)
    return subprocess.run([*CLI, *args], cwd=project, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    project = write_helpdesk_project(tmp_path_factory.mktemp("adopt") / "helpdesk")
    validate = cli(project, "validate")
    assert validate.returncode == 0, validate.stderr
    plan = cli(project, "plan")
    assert plan.returncode == 0, plan.stderr
    run = cli(project, "run", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    return {"project": project, "validate": validate, "plan": plan, "run": json.loads(run.stdout)}


def test_validate_and_plan_read_the_projects_own_set(released: dict[str, Any]) -> None:
    assert "golden: ok (48 rows, 16 clusters" in released["validate"].stdout
    assert "48 cases in 16 clusters" in released["plan"].stdout


def test_the_run_trains_evaluates_and_promotes_the_helpdesk_challenger(released: dict[str, Any]) -> None:
    result = released["run"]
    assert (result["status"], result["decision"]) == ("succeeded", "promote"), result
    assert result["promotion"]["action"] == "promoted", result
    assert "train_model" in result["ran"] and Path(result["report"]).is_file()


def test_state_is_in_the_project_directory_and_holds_the_projects_scores(released: dict[str, Any]) -> None:
    state = released["project"] / ".agent-release"
    with sqlite3.connect(state / "state.db") as db:
        rows = db.execute("SELECT variant, case_id, scores_json FROM evaluation_rows").fetchall()
        names = {
            r[0] for r in sqlite3.connect(state / "mlflow.db").execute("SELECT name FROM registered_models")
        }
    assert len(rows) == 2 * 48
    cited = [json.loads(scores).get("cites_runbook_article") for _, _, scores in rows]
    assert sum(score is not None for score in cited) == 2 * 12  # the runbook cases only: None elsewhere
    assert sum(score == 1.0 for score in cited) > 0
    assert "helpdesk-agent" in names and "support-agent" not in names


def test_status_report_audit_and_the_way_back(released: dict[str, Any]) -> None:
    project = released["project"]
    status = json.loads(cli(project, "status", "--json").stdout)
    shares = {v["name"]: v["share"] for v in status["endpoints"][0]["variants"]}
    assert status["endpoints"][0]["name"] == "helpdesk-agent" and shares == {
        "champion": 0.0,
        "challenger": 1.0,
    }
    report = cli(project, "report")
    assert report.returncode == 0 and Path(report.stdout.strip()).is_file()

    rollback = cli(project, "rollback", "--reason", "drill")
    assert rollback.returncode == 1
    assert "to serve champion again, `agent-release promote champion`" in rollback.stderr, rollback.stderr
    back = cli(project, "promote", "champion", "--schedule", "100", "-q")
    assert back.returncode == 0, back.stderr
    status = json.loads(cli(project, "status", "--json").stdout)
    assert {v["name"]: v["share"] for v in status["endpoints"][0]["variants"]} == {
        "champion": 1.0,
        "challenger": 0.0,
    }
    audit = json.loads(cli(project, "audit", "verify", "--json").stdout)
    assert audit["intact"] and not audit["problems"], audit
