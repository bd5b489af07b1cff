"""An unreachable MLflow server is reported in seconds with one line, not after MLflow's four minutes of retries."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from _shared.loopback import free_port, serve

from agent_release.pipelines.tracking import probe_tracking_server


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self.path == "/health" else 404
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    with serve(_Health) as url:
        yield url


def test_a_server_that_answers_passes(server: str) -> None:
    probe_tracking_server(server)
    probe_tracking_server(server + "/")


def test_an_answer_other_than_200_still_means_reachable(server: str) -> None:
    probe_tracking_server(server + "/prefix")  # /prefix/health answers 404


def test_a_refused_connection_fails_at_once_with_one_line() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ConnectionError) as caught:
        probe_tracking_server(uri)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "\n" not in message and f"{uri}/health" in message


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts the connection, never answers
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(ConnectionError, match=r"within 0\.5 s"):
            probe_tracking_server(uri, timeout_s=0.5)
        assert time.monotonic() - started < 3


def test_database_and_managed_uris_are_not_probed() -> None:
    probe_tracking_server("sqlite:////nonexistent/dir/mlflow.db")
    probe_tracking_server("databricks")
    probe_tracking_server("arn:aws:sagemaker:us-east-1:123456789012:mlflow-tracking-server/x")
