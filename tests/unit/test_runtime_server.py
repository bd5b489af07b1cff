"""``serve`` in the foreground (what ``agent-release serve`` runs) and the background RuntimeServer."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agent_release.pipelines.runtime.server import RuntimeServer

SERVE = (
    "import sys; from pathlib import Path; from agent_release.pipelines.runtime.server import serve; "
    "serve(Path(sys.argv[1]), port=0, log_level='warning')"
)


def _ping(url: str) -> int:
    with urllib.request.urlopen(url + "/ping", timeout=5) as response:
        return int(response.status)


def _serving_url(process: subprocess.Popen[Any], state_dir: Path) -> str:
    """The URL ``serve`` writes to ``<state_dir>/runtime.json`` once it is bound (waits up to 30 s)."""
    runtime_file = state_dir / "runtime.json"
    deadline = time.monotonic() + 30
    while not runtime_file.exists():
        assert process.poll() is None, "serve exited early"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return str(json.loads(runtime_file.read_text())["url"])


@pytest.mark.parametrize(("sig", "exit_codes"), [(signal.SIGTERM, {-signal.SIGTERM}), (signal.SIGINT, {0})])
def test_serve_runs_in_the_foreground_until_signalled(tmp_path: Path, sig: int, exit_codes: set[int]) -> None:
    process = subprocess.Popen([sys.executable, "-c", SERVE, str(tmp_path)])
    try:
        url = _serving_url(process, tmp_path)
        deadline = time.monotonic() + 30
        while True:
            try:
                assert _ping(url) == 200
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        process.send_signal(sig)
        assert process.wait(timeout=15) in exit_codes
    assert not (tmp_path / "runtime.json").exists()


def test_runtime_server_context_manager(tmp_path: Path) -> None:
    with RuntimeServer(tmp_path) as server:
        assert server.url is not None
        url = server.url
        assert _ping(url) == 200
    assert server.url is None
    try:
        _ping(url)
    except OSError:
        pass
    else:
        raise AssertionError("server still answering after stop()")


STUCK_MODEL = """
import pathlib, sys, time


class StuckModel:
    def complete(self, request):
        pathlib.Path(sys.argv[1], "called").touch()
        time.sleep(600)  # a wedged model: no answer for ten minutes
        return {}
"""


def test_ctrl_c_does_not_wait_for_a_model_call_that_never_returns(tmp_path: Path) -> None:
    # Before: the model's worker thread was joined at exit, so serve outlived Ctrl-C by as long as the call
    # ran (forever, for a wedged model), and printed a traceback for the request cut short.
    import threading

    import boto3
    from botocore.config import Config

    from agent_release.pipelines.local_backend import LocalBackend
    from agent_release.steps.backend import ModelSpec, VariantSpec

    (tmp_path / "stuck_model.py").write_text(STUCK_MODEL)
    backend = LocalBackend(tmp_path)
    model = ModelSpec(kind="python", options={"class_path": "stuck_model:StuckModel"})
    backend.deploy_endpoint("stuck", [VariantSpec(name="only", model=model, initial_weight=1.0)])
    backend.close()
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(tmp_path)], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        client = boto3.client(
            "sagemaker-runtime",
            endpoint_url=_serving_url(process, tmp_path),
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 1}, read_timeout=120, connect_timeout=5),
        )
        body = json.dumps({"messages": [{"role": "user", "content": "hello"}]})

        def call() -> None:
            with contextlib.suppress(Exception):  # the server goes away mid-call
                client.invoke_endpoint(EndpointName="stuck", Body=body, ContentType="application/json")

        threading.Thread(target=call, daemon=True).start()
        deadline = time.monotonic() + 30
        while not (tmp_path / "called").exists():
            assert time.monotonic() < deadline, "the model was never called"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        _, stderr = process.communicate()
        assert "Traceback" not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
