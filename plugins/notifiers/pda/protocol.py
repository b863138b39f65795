"""The hub ⇄ PDA protocol, version 2: what is advertised, what is pushed and what comes back.

Discovery (mDNS/DNS-SD, ``zeroconf.md``) is an **address book only**: anyone on the LAN can announce a
service, so nothing in a TXT record authorises anything.  Every push and every acknowledgement is an
HMAC-SHA256 signed body with a freshness window (:mod:`vipsense.signing`, the branch key); a receiver
verifies the raw body *before* it parses it.

Each start of a hub is one **instance**, named by a random id: two hubs of one branch id on one network
(two demos on one machine) are told apart by it, and a PDA takes pushes from one instance only
(:mod:`.binding`).  Version 2 added the instance; version 1 had none.

Service types
    * the hub: ``_vipsense._tcp.local.``, SRV port = its acknowledgement server, TXT ``txtvers=1``,
      ``proto=2``, ``branch=<branch id>``, ``ack=/v1/ack``, ``instance=<hub instance id>``;
    * a PDA: ``_vipsense-pda._tcp.local.``, SRV port = its push server, TXT ``txtvers=1``, ``proto=2``,
      ``staff=<staff id>``, ``role=lobby|manager|branch``, ``branch=<branch id>``, ``port=<push port>``,
      ``name=<display name>``, and ``hub=<hub instance id>`` only when the PDA is pinned to one hub
      instance (the demo's emulated PDAs).  The instance name is the display name cut to 63 UTF-8
      bytes (Chinese is fine: about 21 characters).

Push (hub → PDA)
    ``POST http://<pda address>:<port>/v1/push``, a UTF-8 JSON body (:func:`push_body`, with the hub's
    instance id in ``hub``) with headers ``Content-Type: application/json``, ``Idempotency-Key: <key>``
    and the two signature headers.  The PDA answers 401 (unsigned, wrongly signed, stale), 400 (not the
    JSON described), 409 (for another member of staff), 403 (for another branch), 421 (from a hub
    instance this PDA is not bound to), 200 ``{"shown": true}`` or, for a key it has already shown,
    200 ``{"duplicate": true}``.  The hub counts any 2xx as delivered.
    The push carries ``locale`` (``zh_CN`` or ``en``), the language the branch speaks: the PDA shows
    the push, and its own lines from then on, in it.  It is optional (a PDA takes a push without it,
    and an older PDA ignores it), so it did not need a new protocol version.

Acknowledgement (PDA → hub)
    ``POST <ack_url>`` (from the push), signed the same way, JSON :func:`ack_body`.  The hub answers
    200 (recorded), 404 (no such notification for that member of staff), 400 or 401.  Every answer of
    the hub's acknowledgement server carries ``X-Vipsense-Hub: <instance id>``, so a PDA can tell
    whether the hub it is bound to still answers there.

No full ID number or mobile ever travels: the ID number is masked (``vipsense.privacy``) and the
mobile is not sent at all.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

import attrs

from vipsense import i18n
from vipsense.i18n import _, lazy_gettext
from vipsense.model import Notification, Role, event_of
from vipsense.privacy import mask_id_number, mask_personal_numbers

PROTO = "2"  #: 2 added the hub instance; see docs/pda.md
TXTVERS = "1"
HUB_TYPE = "_vipsense._tcp.local."
PDA_TYPE = "_vipsense-pda._tcp.local."
PUSH_PATH = "/v1/push"
ACK_PATH = "/v1/ack"
HUB_HEADER = "X-Vipsense-Hub"  #: on every answer of the hub's acknowledgement server: its instance id
MISDIRECTED = 421  #: a PDA's answer to a push from a hub instance it is not bound to
MAX_BODY = 64 * 1024  #: bytes: a push or an acknowledgement is far smaller; anything bigger is refused
MAX_INSTANCE_BYTES = 59  #: DNS labels are 63 bytes; 4 are left for zeroconf's "-2" on a name clash
MAX_TXT_VALUE = 100  #: bytes: we keep each TXT value short (RFC 6763 allows 255 per string)

#: PDA ``role=`` values and the staff roles they stand for.
ROLES = {"lobby": Role.LOBBY_MANAGER, "manager": Role.CLIENT_MANAGER, "branch": Role.BRANCH_MANAGER}
ROLE_ALIASES = {
    "lobby_manager": "lobby",
    "client_manager": "manager",
    "branch_manager": "branch",
    **{k: k for k in ROLES},
}
#: What a PDA shows for each event.
EVENT_TITLES = {
    "arrival": lazy_gettext("VIP arrival"),
    "rejected": lazy_gettext("REJECTED card"),
    "suspect": lazy_gettext("SUSPECT card"),
    "unresolved": lazy_gettext("CARD SEEN, stores not answering"),
}
_INSTANCE = re.compile(r"[A-Za-z0-9_-]{1,64}")
CUSTOMER_FIELDS = ("customer_no", "name", "tier", "company", "usual_business", "id_number")


def role_name(value: str) -> str:
    """``lobby``, ``manager`` or ``branch`` for a PDA role or a staff role name; ``ValueError`` else."""
    try:
        return ROLE_ALIASES[value.strip().lower()]
    except KeyError:
        message = _("unknown role {value!r}: expected lobby, manager or branch")
        raise ValueError(message.format(value=value)) from None


def instance_name(name: str) -> str:
    """A DNS-SD instance name from a display name: dots and control characters replaced, cut to
    :data:`MAX_INSTANCE_BYTES` UTF-8 bytes without splitting a character."""
    clean = re.sub(r"[\x00-\x1f\x7f.]", "-", name).strip() or "pda"
    raw = clean.encode("utf-8")[:MAX_INSTANCE_BYTES]
    return raw.decode("utf-8", errors="ignore").rstrip()


def new_instance_id() -> str:
    """A fresh hub instance id: random, so each start of a hub is told apart from every other."""
    return secrets.token_hex(8)


def check_instance(value: str) -> str:
    """``value`` if it can be a hub instance id (1-64 letters, digits, ``_`` or ``-``); ``ValueError``."""
    if not isinstance(value, str) or not _INSTANCE.fullmatch(value):
        raise ValueError(f"{value!r} is not a hub instance id (1-64 letters, digits, _ or -)")
    return value


def short_value(key: str, value: str) -> str:
    """A TXT value checked for length (``ValueError`` names the key, never a secret)."""
    if len(value.encode("utf-8")) > MAX_TXT_VALUE:
        raise ValueError(f"{key} is too long for a TXT record (at most {MAX_TXT_VALUE} bytes)")
    return value


def pda_txt(
    *, staff: str, role: str, branch: str, port: int, name: str, hub: str | None = None
) -> dict[str, str]:
    """The TXT properties a PDA advertises, ``txtvers`` first; ``hub`` only when pinned to one."""
    txt = {
        "txtvers": TXTVERS,
        "proto": PROTO,
        "staff": short_value("staff", staff),
        "role": role_name(role),
        "branch": short_value("branch", branch),
        "port": str(port),
        "name": instance_name(name),
    }
    if hub is not None:
        txt["hub"] = check_instance(hub)
    return txt


def hub_txt(branch: str, instance: str) -> dict[str, str]:
    """The TXT properties the hub advertises, ``txtvers`` first."""
    return {
        "txtvers": TXTVERS,
        "proto": PROTO,
        "branch": short_value("branch", branch),
        "ack": ACK_PATH,
        "instance": check_instance(instance),
    }


@attrs.frozen
class PdaTxt:
    """A PDA's TXT record, read: who it says it is.  Never proof of anything."""

    staff: str
    role: str
    branch: str
    port: int
    name: str
    hub: str = ""  #: the hub instance the PDA is pinned to; empty when it follows its branch's hub


class UnusableTxt(ValueError):
    """A TXT record that is not one we can use.  ``category`` is what health counts it as:
    ``other_proto``, ``other_branch``, ``other_hub`` or ``unusable`` (a field missing or malformed)."""

    def __init__(self, message: str, *, category: str = "unusable") -> None:
        super().__init__(message)
        self.category = category


def decode_txt(properties: Mapping[bytes, bytes | None]) -> dict[str, str]:
    """A TXT record's raw properties as text: keys ASCII, values UTF-8 (RFC 6763 §6.4-6.5), a key
    without ``=`` as an empty value.  Raises :class:`UnusableTxt` naming the first key that is not:
    a record decoded with replacement characters would be a different record."""
    txt: dict[str, str] = {}
    for key, value in properties.items():
        try:
            txt[key.decode("ascii")] = (value or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise UnusableTxt(f"TXT {key!r} is not UTF-8") from None
    return txt


def check_port(port: int, where: str) -> int:
    """``port`` if a peer can listen on it (1-65535); :class:`UnusableTxt` otherwise."""
    if not 1 <= port <= 65535:
        raise UnusableTxt(f"{where} port {port} is out of range (1 to 65535)")
    return port


def parse_pda_txt(props: Mapping[str, str | None], srv_port: int) -> PdaTxt:
    """A PDA's TXT properties as :class:`PdaTxt`; raises :class:`UnusableTxt`."""
    if props.get("proto") != PROTO:
        raise UnusableTxt(f"protocol {props.get('proto')!r}, not {PROTO}", category="other_proto")
    missing = [k for k in ("staff", "branch") if not props.get(k)]
    if missing:
        raise UnusableTxt(f"TXT lacks {', '.join(missing)}")
    text = props.get("port")
    if text:
        if not re.fullmatch(r"[0-9]+", text):  # int() would take "+80", " 80" and other digits
            raise UnusableTxt(f"TXT port {text!r} is not a number")
        port = check_port(int(text), "TXT")
    else:
        port = check_port(srv_port, "SRV")
    role = props.get("role") or ""
    hub = props.get("hub") or ""
    if hub and not _INSTANCE.fullmatch(hub):
        raise UnusableTxt(f"TXT hub {hub!r} is not a hub instance id")
    return PdaTxt(
        staff=str(props["staff"]),
        role=ROLE_ALIASES.get(role, role),
        branch=str(props["branch"]),
        port=port,
        name=str(props.get("name") or ""),
        hub=hub,
    )


@attrs.frozen
class HubTxt:
    """A hub's TXT record, read: an address to try for acknowledgements, never proof of anything."""

    branch: str
    ack_path: str
    instance: str  #: this start of the hub


def parse_hub_txt(props: Mapping[str, str | None], srv_port: int) -> HubTxt:
    """A hub's TXT properties as :class:`HubTxt`; raises :class:`UnusableTxt`."""
    if props.get("proto") != PROTO:
        raise UnusableTxt(f"protocol {props.get('proto')!r}, not {PROTO}", category="other_proto")
    if not props.get("branch"):
        raise UnusableTxt("TXT lacks branch")
    instance = props.get("instance") or ""
    if not _INSTANCE.fullmatch(instance):
        raise UnusableTxt(f"TXT instance {instance!r} is not a hub instance id")
    path = props.get("ack") or ACK_PATH
    if not re.fullmatch(r"/[A-Za-z0-9/_.-]{0,60}", path):
        path = ACK_PATH
    return HubTxt(branch=str(props["branch"]), ack_path=path, instance=instance)


def iso_utc(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.timezone.utc).isoformat()


def push_body(notification: Notification, branch_id: str, ack_url: str, *, hub: str) -> dict[str, Any]:
    """The JSON document of one push from hub instance ``hub``.  The customer's ID number is masked,
    and so is any ID- or phone-shaped number in the free text; the mobile is left out.

    ``expires_at`` tells the PDA how long to remember the key (it will never be sent after that).
    """
    visit = notification.visit
    customer = None
    if visit.customer is not None:
        c = visit.customer
        customer = {f: getattr(c, f) for f in CUSTOMER_FIELDS if f != "id_number"}
        for free_text in ("name", "company", "usual_business"):  # an ID typed into a name, say
            if customer[free_text]:
                customer[free_text] = mask_personal_numbers(customer[free_text])
        customer["id_number"] = mask_id_number(c.id_number) or None
    return {
        "proto": int(PROTO),
        "hub": check_instance(hub),
        "key": notification.key,
        "event": event_of(visit.kind),
        "visit_id": visit.visit_id,
        "branch": branch_id,
        "arrived_at": iso_utc(visit.arrived_at),
        "arrived_unix": visit.arrived_at,
        "expires_at": notification.expires_at,
        "recipient": notification.recipient.id,
        "tier": visit.tier,
        "reason": visit.reason.value if visit.reason else None,
        "reader": visit.arrival.reader_id,
        "escalated_from": getattr(notification, "escalated_from", "") or None,
        "customer": customer,
        "ack_url": ack_url,
        "locale": i18n.current(),  # the branch's language: the PDA shows the push in it
    }


def ack_body(key: str, staff: str, at: float, device: str) -> dict[str, Any]:
    """The JSON document of one acknowledgement: ``at`` is when the person pressed the key."""
    return {"key": key, "staff": staff, "at": at, "device": device}


def encode(doc: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON (Chinese stays readable), the exact bytes that are signed."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class BadMessage(ValueError):
    """A signed body that is not the JSON this protocol describes (answered with 400)."""


def _text(doc: Mapping[str, Any], key: str, required: bool = True) -> str | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise BadMessage(f"{key!r} must be a non-empty string")
    return value


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadMessage("body is not UTF-8 JSON") from None
    if not isinstance(doc, dict):
        raise BadMessage("body is not a JSON object")
    return doc


def parse_push(body: bytes) -> dict[str, Any]:
    """A verified push body, checked for the fields a PDA relies on; raises :class:`BadMessage`."""
    doc = parse_json(body)
    if doc.get("proto") != int(PROTO):
        raise BadMessage(f"protocol {doc.get('proto')!r}, not {PROTO}")
    for key in ("hub", "key", "event", "branch", "recipient", "ack_url"):
        _text(doc, key)
    if not _INSTANCE.fullmatch(doc["hub"]):
        raise BadMessage(f"'hub' {doc['hub']!r} is not a hub instance id")
    if doc["event"] not in EVENT_TITLES:
        raise BadMessage(f"unknown event {doc['event']!r}")
    if doc.get("customer") is not None and not isinstance(doc["customer"], dict):
        raise BadMessage("'customer' must be an object or null")
    for key in ("arrived_unix", "expires_at"):
        if doc.get(key) is not None and not isinstance(doc[key], int | float):
            raise BadMessage(f"{key!r} must be a number")
    return doc


def parse_ack(body: bytes) -> tuple[str, str, float | None, str]:
    """``(key, staff, at, device)`` from a verified acknowledgement; raises :class:`BadMessage`."""
    doc = parse_json(body)
    key, staff = _text(doc, "key"), _text(doc, "staff")
    at = doc.get("at")
    if at is not None and (isinstance(at, bool) or not isinstance(at, int | float)):
        raise BadMessage("'at' must be a unix time (a number) or null")
    device = doc.get("device")
    return str(key), str(staff), None if at is None else float(at), device if isinstance(device, str) else ""
