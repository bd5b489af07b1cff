"""A run console whose output a test reads back."""

from __future__ import annotations

import io

from rich.console import Console

from agent_release.pipelines.console import RunConsole


def captured_console(
    *, terminal: bool, interactive: bool | None = None, width: int = 120
) -> tuple[RunConsole, io.StringIO]:
    """A :class:`RunConsole` printing into the returned buffer, as on a terminal (rich's escape codes and
    all) or not; ``interactive`` (progress bars instead of lines) follows ``terminal`` unless given."""
    out = io.StringIO()
    run_console = RunConsole()
    run_console.console = Console(file=out, force_terminal=terminal, width=width, highlight=False)
    run_console.interactive = terminal if interactive is None else interactive
    return run_console, out
