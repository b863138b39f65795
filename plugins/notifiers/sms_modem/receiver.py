"""What the far end makes of the PDUs a modem is given: the emulator's decoder and reassembler.

Written apart from :mod:`.pdu` on purpose (its own alphabet table, a different bit unpacking), so a
test that sends with the notifier and reads here checks the encoder against a second reading of
TS 23.040 / 23.038, not against itself.  It trusts nothing the sender says: every length is checked
against the bytes, and a part is decoded on its own, so a surrogate pair or a GSM-7 escape split
across parts shows up as an error instead of healing when the parts are joined (``sms-paging.md`` §4).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import attrs

#: TS 23.038 §6.2.1, column by column as the standard prints it (0x00-0x0F, 0x10-0x1F, …).
_COLUMNS = (
    "@£$¥èéùìòÇ\nØø\rÅå",
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ",
    " !\"#¤%&'()*+,-./",
    "0123456789:;<=>?",
    "¡ABCDEFGHIJKLMNO",
    "PQRSTUVWXYZÄÖÑÜ§",
    "¿abcdefghijklmno",
    "pqrstuvwxyzäöñüà",
)
DEFAULT_ALPHABET = "".join(_COLUMNS)
#: TS 23.038 §6.2.1.1, the extension table reached through 0x1B.
EXTENSION = {10: "\f", 20: "^", 40: "{", 41: "}", 47: "\\", 60: "[", 61: "~", 62: "]", 64: "|", 101: "€"}


class BadPdu(ValueError):
    """The bytes are not a valid SMS-SUBMIT: a modem answers ``+CMS ERROR: 304``."""


@attrs.frozen
class Submit:
    """One SMS-SUBMIT as decoded."""

    number: str  #: "+8613800138000" for an international number, else the digits
    text: str
    alphabet: str  #: "gsm7", "8bit" or "ucs2"
    smsc: str | None = None  #: from the PDU's SMSC part; None: the SIM's +CSCA
    reference: int | None = None  #: concatenation reference
    total: int = 1
    seq: int = 1
    status_report: bool = False
    validity: int | None = None  #: TP-VP octet, relative format
    errors: tuple[str, ...] = ()  #: what a phone would show wrongly


def _digits(data: bytes, count: int) -> str:
    out = []
    for octet in data:
        out += [str(octet & 0x0F), str(octet >> 4)]
    digits = "".join(out)[:count]
    if any(not d.isdigit() for d in digits):
        raise BadPdu(f"address digits are not decimal: {data.hex()}")
    return digits


def _address(data: bytes, at: int, in_octets: bool) -> tuple[str, int]:
    """An address field at ``at``: (number, offset after it).  SMSC lengths count octets, TP-DA
    lengths count digits."""
    length = data[at]
    if in_octets:
        if length == 0:
            return "", at + 1
        toa, body = data[at + 1], data[at + 2 : at + 1 + length]
        count = 2 * len(body) - (1 if body and body[-1] >> 4 == 0xF else 0)
        end = at + 1 + length
    else:
        toa, body = data[at + 1], data[at + 2 : at + 2 + (length + 1) // 2]
        count = length
        end = at + 2 + (length + 1) // 2
    if end > len(data) or len(body) * 2 < count:
        raise BadPdu("address runs past the end of the PDU")
    digits = _digits(body, count)
    return ("+" + digits if (toa >> 4) & 0x7 == 1 else digits), end


def _septets(data: bytes, first: int, count: int) -> list[int]:
    """Septets ``first .. first+count`` of the user data, read as one little-endian bit string."""
    bits = int.from_bytes(data, "little")
    return [(bits >> (7 * i)) & 0x7F for i in range(first, first + count)]


def _gsm7_text(septets: list[int]) -> tuple[str, list[str]]:
    out, errors = [], []
    escaped = False
    for s in septets:
        if escaped:
            out.append(EXTENSION.get(s, DEFAULT_ALPHABET[s] if s != 0x1B else " "))
            escaped = False
        elif s == 0x1B:
            escaped = True
        else:
            out.append(DEFAULT_ALPHABET[s])
    if escaped:
        errors.append("the part ends with half of a GSM-7 escape")
    return "".join(out), errors


def _alphabet(dcs: int) -> str:
    group = dcs >> 4
    if group <= 0x7:  # general data coding (and automatic deletion)
        if dcs & 0x20:
            raise BadPdu("compressed text is not supported")
        return ("gsm7", "8bit", "ucs2", "reserved")[(dcs >> 2) & 0x3]
    if group in (0xC, 0xD):
        return "gsm7"
    if group == 0xE:
        return "ucs2"
    if group == 0xF:
        return "8bit" if dcs & 0x04 else "gsm7"
    raise BadPdu(f"reserved data coding scheme 0x{dcs:02X}")


def _concat(header: bytes) -> tuple[int | None, int, int]:
    """Reference, total and sequence from an 8-bit (IEI 00) or 16-bit (IEI 08) concatenation IE."""
    i = 0
    while i + 1 < len(header):
        iei, length = header[i], header[i + 1]
        value = header[i + 2 : i + 2 + length]
        if len(value) != length:
            raise BadPdu("user data header element runs past the header")
        if iei == 0x00 and length == 3:
            return value[0], value[1], value[2]
        if iei == 0x08 and length == 4:
            return (value[0] << 8) | value[1], value[2], value[3]
        i += 2 + length
    return None, 1, 1


def decode_submit(pdu: bytes, tpdu_length: int | None = None) -> Submit:
    """Decode an SMS-SUBMIT with its leading SMSC part, as typed after the ``> `` prompt."""
    try:
        return _decode(pdu, tpdu_length)
    except IndexError:
        raise BadPdu("the PDU ends too early") from None


def _decode(pdu: bytes, tpdu_length: int | None) -> Submit:
    smsc, at = _address(pdu, 0, in_octets=True)
    if tpdu_length is not None and len(pdu) - at != tpdu_length:
        raise BadPdu(f"AT+CMGS said {tpdu_length} octets but the TPDU has {len(pdu) - at}")
    fo = pdu[at]
    if fo & 0x03 != 0x01:
        raise BadPdu(f"not an SMS-SUBMIT (first octet 0x{fo:02X})")
    number, at = _address(pdu, at + 2, in_octets=False)  # after TP-MR
    if not number.lstrip("+"):
        raise BadPdu("empty destination address")
    dcs = pdu[at + 1]
    at += 2
    vpf = (fo >> 3) & 0x3
    validity = pdu[at] if vpf == 2 else None
    at += {0: 0, 2: 1, 1: 7, 3: 7}[vpf]
    udl, ud = pdu[at], pdu[at + 1 :]
    alphabet = _alphabet(dcs)
    header = b""
    if fo & 0x40:
        header = ud[1 : 1 + ud[0]]
        if len(header) != ud[0]:
            raise BadPdu("user data header longer than the user data")
    reference, total, seq = _concat(header)
    errors: list[str] = []
    if alphabet == "gsm7":
        if len(ud) != (udl * 7 + 7) // 8:
            raise BadPdu(f"{udl} septets need {(udl * 7 + 7) // 8} octets, the PDU has {len(ud)}")
        skip = (len(header) + 1) * 8 if header else 0
        first = (skip + 6) // 7  # the text starts on a septet boundary after fill bits
        text, errors = _gsm7_text(_septets(ud, first, udl - first))
    else:
        if len(ud) != udl:
            raise BadPdu(f"user data length says {udl} octets, the PDU has {len(ud)}")
        body = ud[len(header) + 1 :] if header else ud
        if alphabet == "ucs2":
            try:
                text = body.decode("utf-16-be")
            except UnicodeDecodeError as exc:  # odd length or a lone surrogate: a split pair
                text = body.decode("utf-16-be", "replace")
                errors.append(f"broken UTF-16 in this part: {exc.reason}")
        else:
            text = body.hex().upper()
    if udl > (160 if alphabet == "gsm7" else 140):
        raise BadPdu(f"user data length {udl} is more than one SMS holds")
    return Submit(
        number=number,
        text=text,
        alphabet=alphabet,
        smsc=smsc or None,
        reference=reference,
        total=total,
        seq=seq,
        status_report=bool(fo & 0x20),
        validity=validity,
        errors=tuple(errors),
    )


@attrs.frozen
class Message:
    """A whole message as the recipient's phone shows it."""

    number: str
    text: str
    parts: tuple[Submit, ...]
    references: tuple[int, ...]  #: the +CMGS message reference of each part
    received_at: float

    @property
    def errors(self) -> tuple[str, ...]:
        return tuple(e for p in self.parts for e in p.errors)

    def as_json(self) -> str:
        return json.dumps(
            {
                "at": self.received_at,
                "number": self.number,
                "text": self.text,
                "parts": len(self.parts),
                "alphabet": self.parts[0].alphabet,
                "references": list(self.references),
                "errors": list(self.errors),
            },
            ensure_ascii=False,
        )


class Inbox:
    """Parts in, whole messages out: concatenated parts are joined once every part has come."""

    def __init__(
        self, record: Path | None = None, on_message: Callable[[Message], None] | None = None
    ) -> None:
        self.messages: list[Message] = []
        self.parts: list[Submit] = []  #: every part, in arrival order
        self.record = record
        self.on_message = on_message
        self._pending: dict[tuple[str, int, int], dict[int, tuple[Submit, int]]] = {}

    def add(self, part: Submit, mr: int) -> Message | None:
        self.parts.append(part)
        if part.reference is None or part.total <= 1:
            return self._complete(part.number, [(part, mr)])
        key = (part.number, part.reference, part.total)
        got = self._pending.setdefault(key, {})
        got[part.seq] = (part, mr)
        if len(got) < part.total or set(got) != set(range(1, part.total + 1)):
            return None
        del self._pending[key]
        return self._complete(part.number, [got[i] for i in sorted(got)])

    @property
    def incomplete(self) -> int:
        """Concatenated messages still missing a part."""
        return len(self._pending)

    def _complete(self, number: str, parts: list[tuple[Submit, int]]) -> Message:
        message = Message(
            number=number,
            text="".join(p.text for p, _ in parts),
            parts=tuple(p for p, _ in parts),
            references=tuple(mr for _, mr in parts),
            received_at=time.time(),
        )
        self.messages.append(message)
        if self.record is not None:
            with self.record.open("a", encoding="utf-8") as f:
                f.write(message.as_json() + "\n")
        if self.on_message is not None:
            self.on_message(message)
        return message
