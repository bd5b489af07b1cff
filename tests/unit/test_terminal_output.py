"""Stored and outside text printed by the CLI can neither drive the terminal nor be read as rich markup.

A ledger reason (`rollback --reason $'\\e]52;c;...\\a'` is accepted: it is one line), a step's error, a
variant name or a model's words may hold ANSI/OSC escape sequences or text that looks like rich markup.
They are shown escaped; the ledger keeps the exact text it hashed (security review, session 21).
"""

from __future__ import annotations

import json
import logging
import unicodedata
from pathlib import Path

from _shared.cli import run_cli
from _shared.console import captured_console

from agent_release.pipelines.executor import ExecutionStore
from agent_release.pipelines.local_backend import LocalBackend
from agent_release.pipelines.status import render_status
from agent_release.pipelines.terminal_text import PrintableFormatter, escape_controls
from agent_release.steps.promote_challenger import PromotionReport

# Write the clipboard (OSC 52), clear the screen, a one-byte CSI, overprint with a carriage return.
HOSTILE = "clip \x1b]52;c;cm0gLXJmIH4=\x07 clear \x1b[2J csi \x9b2J bell \x07 cr \rspoofed"
MARKUP = "KeyError: '[/red]' [link=https://evil.example]click[/link] [bold]"
TERMINAL_BYTES = ("\x1b", "\x07", "\x9b", "\r")


def _no_terminal_control(text: str) -> None:
    for byte in TERMINAL_BYTES:
        assert byte not in text, (byte, text)


def test_run_console_shows_errors_and_reasons_escaped_not_as_markup() -> None:
    run_console, out = captured_console(terminal=True, interactive=False, width=400)
    run_console.step_event("train_model", "failed", {"error": MARKUP + HOSTILE})
    run_console.step_event("train_model", "skipped", {"reason": HOSTILE})
    run_console.eval_progress({"variant": "v[/x]\x1b[2J", "done": 1, "total": 1})
    run_console.bake_progress("canary [/x]", 1.0)(2.0, 3.0, HOSTILE)
    text = out.getvalue()
    # Rich's own colours are there; none of the hostile sequences, and no hyperlink (OSC 8).
    assert "\x1b[31m" in text or "\x1b[1;31m" in text
    assert "\x1b]" not in text and "\x1b[2J" not in text
    assert "'[/red]' [link=https://evil.example]click[/link] [bold]" in text
    assert "\\x1b]52;c;cm0gLXJmIH4=\\x07" in text and "\\x9b2J" in text and "\\nspoofed" in text
    assert "v[/x]\\x1b[2J: 1/1 cases" in text and "canary [/x]: after 2s" in text


def test_a_promotion_summary_keeps_its_weights() -> None:
    """`[challenger=1, champion=0]` vanished from the step line: rich read it as an unknown style."""
    run_console, out = captured_console(terminal=True, interactive=False, width=400)
    report = PromotionReport.model_construct(
        action="promoted", reason="all guards green", final_weights={"champion": 0.0, "challenger": 1.0}
    )
    run_console.step_event("promote_challenger", "succeeded", {"output": report, "seconds": 1.0})
    assert "PROMOTED: all guards green [challenger=1, champion=0]" in out.getvalue()


def test_status_shows_stored_text_escaped(capsys: object) -> None:
    data = {
        "state_dir": "/tmp/x\x1b[2J",
        "tracking_uri": "sqlite:///m.db [/bold]",
        "last_execution": {"id": "e1", "status": "failed", "decision": None, "error": MARKUP + HOSTILE},
        "endpoints": [
            {
                "name": "ep[/x]",
                "status": "InService",
                "variants": [
                    {
                        "name": "v\x1b]0;title\x07",
                        "shadow": False,
                        "role": "champion",
                        "weight": 1.0,
                        "share": 1.0,
                        "package_version": 1,
                        "approval_status": "Approved",
                    }
                ],
            }
        ],
    }
    render_status(data)
    text = capsys.readouterr().out  # type: ignore[attr-defined]
    _no_terminal_control(text)
    assert "error: " + MARKUP in text
    assert "ep[/x]" in text and "v\\x1b]0;title\\x07" in text and "sqlite:///m.db [/bold]" in text


def test_audit_list_escapes_a_hostile_reason_and_json_keeps_it_exact(tmp_path: Path) -> None:
    home = tmp_path / "home"
    backend = LocalBackend(home)
    try:
        backend.append_audit("user:ops\x1b[8m", "rollback", "support/v2", HOSTILE)
    finally:
        backend.close()
    listing = run_cli(["audit"], tmp_path, home)
    assert listing.returncode == 0, listing.stderr
    _no_terminal_control(listing.stdout)
    assert "user:ops\\x1b[8m rollback support/v2: clip \\x1b]52;c;cm0gLXJmIH4=\\x07 clear" in listing.stdout
    as_json = run_cli(["audit", "--json"], tmp_path, home)
    assert json.loads(as_json.stdout)["reason"] == HOSTILE
    assert run_cli(["audit", "verify"], tmp_path, home).returncode == 0


def test_status_of_a_failed_execution_with_markup_in_its_error(tmp_path: Path) -> None:
    """Before: `error: MarkupError: closing tag '[/red]' ...` and exit 1 instead of the status."""
    home = tmp_path / "home"
    store = ExecutionStore(home)
    try:
        execution_id = store.create("p", tmp_path / "pipeline.yaml", "name: p\n", [])
        store.finish(execution_id, "failed", error=MARKUP + HOSTILE)
    finally:
        store.close()
    proc = run_cli(["status"], tmp_path, home)
    assert proc.returncode == 0, proc.stderr
    _no_terminal_control(proc.stdout)
    assert "error: " + MARKUP in proc.stdout


def test_log_lines_cannot_drive_the_terminal() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "answer=<%s>", (HOSTILE,), None)
    line = PrintableFormatter("%(levelname)s %(message)s").format(record)
    _no_terminal_control(line)
    assert line.startswith("WARNING answer=<clip \\x1b]52;c;")


def test_escape_controls_escapes_every_control_character_but_tab_and_line_feed() -> None:
    # Unicode's own list of control characters (category Cc: C0, DEL, C1) is the oracle, one code point at a
    # time, so each end of the ranges is checked (a log line keeps its line breaks and tabs).
    for code in range(0x100):
        char = chr(code)
        control = unicodedata.category(char) == "Cc" and char not in "\t\n"
        assert escape_controls(f"a{char}b") == (f"a\\x{code:02x}b" if control else f"a{char}b"), hex(code)
