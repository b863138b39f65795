"""The one way an exception becomes a line of text: a status reason, a log line, a CLI error."""

from __future__ import annotations


def describe(exc: BaseException, *, typed: bool = True) -> str:
    """``exc`` as one line: ``Type: first line of its message``, or its type alone when it has none.

    ``typed=False`` leaves the type out when there is a message, for errors whose message was written
    for people (a CLI error, a directory's own diagnosis)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    if not line:
        return type(exc).__name__
    return f"{type(exc).__name__}: {line}" if typed else line


__all__ = ["describe"]
