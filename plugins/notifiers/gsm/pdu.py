"""SMS-SUBMIT PDUs (3GPP TS 23.040) with GSM 7-bit or UCS2 text (TS 23.038) and concatenation.

Why our own encoder: staff texts are usually Chinese, and the libraries at hand encode UCS2 per code
point, so a character outside the BMP (𠮷, emoji) breaks them (``sms-paging.md`` §6).  Here UCS2 is
UTF-16BE: astral characters become surrogate pairs, lengths count UTF-16 code units, and a part never
ends inside a pair or a GSM-7 escape (``sms-paging.md`` §4).  Section numbers below refer to
``sms-paging.md``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence

import attrs

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


def pack_septets(septets: Sequence[int], fill_bits: int = 0) -> bytes:
    """Septets packed LSB first into octets, after ``fill_bits`` zero bits (TS 23.038 §6.1.2.1.1)."""
    out = bytearray()
    acc, nbits = 0, fill_bits
    for septet in septets:
        acc |= (septet & 0x7F) << nbits
        nbits += 7
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits:
        out.append(acc & 0xFF)
    return bytes(out)


# -- addresses (TS 23.040 §9.1.2.5) --------------------------------------------------------------------
TOA_INTERNATIONAL = 0x91  #: ISDN numbering plan, international number ("+86…")
TOA_UNKNOWN = 0x81  #: ISDN numbering plan, type unknown: a national number as dialled
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


def semi_octets(digits: str) -> bytes:
    """``8613800138000`` -> ``68 31 08 10 83 00 F0``: swapped nibbles, ``F`` pad (§3)."""
    if len(digits) % 2:
        digits += "F"
    return bytes.fromhex("".join(digits[i + 1] + digits[i] for i in range(0, len(digits), 2)))


def encode_address(number: str) -> bytes:
    """TP-DA: digit count, type of address, semi-octet digits."""
    number = normalise_number(number)
    toa = TOA_INTERNATIONAL if number.startswith("+") else TOA_UNKNOWN
    digits = number.lstrip("+")
    return bytes((len(digits), toa)) + semi_octets(digits)


def encode_smsc(number: str | None) -> bytes:
    """The leading SMSC part: ``00`` means "use the SIM's +CSCA" (§3); else its length in octets
    (type octet included), type, semi-octets."""
    if not number:
        return b"\x00"
    number = normalise_number(number)
    toa = TOA_INTERNATIONAL if number.startswith("+") else TOA_UNKNOWN
    body = bytes((toa,)) + semi_octets(number.lstrip("+"))
    return bytes((len(body),)) + body


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


def _pack(text: str, cost, limit: int, max_parts: int) -> tuple[list[list[str]], bool]:
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


# -- SMS-SUBMIT (§3) -----------------------------------------------------------------------------------
FO_SUBMIT = 0x01
FO_VP_RELATIVE = 0x10
FO_STATUS_REPORT = 0x20
FO_UDHI = 0x40
IEI_CONCAT_8BIT = 0x00


@attrs.frozen
class Concat:
    """Part ``seq`` of ``total`` of message ``reference`` (8-bit reference UDH ``05 00 03``, §4)."""

    reference: int = attrs.field(validator=[attrs.validators.ge(0), attrs.validators.le(255)])
    total: int = attrs.field(validator=[attrs.validators.ge(1), attrs.validators.le(255)])
    seq: int = attrs.field(validator=[attrs.validators.ge(1), attrs.validators.le(255)])

    def udh(self) -> bytes:
        return bytes((0x05, IEI_CONCAT_8BIT, 0x03, self.reference, self.total, self.seq))


@attrs.frozen
class Pdu:
    """What ``AT+CMGS`` needs: the hex to type after the prompt and the TPDU length (§3: octets
    after the SMSC part, not counting it)."""

    hex: str
    tpdu_length: int


def relative_validity(seconds: float) -> int:
    """TP-VP, relative format (TS 23.040 §9.2.3.12.1): 5-minute steps to 12 h, then half hours to 24 h,
    then days to 30 days, then weeks to 63 weeks; rounded up, capped."""
    minutes = max(5.0, seconds / 60)
    if minutes <= 720:
        return int(-(-minutes // 5)) - 1
    if minutes <= 1440:
        return 143 + int(-(-(minutes - 720) // 30))
    days = minutes / 1440
    if days <= 30:
        return 166 + int(-(-days // 1))
    return min(255, 192 + int(-(-(days / 7) // 1)))


def encode_user_data(body: str, alphabet: Alphabet, concat: Concat | None) -> tuple[int, bytes]:
    """TP-UDL and TP-UD: septet count for GSM-7 (UDH included, with fill bits so the text starts on a
    septet boundary, §4), octet count for UCS2."""
    udh = concat.udh() if concat else b""
    if alphabet is Alphabet.UCS2:
        ud = udh + body.encode("utf-16-be")
        return len(ud), ud
    septets = gsm7_septets(body)
    if septets is None:
        raise ValueError("text is not in the GSM 7-bit alphabet")
    fill = (7 - (len(udh) * 8) % 7) % 7
    header_septets = (len(udh) * 8 + fill) // 7
    return header_septets + len(septets), udh + pack_septets(septets, fill)


def encode_submit(
    number: str,
    body: str,
    alphabet: Alphabet,
    *,
    concat: Concat | None = None,
    smsc: str | None = None,
    validity: float | None = None,
    status_report: bool = False,
) -> Pdu:
    """One SMS-SUBMIT.  TP-MR is 0: the modem assigns the reference it answers in ``+CMGS: <mr>``."""
    fo = FO_SUBMIT | (FO_UDHI if concat else 0) | (FO_STATUS_REPORT if status_report else 0)
    vp = b""
    if validity is not None:
        fo |= FO_VP_RELATIVE
        vp = bytes((relative_validity(validity),))
    udl, ud = encode_user_data(body, alphabet, concat)
    if len(ud) > 140:
        raise ValueError(f"user data of {len(ud)} octets does not fit one SMS (140)")
    tpdu = bytes((fo, 0x00)) + encode_address(number) + bytes((0x00, alphabet)) + vp + bytes((udl,)) + ud
    return Pdu((encode_smsc(smsc) + tpdu).hex().upper(), len(tpdu))


def encode_message(
    number: str,
    text: str,
    *,
    reference: int = 0,
    max_parts: int = 4,
    smsc: str | None = None,
    validity: float | None = None,
) -> tuple[Segments, list[Pdu]]:
    """The whole message: its segments and one PDU per part, concatenated under ``reference``."""
    segments = segment(text, max_parts)
    total = len(segments.parts)
    pdus = [
        encode_submit(
            number,
            part,
            segments.alphabet,
            concat=Concat(reference & 0xFF, total, seq) if total > 1 else None,
            smsc=smsc,
            validity=validity,
        )
        for seq, part in enumerate(segments.parts, start=1)
    ]
    return segments, pdus
