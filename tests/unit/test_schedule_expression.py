"""``schedule.cron`` is checked by ``validate`` against EventBridge Scheduler's rules, not first by ``upsert``."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_release.pipelines.config import ConfigError, parse_config
from agent_release.pipelines.schedule_expression import schedule_problem

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "expression",
    [
        "cron(0 3 ? * MON *)",
        "cron(0/15 * * * ? *)",
        "cron(0 12 L * ? *)",
        "cron(0 10 ? * 6#3 *)",
        "cron(15 10 ? * MON-FRI 2026-2030)",
        "cron(0 8 1,15 JAN,JUL ? *)",
        "rate(1 day)",
        "rate(5 minutes)",
        "rate(12 hours)",
        "at(2026-12-24T10:00:00)",
        # The ends of every numeric range EventBridge takes (minutes 0-59, hours 0-23, day-of-month 1-31,
        # month 1-12, day-of-week 1-7 with 1 = SUN, year 1970-2199).
        "cron(0 0 1 1 ? 1970)",
        "cron(59 23 31 12 ? 2199)",
        "cron(0 0 ? * 1 *)",
        "cron(0 0 ? * 7 *)",
    ],
)
def test_expressions_eventbridge_accepts_pass(expression: str) -> None:
    assert schedule_problem(expression) is None


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("0 3 * * MON", "expected cron(...), rate(...) or at(...)"),  # a Unix crontab line
        ("cron(0 3 ? * MON)", "expected 6 fields (minutes hours day-of-month month day-of-week year), got 5"),
        ("cron(0 3 * * MON *)", "use ? in exactly one of day-of-month and day-of-week"),
        ("cron(0 3 ? * ? *)", "use ? in exactly one of day-of-month and day-of-week"),
        ("cron(61 3 ? * MON *)", "minutes 61 is outside 0-59"),
        ("cron(0 24 ? * MON *)", "hours 24 is outside 0-23"),
        ("cron(0 3 ? 13 MON *)", "month 13 is outside 1-12"),
        ("cron(0 0 0 * ? *)", "day-of-month 0 is outside 1-31"),
        ("cron(0 0 32 * ? *)", "day-of-month 32 is outside 1-31"),
        ("cron(0 0 ? * 0 *)", "day-of-week 0 is outside 1-7"),
        ("cron(0 0 ? * 8 *)", "day-of-week 8 is outside 1-7"),
        ("cron(0 0 1 1 ? 1969)", "year 1969 is outside 1970-2199"),
        ("cron(0 0 1 1 ? 2200)", "year 2200 is outside 1970-2199"),
        ("cron(0 3 ? * FUN *)", "day-of-week 'FUN' has characters a cron field does not allow"),
        # EventBridge's day-of-week takes no increments, and with # only one expression.
        ("cron(0 3 ? * 1/2 *)", "day-of-week '1/2' has characters a cron field does not allow"),
        ("cron(0 3 ? * 3#1,6#3 *)", "day-of-week with # takes one expression only"),
        ("rate(1 days)", "write rate(1 day)"),
        ("rate(2 hour)", "write rate(2 hours)"),
        ("rate(0 minutes)", "the value must be at least 1"),
        ("rate(2 weeks)", "unknown unit 'weeks'"),
        ("rate(daily)", "expected rate(N minutes|hours|days)"),
        ("at(tomorrow)", "expected a date and time as yyyy-mm-ddThh:mm:ss"),
    ],
)
def test_mistakes_are_named(expression: str, problem: str) -> None:
    found = schedule_problem(expression)
    assert found is not None and problem in found, found


def test_validate_names_the_key_and_line_of_a_bad_schedule() -> None:
    text = (ROOT / "pipeline.yaml").read_text()
    assert "cron: cron(0 3 ? * MON *)" in text
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if "cron: cron(" in ln)
    with pytest.raises(ConfigError) as info:
        parse_config(text.replace("cron(0 3 ? * MON *)", "cron(0 3 * * MON *)"), source="p.yaml")
    # It used to pass validate and compile; upsert then failed at the Scheduler API.
    assert str(info.value) == (
        f"p.yaml:{line}: schedule.cron: cron(0 3 * * MON *): use ? in exactly one of day-of-month and day-of-week"
    )
