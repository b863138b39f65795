"""Suggestions ("did you mean ...?") for names a person typed: profile keys, plugin types, commands.

Below every layer that reports a misspelling, so the profile and the plugin host share one rule.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from .i18n import _


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The choice ``word`` is most probably a misspelling of, if any is close enough."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def suggest(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` to fill a message's ``{suggestion}`` field, or ``""`` when nothing is
    close.  In the language in force; the name suggested stays as written, since it is what to type."""
    meant = closest(word, choices)
    return _("; did you mean {meant!r}?").format(meant=meant) if meant else ""


__all__ = ["closest", "suggest"]
