"""Posts each notification as signed JSON to an HTTP(S) endpoint: a bank's own alerting system.

A webhook carries customer data to another system, so it needs a personal-information impact
assessment first (PIPL Art. 55, ``privacy-security.md`` §2).  It sends as little as does the job:
``fields`` lists the customer fields included (default ``customer_no``, ``name``, ``tier``,
``company``, ``usual_business``); an ID number or mobile is only ever sent masked, and only if listed.

Body (UTF-8 JSON)::

    {"key": "<visit id>:<recipient id>", "event": "arrival" | "rejected" | "suspect",
     "branch": "<branch id>", "visit_id": "...", "arrived_at": "2026-12-01T21:41:11.123456+00:00",
     "recipient": {"id": "...", "role": "..."}, "reader": "<reader id>", "tier": "gold" | null,
     "reason": "lost" | ... | null, "customer": {<the listed fields>} | null}

Headers: ``Content-Type: application/json``, ``Idempotency-Key: <key>`` (a receiver shows one key
once: the outbox delivers at least once), ``X-Vipsense-Timestamp: <unix seconds>`` and
``X-Vipsense-Signature: sha256=<hex>``, the HMAC-SHA256 with the shared secret of
``<timestamp>.<raw body bytes>`` (:mod:`vipsense.signing`).  A receiver verifies before it parses::

    import hashlib, hmac, time
    ts = request.headers["X-Vipsense-Timestamp"]
    mac = hmac.new(secret, ts.encode() + b"." + raw_body, hashlib.sha256).hexdigest()
    ok = hmac.compare_digest("sha256=" + mac, request.headers["X-Vipsense-Signature"])
    ok = ok and abs(time.time() - int(ts)) <= 300   # reject stale (replayed) posts

A 2xx answer is a delivery.  4xx (but 408 and 429) fails for good (``DeliveryFailed(retry=False)``);
5xx, 408, 429, timeouts and connection errors are retried by the outbox with backoff.  Redirects are
never followed: urllib would resend a POST that meets a 301, 302 or 303 as a GET without its body and
count the answer as a delivery.  A 3xx is a failure that names where it pointed (without credentials
or query); 301 and 308 (moved for good) fail for good, the others are retried.  Neither the secret nor
the body is ever logged.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import urllib.parse
from typing import Any

import attrs

import vipsense
from vipsense.api import DeliveryFailed, Duration, Notifier, PluginContext, RegisterType, Secret
from vipsense.i18n import _, lazy_gettext
from vipsense.model import Notification, event_of
from vipsense.privacy import CUSTOMER_FIELDS, mask_field
from vipsense.signing import signed_headers

DEFAULT_FIELDS = ("customer_no", "name", "tier", "company", "usual_business")
_REASON_MAX = 120  #: characters of a response's status text kept in an error
_LOCATION_MAX = 200  #: characters of a redirect's target kept in an error
_MOVED_FOR_GOOD = (301, 308)  #: redirects that a retry cannot mend
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]+")  #: a Location is printable ASCII; anything else: %XX


def bare_url(url: str) -> str:
    """``url`` without credentials, query or fragment (any of them may hold a token): what status,
    errors and logs show."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2], query="", fragment="").geturl()


def _percent(match: re.Match[str]) -> str:
    # http.client reads header bytes as Latin-1, so each such character is one byte as sent
    raw = b"".join(c.encode("latin-1") if ord(c) < 256 else c.encode("utf-8") for c in match.group())
    return "".join(f"%{b:02X}" for b in raw)


def redirect_target(base: str, location: str) -> str:
    """Where a redirect pointed, fit for an error: resolved against ``base``, bare, anything
    unprintable (a control character, an escape sequence) shown as ``%XX``, and cut short."""
    shown = bare_url(urllib.parse.urljoin(base, location.strip()))
    shown = _UNPRINTABLE.sub(_percent, shown)
    return shown if len(shown) <= _LOCATION_MAX else shown[: _LOCATION_MAX - 3] + "..."


def _check_url(instance: Any, attribute: Any, value: str) -> None:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(_("expected an http:// or https:// URL, got {value!r}").format(value=value))


def _check_fields(instance: Any, attribute: Any, value: tuple[str, ...]) -> None:
    unknown = [f for f in value if f not in CUSTOMER_FIELDS]
    if unknown:
        raise ValueError(
            _("unknown customer field(s) {unknown}; choose from {choices}").format(
                unknown=unknown, choices=list(CUSTOMER_FIELDS)
            )
        )


@attrs.frozen
class WebhookSettings:
    url: str = attrs.field(validator=_check_url)
    secret: Secret = attrs.field(repr=lambda s: "Secret('******')")  #: the HMAC key, from ``!secret``
    request_timeout: Duration = Duration(5)  #: for connecting and for the whole answer
    fields: tuple[str, ...] = attrs.field(default=DEFAULT_FIELDS, converter=tuple, validator=_check_fields)
    ca_file: str | None = None  #: a CA bundle for an https endpoint with a private CA
    headers: dict[str, str] = attrs.Factory(dict)  #: extra request headers, e.g. a routing key


def build_body(notification: Notification, branch_id: str, fields: tuple[str, ...]) -> dict[str, Any]:
    """The JSON document for one notification; ID number and mobile masked (``vipsense.privacy``)."""
    visit = notification.visit
    customer = None
    if visit.customer is not None:
        customer = {f: mask_field(f, getattr(visit.customer, f)) for f in fields}
    arrived = dt.datetime.fromtimestamp(visit.arrived_at, dt.timezone.utc).isoformat()
    return {
        "key": notification.key,
        "event": event_of(visit.kind),
        "branch": branch_id,
        "visit_id": visit.visit_id,
        "arrived_at": arrived,
        "recipient": {"id": notification.recipient.id, "role": notification.recipient.role.value},
        "reader": visit.arrival.reader_id,
        "tier": visit.tier,
        "reason": visit.reason.value if visit.reason else None,
        "customer": customer,
    }


class WebhookNotifier(Notifier):
    def __init__(self, settings: WebhookSettings, ctx: PluginContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self._key = settings.secret.reveal().encode("utf-8")
        self._where = bare_url(settings.url)  # shown in status and errors: no credentials
        # the HTTP stack is imported when a webhook notifier is built, not by every command
        import ssl
        from urllib.request import BaseHandler, HTTPRedirectHandler, HTTPSHandler, ProxyHandler, build_opener

        class RefuseRedirects(HTTPRedirectHandler):
            """Hands every 3xx back as an ``HTTPError``: followed, a POST would become a GET without its
            body, and its answer would pass for a delivery; one that kept the body would hand its C2
            fields to a receiver nobody vetted (``privacy-security.md`` §2, §4 item 8).  (Replaces
            urllib's default handler.)"""

            def redirect_request(
                self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
            ) -> None:
                return None

        handlers: list[BaseHandler] = [ProxyHandler({}), RefuseRedirects()]
        if self._where.startswith("https:"):
            cafile = str(ctx.resolve(settings.ca_file)) if settings.ca_file else None
            handlers.append(HTTPSHandler(context=ssl.create_default_context(cafile=cafile)))
        self._opener = build_opener(*handlers)
        self._health: dict[str, Any] = {"endpoint": self._where}

    def send(self, notification: Notification) -> None:
        body = json.dumps(
            build_body(notification, self.ctx.branch_id, self.settings.fields),
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")
        headers = dict(self.settings.headers)
        headers.update({"Content-Type": "application/json", "Idempotency-Key": notification.key})
        headers.update(signed_headers(self._key, body))
        from http.client import HTTPException
        from urllib.error import HTTPError, URLError
        from urllib.request import Request

        request = Request(self.settings.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=float(self.settings.request_timeout)) as response:
                response.read(65536)
                status = response.status
        except HTTPError as e:
            status, reason = e.code, str(e.reason or "")[:_REASON_MAX]
            location = e.headers.get("Location") if e.headers is not None else None
            e.close()
            if 300 <= status < 400:
                self._health["last_error"] = f"HTTP {status} redirect"
                retry = status not in _MOVED_FOR_GOOD
                if not location:
                    raise DeliveryFailed(
                        f"{self._where} answered HTTP {status}, a redirect without a Location: not delivered",
                        retry=retry,
                    ) from None
                target = redirect_target(self.settings.url, location)
                raise DeliveryFailed(
                    f"{self._where} redirected to {target} (HTTP {status}): not followed, not delivered",
                    retry=retry,
                ) from None
            retry = status >= 500 or status in (408, 429)
            self._health["last_error"] = f"HTTP {status}"
            raise DeliveryFailed(
                f"{self._where} answered HTTP {status} {reason}".rstrip(), retry=retry
            ) from None
        except TimeoutError:
            self._health["last_error"] = "timeout"
            raise DeliveryFailed(
                f"{self._where} did not answer within {float(self.settings.request_timeout):g}s", retry=True
            ) from None
        except URLError as e:
            why = e.reason
            if isinstance(why, TimeoutError):
                text = f"did not answer within {float(self.settings.request_timeout):g}s"
            else:
                text = f"unreachable ({why})"
            self._health["last_error"] = text
            raise DeliveryFailed(f"{self._where} {text}", retry=True) from None
        except (OSError, HTTPException) as e:
            self._health["last_error"] = type(e).__name__
            raise DeliveryFailed(
                f"{self._where} connection failed ({type(e).__name__}: {e})", retry=True
            ) from None
        if not 200 <= status < 300:
            raise DeliveryFailed(f"{self._where} answered HTTP {status}", retry=status >= 500)
        self._health["last_error"] = ""
        self._health["last_delivered"] = time.time()

    def health(self) -> dict[str, Any]:
        return dict(self._health)


@vipsense.hookimpl
def vipsense_register_notifier_types(register: RegisterType) -> None:
    register(
        "webhook",
        WebhookSettings,
        WebhookNotifier,
        summary=lazy_gettext("posts signed JSON to an HTTP(S) endpoint"),
    )
