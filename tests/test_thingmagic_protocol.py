"""The ThingMagic serial protocol library against real captured frames, and property tests.

Captures: /work/shared/reference/thingmagic-serial.md §3 and SparkFun's
``Example Communication Logs/`` (``TagDecoding/Tag ID Packet Decoding-1 596F596F.txt``,
``3-Ant Select - Reading.txt``), recorded from a real M6e Nano.
"""

from __future__ import annotations

import contextlib
import random

import attrs
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vipsense.plugins.readers.thingmagic import protocol as tm
from vipsense.plugins.readers.thingmagic.protocol import (
    Command,
    CommandParser,
    Frame,
    FrameParser,
    ProtocolError,
    StatusError,
    StreamEvent,
    TagRecord,
)


def hx(text: str) -> bytes:
    return bytes.fromhex(text)


# -- captured frames -------------------------------------------------------------------------------------
GET_VERSION = hx("FF 00 03 1D 0C")
BOOT_FIRMWARE = hx("FF 00 04 1D 0B")
SET_REGION_NA2 = hx("FF 01 97 0D 4B B0")
SET_PROTOCOL_GEN2 = hx("FF 02 93 00 05 51 7D")
SET_PROTOCOL_OK = hx("FF 00 93 00 00 37 1A")
CLEAR_BUFFER = hx("FF 00 2A 1D 25")
CLEAR_BUFFER_OK = hx("FF 00 2A 00 00 01 E8")
SET_ANTENNA_1 = hx("FF 03 91 02 01 01 42 C5")
SET_BAUD_115200 = hx("FF 04 06 00 01 C2 00 A4 60")
READ_MULTIPLE_500 = hx("FF 05 22 00 00 13 01 F4 2B 19")
READ_MULTIPLE_REPLY = hx("FF 07 22 00 00 00 00 13 00 00 00 01 8B 58")
GET_BUFFER_1FF = hx("FF 03 29 01 FF 00 1B 03")
GET_BUFFER_REPLY = hx(
    "FF 1E 29 00 00 01 FF 00 01 11 DD 11 0E 08 30 00 00 00 08 00 00 05 00 00 0F 00 40 10 00 59 6F 59 6F"
    " F3 13 16 C0"
)
START_CONTINUOUS = hx("FF 10 2F 00 00 01 22 00 00 05 07 22 10 00 1B 03 E8 01 FF DD 2B")
STOP_CONTINUOUS = hx("FF 03 2F 00 00 02 5E 86")
# SparkFun log "1-Connect"/TagDecoding-1: Version and Get Current Program replies of a Nano
VERSION_REPLY = hx("FF 14 03 00 00 14 12 08 00 30 00 00 02 20 15 03 10 01 03 01 47 00 00 00 10 EB FF")
CURRENT_PROGRAM_REPLY = hx("FF 01 0C 00 00 52 63 03")
# SparkFun "3-Ant Select - Reading.txt": continuous reading
START_ACK = hx("FF 04 2F 00 00 01 22 00 00 6D C3")
STOPPED = hx("FF 01 2F 00 00 02 30 E6")
KEEPALIVE = hx("FF 00 22 04 00 84 E0")
STREAM_TAG_596F = hx(
    "FF 20 22 00 00 10 00 1B 01 FF 01 01 C7 11 0E 08 30 00 00 00 0F 00 00 05 00 00 0F 00 40 10 00 59 6F"
    " 59 6F F3 13 89 90"
)
STREAM_TAG_1545 = hx(
    "FF 28 22 00 00 10 00 1B 01 FF 01 01 CD 11 0E 08 30 00 00 00 0A 00 00 05 00 00 0F 00 80 30 00 00 00"
    " 00 00 00 00 00 00 00 00 15 45 E9 4A 02 37"
)

CAPTURED_COMMANDS = [
    GET_VERSION,
    BOOT_FIRMWARE,
    SET_REGION_NA2,
    SET_PROTOCOL_GEN2,
    CLEAR_BUFFER,
    SET_ANTENNA_1,
    SET_BAUD_115200,
    READ_MULTIPLE_500,
    GET_BUFFER_1FF,
    START_CONTINUOUS,
    STOP_CONTINUOUS,
]
CAPTURED_RESPONSES = [
    SET_PROTOCOL_OK,
    CLEAR_BUFFER_OK,
    READ_MULTIPLE_REPLY,
    GET_BUFFER_REPLY,
    VERSION_REPLY,
    CURRENT_PROGRAM_REPLY,
    START_ACK,
    STOPPED,
    KEEPALIVE,
    STREAM_TAG_596F,
    STREAM_TAG_1545,
]


def crc_bitwise(body: bytes) -> int:
    """An independent model of MAPI's CRC (serial_reader_l3.c CRC_calcCrc8): bits shifted in at the low
    end of a 0xFFFF register, polynomial 0x1021."""
    register = 0xFFFF
    for byte in body:
        mask = 0x80
        for _ in range(8):
            carry = register & 0x8000
            register = ((register << 1) & 0xFFFF) | (1 if byte & mask else 0)
            if carry:
                register ^= 0x1021
            mask >>= 1
    return register


# -- CRC -------------------------------------------------------------------------------------------------
def test_crc_vectors_from_the_reference():
    assert tm.crc(hx("00 03")) == 0x1D0C
    assert tm.crc(hx("00 04")) == 0x1D0B
    assert tm.crc(hx("00 03")) != 0x2D6C  # what CRC-16/CCITT-FALSE would give: the classic mistake
    assert tm.crc(b"") == 0xFFFF == crc_bitwise(b"")
    assert tm.crc(b"\x05") == crc_bitwise(b"\x05")


@pytest.mark.parametrize("frame", CAPTURED_COMMANDS + CAPTURED_RESPONSES, ids=lambda f: f[:6].hex(" "))
def test_every_captured_frame_has_a_matching_crc(frame):
    assert tm.crc(frame[1:-2]) == int.from_bytes(frame[-2:], "big") == crc_bitwise(frame[1:-2])


@given(st.binary(max_size=300))
def test_crc_equals_the_bitwise_model(body):
    assert tm.crc(body) == crc_bitwise(body)


def test_crc_blind_spot_of_the_real_protocol():
    """The last two body bytes enter the register unshifted: the same flip there and in the CRC passes."""
    damaged = bytearray(KEEPALIVE)
    damaged[3] ^= 0x10  # status 0x0400 -> 0x1400
    damaged[5] ^= 0x10  # and the CRC's high byte
    assert FrameParser().feed(bytes(damaged)) == [Frame(0x22, 0x1400, b"")]


def test_gen2_tag_crc():
    assert tm.gen2_crc(hx("10 00 59 6F 59 6F")) == 0xF313
    assert tm.gen2_crc(hx("30 00 00 00 00 00 00 00 00 00 00 00 15 45")) == 0xE94A  # STREAM_TAG_1545


# -- builders --------------------------------------------------------------------------------------------
def test_builders_reproduce_the_captures():
    assert tm.get_version() == GET_VERSION
    assert tm.boot_firmware() == BOOT_FIRMWARE
    assert tm.set_region(tm.REGIONS["NA2"]) == SET_REGION_NA2
    assert tm.set_protocol_gen2() == SET_PROTOCOL_GEN2
    assert tm.clear_tag_buffer() == CLEAR_BUFFER
    assert tm.set_antenna_search_list([1]) == SET_ANTENNA_1
    assert tm.set_baud_rate(115200) == SET_BAUD_115200
    assert tm.get_tag_buffer(0x01FF) == GET_BUFFER_1FF
    assert tm.start_continuous(metadata=0x01FF, timeout_ms=1000) == START_CONTINUOUS
    assert tm.stop_continuous() == STOP_CONTINUOUS
    assert tm.get_current_program() == hx("FF 00 0C 1D 03")  # TagDecoding-1
    assert tm.get_region() == hx("FF 00 67 1D 68")  # TagDecoding-1
    assert tm.set_read_power(2700) == hx("FF 02 92 0A 8C 4B D5")  # TagDecoding-1


def test_read_tag_multiple_asks_for_metadata():
    """The capture used option 0; the driver asks for metadata (option 0x10) and the flags last (ref §5)."""
    frame = tm.read_tag_multiple(500)
    assert frame == tm.encode_command(0x22, hx("10 00 13 01 F4 00 17"))
    assert CommandParser().feed(frame) == [Command(0x22, hx("10 00 13 01 F4 00 17"))]
    assert tm.read_tag_multiple(500, metadata=0x01FF)[3:-2] == hx("10 00 13 01 F4 01 FF")


def test_antenna_search_list_pairs_each_port():
    assert tm.set_antenna_search_list([1, 2])[2:-2] == hx("91 02 01 01 02 02")


@pytest.mark.parametrize(
    "build",
    [
        lambda: tm.set_antenna_search_list([]),
        lambda: tm.set_antenna_search_list([17]),
        lambda: tm.set_antenna_search_list([0]),
        lambda: tm.set_region(256),
        lambda: tm.set_read_power(40000),
        lambda: tm.read_tag_multiple(70000),
        lambda: tm.get_tag_buffer(0x10000),
        lambda: tm.encode_command(0x22, bytes(249)),
        lambda: tm.encode_response(0x22, 0, bytes(249)),
    ],
)
def test_builders_reject_values_that_do_not_fit(build):
    with pytest.raises(ValueError):
        build()


# -- decoding the captures -------------------------------------------------------------------------------
def one_frame(raw: bytes) -> Frame:
    parser = FrameParser()
    frames = parser.feed(raw)
    assert len(frames) == 1 and parser.buffered == 0 and parser.dropped_bytes == 0
    return frames[0]


def test_captured_commands_parse_back():
    parser = CommandParser()
    commands = parser.feed(b"".join(CAPTURED_COMMANDS))
    assert [c.to_bytes() for c in commands] == CAPTURED_COMMANDS
    assert commands[2] == Command(tm.SET_REGION, b"\x0d")
    assert commands[-1] == Command(tm.MULTI_PROTOCOL, hx("00 00 02"))
    assert parser.frames == len(CAPTURED_COMMANDS) and parser.dropped_bytes == 0


def test_simple_ok_replies():
    assert one_frame(SET_PROTOCOL_OK) == Frame(tm.SET_PROTOCOL, 0, b"")
    assert one_frame(CLEAR_BUFFER_OK) == Frame(tm.CLEAR_TAG_BUFFER, 0, b"")
    assert tm.encode_response(tm.SET_PROTOCOL) == SET_PROTOCOL_OK


def test_version_reply():
    frame = one_frame(VERSION_REPLY)
    version = tm.decode_version(frame.data)
    assert version == tm.Version(
        bootloader="14.12.08.00",
        hardware="30.00.00.02",
        firmware_date="2015-03-10",
        firmware_version="01.03.01.47",
        protocols=0x10,
        model="M6e Nano",
    )
    assert version.supports_gen2
    assert tm.encode_version_data() == frame.data
    assert tm.decode_version(tm.encode_version_data(0x18)).model == "M6e"
    assert tm.decode_version(tm.encode_version_data(0x42)).model == "unknown (0x42)"
    with pytest.raises(ProtocolError):
        tm.decode_version(frame.data[:19])


def test_current_program_reply():
    assert tm.decode_current_program(one_frame(CURRENT_PROGRAM_REPLY).data) is False  # 0x52: application
    assert tm.decode_current_program(b"\x11") is True
    with pytest.raises(ProtocolError):
        tm.decode_current_program(b"")


def test_read_tag_multiple_reply_counts():
    frame = one_frame(READ_MULTIPLE_REPLY)
    assert frame == Frame(0x22, 0, hx("00 00 13 00 00 00 01"))
    assert tm.decode_read_tag_multiple(frame) == 1
    assert tm.decode_read_tag_multiple(Frame(0x22, 0, hx("10 00 03 05"))) == 5  # LEN 4: u8
    assert tm.decode_read_tag_multiple(Frame(0x22, 0, hx("10 00 03 00 06"))) == 6  # LEN 5: later u8
    assert tm.decode_read_tag_multiple(Frame(0x22, 0, hx("00 10 00 13 00 00 01 00"))) == 256  # LEN 8
    assert tm.decode_read_tag_multiple(Frame(0x22, tm.NO_TAGS_FOUND, b"")) == 0
    with pytest.raises(ProtocolError):
        tm.decode_read_tag_multiple(Frame(0x22, 0, hx("00 00 13")))
    with pytest.raises(ProtocolError):
        tm.decode_read_tag_multiple(Frame(0x29, 0, hx("00 00 13 01")))


def test_get_tag_buffer_reply_field_by_field():
    frame = one_frame(GET_BUFFER_REPLY)
    assert frame.opcode == tm.GET_TAG_BUFFER and frame.status == 0
    assert frame.data[:4] == hx("01 FF 00 01")  # flags echo, read option, one record
    (record,) = tm.decode_tag_buffer(frame)
    assert record == TagRecord(
        epc="596F596F",
        pc=0x1000,
        read_count=17,
        rssi=-35,
        antenna=1,  # 0x11: tx1 / rx1
        frequency_khz=919_600,
        timestamp_ms=8,
        phase=0,
        protocol=5,
        data=b"",  # 0 bits
        gpio=0x0F,
        tag_crc=0xF313,
    )
    # and back: the emulator's encoder produces the captured bytes
    assert tm.encode_tag_record(record, 0x01FF) == frame.data[4:]
    assert tm.encode_tag_record(attrs.evolve(record, tag_crc=None), 0x01FF) == frame.data[4:]


def test_tag_record_walks_the_flags_not_fixed_offsets():
    record, end = tm.decode_tag_record(GET_BUFFER_REPLY, 9, 0x01FF)
    assert end == len(GET_BUFFER_REPLY) - 2
    # the same tag with only read count and RSSI: the EPC moves up
    short = tm.encode_tag_record(record, tm.META_READ_COUNT | tm.META_RSSI)
    assert short[:4] == hx("11 DD 00 40")
    decoded, end = tm.decode_tag_record(short, 0, 0x0003)
    assert (decoded.epc, decoded.read_count, decoded.rssi, decoded.antenna, end) == (
        "596F596F",
        17,
        -35,
        None,
        12,
    )


def test_decode_tag_buffer_statuses():
    assert tm.decode_tag_buffer(Frame(0x29, tm.NO_TAGS_FOUND, b"")) == []
    assert tm.decode_tag_buffer(Frame(0x29, 0, hx("00 17 00 00"))) == []
    with pytest.raises(StatusError) as info:
        tm.decode_tag_buffer(Frame(0x29, 0x0101, b""))
    assert info.value.code == 0x0101 and info.value.opcode == 0x29
    with pytest.raises(ProtocolError):
        tm.decode_tag_buffer(Frame(0x29, 0, hx("01 FF 00 02") + GET_BUFFER_REPLY[9:-2]))  # 2 claimed, 1 sent


def test_stream_frames_from_the_capture():
    assert tm.decode_stream(one_frame(START_ACK)) == StreamEvent("started")
    assert tm.decode_stream(one_frame(STOPPED)) == StreamEvent("stopped")
    assert tm.decode_stream(one_frame(KEEPALIVE)) == StreamEvent("keepalive", status=0x0400)
    event = tm.decode_stream(one_frame(STREAM_TAG_596F))
    assert event.kind == "tag"
    assert event.record == TagRecord(
        epc="596F596F",
        pc=0x1000,
        read_count=1,
        rssi=-57,
        antenna=1,
        frequency_khz=919_600,
        timestamp_ms=15,
        phase=0,
        protocol=5,
        data=b"",
        gpio=0x0F,
        tag_crc=0xF313,
    )
    record = tm.decode_stream(one_frame(STREAM_TAG_1545)).record
    assert (record.epc, record.pc, record.rssi, record.timestamp_ms, record.tag_crc) == (
        "000000000000000000001545",
        0x3000,
        -51,
        10,
        0xE94A,
    )
    assert tm.encode_stream_tag(record, 0x01FF) == STREAM_TAG_1545


def test_other_stream_frames():
    assert tm.decode_stream(Frame(0x22, 0x0504, b"")) == StreamEvent("status", status=0x0504)
    assert tm.decode_stream(Frame(0x22, 0x0505, b"")) == StreamEvent("status", status=0x0505)
    assert tm.decode_stream(Frame(0x2F, 0x0601, b"")) == StreamEvent("status", status=0x0601)
    assert tm.decode_stream(Frame(0x22, 0, hx("10 00 1B 01 FF 00"))) == StreamEvent("end")
    assert tm.decode_stream(Frame(0x22, 0, hx("10 00 1B 01 FF 02 00 00"))) == StreamEvent("status")
    assert tm.decode_stream(Frame(0x2F, 0, hx("03"))).kind == "ignored"  # stale auth message
    assert tm.decode_stream(Frame(0x22, 0, hx("11 00 5B 00 00 00 07"))).kind == "ignored"  # stop-on-N count
    boot = tm.decode_stream(Frame(0x04, 0, tm.encode_version_data()))
    assert boot.kind == "ignored"  # the caller checks opcode 0x04 itself (ref §1)
    for bad in (hx(""), hx("10 00 1B"), hx("10 00 1B 01 FF 09"), hx("10 00 1B 01 FF 01 00 40")):
        with pytest.raises(ProtocolError):
            tm.decode_stream(Frame(0x22, 0, bad))


# -- status words ----------------------------------------------------------------------------------------
def test_status_texts():
    assert tm.STATUS[0x0405] == "AFE not on (region not set)"
    assert tm.describe_status(0x0503) == "antenna not connected"
    assert tm.describe_status(0x0601) == "tag ID buffer full"
    assert tm.describe_status(0x0400) == "no tags found"
    assert tm.describe_status(0x0101).startswith("invalid opcode")
    assert tm.describe_status(0x0428) == "Gen2 protocol error"
    assert tm.describe_status(0x1234) == "unknown status 0x1234"
    error = StatusError(0x0405, 0x22)
    assert str(error) == "module answered 0x0405 to opcode 0x22: AFE not on (region not set)"
    assert isinstance(error, ProtocolError)
    with pytest.raises(StatusError, match="0x0405 to opcode 0x22"):
        tm.decode_read_tag_multiple(Frame(0x22, 0x0405, b""))
    assert tm.check_status(Frame(0x97, 0, b"")) == Frame(0x97, 0, b"")


# -- the stream parser -----------------------------------------------------------------------------------
STREAM = b"".join(
    [
        START_ACK,
        STREAM_TAG_596F,
        KEEPALIVE,
        STREAM_TAG_1545,
        STREAM_TAG_596F,
        KEEPALIVE,
        STREAM_TAG_1545,
        STOPPED,
    ]
)
STREAM_FRAMES = FrameParser().feed(STREAM)


def test_keepalives_between_tag_frames():
    kinds = [tm.decode_stream(f).kind for f in STREAM_FRAMES]
    assert kinds == ["started", "tag", "keepalive", "tag", "tag", "keepalive", "tag", "stopped"]


def test_split_at_every_offset():
    for cut in range(len(STREAM) + 1):
        parser = FrameParser()
        assert parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:]) == STREAM_FRAMES, cut
        assert parser.buffered == 0 and parser.dropped_bytes == 0


def test_byte_by_byte():
    parser = FrameParser()
    frames = [f for i in range(len(STREAM)) for f in parser.feed(STREAM[i : i + 1])]
    assert frames == STREAM_FRAMES and parser.frames == len(STREAM_FRAMES)


def test_garbage_before_a_frame_is_dropped_and_counted():
    parser = FrameParser()
    garbage = hx("00 13 37 FF FF FE 42")  # includes FF bytes whose LEN is impossible
    assert parser.feed(garbage + KEEPALIVE) == [Frame(0x22, 0x0400, b"")]
    assert parser.dropped_bytes == len(garbage) and parser.crc_errors == 0


def test_a_bad_crc_drops_only_that_frame():
    corrupted = bytearray(STREAM_TAG_596F)
    corrupted[-1] ^= 0x01
    parser = FrameParser()
    frames = parser.feed(bytes(corrupted) + STREAM_TAG_1545)
    assert [tm.decode_stream(f).record.epc for f in frames] == ["000000000000000000001545"]
    # the FF of the metadata flags (01 FF) inside the bad frame is a second failed candidate
    assert parser.crc_errors == 2 and parser.dropped_bytes == len(corrupted)


def test_a_corrupted_length_does_not_swallow_the_next_frames():
    corrupted = bytearray(STREAM_TAG_596F)
    corrupted[1] = 0x60  # claims 96 data bytes: the candidate would cover the next frames
    tail = KEEPALIVE + STREAM_TAG_1545 + STREAM_TAG_596F + KEEPALIVE + STREAM_TAG_1545 + STOPPED
    parser = FrameParser()
    frames = parser.feed(bytes(corrupted) + tail)
    assert frames == FrameParser().feed(tail)
    assert parser.crc_errors >= 1 and parser.buffered == 0


def test_flush_gives_up_on_a_stalled_candidate():
    """A corrupted LEN near the end of a burst holds the frames behind it back until the line is quiet."""
    corrupted = bytearray(KEEPALIVE)
    corrupted[1] = 0xF0
    parser = FrameParser()
    assert parser.feed(bytes(corrupted) + STOPPED) == []  # waiting for 0xF0 data bytes
    assert parser.flush() == [Frame(0x2F, 0, b"\x02")]
    assert parser.buffered == 0
    assert parser.flush() == []


def test_an_unexpected_boot_frame_is_a_frame_like_any_other():
    boot = tm.encode_response(tm.BOOT_FIRMWARE, 0, tm.encode_version_data())
    frames = FrameParser().feed(STREAM_TAG_596F + boot + KEEPALIVE)
    assert [f.opcode for f in frames] == [0x22, 0x04, 0x22]
    assert tm.decode_version(frames[1].data).model == "M6e Nano"


def test_reset_forgets_a_partial_frame():
    parser = FrameParser()
    parser.feed(STREAM_TAG_596F[:10])
    parser.reset()
    assert parser.buffered == 0 and parser.dropped_bytes == 10
    assert parser.feed(KEEPALIVE) == [Frame(0x22, 0x0400, b"")]


# -- properties ------------------------------------------------------------------------------------------
def frame_size(item) -> int:
    return len(item.data) + (7 if isinstance(item, Frame) else 5)


@pytest.mark.slow
@pytest.mark.parametrize("parser_class", [FrameParser, CommandParser])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.binary(max_size=80) | st.sampled_from(CAPTURED_RESPONSES + CAPTURED_COMMANDS)))
def test_any_bytes_never_raise_and_counters_add_up(parser_class, chunks):
    parser = parser_class()
    fed = 0
    out = []
    for chunk in chunks:
        out += parser.feed(chunk)
        fed += len(chunk)
        assert fed == sum(map(frame_size, out)) + parser.dropped_bytes + parser.buffered
    out += parser.flush()
    assert parser.buffered == 0
    assert fed == sum(map(frame_size, out)) + parser.dropped_bytes
    assert parser.frames == len(out)
    assert parser.crc_errors <= parser.dropped_bytes


frames_strategy = st.builds(
    Frame,
    opcode=st.integers(0, 255),
    status=st.sampled_from([0, 0x0400, 0x0405, 0x0601]) | st.integers(0, 0xFFFF),
    data=st.binary(max_size=tm.MAX_DATA_LENGTH),
)


def accidental_frame_starts(stream: bytes, garbage_ranges: list[range]) -> bool:
    """True when an FF inside the garbage starts a frame that passes its CRC (with or without the bytes
    behind it): then the garbage did contain a valid frame, which the property excludes."""
    for span in garbage_ranges:
        for i in span:
            if stream[i] != 0xFF or i + 1 >= len(stream) or stream[i + 1] > tm.MAX_DATA_LENGTH:
                continue
            end = i + stream[i + 1] + 7
            if end <= len(stream) and tm.crc(stream[i + 1 : end - 2]) == int.from_bytes(
                stream[end - 2 : end], "big"
            ):
                return True
    return False


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    items=st.lists(st.tuples(st.binary(max_size=40), frames_strategy), max_size=12),
    tail=st.binary(max_size=40),
    seed=st.integers(0, 2**32 - 1),
)
def test_valid_frames_in_garbage_are_all_recovered_in_order(items, tail, seed):
    stream = b""
    garbage_ranges = []
    for garbage, frame in items:
        garbage_ranges.append(range(len(stream), len(stream) + len(garbage)))
        stream += garbage + frame.to_bytes()
    garbage_ranges.append(range(len(stream), len(stream) + len(tail)))
    stream += tail
    assume(not accidental_frame_starts(stream, garbage_ranges))
    rng = random.Random(seed)
    parser = FrameParser()
    out = []
    pos = 0
    while pos < len(stream):
        step = rng.randint(1, 64)
        out += parser.feed(stream[pos : pos + step])
        pos += step
    out += parser.flush()
    assert out == [frame for _, frame in items]


@st.composite
def tag_records(draw):
    epc = draw(st.binary(min_size=2, max_size=62))
    pc = draw(st.integers(0, 0xFFFF)) & ~0x0200
    xpc_w1 = xpc_w2 = None
    if draw(st.booleans()):
        pc |= 0x0200
        xpc_w1 = draw(st.integers(0, 0xFFFF))
        if xpc_w1 & 0x8000:
            xpc_w2 = draw(st.integers(0, 0xFFFF))
    return TagRecord(
        epc=epc.hex().upper(),
        pc=pc,
        read_count=draw(st.integers(0, 255)),
        rssi=draw(st.integers(-128, 127)),
        antenna=draw(st.integers(1, 16)),
        frequency_khz=draw(st.integers(0, 0xFFFFFF)),
        timestamp_ms=draw(st.integers(0, 0xFFFFFFFF)),
        phase=draw(st.integers(0, 0xFFFF)),
        protocol=draw(st.integers(0, 255)),
        data=draw(st.binary(max_size=32)),
        gpio=draw(st.integers(0, 255)),
        gen2_q=draw(st.integers(0, 255)),
        gen2_link_frequency=draw(st.sampled_from([0, 2, 4])),
        gen2_target=draw(st.integers(0, 1)),
        xpc_w1=xpc_w1,
        xpc_w2=xpc_w2,
    )


FIELD_FLAGS = {
    "read_count": tm.META_READ_COUNT,
    "rssi": tm.META_RSSI,
    "antenna": tm.META_ANTENNA,
    "frequency_khz": tm.META_FREQUENCY,
    "timestamp_ms": tm.META_TIMESTAMP,
    "phase": tm.META_PHASE,
    "protocol": tm.META_PROTOCOL,
    "data": tm.META_DATA,
    "gpio": tm.META_GPIO,
    "gen2_q": tm.META_GEN2_Q,
    "gen2_link_frequency": tm.META_GEN2_LINK_FREQUENCY,
    "gen2_target": tm.META_GEN2_TARGET,
}


@pytest.mark.slow
@settings(max_examples=400)
@given(record=tag_records(), flags=st.integers(0, tm.META_ALL), prefix=st.binary(max_size=8))
def test_tag_record_round_trip(record, flags, prefix):
    wire = tm.encode_tag_record(record, flags)
    decoded, end = tm.decode_tag_record(prefix + wire + b"\xaa", len(prefix), flags)
    ident = record.pc.to_bytes(2, "big")
    for word in (record.xpc_w1, record.xpc_w2):
        if word is not None:
            ident += word.to_bytes(2, "big")
    expected = attrs.evolve(
        record,
        tag_crc=tm.gen2_crc(ident + bytes.fromhex(record.epc)),
        **{field: None for field, flag in FIELD_FLAGS.items() if not flags & flag},
    )
    assert decoded == expected
    assert end == len(prefix) + len(wire)


@pytest.mark.slow
@settings(max_examples=200)
@given(record=tag_records(), flags=st.integers(0, tm.META_ALL))
def test_streamed_tag_frames_round_trip_through_the_parser(record, flags):
    body = tm.encode_tag_record(record, flags)
    assume(len(body) + 6 <= tm.MAX_DATA_LENGTH)
    (frame,) = FrameParser().feed(tm.encode_stream_tag(record, flags))
    event = tm.decode_stream(frame)
    assert event.kind == "tag" and event.record.epc == record.epc
    assert event.record == tm.decode_tag_record(body, 0, flags)[0]


@pytest.mark.slow
@settings(max_examples=1000)
@given(buf=st.binary(max_size=120), offset=st.integers(-2, 130), flags=st.integers(0, 0xFFFF))
def test_decode_tag_record_on_random_bytes_raises_only_protocol_error(buf, offset, flags):
    try:
        record, end = tm.decode_tag_record(buf, offset, flags)
    except ProtocolError:
        return
    assert offset <= end <= len(buf) and isinstance(record.epc, str)


@pytest.mark.slow
@settings(max_examples=1000)
@given(
    frame=st.builds(
        Frame,
        opcode=st.sampled_from([0x22, 0x29, 0x2F, 0x03, 0x04]) | st.integers(0, 255),
        status=st.sampled_from([0, 0x400]) | st.integers(0, 0xFFFF),
        data=st.binary(max_size=80),
    )
)
def test_frame_decoders_on_random_frames_raise_only_protocol_error(frame):
    for decode in (
        tm.decode_stream,
        tm.decode_tag_buffer,
        tm.decode_read_tag_multiple,
        lambda f: tm.decode_version(f.data),
        lambda f: tm.decode_current_program(f.data),
    ):
        with contextlib.suppress(ProtocolError):
            decode(frame)
