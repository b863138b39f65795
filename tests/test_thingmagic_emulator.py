"""The emulated ThingMagic module: its state machine directly, then over a real pty and a real loopback
socket opened with pyserial, as the driver opens hardware."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import serial

from vipsense.plugins.readers.thingmagic import protocol as tm
from vipsense.plugins.readers.thingmagic.emulator import (
    EmulatedRead,
    ModuleEmulator,
    ModuleLink,
    PeriodicReads,
    ReadQueue,
)
from vipsense.plugins.readers.thingmagic.protocol import CommandParser, Frame, FrameParser, StatusError

from .conftest import wait_for
from .processes import stop

CARD_A = "E2801160600002084C1A0001"
CARD_B = "300833B2DDD906C000000000"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ask(emulator: ModuleEmulator, command: bytes) -> list[Frame]:
    """Send one command frame through the command parser, as the link does; parse the reply frames."""
    (parsed,) = CommandParser().feed(command)
    return FrameParser().feed(b"".join(emulator.handle(parsed)))


def ask_one(emulator: ModuleEmulator, command: bytes) -> Frame:
    (frame,) = ask(emulator, command)
    assert frame.opcode == command[2]
    return frame


def bring_up(emulator: ModuleEmulator, antennas=(1,)) -> None:
    assert tm.decode_current_program(ask_one(emulator, tm.get_current_program()).data)
    assert tm.decode_version(ask_one(emulator, tm.boot_firmware()).data).model == "M6e Nano"
    for command in (
        tm.set_region(tm.REGIONS["NA2"]),
        tm.set_protocol_gen2(),
        tm.set_antenna_search_list(antennas),
    ):
        tm.check_status(ask_one(emulator, command))


@pytest.fixture
def queue() -> ReadQueue:
    return ReadQueue()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def module(queue, clock) -> ModuleEmulator:
    return ModuleEmulator(queue, clock=clock, keepalive_interval=1.0)


# -- the state machine -----------------------------------------------------------------------------------
def test_bootloader_until_boot_firmware(module):
    assert tm.decode_current_program(ask_one(module, tm.get_current_program()).data) is True
    assert (
        tm.decode_version(ask_one(module, tm.get_version()).data).model == "M6e Nano"
    )  # works in bootloader
    assert ask_one(module, tm.set_region(0x0D)).status == tm.INVALID_OPCODE
    assert ask_one(module, tm.read_tag_multiple(100)).status == tm.INVALID_OPCODE
    boot = ask_one(module, tm.boot_firmware())
    assert boot.status == 0 and tm.decode_version(boot.data).firmware_version == "01.03.01.47"
    assert tm.decode_current_program(ask_one(module, tm.get_current_program()).data) is False
    assert ask_one(module, tm.boot_firmware()).status == tm.INVALID_OPCODE  # already running
    assert ask_one(module, tm.set_region(0x0D)).status == 0


def test_application_start_and_model_are_configurable(queue):
    module = ModuleEmulator(queue, start_in_bootloader=False, model_hw=0x18)
    assert tm.decode_current_program(ask_one(module, tm.get_current_program()).data) is False
    assert tm.decode_version(ask_one(module, tm.get_version()).data).model == "M6e"


def test_region_must_be_set_before_reading(module, queue):
    ask_one(module, tm.boot_firmware())
    queue.add(EmulatedRead(CARD_A))
    reply = ask_one(module, tm.read_tag_multiple(100))
    assert reply.status == tm.AFE_NOT_ON
    with pytest.raises(StatusError, match="0x0405 to opcode 0x22: AFE not on"):
        tm.decode_read_tag_multiple(reply)
    assert ask_one(module, tm.start_continuous()).status == tm.AFE_NOT_ON
    assert ask_one(module, tm.set_region(0x42)).status == tm.INVALID_REGION
    tm.check_status(ask_one(module, tm.set_region(tm.REGIONS["EU3"])))
    assert ask_one(module, tm.get_region()).data == b"\x08"
    assert ask_one(module, tm.read_tag_multiple(100)).status == tm.NO_PROTOCOL_SET
    tm.check_status(ask_one(module, tm.set_protocol_gen2()))
    queue.add(EmulatedRead(CARD_A))
    assert tm.decode_read_tag_multiple(ask_one(module, tm.read_tag_multiple(100))) == 1


def test_missing_antenna_is_refused(module, queue):
    bring_up(module)
    reply = ask_one(module, tm.set_antenna_search_list([1, 3]))
    assert reply.status == tm.ANTENNA_NOT_CONNECTED
    assert "antenna not connected" in str(StatusError(reply.status, reply.opcode))
    # only antenna 1 is searched: a card in front of antenna 2 is not read
    queue.add(EmulatedRead(CARD_A, antenna=2), EmulatedRead(CARD_B, antenna=1))
    assert tm.decode_read_tag_multiple(ask_one(module, tm.read_tag_multiple(100))) == 1
    assert [r.epc for r in tm.decode_tag_buffer(ask_one(module, tm.get_tag_buffer()))] == [CARD_B]
    tm.check_status(ask_one(module, tm.set_antenna_search_list([1, 2])))
    queue.add(EmulatedRead(CARD_A, antenna=2))
    ask_one(module, tm.read_tag_multiple(100))
    (record,) = tm.decode_tag_buffer(ask_one(module, tm.get_tag_buffer()))
    assert (record.epc, record.antenna) == (CARD_A, 2)


def test_buffer_keeps_one_record_per_epc_with_read_counts(module, queue):
    bring_up(module)
    queue.add(*[EmulatedRead(CARD_A, rssi=-40)] * 5, *[EmulatedRead(CARD_B, rssi=-70)] * 2)
    assert tm.decode_read_tag_multiple(ask_one(module, tm.read_tag_multiple(250))) == 2
    records = tm.decode_tag_buffer(ask_one(module, tm.get_tag_buffer(tm.META_DEFAULT)))
    assert [(r.epc, r.read_count, r.rssi, r.antenna, r.pc) for r in records] == [
        (CARD_A, 5, -40, 1, 0x3000),
        (CARD_B, 2, -70, 1, 0x3000),
    ]
    assert records[0].timestamp_ms == 250 and records[0].frequency_khz is None  # only what was asked
    assert tm.decode_tag_buffer(ask_one(module, tm.get_tag_buffer())) == []  # handed over, gone
    assert ask_one(module, tm.read_tag_multiple(250)).status == tm.NO_TAGS_FOUND
    assert tm.decode_read_tag_multiple(ask_one(module, tm.read_tag_multiple(250))) == 0


def test_clear_tag_buffer(module, queue):
    bring_up(module)
    queue.add(EmulatedRead(CARD_A))
    ask_one(module, tm.read_tag_multiple(100))
    assert ask_one(module, tm.clear_tag_buffer()) == Frame(tm.CLEAR_TAG_BUFFER, 0, b"")
    assert tm.decode_tag_buffer(ask_one(module, tm.get_tag_buffer())) == []


def test_many_records_come_in_several_frames(module, queue):
    bring_up(module)
    epcs = [f"E2000000000000000000{n:04X}" for n in range(40)]
    queue.add(*[EmulatedRead(epc) for epc in epcs])
    assert tm.decode_read_tag_multiple(ask_one(module, tm.read_tag_multiple(100))) == 40
    fetched, frames = [], 0
    while records := tm.decode_tag_buffer(ask_one(module, tm.get_tag_buffer(0x01FF))):
        fetched += records
        frames += 1
    assert [r.epc for r in fetched] == epcs and frames > 1
    assert all(r.protocol == 5 and r.data == b"" for r in fetched)


def test_buffer_full(queue, clock):
    module = ModuleEmulator(queue, clock=clock, buffer_capacity=3)
    bring_up(module)
    queue.add(*[EmulatedRead(f"E200{n:04X}") for n in range(5)])
    reply = ask_one(module, tm.read_tag_multiple(100))
    assert reply.status == tm.TAG_BUFFER_FULL
    assert "tag ID buffer full" in str(StatusError(reply.status, reply.opcode))
    assert len(tm.decode_tag_buffer(ask_one(module, tm.get_tag_buffer()))) == 3


def test_command_errors(module):
    bring_up(module)
    assert ask_one(module, tm.encode_command(0x55)).status == tm.INVALID_OPCODE
    assert ask_one(module, tm.encode_command(tm.SET_REGION, b"")).status == tm.WRONG_DATA_LENGTH
    assert ask_one(module, tm.set_read_power(3100)).status == tm.POWER_TOO_HIGH
    assert ask_one(module, tm.set_read_power(-100)).status == tm.POWER_TOO_LOW
    tm.check_status(ask_one(module, tm.set_read_power(2500)))
    assert ask_one(module, tm.encode_command(tm.GET_READ_POWER, b"\x01")).data == bytes.fromhex(
        "01 09 C4 0A 8C 00 00"
    )
    assert ask_one(module, tm.encode_command(tm.SET_PROTOCOL, b"\x00\x03")).status == tm.INVALID_PROTOCOL


def test_streaming(module, queue, clock):
    bring_up(module)
    assert [tm.decode_stream(f).kind for f in ask(module, tm.start_continuous(0x01FF))] == ["started"]
    queue.add(EmulatedRead(CARD_A, rssi=-44), EmulatedRead(CARD_B, antenna=1))
    clock.now += 0.5
    events = [tm.decode_stream(f) for f in FrameParser().feed(b"".join(module.poll()))]
    assert [e.kind for e in events] == ["tag", "tag"]
    assert (events[0].record.epc, events[0].record.rssi, events[0].record.read_count) == (CARD_A, -44, 1)
    assert events[0].record.timestamp_ms == 500  # from the stream start
    assert module.poll() == []
    clock.now += 0.6
    assert [tm.decode_stream(f).kind for f in FrameParser().feed(b"".join(module.poll()))] == ["keepalive"]
    queue.add(EmulatedRead(CARD_A))
    stop = [tm.decode_stream(f).kind for f in ask(module, tm.stop_continuous())]
    assert stop == ["tag", "keepalive", "stopped"]  # tags first, then the 0x0400, then 0x2F 02 (capture)
    queue.add(EmulatedRead(CARD_A))
    assert module.poll() == []  # not searching: the read is lost


def test_streaming_refused_without_support(queue, clock):
    module = ModuleEmulator(queue, clock=clock, streaming=False)
    bring_up(module)
    reply = ask_one(module, tm.start_continuous())
    assert reply.status == tm.INVALID_OPCODE
    with pytest.raises(StatusError):
        tm.check_status(reply)
    queue.add(EmulatedRead(CARD_A))  # polling still works
    assert tm.decode_read_tag_multiple(ask_one(module, tm.read_tag_multiple(100))) == 1


def test_reboot_drops_to_bootloader(module, queue):
    bring_up(module)
    ask(module, tm.start_continuous())
    (boot,) = FrameParser().feed(b"".join(module.reboot()))
    assert boot.opcode == tm.BOOT_FIRMWARE and tm.decode_version(boot.data).model == "M6e Nano"
    assert module.in_bootloader and not module.streaming_active
    queue.add(EmulatedRead(CARD_A))
    assert module.poll() == []
    assert tm.decode_current_program(ask_one(module, tm.get_current_program()).data) is True
    bring_up(module)  # settings were lost: the full bring-up works again


def test_search_duration_is_the_read_timeout(module):
    (command,) = CommandParser().feed(tm.read_tag_multiple(300))
    assert module.search_duration(command) == 0.0  # bootloader: answered at once
    bring_up(module)
    assert module.search_duration(command) == pytest.approx(0.3)
    (other,) = CommandParser().feed(tm.get_version())
    assert module.search_duration(other) == 0.0


def test_emulated_read_validation():
    assert EmulatedRead("e280", rssi=-55.4).epc == "E280"
    assert EmulatedRead("E280", rssi=-55.6).rssi == -56
    for bad in ("E28", "XYZW", "", "00" * 64):
        with pytest.raises(ValueError):
            EmulatedRead(bad)


def test_periodic_reads():
    source = PeriodicReads([CARD_A, CARD_B], rate=10)
    assert source(0.0) == []
    reads = source(1.0)
    assert len(reads) == 20 and {r.epc for r in reads} == {CARD_A, CARD_B}
    assert len(source(1.05)) == 0 and len(source(1.1)) == 2


# -- over real I/O ---------------------------------------------------------------------------------------
class Host:
    """The host side of a link: a pyserial port and a frame parser."""

    def __init__(self, url: str) -> None:
        self.port = serial.serial_for_url(url, baudrate=115200, timeout=0.02)
        self.parser = FrameParser()

    def frames(self, until, timeout: float = 3.0) -> list[Frame]:
        """Read frames until ``until(frames)`` is true; fail at the deadline."""
        out: list[Frame] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out += self.parser.feed(self.port.read(65536))
            if until(out):
                return out
        raise AssertionError(f"timed out; got {len(out)} frames: {out[-5:]}")

    def command(self, frame: bytes, timeout: float = 3.0) -> Frame:
        self.port.write(frame)
        replies = self.frames(lambda fs: any(f.opcode == frame[2] for f in fs), timeout)
        return next(f for f in replies if f.opcode == frame[2])

    def bring_up(self) -> None:
        assert tm.decode_version(self.command(tm.get_version()).data).model == "M6e Nano"
        if tm.decode_current_program(self.command(tm.get_current_program()).data):
            tm.check_status(self.command(tm.boot_firmware()))
        for frame in (tm.set_region(0x0D), tm.set_protocol_gen2(), tm.set_antenna_search_list([1, 2])):
            tm.check_status(self.command(frame))
        tm.check_status(self.command(tm.set_read_power(2700)))
        tm.check_status(self.command(tm.clear_tag_buffer()))

    def close(self) -> None:
        self.port.close()


@pytest.fixture
def running():
    """Start links and hosts; stop and close them all in teardown."""
    links, hosts = [], []

    def start(kind: str, source, **options) -> tuple[ModuleLink, Host]:
        emulator = ModuleEmulator(source, **options)
        link = ModuleLink.on_pty(emulator) if kind == "pty" else ModuleLink.on_tcp(emulator)
        links.append(link.start())
        hosts.append(Host(link.url))
        return link, hosts[-1]

    yield start
    for host in hosts:
        host.close()
    for link in links:
        link.stop()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pty", "tcp"])
def test_continuous_reading_over_a_real_link(running, kind):
    source = PeriodicReads([CARD_A, CARD_B], rate=400)  # 800 reads/s in all
    link, host = running(kind, source, keepalive_interval=0.1)
    assert link.url == (link.device_path if kind == "pty" else f"socket://127.0.0.1:{link.port}")
    host.bring_up()
    host.port.write(tm.start_continuous(tm.META_DEFAULT))
    started = time.monotonic()

    def enough(frames):
        kinds = [tm.decode_stream(f).kind for f in frames]
        return kinds.count("tag") >= 600 and kinds.count("keepalive") >= 3

    events = [tm.decode_stream(f) for f in host.frames(enough, timeout=5.0)]
    elapsed = time.monotonic() - started
    assert events[0].kind == "started"
    tags = [e.record for e in events if e.kind == "tag"]
    assert {t.epc for t in tags} == {CARD_A, CARD_B}
    assert len(tags) / elapsed >= 500, f"{len(tags)} tag frames in {elapsed:.2f} s"
    host.port.write(tm.stop_continuous())
    tail = host.frames(lambda fs: any(tm.decode_stream(f).kind == "stopped" for f in fs))
    assert host.parser.crc_errors == 0 and host.parser.dropped_bytes == 0
    # after "stopped" the line is quiet apart from the command replies
    assert tm.decode_stream(tail[-1]).kind == "stopped"
    assert tm.decode_read_tag_multiple(host.command(tm.read_tag_multiple(100), timeout=2.0)) == 2


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pty", "tcp"])
def test_reboot_arrives_unsolicited(running, kind):
    link, host = running(kind, PeriodicReads([CARD_A], rate=50), keepalive_interval=0.1)
    host.bring_up()
    host.port.write(tm.start_continuous())
    host.frames(lambda fs: any(tm.decode_stream(f).kind == "tag" for f in fs))
    link.reboot()
    frames = host.frames(lambda fs: any(f.opcode == tm.BOOT_FIRMWARE for f in fs))
    boot = next(f for f in frames if f.opcode == tm.BOOT_FIRMWARE)
    assert tm.decode_version(boot.data).model == "M6e Nano"
    assert tm.decode_current_program(host.command(tm.get_current_program()).data) is True
    assert host.command(tm.read_tag_multiple(50)).status == tm.INVALID_OPCODE
    host.bring_up()  # the driver's re-initialisation path works


def test_injected_garbage_and_silence(running):
    link, host = running("pty", ReadQueue(), start_in_bootloader=False)
    good = tm.encode_response(tm.READ_TAG_MULTIPLE, tm.NO_TAGS_FOUND)
    corrupted = bytearray(good)
    corrupted[-1] ^= 0xFF
    link.inject(b"\x00\xff\xfe" + bytes(corrupted) + good)
    assert host.frames(lambda fs: len(fs) >= 1) == [Frame(0x22, 0x0400, b"")]
    assert host.parser.crc_errors >= 1 and host.parser.dropped_bytes == 3 + len(corrupted)

    link.set_silent(True)
    host.port.write(tm.get_version())
    with pytest.raises(AssertionError, match="timed out"):
        host.frames(lambda fs: len(fs) >= 1, timeout=0.3)  # a hung module answers nothing
    link.set_silent(False)
    assert host.command(tm.get_version()).status == 0


def test_a_damaged_command_does_not_hold_the_next_one_back(running):
    _, host = running("pty", ReadQueue())
    host.port.write(b"\xff\xf0\x03")  # a command header claiming 240 data bytes, then nothing
    assert tm.decode_version(host.command(tm.get_version(), timeout=2.0).data).model == "M6e Nano"


def test_on_fd_serves_a_caller_opened_terminal():
    master, slave = os.openpty()
    slave_path = os.ttyname(slave)
    link = ModuleLink.on_fd(ModuleEmulator(ReadQueue()), master).start()
    host = Host(slave_path)
    try:
        assert tm.decode_current_program(host.command(tm.get_current_program()).data) is True
    finally:
        host.close()
        link.stop()
        os.close(slave)
    with pytest.raises(OSError):
        os.fstat(master)  # closed with the link


@pytest.mark.slow
def test_tcp_client_can_reconnect_and_finds_the_module_as_it_left_it(running):
    link, host = running("tcp", ReadQueue())
    host.bring_up()
    host.close()
    again = Host(link.url)
    try:
        assert tm.decode_current_program(again.command(tm.get_current_program()).data) is False
        assert again.command(tm.get_region()).data == b"\x0d"
    finally:
        again.close()


def test_pty_survives_the_host_reopening_it(running):
    link, host = running("pty", ReadQueue())
    host.bring_up()
    host.close()
    again = Host(link.url)
    try:
        assert again.command(tm.get_region()).data == b"\x0d"
    finally:
        again.close()


def test_stop_is_idempotent_and_closes_the_pty():
    link = ModuleLink.on_pty(ModuleEmulator(ReadQueue())).start()
    path = link.device_path
    assert os.path.exists(path)
    link.stop()
    link.stop()
    assert link._thread is not None and not link._thread.is_alive()


def test_tcp_is_loopback_only():
    with pytest.raises(ValueError, match="loopback"):
        ModuleLink.on_tcp(ModuleEmulator(ReadQueue()), host="0.0.0.0")


@pytest.mark.slow
def test_command_line_emulator():
    process = subprocess.Popen(
        [sys.executable, "-m", "vipsense.plugins.readers.thingmagic.emulator", "--tcp", "0", "--tag", CARD_A],
        stdout=subprocess.PIPE,
        text=True,
    )
    host = None
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("socket://127.0.0.1:")
        host = Host(url)
        host.bring_up()
        host.port.write(tm.start_continuous())
        frames = host.frames(lambda fs: sum(tm.decode_stream(f).kind == "tag" for f in fs) >= 5)
        assert {tm.decode_stream(f).record.epc for f in frames if tm.decode_stream(f).kind == "tag"} == {
            CARD_A
        }
    finally:
        if host is not None:
            host.close()
        code = stop(process)  # SIGTERM: a background job would not see a SIGINT
    assert code == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=2).close()


#: how each emulator is started, and where it says it is
EMULATORS = {
    "thingmagic --pty": ["vipsense.plugins.readers.thingmagic.emulator", "--pty", "--tag", CARD_A],
    "gsm --tcp": ["vipsense.plugins.notifiers.sms_modem.emulator", "--tcp", "0"],
    "mercury4 --port": ["vipsense.plugins.readers.mercury4.emulator", "--port", "0", "--tag", CARD_A],
}
#: ``python -c`` this with a module and its arguments: ``python -m`` with SIGINT set as the test wants
STARTER = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.{}); "
    "sys.argv.pop(0); runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sent", "sigint"),
    [
        (signal.SIGTERM, "SIG_IGN"),  # a background job of a non-interactive shell: SIGINT ignored
        (signal.SIGINT, "default_int_handler"),  # Ctrl-C at a terminal
    ],
    ids=["SIGTERM", "SIGINT"],
)
@pytest.mark.parametrize("emulator", sorted(EMULATORS))
def test_each_emulator_stops_cleanly_on_a_signal(emulator, sent, sigint):
    """Exit 0, no traceback, and its pty or port released."""
    process = subprocess.Popen(
        [sys.executable, "-c", STARTER.format(sigint), *EMULATORS[emulator]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        where = re.search(r"(/dev/pts/\d+)|127\.0\.0\.1:(\d+)", process.stdout.readline())
        assert where, process.stderr.read()
        pty, port = where.group(1), where.group(2)
        if pty:
            assert os.path.exists(pty)
        else:
            socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()  # it listens
        process.send_signal(sent)
        _, err = process.communicate(timeout=10)
    finally:
        stop(process)
    assert process.returncode == 0 and "Traceback" not in err, err
    if pty:
        assert wait_for(lambda: not os.path.exists(pty), timeout=2)
    else:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()
