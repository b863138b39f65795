"""The text of a pager SMS and how it is cut into parts: what every SMS notifier shares.

A visit becomes the same short text whichever way it leaves the bank (a GSM modem, an operator's SMSC,
a chat service), so staff see the same words when a profile switches notifier.  The words are the catalogue's
(:mod:`vipsense.i18n`, the bank's terms of ``docs/glossary.md``), in the branch's language unless the
notifier's ``language:`` names one; Chinese puts no space between sentences, English one.  The text says as
little as does the job: time, name, tier, door, the client manager; and for a rejected or suspect card
a clear alert with the last four characters of the ID number at most.  No phone number, no full ID
number, no customer number in clear.  Whatever the data holds,
:func:`vipsense.privacy.mask_personal_numbers` masks every ID-, mobile- or landline-shaped number in the
names that go in (however written: ``tel+86...``, spaces), and :func:`mask_numbers` every phone- or
ID-like run of digits in the finished text (``privacy-security.md`` §1: masked on every notification).
Names and tiers go in through :func:`vipsense.privacy.printable`: a control character or a line break
in the data is shown as an escape, never sent, so a text cannot carry a line the bank did not write.

Why our own segmentation: staff texts are usually Chinese, and the libraries at hand encode UCS2 per
code point, so a character outside the BMP (𠮷, emoji) breaks them (``sms-paging.md`` §6).  Here UCS2
is UTF-16BE: astral characters become surrogate pairs, lengths count UTF-16 code units, and a part
never ends inside a pair or a GSM-7 escape (``sms-paging.md`` §4).  Section numbers below refer to
``sms-paging.md``.  Encoding a part for a particular transport (an SMS-SUBMIT PDU for a modem, a
``short_message`` for SMPP) stays with its notifier.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import re
from collections.abc import Callable, Mapping
from typing import Protocol
from zoneinfo import ZoneInfo

import attrs

from . import i18n
from .i18n import _, lazy_gettext
from .model import Notification, Staff, Visit, VisitKind, tier_label
from .privacy import mask_id_number, mask_mobile, mask_tail, printable, shown

# -- the GSM 7-bit default alphabet and its extension table (TS 23.038 §6.2.1) -------------------------
#: Septet value -> character.  0x1B is the escape to the extension table, never a character itself.
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: Characters reached with ESC + septet; each costs two septets (§4).
GSM7_EXTENSION = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D, "]": 0x3E}
GSM7_EXTENSION.update({"|": 0x40, "€": 0x65})
ESC = 0x1B
assert len(GSM7_BASIC) == 128

_BASIC_INDEX = {ch: i for i, ch in enumerate(GSM7_BASIC) if i != ESC}

#: Octets per SMS and the usable payload with the 6-octet 8-bit-reference concatenation UDH (§4).
SINGLE_SEPTETS, PART_SEPTETS = 160, 153
SINGLE_UNITS, PART_UNITS = 70, 67  #: UTF-16 code units


class Alphabet(enum.IntEnum):
    """TP-DCS for a plain (class-less, uncompressed) message (§3)."""

    GSM7 = 0x00
    UCS2 = 0x08


WORD_CUT = 15  #: a cut text loses at most this many characters more to end on a whole word
#: What a cut text ends with: "…" is not in the GSM alphabet.
ELLIPSIS = {Alphabet.GSM7: "...", Alphabet.UCS2: "…"}


def gsm7_septets(text: str) -> list[int] | None:
    """The septets for ``text``, or None when a character is not in the GSM alphabet."""
    out: list[int] = []
    for ch in text:
        value = _BASIC_INDEX.get(ch)
        if value is not None:
            out.append(value)
        elif ch in GSM7_EXTENSION:
            out += (ESC, GSM7_EXTENSION[ch])
        else:
            return None
    return out


def _gsm7_cost(ch: str) -> int:
    return 2 if ch in GSM7_EXTENSION else 1


def _ucs2_cost(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1  # a surrogate pair (§4)


# -- numbers (TS 23.040 §9.1.2.5) ---------------------------------------------------------------------
_NUMBER = re.compile(r"^\+?[0-9]{1,20}$")


def normalise_number(number: str) -> str:
    """Spaces, dashes, dots and brackets dropped; ``00`` (China's international prefix) becomes ``+``.

    Raises ValueError for anything that is not a dialable number."""
    cleaned = re.sub(r"[\s\-.()]", "", number or "")
    if cleaned.startswith("00"):
        cleaned = "+" + cleaned[2:]
    if not _NUMBER.match(cleaned) or cleaned == "+":
        raise ValueError("not a phone number (digits, optionally with a leading + or 00)")
    return cleaned


def recipient_number(person: Staff) -> str:
    """The number a member of staff is texted on, normalised (:func:`normalise_number`), for every
    SMS notifier alike.  Raises ValueError with the line the status page and the log show when they
    cannot be texted; the number in it is masked."""
    who = f"{person.name} ({person.id})"
    if not person.mobile:
        raise ValueError(f"{who} has no mobile number in the profile's staff list")
    try:
        return normalise_number(person.mobile)
    except ValueError:
        raise ValueError(f"{who}'s mobile {mask_mobile(person.mobile)} is not a phone number") from None


# -- segmentation (§4) ---------------------------------------------------------------------------------
@attrs.frozen
class Segments:
    """A text cut into the parts it is sent as."""

    alphabet: Alphabet
    parts: tuple[str, ...]
    truncated: bool = False  #: the text was longer than ``max_parts`` and ends with an ellipsis

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _clean(text: str) -> str:
    """Lone surrogates cannot be sent (nor encoded): they become U+FFFD."""
    return "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)


def _pack(text: str, cost: Callable[[str], int], limit: int, max_parts: int) -> tuple[list[list[str]], bool]:
    """Greedy packing of whole characters into parts of at most ``limit`` units."""
    parts: list[list[str]] = [[]]
    used = 0
    for ch in text:
        c = cost(ch)
        if used + c > limit:
            if len(parts) == max_parts:
                return parts, True
            parts.append([])
            used = 0
        parts[-1].append(ch)
        used += c
    return parts, False


def segment(text: str, max_parts: int = 4) -> Segments:
    """Choose the alphabet (one non-GSM character makes the whole message UCS2, §4), then cut into
    parts: one part of 160 septets / 70 units, or up to ``max_parts`` of 153 / 67.  A longer text
    loses its end to an ellipsis."""
    if max_parts < 1:
        raise ValueError("max_parts must be at least 1")
    text = _clean(text)
    if gsm7_septets(text) is not None:
        alphabet, cost, single, part = Alphabet.GSM7, _gsm7_cost, SINGLE_SEPTETS, PART_SEPTETS
    else:
        alphabet, cost, single, part = Alphabet.UCS2, _ucs2_cost, SINGLE_UNITS, PART_UNITS
    ellipsis = ELLIPSIS[alphabet]
    if sum(map(cost, text)) <= single:
        return Segments(alphabet, (text,))
    limit = single if max_parts == 1 else part
    parts, truncated = _pack(text, cost, limit, max_parts)
    if truncated:
        last = parts[-1]
        room = limit - sum(map(cost, ellipsis))
        while last and sum(map(cost, last)) > room:
            last.pop()
        space = "".join(last).rfind(" ", len(last) - WORD_CUT)
        if space > 0:  # end on a whole word where there are words (Chinese has no spaces)
            del last[space:]
        while last and last[-1].isspace():
            last.pop()
        last.extend(ellipsis)
    return Segments(alphabet, tuple("".join(p) for p in parts), truncated)


# -- concatenation (§4) -------------------------------------------------------------------------------
IEI_CONCAT_8BIT = 0x00  #: the information element of an 8-bit-reference concatenation UDH


@attrs.frozen
class Concat:
    """Part ``seq`` of ``total`` of message ``reference`` (8-bit reference UDH ``05 00 03``, §4)."""

    reference: int = attrs.field(validator=[attrs.validators.ge(0), attrs.validators.le(255)])
    total: int = attrs.field(validator=[attrs.validators.ge(1), attrs.validators.le(255)])
    seq: int = attrs.field(validator=[attrs.validators.ge(1), attrs.validators.le(255)])

    def udh(self) -> bytes:
        return bytes((0x05, IEI_CONCAT_8BIT, 0x03, self.reference, self.total, self.seq))


# -- masking -------------------------------------------------------------------------------------------
_ID_LIKE = re.compile(r"\d{17}[\dXx]|\d{15}")
_PHONE_LIKE = re.compile(r"\+?\d{7,}")


def mask_numbers(text: str) -> str:
    """Every ID-number-like or phone-number-like run of digits masked (``vipsense.privacy``), for
    logs and for texts that leave the bank."""
    text = _ID_LIKE.sub(lambda m: mask_id_number(m.group()), text)
    return _PHONE_LIKE.sub(lambda m: mask_mobile(m.group()), text)


# -- the text for a visit --------------------------------------------------------------------------------
#: Why a card was refused, as staff read it in a text (and on the PDA and the console's short lines).
REASONS = {
    "lost": lazy_gettext("card reported LOST"),
    "revoked": lazy_gettext("card REVOKED"),
    "expired": lazy_gettext("card EXPIRED"),
    "not_yet_valid": lazy_gettext("card not yet valid"),
    "wrong_branch": lazy_gettext("card not valid at this branch"),
    "tid_mismatch": lazy_gettext("chip ID mismatch, possible clone"),
    "too_fast": lazy_gettext("seen at another branch moments ago, possible clone"),
}
#: A profile's notifier ``language:`` as written before the catalogue (``zh``), and as the catalogue
#: names it (``zh_CN``); ``None`` follows the branch (the language in force when the text is made).
LANGUAGES = {"en": "en", "zh": "zh_CN", "zh_CN": "zh_CN", None: None}


def locale_of(language: str | None) -> str | None:
    """The catalogue's locale for a notifier's ``language:`` setting (``zh`` is ``zh_CN``)."""
    try:
        return LANGUAGES[language]
    except KeyError:
        raise ValueError(
            _("unknown language {language!r} (one of en, zh_CN)").format(language=language)
        ) from None


def speaking(language: str | None) -> contextlib.AbstractContextManager[str]:
    """Messages made inside are in a notifier's ``language:`` (None: the language already in force)."""
    return i18n.using(locale_of(language) or i18n.current())


def reason_text(reason: str | None) -> str:
    """Why a card was refused, in the language in force."""
    return str(REASONS.get(reason or "", _("card rejected")))


def tier_name(tier: str | None) -> str:
    """A tier as staff read it: ``GOLD`` in English, ``金卡`` in Chinese; an unknown one as written."""
    return printable(tier_label(tier).upper())


def _sentences(*parts: str) -> str:
    """Sentences one after another: Chinese puts no space between them, English one."""
    return ("" if i18n.current().startswith("zh") else " ").join(p for p in parts if p)


def _who(visit: Visit) -> str:
    if visit.customer is not None:
        name = shown(visit.customer.name)
    elif visit.card is not None:
        name = _("card of customer {customer_no} (no identity store answered)").format(
            customer_no=printable(mask_tail(visit.card.customer_no, 4))
        )
    else:
        name = "?"
    tier = tier_name(visit.tier)
    return _("{name} ({tier})").format(name=name, tier=tier) if tier else name


def _id_tail(visit: Visit) -> str:
    """The last four characters of the ID number (what ``mask_id_number`` leaves), or ""."""
    if visit.customer is None:
        return ""
    return printable(mask_id_number(visit.customer.id_number).lstrip("*"))


class BranchFacts(Protocol):
    """What a text needs to know of the branch: a notifier's ``vipsense.api.PluginContext`` has it."""

    @property
    def branch_name(self) -> str: ...
    @property
    def staff(self) -> Mapping[str, Staff]: ...
    @property
    def tz(self) -> ZoneInfo | None: ...


def notification_text(notification: Notification, branch: BranchFacts, language: str | None = None) -> str:
    """The text of one notification, as every SMS notifier sends it (:func:`render` of its visit)."""
    visit = notification.visit
    return render(visit, branch_name=branch.branch_name, staff=branch.staff, language=language, tz=branch.tz)


def render(
    visit: Visit,
    *,
    branch_name: str,
    staff: Mapping[str, Staff],
    language: str | None = None,
    tz: ZoneInfo | None = None,
) -> str:
    """The text for one visit, in ``language`` (``en``, ``zh``/``zh_CN``; None: the language in force,
    which a running branch sets from its profile).  Chinese texts go out as UCS2, others as GSM 7-bit
    where they can."""
    with speaking(language):
        return mask_numbers(_text(visit, branch_name, staff, tz))


def _text(visit: Visit, branch_name: str, staff: Mapping[str, Staff], tz: ZoneInfo | None) -> str:
    at = dt.datetime.fromtimestamp(visit.arrived_at, tz).strftime("%H:%M")  # the branch's clock
    door = printable(visit.arrival.reader_id)
    branch = printable(branch_name)
    stale = _("(cached data)") if visit.stale else ""
    if visit.kind is VisitKind.UNRESOLVED:
        return _(
            "{branch} {time} CARD SEEN at {door}: card ...{epc_tail} read, identity stores not answering; "
            "look out for the customer."
        ).format(branch=branch, time=at, door=door, epc_tail=visit.arrival.epc[-4:])
    if visit.kind in (VisitKind.REJECTED, VisitKind.SUSPECT):
        label = _("SUSPECT CARD") if visit.kind is VisitKind.SUSPECT else _("CARD ALERT")
        fields = {
            "branch": branch,
            "time": at,
            "label": label,
            "reason": reason_text(visit.reason.value if visit.reason else None),
            "customer": _who(visit),
            "door": door,
        }
        tail = _id_tail(visit)
        if tail:
            what = _("{branch} {time} {label}: {reason}. {customer}, ID *{id_tail} at {door}.").format(
                id_tail=tail, **fields
            )
        else:
            what = _("{branch} {time} {label}: {reason}. {customer} at {door}.").format(**fields)
        return _sentences(what, stale, _("Do not greet; check the card discreetly."))
    manager = ""
    cm = visit.customer.client_manager if visit.customer else None
    if cm:
        manager = _("Client manager: {name}.").format(name=shown(staff[cm].name if cm in staff else cm))
    arrival = _("{time} VIP {customer} at {door}.").format(time=at, customer=_who(visit), door=door)
    return _sentences(arrival, stale, manager)
