"""An unreachable MLflow server is reported in seconds with one line, not after MLflow's four minutes of retries."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

import pytest
from _shared.loopback import free_port, serve

from agent_release.pipelines.tracking import PROBE_TIMEOUT_S, probe_tracking_server


class _Health(BaseHTTPRequestHandler):
    paths: ClassVar[list[str]] = []  # what the probe asked for, in order

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        status = 200 if self.path == "/health" else 404
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Health.paths.clear()
    with serve(_Health) as url:
        yield url


def test_a_server_that_answers_passes(server: str) -> None:
    probe_tracking_server(server)
    probe_tracking_server(server + "/")
    assert _Health.paths == ["/health", "/health"], "each probe asked the server's /health route"


def test_an_answer_other_than_200_still_means_reachable(server: str) -> None:
    probe_tracking_server(server + "/prefix")  # /prefix/health answers 404
    assert _Health.paths == ["/prefix/health"], "the probe got the 404 answer and took it as reachable"


def test_a_refused_connection_fails_at_once_with_one_line() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ConnectionError) as caught:
        probe_tracking_server(uri, timeout_s=PROBE_TIMEOUT_S)
    # Liveness, not speed: a refusal is reported as it happens, without waiting out the probe's timeout or
    # retrying (MLflow's client retries for about four minutes). A refusal takes milliseconds, so the timeout is
    # a wide margin; the failure this catches is a wait of the timeout or longer.
    assert time.monotonic() - started < PROBE_TIMEOUT_S
    message = str(caught.value)
    assert "\n" not in message and f"{uri}/health" in message
    assert "within" not in message, "reported as a refusal, not as a timeout"


def test_a_server_that_never_answers_times_out() -> None:
    timeout_s = 0.5
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts the connection, never answers
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(ConnectionError, match=r"within 0\.5 s"):
            probe_tracking_server(uri, timeout_s=timeout_s)
        waited = time.monotonic() - started
    # The probe waits for the configured timeout (a lower bound from that setting) and then gives up. The upper
    # bound is a liveness check, not a speed check: the failure it catches is a probe that hangs or retries, so
    # it is the timeout with a tenfold margin for a loaded machine.
    assert timeout_s <= waited < 10 * timeout_s


def test_database_and_managed_uris_are_not_probed(monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.request

    opened: list[object] = []
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: opened.append(a) or _refuse())

    probe_tracking_server("sqlite:////nonexistent/dir/mlflow.db")
    probe_tracking_server("databricks")
    probe_tracking_server("arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/x")
    assert opened == []
    # The stand-in does catch a probe: an http URI goes through it and fails.
    with pytest.raises(ConnectionError, match="refused by the test"):
        probe_tracking_server("http://127.0.0.1:9")
    assert len(opened) == 1


def _refuse() -> None:
    raise ConnectionRefusedError("refused by the test")
