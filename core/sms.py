"""The text of a pager SMS and how it is cut into parts: what every SMS notifier shares.

A visit becomes the same short text whichever way it leaves the bank (a GSM modem, an operator's SMSC,
a chat service), so staff see the same words when a profile switches notifier.  The text says as
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

import datetime as dt
import enum
import re
from collections.abc import Callable, Mapping
from typing import Protocol
from zoneinfo import ZoneInfo

import attrs

from .model import Notification, Staff, Visit, VisitKind
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
_REASONS = {
    "en": {
        "lost": "card reported LOST",
        "revoked": "card REVOKED",
        "expired": "card EXPIRED",
        "not_yet_valid": "card not yet valid",
        "wrong_branch": "card not valid at this branch",
        "tid_mismatch": "chip ID mismatch, possible clone",
        "too_fast": "seen at another branch moments ago, possible clone",
    },
    "zh": {
        "lost": "已挂失",
        "revoked": "已注销",
        "expired": "已过期",
        "not_yet_valid": "尚未生效",
        "wrong_branch": "非本网点卡",
        "tid_mismatch": "芯片ID不符，疑似克隆",
        "too_fast": "刚在其他网点出现，疑似克隆",
    },
}
_TIERS_ZH = {"silver": "银卡", "gold": "金卡", "platinum": "白金卡", "diamond": "钻石卡"}
_WORDS = {
    "en": {
        "arrival": "VIP",
        "alert": "CARD ALERT",
        "suspect": "SUSPECT CARD",
        "unknown_reason": "card rejected",
        "manager": " Client manager: {}.",
        "id": ", ID *{}",
        "at": " at {}",
        "advice": " Do not greet; check the card discreetly.",
        "unresolved": "card of customer {} (no identity store answered)",
        "card_seen": "CARD SEEN",
        "card_seen_text": "card ...{} read, identity stores not answering; look out for the customer.",
        "stale": " (cached data)",
    },
    "zh": {
        "arrival": "贵宾到店",
        "alert": "卡片警报",
        "suspect": "可疑卡片",
        "unknown_reason": "卡片被拒",
        "manager": "客户经理：{}。",
        "id": "，证件尾号{}",
        "at": "，{}",
        "advice": "请勿问候，请低调核实卡片。",
        "unresolved": "客户{}的卡（身份库无应答）",
        "card_seen": "读到贵宾卡",
        "card_seen_text": "卡号尾号{}，身份库暂无应答，请留意门口客户。",
        "stale": "（缓存数据）",
    },
}


def _tier(tier: str | None, language: str) -> str:
    if not tier:
        return ""
    return printable(_TIERS_ZH.get(tier.lower(), tier) if language == "zh" else tier.upper())


def _who(visit: Visit, language: str) -> str:
    words = _WORDS[language]
    if visit.customer is not None:
        name = shown(visit.customer.name)
    elif visit.card is not None:
        name = words["unresolved"].format(printable(mask_tail(visit.card.customer_no, 4)))
    else:
        name = "?"
    tier = _tier(visit.tier, language)
    if not tier:
        return name
    return f"{name}（{tier}）" if language == "zh" else f"{name} ({tier})"


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


def notification_text(notification: Notification, branch: BranchFacts, language: str) -> str:
    """The text of one notification, as every SMS notifier sends it (:func:`render` of its visit)."""
    visit = notification.visit
    return render(visit, branch_name=branch.branch_name, staff=branch.staff, language=language, tz=branch.tz)


def render(
    visit: Visit,
    *,
    branch_name: str,
    staff: Mapping[str, Staff],
    language: str = "en",
    tz: ZoneInfo | None = None,
) -> str:
    """The text for one visit.  Chinese texts go out as UCS2, others as GSM 7-bit where they can."""
    words = _WORDS[language]
    at = dt.datetime.fromtimestamp(visit.arrived_at, tz).strftime("%H:%M")  # the branch's clock
    where = words["at"].format(printable(visit.arrival.reader_id))
    branch_name = printable(branch_name)
    stale = words["stale"] if visit.stale else ""
    if visit.kind is VisitKind.UNRESOLVED:
        seen = words["card_seen_text"].format(visit.arrival.epc[-4:])
        if language == "zh":
            text = f"【{branch_name}】{at} {words['card_seen']}{where}：{seen}"
        else:
            text = f"{branch_name} {at} {words['card_seen']}{where}: {seen}"
    elif visit.kind in (VisitKind.REJECTED, VisitKind.SUSPECT):
        label = words["suspect" if visit.kind is VisitKind.SUSPECT else "alert"]
        reason = _REASONS[language].get(visit.reason.value if visit.reason else "", words["unknown_reason"])
        tail = _id_tail(visit)
        ident = words["id"].format(tail) if tail else ""
        if language == "zh":
            text = f"【{branch_name}】{at} {label}：{reason}。{_who(visit, language)}{ident}{where}。{stale}"
        else:
            text = f"{branch_name} {at} {label}: {reason}. {_who(visit, language)}{ident}{where}.{stale}"
        text += words["advice"]
    else:
        manager = ""
        cm = visit.customer.client_manager if visit.customer else None
        if cm:
            manager = words["manager"].format(shown(staff[cm].name if cm in staff else cm))
        if language == "zh":
            text = f"{at} {words['arrival']}：{_who(visit, language)}{where}。{stale}{manager}"
        else:
            text = f"{at} {words['arrival']} {_who(visit, language)}{where}.{stale}{manager}"
    return mask_numbers(text)
