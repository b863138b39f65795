"""ThingMagic / JADAK embedded-module reader over pyserial: bring-up, continuous streaming (or timed
read-tag-multiple polling where the module cannot stream), and a link watchdog.

Protocol facts come from ``thingmagic-serial.md`` (Mercury API C 1.35.2.72 ``serial_reader_l3.c``,
``serial_reader_imp.h``, ``tmr_status.h``; SparkFun Nano logs); section numbers below refer to it.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from vipsense.api import Reader, ReaderContext

from . import protocol as tm

#: Seconds to wait for the module to leave the bootloader (the firmware CRC check takes a while).
BOOT_WAIT = 1.5


class LinkLost(ConnectionError):
    """The serial link or the module went away; the core reconnects with backoff."""


class Session:
    """One open serial link to one module: commands with their responses, and the read loops."""

    def __init__(self, port: Any, settings: Any, ctx: ReaderContext) -> None:
        self.port = port
        self.settings = settings
        self.ctx = ctx
        self.parser = tm.FrameParser()
        self._pending: list[tm.Frame] = []
        self._counted = (0, 0)
        self.last_frame = time.monotonic()

    # -- bytes ----------------------------------------------------------------------------------

    def _read(self) -> list[tm.Frame]:
        """Whatever frames have arrived, waiting at most the port's timeout for the first byte."""
        try:
            data = self.port.read(1)
            if data and self.port.in_waiting:
                data += self.port.read(self.port.in_waiting)
        except Exception as exc:  # pyserial raises SerialException/OSError when the adapter goes
            raise LinkLost(f"serial link lost: {exc}") from exc
        if data:
            frames = self.parser.feed(data)
        elif self.parser.buffered:
            # A quiet line: give up on a half frame (a corrupted LEN would otherwise hold back
            # every good frame behind it until enough bytes arrived for its CRC to fail).
            frames = self.parser.flush()
        else:
            return []
        self._count_garbage()
        if frames:
            self.last_frame = time.monotonic()
        return frames

    def _count_garbage(self) -> None:
        crc, dropped = self.parser.crc_errors, self.parser.dropped_bytes
        if (crc, dropped) != self._counted:
            self.ctx.count("crc_errors", crc - self._counted[0])
            self.ctx.count("dropped_bytes", dropped - self._counted[1])
            self._counted = (crc, dropped)

    def _write(self, frame: bytes) -> None:
        try:
            self.port.write(frame)
        except Exception as exc:
            raise LinkLost(f"serial link lost: {exc}") from exc

    # -- commands -------------------------------------------------------------------------------

    def command(self, frame: bytes, timeout: float | None = None, check: bool = True) -> tm.Frame:
        """Send one command and return its response (same opcode); §1: a 0x04 frame instead of the
        expected one means the module rebooted."""
        opcode = frame[2]
        timeout = timeout or self.settings.command_timeout
        self._write(frame)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for reply in self._pending_then_read():
                if reply.opcode == opcode:
                    if check and reply.status != tm.OK:
                        raise tm.StatusError(reply.status, opcode)
                    return reply
                if reply.opcode == tm.BOOT_FIRMWARE and opcode != tm.BOOT_FIRMWARE:
                    raise LinkLost("module rebooted (power cycle?)")
                # anything else (a late stream frame) is stale: drop it
        raise TimeoutError(f"no answer to command 0x{opcode:02X} from the module within {timeout:g} s")

    def _pending_then_read(self) -> list[tm.Frame]:
        if self._pending:
            frames, self._pending = self._pending, []
            return frames
        return self._read()

    def bring_up(self) -> tm.Version:
        """§5 bring-up: stop a stream left running (§8), boot the firmware, region, protocol,
        antennas, power, empty the tag buffer."""
        s = self.settings
        self._write(tm.stop_continuous())  # a module on a UART keeps streaming after the host left
        time.sleep(0.05)
        self.port.reset_input_buffer()
        self.parser = tm.FrameParser()
        self._counted = (0, 0)
        reply = self.command(tm.get_current_program(), check=False)
        if reply.status == tm.OK and tm.decode_current_program(reply.data):
            self.command(tm.boot_firmware(), timeout=BOOT_WAIT, check=False)
        version = tm.decode_version(self.command(tm.get_version()).data)
        self.command(tm.set_region(tm.REGIONS[s.region]))
        self.command(tm.set_protocol_gen2())
        try:
            self.command(tm.set_antenna_search_list(s.antennas))
        except tm.StatusError as exc:
            if exc.code == tm.ANTENNA_NOT_CONNECTED:
                ports = ", ".join(map(str, s.antennas))
                raise tm.ProtocolError(f"antenna not connected (configured antennas: {ports})") from exc
            raise
        self.command(tm.set_read_power(round(s.read_power_dbm * 100)))
        self.command(tm.clear_tag_buffer())
        return version

    # -- reading --------------------------------------------------------------------------------

    def _emit(self, record: tm.TagRecord) -> None:
        self.ctx.read(
            record.epc,
            antenna=record.antenna or self.settings.antennas[0],
            rssi=record.rssi,
            read_count=record.read_count or 1,
            reader_time=None if record.timestamp_ms is None else record.timestamp_ms / 1000,
        )

    def _check_silence(self) -> None:
        quiet = time.monotonic() - self.last_frame
        if quiet > self.settings.silence_timeout:
            raise TimeoutError(f"no frames from the module for {quiet:.1f} s (keep-alives missing)")

    def try_stream(self) -> bool:
        """Start continuous reading; False when the module cannot stream (§7)."""
        self._write(tm.start_continuous(tm.META_DEFAULT))
        deadline = time.monotonic() + self.settings.command_timeout
        while time.monotonic() < deadline:
            frames = self._read()
            for i, frame in enumerate(frames):
                if frame.opcode == tm.MULTI_PROTOCOL and frame.status not in (tm.OK, tm.NO_TAGS_FOUND):
                    return False
                if frame.opcode in (tm.MULTI_PROTOCOL, tm.READ_TAG_MULTIPLE):
                    self._pending.extend(frames[i:])  # the stream has begun: keep what came with it
                    return True
        raise TimeoutError("no answer to the start of continuous reading")

    def stream(self, stop: Any) -> None:
        while not stop.is_set():
            for frame in self._pending_then_read():
                event = tm.decode_stream(frame)
                if event.kind == "tag" and event.record is not None:
                    self._emit(event.record)
                elif frame.opcode == tm.BOOT_FIRMWARE:
                    raise LinkLost("module rebooted (power cycle?)")
                elif event.status == tm.TAG_BUFFER_FULL:
                    self.ctx.count("buffer_full")
                    self._restart_stream()
                elif event.kind == "status":
                    self.ctx.count(f"status_0x{event.status:04X}")
                    self.ctx.log.warning("module reports: %s", tm.describe_status(event.status))
                elif event.kind in ("stopped", "end"):
                    raise LinkLost("the module stopped streaming by itself")
            self._check_silence()
        self._stop_stream()

    def _restart_stream(self) -> None:
        """§7: on 0x601 (tag buffer full) stop, clear the buffer and start again."""
        self._stop_stream()
        self.command(tm.clear_tag_buffer())
        if not self.try_stream():
            raise LinkLost("the module refused to restart streaming")

    def _stop_stream(self) -> None:
        try:
            self._write(tm.stop_continuous())
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                if any(tm.decode_stream(f).kind == "stopped" for f in self._read()):
                    return
        except (LinkLost, TimeoutError):
            pass  # stopping anyway

    def poll(self, stop: Any) -> None:
        """Timed read-tag-multiple, then fetch and clear the on-module tag buffer (§5)."""
        s = self.settings
        timeout_ms = round(s.poll_time * 1000)
        while not stop.is_set():
            reply = self.command(
                tm.read_tag_multiple(timeout_ms), timeout=s.poll_time + s.command_timeout, check=False
            )
            if reply.status == tm.NO_TAGS_FOUND:
                continue
            if reply.status != tm.OK:
                raise tm.StatusError(reply.status, tm.READ_TAG_MULTIPLE)
            count = tm.decode_read_tag_multiple(reply)
            if count:
                self._fetch_buffer(count)

    def _fetch_buffer(self, count: int) -> None:
        """One Get Tag Buffer reply holds only as many records as fit in a frame (about nine
        96-bit EPCs with the default metadata): ask until ``count`` records came, then clear."""
        fetched = 0
        while fetched < count:
            reply = self.command(tm.get_tag_buffer(tm.META_DEFAULT), check=False)
            records = tm.decode_tag_buffer(reply) if reply.status == tm.OK else []
            if not records:
                break
            for record in records:
                self._emit(record)
            fetched += len(records)
        self.command(tm.clear_tag_buffer())


class _Until:
    """Stop reading when the branch stops, or shortly after an emulated scenario has played out."""

    GRACE = 0.5  #: seconds for the last frames to arrive after the scenario's last read

    def __init__(self, stop: Any, finished: Any) -> None:
        self.stop = stop
        self.finished = finished
        self._since: float | None = None

    def is_set(self) -> bool:
        if self.stop.is_set():
            return True
        if self.finished is None or not self.finished():
            return False
        if self._since is None:
            self._since = time.monotonic()
        return time.monotonic() - self._since > self.GRACE


class ThingMagicReader(Reader):
    def __init__(self, settings: Any, url: str, on_close: Any = None, finished: Any = None) -> None:
        self.settings = settings
        self.url = url
        self._port: Any = None
        self._on_close = on_close
        self._finished = finished  #: for an emulated module: has its scenario played out?

    def _open(self) -> Any:
        import serial  # pyserial: imported when a ThingMagic reader starts, not when plugins load

        try:
            return serial.serial_for_url(self.url, baudrate=self.settings.baudrate, timeout=0.05)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkLost(f"cannot open {self.url}: {exc}") from exc

    def run(self, ctx: ReaderContext) -> None:
        self._port = self._open()
        try:
            if ctx.stop.is_set():
                return
            session = Session(self._port, self.settings, ctx)
            version = session.bring_up()
            mode = self.settings.streaming
            streaming = mode != "off" and session.try_stream()
            if mode == "on" and not streaming:
                raise tm.ProtocolError("the module cannot stream; set streaming: auto or off")
            how = "streaming" if streaming else f"polling every {self.settings.poll_time:g} s"
            ctx.connected(f"{version.model} firmware {version.firmware_version} on {self.url}, {how}")
            (session.stream if streaming else session.poll)(_Until(ctx.stop, self._finished))
        finally:
            port, self._port = self._port, None
            with contextlib.suppress(Exception):  # already gone with the adapter
                port.close()

    def interrupt(self) -> None:
        port = self._port
        if port is not None and hasattr(port, "cancel_read"):
            port.cancel_read()

    def close(self) -> None:
        if self._on_close is not None:
            self._on_close()
