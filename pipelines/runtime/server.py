"""Run the endpoint runtime with uvicorn: in a background thread (:class:`RuntimeServer`) or in the foreground
(:func:`serve`, what ``agent-release serve`` calls).

Usage::

    with RuntimeServer(state_dir) as server:       # 127.0.0.1, a free port
        client = boto3.client("sagemaker-runtime", endpoint_url=server.url, ...)

uvicorn picks httptools/uvloop when they are installed and its pure-Python h11 parser otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import uvicorn

from agent_release.pipelines.local_backend import remove_runtime_file, write_runtime_file
from agent_release.pipelines.runtime.app import INVOCATION_TIMEOUT_S, RuntimeApp

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0


# A request must make progress (some bytes) at least this often until it is complete; otherwise the connection is
# closed. uvicorn has no header/body read timeout (timeout_keep_alive only runs between requests), so without
# this a client that never finishes a request would hold a connection and a file descriptor forever.
REQUEST_READ_TIMEOUT_S = 10.0


def _guarded_protocol() -> type | str:
    """httptools' protocol with a read timeout on incomplete requests ("auto" when httptools is missing)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools ships with uvicorn[standard], which we depend on
        return "auto"

    class ReadTimeoutHttpToolsProtocol(HttpToolsProtocol):
        """Closes a connection whose current request stalls for REQUEST_READ_TIMEOUT_S (idle sockets too)."""

        _read_timer: asyncio.TimerHandle | None = None

        def _arm_read_timeout(self) -> None:
            self._disarm_read_timeout()
            self._read_timer = self.loop.call_later(REQUEST_READ_TIMEOUT_S, self._read_timed_out)

        def _disarm_read_timeout(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _read_timed_out(self) -> None:
            self._read_timer = None
            if self.flow is not None and self.flow.read_paused:
                self._arm_read_timeout()  # we stopped reading (backpressure): not the client's stall
            elif not self.transport.is_closing():
                logger.info(
                    "client=<%s> | request incomplete after %.0fs, closing",
                    self.client,
                    REQUEST_READ_TIMEOUT_S,
                )
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_read_timeout()

        def data_received(self, data: bytes) -> None:
            self._arm_read_timeout()
            super().data_received(data)

        def on_message_complete(self) -> None:
            # The request is complete: from here the app owns the connection (a slow model is not a stalled
            # client), and uvicorn's keep-alive timeout governs the idle time before the next request.
            self._disarm_read_timeout()
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_read_timeout()
            super().connection_lost(exc)

    return ReadTimeoutHttpToolsProtocol


def _config(app: RuntimeApp, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=_guarded_protocol(),
        log_level=log_level,
        access_log=False,
        lifespan="on",
        # Long enough for in-flight calls to finish, short enough that a hanging variant cannot block exit.
        timeout_graceful_shutdown=2,
        timeout_keep_alive=30,
    )


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class RuntimeServer:
    """The runtime for one state directory, served by uvicorn on a background thread."""

    def __init__(
        self,
        state_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        *,
        invocation_timeout_s: float = INVOCATION_TIMEOUT_S,
    ):
        self.state_dir = Path(state_dir)
        self.host = host
        self.port = port
        self.log_level = log_level
        self.invocation_timeout_s = invocation_timeout_s
        self.url: str | None = None
        self.app: RuntimeApp | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Bind, start serving, wait until ready; return the base URL (e.g. ``http://127.0.0.1:50123``)."""
        if self.url is not None:
            return self.url
        sock = _bind(self.host, self.port)
        self.app = RuntimeApp(self.state_dir, invocation_timeout_s=self.invocation_timeout_s)
        self._server = uvicorn.Server(_config(self.app, self.log_level))
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.run(sockets=[sock]), name="runtime-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError(f"endpoint runtime failed to start on {self.host}:{self.port}")
            time.sleep(0.01)
        self.url = _url(sock)
        write_runtime_file(self.state_dir, self.url)
        logger.info("url=<%s>, state_dir=<%s> | endpoint runtime started", self.url, self.state_dir)
        return self.url

    def stop(self) -> None:
        """Stop serving (in-flight calls get a short grace period) and wait for the thread to end."""
        if self._server is None:
            return
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.url is not None:
            remove_runtime_file(self.state_dir, self.url)
        logger.info("url=<%s> | endpoint runtime stopped", self.url)
        self._server = None
        self._thread = None
        self.url = None

    def __enter__(self) -> RuntimeServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def serve(
    state_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "info",
    on_bound: Callable[[str], None] | None = None,
) -> None:
    """Serve the endpoints of ``state_dir`` in the foreground until interrupted.

    Returns normally after Ctrl-C. On SIGTERM uvicorn shuts down gracefully and then re-raises the signal, so
    the process ends as terminated by SIGTERM (exit status 143), as a service manager expects. Port 0 picks a
    free port; the URL is logged and written to ``<state_dir>/runtime.json`` while serving.
    """
    state_dir = Path(state_dir)
    sock = _bind(host, port)
    url = _url(sock)
    if on_bound is not None:
        on_bound(url)  # after the bind, so a port in use never prints a "serving" line first
    app = RuntimeApp(state_dir)
    app.on_shutdown.append(lambda: remove_runtime_file(state_dir, url))
    server = uvicorn.Server(_config(app, log_level))
    write_runtime_file(state_dir, url)
    logger.info("url=<%s>, state_dir=<%s> | serving endpoints", url, state_dir)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        remove_runtime_file(state_dir, url)
