"""What a person sees while a pipeline runs: step lines, progress bars, summaries.

Progress bars only appear when stderr is a terminal (and not in ``--quiet``/``--json`` mode); otherwise each
step prints one plain line (a long evaluation one more every 30 s), so CI logs stay readable. Everything goes
to stderr: stdout is kept for the results scripts parse (``--json``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

# Off a terminal, an evaluation prints its progress at most this often (seconds), besides its last line.
PLAIN_PROGRESS_EVERY_S = 30.0


class RunConsole:
    """Renders executor events and long-running work (evaluation, bakes)."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False)
        if not self.console.is_terminal:
            # Off a terminal rich wraps at 80 columns, which split a report's path and failure reasons over
            # lines in CI logs and for scripts reading stderr; there each message stays one line.
            self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.interactive = self.console.is_terminal and not quiet
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        # Variant -> elapsed seconds of its last plain (non-terminal) progress line.
        self._plain_progress_at: dict[str, float] = {}

    # -- executor observer ---------------------------------------------------------------------------------
    def step_event(self, step: str, event: str, info: Mapping[str, Any]) -> None:
        """Observer for :class:`~agent_release.pipelines.executor.LocalExecutor`."""
        if self.quiet:
            return
        if event == "started":
            self.console.print(f"[bold]▶ {step}[/bold]")
        elif event == "succeeded":
            self._stop_progress()
            output = info.get("output")
            summary = _summarise(output)
            self.console.print(f"[green]✓ {step}[/green] ({info.get('seconds', 0.0):.1f}s){summary}")
        elif event == "failed":
            self._stop_progress()
            self.console.print(f"[red]✗ {step}[/red]: {shown(info.get('error'))}")
        elif event == "skipped":
            reason = info.get("reason")
            self.console.print(f"[dim]- {step} skipped{': ' + shown(reason) if reason else ''}[/dim]")
        elif event == "reused":
            self.console.print(f"[dim]↺ {step} already done (resumed)[/dim]")

    # -- progress -----------------------------------------------------------------------------------------
    def _ensure_progress(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(
                TextColumn("  {task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[extra]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
        return self._progress

    def _stop_progress(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None
                self._tasks.clear()

    def eval_progress(self, event: Any) -> None:
        """Callback for evaluation progress events (variant, done, total, errors, rate)."""
        if self.quiet:
            return
        variant = shown(_get(event, "variant", "?"))
        if _get(event, "waited_s", None) is not None:  # steps.evaluate_variants.TraceFlushProgress
            self._flush_progress(
                variant, _get(event, "traces_left", None), float(_get(event, "waited_s", 0.0))
            )
            return
        done = int(_get(event, "done", 0))
        total = int(_get(event, "total", 0))
        errors = int(_get(event, "errors", 0))
        rate = float(_get(event, "rate", 0.0))
        extra = f"errors {errors}  {rate:.1f} cases/s"
        if not self.interactive:
            self._plain_eval_progress(variant, done, total, float(_get(event, "elapsed_s", 0.0)), extra)
            return
        with self._lock:
            progress = self._ensure_progress()
            if variant not in self._tasks:
                self._tasks[variant] = progress.add_task(f"evaluate {variant}", total=total, extra="")
            progress.update(self._tasks[variant], completed=done, total=total, extra=extra)

    def _flush_progress(self, variant: str, traces_left: Any, waited_s: float) -> None:
        """The cases are done and their traces are still being written: a line each time (the evaluation
        sends one every 10 s), or the variant's bar says so on a terminal."""
        # 0 queued: the writer has the last batch in hand.
        left = f", {int(traces_left)} queued" if traces_left else ""
        text = f"writing traces to MLflow{left} ({waited_s:.0f}s)"
        if not self.interactive:
            self.console.print(f"  {variant}: {text}")
            return
        with self._lock:
            if self._progress is not None and variant in self._tasks:
                self._progress.update(self._tasks[variant], extra=text)

    def _plain_eval_progress(self, variant: str, done: int, total: int, elapsed_s: float, extra: str) -> None:
        """Off a terminal: a line when a variant is done, and one at most every
        :data:`PLAIN_PROGRESS_EVERY_S` seconds before that, so a long evaluation shows in a CI log that it
        moves (and a CI job that ends a step silent for minutes does not kill it)."""
        with self._lock:
            if done < total:
                if elapsed_s - self._plain_progress_at.get(variant, 0.0) < PLAIN_PROGRESS_EVERY_S:
                    return  # a short evaluation keeps its single line
                self._plain_progress_at[variant] = elapsed_s
            else:
                self._plain_progress_at.pop(variant, None)
        self.console.print(f"  {variant}: {done}/{total} cases, {extra}")

    def bake_progress(self, label: str, seconds: float) -> Callable[[float, float, str], None]:
        """A callback ``update(elapsed_s, total_s, status_text)`` for one bake period of ``seconds``.

        ``total_s`` grows past ``seconds`` when the bake goes on because the guards cannot judge the step
        yet; the bar then stretches to the new limit, and a non-interactive run prints one line saying so.
        """
        if self.quiet:
            return lambda elapsed, total, text: None
        label = shown(label)
        if not self.interactive:
            self.console.print(f"  {label}: baking {seconds:g}s")
            extended = False

            def note_extension(elapsed: float, total: float, text: str) -> None:
                nonlocal extended
                if total > seconds and not extended:
                    extended = True
                    self.console.print(f"  {label}: after {elapsed:.0f}s, {shown(text)}")

            return note_extension
        with self._lock:
            progress = self._ensure_progress()
            task = progress.add_task(label, total=seconds, extra="")

        def update(elapsed: float, total: float, text: str) -> None:
            with self._lock:
                if self._progress is not None:
                    self._progress.update(task, completed=min(elapsed, total), total=total, extra=shown(text))

        return update

    def note(self, text: str) -> None:
        """One informational line (rich markup: pass outside values through :func:`shown`)."""
        if not self.quiet:
            self.console.print(text)


def shown(value: object) -> str:
    """``value`` as rich markup that prints it as it is, on one line.

    Stored and outside text (ledger reasons, step errors, case ids, variant names, a model's words) must
    neither be read as markup (``[/red]`` raised ``MarkupError``; ``[a=1, b=0]``, the weights of a
    summary, vanished as an unknown style; ``[link=...]`` made a terminal hyperlink) nor drive the
    terminal: line breaks and control characters (``ESC``, the start of every ANSI/OSC sequence) are shown
    escaped (:func:`~agent_release.pipelines.terminal_text.printable_line`).
    """
    from agent_release.pipelines.terminal_text import printable_line

    return escape(printable_line(value))


def _get(event: Any, key: str, default: Any) -> Any:
    if isinstance(event, Mapping):
        return event.get(key, default)
    return getattr(event, key, default)


def _summarise(output: Any) -> str:
    """A short, human summary of a step's typed report (what the step would say in one line)."""
    if output is None:
        return ""
    for attr in ("summary", "one_line"):
        fn = getattr(output, attr, None)
        if callable(fn):
            try:
                return f" — {shown(fn())}"
            except Exception:  # a summary must never break a run
                return ""
    reason = getattr(output, "reason", None)
    decision = getattr(output, "decision", None)
    if isinstance(decision, str) and isinstance(reason, str):
        return f" — [bold]{shown(decision.upper())}[/bold]: {shown(reason)}"
    return ""
