"""Check an EventBridge Scheduler expression (``schedule.cron``) before anything is created in AWS.

``schedule_problem("cron(0 3 ? * MON *)")`` is None; for a mistake it is one line saying what is wrong.
The rules are EventBridge Scheduler's: ``cron(minutes hours day-of-month month day-of-week year)`` with a
``?`` in exactly one of day-of-month and day-of-week, ``rate(N unit)`` with a singular unit for 1 and a
plural one otherwise, ``at(yyyy-mm-ddThh:mm:ss)``. Without this check ``validate`` and ``compile`` accept a
typo that only ``upsert`` reports, from the Scheduler API.
"""

from __future__ import annotations

import re
from datetime import datetime

_MONTHS = "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC"
_DAYS = "SUN|MON|TUE|WED|THU|FRI|SAT"
# (field name, lowest, highest, names allowed in place of numbers, special characters allowed)
_CRON_FIELDS: tuple[tuple[str, int, int, str, str], ...] = (
    ("minutes", 0, 59, "", ",-*/"),
    ("hours", 0, 23, "", ",-*/"),
    ("day-of-month", 1, 31, "", ",-*?/LW"),
    ("month", 1, 12, _MONTHS, ",-*/"),
    # No / here: EventBridge's day-of-week takes , - * ? L # only.
    ("day-of-week", 1, 7, _DAYS, ",-*?L#"),
    ("year", 1970, 2199, "", ",-*/"),
)
_RATE_UNITS = {"minute", "hour", "day"}


def schedule_problem(expression: str) -> str | None:
    """Why ``expression`` is not an EventBridge Scheduler expression, or None when it is one."""
    text = expression.strip()
    match = re.fullmatch(r"(cron|rate|at)\((.*)\)", text)
    if match is None:
        return "expected cron(...), rate(...) or at(...)"
    kind, inner = match.group(1), match.group(2).strip()
    if kind == "cron":
        return _cron_problem(inner)
    if kind == "rate":
        return _rate_problem(inner)
    try:
        datetime.strptime(inner, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return f"at({inner}): expected a date and time as yyyy-mm-ddThh:mm:ss"
    return None


def _cron_problem(inner: str) -> str | None:
    fields = inner.split()
    if len(fields) != len(_CRON_FIELDS):
        names = " ".join(name for name, *_ in _CRON_FIELDS)
        return f"cron({inner}): expected 6 fields ({names}), got {len(fields)}"
    for value, (name, low, high, words, specials) in zip(fields, _CRON_FIELDS, strict=True):
        problem = _cron_field_problem(value, name, low, high, words, specials)
        if problem is not None:
            return f"cron({inner}): {problem}"
    if "#" in fields[4] and "," in fields[4]:
        return f"cron({inner}): day-of-week with # takes one expression only (not a list like 3#1,6#3)"
    if (fields[2] == "?") == (fields[4] == "?"):
        return f"cron({inner}): use ? in exactly one of day-of-month and day-of-week"
    return None


def _cron_field_problem(value: str, name: str, low: int, high: int, words: str, specials: str) -> str | None:
    allowed = re.escape(specials)
    pattern = rf"([0-9{allowed}]|{words})+" if words else rf"[0-9{allowed}]+"
    if not re.fullmatch(pattern, value.upper()):
        return f"{name} {value!r} has characters a cron field does not allow"
    for number in re.findall(r"\d+", value):
        # After / comes a step, after # the week of the month: neither is a value of the field.
        if re.search(rf"[/#]{number}(?!\d)", value):
            continue
        if not low <= int(number) <= high:
            return f"{name} {number} is outside {low}-{high}"
    return None


def _rate_problem(inner: str) -> str | None:
    match = re.fullmatch(r"(\d+)\s+([a-z]+)", inner)
    if match is None:
        return f"rate({inner}): expected rate(N minutes|hours|days)"
    count, unit = int(match.group(1)), match.group(2)
    if count < 1:
        return f"rate({inner}): the value must be at least 1"
    singular = unit.removesuffix("s")
    if singular not in _RATE_UNITS:
        return f"rate({inner}): unknown unit {unit!r} (minutes, hours or days)"
    expected = singular if count == 1 else f"{singular}s"
    if unit != expected:
        return f"rate({inner}): write rate({count} {expected})"
    return None
