"""Texts the branch keeps and shows later: a device's state reason, a plugin's load failure, a stage's
last error.  One is made where something happens (a store cannot open) and read much later, by the
log in English and by each viewer of the status page in their own language, so it cannot be
translated where it is made.

A :class:`Text` is a ``str`` holding the English (what logs, comparisons and files see), that also
keeps its marked message and fields; :func:`translated` shows it in the language in force::

    reason = Text(lazy_gettext("cannot open: {reason}"), reason=describe(exc))
    log.error("store %s: %s", store_id, reason)  # English
    translated(reason)  # "无法打开：..." for a Chinese viewer

Plain strings (a plugin's own reason, an exception's message) pass through :func:`translated` as
they are."""

from __future__ import annotations

from typing import Any

from . import i18n


class Text(str):
    """The English of a marked message with its fields filled, translatable when shown."""

    _message: Any
    _fields: dict[str, object]

    def __new__(cls, message: Any, /, **fields: object) -> Text:
        """``message``: a :func:`~vipsense.i18n.lazy_gettext` message (so it is in the catalogue);
        ``fields``: its ``{name}`` values, themselves texts or anything ``str`` shows."""
        with i18n.using("en"):
            english = str(message).format(**{k: translated(v) for k, v in fields.items()})
        made = super().__new__(cls, english)
        made._message = message
        made._fields = fields
        return made

    def shown(self) -> str:
        """In the language in force (the request's, else the process's)."""
        return str(self._message).format(**{k: translated(v) for k, v in self._fields.items()})

    def __reduce__(self) -> tuple[Any, ...]:  # a copy (pickle, deepcopy) keeps the English only
        return (str, (str(self),))


def translated(value: object) -> str:
    """``value`` in the language in force when it is a :class:`Text`, else as ``str`` shows it."""
    if isinstance(value, Text):
        return value.shown()
    return "" if value is None else str(value)


def error_text(exc: BaseException) -> str:
    """An exception's message for a screen: translated when it was raised with a :class:`Text`
    (``str(exc)`` stays English for answers and logs), else ``str(exc)``."""
    if len(exc.args) == 1 and isinstance(exc.args[0], Text):
        return exc.args[0].shown()
    return str(exc)


def joined(parts: list[Any], separator: Any) -> Text | str:
    """``parts`` joined by ``separator`` (a lazy message such as ``"; "``), each translated when shown."""
    if not parts:
        return ""
    fields = {f"p{i}": p for i, p in enumerate(parts)}
    return _Joined(separator, **fields)


class _Joined(Text):
    """Several texts joined: the separator translated too (Chinese uses ``；``)."""

    def __new__(cls, separator: Any, /, **fields: object) -> _Joined:
        with i18n.using("en"):
            english = str(separator).join(translated(v) for v in fields.values())
        made = str.__new__(cls, english)
        made._message = separator
        made._fields = fields
        return made

    def shown(self) -> str:
        return str(self._message).join(translated(v) for v in self._fields.values())


__all__ = ["Text", "error_text", "joined", "translated"]
