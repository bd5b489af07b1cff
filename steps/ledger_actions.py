"""The audit ledger's action names for traffic and approvals, and what the ledger says about a shift.

Kept apart from :mod:`agent_release.steps.promote_challenger` (which writes these entries) so that
``agent-release status`` can read a shift's state from the ledger without importing the promotion step.

Usage::

    shift = shift_state(backend.list_audit(), execution_id)
    if shift.state == "overtaken":
        print(f"audit #{shift.entry.seq}: {shift.entry.actor} {shift.entry.action}")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from agent_release.steps.backend import AuditEntry, Frozen

__all__ = [
    "AUDIT_BOOTSTRAP_APPROVAL",
    "AUDIT_DECISION",
    "AUDIT_NO_CHANGE",
    "AUDIT_PROMOTE",
    "AUDIT_REJECT",
    "AUDIT_RESUME",
    "AUDIT_ROLLBACK",
    "AUDIT_SHADOW",
    "AUDIT_WEIGHTS",
    "TRIGGER_ERROR",
    "ShiftState",
    "acted_on_since",
    "shift_state",
]

AUDIT_WEIGHTS = "weights"
AUDIT_ROLLBACK = "rollback"
AUDIT_PROMOTE = "promote"
AUDIT_REJECT = "reject"
AUDIT_DECISION = "decision"
AUDIT_NO_CHANGE = "no_change"
AUDIT_RESUME = "resume"
AUDIT_SHADOW = "shadow"
# The one approval no gate decided: a group's first champion, by the training step's bootstrap or by
# `agent-release package register --approve`.
AUDIT_BOOTSTRAP_APPROVAL = "approve_bootstrap"

# The entries that change an endpoint's traffic or approvals.
TRAFFIC_ACTIONS = (AUDIT_PROMOTE, AUDIT_ROLLBACK, AUDIT_WEIGHTS)
# The ``trigger`` of the rollback a shift records when an error or an interruption (Ctrl-C, SIGTERM) stopped
# it: not an outcome of the release, so a resumed execution walks the schedule again.
TRIGGER_ERROR = "error"


def acted_on_since(
    entries: Sequence[AuditEntry], endpoint: str, execution_id: str | None, seq: int
) -> AuditEntry | None:
    """The first of ``entries`` after ``seq`` that changed ``endpoint``'s traffic or approvals on behalf of
    someone else than ``execution_id`` (a release manager's promote or rollback, another run), if any."""
    return next(
        (
            e
            for e in entries
            if e.seq > seq
            and e.subject.startswith(f"{endpoint}/")
            and e.execution_id != execution_id
            and e.action in TRAFFIC_ACTIONS
        ),
        None,
    )


class ShiftState(Frozen):
    """Where an execution's traffic shift stands by the ledger.

    ``state``: ``none`` (it changed no traffic), ``finished`` (its last traffic entry promoted, or a guard
    rolled back), ``restored`` (an error or an interruption stopped it and traffic went back to the champion:
    a resume walks the schedule again from its first step), ``stopped`` (it changed weights and stopped
    between steps) or ``overtaken`` (after it stopped, someone else changed the endpoint's traffic or
    approvals: ``entry``). ``entry`` is otherwise the execution's own last traffic entry (None for ``none``).
    """

    state: Literal["none", "finished", "restored", "stopped", "overtaken"]
    entry: AuditEntry | None = None


def shift_state(entries: Sequence[AuditEntry], execution_id: str) -> ShiftState:
    """Where ``execution_id``'s traffic shift stands, read from the ledger's ``entries`` (in seq order)."""
    own = [e for e in entries if e.execution_id == execution_id and e.action in TRAFFIC_ACTIONS]
    if not own:
        return ShiftState(state="none")
    # The promotion step resumes past a rollback of its own error (it is not an outcome), so such a shift
    # has not ended unless an outcome precedes it (e.g. Ctrl-C while a guard's rollback was being recorded):
    # reading it as finished told the release manager a resume would shift nothing.
    outcome = next(
        (e for e in reversed(own) if e.action in (AUDIT_PROMOTE, AUDIT_ROLLBACK) and not _after_error(e)),
        None,
    )
    if outcome is not None:
        return ShiftState(state="finished", entry=outcome)
    last = own[-1]
    restored = _after_error(last)
    endpoint = last.subject.split("/", 1)[0]
    overtaken = acted_on_since(entries, endpoint, execution_id, last.seq)
    if overtaken is not None:
        return ShiftState(state="overtaken", entry=overtaken)
    return ShiftState(state="restored" if restored else "stopped", entry=last)


def _after_error(entry: AuditEntry) -> bool:
    """Whether ``entry`` is the rollback a shift records when an error or an interruption stopped it."""
    return entry.action == AUDIT_ROLLBACK and entry.evidence.get("trigger") == TRIGGER_ERROR
