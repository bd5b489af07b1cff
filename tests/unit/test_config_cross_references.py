"""A mistake found by a whole-config check (a cross-reference between sections) names its key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_release.pipelines.config import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "  dataset: golden\n",
            "  dataset: goldne\n",
            "evaluate.dataset: 'goldne' is not declared under datasets",
        ),
        (
            "  package_group: support-model\n\ndeploy:",
            "  package_group: other-group\n\ndeploy:",
            "train.package_group: 'other-group' differs from deploy.package_group",
        ),
    ],
)
def test_a_cross_reference_mistake_names_its_key_and_line(old: str, new: str, expected: str) -> None:
    text = (ROOT / "pipeline.yaml").read_text()
    assert old in text
    edited = text.replace(old, new, 1)
    line = next(i for i, ln in enumerate(edited.splitlines(), 1) if new.splitlines()[0] == ln)
    with pytest.raises(ConfigError) as info:
        parse_config(edited, source="p.yaml")
    # It used to be "p.yaml: (top level): ..." with no line to go to.
    assert str(info.value).startswith(f"p.yaml:{line}: {expected}"), str(info.value)
