"""The centre profile: what the VIP service centre's YAML file means, as frozen attrs classes.

``load_centre_profile(path)`` reads it with the branch profile's own loader (``extends:``, ``!secret``
from ``secrets.yaml`` beside the file, file:line errors with the key path and a did-you-mean) and
raises :class:`~vipsense.config.errors.ProfileError` listing every problem.  It opens nothing.

The ``web:`` section is the branch web's :class:`~vipsense.web.settings.WebSettings`, found through
the section registry (:mod:`vipsense.config.sections`) as the branch profile finds it: the centre
layer sits below the web in the layers, so it names the section, never imports the web.
"""

from __future__ import annotations

import functools
import os
import zoneinfo
from pathlib import Path
from typing import Any

import attrs

from ..config import sections
from ..config.errors import ProfileError, in_file_order
from ..config.profile import _data_key, _locale, _SectionReport, _timezone, default_data_dir
from ..config.structure import INVALID, Structurer
from ..config.types import Secret
from ..config.yamlload import load_profile_yaml
from ..crypto import LOCAL_KEY_FILE, LocalKeyFile
from ..i18n import _
from ..storage.audit import ANCHOR_DIR, AuditLog, data_dir_key
from ..storage.auditanchors import AnchorPolicy, anchor_file

DEFAULT_ZONE = "Asia/Shanghai"
DATABASE_FILE = "centre.sqlite3"


_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def _site_id(inst: Any, attribute: attrs.Attribute, value: str) -> None:
    """Ids name folders, headers and audit entries: what a branch id may be (vipsense.centre.keys)."""
    if not value or len(value) > 64 or not set(value) <= _ID_CHARS:
        message = _(
            "an id is 1 to 64 lower-case letters, digits, '-', '_' or '.', e.g. sh-lujiazui; got {value!r}"
        )
        raise ValueError(message.format(value=value))


@attrs.frozen
class CentreSettings:
    """The ``centre:`` section.  Its ``id``, ``name``, ``timezone`` and ``locale`` are what a branch
    profile's ``branch:`` says of a branch, so the web's account code reads the centre like a site."""

    name: str
    id: str = attrs.field(default="head-office", validator=_site_id)
    timezone: str = attrs.field(default=DEFAULT_ZONE, validator=_timezone)
    locale: str | None = attrs.field(default=None, validator=_locale)
    #: an SQLAlchemy URL (``postgresql+psycopg://...`` or ``sqlite:///...``), best as ``!secret``
    #: since a PostgreSQL URL holds a password; default: SQLite in the data directory
    database: Secret | None = None
    #: the centre's data key (``!secret``): seals the branches' keys in the database; unset, a key
    #: file in the data directory (as a branch without ``privacy.data_key``)
    key: Secret | None = attrs.field(default=None, validator=_data_key)
    data_dir: str | None = None


@attrs.frozen
class DemoBranch:
    id: str = attrs.field(validator=_site_id)
    name: str
    timezone: str = attrs.field(default=DEFAULT_ZONE, validator=_timezone)


def _positive_int(inst: Any, attribute: attrs.Attribute, value: int) -> None:
    if value < 1:
        raise ValueError(_("must be at least 1, got {value}").format(value=value))


@attrs.frozen
class DemoSettings:
    """The optional ``demo:`` section: branches whose history the demo generator makes up."""

    branches: tuple[DemoBranch, ...] = ()
    days: int = attrs.field(default=90, validator=_positive_int)
    seed: int = 1


@attrs.frozen
class _CentreYaml:
    centre: CentreSettings
    demo: DemoSettings | None = None


@functools.lru_cache(maxsize=4)
def _top_level(web: type | None) -> type:
    """:class:`_CentreYaml` with ``web:`` when the web declared it (it does once importable)."""
    if web is None:
        return _CentreYaml
    extra = {"web": attrs.field(default=None, type=web | None)}  # type: ignore[arg-type]  # attrs wants a class
    return attrs.make_class("_CentreYaml", extra, bases=(_CentreYaml,), frozen=True)


@attrs.frozen
class CentreProfile:
    source: Path
    centre: CentreSettings
    data_dir: Path
    #: the centre web's settings: a :class:`vipsense.web.settings.WebSettings` (``web:``; its
    #: defaults when the section is absent), or None where the web is not installed
    web: Any = None
    demo: DemoSettings | None = None

    @property
    def profile_dir(self) -> Path:
        return self.source.parent

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        """The centre's time zone (``centre.timezone``): its pages' dates and days."""
        return zoneinfo.ZoneInfo(self.centre.timezone)

    @property
    def branch(self) -> CentreSettings:
        """The centre as the branch web's account code names a site (``profile.branch.id``, ``.name``,
        ``.timezone``, ``.locale``): logins, audit entries and page titles read it there."""
        return self.centre

    @property
    def database_url(self) -> str:
        """The database's URL (not for printing: :func:`vipsense.centre.database.mask_url` it)."""
        if self.centre.database is not None:
            return self.centre.database.reveal()
        return f"sqlite:///{self.data_dir / DATABASE_FILE}"


def load_centre_profile(path: str | Path, data_dir: str | Path | None = None) -> CentreProfile:
    """Read and validate a centre profile; :class:`ProfileError` lists every problem, in file order."""
    path = Path(path)
    loaded = load_profile_yaml(path, bounded=True)
    if loaded.data is None:
        raise ProfileError(in_file_order(loaded.errors))
    web = sections.registered().get("web")
    top_level = _top_level(web.settings_class if web is not None else None)
    st = Structurer(loaded)
    st.errors.extend(loaded.errors)
    top = st.structure_fields(loaded.data, top_level, ())
    if top is INVALID:
        raise ProfileError(in_file_order(st.errors), in_file_order(st.warnings))
    if web is not None:
        if top["web"] is None:
            top["web"] = web.settings_class()
        if web.check is not None and top["web"] is not INVALID and "web" in loaded.data:
            web.check(top["web"], path.resolve().parent, _SectionReport(st, "web"))
    demo = top["demo"]
    if demo not in (None, INVALID):
        seen: set[str] = set()
        for i, branch in enumerate(demo.branches):
            if branch.id in seen:
                st.error(("demo", "branches", i, "id"), _("{id!r} is listed twice").format(id=branch.id))
            seen.add(branch.id)
    if st.errors:
        raise ProfileError(in_file_order(st.errors), in_file_order(st.warnings))
    centre: CentreSettings = top["centre"]
    if data_dir is not None:
        ddir = Path(data_dir)
    elif centre.data_dir:
        ddir = Path(os.path.expanduser(centre.data_dir))
        if not ddir.is_absolute():
            where = loaded.where(("centre", "data_dir"))[0]
            ddir = (Path(where).resolve().parent / ddir).resolve()
    else:
        ddir = default_data_dir(centre.id)
    return CentreProfile(source=path.resolve(), centre=centre, data_dir=ddir, web=top.get("web"), demo=demo)


def centre_key(profile: CentreProfile) -> Secret:
    """The centre's data key: ``centre.key``, else the data directory's key file (made on first use,
    mode 0600), as a branch without ``privacy.data_key`` keeps one; it seals the branches' keys."""
    if profile.centre.key is not None:
        return profile.centre.key
    path = profile.data_dir / LOCAL_KEY_FILE
    return Secret(LocalKeyFile(path).read_or_create()[0], f"file:{path}")


def open_centre_audit(profile: CentreProfile) -> AuditLog:
    """The centre's own hash-chained audit log: ``audit.sqlite3`` in its data directory, keyed with
    the directory's ``audit.key`` and anchored to ``audit-anchors/``, like a branch's without
    ``privacy.audit_key``.  Every writer (the web, the command line) opens it here."""
    ddir = profile.data_dir
    key = data_dir_key(ddir)
    anchors = AnchorPolicy(anchor_file(ddir / ANCHOR_DIR, profile.centre.id))
    return AuditLog(ddir / "audit.sqlite3", keys=(key,) if key is not None else None, anchors=anchors)


__all__ = [
    "CentreProfile",
    "CentreSettings",
    "DemoBranch",
    "DemoSettings",
    "load_centre_profile",
    "open_centre_audit",
]
