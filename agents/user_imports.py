"""Import what a user names in pipeline.yaml by import path (``pkg.module:attr``): scorers, toolsets.

Call ``import_user_object("scorer", "my_pkg.scoring:politeness")``. Anything that goes wrong becomes one
:class:`UserImportError` line naming the kind and the path: a missing module or attribute, and also a module
that raises or exits while it runs its top level. A module written as a script (argparse at import,
``sys.exit``) would otherwise end agent-release with the module's own exit code and usage text, which reads
as agent-release's. What the module printed on stderr is passed on only when the import succeeds.
:func:`call_user_factory` does the same for the factory the path names, when it is called.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
from collections.abc import Callable
from typing import Any


class UserImportError(ValueError):
    """A user import path could not be imported; ``str()`` is one line."""


def import_user_object(kind: str, path: str) -> Any:
    """The object ``attr`` of module ``pkg.module`` named by ``path`` (``pkg.module:attr``)."""
    module_name, _, attr = path.partition(":")
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            module = importlib.import_module(module_name)
    except SystemExit as exc:
        raise UserImportError(
            f"{kind} '{path}' cannot be imported: module '{module_name}' exited on import (exit code {exc.code})"
        ) from None
    except Exception as exc:  # a user module may raise anything while it runs its top level
        reason = str(exc) if isinstance(exc, ImportError) else f"{type(exc).__name__}: {exc}"
        raise UserImportError(f"{kind} '{path}' cannot be imported: {reason}") from None
    sys.stderr.write(printed.getvalue())
    if not hasattr(module, attr):
        raise UserImportError(f"{kind} '{path}' cannot be imported: module '{module_name}' has no '{attr}'")
    return getattr(module, attr)


def call_user_factory(kind: str, path: str, factory: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``factory(*args, **kwargs)``, with a ``sys.exit`` in it (argparse too) as a :class:`UserImportError`.

    Otherwise ``validate``, ``run`` and ``compile`` ended with the factory's exit code and nothing said (exit
    0 for ``sys.exit(0)``), or with its usage text as if it were agent-release's. What else it raises passes
    through to the caller, which names the path.
    """
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            result = factory(*args, **kwargs)
    except SystemExit as exc:
        raise UserImportError(
            f"{kind} '{path}' cannot be built: its factory exited (exit code {exc.code})"
        ) from None
    sys.stderr.write(printed.getvalue())
    return result
