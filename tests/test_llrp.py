"""The LLRP reader: real captured RO_ACCESS_REPORT bytes through sllurp's decoder, and the real driver
against a real LLRP peer (llrpkit 0.3.0's emulator, on a loopback socket) inside a running branch:
greeting, link loss and reconnect, the keepalive watchdog, setup errors, settings.

llrpkit's emulator needs three shims before sllurp 3.0.5 can use it (``llrp.md`` §3); they live in
:class:`SllurpCompatibleEmulator` below, and two tests show what the driver reports without them.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import io
import logging
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llrpkit.emulator import EmulatedTag, LLRPEmulator
from llrpkit.protocol import enums, messages
from sllurp.llrp import LLRPReaderState

import vipsense
from vipsense.api import Duration, ReaderContext
from vipsense.branch import Branch
from vipsense.clock import Clock
from vipsense.config.errors import ProfileError
from vipsense.config.profile import load_profile
from vipsense.output import Output
from vipsense.pluginhost import load_host
from vipsense.plugins.readers.llrp import MISSING_EXTRA, LLRPSettings, make_reader
from vipsense.plugins.readers.llrp.driver import Link, LLRPReader
from vipsense.plugins.readers.llrp.reports import (
    MESSAGE_TYPES,
    LLRPProtocolError,
    TagReport,
    decode_message,
    decode_reports,
    normalise_tag,
    split_messages,
)

from .conftest import BASE_PROFILE, REPO, wait_for

DATA = Path(__file__).parent / "data" / "llrp"
ADA = "E20000000000000000000001"  # customer C1 in conftest.SEED
CAPTURE_FIRST_SEEN = 1385585041.558537  # the first report's FirstSeenTimestampUTC, 2013-11-27


def hex_file(name: str) -> bytes:
    return bytes.fromhex("".join((DATA / name).read_text().split()))


CAPTURE = hex_file("sllurp-ro-access-reports.hex")
#: (EPC, antenna, RSSI) -> reads in the capture; counted independently from the hex by the TV
#: parameters (0x8D EPC-96 ... 0x81 AntennaID 0x0001, 0x86 PeakRSSI) and the one EPCData (0x00F1).
CAPTURE_READS = {
    ("3005FB63AC1F3841EC880467", 1, -49.0): 16,
    ("3005FB63AC1F3841EC880467", 1, -50.0): 6,
    ("300833B2DDD906C000000000", 1, -58.0): 9,
    ("300833B2DDD906C000000000", 1, -57.0): 6,
    ("300833B2DDD906C000000000", 1, -61.0): 5,
    ("300833B2DDD906C000000000", 1, -60.0): 2,
    ("1FB41F712AC9C37AB79D618173188324001A", 1, -17.0): 1,
}


# -- the LLRP peer ---------------------------------------------------------------------------------


class SllurpCompatibleEmulator(LLRPEmulator):
    """llrpkit 0.3.0's emulator with the three fixes sllurp 3.0.5 needs (llrp.md §3), each one a
    place where llrpkit departs from LLRP 1.0.1.  ``shims`` names those to apply, so a test can show
    the failure each one avoids.  ``muted`` keeps the socket open but sends no KEEPALIVE or report,
    like a reader whose application hung."""

    def __init__(self, *, shims: frozenset[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.shims = shims
        self.muted = False
        self.received: list[object] = []  #: every message the client sent, decoded by llrpkit

    async def _handle_message(self, msg) -> None:
        self.received.append(msg)
        if "events" in self.shims and isinstance(msg, messages.ENABLE_EVENTS_AND_REPORTS):
            # It has no response (p.78); llrpkit answers ERROR_MESSAGE, which aborts sllurp's connect.
            return
        if "delete-all" in self.shims and isinstance(msg, messages.DELETE_ROSPEC) and msg.ro_spec_id == 0:
            # ROSpecID 0 means every ROSpec (p.52-54); llrpkit answers "no ROSpec 0".
            self._rospecs.clear()
            self._sync_reporting()
            status = self._status_ok()
            await self._send(messages.DELETE_ROSPEC_RESPONSE(llrp_status=status), message_id=msg.message_id)
            return
        await super()._handle_message(msg)
        if "immediate" in self.shims and isinstance(msg, messages.ENABLE_ROSPEC):
            # An enabled ROSpec with an Immediate start trigger runs (p.56); llrpkit waits for a
            # START_ROSPEC that sllurp never sends.
            spec, state = self._rospecs.get(msg.ro_spec_id, (None, ""))
            trigger = spec.ro_boundary_spec.ro_spec_start_trigger if spec is not None else None
            immediate = int(enums.ROSpecStartTriggerType.Immediate)
            if state == "Enabled" and int(trigger.ro_spec_start_trigger_type) == immediate:
                self._rospecs[msg.ro_spec_id] = (spec, "Active")
                self._sync_reporting()

    async def send_raw(self, data: bytes) -> None:
        async with self._send_lock:
            self._writer.write(data)
            await self._writer.drain()

    async def _send(self, msg, *, message_id: int = 0) -> None:
        if self.muted and isinstance(msg, messages.KEEPALIVE | messages.RO_ACCESS_REPORT):
            return
        await super()._send(msg, message_id=message_id)


ALL_SHIMS = frozenset({"events", "delete-all", "immediate"})


class EmulatorThread:
    """The emulator on an asyncio loop of its own thread, bound to 127.0.0.1 on an ephemeral port;
    it can be killed and started again on the same port."""

    def __init__(self, shims: frozenset[str] = ALL_SHIMS, rate: float = 20.0) -> None:
        self.shims = shims
        self.rate = rate
        self.port = 0
        self.emulator: SllurpCompatibleEmulator | None = None
        self.sessions: list[SllurpCompatibleEmulator] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="llrp-emulator", daemon=True)
        self.thread.start()

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(5)

    def start(self) -> int:
        self.emulator = SllurpCompatibleEmulator(
            shims=self.shims,
            host="127.0.0.1",
            port=self.port,
            tags=[EmulatedTag(epc=bytes.fromhex(ADA), antennas=(1,), rssi_dbm=-50.0)],
            reads_per_sec=self.rate,
            antenna_count=2,
        )
        self._call(self.emulator.start())
        self.port = self.emulator.port
        self.sessions.append(self.emulator)
        return self.port

    def kill(self) -> None:
        """The reader goes away: its listening socket and the client's connection close."""
        if self.emulator is not None:
            self._call(self.emulator.stop())
            self.emulator = None

    def send_raw(self, data: bytes) -> None:
        self._call(self.emulator.send_raw(data))

    def received(self) -> list[str]:
        return [type(m).__name__ for s in self.sessions for m in s.received]

    def close(self) -> None:
        self.kill()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def emulator():
    made: list[EmulatorThread] = []

    def make(**kwargs) -> EmulatorThread:
        emu = EmulatorThread(**kwargs)
        made.append(emu)
        emu.start()
        return emu

    yield make
    for emu in made:
        emu.close()
    assert wait_for(lambda: not any(t.name.startswith("sllurp-reader") for t in threading.enumerate()), 2)


class StateLog:
    def __init__(self) -> None:
        self.states: list[tuple[float, str, str]] = []

    @vipsense.hookimpl
    def vipsense_reader_status_changed(self, reader_id, status):
        self.states.append((time.monotonic(), status.state.value, status.reason))

    def seen(self, state: str, reason_start: str = "", after: float = 0.0) -> bool:
        return any(s == state and r.startswith(reason_start) and t >= after for t, s, r in self.states)


LLRP_PROFILE = BASE_PROFILE.replace(
    "  - {id: door, type: simulated, visitors: []}",
    "  - {id: door, type: llrp, host: 127.0.0.1, port: %(port)d, keepalive_interval: 300ms,"
    " connect_timeout: 2s, antennas: [1, 2]}",
)


@pytest.fixture
def llrp_branch(write_profile, tmp_path):
    made: list[Branch] = []

    def make(port: int):
        log = StateLog()
        host = load_host()
        host.add(log, "llrp-test-states")
        profile = load_profile(write_profile(LLRP_PROFILE % {"port": port}), host, data_dir=tmp_path / "data")
        out = io.StringIO()
        branch = Branch(profile, host, output=Output(out, live=False))
        branch.start()
        made.append(branch)
        return branch, out, log

    yield make
    for b in made:
        if not b.stopping:
            b.stop()


def reads(branch: Branch) -> int:
    return branch.status.counters.get("reads", 0)


# -- 1. real captured bytes ------------------------------------------------------------------------


def test_captured_reports_decode_through_sllurp_to_exact_reads():
    split = split_messages(CAPTURE)
    assert (len(split.messages), split.skipped, split.rest) == (45, 0, b"")
    assert {decode_message(m)[0] for m in split.messages} == {"RO_ACCESS_REPORT"}
    got = decode_reports(CAPTURE)
    assert Counter((r.epc, r.antenna, r.rssi) for r in got) == CAPTURE_READS
    assert {r.read_count for r in got} == {1}
    times = [r.reader_time for r in got]
    assert times[0] == pytest.approx(CAPTURE_FIRST_SEEN, abs=1e-6)
    assert times == sorted(times) and times[-1] - times[0] == pytest.approx(0.4826, abs=1e-3)


def test_captured_connection_event_decodes():
    name, body = decode_message(hex_file("sllurp-reader-event-notification.hex"))
    assert name == "READER_EVENT_NOTIFICATION"
    assert body["ReaderEventNotificationData"]["ConnectionAttemptEvent"] == {"Status": "Success"}


def make_ctx(received: list, stop: threading.Event | None = None) -> tuple[ReaderContext, list, dict]:
    states: list[tuple[str, str]] = []
    counters: dict[str, int] = {}
    ctx = ReaderContext(
        "door",
        Clock(),
        received.append,
        lambda state, reason: states.append((state.value, reason)),
        stop or threading.Event(),
        logging.getLogger("test.llrp"),
        counters,
    )
    return ctx, states, counters


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=40))
def test_captured_bytes_in_any_chunks_reach_the_pipeline_through_the_live_callback(cuts):
    """The driver's own sllurp client and tag callback, fed the capture as TCP would, in pieces."""
    got: list = []
    ctx, _, counters = make_ctx(got)
    link = Link(LLRPSettings(host="127.0.0.1"), ctx)  # never connects: the bytes are fed in directly
    link.client.llrp.state = LLRPReaderState.STATE_INVENTORYING
    pos = 0
    for cut in [*cuts, len(CAPTURE)]:
        link.client.raw_data_received(CAPTURE[pos : pos + cut])
        pos += cut
        if pos >= len(CAPTURE):
            break
    assert Counter((r.epc, r.antenna, r.rssi) for r in got) == CAPTURE_READS
    assert got[0].reader_id == "door" and got[0].reader_time == pytest.approx(CAPTURE_FIRST_SEEN, abs=1e-6)
    assert "malformed_tags" not in counters and "undecodable_messages" not in counters


# -- 2. end to end against the emulator ------------------------------------------------------------


@pytest.mark.slow
def test_branch_greets_a_card_read_by_an_llrp_reader(emulator, llrp_branch):
    emu = emulator()
    branch, out, log = llrp_branch(emu.port)
    assert wait_for(lambda: "Ada Wong" in out.getvalue()), out.getvalue()
    assert log.seen("connected", f"127.0.0.1:{emu.port} Impinj model 700, firmware llrpkit-emu 0.1")
    door = branch.status.devices["door"]
    assert wait_for(lambda: door.counters.get("keepalives", 0) >= 1)
    t0 = time.monotonic()
    branch.stop()
    assert time.monotonic() - t0 < 2.0
    assert branch.status.devices["door"].state == "stopped"
    rows = (
        sqlite3.connect(branch.data_dir / "visits.sqlite3")
        .execute("SELECT kind, epc, customer_no, tier, reader_id, antenna, peak_rssi FROM visits")
        .fetchall()
    )
    [(kind, epc, customer, tier, reader, antenna, rssi)] = rows
    assert (kind, epc, customer, tier, reader, antenna) == ("greeted", ADA, "C1", "gold", "door", 1)
    assert -58 <= rssi <= -42  # the emulator's -50 dBm with 1.5 dB of noise


@pytest.mark.slow
def test_driver_configures_the_reader_for_a_door_and_cleans_up(emulator, llrp_branch):
    """What went over the wire: the connect sequence of llrp.md §2, the door settings, and the polite
    DELETE_ACCESSSPEC / DELETE_ROSPEC when the branch stops."""
    emu = emulator()
    branch, _, _ = llrp_branch(emu.port)
    assert wait_for(lambda: branch.status.devices["door"].counters.get("keepalives", 0) >= 1)
    branch.stop()
    sent = emu.received()
    first = [n for n in sent if n != "KEEPALIVE_ACK"]
    assert first[:8] == [
        "GET_READER_CAPABILITIES",
        "GET_READER_CONFIG",
        "ENABLE_EVENTS_AND_REPORTS",
        "SET_READER_CONFIG",
        "DELETE_ACCESSSPEC",  # reset_on_connect
        "DELETE_ROSPEC",
        "ADD_ROSPEC",
        "ENABLE_ROSPEC",
    ]
    assert first[8:] == ["DELETE_ACCESSSPEC", "DELETE_ROSPEC"]
    assert "KEEPALIVE_ACK" in sent
    msgs = emu.sessions[0].received
    [config] = [m for m in msgs if isinstance(m, messages.SET_READER_CONFIG)]
    assert config.keepalive_spec.periodic_trigger_value == 300  # ms
    [add] = [m for m in msgs if isinstance(m, messages.ADD_ROSPEC)]
    [aispec] = add.ro_spec.spec_parameters
    assert aispec.antenna_ids == [1, 2]
    observation = aispec.ai_spec_stop_trigger.tag_observation_trigger
    assert (observation.trigger_type, observation.number_of_tags) == (0, 1)  # UponNTags, N = 1
    commands = [
        cmd
        for ipspec in aispec.inventory_parameter_specs
        for antenna in ipspec.antenna_configurations
        for cmd in antenna.air_protocol_inventory_command_settings
    ]
    assert {c.c1_g2_singulation_control.session for c in commands} == {1}
    selector = add.ro_spec.ro_report_spec.tag_report_content_selector
    assert selector.enable_antenna_id and selector.enable_peak_rssi and selector.enable_tag_seen_count


# -- 3. link loss ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_reader_that_goes_away_is_reported_and_reconnected_on_return(emulator, llrp_branch):
    emu = emulator()
    branch, _, log = llrp_branch(emu.port)
    assert wait_for(lambda: reads(branch) >= 2)
    killed = time.monotonic()
    emu.kill()
    lost = f"ConnectionError: LLRP connection to 127.0.0.1:{emu.port} lost: the reader closed the connection"
    assert wait_for(lambda: log.seen("disconnected", lost, after=killed), 3.0), log.states
    assert wait_for(lambda: log.seen("disconnected", "ConnectionError: cannot connect to LLRP reader"))
    assert branch.status.devices["door"].state == "disconnected"
    before = reads(branch)
    back = time.monotonic()
    emu.start()  # the same port
    assert wait_for(lambda: log.seen("connected", after=back), 4.0), log.states
    assert wait_for(lambda: reads(branch) > before + 2, 2.0)
    assert branch.status.devices["door"].state == "connected"


# -- 4. keepalive watchdog -------------------------------------------------------------------------


@pytest.mark.slow
def test_reader_that_falls_silent_trips_the_keepalive_watchdog(emulator, llrp_branch):
    emu = emulator()
    branch, _, log = llrp_branch(emu.port)
    assert wait_for(lambda: reads(branch) >= 2)
    muted = time.monotonic()
    emu.emulator.muted = True  # socket open, nothing sent: no RST, no FIN, nothing for TCP to notice
    assert wait_for(lambda: log.seen("disconnected", after=muted), 3.0), log.states
    [(at, _, reason)] = [(t, s, r) for t, s, r in log.states if s == "disconnected" and t >= muted][:1]
    assert reason.startswith("TimeoutError: no LLRP keepalive for "), reason
    assert reason.endswith("s (expected one every 0.3 s)")
    assert 0.85 <= at - muted <= 1.6  # 3 × 0.3 s of silence, checked every 0.1 s at most
    assert branch.status.devices["door"].counters["keepalive_timeouts"] >= 1
    emu.emulator.muted = False
    unmuted = time.monotonic()
    assert wait_for(lambda: log.seen("connected", after=unmuted), 4.0), log.states
    before = reads(branch)
    assert wait_for(lambda: reads(branch) > before + 2, 2.0)


def llrp_message(msg_type: int, body: bytes, msg_id: int = 7) -> bytes:
    header = ((1 << 10) | msg_type).to_bytes(2, "big") + (10 + len(body)).to_bytes(4, "big")
    return header + msg_id.to_bytes(4, "big") + body


def tag_report_data(inner: bytes) -> bytes:
    return (240).to_bytes(2, "big") + (4 + len(inner)).to_bytes(2, "big") + inner


def test_an_undecodable_report_is_dropped_and_counted_and_the_link_stays_up(emulator, llrp_branch):
    """A TagReportData whose AntennaID TV parameter is cut short makes sllurp's decoder raise
    struct.error, which on its own would end sllurp's receive thread."""
    emu = emulator()
    branch, _, log = llrp_branch(emu.port)
    assert wait_for(lambda: reads(branch) >= 2)
    epc96 = b"\x8d" + bytes.fromhex(ADA)
    bad = llrp_message(61, tag_report_data(epc96 + b"\x81\x00"))
    good = llrp_message(
        61, tag_report_data(b"\x8d" + bytes.fromhex("E2000000000000000000BEEF") + b"\x81\x00\x02")
    )
    sent = time.monotonic()
    emu.send_raw(bad)
    door = branch.status.devices["door"]
    assert wait_for(lambda: door.counters.get("undecodable_messages") == 1)
    emu.send_raw(good + good)  # later messages are decoded as usual: 2 reads make an arrival
    assert wait_for(lambda: branch.status.counters.get("unknown") == 1)
    assert not log.seen("disconnected", after=sent), log.states
    assert door.state == "connected"


# -- setup failures, one connection per reader, stop -----------------------------------------------


def run_once(port: int, stop: threading.Event | None = None, **settings_kw):
    got: list = []
    ctx, states, counters = make_ctx(got, stop)
    reader = LLRPReader(LLRPSettings(host="127.0.0.1", port=port, **settings_kw))
    return reader, ctx, states, counters, got


def test_without_the_events_shim_the_readers_error_message_is_the_reason(emulator):
    """llrpkit answers ENABLE_EVENTS_AND_REPORTS with ERROR_MESSAGE (incompatibility 1)."""
    emu = emulator(shims=ALL_SHIMS - {"events"})
    reader, ctx, *_ = run_once(emu.port)
    with pytest.raises(ConnectionError) as exc:
        reader.run(ctx)
    assert str(exc.value) == (
        f"LLRP reader 127.0.0.1:{emu.port} rejected the setup (SENT_SET_CONFIG): "
        "ERROR_MESSAGE: UnsupportedMessage emulator does not handle ENABLE_EVENTS_AND_REPORTS"
    )


@pytest.mark.slow
def test_without_the_delete_all_shim_connect_times_out_naming_the_refusal(emulator):
    """llrpkit refuses DELETE_ROSPEC 0 (incompatibility 2); sllurp then waits for ever."""
    emu = emulator(shims=ALL_SHIMS - {"delete-all"})
    reader, ctx, *_ = run_once(emu.port, connect_timeout=Duration(0.5))
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as exc:
        reader.run(ctx)
    assert time.monotonic() - t0 < 1.5
    assert str(exc.value) == (
        f"LLRP reader 127.0.0.1:{emu.port} did not start inventory within 0.5 s "
        "(stuck in SENT_DELETE_ROSPEC; DELETE_ROSPEC_RESPONSE: ParameterError no ROSpec 0)"
    )


def test_with_reset_off_the_unpatched_delete_is_never_needed(emulator):
    """``reset_on_connect: false`` is the documented way round incompatibility 2 (llrp.md §3)."""
    emu = emulator(shims=ALL_SHIMS - {"delete-all"})
    stop = threading.Event()
    reader, ctx, states, _, got = run_once(emu.port, stop, reset_on_connect=False)
    thread = threading.Thread(target=reader.run, args=(ctx,))
    thread.start()
    try:
        assert wait_for(lambda: len(got) >= 2)
        assert states[0][0] == "connected"
    finally:
        stop.set()
        reader.interrupt()
        thread.join(2)
    assert not thread.is_alive()
    assert [n for n in emu.received() if n != "KEEPALIVE_ACK"][:6] == [
        "GET_READER_CAPABILITIES",
        "GET_READER_CONFIG",
        "ENABLE_EVENTS_AND_REPORTS",
        "SET_READER_CONFIG",
        "ADD_ROSPEC",
        "ENABLE_ROSPEC",
    ]


def test_a_second_client_is_refused_with_the_readers_reason(emulator):
    """LLRP allows one client per reader (p.92, p.166): the status page must not open its own."""
    emu = emulator()
    stop = threading.Event()
    first, ctx1, _, _, got = run_once(emu.port, stop)
    thread = threading.Thread(target=first.run, args=(ctx1,))
    thread.start()
    try:
        assert wait_for(lambda: len(got) >= 1)
        second, ctx2, *_ = run_once(emu.port)
        with pytest.raises(ConnectionError) as exc:
            second.run(ctx2)
        assert str(exc.value) == (
            f"LLRP reader 127.0.0.1:{emu.port} refused the connection: "
            "Failed (a Client initiated connection already exists)"
        )
    finally:
        stop.set()
        first.interrupt()
        thread.join(2)
    assert not thread.is_alive()


def test_a_peer_that_never_speaks_llrp_times_out_naming_what_was_awaited():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        reader, ctx, *_ = run_once(port, connect_timeout=Duration(0.3))
        with pytest.raises(TimeoutError) as exc:
            reader.run(ctx)
    assert str(exc.value) == (
        f"LLRP reader 127.0.0.1:{port} did not start inventory within 0.3 s "
        "(no ConnectionAttemptEvent from the reader)"
    )


def test_nothing_listening_is_a_clear_connection_error(emulator):
    emu = emulator()
    port = emu.port
    emu.kill()
    reader, ctx, *_ = run_once(port)
    with pytest.raises(ConnectionError, match=f"^cannot connect to LLRP reader 127.0.0.1:{port}: "):
        reader.run(ctx)


# -- 5. parsers never raise anything but LLRPProtocolError -----------------------------------------

TAG_KEYS = [
    "EPC",
    "EPC-96",
    "AntennaID",
    "PeakRSSI",
    "ImpinjPeakRSSI",
    "TagSeenCount",
    "LastSeenTimestampUTC",
    "FirstSeenTimestampUTC",
]
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.binary(max_size=140),
    st.text(max_size=140),
    st.lists(st.integers(), max_size=3),
)


@pytest.mark.slow
@settings(max_examples=300)
@given(st.one_of(st.dictionaries(st.sampled_from(TAG_KEYS) | st.text(max_size=5), ANY_VALUE), ANY_VALUE))
def test_normalise_takes_anything_and_raises_only_its_protocol_error(tag):
    try:
        report = normalise_tag(tag)
    except LLRPProtocolError:
        return
    assert isinstance(report, TagReport) and report.epc == report.epc.upper() and report.read_count >= 1


@given(
    st.binary(min_size=1, max_size=62),
    st.integers(0, 65535),
    st.integers(-128, 127),
    st.integers(0, 65535),
    st.integers(0, 2**64 - 1),
)
def test_normalise_keeps_every_field_of_a_valid_entry(epc, antenna, rssi, seen, stamp):
    tag = {
        "EPC": binascii.hexlify(epc),
        "AntennaID": antenna,
        "PeakRSSI": rssi,
        "TagSeenCount": seen,
        "LastSeenTimestampUTC": stamp,
    }
    assert normalise_tag(tag) == TagReport(epc.hex().upper(), antenna, float(rssi), max(1, seen), stamp / 1e6)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_the_protocol_error(data):
    split = split_messages(data)
    assert split.skipped + sum(map(len, split.messages)) + len(split.rest) == len(data)
    with contextlib.suppress(LLRPProtocolError):
        decode_reports(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(MESSAGE_TYPES)), st.binary(max_size=300), st.integers(0, 2**32 - 1))
def test_a_valid_header_on_any_body_raises_only_the_protocol_error(msg_type, body, msg_id):
    """The body goes all the way into sllurp's decoder, which raises many things on bad bytes."""
    message = ((1 << 10) | msg_type).to_bytes(2, "big") + (10 + len(body)).to_bytes(4, "big")
    message += msg_id.to_bytes(4, "big") + body
    try:
        name, fields = decode_message(message)
    except LLRPProtocolError:
        return
    assert isinstance(name, str) and isinstance(fields, dict)


NOT_A_HEADER_START = st.binary(max_size=30).map(lambda b: bytes(x for x in b if not 0x04 <= x <= 0x07))


@pytest.mark.slow
@given(st.lists(NOT_A_HEADER_START, min_size=45, max_size=45))
def test_every_captured_message_is_recovered_from_between_garbage(garbage):
    """Bytes 0x04-0x07 are the only ones that can start an LLRP 1 header (3 reserved bits 0, version
    1), so junk without them can never swallow a real message."""
    messages_ = split_messages(CAPTURE).messages
    data = b"".join(g + m for g, m in zip(garbage, messages_, strict=True))
    split = split_messages(data)
    assert split.messages == messages_
    assert (split.skipped, split.rest) == (sum(map(len, garbage)), b"")


def test_malformed_tag_entries_are_counted_and_dropped_not_raised():
    got: list = []
    ctx, _, counters = make_ctx(got)
    link = Link(LLRPSettings(host="127.0.0.1"), ctx)
    good = {"EPC": b"e20000000000000000000001", "AntennaID": 2, "PeakRSSI": -61}
    link._on_tags(None, [{"EPC": b"not hex!"}, good, {"AntennaID": 1}, "junk"])
    link._on_tags(None, None)
    assert [(r.epc, r.antenna, r.rssi) for r in got] == [(ADA, 2, -61.0)]
    assert counters["malformed_tags"] == 4


# -- plugin and settings ---------------------------------------------------------------------------


def test_plugin_module_does_not_import_sllurp():
    code = "import sys, vipsense.plugins.readers.llrp; print('sllurp' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.stdout.strip() == "False", result.stderr


def test_factory_without_sllurp_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sllurp", None)  # what `import sllurp` meets when it is absent
    monkeypatch.setitem(sys.modules, "sllurp.llrp", None)
    with pytest.raises(ImportError) as exc:
        make_reader(LLRPSettings(host="127.0.0.1"), None)
    assert str(exc.value) == MISSING_EXTRA
    assert "pip install 'vipsense[llrp]'" in MISSING_EXTRA and "GPL-3.0-only" in MISSING_EXTRA


def test_llrp_type_is_registered_with_door_defaults(host):
    assert "llrp" in host.types[next(k for k in host.types if k.value == "reader")]
    s = LLRPSettings(host="10.0.0.5")
    assert (s.port, s.session, s.antennas, s.report_every_n_tags, s.reset_on_connect) == (
        5084,
        1,
        (1,),
        1,
        True,
    )
    assert (s.keepalive_interval, s.connect_timeout, s.tx_power_dbm, s.impinj_search_mode) == (
        5.0,
        5.0,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("session: 4", "expected one of 0, 1, 2, 3, got 4"),
        ("antennas: []", "antennas: name at least one antenna port, e.g. [1]"),
        ("antennas: [1, 0]", "antennas: ports are numbered from 1, got 0"),
        ("impinj_search_mode: 0", "impinj_search_mode: 1-6 (2 = dual target) or leave it out, got 0"),
        ("tx_power_dbm: 55", "tx_power_dbm: 0-40 dBm (the reader picks its nearest level), got 55.0"),
        ("keepalive_interval: 0s", "keepalive_interval: must be more than 0, got Duration(0.0)"),
        ("port: 70000", "port: a TCP port is 1-65535, got 70000"),
    ],
)
def test_bad_settings_are_reported_at_their_key(write_profile, host, setting, message):
    text = BASE_PROFILE.replace(
        "  - {id: door, type: simulated, visitors: []}",
        f"  - {{id: door, type: llrp, host: 127.0.0.1, {setting}}}",
    )
    with pytest.raises(ProfileError) as exc:
        load_profile(write_profile(text), host)
    assert message in str(exc.value), str(exc.value)


def test_sllurp_gets_the_door_settings():
    from vipsense.plugins.readers.llrp.driver import sllurp_config

    s = LLRPSettings(
        host="h", antennas=(1, 3), session=0, tx_power_dbm=27.0, keepalive_interval=Duration(0.3)
    )
    cfg = sllurp_config(s)
    assert (cfg.antennas, cfg.session, cfg.report_every_n_tags, cfg.keepalive_interval) == ([1, 3], 0, 1, 300)
    assert (cfg.reconnect, cfg.reset_on_connect, cfg.tx_power_dbm) == (False, True, {1: 27.0, 3: 27.0})
    assert cfg.tag_content_selector["EnableAntennaID"] and cfg.tag_content_selector["EnablePeakRSSI"]
