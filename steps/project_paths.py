"""Paths from pipeline.yaml, resolved the same way by ``validate`` and by every step.

``project_path(base_dir, "datasets/golden.jsonl")`` is the file under the project directory;
``project_path(base_dir, "~/prompts/support.txt")`` is under the user's home; an absolute path stays as it
is. ``LoadedConfig.resolve`` (what ``validate`` checks) and the steps (what ``run`` reads) both call it, so
a path that passes ``validate`` is the path ``run`` opens.
"""

from __future__ import annotations

from pathlib import Path


def project_path(base_dir: Path, relative: str) -> Path:
    """``relative`` with ``~`` expanded, under ``base_dir`` unless it is absolute (symlinks are kept)."""
    path = Path(relative).expanduser()
    return path if path.is_absolute() else base_dir / path
