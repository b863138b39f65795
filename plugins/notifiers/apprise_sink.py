"""Tells staff by e-mail or chat through Apprise: one notifier for the many services it knows.

Apprise (``apprise`` on PyPI) sends to a service named by a URL: ``mailtos://user:pass@mail.bank``,
``dingtalk://token/``, ``wecombot://key``, ``json://alerts.bank.internal/vip`` ...  Those URLs hold
the service's credentials, so each is a secret: write it with ``!secret``; it is never logged,
never in ``repr``, and an error names a URL by its index (``urls[1]``) and schema only::

    notifiers:
      - id: chat
        type: apprise
        urls: [!secret branch_chat_url, !secret duty_mailbox_url]
        title: "{branch}: {event} {name}"
        fields: [name, tier, company]

A message leaves the bank through a third party, so it says as little as the webhook's does
(``privacy-security.md`` §1, §2): the text of the SMS pager (:func:`vipsense.sms.render`, which
carries no phone or full ID number) and the listed customer ``fields``, an ID number or mobile
only ever masked (:func:`vipsense.privacy.mask_field`).

Each URL is checked with Apprise when the notifier is made.  A send that fails for any URL raises
``DeliveryFailed(retry=True)``: the outbox tries again later, and a retry goes only to the URLs that
failed, so a mailbox that got the message does not get it twice.  Apprise's own log lines (and
urllib3's, which carry request paths with webhook tokens in them) pass through a filter that hides
every URL and every credential of the configured URLs.

The module is ``apprise_sink``, not ``apprise`` after its type, because a module named ``apprise``
would shadow the library it wraps.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import string
import threading
import time
import urllib.parse
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

import vipsense
from vipsense.api import DeliveryFailed, Duration, Notifier, PluginContext, RegisterType, Secret
from vipsense.i18n import _, lazy_gettext
from vipsense.model import Notification, Visit, event_of
from vipsense.privacy import CUSTOMER_FIELDS, mask_field
from vipsense.sms import render, speaking

INSTALL_HINT = "the apprise notifier needs Apprise: pip install 'vipsense[apprise]'"
DEFAULT_FIELDS = ("name", "tier", "company", "usual_business")
TITLE_PLACEHOLDERS = ("branch", "event", "name", "tier", "time", "reader")
_REMEMBER = 1000  #: notifications whose partly successful delivery is remembered for their retry

#: What a customer field and an event are called in a message.
LABELS = {
    "customer_no": lazy_gettext("Customer no."),
    "name": lazy_gettext("Name"),
    "tier": lazy_gettext("Tier"),
    "company": lazy_gettext("Company"),
    "id_number": lazy_gettext("ID number"),
    "mobile": lazy_gettext("Mobile"),
    "usual_business": lazy_gettext("Usual business"),
    "arrival": lazy_gettext("VIP arrival"),
    "rejected": lazy_gettext("card alert"),
    "suspect": lazy_gettext("suspect card"),
    "unresolved": lazy_gettext("card seen, identity stores not answering"),
}


def _lib() -> Any:
    """Apprise, imported only when an ``apprise`` notifier is made (it loads ~180 service plugins)."""
    try:
        import apprise
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return apprise


# -- keeping the URLs out of logs -------------------------------------------------------------------
_URL = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]{0,30})://[^\s'\"<>]*")


def url_secrets(url: str) -> set[str]:
    """The parts of an Apprise URL that may be credentials: user and password, and every path or
    host token and query value of 6 characters or more that is not a dotted host name or address
    (a bot token, a webhook key).  Each also URL-decoded."""
    out: set[str] = set()
    _, sep, rest = url.partition("://")
    if not sep:
        return {url} if url else out
    out.add(url)
    netloc, _, _ = rest.partition("/")
    if "@" in netloc:
        userinfo = netloc.rpartition("@")[0]
        out.update(p for p in userinfo.split(":") if p)
    path, _, query = rest.partition("?")
    for token in re.split(r"[/@:]", path):
        if len(token) >= 6 and "." not in token:
            out.add(token)
    for _, value in urllib.parse.parse_qsl(query, keep_blank_values=False):
        if len(value) >= 6:
            out.add(value)
    return out | {urllib.parse.unquote(s) for s in out}


class _Redactor(logging.Filter):
    """Hides every URL (down to its schema) and every known credential in a log record."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: list[str] = []
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._secrets = sorted(set(self._secrets) | {s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        text = _URL.sub(lambda m: f"{m.group(1)}://…", text)
        for secret in self._secrets:
            text = text.replace(secret, "******")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot be formatted is left to logging's own handling
            return True
        clean = self.redact(text)
        if clean != text:
            record.msg, record.args = clean, None
        return True


REDACTOR = _Redactor()
#: Loggers that may print a URL or a request path: Apprise's and urllib3's (under requests).
_NOISY = ("apprise", "urllib3.connectionpool")


def _guard_logs() -> None:
    for name in _NOISY:
        logger = logging.getLogger(name)
        if REDACTOR not in logger.filters:
            logger.addFilter(REDACTOR)


# -- settings -------------------------------------------------------------------------------------------
def _as_secrets(value: Any) -> tuple[Secret, ...]:
    if isinstance(value, str | Secret):
        value = [value]
    return tuple(v if isinstance(v, Secret) else Secret(str(v)) for v in value)


def _check_urls(inst: Any, attribute: attrs.Attribute, value: tuple[Secret, ...]) -> None:
    if not value:
        raise ValueError(_("urls needs at least one Apprise URL"))
    for i, url in enumerate(value):
        if not isinstance(url, Secret) or "://" not in url.reveal():
            raise ValueError(
                _("urls[{index}] is not an Apprise URL (schema://...)").format(index=i)
            )  # never the URL


def _check_title(inst: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is None:
        return
    try:
        names = {name for _literal, name, _spec, _conv in string.Formatter().parse(value) if name is not None}
        unknown = sorted(n for n in names if n not in TITLE_PLACEHOLDERS)
        if not unknown:
            value.format(**dict.fromkeys(TITLE_PLACEHOLDERS, "x"))
    except (ValueError, IndexError, KeyError) as exc:
        message = _("title is not a valid template ({error}); use {{branch}}, {{name}} ...")
        raise ValueError(message.format(error=exc)) from None
    if unknown:
        message = _("title: unknown placeholder(s) {unknown}; choose from {choices}")
        raise ValueError(message.format(unknown=unknown, choices=list(TITLE_PLACEHOLDERS)))


def _check_fields(inst: Any, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    unknown = [f for f in value if f not in CUSTOMER_FIELDS]
    if unknown:
        message = _("unknown customer field(s) {unknown}; choose from {choices}")
        raise ValueError(message.format(unknown=unknown, choices=list(CUSTOMER_FIELDS)))


@attrs.frozen
class AppriseSettings:
    #: Apprise URLs, each a secret (``!secret``); shown nowhere, not even in ``repr``
    urls: tuple[Secret, ...] = attrs.field(
        converter=_as_secrets, validator=_check_urls, repr=lambda u: f"<{len(u)} URL(s), hidden>"
    )
    #: None: the branch's language's own (``{branch}: {event} {name}``, ``【{branch}】{event}：{name}``)
    title: str | None = attrs.field(default=None, validator=_check_title)
    fields: tuple[str, ...] = attrs.field(default=DEFAULT_FIELDS, converter=tuple, validator=_check_fields)
    timeout: Duration = Duration(10)  #: one whole send, every URL
    language: Literal["en", "zh", "zh_CN"] | None = None  #: None: the branch's language

    def __attrs_post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(_("timeout must be more than 0"))


# -- the notifier ---------------------------------------------------------------------------------------
class AppriseNotifier(Notifier):
    def __init__(self, settings: AppriseSettings, ctx: PluginContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self.lib = _lib()
        for url in settings.urls:  # before Apprise parses (and logs) any of them
            REDACTOR.add(url_secrets(url.reveal()))
        _guard_logs()
        with warnings.catch_warnings():  # Apprise's PGP support imports imghdr, deprecated since 3.11
            warnings.filterwarnings("ignore", "'imghdr' is deprecated", DeprecationWarning)
            self._services = self._load(settings.urls)
        self._done: OrderedDict[str, set[int]] = OrderedDict()  #: key -> URLs that already have it
        self.sent = 0
        self.failed = 0
        self._health: dict[str, Any] = {"services": [name for name, _ in self._services]}

    def _load(self, urls: tuple[Secret, ...]) -> list[tuple[str, Any]]:
        """One Apprise object per URL, so a retry can skip the URLs that already have the message."""
        asset = self.lib.AppriseAsset(storage_mode="memory")  # no cache files under $HOME
        services: list[tuple[str, Any]] = []
        for i, url in enumerate(urls):
            plugin = self.lib.Apprise.instantiate(url.reveal(), asset=asset)
            if plugin is None:
                schema = url.reveal().partition("://")[0]
                if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,19}", schema):
                    schema = "?"  # not a schema: it could be anything, a password too
                raise ValueError(
                    f"urls[{i}]: Apprise cannot use this {schema}:// URL (unknown service, or a part "
                    f"missing or malformed; see Apprise's documentation of {schema}://)"
                )
            service = self.lib.Apprise(asset=asset)
            service.add(plugin)
            services.append((f"{plugin.service_name} (urls[{i}])", service))
        return services

    def health(self) -> Mapping[str, Any]:
        return {**self._health, "sent": self.sent, "failed": self.failed}

    def title(self, visit: Visit) -> str:
        with speaking(self.settings.language):
            return self._title(visit)

    def _title(self, visit: Visit) -> str:
        values = {
            "branch": self.ctx.branch_name,
            "event": str(LABELS[event_of(visit.kind)]),
            "name": visit.customer.name if visit.customer else "?",
            "tier": visit.tier or "",
            "time": dt.datetime.fromtimestamp(visit.arrived_at, self.ctx.tz).strftime("%H:%M"),
            "reader": visit.arrival.reader_id,
        }
        template = self.settings.title or _("{branch}: {event} {name}")
        return template.format(**values).strip()

    def body(self, notification: Notification) -> str:
        """The pager text, then the listed customer fields (ID number and mobile masked)."""
        with speaking(self.settings.language):
            return self._body(notification)

    def _body(self, notification: Notification) -> str:
        visit = notification.visit
        lines = [render(visit, branch_name=self.ctx.branch_name, staff=self.ctx.staff, tz=self.ctx.tz)]
        if visit.customer is not None:
            fields = [(f, mask_field(f, getattr(visit.customer, f))) for f in self.settings.fields]
            line = _("{label}: {value}")
            shown = [line.format(label=LABELS[f], value=value) for f, value in fields if value]
            if shown:
                lines += ["", *shown]
        return "\n".join(lines)

    def send(self, notification: Notification) -> None:
        lib = self.lib
        visit = notification.visit
        kind = {
            "rejected": lib.NotifyType.WARNING,
            "suspect": lib.NotifyType.FAILURE,
            "unresolved": lib.NotifyType.WARNING,
        }
        notify_type = kind.get(event_of(visit.kind), lib.NotifyType.INFO)
        title, body = self.title(visit), self.body(notification)
        done = self._done.get(notification.key, set())
        deadline = time.monotonic() + float(self.settings.timeout)
        failures: list[str] = []
        for i, (name, service) in enumerate(self._services):
            if i in done:
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                failures.append(f"{name}: not tried, the {float(self.settings.timeout):g}s timeout ran out")
                continue
            ok, why = self._notify(service, title, body, notify_type, remaining)
            if ok:
                done.add(i)
            else:
                failures.append(f"{name}: {why}")
        if failures:
            self._done[notification.key] = done
            self._done.move_to_end(notification.key)
            while len(self._done) > _REMEMBER:
                self._done.popitem(last=False)
            self.failed += 1
            went = f"; delivered to the other {len(done)}" if done else ""
            message = f"Apprise could not deliver to {len(failures)} of {len(self._services)}: "
            message += "; ".join(failures) + went
            self._health["last_error"] = message
            self.ctx.log.warning("not delivered: %s", message)
            raise DeliveryFailed(message, retry=True)
        self._done.pop(notification.key, None)
        self.sent += 1
        self._health["last_error"] = ""
        self._health["last_delivered"] = self.ctx.clock.wall()

    def _notify(
        self, service: Any, title: str, body: str, notify_type: Any, timeout: float
    ) -> tuple[bool, str]:
        """One URL: ``(delivered, why not)``, the reason from Apprise's own log of the call."""
        try:
            with service.notify(
                body=body,
                title=title,
                notify_type=notify_type,
                body_format=self.lib.NotifyFormat.TEXT,
                timeout=timeout,
            ) as result:
                if result:
                    return True, ""
                worst = [e.message for e in result.logs() if e.level in ("WARNING", "ERROR", "CRITICAL")]
                status = result.status.name.lower()
                why = worst[-1] if worst else f"Apprise answered {status}"
                if status == "timeout":
                    why = f"no answer within {timeout:.3g}s"
        except Exception as exc:  # a service plugin that raises: worth a retry like any failure
            why = f"{type(exc).__name__} in Apprise"
        return False, REDACTOR.redact(why)


def make_notifier(settings: AppriseSettings, ctx: PluginContext) -> AppriseNotifier:
    return AppriseNotifier(settings, ctx)


@vipsense.hookimpl
def vipsense_register_notifier_types(register: RegisterType) -> None:
    register(
        "apprise",
        AppriseSettings,
        make_notifier,
        summary=lazy_gettext(
            "e-mail and chat through Apprise URLs (mailto://, dingtalk://, wecombot://, json:// ...)"
        ),
        requires=("apprise",),
        extra="apprise",
    )
