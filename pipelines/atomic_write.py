"""Write a file so that readers see the old content or the new, never a half-written one.

Call :func:`write_text_atomically` for outputs a user or another process reads (HTML reports, compiled
pipeline definitions): a failure part-way (disk full, Ctrl-C) leaves the previous file untouched.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temporary file beside it and ``os.replace``.

    Creates missing parent directories. The file gets the mode an ordinary write would give it: the existing
    file's, else 0666 less the umask (``mkstemp`` makes it 0600, which would hide a report from the
    group). Raises ``OSError`` as the file system does, ``NotADirectoryError`` naming a parent that is a
    file; the temporary file is removed on any failure, so nothing is left behind.

    A symlink is written through: the file it points to is replaced, the link stays. A FIFO, a device or a
    terminal (``-o /dev/stdout``) is written to as it is, as a shell redirection would; replacing it put a
    regular file in its place (as root, even over ``/dev/full``), and there is no old content to keep.
    """
    if _is_special(path):
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        return
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    for parent in (path.parent, *path.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                # mkdir(exist_ok=True) would report "File exists", which does not say what is wrong.
                raise NotADirectoryError(20, f"{parent} is not a directory", str(parent))
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _is_special(path: Path) -> bool:
    """Whether ``path`` (its symlinks followed) exists and is neither a regular file nor a directory."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # absent, a dangling link, or unreadable: the ordinary path says what is wrong
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _mode_for(path: Path) -> int:
    """The permission bits ``path`` has, or those a new file gets under the process's umask."""
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read from /proc where it can be; os.umask can only read it by setting it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # briefly a common value rather than 0, should another thread create a file now
    os.umask(mask)
    return mask
