"""Directory entries to model objects and back, following the attribute mapping in the settings.

Encodings (documented in README.md beside this file):

* dates are Generalized Time at midnight, ``20301231000000Z``; only the date part is read;
* ``last_seen_at`` is UTC Generalized Time with microseconds, ``20261201093012.250000Z``;
* consent is LDAP Boolean, ``TRUE`` / ``FALSE``;
* each history event is one value: a JSON object with sorted keys and a ``seq`` number (1 for the
  oldest).  LDAP values are an unordered set, so order comes from ``seq``, never from the server.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping

import attrs
from ldap.dn import escape_dn_chars

from vipsense.model import Card, CardAction, CardEvent, CardStatus, Customer, Photo

from .settings import CardAttributes, CustomerAttributes

Entry = Mapping[str, list[bytes]]  #: python-ldap's attribute dict
Warn = Callable[[str], None]

CUSTOMER_OBJECT_CLASSES = ("top", "person", "organizationalPerson", "inetOrgPerson", "vipsenseCustomer")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def dn_for(attr: str, value: str, base: str) -> str:
    """The DN of a new entry; ``value`` is escaped as a DN part (ldap.md §2)."""
    return f"{attr}={escape_dn_chars(value)},{base}"


# -- values ----------------------------------------------------------------------------------------


def _text(entry: Mapping[str, list[bytes]], attr: str | None) -> str | None:
    if attr is None:
        return None
    values = entry.get(attr.lower())
    return values[0].decode("utf-8") if values else None


def date_value(d: dt.date) -> bytes:
    return d.strftime("%Y%m%d000000Z").encode()


def parse_date(text: str | None) -> dt.date | None:
    if not text:
        return None
    return dt.date(int(text[0:4]), int(text[4:6]), int(text[6:8]))


def time_value(at: float) -> bytes:
    return dt.datetime.fromtimestamp(at, dt.timezone.utc).strftime("%Y%m%d%H%M%S.%fZ").encode()


def parse_time(text: str | None) -> float | None:
    """Generalized Time (UTC, with an optional fraction) as a UNIX timestamp."""
    if not text:
        return None
    text = text.rstrip("Zz")
    whole, _, fraction = text.replace(",", ".").partition(".")
    stamp = dt.datetime.strptime(whole.ljust(14, "0")[:14], "%Y%m%d%H%M%S").replace(tzinfo=dt.timezone.utc)
    return (stamp - EPOCH).total_seconds() + (float("0." + fraction) if fraction else 0.0)


def _mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.lstrip()[:5] in (b"<svg ", b"<?xml"):
        return "image/svg+xml"
    return "image/jpeg"


def lower_keys(entry: Entry) -> dict[str, list[bytes]]:
    """Attribute names compare case-insensitively in LDAP; servers may echo any spelling."""
    return {k.lower(): v for k, v in entry.items()}


# -- customers -------------------------------------------------------------------------------------


class CustomerMap:
    def __init__(self, attrs_: CustomerAttributes) -> None:
        self.a = attrs_
        mapped = [v for v in attrs.astuple(attrs_) if v]
        self.attrlist = sorted({*mapped, "cn"})

    def to_customer(self, entry: Entry) -> Customer:
        e = lower_keys(entry)
        a = self.a
        photo = e.get(a.photo.lower()) if a.photo else None
        consent = _text(e, a.consent)
        return Customer(
            customer_no=_text(e, a.customer_no) or "",
            name=_text(e, a.name) or _text(e, "cn") or "",
            tier=_text(e, a.tier),
            company=_text(e, a.company),
            id_number=_text(e, a.id_number),
            mobile=_text(e, a.mobile),
            usual_business=_text(e, a.usual_business),
            client_manager=_text(e, a.client_manager),
            photo=Photo(photo[0], _mime(photo[0])) if photo else None,
            consent=(consent or "").upper() == "TRUE",
            consent_date=parse_date(_text(e, a.consent_date)),
        )

    def to_entry(self, c: Customer) -> dict[str, list[bytes]]:
        """A new inetOrgPerson entry (``cn`` and ``sn`` are required by ``person``: the name)."""
        a = self.a
        out: dict[str, list[bytes]] = {
            "objectClass": [oc.encode() for oc in CUSTOMER_OBJECT_CLASSES],
            "cn": [c.name.encode()],
            "sn": [c.name.encode()],
            a.customer_no: [c.customer_no.encode()],
            a.name: [c.name.encode()],
        }
        for field in ("tier", "company", "id_number", "mobile", "usual_business", "client_manager"):
            attr, value = getattr(a, field), getattr(c, field)
            if attr and value:
                out[attr] = [value.encode()]
        if a.photo and c.photo is not None:
            out[a.photo] = [c.photo.data]
        if a.consent:
            out[a.consent] = [b"TRUE" if c.consent else b"FALSE"]
        if a.consent_date and c.consent_date:
            out[a.consent_date] = [date_value(c.consent_date)]
        return out


# -- cards -----------------------------------------------------------------------------------------


class CardMap:
    def __init__(self, attrs_: CardAttributes, object_classes: Iterable[str]) -> None:
        self.a = attrs_
        self.object_classes = tuple(object_classes)
        skip = {attrs_.history, attrs_.history_count}
        self.attrlist = sorted({v for v in attrs.astuple(attrs_) if v and v not in skip})

    def to_card(self, entry: Entry, warn: Warn) -> Card:
        e = lower_keys(entry)
        a = self.a
        status_text = (_text(e, a.status) or CardStatus.ACTIVE.value).lower()
        try:
            status = CardStatus(status_text)
        except ValueError:
            # Fail closed: a status vipsense does not know must never be greeted.
            warn(f"unknown card status {status_text!r}, read as revoked")
            status = CardStatus.REVOKED
        branches = e.get(a.allowed_branches.lower(), []) if a.allowed_branches else []
        return Card(
            epc=(_text(e, a.epc) or "").upper(),
            customer_no=_text(e, a.customer_no) or "",
            status=status,
            tier=_text(e, a.tier),
            valid_from=parse_date(_text(e, a.valid_from)),
            valid_until=parse_date(_text(e, a.valid_until)),
            allowed_branches=tuple(sorted(b.decode("utf-8") for b in branches)),
            tid=(_text(e, a.tid) or "").upper() or None,
            last_seen_branch=_text(e, a.last_seen_branch),
            last_seen_at=parse_time(_text(e, a.last_seen_at)),
        )

    def to_entry(self, c: Card) -> dict[str, list[bytes]]:
        a = self.a
        out: dict[str, list[bytes]] = {
            "objectClass": [oc.encode() for oc in self.object_classes],
            a.epc: [c.epc.upper().encode()],
            a.customer_no: [c.customer_no.encode()],
        }
        if a.status:
            out[a.status] = [c.status.value.encode()]
        if a.tier and c.tier:
            out[a.tier] = [c.tier.encode()]
        if a.tid and c.tid:
            out[a.tid] = [c.tid.upper().encode()]
        if a.valid_from and c.valid_from:
            out[a.valid_from] = [date_value(c.valid_from)]
        if a.valid_until and c.valid_until:
            out[a.valid_until] = [date_value(c.valid_until)]
        if a.allowed_branches and c.allowed_branches:
            out[a.allowed_branches] = [b.encode() for b in dict.fromkeys(c.allowed_branches)]
        return out


# -- history ---------------------------------------------------------------------------------------


def encode_event(event: CardEvent, seq: int) -> bytes:
    """One history value.  JSON escapes every separator and newline, so any reason text (Chinese,
    quotes, commas) round-trips unambiguously."""
    record = {
        "seq": seq,
        "at": event.at,
        "action": event.action.value,
        "actor": event.actor,
        "reason": event.reason,
        "detail": event.detail,
    }
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def decode_events(epc: str, values: Iterable[bytes], warn: Warn) -> list[CardEvent]:
    """The events, oldest first (by ``seq``).  A value that is not an event is skipped with a warning."""
    events: list[tuple[int, CardEvent]] = []
    for raw in values:
        try:
            d = json.loads(raw.decode("utf-8"))
            event = CardEvent(
                epc=epc,
                action=CardAction(d["action"]),
                at=float(d["at"]),
                actor=str(d["actor"]),
                reason=str(d.get("reason", "")),
                detail=str(d.get("detail", "")),
            )
            events.append((int(d["seq"]), event))
        except (ValueError, KeyError, TypeError):
            warn("a history value of a card is not a vipsense event; skipped")
    events.sort(key=lambda pair: pair[0])
    return [event for _, event in events]
