"""A thread pool of daemon threads for model calls, one per served variant.

Why not ``concurrent.futures.ThreadPoolExecutor``: its workers are joined when the interpreter exits, so a
model call that never returns (a wedged python model) kept ``agent-release serve`` from exiting after
Ctrl-C, and a shutdown waited for every call in flight. A model call cannot be interrupted, so the runtime
stops waiting for it instead: an invocation past its timeout is answered with an error and its thread is
left to finish (or not) on its own, and at exit these daemon threads are simply abandoned.

One pool per variant (see :class:`~agent_release.pipelines.runtime.model_loader.ModelCache`): a variant
whose calls are slow or stuck uses up its own threads only, never another variant's or another endpoint's,
so a slow shadow copy cannot delay the production answer it shadows.

Usage::

    threads = ModelThreads(32, name="model-challenger")
    answer = await loop.run_in_executor(threads, model.complete, request)
    threads.shutdown(wait=False, cancel_futures=True)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class ModelThreads(Executor):
    """Runs submitted calls on up to ``max_workers`` daemon threads, started as the calls need them."""

    def __init__(self, max_workers: int, *, name: str) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.max_workers = max_workers
        self.name = name
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        # Released by a thread each time it finishes a call and goes back to wait: a submit takes one
        # instead of starting a thread (as the standard pool does).
        self._idle = threading.Semaphore(0)
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Queue ``fn(*args, **kwargs)``; raises RuntimeError after :meth:`shutdown`."""
        future: Future[_T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name}: cannot run new calls after shutdown")
            self._work.put((future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._serve, name=f"{self.name}-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return future

    def _serve(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            outcome: tuple[bool, Any] | None = None
            if future.set_running_or_notify_cancel():
                try:
                    outcome = (True, fn(*args, **kwargs))
                except BaseException as exc:  # the caller gets what the call raised, as with any executor
                    outcome = (False, exc)
            # Idle before the caller hears back, so a call submitted right after the answer finds this thread.
            self._idle.release()
            if outcome is not None:
                if outcome[0]:
                    future.set_result(outcome[1])
                else:
                    future.set_exception(outcome[1])
            del item, future, fn, args, kwargs, outcome  # nothing of the call is kept while waiting for more

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; ``cancel_futures`` cancels the queued ones; ``wait`` joins threads that finish.

        A running call is never interrupted: with ``wait`` the caller waits for it, without ``wait`` its
        thread ends once the call returns (or is abandoned at exit).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._work.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in threads:
            self._work.put(None)
        if wait:
            for thread in threads:
                thread.join()

    def alive_threads(self) -> int:
        """Threads started and not yet ended (running a call or waiting for one)."""
        with self._lock:
            return sum(1 for t in self._threads if t.is_alive())
