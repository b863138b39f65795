"""A protocol-accurate emulated ThingMagic M6e-Nano-like module, on a pseudo-terminal or TCP socket.

The driver and its tests talk to it exactly as to hardware: binary frames over a real pty or socket,
opened with pyserial.  Two layers:

* :class:`ModuleEmulator`: the module's state machine.  ``handle(command)`` returns the reply frames
  and ``poll(now)`` the frames it pushes by itself while streaming; no I/O, so it is tested directly.
* :class:`ModuleLink`: runs an emulator on a pty (``on_pty``), an existing fd (``on_fd``) or a
  loopback TCP server (``on_tcp``, for pyserial ``socket://``) on a background thread, with fault
  injection (``inject``, ``reboot``, ``set_silent``); the line itself is
  :class:`vipsense.testing.EmulatorLink`.

Which cards are in the field is the caller's business: ``source(now)`` returns the reads that happened
since its previous call.  Behaviour follows /work/shared/reference/thingmagic-serial.md ("ref §n") and
the SparkFun Nano captures it cites; where the real module's answer is not documented the choice is
marked "undocumented" below.

Command line, for integrators with a serial terminal or their own host software::

    python -m vipsense.plugins.readers.thingmagic.emulator --pty --tag E2801160600002084C1A0001
    python -m vipsense.plugins.readers.thingmagic.emulator --tcp 4001 --tag 300833B2DDD906C000000000
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import attrs

from vipsense import testing
from vipsense.shutdown import Shutdown

from . import protocol as tm
from .protocol import Command, CommandParser, TagRecord

DEFAULT_READ_POWER = 2700  #: centi-dBm; also the Nano's maximum (SparkFun capture: 0A 8C)
MIN_READ_POWER = 0
PROGRAM_BOOTLOADER = 0x11  # (p & 3) == 1
PROGRAM_APPLICATION = 0x52  # the value a running Nano answers (SparkFun capture)
STANDARD_BAUD_RATES = frozenset({9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600})
MAX_SEARCH_SECONDS = 10.0
QUIET_LINE_SECONDS = 0.05  #: a partial command older than this is given up (a module's inter-byte timeout)
_FREQUENCIES_KHZ = tuple(902_750 + 500 * k for k in range(50))  # an NA hop table


def _epc_validator(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"EPC must be hex, got {value!r}") from None
    if not raw or len(raw) % 2 or len(raw) > 62:
        raise ValueError(f"EPC must be 2..62 bytes in whole 16-bit words, got {len(raw)} bytes")


def _upper(value: str) -> str:
    """``str.upper`` as a function: mypy's attrs plugin takes no method as a converter."""
    return str.upper(value)


def _clamp_rssi(value: float) -> int:
    """The module reports RSSI as one signed byte."""
    return max(-128, min(127, round(value)))


@attrs.frozen
class EmulatedRead:
    """One singulation of a card by the emulated module."""

    epc: str = attrs.field(converter=_upper, validator=_epc_validator)
    antenna: int = attrs.field(default=1, validator=[attrs.validators.ge(1), attrs.validators.le(16)])
    rssi: int = attrs.field(default=-50, converter=_clamp_rssi)


Source = Callable[[float], Iterable[EmulatedRead]]


@attrs.define
class _Buffered:
    record: TagRecord
    count: int


class ModuleEmulator:
    """The module's state: bootloader or application, region, protocol, antennas, power, the on-module
    tag buffer and continuous reading.  Not thread-safe; :class:`ModuleLink` serialises access."""

    def __init__(
        self,
        source: Source,
        *,
        start_in_bootloader: bool = True,
        streaming: bool = True,
        keepalive_interval: float = 1.0,
        model_hw: int = 0x30,
        connected_antennas: Iterable[int] = (1, 2),
        buffer_capacity: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.streaming_supported = streaming
        self.keepalive_interval = keepalive_interval
        self.connected_antennas = frozenset(connected_antennas)
        self.buffer_capacity = buffer_capacity  #: ≈1024 96-bit EPCs on an M6e (ref §8)
        self.clock = clock
        self.version_data = tm.encode_version_data(model_hw)
        self.commands = 0  #: commands handled, for tests
        self._reset(bootloader=start_in_bootloader)

    def _reset(self, *, bootloader: bool) -> None:
        self.in_bootloader = bootloader
        self.region = 0  #: 0 = not set; reads answer 0x0405 until it is
        self.protocol = 0  #: 0 = none; reads answer 0x0401 until Gen2 is set
        self.antennas: tuple[int, ...] = (1,)
        self.read_power = DEFAULT_READ_POWER
        self.buffer: dict[str, _Buffered] = {}
        self.streaming_active = False
        self._stream_metadata = tm.META_DEFAULT
        self._stream_flags = 0x001B
        self._stream_option = tm.READ_OPTION_METADATA
        self._stream_base = 0.0
        self._last_keepalive = 0.0
        self._hop = 0

    # -- commands --------------------------------------------------------------------------------
    def handle(self, command: Command) -> list[bytes]:
        """The frames the module sends in answer to one command."""
        self.commands += 1
        op = command.opcode
        if self.in_bootloader:
            handler = self._BOOTLOADER_HANDLERS.get(op)
        else:
            handler = self._APPLICATION_HANDLERS.get(op)
        if handler is None:  # the bootloader knows few opcodes; 0x101 also means "in bootloader" (ref §4)
            return [tm.encode_response(op, tm.INVALID_OPCODE)]
        return handler(self, command)

    def search_duration(self, command: Command) -> float:
        """How long the module searches before it answers this command (Read Tag Multiple's timeout)."""
        if self.in_bootloader or command.opcode != tm.READ_TAG_MULTIPLE or len(command.data) < 5:
            return 0.0
        data = command.data[1:] if command.data[0] in (0x81, 0x84, 0x88) else command.data
        return min(int.from_bytes(data[3:5], "big") / 1000.0, MAX_SEARCH_SECONDS)

    def _reply(self, command: Command, data: bytes = b"", status: int = tm.OK) -> list[bytes]:
        return [tm.encode_response(command.opcode, status, data)]

    def _version(self, command: Command) -> list[bytes]:
        return self._reply(command, self.version_data)

    def _boot_firmware(self, command: Command) -> list[bytes]:
        self._reset(bootloader=False)
        self._drain()
        return self._reply(command, self.version_data)

    def _boot_bootloader(self, command: Command) -> list[bytes]:
        self._reset(bootloader=True)
        return self._reply(command)

    def _current_program(self, command: Command) -> list[bytes]:
        program = PROGRAM_BOOTLOADER if self.in_bootloader else PROGRAM_APPLICATION
        return self._reply(command, bytes((program,)))

    def _set_baud(self, command: Command) -> list[bytes]:
        if len(command.data) != 4:
            return self._reply(command, status=tm.WRONG_DATA_LENGTH)
        if int.from_bytes(command.data, "big") not in STANDARD_BAUD_RATES:
            return self._reply(command, status=0x010A)
        return self._reply(command)  # a pty or socket has no baud rate to change

    def _get_region(self, command: Command) -> list[bytes]:
        return self._reply(command, bytes((self.region,)))

    def _set_region(self, command: Command) -> list[bytes]:
        if len(command.data) != 1:
            return self._reply(command, status=tm.WRONG_DATA_LENGTH)
        if command.data[0] not in tm.REGIONS.values():
            return self._reply(command, status=tm.INVALID_REGION)
        self.region = command.data[0]
        return self._reply(command)

    def _get_protocol(self, command: Command) -> list[bytes]:
        return self._reply(command, self.protocol.to_bytes(2, "big"))

    def _set_protocol(self, command: Command) -> list[bytes]:
        if len(command.data) != 2:
            return self._reply(command, status=tm.WRONG_DATA_LENGTH)
        if int.from_bytes(command.data, "big") != tm.PROTOCOL_GEN2:  # a Nano speaks Gen2 only
            return self._reply(command, status=tm.INVALID_PROTOCOL)
        self.protocol = tm.PROTOCOL_GEN2
        return self._reply(command)

    def _set_antenna(self, command: Command) -> list[bytes]:
        data = command.data
        if len(data) == 2:  # plain "tx rx"
            pairs = [(data[0], data[1])]
        elif data[:1] == b"\x02" and len(data) >= 3 and len(data) % 2 == 1:  # search list of {tx, rx}
            pairs = list(zip(data[1::2], data[2::2], strict=True))
        elif data[:1] == b"\x04" and len(data) >= 8 and (len(data) - 1) % 7 == 0:  # {port, powers, settle}
            pairs = [(port, port) for port in data[1::7]]
        elif not data or data[:1] in (b"\x02", b"\x04"):
            return self._reply(command, status=tm.WRONG_DATA_LENGTH)
        else:
            return self._reply(command, status=tm.INVALID_PARAMETER)
        if any(port not in self.connected_antennas for pair in pairs for port in pair):
            return self._reply(command, status=tm.ANTENNA_NOT_CONNECTED)
        self.antennas = tuple(dict.fromkeys(tx for tx, _ in pairs))
        return self._reply(command)

    def _get_read_power(self, command: Command) -> list[bytes]:
        power = self.read_power.to_bytes(2, "big", signed=True)
        if command.data[:1] == b"\x01":  # current, max, min (SparkFun capture)
            limits = DEFAULT_READ_POWER.to_bytes(2, "big") + MIN_READ_POWER.to_bytes(2, "big")
            return self._reply(command, b"\x01" + power + limits)
        return self._reply(command, b"\x00" + power)

    def _set_read_power(self, command: Command) -> list[bytes]:
        if len(command.data) != 2:
            return self._reply(command, status=tm.WRONG_DATA_LENGTH)
        power = int.from_bytes(command.data, "big", signed=True)
        if power > DEFAULT_READ_POWER:
            return self._reply(command, status=tm.POWER_TOO_HIGH)
        if power < MIN_READ_POWER:
            return self._reply(command, status=tm.POWER_TOO_LOW)
        self.read_power = power
        return self._reply(command)

    def _get_reader_param(self, command: Command) -> list[bytes]:
        if len(command.data) < 2:
            return self._reply(command, status=tm.WRONG_DATA_LENGTH)
        return self._reply(command, command.data[:2] + b"\x00")  # every option off, as after power-up

    def _set_reader_param(self, command: Command) -> list[bytes]:
        return self._reply(command)  # accepted and ignored (read filter, unique-by-antenna, ...)

    def _clear_buffer(self, command: Command) -> list[bytes]:
        self.buffer.clear()
        return self._reply(command)

    def _not_ready(self) -> int:
        if not self.region:
            return tm.AFE_NOT_ON
        if not self.protocol:
            return tm.NO_PROTOCOL_SET
        return tm.OK

    def _read_tag_multiple(self, command: Command) -> list[bytes]:
        data = command.data
        if data[:1] in (b"\x81", b"\x84", b"\x88"):  # singulation byte (select/BAP) moves every field
            data = data[1:]
        if len(data) < 5 or (data[0] & tm.READ_OPTION_METADATA and len(data) < 7):
            return self._reply(command, status=tm.WRONG_DATA_LENGTH)
        if self.streaming_active:  # undocumented: we refuse a second search while streaming
            return self._reply(command, status=tm.INVALID_PARAMETER)
        search_flags = int.from_bytes(data[1:3], "big")
        if search_flags & tm.SEARCH_STREAMING:  # streaming belongs to 0x2F here
            return self._reply(command, status=tm.UNIMPLEMENTED_FEATURE)
        if status := self._not_ready():
            return self._reply(command, status=status)
        now = self.clock()
        timeout_ms = int.from_bytes(data[3:5], "big")
        status = tm.OK
        for read in self._collect(now):
            entry = self.buffer.get(read.epc)
            if entry is not None:  # one record per EPC, read count incremented (presence.md §2)
                entry.count += 1
                continue
            if len(self.buffer) >= self.buffer_capacity:
                status = tm.TAG_BUFFER_FULL
                continue
            self.buffer[read.epc] = _Buffered(self._record(read, timeout_ms), 1)
        if status:
            return self._reply(command, status=status)
        if not self.buffer:
            return self._reply(command, status=tm.NO_TAGS_FOUND)  # MAPI reads this as 0 tags
        count = len(self.buffer)
        if search_flags & tm.SEARCH_LARGE_POPULATION:
            tail = count.to_bytes(4, "big")
        else:
            tail = bytes((min(count, 0xFF),))
        return self._reply(command, data[:3] + tail)

    def _get_tag_buffer(self, command: Command) -> list[bytes]:
        if len(command.data) != 3:
            return self._reply(command, status=tm.WRONG_DATA_LENGTH)
        metadata = int.from_bytes(command.data[:2], "big")
        if metadata & ~tm.META_ALL:
            return self._reply(command, status=tm.INVALID_PARAMETER)
        body = bytearray()
        sent: list[str] = []
        for epc, entry in self.buffer.items():  # as many records as fit in one frame
            record = attrs.evolve(entry.record, read_count=min(entry.count, 0xFF))
            wire = tm.encode_tag_record(record, metadata)
            if 4 + len(body) + len(wire) > tm.MAX_DATA_LENGTH or len(sent) == 0xFF:
                break
            body += wire
            sent.append(epc)
        for epc in sent:  # handed over: the next Get Tag Buffer continues with the rest
            del self.buffer[epc]
        return self._reply(command, command.data[:3] + bytes((len(sent),)) + body)

    def _multi_protocol(self, command: Command) -> list[bytes]:
        if not self.streaming_supported:  # firmware without continuous reading: the driver must poll
            return self._reply(command, status=tm.INVALID_OPCODE)
        data = command.data
        if len(data) < 3:
            return self._reply(command, status=tm.WRONG_DATA_LENGTH)
        if data[2] == 0x02:
            return self._stop_streaming()
        if data[2] != 0x01 or len(data) < 6 or data[3] != tm.READ_TAG_MULTIPLE:
            return self._reply(command, status=tm.INVALID_PARAMETER)
        if self.streaming_active:  # undocumented
            return self._reply(command, status=tm.INVALID_PARAMETER)
        # per protocol: protocol id, PLEN, embedded 0x22, PLEN bytes of its payload (ref §7)
        block = data[6:]
        if len(block) < 3 or block[2] != tm.READ_TAG_MULTIPLE or len(block) < 3 + block[1] or block[1] < 5:
            return self._reply(command, status=tm.WRONG_DATA_LENGTH)
        if block[0] != tm.PROTOCOL_GEN2:
            return self._reply(command, status=tm.INVALID_PROTOCOL)
        embedded = block[3 : 3 + block[1]]
        option = embedded[0]
        metadata = 0
        if option & tm.READ_OPTION_METADATA:
            if len(embedded) < 7:
                return self._reply(command, status=tm.WRONG_DATA_LENGTH)
            metadata = int.from_bytes(embedded[5:7], "big")
            if metadata & ~tm.META_ALL:
                return self._reply(command, status=tm.INVALID_PARAMETER)
        if status := self._not_ready():
            return self._reply(command, status=status)
        now = self.clock()
        self._drain(now)
        self.streaming_active = True
        self._stream_option = option
        self._stream_flags = int.from_bytes(embedded[1:3], "big")
        self._stream_metadata = metadata
        self._stream_base = now
        self._last_keepalive = now
        return self._reply(command, bytes((0x01, tm.READ_TAG_MULTIPLE)) + data[4:6])

    def _stop_streaming(self) -> list[bytes]:
        """Tag frames still pending, the end-of-search 0x0400, then the 0x2F "stopped" reply (SparkFun
        capture ``3-Ant Select - Reading.txt``: ``FF 00 22 04 00 84 E0`` then ``FF 01 2F 00 00 02 30 E6``)."""
        out = [frame for frame in self.poll() if frame[1]] if self.streaming_active else []  # no keep-alive
        if self.streaming_active:
            out.append(tm.encode_response(tm.READ_TAG_MULTIPLE, tm.NO_TAGS_FOUND))
        self.streaming_active = False
        out.append(tm.encode_response(tm.MULTI_PROTOCOL, tm.OK, b"\x02"))
        return out

    _BOOTLOADER_HANDLERS: ClassVar[Mapping[int, Callable[[ModuleEmulator, Command], list[bytes]]]] = {
        tm.VERSION: _version,
        tm.BOOT_FIRMWARE: _boot_firmware,
        tm.GET_CURRENT_PROGRAM: _current_program,
        tm.SET_BAUD: _set_baud,
    }
    _APPLICATION_HANDLERS: ClassVar[Mapping[int, Callable[[ModuleEmulator, Command], list[bytes]]]] = {
        tm.VERSION: _version,
        tm.BOOT_BOOTLOADER: _boot_bootloader,
        tm.GET_CURRENT_PROGRAM: _current_program,
        tm.SET_BAUD: _set_baud,
        tm.GET_REGION: _get_region,
        tm.SET_REGION: _set_region,
        tm.GET_PROTOCOL: _get_protocol,
        tm.SET_PROTOCOL: _set_protocol,
        tm.SET_ANTENNA: _set_antenna,
        tm.GET_READ_POWER: _get_read_power,
        tm.SET_READ_POWER: _set_read_power,
        tm.GET_READER_PARAM: _get_reader_param,
        tm.SET_READER_PARAM: _set_reader_param,
        tm.CLEAR_TAG_BUFFER: _clear_buffer,
        tm.READ_TAG_MULTIPLE: _read_tag_multiple,
        tm.GET_TAG_BUFFER: _get_tag_buffer,
        tm.MULTI_PROTOCOL: _multi_protocol,
    }  # 0x04 in the application answers 0x101, as an already-running firmware does

    # -- what happens without a command -----------------------------------------------------------
    def poll(self, now: float | None = None) -> list[bytes]:
        """Frames pushed by the module itself: one 0x22 tag frame per read while streaming and a 0x0400
        keep-alive about once per ``keepalive_interval`` (ref §7).  When not searching, reads are
        drained and lost, as RF is off."""
        now = self.clock() if now is None else now
        if not self.streaming_active:
            self._drain(now)
            return []
        out = []
        metadata = self._stream_metadata
        for read in self._collect(now):
            record = self._record(read, int((now - self._stream_base) * 1000))
            out.append(tm.encode_stream_tag(record, metadata, self._stream_flags, self._stream_option))
        if now - self._last_keepalive >= self.keepalive_interval:
            self._last_keepalive = now
            out.append(tm.encode_response(tm.READ_TAG_MULTIPLE, tm.NO_TAGS_FOUND))
        return out

    def reboot(self) -> list[bytes]:
        """Power cycle: back to the bootloader with every setting lost; announces itself with an
        unsolicited 0x04 frame, which the host must take as "re-initialise" (ref §1)."""
        self._reset(bootloader=True)
        self._drain()
        return [tm.encode_response(tm.BOOT_FIRMWARE, tm.OK, self.version_data)]

    def _drain(self, now: float | None = None) -> None:
        for _ in self.source(self.clock() if now is None else now):
            pass

    def _collect(self, now: float) -> list[EmulatedRead]:
        antennas = self.antennas
        return [read for read in self.source(now) if read.antenna in antennas]

    def _record(self, read: EmulatedRead, timestamp_ms: int) -> TagRecord:
        epc = bytes.fromhex(read.epc)
        self._hop = (self._hop + 7) % len(_FREQUENCIES_KHZ)
        return TagRecord(
            epc=read.epc,
            pc=tm.pc_for_epc(epc),
            read_count=1,
            rssi=read.rssi,
            antenna=read.antenna,
            frequency_khz=_FREQUENCIES_KHZ[self._hop],
            timestamp_ms=max(0, timestamp_ms) & 0xFFFFFFFF,
            phase=0,
            protocol=tm.PROTOCOL_GEN2,
            data=b"",
            gpio=0,
        )


# -- sources -------------------------------------------------------------------------------------------
class ReadQueue:
    """A source fed by hand: ``add()`` reads from any thread; the emulator takes them on its next poll."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: list[EmulatedRead] = []

    def add(self, *reads: EmulatedRead) -> None:
        with self._lock:
            self._reads.extend(reads)

    def __call__(self, now: float) -> list[EmulatedRead]:
        with self._lock:
            reads, self._reads = self._reads, []
        return reads


class PeriodicReads:
    """Every card read ``rate`` times a second on one antenna with a little RSSI jitter (CLI, demos)."""

    def __init__(
        self,
        epcs: Sequence[str],
        rate: float = 20.0,
        antenna: int = 1,
        rssi: float = -50.0,
        jitter: float = 3.0,
        seed: int = 1,
    ) -> None:
        self.epcs = [EmulatedRead(epc).epc for epc in epcs]  # validated early
        self.rate = rate
        self.antenna = antenna
        self.rssi = rssi
        self.jitter = jitter
        self._rng = random.Random(seed)
        self._start: float | None = None
        self._emitted = 0

    def __call__(self, now: float) -> list[EmulatedRead]:
        if self._start is None:
            self._start = now
        due = int((now - self._start) * self.rate)
        rounds, self._emitted = max(0, due - self._emitted), max(due, self._emitted)
        return [
            EmulatedRead(epc, self.antenna, self.rssi + self._rng.uniform(-self.jitter, self.jitter))
            for _ in range(rounds)
            for epc in self.epcs
        ]


class ModuleLink(testing.EmulatorLink[ModuleEmulator]):
    """Runs a :class:`ModuleEmulator` behind a real pty, fd or loopback socket on a background thread
    (:class:`vipsense.testing.EmulatorLink`), with the module's faults: ``reboot``, ``set_silent``."""

    thread_name = "thingmagic-emulator"

    def __init__(
        self,
        emulator: ModuleEmulator,
        transport: testing.Transport,
        *,
        poll_interval: float = 0.005,
        **kwargs: Any,
    ) -> None:
        super().__init__(emulator, transport, **kwargs)
        self.poll_interval = poll_interval  #: how often the source is polled while streaming
        self._parser = CommandParser()
        self._silent = False

    # -- fault injection -----------------------------------------------------------------------------
    def reboot(self) -> None:
        """The module resets: bootloader, settings lost, streaming stopped, a 0x04 frame sent."""
        with self.lock:
            frames = self.emulator.reboot()
            self._parser = CommandParser()
            if not self._silent:
                self.write(b"".join(frames))

    def set_silent(self, silent: bool) -> None:
        """Hang (True) or recover (False): while silent nothing is answered or streamed, but the port
        stays open, as with a hung module or a cut cable."""
        with self.lock:
            self._silent = silent

    # -- the thread ----------------------------------------------------------------------------------
    def serve(self) -> None:
        clock = self.emulator.clock
        next_poll = clock()
        last_byte = time.monotonic()
        while not self.stopping.is_set():
            chunk = self.read(self.poll_interval)
            with self.lock:
                if self.fresh_line():  # a new TCP client: a fresh line
                    self._parser = CommandParser()
                commands = self._parser.feed(chunk) if chunk and not self._silent else []
                if chunk:
                    last_byte = time.monotonic()
                elif self._parser.buffered and time.monotonic() - last_byte > QUIET_LINE_SECONDS:
                    commands = self._parser.flush()  # a damaged LEN must not hold good commands back
            for command in commands:
                self._execute(command)
            now = clock()
            if now >= next_poll:
                with self.lock:
                    frames = self.emulator.poll(now)
                    if not self._silent:
                        self.write(b"".join(frames))
                next_poll = now + self.poll_interval

    def _execute(self, command: Command) -> None:
        with self.lock:
            duration = self.emulator.search_duration(command)
        if duration and self.stopping.wait(duration):  # the module searches before it answers
            return
        with self.lock:
            if not self._silent:
                self.write(b"".join(self.emulator.handle(command)))


#: The name :class:`ModuleLink` had before the line moved to :mod:`vipsense.testing`; kept for importers.
EmulatorLink = ModuleLink


# -- command line --------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vipsense.plugins.readers.thingmagic.emulator",
        description="An emulated ThingMagic M6e Nano on a pseudo-terminal or a loopback TCP port.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="create a pseudo-terminal and print its path")
    where.add_argument("--tcp", type=int, metavar="PORT", help="listen on 127.0.0.1:PORT (0 = any free port)")
    parser.add_argument(
        "--tag", action="append", default=[], metavar="EPC", help="a card in the field (repeat the option)"
    )
    parser.add_argument("--rate", type=float, default=20.0, help="reads per second of each card (default 20)")
    parser.add_argument(
        "--antenna", type=int, default=1, help="the antenna the cards are read on (default 1)"
    )
    parser.add_argument(
        "--app", action="store_true", help="start in the application instead of the bootloader"
    )
    parser.add_argument("--no-streaming", action="store_true", help="refuse continuous reading (0x2F)")
    args = parser.parse_args(argv)
    try:
        source = PeriodicReads(args.tag, rate=args.rate, antenna=args.antenna)
    except ValueError as exc:
        parser.error(str(exc))
    emulator = ModuleEmulator(source, start_in_bootloader=not args.app, streaming=not args.no_streaming)
    if args.pty:
        link = ModuleLink.on_pty(emulator)
        where_text = link.device_path
    else:
        link = ModuleLink.on_tcp(emulator, port=args.tcp)
        where_text = link.url
    stop = Shutdown.on_signals()
    with link:
        print(where_text, flush=True)
        print(
            f"emulating an M6e Nano with {len(args.tag)} card(s) at {args.rate:g} reads/s; "
            "Ctrl-C or SIGTERM stops",
            flush=True,
        )
        stop.wait_until_requested()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
