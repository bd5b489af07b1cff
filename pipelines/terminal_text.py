"""Outside text made safe to print on a terminal: no value can drive it with escape sequences.

Ledger reasons, step errors, golden case ids, variant and model names and a model's own words reach the
console. A value holding ``ESC`` could clear the screen (``ESC [2J``), retitle the window, or write the
clipboard (OSC 52); a carriage return could overprint the line before it. Usage::

    click.echo(f"#{seq} {printable_line(entry.reason)}")     # one line, control characters as \\xNN
    handler.setFormatter(PrintableFormatter(fmt))            # log lines: the same, line breaks kept

Stored data is never changed: only what is printed is escaped (the ledger keeps the exact text it hashed).
"""

from __future__ import annotations

import logging
import re

__all__ = ["PrintableFormatter", "escape_controls", "printable_line"]

# C0 controls but tab and line feed, DEL and the C1 controls (0x9b is a one-byte CSI on some terminals).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable_line(value: object) -> str:
    """``value`` as one printable line: line breaks as ``\\n``, other control characters as ``\\xNN``
    (:func:`~agent_release.pipelines.executor.flatten`)."""
    from agent_release.pipelines.executor import flatten

    return flatten(str(value))


def escape_controls(text: str) -> str:
    """``text`` with every control character but tab and line feed shown as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class PrintableFormatter(logging.Formatter):
    """A log formatter whose lines cannot drive the terminal (a logged model answer or URL holding
    ``ESC``); tracebacks keep their line breaks."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_controls(super().format(record))
