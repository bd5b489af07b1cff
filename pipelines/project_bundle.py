"""The project files a remote step needs (datasets, suites, tool data, prompts) as one reproducible tarball.

The SageMaker steps run in a container that has the ``agent_release`` package but not the user's project
directory. The compiler packs every file ``pipeline.yaml`` references, at its path relative to the file's
directory, into a gzip tarball whose bytes depend only on the files' contents (sorted names, zero mtimes),
so its content-addressed S3 key, and with it the pipeline definition, stays the same between compiles.

Usage::

    data = build_bundle(loaded)             # bytes; upload to s3://bucket/.../bundle-<sha256>.tar.gz
    extract_bundle(data, workdir)           # in the remote step; then load workdir/pipeline.yaml
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

from agent_release.agents.builder import is_project_data
from agent_release.pipelines.config import ConfigError, LoadedConfig


def _refuse_outside(loaded: LoadedConfig, key: str, path: Path, *, by_link: bool) -> None:
    """Raise :class:`ConfigError` unless ``path`` (and, ``by_link``, only what it resolves to) is in the
    project: the SageMaker target ships nothing from elsewhere on the machine."""
    try:
        if not by_link:
            path.relative_to(loaded.base_dir)
        path.resolve().relative_to(loaded.base_dir)
    except ValueError:
        where = "links outside" if by_link else "is outside"
        raise ConfigError(
            f"{loaded.path}: {key}: {path} {where} the project directory; the SageMaker target ships only "
            "files under the directory of pipeline.yaml"
        ) from None


def _members(loaded: LoadedConfig) -> dict[str, Path]:
    """Bundle name -> file. A name is the path as pipeline.yaml spells it (a symlink keeps its own name:
    the remote step looks the file up there); what it points at must be inside the project."""
    members: dict[str, Path] = {}
    for key, path in loaded.referenced_files(keep_links=True):
        _refuse_outside(loaded, key, path, by_link=False)
        if not path.exists():
            raise ConfigError(f"{loaded.path}: {key}: file not found: {path}")
        # A directory (tool data, possibly `.`) ships as the tool-data hash reads it: no hidden files (.env,
        # .git, .agent-release) and no MLflow stores; everything else of it is what the step may read.
        files = sorted(p for p in path.rglob("*") if is_project_data(p, path)) if path.is_dir() else [path]
        for file in files:
            _refuse_outside(loaded, key, file, by_link=True)
            members[str(file.relative_to(loaded.base_dir))] = file
    return members


def build_bundle(loaded: LoadedConfig) -> bytes:
    """A gzip tarball of every referenced file; identical files give identical bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in sorted(_members(loaded).items()):
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    compressed = io.BytesIO()
    with gzip.GzipFile(fileobj=compressed, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return compressed.getvalue()


def extract_bundle(data: bytes, destination: Path) -> list[str]:
    """Unpack a bundle into ``destination`` (refusing paths that escape it); returns the member names."""
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(destination, filter="data")
        return tar.getnames()
