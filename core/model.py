"""The data that flows through a branch: reads, cards, customers, visits, notifications.

Every class is a frozen attrs class, so a value handed to a plugin cannot be changed under the
pipeline's feet.  Times come in two kinds, named so they are never confused:

* ``*_mono`` fields are seconds on the branch's monotonic clock (:class:`vipsense.clock.Clock`). The
  presence rules use only these, following ``presence.md`` §2 "Clock": host time, not reader time.
* ``*_at`` fields are wall-clock UNIX timestamps (seconds), for records and display.

A card is not the customer: the card holds an opaque EPC and a customer number, and revoking a card
never touches customer data (``privacy-security.md`` §5).
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from typing import Any

import attrs

from .i18n import lazy_gettext
from .privacy import masked_repr


class Labelled(str, enum.Enum):
    """An enum whose values stay English (files, the API, logs) and whose :attr:`label` is what staff
    read, in the language in force."""

    @property
    def label(self) -> str:
        found = _LABELS.get((type(self), self.value))
        return str(found) if found is not None else self.value


#: (enum, value) -> its label; filled after each enum (a lost card and a lost reason are both "lost")
_LABELS: dict[tuple[type, str], Any] = {}


def add_labels(kind: type, labels: dict[str, Any]) -> None:
    _LABELS.update({(kind, value): text for value, text in labels.items()})


class CardStatus(Labelled):
    ACTIVE = "active"
    LOST = "lost"
    REVOKED = "revoked"


add_labels(
    CardStatus,
    {
        "active": lazy_gettext("active"),
        "lost": lazy_gettext("reported lost"),
        "revoked": lazy_gettext("revoked"),
    },
)


class RejectReason(Labelled):
    """Why a card was not greeted.  The value is what profiles and records use."""

    LOST = "lost"
    REVOKED = "revoked"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_BRANCH = "wrong_branch"
    #: suspect cards (``privacy-security.md`` §5, countermeasures 2 and 5): probably cloned or misused
    TID_MISMATCH = "tid_mismatch"  #: read with a TID other than the one the card was enrolled with
    TOO_FAST = "too_fast"  #: seen at another branch too recently to have travelled here


add_labels(
    RejectReason,
    {
        "lost": lazy_gettext("card reported lost"),
        "revoked": lazy_gettext("card revoked"),
        "expired": lazy_gettext("card expired"),
        "not_yet_valid": lazy_gettext("card not yet valid"),
        "wrong_branch": lazy_gettext("card not valid at this branch"),
        "tid_mismatch": lazy_gettext("chip ID (TID) differs from the enrolled one: possibly cloned"),
        "too_fast": lazy_gettext("seen at another branch too recently: possibly cloned"),
    },
)

#: The reasons that make a card *suspect* rather than merely rejected.
SUSPECT_REASONS = frozenset({RejectReason.TID_MISMATCH, RejectReason.TOO_FAST})


class Role(Labelled):
    """Staff roles: whom routing rules address, and what each may do (:mod:`vipsense.permissions`)."""

    LOBBY_MANAGER = "lobby_manager"
    CLIENT_MANAGER = "client_manager"
    BRANCH_MANAGER = "branch_manager"
    HEAD_OFFICE = "head_office"
    CARD_ISSUER = "card_issuer"  #: staff at the card-issuing station
    ADMIN = "admin"  #: runs the branch's accounts and devices; sees no customer data
    AUDITOR = "auditor"  #: reads the audit log, nothing else


add_labels(
    Role,
    {
        "lobby_manager": lazy_gettext("lobby manager"),
        "client_manager": lazy_gettext("client manager"),
        "branch_manager": lazy_gettext("branch manager"),
        "head_office": lazy_gettext("head office"),
        "card_issuer": lazy_gettext("card issuer"),
        "admin": lazy_gettext("administrator"),
        "auditor": lazy_gettext("auditor"),
    },
)


class VisitKind(Labelled):
    """What the branch made of one arrival at the door."""

    GREETED = "greeted"  #: a valid card: staff are told
    REJECTED = "rejected"  #: lost, revoked, expired or wrong-branch card: never a greeting
    SUSPECT = "suspect"  #: probably cloned or misused (TID mismatch, two branches too fast): alert only
    SUPPRESSED = "suppressed"  #: re-entry inside the suppression window: recorded, nobody told
    UNKNOWN = "unknown"  #: a tag that is no card of ours: counted, nobody told
    #: the card was seen but no identity store answered: recorded at once, judged again while the
    #: card is in the door zone, and re-recorded with its verdict when a store answers
    UNRESOLVED = "unresolved"


add_labels(
    VisitKind,
    {
        "greeted": lazy_gettext("greeted"),
        "rejected": lazy_gettext("rejected"),
        "suspect": lazy_gettext("suspect"),
        "suppressed": lazy_gettext("re-entry, not notified"),
        "unknown": lazy_gettext("unknown tag"),
        "unresolved": lazy_gettext("unresolved"),
    },
)

#: The routing event (a routing rule's ``event:``) of each kind of visit that tells staff.  A
#: re-entry inside the suppression window and an unknown tag tell nobody.
EVENTS: dict[VisitKind, str] = {
    VisitKind.GREETED: "arrival",
    VisitKind.REJECTED: "rejected",
    VisitKind.SUSPECT: "suspect",
    VisitKind.UNRESOLVED: "unresolved",
}


def event_of(kind: VisitKind) -> str:
    """The routing event of a visit's kind, as notifiers name it to their receivers."""
    return EVENTS.get(kind, "arrival")


class DeliveryState(Labelled):
    DELIVERED = "delivered"  #: handed to the recipient's device or channel
    ACKNOWLEDGED = "acknowledged"  #: a person confirmed they saw it
    RETRYING = "retrying"  #: failed for now; the notifier will try again
    FAILED = "failed"  #: given up
    EXPIRED = "expired"  #: too late to be useful, so not sent


add_labels(
    DeliveryState,
    {
        "delivered": lazy_gettext("delivered"),
        "acknowledged": lazy_gettext("acknowledged"),
        "retrying": lazy_gettext("retrying"),
        "failed": lazy_gettext("failed"),
        "expired": lazy_gettext("expired"),
    },
)

#: The tiers the demo and the docs use, as staff read them; a bank's own tier names show as written.
TIER_LABELS = {
    "standard": lazy_gettext("Standard"),
    "silver": lazy_gettext("Silver"),  # the tier some older seed files still name
    "gold": lazy_gettext("Gold"),
    "platinum": lazy_gettext("Platinum"),
    "diamond": lazy_gettext("Diamond"),
}


def tier_label(tier: str | None) -> str:
    """A customer's tier as staff read it (``gold``: 金卡, Gold) when vipsense knows it by name, an
    unknown tier as written, none as "".  A profile may name its tiers itself: ``Profile.tier_name``."""
    if not tier:
        return ""
    found = TIER_LABELS.get(tier.lower())
    return str(found) if found is not None else tier


#: An EPC as the core keeps it: upper-case hex, whole 16-bit words, 16 to 496 bits (the most a Gen2
#: tag's EPC memory holds: a 5-bit word count, at most 31 words).
CANONICAL_EPC = re.compile(r"(?:[0-9A-F]{4}){1,31}")
_SPACE = re.compile(r"\s+")


def normalise_epc(epc: object) -> str | None:
    """``epc`` as the core keeps it (:data:`CANONICAL_EPC`): white space removed, upper case.  None
    when it cannot be an EPC: not text, not hex, not whole 16-bit words, or longer than 496 bits."""
    if not isinstance(epc, str):
        return None
    if CANONICAL_EPC.fullmatch(epc):
        return epc
    text = _SPACE.sub("", epc).upper()
    return text if CANONICAL_EPC.fullmatch(text) else None


@attrs.frozen(slots=True)
class TagRead:
    """One read of one tag by one antenna, as a reader driver reports it."""

    reader_id: str
    antenna: int
    epc: str  #: upper-case hex, whole 16-bit words (:func:`normalise_epc`, applied by the core)
    rssi: float | None  #: dBm; None when the reader reports no signal strength
    seen_mono: float  #: branch monotonic time when the host received the read
    tid: str | None = None
    read_count: int = 1  #: reads the reader folded into this report (on-module de-duplication)
    reader_time: float | None = None  #: the reader's own timestamp, metadata only


class CardAction(Labelled):
    """What happened to a card, as its history records it."""

    ISSUED = "issued"
    REISSUED = "reissued"  #: this card replaces another (``detail`` names it)
    LOST = "lost"
    REVOKED = "revoked"  #: also the old card's event when it is replaced
    RESTORED = "restored"  #: a card reported lost was found and made active again


add_labels(
    CardAction,
    {
        "issued": lazy_gettext("issued"),
        "reissued": lazy_gettext("reissued"),
        "lost": lazy_gettext("reported lost"),
        "revoked": lazy_gettext("revoked"),
        "restored": lazy_gettext("found and restored"),
    },
)


@attrs.frozen(slots=True)
class Card:
    epc: str
    customer_no: str
    status: CardStatus = CardStatus.ACTIVE
    tier: str | None = None
    valid_from: dt.date | None = None
    valid_until: dt.date | None = None  #: inclusive
    allowed_branches: tuple[str, ...] = ()  #: empty: valid at every branch
    tid: str | None = None  #: when set, the card is bound to this TID
    last_seen_branch: str | None = None  #: where the card last arrived (stores that record sightings)
    last_seen_at: float | None = None  #: wall-clock time of that arrival
    stale: bool = False  #: served from a cache because the store could not be asked


@attrs.frozen(slots=True)
class CardEvent:
    """One entry of a card's history: who did what to it, when and why."""

    epc: str
    action: CardAction = attrs.field(converter=CardAction)
    at: float  #: wall-clock UNIX time
    actor: str  #: staff id, or ``system:...``
    reason: str = ""
    detail: str = ""  #: e.g. ``replaced by E200...`` for a card revoked by a reissue


@attrs.frozen(slots=True)
class Photo:
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    mime: str = "image/jpeg"


@attrs.frozen(slots=True)
class Customer:
    """A customer as an identity store knows them.  ``repr`` masks the C2 fields."""

    customer_no: str
    name: str
    tier: str | None = None
    company: str | None = None
    id_number: str | None = attrs.field(default=None, repr=masked_repr("id_number"))
    mobile: str | None = attrs.field(default=None, repr=masked_repr("mobile"))
    usual_business: str | None = None
    client_manager: str | None = None  #: staff id of the assigned client manager
    photo: Photo | None = attrs.field(default=None, repr=False)
    #: the customer's separate consent to recognition at the door (PIPL Art. 26, 29), and its date
    consent: bool = False
    consent_date: dt.date | None = None
    stale: bool = False  #: served from a cache because the store could not be asked


@attrs.frozen(slots=True)
class Staff:
    """A member of staff who can receive notifications."""

    id: str
    name: str
    role: Role = attrs.field(validator=lambda inst, attribute, value: _staff_role(value))
    mobile: str | None = attrs.field(default=None, repr=masked_repr("mobile"))


def _staff_role(role: Role) -> None:
    if role in (Role.ADMIN, Role.AUDITOR):
        raise ValueError(
            f"{role.value} is a web account, not a member of staff: make it with vipsense users add"
        )


@attrs.frozen(slots=True)
class Arrival:
    """Presence decided that a card has arrived at the door."""

    epc: str
    reader_id: str
    antenna: int
    first_seen_mono: float
    arrived_mono: float  #: time of the read that completed the arrival
    read_count: int
    peak_rssi: float | None
    tid: str | None = None


@attrs.frozen(slots=True)
class Visit:
    """One arrival after it has been resolved and judged: the unit the visit log records."""

    visit_id: str
    branch_id: str
    kind: VisitKind
    arrival: Arrival
    arrived_at: float
    card: Card | None = None
    customer: Customer | None = None
    reason: RejectReason | None = None
    tier: str | None = None  #: customer tier, else card tier
    store_id: str | None = None  #: which identity store answered
    stale: bool = False  #: the customer data came from a cache that could not be refreshed
    #: no identity store answered at the arrival: the visit was held (or is still unresolved)
    unresolved: bool = False
    #: wall-clock time the card was judged (None while unresolved); ``resolved_at - arrived_at`` is
    #: how long the stores kept the branch waiting
    resolved_at: float | None = None


@attrs.frozen(slots=True)
class Acknowledgement:
    """A member of staff confirmed they saw a notification (on a PDA, later on the web page)."""

    key: str  #: the notification's key: ``<visit id>:<staff id>``
    visit_id: str
    staff_id: str
    at: float  #: wall-clock UNIX time
    via: str = ""  #: the notifier (or page) it came through


@attrs.frozen(slots=True)
class Fallback:
    """Whom to tell instead if a notification's recipient has not acknowledged by ``at``."""

    at: float  #: wall-clock UNIX time: the deadline for an acknowledgement
    to: Role
    via: tuple[str, ...]


def notification_key(visit_id: str, staff_id: str, *, unresolved: bool = False) -> str:
    """The idempotency key of a visit's notification to ``staff_id``: ``<visit id>:<staff id>``.

    The alert for an unresolved arrival has a key of its own (``<visit id>~unresolved:<staff id>``),
    so the greeting that follows once a store answers is not taken for a duplicate of it."""
    return f"{visit_id}{'~unresolved' if unresolved else ''}:{staff_id}"


def parse_notification_key(key: str) -> tuple[str, str, bool]:
    """``(visit_id, staff_id, is_unresolved_alert)`` of a :func:`notification_key`; the visit id is
    empty for a string that is no such key."""
    head, sep, staff_id = key.rpartition(":")
    if not sep or not head or not staff_id:
        return "", "", False
    visit_id, tilde, event = head.partition("~")
    if tilde and event != "unresolved":
        return "", "", False
    return visit_id, staff_id, bool(tilde)


@attrs.frozen(slots=True)
class Notification:
    """One message for one recipient through one notifier.

    ``key`` is the idempotency key, one per visit and recipient, so a receiver that sees the same
    notification twice can show it once.
    """

    key: str
    visit: Visit
    recipient: Staff
    notifier_id: str
    created_at: float
    expires_at: float
    fallback: Fallback | None = None  #: escalation, from the routing rule's ``escalate:``
    escalated_from: str = ""  #: staff id of the recipient who did not respond (an escalation)

    @classmethod
    def of_visit(
        cls,
        visit: Visit,
        recipient: Staff,
        notifier_id: str,
        created_at: float,
        expires_at: float,
        *,
        fallback: Fallback | None = None,
        escalated_from: str = "",
    ) -> Notification:
        """The notification of ``visit`` to ``recipient``, keyed by :func:`notification_key` (the
        routing and the escalation make them alike)."""
        unresolved = visit.kind is VisitKind.UNRESOLVED
        return cls(
            key=notification_key(visit.visit_id, recipient.id, unresolved=unresolved),
            visit=visit,
            recipient=recipient,
            notifier_id=notifier_id,
            created_at=created_at,
            expires_at=expires_at,
            fallback=fallback,
            escalated_from=escalated_from,
        )


@attrs.frozen(slots=True)
class DeliveryResult:
    notification_key: str
    notifier_id: str
    state: DeliveryState
    at: float
    detail: str = ""
    attempt: int = 1
