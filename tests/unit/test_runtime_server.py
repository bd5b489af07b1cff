"""``serve`` in the foreground (what ``agent-release serve`` runs) and the background RuntimeServer."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from agent_release.pipelines.runtime.server import RuntimeServer

SERVE = (
    "import sys; from pathlib import Path; from agent_release.pipelines.runtime.server import serve; "
    "serve(Path(sys.argv[1]), port=0, log_level='warning')"
)


def _ping(url: str) -> int:
    with urllib.request.urlopen(url + "/ping", timeout=5) as response:
        return int(response.status)


@pytest.mark.parametrize(("sig", "exit_codes"), [(signal.SIGTERM, {-signal.SIGTERM}), (signal.SIGINT, {0})])
def test_serve_runs_in_the_foreground_until_signalled(tmp_path: Path, sig: int, exit_codes: set[int]) -> None:
    process = subprocess.Popen([sys.executable, "-c", SERVE, str(tmp_path)])
    try:
        runtime_file = tmp_path / "runtime.json"
        deadline = time.monotonic() + 30
        while not runtime_file.exists():
            assert process.poll() is None, "serve exited early"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        url = json.loads(runtime_file.read_text())["url"]
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
