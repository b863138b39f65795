"""The ThingMagic / JADAK embedded-module serial protocol (M5e, M6e, Micro, Nano, M7e), without I/O.

Framing, CRC, the command frames the driver sends and decoders for what the module answers, so the
driver, the emulator, the tests and the fuzzer all share one implementation.  Everything here is pure
and thread-free; the only third-party import is attrs.

Source: /work/shared/reference/thingmagic-serial.md ("ref §n" below), which condenses the Mercury API C
1.35.2.72 (``serial_reader_l3.c``, ``serial_reader.c``, ``tmr_status.h``) and real Nano captures from
SparkFun's ``Example Communication Logs/``.

Bad input never raises out of the parsers (they drop and count it); the decoders raise only
:class:`ProtocolError` (or its subclass :class:`StatusError` for a module's error status).
"""

from __future__ import annotations

import struct
from binascii import crc_hqx
from collections.abc import Sequence
from typing import ClassVar

import attrs

# -- opcodes (ref §5, serial_reader_imp.h 40-124) ------------------------------------------------------
VERSION = 0x03
BOOT_FIRMWARE = 0x04
SET_BAUD = 0x06
BOOT_BOOTLOADER = 0x09
GET_CURRENT_PROGRAM = 0x0C
READ_TAG_MULTIPLE = 0x22
GET_TAG_BUFFER = 0x29
CLEAR_TAG_BUFFER = 0x2A
MULTI_PROTOCOL = 0x2F
GET_READ_POWER = 0x62
GET_PROTOCOL = 0x63
GET_REGION = 0x67
GET_READER_PARAM = 0x6A
SET_ANTENNA = 0x91
SET_READ_POWER = 0x92
SET_PROTOCOL = 0x93
SET_REGION = 0x97
SET_READER_PARAM = 0x9A

# -- status words (ref §4, tmr_status.h 56-190) --------------------------------------------------------
OK = 0x0000
WRONG_DATA_LENGTH = 0x0100
INVALID_OPCODE = 0x0101
UNIMPLEMENTED_OPCODE = 0x0102
POWER_TOO_HIGH = 0x0103
INVALID_PARAMETER = 0x0105
POWER_TOO_LOW = 0x0106
UNIMPLEMENTED_FEATURE = 0x0109
INVALID_REGION = 0x010B
NO_TAGS_FOUND = 0x0400
NO_PROTOCOL_SET = 0x0401
INVALID_PROTOCOL = 0x0402
AFE_NOT_ON = 0x0405
ANTENNA_NOT_CONNECTED = 0x0503
TEMPERATURE_EXCEEDED = 0x0504
HIGH_RETURN_LOSS = 0x0505
TAG_BUFFER_FULL = 0x0601

STATUS: dict[int, str] = {
    0x0000: "success",
    0x0100: "wrong data length",
    0x0101: "invalid opcode (or the module is in its bootloader)",
    0x0102: "unimplemented opcode",
    0x0103: "read/write power too high",
    0x0104: "invalid frequency",
    0x0105: "invalid parameter",
    0x0106: "read/write power too low",
    0x0109: "unimplemented feature",
    0x010A: "invalid baud rate",
    0x010B: "invalid region",
    0x0400: "no tags found",
    0x0401: "no protocol set",
    0x0402: "invalid protocol",
    0x0404: "no data read",
    0x0405: "AFE not on (region not set)",
    0x0406: "write failed",
    0x040A: "general tag error",
    0x040C: "invalid kill password",
    0x0424: "Gen2 memory locked",
    0x0425: "Gen2v2 authentication failed",
    0x042B: "insufficient power for the Gen2 operation",
    0x04A7: "authentication failed",
    0x0503: "antenna not connected",
    0x0504: "temperature exceeds limits (RF throttled)",
    0x0505: "high return loss (check the antenna and cable)",
    0x0600: "not enough tags in buffer",
    0x0601: "tag ID buffer full",
    0x0604: "authentication request",
    0x7F01: "firmware assert",
}


def describe_status(code: int) -> str:
    """A human text for a module status word, also for codes the table does not name."""
    if code in STATUS:
        return STATUS[code]
    if 0x0420 <= code <= 0x0430:
        return "Gen2 protocol error"
    return f"unknown status 0x{code:04X}"


class ProtocolError(Exception):
    """Malformed or unexpected data from the module (or from the host, in the emulator)."""


class StatusError(ProtocolError):
    """The module answered with a non-zero status word."""

    def __init__(self, code: int, opcode: int) -> None:
        self.code = code
        self.opcode = opcode
        super().__init__(f"module answered 0x{code:04X} to opcode 0x{opcode:02X}: {describe_status(code)}")

    def __reduce__(self) -> tuple[type[StatusError], tuple[int, int]]:
        """Keeps it picklable despite the two-argument constructor."""
        return (type(self), (self.code, self.opcode))


# -- tag read metadata flags (ref §6, tmr_tag_data.h 105-140) ------------------------------------------
META_READ_COUNT = 0x0001
META_RSSI = 0x0002
META_ANTENNA = 0x0004
META_FREQUENCY = 0x0008
META_TIMESTAMP = 0x0010
META_PHASE = 0x0020
META_PROTOCOL = 0x0040
META_DATA = 0x0080
META_GPIO = 0x0100
META_GEN2_Q = 0x0200
META_GEN2_LINK_FREQUENCY = 0x0400
META_GEN2_TARGET = 0x0800
META_DEFAULT = META_READ_COUNT | META_RSSI | META_ANTENNA | META_TIMESTAMP  # 0x0017
META_ALL = 0x0FFF  #: every flag this module decodes (brand ID 0x1000 and HF tag type 0x2000 are not)

# searchFlags of Read Tag Multiple (ref §5, serial_reader_imp.h 677-693)
SEARCH_ANTENNA_LIST = 0x0003
SEARCH_STREAMING = 0x0008
SEARCH_LARGE_POPULATION = 0x0010
READ_OPTION_METADATA = 0x10

PROTOCOL_GEN2 = 0x05

# Regions (ref §5, tmr_region.h 41-85)
REGIONS: dict[str, int] = {
    "NA": 0x01,
    "EU": 0x02,
    "KR": 0x03,
    "IN": 0x04,
    "JP": 0x05,
    "PRC": 0x06,
    "EU2": 0x07,
    "EU3": 0x08,
    "KR2": 0x09,
    "PRC2": 0x0A,
    "AU": 0x0B,
    "NZ": 0x0C,
    "NA2": 0x0D,
    "NA3": 0x0E,
    "OPEN": 0xFF,
}

# hw[0] of the Version reply (ref §5)
MODELS: dict[int, str] = {
    0x18: "M6e",
    0x19: "M6e-I",
    0x20: "M6e Micro",
    0x30: "M6e Nano",
    0x38: "M7e Pico",
    0x80: "M3e",
}

HEADER = 0xFF
MAX_DATA_LENGTH = 0xF8  #: the largest LEN a frame may carry (ref §1 resync rule)
_CRC_SEED = 0x1D0F  # 0xFFFF * x^16 mod 0x11021, see crc()
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


# -- CRC (ref §2) --------------------------------------------------------------------------------------
def crc(body: bytes) -> int:
    """The frame CRC over LEN..data (the bytes between the FF header and the CRC itself).

    It is *not* CRC-16/CCITT-FALSE: MAPI shifts message bits into the low end of a 0xFFFF register
    (non-augmented, l3.c 79-106).  That equals the stdlib's augmented CRC seeded with 0x1D0F over all
    but the last two bytes, XORed with those two bytes (ref §2).  A consequence: an error confined to
    the last two body bytes and mirrored in the CRC goes unnoticed, a blind spot of the real protocol.
    """
    if len(body) >= 2:
        return crc_hqx(body[:-2], _CRC_SEED) ^ ((body[-2] << 8) | body[-1])
    register = 0xFFFF
    for byte in body:  # shorter than any real frame body; done bit by bit as in l3.c
        for bit in range(7, -1, -1):
            carry = register & 0x8000
            register = ((register << 1) | ((byte >> bit) & 1)) & 0xFFFF
            if carry:
                register ^= 0x1021
    return register


def gen2_crc(pc_epc: bytes) -> int:
    """The Gen2 tag's own CRC (CRC-16/GENIBUS) over PC [+ XPC] + EPC, as carried in a tag record."""
    return crc_hqx(pc_epc, 0xFFFF) ^ 0xFFFF


def _with_crc(head: bytes) -> bytes:
    return head + crc(head[1:]).to_bytes(2, "big")


def encode_command(opcode: int, data: bytes = b"") -> bytes:
    """A host→module frame: FF LEN opcode data CRC (ref §1)."""
    if len(data) > MAX_DATA_LENGTH:
        raise ValueError(f"command data too long: {len(data)} bytes (at most {MAX_DATA_LENGTH})")
    return _with_crc(bytes((HEADER, len(data), opcode & 0xFF)) + bytes(data))


def encode_response(opcode: int, status: int = OK, data: bytes = b"") -> bytes:
    """A module→host frame: FF LEN opcode status(BE u16) data CRC (ref §1)."""
    if len(data) > MAX_DATA_LENGTH:
        raise ValueError(f"response data too long: {len(data)} bytes (at most {MAX_DATA_LENGTH})")
    return _with_crc(bytes((HEADER, len(data), opcode & 0xFF, (status >> 8) & 0xFF, status & 0xFF)) + data)


@attrs.frozen
class Frame:
    """A module→host response (or an unsolicited streamed frame)."""

    opcode: int
    status: int
    data: bytes

    def to_bytes(self) -> bytes:
        return encode_response(self.opcode, self.status, self.data)


@attrs.frozen
class Command:
    """A host→module command."""

    opcode: int
    data: bytes

    def to_bytes(self) -> bytes:
        return encode_command(self.opcode, self.data)


# -- stream parsers ------------------------------------------------------------------------------------
class _Scanner:
    """Cuts a byte stream into CRC-checked frames and resynchronises after anything else.

    Rules (ref §1, l3.c 386-410): a frame starts at FF with LEN ≤ 0xF8 and must pass its CRC.  Bytes
    before an FF are dropped; a bad LEN skips that FF; a CRC failure resumes the search at the byte
    after that FF, so a corrupted LEN cannot swallow the good frames behind it.  An incomplete frame at
    the end is kept for the next ``feed``; :meth:`flush` gives up on it when the line has gone quiet.
    """

    _overhead: ClassVar[int]  # header + LEN + opcode [+ status] + CRC

    def __init__(self) -> None:
        self._buf = bytearray()
        self.frames = 0  #: valid frames returned so far
        self.crc_errors = 0  #: candidate frames whose CRC did not match
        self.dropped_bytes = 0  #: bytes discarded while resynchronising

    @property
    def buffered(self) -> int:
        """Bytes held back as the start of a frame not complete yet."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list:
        self._buf += chunk
        return self._scan()

    def flush(self) -> list:
        """Drop an incomplete frame at the head (call when the line went quiet) and rescan behind it.

        Without this, a corrupted LEN byte near the end of a burst holds back the frames after it
        until enough further bytes arrive to fail its CRC.
        """
        out: list = []
        while self._buf:
            del self._buf[0]
            self.dropped_bytes += 1
            out += self._scan()
        return out

    def reset(self) -> None:
        """Forget a partial frame (e.g. after reopening the port)."""
        self.dropped_bytes += len(self._buf)
        self._buf.clear()

    def _make(self, buf: bytearray, start: int, end: int) -> object:
        raise NotImplementedError

    def _scan(self) -> list:
        buf = self._buf
        n = len(buf)
        overhead = self._overhead
        make = self._make
        out = []
        pos = dropped = crc_errors = 0
        while True:
            start = buf.find(HEADER, pos)
            if start < 0:
                dropped += n - pos
                pos = n
                break
            dropped += start - pos
            if start + 1 >= n:
                pos = start
                break
            length = buf[start + 1]
            if length > MAX_DATA_LENGTH:
                dropped += 1
                pos = start + 1
                continue
            end = start + length + overhead
            if end > n:
                pos = start
                break
            expected = crc_hqx(buf[start + 1 : end - 4], _CRC_SEED) ^ ((buf[end - 4] << 8) | buf[end - 3])
            if expected == (buf[end - 2] << 8) | buf[end - 1]:
                out.append(make(buf, start, end))
                pos = end
            else:
                crc_errors += 1
                dropped += 1
                pos = start + 1
        if pos:
            del buf[:pos]
        self.frames += len(out)
        self.crc_errors += crc_errors
        self.dropped_bytes += dropped
        return out


class FrameParser(_Scanner):
    """Module→host byte stream → :class:`Frame` objects.  Never raises."""

    _overhead = 7

    def feed(self, chunk: bytes) -> list[Frame]:
        return super().feed(chunk)

    def flush(self) -> list[Frame]:
        return super().flush()

    def _make(self, buf: bytearray, start: int, end: int) -> Frame:
        return Frame(buf[start + 2], (buf[start + 3] << 8) | buf[start + 4], bytes(buf[start + 5 : end - 2]))


class CommandParser(_Scanner):
    """Host→module byte stream → :class:`Command` objects (the emulator's side).  Never raises."""

    _overhead = 5

    def feed(self, chunk: bytes) -> list[Command]:
        return super().feed(chunk)

    def flush(self) -> list[Command]:
        return super().flush()

    def _make(self, buf: bytearray, start: int, end: int) -> Command:
        return Command(buf[start + 2], bytes(buf[start + 3 : end - 2]))


# -- command builders (ref §3, §5, §7) ------------------------------------------------------------------
def get_version() -> bytes:
    return encode_command(VERSION)


def boot_firmware() -> bytes:
    """Leave the bootloader and start the application firmware."""
    return encode_command(BOOT_FIRMWARE)


def get_current_program() -> bytes:
    return encode_command(GET_CURRENT_PROGRAM)


def set_baud_rate(baud: int) -> bytes:
    return encode_command(SET_BAUD, _u32(baud, "baud rate"))


def set_region(code: int) -> bytes:
    if not 0 <= code <= 0xFF:
        raise ValueError(f"region code must be 0..255, got {code}")
    return encode_command(SET_REGION, bytes((code,)))


def get_region() -> bytes:
    return encode_command(GET_REGION)


def set_protocol_gen2() -> bytes:
    return encode_command(SET_PROTOCOL, _U16.pack(PROTOCOL_GEN2))


def set_antenna_search_list(ports: Sequence[int]) -> bytes:
    """Search the given ports, each monostatic (tx = rx), in the ``02`` form of opcode 0x91 (ref §5)."""
    if not ports:
        raise ValueError("at least one antenna port is needed")
    data = bytearray((0x02,))
    for port in ports:
        if not 1 <= port <= 16:
            raise ValueError(f"antenna port must be 1..16, got {port}")
        data += bytes((port, port))
    return encode_command(SET_ANTENNA, bytes(data))


def set_read_power(centi_dbm: int) -> bytes:
    """Read TX power in hundredths of a dBm (2700 = 27.00 dBm)."""
    if not -0x8000 <= centi_dbm <= 0x7FFF:
        raise ValueError(f"read power out of range: {centi_dbm} cdBm")
    return encode_command(SET_READ_POWER, centi_dbm.to_bytes(2, "big", signed=True))


def clear_tag_buffer() -> bytes:
    return encode_command(CLEAR_TAG_BUFFER)


def read_tag_multiple(timeout_ms: int, metadata: int = META_DEFAULT) -> bytes:
    """Search for ``timeout_ms`` on the configured antennas; tags collect in the module's buffer.

    option 0x10 (metadata), searchFlags 0x0013 (antenna list | large population), timeout, metadata.
    """
    data = bytes((READ_OPTION_METADATA,)) + _U16.pack(SEARCH_ANTENNA_LIST | SEARCH_LARGE_POPULATION)
    return encode_command(READ_TAG_MULTIPLE, data + _u16(timeout_ms, "timeout") + _u16(metadata, "metadata"))


def get_tag_buffer(metadata: int = META_DEFAULT) -> bytes:
    """Fetch buffered tag records with the given metadata (read option 0 = continue, not rewind)."""
    return encode_command(GET_TAG_BUFFER, _u16(metadata, "metadata") + b"\x00")


def start_continuous(metadata: int = META_DEFAULT, timeout_ms: int = 1000) -> bytes:
    """Start continuous reading: multi-protocol search 0x2F wrapping an embedded 0x22 (ref §7).

    timeout 0, option 01 (continuous), sub-opcode 22, flags 0000, then for Gen2: protocol 05, PLEN,
    22, option 0x10, searchFlags 0x001B (antenna list | streaming | large population), timeout, metadata.
    """
    embedded = (
        bytes((READ_OPTION_METADATA,))
        + _U16.pack(SEARCH_ANTENNA_LIST | SEARCH_STREAMING | SEARCH_LARGE_POPULATION)
        + _u16(timeout_ms, "timeout")
        + _u16(metadata, "metadata")
    )
    data = b"\x00\x00\x01" + bytes((READ_TAG_MULTIPLE,)) + b"\x00\x00"
    data += bytes((PROTOCOL_GEN2, len(embedded), READ_TAG_MULTIPLE)) + embedded
    return encode_command(MULTI_PROTOCOL, data)


def stop_continuous() -> bytes:
    """``FF 03 2F 00 00 02 5E 86``: timeout 0, option 02 = stop (MAPI ``TMR_SR_cmdStopReading``)."""
    return encode_command(MULTI_PROTOCOL, b"\x00\x00\x02")


def _u16(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} must fit in 16 bits, got {value}")
    return _U16.pack(value)


def _u32(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{what} must fit in 32 bits, got {value}")
    return _U32.pack(value)


# -- decoders -------------------------------------------------------------------------------------------
def check_status(frame: Frame) -> Frame:
    """The frame itself, or :class:`StatusError` when the module reported an error."""
    if frame.status:
        raise StatusError(frame.status, frame.opcode)
    return frame


@attrs.frozen
class Version:
    bootloader: str
    hardware: str
    firmware_date: str
    firmware_version: str
    protocols: int  #: bit n set = protocol n+1 supported (Gen2 = 5 → bit 4)
    model: str

    @property
    def supports_gen2(self) -> bool:
        return bool(self.protocols & (1 << (PROTOCOL_GEN2 - 1)))


def _dotted(b: bytes) -> str:
    return ".".join(f"{x:02X}" for x in b)


def decode_version(data: bytes) -> Version:
    """The 20-byte Version (0x03) or Boot Firmware (0x04) reply data (ref §5)."""
    if len(data) < 20:
        raise ProtocolError(f"version reply too short: {len(data)} bytes, need 20")
    hw0 = data[4]
    return Version(
        bootloader=_dotted(data[0:4]),
        hardware=_dotted(data[4:8]),
        firmware_date=f"{data[8]:02x}{data[9]:02x}-{data[10]:02x}-{data[11]:02x}",
        firmware_version=_dotted(data[12:16]),
        protocols=_U32.unpack_from(data, 16)[0],
        model=MODELS.get(hw0, f"unknown (0x{hw0:02X})"),
    )


def encode_version_data(
    model_hw: int = 0x30,
    bootloader: bytes = b"\x14\x12\x08\x00",
    hardware_rest: bytes = b"\x00\x00\x02",
    firmware_date: bytes = b"\x20\x15\x03\x10",
    firmware_version: bytes = b"\x01\x03\x01\x47",
    protocols: int = 1 << (PROTOCOL_GEN2 - 1),
) -> bytes:
    """Version reply data; the defaults are the SparkFun Nano capture (ref §3, log 1)."""
    hardware = bytes((model_hw,)) + hardware_rest
    return bootloader + hardware + firmware_date + firmware_version + _U32.pack(protocols)


def decode_current_program(data: bytes) -> bool:
    """True when the module runs its bootloader (``(p & 3) == 1``) and needs Boot Firmware."""
    if not data:
        raise ProtocolError("empty Get Current Program reply")
    return (data[0] & 0x3) == 1


@attrs.frozen
class TagRecord:
    """One tag record: the requested metadata (None when not requested) and the EPC (ref §6)."""

    epc: str  #: upper-case hex
    pc: int
    read_count: int | None = None
    rssi: int | None = None  #: dBm
    antenna: int | None = None  #: the TX port (1..16); monostatic modules use tx = rx
    frequency_khz: int | None = None
    timestamp_ms: int | None = None  #: relative to the command or stream start; not wall time
    phase: int | None = None
    protocol: int | None = None  #: 5 = Gen2
    data: bytes | None = None
    gpio: int | None = None  #: low nibble GPO, high nibble GPI
    gen2_q: int | None = None
    gen2_link_frequency: int | None = None  #: 0 → 250 kHz, 2 → 320 kHz, 4 → 640 kHz
    gen2_target: int | None = None  #: 0 = A, 1 = B
    xpc_w1: int | None = None  #: present when the PC's XI bit (0x0200) is set
    xpc_w2: int | None = None  #: present when XPC_W1's top bit is set
    tag_crc: int | None = None  #: the tag's CRC as received (encode computes it when None)


_PC_XI = 0x0200
_XPC_XEB = 0x8000


def decode_tag_record(buf: bytes, offset: int, flags: int) -> tuple[TagRecord, int]:
    """Decode the record at ``offset``: metadata in ascending flag order, then EPC length (bits,
    counting PC + XPC + EPC + tag CRC), PC, XPC words, EPC and tag CRC (ref §6, l3.c 2152-2330).

    Returns the record and the offset just after it.  Raises :class:`ProtocolError` when the record
    is truncated or inconsistent.
    """
    if flags & ~META_ALL:
        raise ProtocolError(f"metadata flags 0x{flags:04X} include fields this decoder does not know")
    if offset < 0:
        raise ProtocolError("negative record offset")
    i = offset
    read_count = rssi = antenna = frequency = timestamp = phase = protocol = gpio = None
    q = link_frequency = target = xpc_w1 = xpc_w2 = None
    data = None
    try:
        if flags & META_READ_COUNT:
            read_count = buf[i]
            i += 1
        if flags & META_RSSI:
            rssi = buf[i]
            if rssi > 127:
                rssi -= 256
            i += 1
        if flags & META_ANTENNA:
            antenna = (buf[i] >> 4) or 16
            i += 1
        if flags & META_FREQUENCY:
            frequency = (buf[i] << 16) | (buf[i + 1] << 8) | buf[i + 2]
            i += 3
        if flags & META_TIMESTAMP:
            timestamp = _U32.unpack_from(buf, i)[0]
            i += 4
        if flags & META_PHASE:
            phase = _U16.unpack_from(buf, i)[0]
            i += 2
        if flags & META_PROTOCOL:
            protocol = buf[i]
            i += 1
        if flags & META_DATA:
            nbytes = (_U16.unpack_from(buf, i)[0] + 7) // 8
            i += 2
            if i + nbytes > len(buf):
                raise ProtocolError("tag record truncated in its data field")
            data = bytes(buf[i : i + nbytes])
            i += nbytes
        if flags & META_GPIO:
            gpio = buf[i]
            i += 1
        if flags & META_GEN2_Q:
            q = buf[i]
            i += 1
        if flags & META_GEN2_LINK_FREQUENCY:
            link_frequency = buf[i]
            i += 1
        if flags & META_GEN2_TARGET:
            target = buf[i]
            i += 1
        bits, pc = struct.unpack_from(">HH", buf, i)
        i += 4
        id_bytes = bits // 8 - 4  # PC and tag CRC
        if pc & _PC_XI:
            xpc_w1 = _U16.unpack_from(buf, i)[0]
            i += 2
            id_bytes -= 2
            if xpc_w1 & _XPC_XEB:
                xpc_w2 = _U16.unpack_from(buf, i)[0]
                i += 2
                id_bytes -= 2
    except (IndexError, struct.error):
        raise ProtocolError("tag record truncated") from None
    if bits % 8 or id_bytes < 0:
        raise ProtocolError(f"impossible EPC length of {bits} bits for PC 0x{pc:04X}")
    end = i + id_bytes + 2
    if end > len(buf):
        raise ProtocolError("tag record truncated in its EPC")
    record = TagRecord(
        epc=buf[i : i + id_bytes].hex().upper(),
        pc=pc,
        read_count=read_count,
        rssi=rssi,
        antenna=antenna,
        frequency_khz=frequency,
        timestamp_ms=timestamp,
        phase=phase,
        protocol=protocol,
        data=data,
        gpio=gpio,
        gen2_q=q,
        gen2_link_frequency=link_frequency,
        gen2_target=target,
        xpc_w1=xpc_w1,
        xpc_w2=xpc_w2,
        tag_crc=(buf[end - 2] << 8) | buf[end - 1],
    )
    return record, end


def encode_tag_record(record: TagRecord, flags: int) -> bytes:
    """The wire form of a record with the metadata in ``flags`` (missing values are sent as 0).

    XPC words are written when the PC's XI bit asks for them; the tag CRC is computed (GENIBUS over
    PC + XPC + EPC, ref §2) unless the record carries one.
    """
    if flags & ~META_ALL:
        raise ValueError(f"cannot encode metadata flags 0x{flags:04X}")
    out = bytearray()
    if flags & META_READ_COUNT:
        out.append(min(record.read_count or 0, 0xFF))
    if flags & META_RSSI:
        out.append((record.rssi or 0) & 0xFF)
    if flags & META_ANTENNA:
        port = (record.antenna or 1) & 0x0F  # port 16 is sent as nibble 0
        out.append((port << 4) | port)
    if flags & META_FREQUENCY:
        out += (record.frequency_khz or 0).to_bytes(3, "big")
    if flags & META_TIMESTAMP:
        out += _U32.pack((record.timestamp_ms or 0) & 0xFFFFFFFF)
    if flags & META_PHASE:
        out += _U16.pack(record.phase or 0)
    if flags & META_PROTOCOL:
        out.append(PROTOCOL_GEN2 if record.protocol is None else record.protocol)
    if flags & META_DATA:
        data = record.data or b""
        out += _U16.pack(len(data) * 8) + data
    if flags & META_GPIO:
        out.append(record.gpio or 0)
    if flags & META_GEN2_Q:
        out.append(record.gen2_q or 0)
    if flags & META_GEN2_LINK_FREQUENCY:
        out.append(record.gen2_link_frequency or 0)
    if flags & META_GEN2_TARGET:
        out.append(record.gen2_target or 0)
    ident = bytearray(_U16.pack(record.pc))
    if record.pc & _PC_XI:
        xpc_w1 = record.xpc_w1 or 0
        ident += _U16.pack(xpc_w1)
        if xpc_w1 & _XPC_XEB:
            ident += _U16.pack(record.xpc_w2 or 0)
    ident += bytes.fromhex(record.epc)
    tag_crc = gen2_crc(bytes(ident)) if record.tag_crc is None else record.tag_crc
    out += _U16.pack((len(ident) + 2) * 8) + ident + _U16.pack(tag_crc)
    return bytes(out)


def pc_for_epc(epc: bytes) -> int:
    """The PC word a plain Gen2 tag sends for this EPC: its length in words in bits 15-11."""
    return ((len(epc) + 1) // 2) << 11


def decode_read_tag_multiple(frame: Frame) -> int:
    """The tag count of a Read Tag Multiple reply: u8 when LEN is 4/5, u32 when 7/8 (ref §5).

    "No tags found" (0x0400) is a count of 0, as MAPI treats it.
    """
    if frame.opcode != READ_TAG_MULTIPLE:
        raise ProtocolError(f"expected a Read Tag Multiple reply, got opcode 0x{frame.opcode:02X}")
    if frame.status == NO_TAGS_FOUND:
        return 0
    check_status(frame)
    data = frame.data
    if len(data) == 4:
        return data[3]
    if len(data) == 5:  # ISO18k select option echoed
        return data[4]
    if len(data) == 7:
        return _U32.unpack_from(data, 3)[0]
    if len(data) == 8:
        return _U32.unpack_from(data, 4)[0]
    raise ProtocolError(f"Read Tag Multiple reply of unexpected length {len(data)}")


def decode_tag_buffer(frame: Frame) -> list[TagRecord]:
    """The records of a Get Tag Buffer reply: flags u16, read option, count u8, records (ref §5, §6)."""
    if frame.opcode != GET_TAG_BUFFER:
        raise ProtocolError(f"expected a Get Tag Buffer reply, got opcode 0x{frame.opcode:02X}")
    if frame.status == NO_TAGS_FOUND:
        return []
    check_status(frame)
    data = frame.data
    if len(data) < 4:
        raise ProtocolError(f"Get Tag Buffer reply too short: {len(data)} bytes")
    flags = _U16.unpack_from(data, 0)[0]
    records = []
    offset = 4
    for _ in range(data[3]):
        record, offset = decode_tag_record(data, offset, flags)
        records.append(record)
    return records


@attrs.frozen
class StreamEvent:
    """What one frame pushed during continuous reading means (ref §7)."""

    kind: str  # "tag" | "keepalive" | "started" | "stopped" | "status" | "end" | "ignored"
    record: TagRecord | None = None
    status: int = 0


_KEEPALIVE = StreamEvent("keepalive", status=NO_TAGS_FOUND)
_STARTED = StreamEvent("started")
_STOPPED = StreamEvent("stopped")
_END = StreamEvent("end")
_STATUS_REPORT = StreamEvent("status")


def decode_stream(frame: Frame) -> StreamEvent:
    """Classify a frame received while streaming (MAPI ``TMR_SR_hasMoreTags``, serial_reader.c).

    * 0x22 / 0x2F with status 0x0400: keep-alive, about once a second (use it as a watchdog);
    * other non-zero status (0x0504 temperature, 0x0505 return loss, 0x0601 buffer full): "status";
    * 0x2F replies by their first data byte: 01 "started", 02 "stopped", others "ignored";
    * 0x22: response type at data[5] (data[3] without the metadata option): 01 a tag record follows,
      00 end of stream, 02 a status report;
    * any other opcode: "ignored" (the caller checks for 0x04, an unexpected reboot, itself).

    Raises :class:`ProtocolError` for a malformed 0x22 frame.
    """
    opcode = frame.opcode
    status = frame.status
    if opcode != READ_TAG_MULTIPLE and opcode != MULTI_PROTOCOL:
        return StreamEvent("ignored", status=status)
    if status:
        return _KEEPALIVE if status == NO_TAGS_FOUND else StreamEvent("status", status=status)
    data = frame.data
    if opcode == MULTI_PROTOCOL:
        kind = data[0] if data else 0
        return _STARTED if kind == 1 else _STOPPED if kind == 2 else StreamEvent("ignored")
    if len(data) == 7:  # the tag-count summary of a stop-on-N search (serial_reader.c)
        return StreamEvent("ignored")
    if not data:
        raise ProtocolError("empty streamed 0x22 frame")
    with_metadata = data[0] & READ_OPTION_METADATA
    type_at = 5 if with_metadata else 3
    if len(data) <= type_at:
        raise ProtocolError(f"streamed 0x22 frame too short: {len(data)} bytes")
    response_type = data[type_at]
    if response_type == 1:
        flags = ((data[3] << 8) | data[4]) if with_metadata else 0
        record, _ = decode_tag_record(data, type_at + 1, flags)
        return StreamEvent("tag", record)
    if response_type == 0:
        return _END
    if response_type == 2:
        return _STATUS_REPORT
    raise ProtocolError(f"unknown streamed response type 0x{response_type:02X}")


def encode_stream_tag(
    record: TagRecord, metadata: int = META_DEFAULT, search_flags: int = 0x001B, option: int = 0x10
) -> bytes:
    """A streamed 0x22 tag frame as the module pushes it (the emulator's side of ref §7)."""
    head = bytes((option,)) + _U16.pack(search_flags) + _U16.pack(metadata) + b"\x01"
    return encode_response(READ_TAG_MULTIPLE, OK, head + encode_tag_record(record, metadata))
