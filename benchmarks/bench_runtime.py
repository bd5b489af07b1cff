"""Benchmark of the local endpoint runtime: overhead per call and throughput with a no-op model.

Run: ``.venv/bin/python benchmarks/bench_runtime.py`` (about 20 s). Prints one JSON line::

    {"bench": "runtime", "overhead_p50_ms": ..., "overhead_p99_ms": ..., "requests_per_s": ..., ...}

- The runtime runs in its own process (as ``agent-release serve`` does) on 127.0.0.1.
- Overhead: one keep-alive HTTP client calls the endpoint while the *same* no-op model class is also called
  directly in this process, interleaved call by call; overhead = percentile of the HTTP latency minus the same
  percentile of the direct call. It includes the client's own HTTP work (http.client), so it is the overhead
  a caller sees, not only the server's (the server's own measure is reported as ``server_overhead_p50_ms``).
- ``server_model_p50_ms``: the model latency the runtime itself records for those calls (what guards and
  CloudWatch-style metrics read), for the no-op model; tests check that it is recorded and consistent, not its
  size.
- Throughput: ``CLIENTS`` keep-alive client threads in this process for ``THROUGHPUT_S`` seconds. Client and
  server share the machine's cores, so this is a floor for what the server alone could do.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

CLIENTS = 4
LATENCY_CALLS = 2000
WARMUP_CALLS = 300
THROUGHPUT_S = 6.0
REQUEST = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 16}


class NoopModel:
    """Answers every request with the same tiny chat.completion."""

    def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "noop",
            "object": "chat.completion",
            "created": 0,
            "model": "noop",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "pong"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }


def _serve(state_dir: str, urls: Any, stop: Any) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from agent_release.pipelines.runtime.server import RuntimeServer

    with RuntimeServer(Path(state_dir)) as server:
        urls.put(server.url)
        stop.wait(120)


class _Client:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.connect()
        # As urllib3 (boto3) does: without it Nagle + delayed ACKs add 40 ms to requests.
        assert self.conn.sock is not None
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.body = json.dumps(REQUEST).encode()
        self.headers = {"Content-Type": "application/json"}

    def call(self) -> dict[str, Any]:
        self.conn.request("POST", "/endpoints/bench/invocations", body=self.body, headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"runtime answered {response.status}: {data[:200]!r}")
        answer: dict[str, Any] = json.loads(data)
        return answer


def _latency(port: int) -> tuple[list[float], list[float]]:
    client = _Client(port)
    model = NoopModel()
    body = client.body
    for _ in range(WARMUP_CALLS):
        client.call()
    http_ms: list[float] = []
    direct_ms: list[float] = []
    for _ in range(LATENCY_CALLS):
        started = time.perf_counter()
        model.complete(json.loads(body))  # the direct call parses and answers like the model behind HTTP
        direct_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        client.call()
        http_ms.append((time.perf_counter() - started) * 1000)
    return http_ms, direct_ms


def _throughput(port: int) -> float:
    counts = [0] * CLIENTS
    deadline = time.perf_counter() + THROUGHPUT_S

    def run(i: int) -> None:
        client = _Client(port)
        while time.perf_counter() < deadline:
            client.call()
            counts[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def main() -> None:
    """Run the benchmark and print its JSON line."""
    from agent_release.pipelines.local_backend import LocalBackend
    from agent_release.steps.backend import ModelSpec, VariantSpec

    with tempfile.TemporaryDirectory() as state_dir:
        backend = LocalBackend(Path(state_dir))
        spec = ModelSpec(kind="python", options={"class_path": "bench_runtime:NoopModel"})
        backend.deploy_endpoint("bench", [VariantSpec(name="noop", model=spec, initial_weight=1.0)])
        ctx = multiprocessing.get_context("spawn")
        urls, stop = ctx.Queue(), ctx.Event()
        server = ctx.Process(target=_serve, args=(state_dir, urls, stop))
        server.start()
        try:
            port = int(str(urls.get(timeout=60)).rsplit(":", 1)[1])
            since = time.time()
            http_ms, direct_ms = _latency(port)
            requests_per_s = _throughput(port)
        finally:
            stop.set()
            server.join(30)
        recorded = backend.variant_metrics("bench", since)["noop"]
        server_overhead, server_model = recorded.overhead_latency_ms_p50, recorded.model_latency_ms_p50
        try:
            import uvloop  # noqa: F401

            loop = "uvloop"
        except ImportError:
            loop = "asyncio"
        try:
            import httptools  # noqa: F401

            http_impl = "httptools"
        except ImportError:
            http_impl = "h11"
        result = {
            "bench": "runtime",
            "overhead_p50_ms": round(float(np.percentile(http_ms, 50) - np.percentile(direct_ms, 50)), 4),
            "overhead_p99_ms": round(float(np.percentile(http_ms, 99) - np.percentile(direct_ms, 99)), 4),
            "requests_per_s": round(requests_per_s, 1),
            "server_overhead_p50_ms": round(server_overhead, 4) if server_overhead is not None else None,
            "server_model_p50_ms": round(server_model, 4) if server_model is not None else None,
            "direct_p50_ms": round(float(np.percentile(direct_ms, 50)), 4),
            "clients": CLIENTS,
            "cpus": os.cpu_count(),
            "http": http_impl,
            "loop": loop,
        }
        print(json.dumps(result))


if __name__ == "__main__":
    main()
