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


def config_error(project: Path) -> str:
    """The one-line ``ConfigError`` that ``validate``'s checks raise for ``project/pipeline.yaml``."""
    import pytest

    from agent_release.pipelines.config import ConfigError, check_referenced_files, load_config
    from agent_release.pipelines.config_checks import check_config

    loaded = load_config(project / "pipeline.yaml")
    check_referenced_files(loaded)
    with pytest.raises(ConfigError) as info:
        check_config(loaded)
    return str(info.value)
