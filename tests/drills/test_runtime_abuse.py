"""Abusive clients against the local endpoint runtime: the server answers 4xx and keeps serving everyone else.

tests/unit/test_runtime_app.py already covers malformed JSON, a non-object body, bad UTF-8, a wrong content
type (424 ModelErrors naming 400 or 415), a 6 MB + 1 byte body with Content-Length (413), wrong methods and
paths. These drills add what a misbehaving or hostile client does on the wire: headers sent a byte at a
time, bodies that never finish, bodies far over the limit without (or with a lying) Content-Length,
oversized headers, non-HTTP bytes, and hundreds of idle connections, each while a well-behaved client checks
that it is still served.

The time bounds here are liveness checks derived from the runtime's request read timeout, not speed checks
(benchmarks/bench_runtime.py measures speed): the failure they catch is a caller stuck behind an abusive client
until the server's read timeout frees it, or a server that waits for bytes that never come.
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from agent_release.pipelines.local_backend import LocalBackend
from agent_release.pipelines.runtime.server import REQUEST_READ_TIMEOUT_S
from agent_release.steps.backend import ModelSpec, VariantSpec

BODY = json.dumps({"messages": [{"role": "user", "content": "hello"}]}).encode()
PATH = "/endpoints/abuse/invocations"
LIMIT = 6 * 1024 * 1024
# A caller that queued behind a stalled client would wait for the read timeout that frees the stalled
# connection; an echo call on loopback takes milliseconds. Half the read timeout separates the two on a loaded
# machine: a call that takes longer counts as starved (it is also the well-behaved client's socket timeout).
STARVED_S = REQUEST_READ_TIMEOUT_S / 2


class EchoModel:
    """Answers every chat-completions request with the user's text."""

    def complete(self, request: Mapping[str, Any]) -> dict[str, Any]:
        text = request["messages"][-1]["content"]
        return {
            "id": "echo",
            "object": "chat.completion",
            "created": 0,
            "model": "echo",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    backend = LocalBackend(tmp_path_factory.mktemp("abuse"))
    model = ModelSpec(kind="python", options={"class_path": f"{__name__}:EchoModel"})
    backend.deploy_endpoint("abuse", [VariantSpec(name="only", model=model, initial_weight=1.0)])
    yield backend.start_runtime()
    backend.close()


def _address(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    assert parsed.hostname is not None and parsed.port is not None
    return parsed.hostname, parsed.port


def _invoke(url: str, timeout: float = STARVED_S) -> tuple[int, float]:
    """One well-behaved InvokeEndpoint call: (status, seconds)."""
    host, port = _address(url)
    started = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", PATH, body=BODY, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = json.loads(response.read())
        assert payload["choices"][0]["message"]["content"] == "hello"
        return response.status, time.perf_counter() - started
    finally:
        conn.close()


def _raw_exchange(url: str, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, return whatever the server answers before closing (or until the timeout)."""
    with socket.create_connection(_address(url), timeout=timeout) as sock:
        # The server may answer and close before reading everything: that is the point.
        with suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def _status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


def test_slow_and_stalled_clients_do_not_delay_others(url: str) -> None:
    baseline = [_invoke(url)[1] for _ in range(10)]
    stop = threading.Event()
    request_head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()

    def slowloris(sock: socket.socket) -> None:
        # Headers one byte every 50 ms, never finished.
        for byte in request_head:
            if stop.wait(0.05):
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return

    with ExitStack() as stack:
        slow = [stack.enter_context(socket.create_connection(_address(url))) for _ in range(25)]
        stalled = [stack.enter_context(socket.create_connection(_address(url))) for _ in range(25)]
        for sock in stalled:  # a body that announces 1000 bytes and sends 10
            sock.sendall(request_head + b"Content-Length: 1000\r\n\r\n" + BODY[:10])
        threads = [threading.Thread(target=slowloris, args=(s,), daemon=True) for s in slow]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            during = [_invoke(url) for _ in range(30)]
        finally:
            stop.set()
            for t in threads:
                t.join(5)
    assert all(status == 200 for status, _ in during)
    latencies = [seconds for _, seconds in during]
    print(
        f"latency p50 {statistics.median(baseline) * 1000:.1f} ms alone, "
        f"{statistics.median(latencies) * 1000:.1f} ms (max {max(latencies) * 1000:.1f} ms) "
        "beside 25 slow-header and 25 stalled-body clients"
    )
    assert max(latencies) < STARVED_S, latencies
    assert _invoke(url)[0] == 200, "still serving after the slow clients went away"


def test_hundreds_of_idle_connections_do_not_starve_a_caller(url: str) -> None:
    with ExitStack() as stack:
        for _ in range(300):
            stack.enter_context(socket.create_connection(_address(url)))
        status, seconds = _invoke(url)
    assert status == 200 and seconds < STARVED_S


def test_chunked_body_over_the_limit_is_413(url: str) -> None:
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(LIMIT // len(chunk) + 2))
    head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    response = _raw_exchange(url, head.encode() + b"Transfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n")
    assert _status_of(response) == 413
    assert _invoke(url)[0] == 200


def test_lying_content_length_is_cut_off_at_the_limit(url: str) -> None:
    """Content-Length says 1 TB: the server stops reading at 6 MB and answers 413 without waiting for more."""
    head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {10**12}\r\n\r\n"
    started = time.perf_counter()
    response = _raw_exchange(url, head.encode() + b"x" * (LIMIT + 65536), timeout=2 * REQUEST_READ_TIMEOUT_S)
    assert _status_of(response) == 413
    # Liveness, not speed: a server waiting for the announced terabyte would answer (if at all) only when its
    # read timeout closes the connection, so an answer before that proves it stopped reading at the limit.
    assert time.perf_counter() - started < REQUEST_READ_TIMEOUT_S
    assert _invoke(url)[0] == 200


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 200_000}\r\n\r\n".encode(), id="200KB header"
        ),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) * 4, id="TLS hello"),
        pytest.param(b"GARBAGE / NOT-HTTP\r\n\r\n", id="not HTTP"),
        pytest.param(f"POST {PATH} HTTP/1.1\r\nContent-Length: -5\r\n\r\n".encode(), id="negative length"),
    ],
)
def test_malformed_wire_requests_get_4xx_and_the_server_keeps_serving(url: str, request_bytes: bytes) -> None:
    response = _raw_exchange(url, request_bytes)
    assert 400 <= _status_of(response) < 500, response[:200]
    assert _invoke(url)[0] == 200


def test_runtime_binds_loopback_only_by_default(tmp_path: Path) -> None:
    """The runtime listens on 127.0.0.1 unless told otherwise, so other machines cannot reach it."""
    import inspect

    from agent_release.pipelines.cli import serve
    from agent_release.pipelines.runtime.server import RuntimeServer
    from agent_release.pipelines.runtime.server import serve as serve_forever

    assert inspect.signature(RuntimeServer).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(serve_forever).parameters["host"].default == "127.0.0.1"
    assert next(p for p in serve.params if p.name == "host").default == "127.0.0.1"

    backend = LocalBackend(tmp_path)
    try:
        url = backend.start_runtime()
        host, port = _address(url)
        assert host == "127.0.0.1"
        external = _non_loopback_address()
        if external is not None:  # the same port on this machine's outward address refuses connections
            with pytest.raises(OSError), socket.create_connection((external, port), timeout=2):
                pass
    finally:
        backend.close()


def _non_loopback_address() -> str | None:
    """This machine's outward IPv4 address (no packet is sent), or None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: routing lookup only
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_a_client_that_never_finishes_its_headers_is_cut_off(url: str) -> None:
    """A request whose headers never complete gets 408 (or a close) once the read timeout passes."""
    # Liveness, not speed: the socket's own timeout, twice the server's read timeout, is the bound; a server
    # that never cuts the client off leaves the connection open past it.
    with socket.create_connection(_address(url), timeout=2 * REQUEST_READ_TIMEOUT_S) as sock:
        sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\n".encode())
        started = time.perf_counter()
        try:
            answer = sock.recv(1024)
        except TimeoutError:
            answer = None
        waited = time.perf_counter() - started
    assert answer is not None, f"connection still open after {waited:.0f} s"
    assert answer == b"" or _status_of(answer) == 408
    # A lower bound from the configured timeout: the client was cut off by it, not at once for another reason
    # (the timer starts when the server reads the last bytes, a moment before ``started``).
    assert waited >= REQUEST_READ_TIMEOUT_S - 0.5, waited
