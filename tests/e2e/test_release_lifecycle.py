"""A year of releases of one endpoint, from the command line only, with a team's own (rule-based) models.

The models are a Python class of the test's, imported from ``PYTHONPATH``: keyword rules over the customer's
message (an order id, a refund reason, a knowledge-base query), in three levels of care, not keyed on any
golden case. One level also "leaks": it fails every call after its 78th, which the 30-case evaluation (75
calls) never reaches and the canary's live traffic does.

The sequence: a first champion approved at registration; a leaky challenger that wins the gate and is rolled
back by the canary's guards; a better one held by ``promote.mode: manual`` and promoted by the release
manager; the release manager promoting the old champion back; the next run. After each, what a release
manager reads: ``status --json``, ``package list --json``, the MLflow aliases and the ledger.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from _shared.cli import ROOT, models_project, run_in_project

MODELS_MODULE = """
import re
import threading

from agent_release.agents.demo_model.chat import SupportChatModel
from agent_release.agents.demo_model.model import PlanStep, Prediction

LOOKUP = PlanStep("lookup_order", ("order_id",))
ELIGIBILITY = PlanStep("check_refund_eligibility", ("order_id", "reason"))
KB = PlanStep("search_kb", ("query",))
REASONS = [("wrong_item", r"mixed up|wrong|incorrect"), ("late_delivery", r"late|longer than|promised|delay"),
           ("damaged", r"damag|broken|dent|crack"), ("changed_mind", r"mind|no longer|don.t want")]


class Rules:
    def __init__(self, level):
        self.level = level

    def reply_for(self, intent):
        return None

    def predict(self, text):
        low, args = text.lower(), {}
        found = re.search(r"(?:ORD-?|#)\\s*(\\d{4,6})", text, re.I)
        if found is None and self.level == "best":
            found = re.search(r"\\b(\\d{5})\\b", text)
        if found:
            args["order_id"] = "ORD-" + found.group(1)
        if found and re.search(r"refund|money back|return|send back", low):
            args["reason"] = next((r for r, p in REASONS if re.search(p, low)), "changed_mind")
            return Prediction("refund_request", 1.0, (LOOKUP,) if self.level == "basic" else (LOOKUP, ELIGIBILITY), args)
        if found or re.search(r"order|package|parcel", low):
            return Prediction("order_status", 1.0, (LOOKUP,), args)
        if re.search(r"human|person|lawyer", low):
            return Prediction("handoff", 1.0, (), args)
        query = re.sub(r"^(?:(?:hi|hello|hey|good morning|question)[\\s,.:!-]*)+", "", text, flags=re.I)
        args["query"] = query.strip(" ?.!") if self.level == "best" else text
        return Prediction("kb_question", 1.0, (KB,), args)


class RuleModel(SupportChatModel):
    def __init__(self, level="good", fail_after=None):
        super().__init__(Rules(level), name="rules-" + level)
        self.fail_after, self.calls, self.lock = fail_after, 0, threading.Lock()

    def complete(self, request):
        with self.lock:
            self.calls += 1
            calls = self.calls
        if self.fail_after is not None and calls > self.fail_after:
            raise RuntimeError("out of memory")
        return super().complete(request)
"""


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_in_project(project, *args)


def _ok(project: Path, *args: str) -> str:
    proc = _cli(project, *args)
    assert proc.returncode == 0, (args, proc.stderr[-2000:])
    return proc.stdout


def _register(project: Path, init: dict[str, Any], *extra: str) -> None:
    _ok(project, "package", "register", "--kind", "python", "-o", "class_path=lifecycle_models:RuleModel",
        "-o", f"init={json.dumps(init)}", *extra)  # fmt: skip


def _status(project: Path) -> dict[str, Any]:
    return dict(json.loads(_ok(project, "status", "--json")))


def _served(status: dict[str, Any]) -> dict[str, tuple[int, float]]:
    (endpoint,) = status["endpoints"]
    return {v["name"]: (v["package_version"], v["share"]) for v in endpoint["variants"]}


def _approvals(project: Path) -> dict[int, str]:
    return {
        row["version"]: row["approval_status"]
        for row in json.loads(_ok(project, "package", "list", "--json"))
    }


def _aliases(project: Path) -> dict[str, str]:
    from mlflow import MlflowClient

    uri = f"sqlite:///{project / '.agent-release' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return {
        alias: str(version)
        for alias, version in client.get_registered_model("lifecycle-agent").aliases.items()
    }


def _agent_version(project: Path, package_version: int) -> str:
    """The registered agent version whose recorded package is ``package_version`` (from the ledger)."""
    for line in reversed(_ok(project, "audit", "list", "--json").splitlines()):  # one entry a line
        entry = json.loads(line)
        for role in ("challenger", "champion"):
            agent = (entry.get("evidence") or {}).get(role)
            if isinstance(agent, dict) and agent.get("package_version") == package_version:
                return str(agent["registered_model_version"])
    raise AssertionError(f"no ledger entry records package v{package_version}")


@pytest.mark.e2e
@pytest.mark.slow
def test_a_year_of_releases_from_the_command_line(tmp_path: Path) -> None:
    project = models_project(tmp_path / "shop", "lifecycle_models", MODELS_MODULE)
    config = yaml.safe_load((ROOT / "tests" / "drills" / "pipeline.drill.yaml").read_text())
    del config["train"]
    config["agent"]["name"] = "lifecycle-agent"
    config["tracking"]["experiment"] = "lifecycle"
    (project / "pipeline.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    # v1, the champion in production today; v2 wins the gate but fails on live traffic.
    _register(project, {"level": "basic"}, "--approve", "in production today")
    _register(project, {"level": "best", "fail_after": 78})
    run = json.loads(_ok(project, "run", "--json", "-q"))
    assert (run["decision"], run["promotion"]["action"]) == ("promote", "rolled_back"), run
    assert _served(_status(project)) == {"champion": (1, 1.0), "challenger": (2, 0.0)}
    assert _approvals(project) == {1: "Approved", 2: "Rejected"}

    # v3, better than v1, held by manual mode, then promoted by the release manager.
    config["promote"]["mode"] = "manual"
    (project / "pipeline.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    _register(project, {"level": "best"})
    held = json.loads(_ok(project, "run", "--json", "-q"))
    assert (held["status"], held["promotion"]["action"]) == ("held", "held_for_approval"), held
    assert _approvals(project)[3] == "PendingManualApproval"
    _ok(project, "promote", "challenger", "-q")
    status = _status(project)
    assert _served(status) == {"champion": (1, 0.0), "challenger": (3, 1.0)}
    # Before: `status` (and the report) still said "held for approval: run `agent-release promote challenger`".
    last = status["last_execution"]
    assert (last["id"], last["status"]) == (held["id"], "succeeded")
    assert last["promotion"]["action"] == "promoted", last
    assert _approvals(project) == {1: "Approved", 2: "Rejected", 3: "Approved"}
    v1_agent, v3_agent = _agent_version(project, 1), _agent_version(project, 3)
    assert _aliases(project) == {"champion": v3_agent}

    # The release manager goes back to v1: traffic, and (before: not) the champion alias.
    _ok(project, "promote", "champion", "-q")
    assert _served(_status(project)) == {"champion": (1, 1.0), "challenger": (3, 0.0)}
    assert _aliases(project) == {"champion": v1_agent}

    # The next run keeps v1 as champion (before: it redeployed v3, the newest Approved, at full traffic).
    after = json.loads(_ok(project, "run", "--json", "-q"))
    assert after["status"] == "succeeded", after
    assert _served(_status(project))["champion"] == (1, 1.0)
    assert _aliases(project)["champion"] == v1_agent
    assert "intact" in _ok(project, "audit", "verify")
