"""What people read, in their own language: gettext catalogues through Babel, one mechanism for the
web, the command line, the PDA agent, the notifiers' messages and the profile errors.

The language in force is the one :func:`using` set for this thread or request (the web sets the
viewer's), else the process's (:func:`set_default`: the branch's ``branch.locale`` for what the
branch sends, ``LANG`` for the command line), else Simplified Chinese: the staff who read vipsense
every day read Chinese.  A message is marked with :func:`gettext` (``_``) where it is made, with
``{name}`` fields filled by ``str.format`` after translation, so that a translation may move them::

    _("card {epc} is not registered").format(epc=epc)

A string made at import time (a settings field's help, a table heading) is marked with
:func:`lazy_gettext` and translated each time it is shown.  A vendor plugin keeps its own catalogue
beside its code and makes its own ``_`` from :class:`Catalogue`; a message its catalogue lacks falls
back to the core's, then to the text as written.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime, tzinfo
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import dates, numbers
from babel.support import LazyProxy, NullTranslations, Translations

#: The languages vipsense ships: Simplified Chinese, the default, and English, the language the
#: messages are written in (so English needs no catalogue of its own).
LOCALES = ("zh_CN", "en")
DEFAULT_LOCALE = "zh_CN"
#: What each language is called in itself: the account setting's choices and the pages' ``lang``.
LANGUAGE_NAMES = {"zh_CN": "简体中文", "en": "English"}
HTML_LANG = {"zh_CN": "zh-CN", "en": "en"}

DOMAIN = "vipsense"
CATALOGUES = Path(__file__).resolve().parent / "locale"

_process_locale = DEFAULT_LOCALE
_current: ContextVar[str | None] = ContextVar("vipsense_locale", default=None)


class UnknownLocale(ValueError):
    """A locale vipsense has no catalogue for."""


def normalise(name: str) -> str | None:
    """``zh_CN``, ``zh-CN``, ``zh_CN.UTF-8``, ``zh-Hans`` and ``zh`` are Simplified Chinese; ``en``,
    ``en_US.UTF-8`` and ``en-GB`` are English; anything else is None."""
    base = name.strip().split(".")[0].split("@")[0].replace("-", "_")
    if not base:
        return None
    language = base.split("_")[0].lower()
    if language == "zh":
        # Traditional Chinese (zh_TW, zh_HK, zh_Hant) is not Simplified: no catalogue for it yet
        rest = base[3:].lower()
        return "zh_CN" if rest in ("", "cn", "sg", "hans", "hans_cn") else None
    if language == "en":
        return "en"
    return None


def from_environment(environ: Mapping[str, str] | None = None) -> str:
    """The command line's language, as gettext chooses it: ``LANGUAGE`` (a colon-separated list),
    then ``LC_ALL``, ``LC_MESSAGES`` and ``LANG``.  Unset, ``C`` and ``POSIX`` name no language,
    so the default, Chinese, is used."""
    env = os.environ if environ is None else environ
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        for name in env.get(variable, "").split(":"):
            if name in ("C", "POSIX") or name.startswith("C."):
                return DEFAULT_LOCALE
            locale = normalise(name)
            if locale:
                return locale
    return DEFAULT_LOCALE


def set_default(locale: str) -> None:
    """The process's language: the command line sets it from ``LANG``, a running branch from its
    profile."""
    global _process_locale
    _process_locale = _checked(locale)


def current() -> str:
    """The language in force here: this request's or thread's, else the process's."""
    return _current.get() or _process_locale


@contextlib.contextmanager
def using(locale: str | None) -> Iterator[str]:
    """Messages made inside are in ``locale`` (None: the process's), in this thread or request only."""
    token = _current.set(None if locale is None else _checked(locale))
    try:
        yield current()
    finally:
        _current.reset(token)


def _checked(locale: str) -> str:
    if locale not in LOCALES:
        raise UnknownLocale(f"{locale!r}: one of {', '.join(LOCALES)}")
    return locale


class Catalogue:
    """One translation domain kept in ``directory/<locale>/LC_MESSAGES/<domain>.mo``: the core's, or a
    vendor plugin's.  A plugin's catalogue falls back to the core's."""

    def __init__(self, directory: Path | str, domain: str, fallback: Catalogue | None = None) -> None:
        self.directory = Path(directory)
        self.domain = domain
        self.fallback = fallback

    def translations(self, locale: str) -> NullTranslations:
        return _load(self.directory, self.domain, locale, self.fallback)

    def gettext(self, message: str) -> str:
        return self.translations(current()).gettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self.translations(current()).ngettext(singular, plural, n)

    def lazy_gettext(self, message: str) -> Any:
        """A string that is translated each time it is used, for text made at import time."""
        return LazyProxy(self.gettext, message, enable_cache=False)


@cache
def _load(directory: Path, domain: str, locale: str, fallback: Catalogue | None) -> NullTranslations:
    loaded = Translations.load(str(directory), [locale], domain)
    if fallback is not None:
        loaded.add_fallback(fallback.translations(locale))
    return loaded


CORE = Catalogue(CATALOGUES, DOMAIN)
gettext = CORE.gettext
ngettext = CORE.ngettext
lazy_gettext = CORE.lazy_gettext
_ = gettext


# --- formats: the staff's own, in the branch's zone --------------------------------------------


def _moment(ts: float, zone: tzinfo | str | None) -> datetime:
    tz = ZoneInfo(zone) if isinstance(zone, str) else zone
    return datetime.fromtimestamp(ts, tz)


def format_datetime(ts: float, zone: tzinfo | str | None = None, locale: str | None = None) -> str:
    """``2026年12月7日 10:36`` in Chinese, ``Dec 7, 2026 10:36`` in English: the date as the locale
    writes it and the time on a 24-hour clock, in ``zone`` (None: this machine's)."""
    moment = _moment(ts, zone)
    loc = locale or current()
    day = dates.format_skeleton("yMMMd", moment, locale=loc)
    return f"{day} {dates.format_skeleton('Hm', moment, locale=loc)}"


def format_date(ts: float, zone: tzinfo | str | None = None, locale: str | None = None) -> str:
    """``2026年12月7日`` / ``Dec 7, 2026``."""
    return dates.format_skeleton("yMMMd", _moment(ts, zone), locale=locale or current())


def format_time(ts: float, zone: tzinfo | str | None = None, locale: str | None = None) -> str:
    """``10:36`` in both: staff read a 24-hour clock."""
    return dates.format_skeleton("Hm", _moment(ts, zone), locale=locale or current())


def format_number(value: float, locale: str | None = None) -> str:
    """``1,234,567`` with the locale's grouping."""
    return numbers.format_decimal(value, locale=locale or current())


def name_key(name: str) -> tuple[str, str]:
    """Sort Chinese names as a Chinese list is sorted, by pinyin (王 wang after 李 li), and Latin
    names among them by their letters.  pypinyin is imported on first use: it takes a fifth of a
    second, which a command that sorts nothing should not pay."""
    from pypinyin import Style, lazy_pinyin

    return (" ".join(lazy_pinyin(name, style=Style.TONE3)).lower(), name)
