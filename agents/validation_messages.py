"""One line for a pydantic ``ValidationError`` (v2, or v1 as Great Expectations raises it).

``first_error(exc)`` is ``"field.path: message"`` of its first error (the message alone when the error has no
field), and ``" (+N more)"`` when there are others: what a user needs to find the mistake, where pydantic's
own text runs over several lines and starts with the model's name.
"""

from __future__ import annotations

from typing import Any


def first_error(exc: Any) -> str:
    """``exc``'s first error as ``field.path: message (+N more)``; ``exc`` is a pydantic ValidationError."""
    errors = exc.errors()
    first = errors[0]
    field = ".".join(str(part) for part in first.get("loc", ()))
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{field + ': ' if field else ''}{first.get('msg')}{more}"
