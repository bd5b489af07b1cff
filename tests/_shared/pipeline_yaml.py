"""Edit a test project's copy of pipeline.yaml in place, and find the line a mistake should be reported at."""

from __future__ import annotations

from pathlib import Path


def edit(project: Path, old: str, new: str) -> None:
    """Replace the first ``old`` in ``project/pipeline.yaml`` with ``new`` (``old`` must be there)."""
    path = project / "pipeline.yaml"
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def line_of(project: Path, needle: str) -> int:
    """1-based number of the first line of ``project/pipeline.yaml`` containing ``needle``."""
    for i, line in enumerate((project / "pipeline.yaml").read_text().splitlines(), start=1):
        if needle in line:
            return i
    raise AssertionError(needle)
