"""A team's own models, registered with `agent-release package register`, evaluated by `agent-release run`.

The champion is a Python class of the team's (imported from ``PYTHONPATH``, approved at registration); the
challenger is an OpenAI-compatible server (a fake one here, speaking server-sent events as llama.cpp and vLLM
do). Nothing but the command line touches the registry: the run deploys both packages as the endpoint's
variants, evaluates every smoke case on each through the real runtime and Strands, and the upstream server
is what answered the challenger's cases.
"""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from _shared.cli import ROOT, models_project, run_in_project
from _shared.loopback import serve

from agent_release.pipelines.evaluation_store import load_evaluation_rows

SMOKE_CASES = 30
MODELS_MODULE = '''
class HelpdeskModel:
    """Answers every request with one assistant message (the team's own model, as far as this test goes)."""

    def __init__(self, answer="Let me check that for you."):
        self.answer = answer

    def complete(self, request):
        return {
            "id": "helpdesk",
            "object": "chat.completion",
            "model": "helpdesk",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": self.answer}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26},
        }
'''


class _Upstream(BaseHTTPRequestHandler):
    """An OpenAI-compatible server: streams one short answer as server-sent events, counts the requests."""

    requests: ClassVar[list[dict[str, Any]]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            self.requests.append({"path": self.path, "body": body})
        chunks = [
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Your ticket is "}}]},
            {"choices": [{"index": 0, "delta": {"content": "being looked at."}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}},
        ]
        payload = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


def _pipeline(project: Path) -> Path:
    """The drill pipeline without training or live traffic: the packages come from `package register`."""
    config = yaml.safe_load((ROOT / "tests" / "drills" / "pipeline.drill.yaml").read_text())
    config["name"] = "helpdesk-release"
    del config["train"]
    config["promote"]["live_traffic"] = {"enabled": False}
    path = project / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_in_project(project, *args)


@pytest.mark.e2e
@pytest.mark.slow
def test_packages_registered_from_the_cli_are_deployed_and_evaluated(tmp_path: Path) -> None:
    project = models_project(tmp_path / "helpdesk", "helpdesk_models", MODELS_MODULE)
    _pipeline(project)
    _Upstream.requests = []

    with serve(_Upstream) as upstream_url:
        champion = _cli(
            project,
            "package", "register", "--kind", "python",
            "-o", "class_path=helpdesk_models:HelpdeskModel",
            "--approve", "the helpdesk model in production today",
        )  # fmt: skip
        assert champion.returncode == 0, champion.stderr
        challenger = _cli(
            project,
            "package", "register", "--kind", "openai_compatible",
            "-o", f"base_url={upstream_url}/v1", "-o", "model=helpdesk-llm-8b",
            "--description", "candidate LLM",
        )  # fmt: skip
        assert challenger.returncode == 0, challenger.stderr
        run = _cli(project, "run", "--json", "-q")

    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["status"] == "succeeded", result
    assert "train_model" not in result["ran"]

    rows = load_evaluation_rows(project / ".agent-release", result["id"])
    by_variant: dict[str, list[Any]] = {}
    for row in rows:
        by_variant.setdefault(row.variant, []).append(row)
    assert {v: len(r) for v, r in by_variant.items()} == {"champion": SMOKE_CASES, "challenger": SMOKE_CASES}
    assert all(r.error is None for r in rows), [r.error for r in rows if r.error][:3]
    # The challenger's answers came from the upstream server, with the model name registered for it.
    assert len(_Upstream.requests) >= SMOKE_CASES
    assert {r["path"] for r in _Upstream.requests} == {"/v1/chat/completions"}
    assert {r["body"].get("model") for r in _Upstream.requests} == {"helpdesk-llm-8b"}

    listed = _cli(project, "package", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    versions = {row["version"]: row for row in json.loads(listed.stdout)}
    assert (versions[1]["kind"], versions[2]["kind"]) == ("python", "openai_compatible")
    assert versions[1]["approval_status"] == "Approved"
    status = json.loads(_cli(project, "status", "--json").stdout)
    (endpoint,) = status["endpoints"]
    served = {v["name"]: v["package_version"] for v in endpoint["variants"]}
    assert served == {"champion": 1, "challenger": 2}
