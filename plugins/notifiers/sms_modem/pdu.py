"""SMS-SUBMIT PDUs (3GPP TS 23.040) for ``AT+CMGS``: the modem's encoding of a text's parts.

The text and its cutting into parts (GSM 7-bit or UCS2, TS 23.038; concatenation) are
:mod:`vipsense.sms`, shared with the other SMS notifiers; this module packs each part into the PDU a
modem takes in PDU mode.  Section numbers below refer to ``sms-paging.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from vipsense.sms import Alphabet, Concat, Segments, gsm7_septets, normalise_number, segment


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


# -- SMS-SUBMIT (§3) -----------------------------------------------------------------------------------
FO_SUBMIT = 0x01
FO_VP_RELATIVE = 0x10
FO_STATUS_REPORT = 0x20
FO_UDHI = 0x40


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
