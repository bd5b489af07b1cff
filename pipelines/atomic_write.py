"""Write a file so that readers see the old content or the new, never a half-written one.

Call :func:`write_text_atomically` for outputs a user or another process reads (HTML reports, compiled
pipeline definitions): a failure part-way (disk full, Ctrl-C) leaves the previous file untouched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temporary file beside it and ``os.replace``.

    Creates missing parent directories. Raises ``OSError`` as the file system does; the temporary file is
    removed on any failure, so nothing is left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
