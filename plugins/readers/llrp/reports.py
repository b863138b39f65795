"""What an LLRP reader reports, made plain: sllurp's tag dicts normalised in one place, and recorded
LLRP bytes split into messages and decoded, for captures and tests (on a live link sllurp frames the
TCP stream itself).

Wire facts are from ``llrp.md`` §1 (LLRP 1.0.1, p.161-162) and sllurp 3.0.5 ``llrp_proto.py``
``decode_TagReportData`` (§2).  Nothing here imports sllurp at module level.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

HEADER_LEN = 10  #: u16 reserved/version/type, u32 length (header included), u32 message id
#: A bound on one message, so a desynchronised stream is noticed rather than buffered for ever.
MAX_MESSAGE = 4 * 1024 * 1024
#: Standard message types (p.161-162): requests, their responses (+10), reports, events, custom.
MESSAGE_TYPES = frozenset(
    (1, 2, 3, 4, 11, 12, 13, 14, *range(20, 27), *range(30, 37), *range(40, 45), *range(50, 55))
) | {60, 61, 62, 63, 64, 72, 100, 1023}
#: Gen2 EPC bank: at most 31 words, 496 bits (the PC word's 5-bit length field).
MAX_EPC_HEX = 124

_HEX = re.compile(r"[0-9A-Fa-f]+")


class LLRPProtocolError(ValueError):
    """Bytes or a decoded tag report that are not valid LLRP."""


class TagReport(NamedTuple):
    """One TagReportData entry, as the pipeline wants it."""

    epc: str  #: upper-case hex
    antenna: int  #: 0 when the reader did not say
    rssi: float | None  #: dBm
    read_count: int  #: TagSeenCount: reads the reader folded into this entry
    reader_time: float | None  #: the reader's UTC clock, seconds (LLRP timestamps are µs)


def _uint(tag: Mapping[str, Any], key: str, bits: int) -> int | None:
    value = tag.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise LLRPProtocolError(f"{key} is not a {bits}-bit unsigned number: {value!r}")
    return value


def _sint(tag: Mapping[str, Any], key: str, bits: int) -> int | None:
    value = tag.get(key)
    if value is None:
        return None
    limit = 1 << (bits - 1)
    if isinstance(value, bool) or not isinstance(value, int) or not -limit <= value < limit:
        raise LLRPProtocolError(f"{key} is not a {bits}-bit signed number: {value!r}")
    return value


def _epc(tag: Mapping[str, Any]) -> str:
    # sllurp sets "EPC" for both EPC-96 and EPCData and keeps "EPC-96" for old clients; either
    # way the value is the EPC as hex text in bytes (b'3005fb63...'), not the raw bytes.
    raw = tag.get("EPC", tag.get("EPC-96"))
    if isinstance(raw, bytes | bytearray):
        try:
            raw = raw.decode("ascii")
        except UnicodeDecodeError:
            raise LLRPProtocolError("EPC is not hex text") from None
    if not isinstance(raw, str):
        raise LLRPProtocolError(f"tag report has no EPC: {type(raw).__name__}")
    if not raw or len(raw) > MAX_EPC_HEX or not _HEX.fullmatch(raw):
        raise LLRPProtocolError(f"EPC is not 1-{MAX_EPC_HEX} hex digits: {raw[:40]!r}")
    return raw.upper()


def normalise_tag(tag: Any) -> TagReport:
    """One of sllurp's TagReportData dicts as a :class:`TagReport`.

    AntennaID and PeakRSSI are there only if the ROSpec's TagReportContentSelector enabled them; the
    driver enables them.  Impinj's ImpinjPeakRSSI (centi-dBm) is preferred when present.
    """
    if not isinstance(tag, Mapping):
        raise LLRPProtocolError(f"tag report is not a mapping: {type(tag).__name__}")
    epc = _epc(tag)
    antenna = _uint(tag, "AntennaID", 16)
    centi = _sint(tag, "ImpinjPeakRSSI", 16)
    peak = _sint(tag, "PeakRSSI", 8)
    rssi = centi / 100 if centi is not None else None if peak is None else float(peak)
    seen = _uint(tag, "TagSeenCount", 16)
    stamp = _uint(tag, "LastSeenTimestampUTC", 64)
    if stamp is None:
        stamp = _uint(tag, "FirstSeenTimestampUTC", 64)
    return TagReport(
        epc,
        antenna or 0,
        rssi,
        max(1, seen or 1),
        None if stamp is None else stamp / 1_000_000,
    )


# -- recorded bytes ------------------------------------------------------------------------------


class Header(NamedTuple):
    version: int
    type: int
    length: int
    message_id: int


def parse_header(data: bytes, pos: int = 0) -> Header:
    if len(data) - pos < HEADER_LEN:
        raise LLRPProtocolError(f"{len(data) - pos} bytes are too few for an LLRP header")
    word = int.from_bytes(data[pos : pos + 2], "big")
    return Header(
        (word >> 10) & 0x7,
        word & 0x3FF,
        int.from_bytes(data[pos + 2 : pos + 6], "big"),
        int.from_bytes(data[pos + 6 : pos + 10], "big"),
    )


def _plausible(head: Header, first_byte: int) -> bool:
    return (
        first_byte >> 5 == 0  # reserved bits
        and head.version == 1
        and head.type in MESSAGE_TYPES
        and HEADER_LEN <= head.length <= MAX_MESSAGE
    )


class Split(NamedTuple):
    messages: list[bytes]
    skipped: int  #: bytes that could not start a message
    rest: bytes  #: an incomplete message at the end, to be continued


def split_messages(data: bytes) -> Split:
    """Cut a byte stream into LLRP messages.  A byte that cannot start a plausible header (reserved
    bits 0, version 1, a standard type, a sane length) is skipped and counted, so a capture with junk
    in it still yields every message in it."""
    data = bytes(data)
    out: list[bytes] = []
    pos = skipped = 0
    while len(data) - pos >= HEADER_LEN:
        head = parse_header(data, pos)
        if not _plausible(head, data[pos]):
            pos += 1
            skipped += 1
            continue
        if len(data) - pos < head.length:
            break
        out.append(data[pos : pos + head.length])
        pos += head.length
    return Split(out, skipped, data[pos:])


def decode_message(message: bytes) -> tuple[str, dict[str, Any]]:
    """One whole message through sllurp's decoder: its name and its fields."""
    head = parse_header(message)
    if not _plausible(head, message[0]) or head.length != len(message):
        raise LLRPProtocolError(f"not one LLRP message: {head}, {len(message)} bytes")
    from sllurp.llrp import LLRPMessage  # GPL code: only when asked to decode

    try:
        decoded = LLRPMessage(msgbytes=bytes(message))
        name = decoded.getName()
        body = decoded.msgdict[name]
    except Exception as exc:  # sllurp raises LLRPError, KeyError, struct.error, ... on bad bytes
        raise LLRPProtocolError(f"undecodable LLRP message type {head.type}: {exc!r}") from None
    if not isinstance(name, str) or not isinstance(body, dict):
        raise LLRPProtocolError(f"undecodable LLRP message type {head.type}")
    return name, body


def tag_dicts(body: Mapping[str, Any]) -> list[Any]:
    """The TagReportData entries of a decoded RO_ACCESS_REPORT (sllurp gives a list, or nothing)."""
    tags = body.get("TagReportData", [])
    if not isinstance(tags, list):
        raise LLRPProtocolError(f"TagReportData is not a list: {type(tags).__name__}")
    return tags


def decode_reports(data: bytes) -> list[TagReport]:
    """Every tag read in a recording of RO_ACCESS_REPORTs; other messages are passed over."""
    reads: list[TagReport] = []
    for message in split_messages(data).messages:
        name, body = decode_message(message)
        if name == "RO_ACCESS_REPORT":
            reads.extend(normalise_tag(tag) for tag in tag_dicts(body))
    return reads
