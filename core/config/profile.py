"""The branch profile: what a branch's YAML file means, as frozen attrs classes.

``load_profile(path, host)`` reads the YAML (with ``extends:``), structures it, checks cross
references, and raises :class:`ProfileError` with every problem found, each as
``file:line: key.path: message``.  It opens no device.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import zoneinfo
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from .. import i18n
from ..api import PluginContext
from ..clock import Clock
from ..crypto import key_problem, profile_cipher
from ..didyoumean import closest, suggest
from ..i18n import _, lazy_gettext
from ..model import SUSPECT_REASONS, DeliveryResult, Notification, RejectReason, Role, Staff, tier_label
from ..output import Output
from ..pipeline.policy import ALERT_REASONS
from ..pluginhost import Kind, PluginHost, PluginType
from . import sections
from .errors import ConfigError, ProfileError, in_file_order
from .structure import INVALID, Structurer
from .types import Duration, Secret
from .yamlload import KeyPath, LoadedYaml, format_path, load_profile_yaml

DEFAULT_TIERS = ("standard", "gold", "platinum", "diamond")
#: What the default tiers are called, in the language in force when shown; a profile may name these
#: and its own tiers in each language (``tiers: [{code: gold, names: {zh_CN: 金卡, en: Gold}}]``).
#: What the kinds of item are called in a message.
_KIND_NAMES = {
    Kind.READER: lazy_gettext("reader"),
    Kind.STORE: lazy_gettext("store"),
    Kind.NOTIFIER: lazy_gettext("notifier"),
    Kind.UPLINK: lazy_gettext("uplink"),
}


def _kind_name(kind: Kind) -> str:
    return str(_KIND_NAMES[kind])


TEN_MINUTES = Duration(600)
DEFAULT_STORE_TIMEOUT = Duration(0.5)  #: a store's ``timeout:``: the longest wait for one answer
#: a store's ``start_grace:``: how long arrivals wait for a store that is still opening
DEFAULT_START_GRACE = Duration(10)
TWENTY_MINUTES = Duration(1200)
FIVE_MINUTES = Duration(300)
HALF_A_YEAR = Duration(180 * 86400)  #: MLPS asks for at least 6 months of logs
SUSPECT_ROLES = frozenset({Role.BRANCH_MANAGER, Role.HEAD_OFFICE})


def _positive(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if not value > 0:  # also rejects NaN
        raise ValueError(_("must be greater than 0, got {value:g}").format(value=float(value)))


@functools.lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    """The IANA zone names this machine knows ("localtime" is the host's zone, not a name)."""
    return frozenset(zoneinfo.available_timezones() - {"localtime"})


def host_timezone(
    environ: Mapping[str, str] = os.environ,
    localtime: Path = Path("/etc/localtime"),
    timezone_file: Path = Path("/etc/timezone"),
) -> str:
    """The IANA name of this machine's time zone: from ``TZ`` (``Asia/Shanghai``, ``:Asia/Shanghai``
    or a path into a zoneinfo directory), else the zone ``/etc/localtime`` links to, else Debian's
    ``/etc/timezone``, else UTC.  A ``TZ`` that is no IANA name (``CST-8``) is passed over."""
    candidates = [environ.get("TZ", "").removeprefix(":")]
    with contextlib.suppress(OSError):
        candidates.append(os.readlink(localtime))  # one link: the name chosen, not what it aliases
    with contextlib.suppress(OSError, UnicodeDecodeError):
        candidates.append(timezone_file.read_text(encoding="utf-8").strip())
    for candidate in candidates:
        name = candidate.rsplit("zoneinfo/", 1)[-1]
        if name in _time_zones():
            return name
    return "UTC"


def _timezone(inst: Any, attribute: attrs.Attribute, value: str) -> None:
    if value in _time_zones():
        return
    by_lower = {z.lower(): z for z in _time_zones()}  # "asia/shanghai" is meant as Asia/Shanghai
    close = closest(value.lower(), by_lower)
    meant = _("; did you mean {meant!r}?").format(meant=by_lower[close]) if close else ""
    message = _("unknown time zone {value!r}{suggestion} (an IANA name such as Asia/Shanghai or UTC)")
    raise ValueError(message.format(value=value, suggestion=meant))


def _locale(inst: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is None or value in i18n.LOCALES:
        return
    meant = _meant_locale(value)
    hint = _("; did you mean {meant!r}?").format(meant=meant) if meant else ""
    message = _("unknown language {value!r}{suggestion} (one of {choices})")
    raise ValueError(message.format(value=value, suggestion=hint, choices=", ".join(i18n.LOCALES)))


#: How people name the two languages when they do not write a locale code.
_LANGUAGE_WORDS = {
    "zh_CN": (
        "chinese",
        "cn",
        "chs",
        "zhcn",
        "zh_hans",
        "mandarin",
        "simplified",
        "中文",
        "简体中文",
        "汉语",
    ),
    "en": ("english", "eng", "en_us", "en_gb", "us", "uk", "英文", "英语"),
}


def _meant_locale(value: str) -> str | None:
    """The locale ``value`` was probably meant as: ``zh-CN``, ``zh_cn``, ``chinese``, ``cn`` and
    ``中文`` mean ``zh_CN``; ``english`` and ``en-US`` mean ``en``; a near miss of a code its code."""
    text = str(value).strip()
    meant = i18n.normalise(text)
    if meant:
        return meant
    word = text.lower().replace("-", "_").replace(" ", "_")
    for locale, words in _LANGUAGE_WORDS.items():
        if word in words or word.replace("_", "") in words:
            return locale
    return closest(text, i18n.LOCALES)


@attrs.frozen
class BranchInfo:
    id: str
    name: str
    #: IANA name of the branch's time zone; by default this machine's (see :func:`host_timezone`)
    timezone: str = attrs.field(factory=host_timezone, validator=_timezone)
    #: the language of the branch's pages and messages (``zh_CN`` or ``en``); unset, the web follows
    #: each viewer's browser and the branch's messages the language of its environment (``LANG``)
    locale: str | None = attrs.field(default=None, validator=_locale)


@attrs.frozen
class PresenceSettings:
    """How raw reads become arrivals; starting values from ``presence.md`` §6."""

    min_reads: int = attrs.field(default=2, validator=_positive)  #: reads needed inside ``window``
    window: Duration = attrs.field(default=Duration(0.5), validator=_positive)
    min_rssi: float | None = None  #: reads weaker than this (dBm) do not count; reads without RSSI do
    reentry_suppress: Duration = TEN_MINUTES  #: no second greeting for the same card within this
    depart_after: Duration = attrs.field(default=Duration(2.0), validator=_positive)


def _data_key(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A data key comes from the secrets file (or the environment), never from the profile's own text,
    and is long enough to be a key (``vipsense keys new`` makes one)."""
    for secret in value if isinstance(value, tuple) else (value,):
        if secret is None:
            continue
        if not secret.source:
            raise ValueError(
                _("a data key is a secret: write !secret NAME and keep the key in the secrets file")
            )
        problem = key_problem(secret.reveal())
        if problem:
            raise ValueError(problem)


def _audit_key(inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """The audit key comes from the secrets file (or the environment), never from the profile's own
    text, and is long enough to be a key."""
    if value is None:
        return
    if not value.source:
        raise ValueError(
            _("the audit key is a secret: write !secret audit_key and keep the key in the secrets file")
        )
    if len(value.reveal().strip()) < 32:
        raise ValueError(
            _(
                "the audit key needs at least 32 characters; make one with"
                " python -c 'import secrets; print(secrets.token_hex(32))'"
            )
        )


@attrs.frozen
class PrivacySettings:
    """Consent, retention and encryption at rest (``privacy-security.md`` §2 PIPL Art. 26/29, §3
    retention, §1 and §4 item 7: C2 data encrypted at rest)."""

    #: visits (a whereabouts record) older than this are purged, by ``vipsense visits purge`` or daily
    #: while the branch runs; 0 keeps them for ever
    visit_retention: Duration = HALF_A_YEAR
    #: cards are issued only to customers who gave separate consent to recognition at the door
    consent_required: bool = True
    #: the key that encrypts ID and mobile numbers in the identity store (``!secret data_key``); unset,
    #: a key is made once for the data directory, in ``data.key`` beside the data, and ``vipsense check``
    #: notes that a branch names its own (:func:`vipsense.crypto.local_key_note`, docs/cards.md)
    data_key: Secret | None = attrs.field(default=None, validator=_data_key, repr=False)
    #: keys used before, still needed to read values written under them until ``vipsense keys rotate``
    retired_data_keys: tuple[Secret, ...] = attrs.field(default=(), validator=_data_key, repr=False)
    #: the key of the audit log's hash chain (HMAC-SHA256), ``!secret audit_key``; unset, a key is made
    #: once for the data directory, in ``audit.key`` beside the log, and ``vipsense check`` warns
    audit_key: Secret | None = attrs.field(default=None, validator=_audit_key, repr=False)
    #: the directory the audit chain's signed anchors are appended to: write-once (WORM) storage the
    #: branch cannot rewrite; relative to the file that sets it; unset, ``<data dir>/audit-anchors``
    audit_anchors: str | None = None
    #: an anchor at least every this many audit entries, and at least this often while entries come
    audit_anchor_every: int = attrs.field(default=1000, validator=_positive)
    audit_anchor_interval: Duration = attrs.field(default=TEN_MINUTES, validator=_positive)
    #: refused query-API calls (no valid token, or over the token's rate) audited one by one per source
    #: within ``audit_refusal_window``; beyond that they are answered the same and counted into one entry
    audit_refusals: int = attrs.field(default=20, validator=_positive)
    #: and from all addresses together, so that many addresses (an IPv6 prefix) cannot multiply it
    audit_refusals_total: int = attrs.field(default=200, validator=_positive)
    audit_refusal_window: Duration = attrs.field(default=Duration(60), validator=_positive)


@attrs.frozen
class SecuritySettings:
    """Suspect-card detection (``privacy-security.md`` §5, countermeasure 5)."""

    #: a card that arrived at another branch less than this long ago is suspect; 0 turns it off.
    #: Needs a store shared by the branches that records sightings (``card_seen``).
    min_travel: Duration = TWENTY_MINUTES


@attrs.frozen
class SyncSettings:
    """Keep a local replica of the central store, so the branch works without the centre."""

    source: str  #: id of the central store (a store that can list its cards and customers)
    target: str  #: id of the local replica (a store that can be replaced atomically)
    interval: Duration = attrs.field(default=FIVE_MINUTES, validator=_positive)  #: while running
    #: copy only cards valid at this branch (no allowed branches, or this one) and their customers
    this_branch_only: bool = True


@attrs.frozen
class RetrySettings:
    """A notifier item's ``retry:``: capped exponential backoff between delivery attempts, owned by
    the core.  Attempts go on until the notification expires (``notification_ttl``)."""

    first: Duration = attrs.field(default=Duration(1), validator=_positive)  #: wait after the first failure
    max: Duration = attrs.field(default=Duration(15), validator=_positive)  #: the wait doubles up to this

    def __attrs_post_init__(self) -> None:
        if self.max < self.first:
            first, cap = float(self.first), float(self.max)
            raise ValueError(
                _("max ({max:g}s) must not be shorter than first ({first:g}s)").format(max=cap, first=first)
            )


@attrs.frozen
class ItemConfig:
    """One entry of ``readers:``, ``stores:`` or ``notifiers:``."""

    kind: Kind
    id: str
    type: str
    settings: Any
    timeout: Duration | None = None  #: stores only: longest wait for an answer
    start_grace: Duration | None = None  #: stores only: how long arrivals wait while it opens
    retry: RetrySettings = RetrySettings()  #: notifiers only: backoff between delivery attempts


@attrs.frozen
class Escalation:
    """Who is told instead when a rule's recipient has not acknowledged within ``after``, or could
    not be reached at all (their notification failed for good)."""

    after: Duration
    to: Role
    via: tuple[str, ...]

    def __attrs_post_init__(self) -> None:
        if float(self.after) <= 0:
            raise ValueError(_("after must be longer than 0s"))


@attrs.frozen
class RouteRule:
    """Send one kind of event to everyone holding a role, through the named notifiers."""

    to: Role
    via: tuple[str, ...]
    #: ``unresolved``: a card no identity store could look up (nobody knows whose it is yet)
    event: Literal["arrival", "rejected", "suspect", "unresolved"] = "arrival"
    tiers: tuple[str, ...] = ()  #: empty: every tier
    reasons: tuple[RejectReason, ...] = ()  #: rejected events only; empty: every reason
    escalate: Escalation | None = None  #: the fallback when the recipient does not acknowledge


@attrs.frozen
class _TierEntry:
    """One ``tiers:`` entry written as a mapping: its code and its names by language."""

    code: str
    names: dict[str, str] = attrs.Factory(dict)


def _read_tiers(st: Structurer, raw: Any) -> tuple[Any, dict[str, dict[str, str]]]:
    """The tier codes (``INVALID`` when an entry has an error, so routing rules are not also blamed)
    and the names the profile gives them, reporting each bad entry at its own key path."""
    if raw is INVALID:
        return INVALID, {}
    codes: list[str] = []
    names: dict[str, dict[str, str]] = {}
    ok = True
    for i, entry in enumerate(raw):
        at: KeyPath = ("tiers", i)
        given: dict[str, str] | None = {}
        if isinstance(entry, str | int | float) and not isinstance(entry, bool):
            code = str(entry)
        elif isinstance(entry, dict):
            read = st.structure_attrs(entry, _TierEntry, at)
            given = None if read is INVALID else _tier_names(st, at, read.names)
            if given is None:
                ok = False
                continue
            code = read.code
        elif entry is INVALID:
            ok = False
            continue
        else:
            message = _("expected a tier code or a mapping such as {example}, got {value!r}")
            st.error(at, message.format(example="{code: gold, names: {zh_CN: 金卡, en: Gold}}", value=entry))
            ok = False
            continue
        if not code.strip():
            st.error(at, _("a tier code may not be empty"))
            ok = False
            continue
        if code in codes:
            message = _("each tier may be listed once: {code!r} is also tiers[{index}]")
            st.error(at, message.format(code=code, index=codes.index(code)))
            ok = False
        codes.append(code)
        if given:
            names[code] = given
    return (tuple(codes) if ok else INVALID), names


def _tier_names(st: Structurer, at: KeyPath, given: dict[str, str]) -> dict[str, str] | None:
    """A tier's ``names:``, each key a language vipsense ships and each name not empty, or None once
    the problems are reported."""
    ok = True
    for locale, name in given.items():
        where = (*at, "names", locale)
        if locale not in i18n.LOCALES:
            meant = _meant_locale(locale)
            hint = _("; did you mean {meant!r}?").format(meant=meant) if meant else ""
            message = _("unknown language {value!r}{suggestion} (one of {choices})")
            st.error(where, message.format(value=locale, suggestion=hint, choices=", ".join(i18n.LOCALES)))
            ok = False
        elif name is INVALID:
            ok = False
        elif not name.strip():
            st.error(where, _("a tier's name may not be empty; write the name, or leave the language out"))
            ok = False
    return {k: v.strip() for k, v in given.items()} if ok else None


@attrs.frozen
class _ProfileYaml:
    """The top-level keys a profile may have (``extends`` is handled while loading), besides the
    sections the layers above declare (:mod:`.sections`; see :func:`_top_level`)."""

    branch: BranchInfo
    readers: list[Any]  #: items are checked against their plugin's settings class
    stores: list[Any]
    notifiers: list[Any] = attrs.Factory(list)
    data_dir: str | None = None
    #: codes, or ``{code: gold, names: {zh_CN: 金卡, en: Gold}}`` entries: read by :func:`_read_tiers`
    tiers: tuple[Any, ...] = DEFAULT_TIERS
    presence: PresenceSettings = PresenceSettings()
    staff: tuple[Staff, ...] = ()
    routing: tuple[RouteRule, ...] = ()
    notification_ttl: Duration = TEN_MINUTES  #: after this a notification is stale, not sent
    privacy: PrivacySettings = PrivacySettings()
    security: SecuritySettings = SecuritySettings()
    sync: SyncSettings | None = None


@functools.lru_cache(maxsize=4)
def _top_level(declared: tuple[tuple[str, type], ...]) -> type:
    """:class:`_ProfileYaml` with the declared sections as optional keys after its own, so a
    declared section reads, and is suggested and listed, like any other."""
    # attrs keeps any annotation as a field's type; its stub asks for a class, not ``X | None``
    extra = {name: attrs.field(default=None, type=cls | None) for name, cls in declared}  # type: ignore[arg-type]
    return attrs.make_class("_ProfileYaml", extra, bases=(_ProfileYaml,), frozen=True)


@attrs.frozen
class Profile:
    source: Path
    branch: BranchInfo
    data_dir: Path
    tiers: tuple[str, ...]
    readers: tuple[ItemConfig, ...]
    stores: tuple[ItemConfig, ...]
    notifiers: tuple[ItemConfig, ...]
    presence: PresenceSettings
    staff: tuple[Staff, ...]
    routing: tuple[RouteRule, ...]
    notification_ttl: Duration
    privacy: PrivacySettings = PrivacySettings()
    security: SecuritySettings = SecuritySettings()
    sync: SyncSettings | None = None
    #: the branch web (status page, console, API), if served: a :class:`vipsense.web.settings.WebSettings`
    #: (the ``web:`` section, declared by the web)
    web: Any = None
    #: where the branch reports, if it does: a :class:`vipsense.uplink.settings.CentreLink` (the
    #: ``centre:`` section, declared by the uplink)
    centre: Any = None
    #: problems that do not stop the branch (a serial device not plugged in), in file order
    warnings: tuple[ConfigError, ...] = ()
    #: each tier's names by language, as the profile gives them (``{"gold": {"zh_CN": "金卡"}}``)
    tier_names: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict, eq=False)

    def tier_name(self, tier: str, locale: str | None = None) -> str:
        """What people call ``tier`` in ``locale`` (None: the language in force): the profile's name
        for it in that language, else the catalogue's for a default tier (金卡 / Gold), else its code.
        Staff read the name; the code stays what the profile, the API and the logs use."""
        loc = locale or i18n.current()
        named = self.tier_names.get(tier, {}).get(loc)
        if named:
            return named
        with i18n.using(loc):
            return tier_label(tier)

    @property
    def profile_dir(self) -> Path:
        return self.source.parent

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        """The branch's time zone (``branch.timezone``)."""
        return zoneinfo.ZoneInfo(self.branch.timezone)

    def plugin_context(
        self,
        item: ItemConfig,
        clock: Clock,
        output: Output,
        report: Callable[[Notification, DeliveryResult], None] | None = None,
        acknowledge: Callable[..., bool] | None = None,
    ) -> PluginContext:
        """The context one item's factory gets (the core's one way of making it): the plugin API
        knows plain values, not the profile."""
        extra: dict[str, Any] = {} if report is None else {"report": report}
        if acknowledge is not None:
            extra["acknowledge"] = acknowledge
        return PluginContext(
            branch_id=self.branch.id,
            branch_name=self.branch.name,
            item_id=item.id,
            data_dir=self.data_dir,
            profile_dir=self.profile_dir,
            clock=clock,
            output=output,
            log=logging.getLogger(f"vipsense.{item.kind.value}.{item.id}"),
            staff={s.id: s for s in self.staff},
            tz=self.tz,
            cipher=profile_cipher(self.privacy.data_key, self.privacy.retired_data_keys, self.data_dir),
            **extra,
        )


#: Item keys the core handles itself, so plugin settings classes must not use them.
_CORE_KEYS = {Kind.STORE: ("timeout", "start_grace"), Kind.NOTIFIER: ("retry",)}


def default_data_dir(branch_id: str) -> Path:
    base = os.environ.get("VIPSENSE_DATA_DIR") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "vipsense"
    )
    return Path(base) / branch_id


class _Checker:
    def __init__(self, st: Structurer, host: PluginHost) -> None:
        self.st = st
        self.host = host

    def items(self, kind: Kind, key: str, raw: list[Any]) -> tuple[ItemConfig, ...]:
        out: list[ItemConfig] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(raw):
            path: KeyPath = (key, i)
            if not isinstance(item, dict):
                self.st.error(
                    path, _("expected a mapping with a 'type:' key, got {value!r}").format(value=item)
                )
                continue
            cfg = self.item(kind, path, item)
            if cfg is None:
                continue
            if cfg.id in seen:
                self.st.error(
                    (*path, "id") if "id" in item else path,
                    _("duplicate id {id!r} (also {other}); give each an 'id:'").format(
                        id=cfg.id, other=f"{key}[{seen[cfg.id]}]"
                    ),
                )
                continue
            seen[cfg.id] = i
            out.append(cfg)
        return tuple(out)

    def item(self, kind: Kind, path: KeyPath, item: dict[str, Any]) -> ItemConfig | None:
        core_keys = ("id", "type", *_CORE_KEYS.get(kind, ()))
        ptype = self.plugin_type(kind, path, item, core_keys)
        if ptype is None:
            return None
        item_id = item.get("id", item["type"])
        if item_id is INVALID:
            return None
        if not isinstance(item_id, str) or not item_id:
            self.st.error(
                (*path, "id"), _("expected a non-empty string, got {value!r}").format(value=item_id)
            )
            return None
        settings = self.st.structure_attrs(item, ptype.settings, path, also_known=core_keys)
        timeout = grace = None
        retry = RetrySettings()
        if kind is Kind.STORE:
            timeout, grace = self.store_waits(path, item)
        if kind is Kind.NOTIFIER and "retry" in item:
            retry = self.retry(path, item["retry"])
        if settings is INVALID or timeout is INVALID or retry is INVALID or grace is INVALID:
            return None
        return ItemConfig(kind, item_id, item["type"], settings, timeout, grace, retry)

    def plugin_type(
        self, kind: Kind, path: KeyPath, item: dict[str, Any], core_keys: tuple[str, ...]
    ) -> PluginType | None:
        """The installed type the item's ``type:`` names, or None after saying why there is none."""
        if "type" not in item:
            typo = next((k for k in item if closest(str(k), ["type"])), None)
            if typo is not None:  # one error for the misspelt key, not also "missing 'type'"
                message = _(
                    "unknown key; did you mean 'type'? (known keys: {keys} and the {kind} type's settings)"
                )
                self.st.error((*path, typo), message.format(keys=", ".join(core_keys), kind=_kind_name(kind)))
            else:
                message = _("missing required key 'type' (the {kind} type)")
                self.st.error(path, message.format(kind=_kind_name(kind)))
            return None
        type_name = item["type"]
        if type_name is INVALID:
            return None
        if not isinstance(type_name, str):
            names = ", ".join(sorted(self.host.types[kind])) or _("none")
            message = _("expected a {kind} type name ({names}), got {value!r}")
            self.st.error(
                (*path, "type"), message.format(kind=_kind_name(kind), names=names, value=type_name)
            )
            return None
        available = self.host.types[kind]
        ptype = available.get(type_name)
        if ptype is None:
            self.st.error((*path, "type"), self.no_such_type(kind, type_name))
        return ptype

    def no_such_type(self, kind: Kind, type_name: str) -> str:
        unusable = self.host.unavailable_types[kind].get(type_name)
        if unusable is not None:  # installed, but a module it needs is not
            return unusable.unavailable
        available = self.host.types[kind]
        installed = ", ".join(sorted(available)) or _("none")
        known = [*available, *self.host.unavailable_types[kind]]
        fields = {"kind": _kind_name(kind), "value": type_name, "suggestion": suggest(type_name, known)}
        failed = [p.name for p in self.host.failed_plugins()]
        if failed:
            return _(
                "unknown {kind} type {value!r}{suggestion} (installed {kind} types: {installed}); plugins "
                "that failed to load: {failed} (see 'vipsense plugins')"
            ).format(**fields, installed=installed, failed=", ".join(failed))
        message = _("unknown {kind} type {value!r}{suggestion} (installed {kind} types: {installed})")
        return message.format(**fields, installed=installed)

    def store_waits(self, path: KeyPath, item: dict[str, Any]) -> tuple[Any, Any]:
        """A store item's ``timeout:`` and ``start_grace:``, each ``INVALID`` when reported."""
        timeout = self.st.structure(item.get("timeout", DEFAULT_STORE_TIMEOUT), Duration, (*path, "timeout"))
        if timeout is not INVALID and not timeout > 0:
            timeout = self.st.error((*path, "timeout"), _("must be greater than 0"))
        grace = self.st.structure(
            item.get("start_grace", DEFAULT_START_GRACE), Duration, (*path, "start_grace")
        )
        if grace is not INVALID and not grace >= 0:
            grace = self.st.error((*path, "start_grace"), _("must be 0s or longer"))
        return timeout, grace

    def retry(self, path: KeyPath, raw: Any) -> Any:
        """A notifier item's ``retry:``, or ``INVALID`` when reported."""
        if raw is not INVALID and not isinstance(raw, dict):
            return self.st.error(
                (*path, "retry"),
                _("expected a mapping such as {{first: 1s, max: 15s}}, got {value!r}").format(value=raw),
            )
        return self.st.structure_attrs(raw, RetrySettings, (*path, "retry"))


def load_profile(path: str | Path, host: PluginHost, data_dir: str | Path | None = None) -> Profile:
    """Read and validate a branch profile.  Raises :class:`ProfileError` listing every problem.

    Each part is checked on its own, so one pass reports the errors of every part, including the
    cross-references between the parts that are valid."""
    path = Path(path)
    loaded = load_profile_yaml(path, bounded=True)
    if loaded.data is None:
        raise ProfileError(in_file_order(loaded.errors))
    declared = sections.registered()
    top_level = _top_level(tuple((name, s.settings_class) for name, s in declared.items()))
    st = Structurer(loaded)
    st.errors.extend(loaded.errors)
    top = st.structure_fields(loaded.data, top_level, ())
    if top is INVALID:
        raise ProfileError(in_file_order(st.errors), in_file_order(st.warnings))
    top["tiers"], tier_names = _read_tiers(st, top["tiers"])
    if loaded.incomplete:  # a base is missing: do not also blame the keys it would have supplied
        st.errors = [e for e in st.errors if not (e.path == "" and e in st.missing_keys)]

    chk = _Checker(st, host)
    groups = {}
    for kind, key in ((Kind.READER, "readers"), (Kind.STORE, "stores"), (Kind.NOTIFIER, "notifiers")):
        raw = top[key]
        groups[key] = chk.items(kind, key, raw) if raw is not INVALID else ()
        if raw is not INVALID and not raw and kind is not Kind.NOTIFIER:
            if kind is Kind.READER:
                st.error((key,), _("a branch needs at least one reader"))
            else:
                st.error((key,), _("a branch needs at least one identity store"))
    _check_unique_ids(st, groups, loaded)
    notifier_ids = {n.id for n in groups["notifiers"]}
    if top["notifiers"] is not INVALID:
        notifier_ids |= _raw_ids(top["notifiers"])
    follow_ons = _FollowOns(st, _broken_sections(loaded, top, top_level))
    _check_references(st, follow_ons, top, notifier_ids, loaded.incomplete)
    if top["stores"] is not INVALID and len(groups["stores"]) == len(top["stores"]):
        _check_sync(follow_ons, top["sync"], groups["stores"])
    for section in declared.values():
        if section.check is not None and top[section.name] not in (None, INVALID):
            section.check(top[section.name], path.resolve().parent, _SectionReport(st, section.name))
        # a section may name plugin types (``centre.transport``): ``plugin_types()`` yields them
        for sub, kind, type_name in getattr(top[section.name], "plugin_types", lambda: ())():
            if type_name not in host.types[kind]:
                st.error((section.name, *sub), chk.no_such_type(kind, type_name))
    follow_ons.fold()
    if st.errors:
        raise ProfileError(in_file_order(st.errors), in_file_order(st.warnings))

    source = path.resolve()
    if data_dir is not None:
        ddir = Path(data_dir)
    elif top["data_dir"]:
        ddir = Path(os.path.expanduser(top["data_dir"]))
        if not ddir.is_absolute():
            where = loaded.where(("data_dir",))[0]
            ddir = (Path(where).resolve().parent / ddir).resolve()
    else:
        ddir = default_data_dir(top["branch"].id)
    top["privacy"] = _audit_settings(loaded, top["privacy"])
    return Profile(
        source=source,
        data_dir=ddir,
        readers=groups["readers"],
        stores=groups["stores"],
        notifiers=groups["notifiers"],
        **{
            k: top[k]
            for k in (
                "branch",
                "tiers",
                "presence",
                "staff",
                "routing",
                "notification_ttl",
                "privacy",
                "security",
                "sync",
                *declared,
            )
        },
        warnings=tuple(in_file_order(st.warnings)),
        tier_names=tier_names,
    )


def _audit_settings(loaded: LoadedYaml, privacy: PrivacySettings) -> PrivacySettings:
    """``privacy.audit_anchors`` made absolute, relative to the file that set it."""
    anchors = privacy.audit_anchors
    if anchors:
        folder = Path(os.path.expanduser(anchors))
        if not folder.is_absolute():
            folder = (Path(loaded.where(("privacy", "audit_anchors"))[0]).resolve().parent / folder).resolve()
        privacy = attrs.evolve(privacy, audit_anchors=str(folder))
    return privacy


def audit_note(privacy: PrivacySettings, ddir: Path) -> str | None:
    """What ``vipsense check`` says when the audit key or the anchors are kept in the data directory,
    beside the log they protect (whoever can change the log there can reach them too;
    privacy-security.md §3: protected from overwrite), or None when the profile names both.

    A note, not a profile warning: the demo and tests run on the data directory's key and must start
    without a warning, while the operator checking a real branch's profile learns the trade-off."""
    key, folder_default = ddir / "audit.key", ddir / "audit-anchors"
    if privacy.audit_key is None and not privacy.audit_anchors:
        return _(
            "the audit log's key and anchors are kept in the data directory ({key}, {anchors}), where"
            " whoever can change the log can change them too; a branch sets privacy.audit_key: !secret"
            " audit_key and privacy.audit_anchors: a directory on write-once (WORM) storage"
        ).format(key=key, anchors=folder_default)
    if privacy.audit_key is None:
        return _(
            "no privacy.audit_key: the audit log is chained with a key kept in the data directory ({key}),"
            " where whoever can change the log can read it; a branch sets audit_key: !secret audit_key"
        ).format(key=key)
    if not privacy.audit_anchors:
        return _(
            "no privacy.audit_anchors: the audit log's anchors go to {anchors}, where whoever can"
            " change the log can change them too; a branch names a directory on write-once (WORM) storage"
        ).format(anchors=folder_default)
    return None


def _broken_sections(loaded: LoadedYaml, top: dict[str, Any], top_level: type) -> dict[str, KeyPath]:
    """Top-level sections that are misspelt or failed to structure, each with the key path of its
    own error: ``{"notifiers": ("notifers",)}`` for a misspelt ``notifers:``."""
    names = [f.name for f in attrs.fields(top_level)]
    broken: dict[str, KeyPath] = {name: (name,) for name in names if top.get(name) is INVALID}
    for key in loaded.data:
        meant = closest(str(key), names) if key not in names else None
        if meant is not None and meant not in loaded.data:
            broken.setdefault(meant, (key,))
    return broken


class _FollowOns:
    """Errors that only follow from a broken top-level section, such as every ``via:`` naming a
    notifier when ``notifiers:`` is misspelt.  They are folded into the section's own error, so one
    typo gives one error; references to sound sections are reported as usual."""

    def __init__(self, st: Structurer, broken: dict[str, KeyPath]) -> None:
        self.st = st
        self.broken = broken
        self.held: dict[str, list[ConfigError]] = {}

    def error(self, section: str, path: KeyPath, message: str) -> None:
        """An error that ``section`` being broken would explain."""
        if section in self.broken:
            self.held.setdefault(section, []).append(self.st.loaded.error(path, message))
        else:
            self.st.error(path, message)

    def fold(self) -> None:
        for section, held in self.held.items():
            own = format_path(self.broken[section])
            first = in_file_order(held)[0]
            index = next(
                (
                    i
                    for i, e in enumerate(self.st.errors)
                    if e.path == own or e.path.startswith((f"{own}.", f"{own}["))
                ),
                None,
            )
            anchor = self.st.errors[index] if index is not None else first
            if first.file == anchor.file:
                where = _("line {line}").format(line=first.line)
            else:
                where = f"{first.file}:{first.line}"
            n = len(held)
            if first.path == section:  # about the (missing) section itself: no place worth showing
                if n == 1:
                    note = _("1 error about {section} that follows from it is left out")
                else:
                    note = _("{n} errors about {section} that follow from it are left out")
                note = note.format(n=n, section=section)
            elif n == 1:
                note = _("1 error that follows from it is left out (at {path}, {where})")
                note = note.format(path=first.path, where=where)
            else:
                note = _("{n} errors that follow from it are left out (the first at {path}, {where})")
                note = note.format(n=n, path=first.path, where=where)
            if index is None:  # the section's own error names no key path (e.g. a missing base)
                message = _("the {section!r} section has errors, so {note}").format(
                    section=section, note=note
                )
                self.st.errors.append(attrs.evolve(first, path="", message=message))
            else:
                message = _("{message}; {note}").format(message=anchor.message, note=note)
                self.st.errors[index] = attrs.evolve(anchor, message=message)


class _SectionReport:
    """A declared section's check reporting at key paths inside the section."""

    def __init__(self, st: Structurer, name: str) -> None:
        self.st = st
        self.name = name

    def error(self, path: KeyPath, message: str) -> None:
        self.st.error((self.name, *path), message)

    def warn(self, path: KeyPath, message: str) -> None:
        self.st.warn((self.name, *path), message)


def _raw_ids(items: list[Any]) -> set[str]:
    """Ids of notifier items, even ones whose settings had errors (avoids knock-on errors)."""
    return {str(i.get("id", i.get("type"))) for i in items if isinstance(i, dict)}


def _valid(items: Any) -> list[Any]:
    return [] if items is INVALID else [i for i in items if i is not INVALID]


@attrs.frozen
class _References:
    """What the cross-reference checks read: the structured top level and where to report."""

    st: Structurer
    follow_ons: _FollowOns
    top: dict[str, Any]
    notifier_ids: set[str]  #: every notifier id, including those of notifiers with errors
    incomplete: bool  #: a base profile could not be read

    @property
    def tiers(self) -> Any:
        return self.top["tiers"]

    @property
    def staff(self) -> list[Staff]:
        return _valid(self.top["staff"])

    @property
    def staff_known(self) -> bool:
        """Every ``staff:`` entry is valid, so a role no one holds is really missing."""
        return self.top["staff"] is not INVALID and len(self.staff) == len(self.top["staff"])

    def rules(self) -> list[tuple[KeyPath, RouteRule]]:
        """Each valid routing rule with its key path."""
        routing = self.top["routing"] if self.top["routing"] is not INVALID else ()
        return [(("routing", i), rule) for i, rule in enumerate(routing) if rule is not INVALID]


#: A check of one routing rule, given its key path (``("routing", 2)``).
_RuleCheck = Callable[[_References, KeyPath, RouteRule], None]


def _check_staff_ids(refs: _References) -> None:
    first: dict[str, int] = {}
    for i, person in enumerate(refs.top["staff"] if refs.top["staff"] is not INVALID else ()):
        if person is INVALID:
            continue
        if person.id in first:
            refs.st.error(
                ("staff", i, "id"),
                _("duplicate staff id {id!r} (also {other})").format(
                    id=person.id, other=f"staff[{first[person.id]}]"
                ),
            )
        first.setdefault(person.id, i)


def _check_rule_notifiers(refs: _References, at: KeyPath, rule: RouteRule) -> None:
    vias = [((*at, "via", j), via) for j, via in enumerate(rule.via)]
    if rule.escalate is not None:
        vias += [((*at, "escalate", "via", j), via) for j, via in enumerate(rule.escalate.via)]
    known = ", ".join(sorted(refs.notifier_ids)) or _("none")
    for where, via in vias:
        if via not in refs.notifier_ids:
            message = _("no notifier has id {id!r}{suggestion} (notifier ids: {ids})").format(
                id=via, suggestion=suggest(via, refs.notifier_ids), ids=known
            )
            refs.follow_ons.error("notifiers", where, message)


def _check_rule_tiers(refs: _References, at: KeyPath, rule: RouteRule) -> None:
    tiers = refs.tiers
    for j, tier in enumerate(rule.tiers):
        if tiers is not INVALID and tier not in tiers:
            refs.follow_ons.error(
                "tiers",
                (*at, "tiers", j),
                _("unknown tier {tier!r}{suggestion} (tiers: {tiers})").format(
                    tier=tier, suggestion=suggest(tier, tiers), tiers=", ".join(tiers)
                ),
            )


def _check_rule_reasons(refs: _References, at: KeyPath, rule: RouteRule) -> None:
    if rule.reasons and rule.event != "rejected":
        refs.st.error((*at, "reasons"), _("'reasons' applies only to 'event: rejected'"))


def _check_rejected_recipient(refs: _References, at: KeyPath, rule: RouteRule) -> None:
    if rule.event == "rejected" and rule.to is Role.CLIENT_MANAGER:
        refs.st.error((*at, "to"), _("rejected cards go to branch staff, not to a client manager"))


def _check_unresolved_rule(refs: _References, at: KeyPath, rule: RouteRule) -> None:
    if rule.event != "unresolved":
        return
    if rule.to is Role.CLIENT_MANAGER:
        refs.st.error(
            (*at, "to"),
            _(
                "an unresolved card's customer is not known, so there is no client manager to tell; "
                "send it to the lobby manager"
            ),
        )
    if rule.tiers:
        refs.st.error((*at, "tiers"), _("an unresolved card has no tier yet; remove 'tiers'"))


def _check_suspect_recipient(refs: _References, at: KeyPath, rule: RouteRule) -> None:
    if rule.event == "suspect" and rule.to not in SUSPECT_ROLES:
        refs.st.error(
            (*at, "to"),
            _(
                "suspect cards go only to the branch manager or head office, never to anyone who "
                "would greet the holder"
            ),
        )


def _check_escalation(refs: _References, at: KeyPath, rule: RouteRule) -> None:
    if rule.escalate is None:
        return
    if rule.event == "suspect" and rule.escalate.to not in SUSPECT_ROLES:
        refs.st.error(
            (*at, "escalate", "to"), _("suspect cards escalate only to the branch manager or head office")
        )
    if rule.escalate.to is Role.CLIENT_MANAGER and rule.event != "arrival":
        refs.st.error((*at, "escalate", "to"), _("rejected and suspect cards go to branch staff"))
    ttl = refs.top.get("notification_ttl")
    if ttl is not INVALID and ttl is not None and float(rule.escalate.after) >= float(ttl):
        refs.follow_ons.error(
            "notification_ttl",
            (*at, "escalate", "after"),
            _("must be shorter than notification_ttl ({ttl:g}s), or the fallback is never told").format(
                ttl=float(ttl)
            ),
        )


def _check_roles_staffed(refs: _References, at: KeyPath, rule: RouteRule) -> None:
    """Someone in ``staff:`` holds each role a rule (or its escalation) tells; client managers are
    each customer's own, so they are not listed."""
    if not refs.staff_known:
        return
    targets = [((*at, "to"), rule.to)]
    if rule.escalate is not None:
        targets.append(((*at, "escalate", "to"), rule.escalate.to))
    for where, role in targets:
        if role is not Role.CLIENT_MANAGER and not any(p.role is role for p in refs.staff):
            message = _("no one in 'staff:' has role {role!r}").format(role=role.value)
            refs.follow_ons.error("staff", where, message)


#: Each routing rule's checks, in the order their errors are reported.
_RULE_CHECKS: tuple[_RuleCheck, ...] = (
    _check_rule_notifiers,
    _check_rule_tiers,
    _check_rule_reasons,
    _check_rejected_recipient,
    _check_unresolved_rule,
    _check_suspect_recipient,
    _check_escalation,
    _check_roles_staffed,
)


def _check_each_rule(refs: _References) -> None:
    for at, rule in refs.rules():
        for check in _RULE_CHECKS:
            check(refs, at, rule)


def _check_branch_manager_alerted(refs: _References) -> None:
    """Lost, revoked and suspect cards must reach the branch manager.  Skipped when a broken rule, or
    an unreadable base, might have held the alert rule."""
    routing = refs.top["routing"]
    if refs.incomplete or routing is INVALID or len(_valid(routing)) < len(routing):
        return
    alerted: set[RejectReason] = set()
    for rule in routing:
        if rule.event == "rejected" and rule.to is Role.BRANCH_MANAGER:
            alerted |= set(rule.reasons or set(RejectReason) - SUSPECT_REASONS)
    missing = [r.value for r in sorted(ALERT_REASONS, key=lambda r: r.value) if r not in alerted]
    if missing:
        refs.follow_ons.error(
            "routing",
            ("routing",),
            _("{reasons} cards must alert the branch manager; add a rule such as {example}").format(
                reasons=_joined(missing),
                example="{event: rejected, reasons: [lost, revoked], to: branch_manager, via: [NOTIFIER-ID]}",
            ),
        )
    if not any(r.event == "suspect" and r.to is Role.BRANCH_MANAGER for r in routing):
        refs.follow_ons.error(
            "routing",
            ("routing",),
            _(
                "suspect cards (cloned or misused) must alert the branch manager; add a rule such as "
                "{example}"
            ).format(example="{event: suspect, to: branch_manager, via: [NOTIFIER-ID]}"),
        )


def _joined(words: list[str]) -> str:
    """``lost and revoked``: codes joined as the language in force lists them."""
    if len(words) < 2:
        return "".join(words)
    return _("{first} and {last}").format(first=", ".join(words[:-1]), last=words[-1])


#: The cross-reference checks, in the order their errors are reported.
_REFERENCE_CHECKS: tuple[Callable[[_References], None], ...] = (
    _check_staff_ids,
    _check_each_rule,
    _check_branch_manager_alerted,
)


def _check_references(
    st: Structurer, follow_ons: _FollowOns, top: dict[str, Any], notifier_ids: set[str], incomplete: bool
) -> None:
    """Cross-references between parts.  Checks that depend on a part with errors are skipped, so a
    broken entry is reported once, not again through everything that refers to it; errors that a
    misspelt or broken section would explain go to ``follow_ons``."""
    refs = _References(st, follow_ons, top, notifier_ids, incomplete)
    for check in _REFERENCE_CHECKS:
        check(refs)


def _check_sync(follow_ons: _FollowOns, sync: SyncSettings | None, stores: tuple[ItemConfig, ...]) -> None:
    if sync is None or sync is INVALID:
        return
    ids = [s.id for s in stores]
    for key in ("source", "target"):
        name = getattr(sync, key)
        if name not in ids:
            known = ", ".join(ids) or _("none")
            message = _("no store has id {id!r}{suggestion} (store ids: {ids})").format(
                id=name, suggestion=suggest(name, ids), ids=known
            )
            follow_ons.error("stores", ("sync", key), message)
    if sync.source == sync.target:
        follow_ons.st.error(("sync", "target"), _("the replica must be another store than the source"))


def _check_unique_ids(st: Structurer, groups: dict[str, tuple[ItemConfig, ...]], loaded: Any) -> None:
    """Status and logs name devices by id, so an id may appear once across all three lists."""
    owner: dict[str, str] = {}
    for key, items in groups.items():
        raw = loaded.data.get(key) or []
        for cfg in items:
            index = next(
                i for i, r in enumerate(raw) if isinstance(r, dict) and r.get("id", r.get("type")) == cfg.id
            )
            if cfg.id in owner:
                explicit = "id" in raw[index]
                st.error(
                    (key, index, "id") if explicit else (key, index),
                    (
                        _(
                            "id {id!r} is already used by {other}; ids must be unique across readers, stores "
                            "and notifiers"
                        )
                        if explicit
                        else _(
                            "id {id!r} is already used by {other}; ids must be unique across readers, stores "
                            "and notifiers; give this one an 'id:'"
                        )
                    ).format(id=cfg.id, other=owner[cfg.id]),
                )
            else:
                owner[cfg.id] = f"{key}[{index}]"
