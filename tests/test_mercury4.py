"""The Mercury4 (RQL over TCP) reader: the protocol on its own, then the real driver inside a real
Branch talking to the project's RQL emulator over loopback TCP, through greetings, dropped links,
a reader that goes away and comes back on the same port, and a reader that stops answering."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vipsense
from vipsense.api import Duration, ReaderContext
from vipsense.branch import Branch
from vipsense.clock import Clock
from vipsense.config.errors import ProfileError
from vipsense.config.profile import load_profile
from vipsense.output import Output
from vipsense.pluginhost import load_host
from vipsense.plugins.readers.mercury4 import Mercury4Settings
from vipsense.plugins.readers.mercury4.driver import Mercury4Reader
from vipsense.plugins.readers.mercury4.emulator import RqlEmulator, parse_statement
from vipsense.plugins.readers.mercury4.protocol import (
    ResponseParser,
    RqlError,
    TagRow,
    parse_error,
    parse_row,
    select_statement,
)

from .conftest import BASE_PROFILE, wait_for
from .processes import stop

ADA = "E20000000000000000000001"  # customer C1 "Ada Wong", active (tests/conftest.py SEED)
STRANGER = "E2000000000000000000FFFF"  # no card
READER_LINE = "  - {id: door, type: simulated, visitors: []}"
EMULATOR_MODULE = "vipsense.plugins.readers.mercury4.emulator"


# -- the poll statement ------------------------------------------------------------------------


def test_select_statement_reads_every_antenna_by_default():
    assert select_statement((), 250) == (
        "SELECT id, antenna_id, read_count FROM tag_id WHERE protocol_id='GEN2' SET time_out=250;\n"
    )


def test_select_statement_filters_antennas():
    assert select_statement((1, 2), 100) == (
        "SELECT id, antenna_id, read_count FROM tag_id "
        "WHERE protocol_id='GEN2' AND (antenna_id=1 OR antenna_id=2) SET time_out=100;\n"
    )
    assert "AND (antenna_id=3) SET" in select_statement((3,), 100)


@pytest.mark.parametrize("protocol", ["GEN2' OR antenna_id=1", "", "GEN 2", "GEN2;"])
def test_select_statement_refuses_what_would_change_the_statement(protocol):
    with pytest.raises(ValueError, match="protocol"):
        select_statement((), 250, protocol)


def test_the_emulator_understands_the_driver_statement():
    select = parse_statement(select_statement((1, 3), 120).rstrip().rstrip(";"))
    assert select is not None
    assert (select.columns, select.antennas, select.protocols, select.time_out_ms) == (
        ("id", "antenna_id", "read_count"),
        {1, 3},
        {"GEN2"},
        120,
    )


# -- rows and errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "row"),
    [
        ("0xE20000000000000000000001|1|3", TagRow(ADA, 1, 3)),
        ("0xe2000000000000000000ffff|2|1", TagRow(STRANGER, 2, 1)),  # lower-case hex
        ("0Xe2000000000000000000ffff|4|17\r", TagRow(STRANGER, 4, 17)),  # 0X, CRLF
        (" 0x300833B2DDD906C000000000 | 1 | 2 ", TagRow("300833B2DDD906C000000000", 1, 2)),
    ],
)
def test_parse_row(line, row):
    assert parse_row(line) == row


@pytest.mark.parametrize(
    "line",
    [
        "E20000000000000000000001|1|3",  # no 0x
        "0xE2000000000000000000001|1|3",  # odd number of hex digits
        "0xE2000000000000000000000G|1|3",  # not hex
        "0x|1|3",
        "0xE20000000000000000000001|1",  # a column short
        "0xE20000000000000000000001|1|3|4",  # a column too many
        "0xE20000000000000000000001|0|3",  # antenna 0
        "0xE20000000000000000000001|1|0",  # read zero times is no read
        "0xE20000000000000000000001|1|-3",
        "0xE20000000000000000000001|1|" + "9" * 5000,  # too long for int() since Python 3.11
        "0xE20000000000000000000001|١|3",  # Arabic-Indic digit one: not ASCII
        "",
    ],
)
def test_parse_row_rejects(line):
    with pytest.raises(RqlError):
        parse_row(line)


def test_rows_follow_the_column_order_asked_for():
    columns = ("antenna_id", "read_count", "id")
    assert parse_row("2|5|0xE20000000000000000000001", columns) == TagRow(ADA, 2, 5)
    assert parse_row("0xE20000000000000000000001|1", ("id", "antenna_id")) == TagRow(ADA, 1, 1)


def test_error_lines():
    err = parse_error("Error 0100: Cursor does not exist")
    assert (str(err), err.code) == ("Cursor does not exist", "0100")
    err = parse_error("Error: reader busy")
    assert (str(err), err.code) == ("reader busy", None)
    assert parse_error("0xE20000000000000000000001|1|3") is None
    assert parse_error("") is None


def test_an_answer_ends_at_the_empty_line_however_the_bytes_arrive():
    stream = b"0xE20000000000000000000001|1|3\r\n0xE2000000000000000000FFFF|2|1\r\n\r\n\n"
    parser = ResponseParser()
    got = []
    for i in range(len(stream)):
        got.append(parser.feed(stream[i : i + 1]))
        if i < stream.index(b"\r\n\r\n") + 3:
            assert got[-1] == [], f"answered early at byte {i}"
    answers = [r for batch in got for r in batch]
    assert [r.rows for r in answers] == [[TagRow(ADA, 1, 3), TagRow(STRANGER, 2, 1)], []]


def test_an_answer_counts_error_lines_and_malformed_lines():
    parser = ResponseParser()
    [answer] = parser.feed(b"Error 0101: Unknown protocol\nnot a row\n0xE20000000000000000000001|1|2\n\n")
    assert answer.errors == ["Error 0101: Unknown protocol"]
    assert (answer.malformed, answer.sample) == (1, "not a row")
    assert answer.rows == [TagRow(ADA, 1, 2)]


def test_an_endless_line_is_dropped_once_and_the_stream_goes_on():
    parser = ResponseParser()
    assert parser.feed(b"x" * 10_000) == []
    assert parser.feed(b"y" * 10_000) == []
    [answer] = parser.feed(b"zzz\n0xE20000000000000000000001|1|2\n\n")
    assert (answer.malformed, answer.rows) == (1, [TagRow(ADA, 1, 2)])


# -- properties --------------------------------------------------------------------------------

garbage_lines = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=60)
tag_rows = st.builds(
    TagRow,
    epc=st.binary(min_size=2, max_size=62).map(lambda b: b.hex().upper()),
    antenna=st.integers(1, 255),
    read_count=st.integers(1, 2**31 - 1),
)


def render(row: TagRow, lower: bool, crlf: bool) -> str:
    epc = row.epc.lower() if lower else row.epc
    return f"0x{epc}|{row.antenna}|{row.read_count}" + ("\r" if crlf else "")


def parses(line: str) -> bool:
    try:
        parse_row(line)
    except RqlError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_row_raises_only_rql_error(text):
    with contextlib.suppress(RqlError):
        parse_row(text)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_the_response_parser_never_raises_on_arbitrary_bytes(chunks):
    parser = ResponseParser()
    for chunk in chunks:
        for answer in parser.feed(chunk):
            assert all(isinstance(r, TagRow) for r in answer.rows)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.tuples(tag_rows, st.booleans(), st.booleans()), garbage_lines),
        max_size=30,
    ),
    st.data(),
)
def test_valid_rows_among_garbage_are_all_recovered(items, data):
    lines, expected, malformed = [], [], 0
    for item in items:
        if isinstance(item, tuple):
            lines.append(render(*item))
            expected.append(item[0])
        else:
            lines.append(item)
            if parses(item):  # garbage that happens to be a well-formed row is a row
                expected.append(parse_row(item))
            elif item.strip() and parse_error(item) is None:
                malformed += 1
    stream = ("\n".join(lines) + "\n\n").encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    parser = ResponseParser()
    answers = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        answers += parser.feed(stream[start:end])
    assert [row for a in answers for row in a.rows] == expected
    assert sum(a.malformed for a in answers) == malformed


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_the_emulator_statement_parser_raises_only_rql_error(text):
    try:
        parse_statement(text)
    except RqlError as exc:
        assert exc.code in ("0100", "0101")


# -- the emulator on its own -------------------------------------------------------------------


def ask(port: int, statements: bytes, answers: int = 1, timeout: float = 3.0) -> str:
    """Send statements to an RQL server and read ``answers`` answers (each ends at an empty line)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(statements)
        parser, got = ResponseParser(), b""
        done = 0
        while done < answers:
            data = conn.recv(4096)
            assert data, "the emulator closed the connection"
            got += data
            done += len(parser.feed(data))
        return got.decode()


@pytest.fixture
def field():
    return Field()


class Field:
    """What is in front of the emulated reader's antennas, changed by the test while it runs."""

    def __init__(self):
        self._lock = threading.Lock()
        self.tags: list[tuple[str, int, int]] = []

    def __call__(self):
        with self._lock:
            return list(self.tags)

    def put(self, epc: str, antenna: int = 1, reads: int = 3) -> None:
        with self._lock:
            self.tags.append((epc, antenna, reads))


@pytest.fixture
def emulator(field):
    em = RqlEmulator(field).start()
    yield em
    em.stop()


def test_emulator_answers_the_columns_asked_for_on_the_antennas_asked_for(emulator, field):
    field.put(ADA, antenna=1, reads=3)
    field.put(STRANGER, antenna=2, reads=1)
    text = ask(emulator.port, b"select antenna_id, id from tag_id where antenna_id=2 set time_out=1;\n")
    assert text == f"2|0x{STRANGER}\n\n"
    text = ask(emulator.port, select_statement((), 1).encode())
    assert text == f"0x{ADA}|1|3\n0x{STRANGER}|2|1\n\n"


@pytest.mark.slow
def test_emulator_waits_time_out_before_answering(emulator):
    t0 = time.monotonic()
    assert ask(emulator.port, select_statement((), 300).encode()) == "\n"
    assert time.monotonic() - t0 >= 0.3


@pytest.mark.slow
@pytest.mark.parametrize(
    ("statement", "error"),
    [
        ("SELECT id FROM tag_data", "Error 0100: Unknown table"),
        ("SELECT colour FROM tag_id", "Error 0100: Unknown field"),
        ("SELECT id FROM tag_id WHERE protocol_id='NFC'", "Error 0101: Unknown protocol"),
        ("SELECT id FROM tag_id SET time_out=99999999", "Error 0101: time_out value out of range"),
        ("SELECT id FROM tag_id SET repeat=5", "Error 0100: Unknown setting"),
        ("SELECT id FROM tag_id WHERE (antenna_id=1", "Error 0100: Syntax Error"),
        ("DROP TABLE tag_id", "Error 0100: Syntax Error"),
    ],
)
def test_emulator_answers_what_it_cannot_run_with_an_error_line(emulator, statement, error):
    text = ask(emulator.port, f"{statement};\n".encode())
    assert text.startswith(error) and text.endswith("\n\n") and text.count("\n") == 2


def test_emulator_command_line(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", EMULATOR_MODULE, "--port", "0", "--tag", f"{ADA}:2:5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        banner = proc.stdout.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)", banner).group(1))
        assert ask(port, select_statement((), 10).encode()) == f"0x{ADA}|2|5\n\n"
    finally:
        code = stop(proc)
    assert code == 0


# -- settings ----------------------------------------------------------------------------------


def test_settings_defaults_and_checks():
    s = Mercury4Settings(host="10.0.0.7")
    assert (s.port, s.antennas, s.poll_timeout, s.connect_timeout, s.silence_timeout, s.protocol) == (
        8080,
        (),
        0.25,
        2.0,
        5.0,
        "GEN2",
    )
    with pytest.raises(ValueError, match="longer than poll_timeout"):
        Mercury4Settings(host="r", poll_timeout=Duration(1.0), silence_timeout=Duration(0.5))


@pytest.mark.parametrize(
    ("settings_yaml", "message"),
    [
        ("host: 127.0.0.1, port: 70000", "a TCP port is 1-65535, got 70000"),
        ("host: 127.0.0.1, antennas: [1, 1]", "antennas must be distinct port numbers 1-16"),
        ('host: 127.0.0.1, protocol: "GEN2\' OR 1=1"', "expected a tag protocol name"),
        ("port: 8080", "missing required key 'host'"),
    ],
)
def test_bad_settings_are_reported_against_the_profile(write_profile, tmp_path, settings_yaml, message):
    text = BASE_PROFILE.replace(READER_LINE, f"  - {{id: door, type: mercury4, {settings_yaml}}}")
    with pytest.raises(ProfileError, match=re.escape(message)):
        load_profile(write_profile(text), load_host(), data_dir=tmp_path / "data")


# -- the driver on its own ---------------------------------------------------------------------


def make_context(stop: threading.Event, reads: list, states: list, counters: dict) -> ReaderContext:
    return ReaderContext(
        "door",
        Clock(),
        reads.append,
        lambda state, reason: states.append((state.value, reason)),
        stop,
        logging.getLogger("test.mercury4"),
        counters,
    )


def test_interrupt_unblocks_a_reader_waiting_for_an_answer(emulator, field):
    emulator.set_silent(True)  # the poll is never answered: run() sits in recv
    settings = Mercury4Settings(host="127.0.0.1", port=emulator.port, silence_timeout=Duration(30))
    reader = Mercury4Reader(settings)
    stop, outcome = threading.Event(), []

    def run():
        try:
            reader.run(make_context(stop, [], [], {}))
            outcome.append("returned")
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert wait_for(lambda: emulator.statements >= 1)
        t0 = time.monotonic()
        stop.set()
        reader.interrupt()
        thread.join(2.0)
        assert not thread.is_alive()
        assert time.monotonic() - t0 < 0.5
        assert outcome == ["returned"]
    finally:
        stop.set()
        reader.interrupt()
        thread.join(2.0)


def test_a_stop_before_run_returns_at_once(emulator):
    reader = Mercury4Reader(Mercury4Settings(host="127.0.0.1", port=emulator.port))
    stop = threading.Event()
    stop.set()
    reader.interrupt()
    states = []
    reader.run(make_context(stop, [], states, {}))
    assert states == [] and emulator.statements == 0


# -- inside a branch ---------------------------------------------------------------------------


class Rig:
    def __init__(self, branch, out, states, port):
        self.branch = branch
        self.out = out
        self.states = states  # (state, reason) of the reader, in order, from the status hook
        self.port = port

    @property
    def door(self):
        return self.branch.status.devices["door"]

    def state_after(self, index: int, state: str, reason_start: str = ""):
        """The first (state, reason) at or after ``index`` that matches, or None."""
        for i in range(index, len(self.states)):
            s, r = self.states[i]
            if s == state and r.startswith(reason_start):
                return i
        return None


@pytest.fixture
def start_branch(write_profile, tmp_path, emulator):
    made = []

    def start(**reader_settings) -> Rig:
        states = []

        class Recorder:
            @vipsense.hookimpl
            def vipsense_reader_status_changed(self, reader_id, status):
                states.append((status.state.value, status.reason))

        host = load_host()
        host.add(Recorder(), "test-recorder")
        extra = {"poll_timeout": "50ms", **reader_settings}
        keys = "".join(f", {k}: {v}" for k, v in extra.items())
        line = f"  - {{id: door, type: mercury4, host: 127.0.0.1, port: {emulator.port}{keys}}}"
        path = write_profile(BASE_PROFILE.replace(READER_LINE, line))
        profile = load_profile(path, host, tmp_path / "data")
        out = io.StringIO()
        branch = Branch(profile, host, output=Output(out, live=False))
        branch.start()
        made.append(branch)
        return Rig(branch, out, states, emulator.port)

    yield start
    for branch in made:
        if not branch.stopping:
            branch.stop()


def test_a_card_in_the_field_is_greeted_and_recorded(start_branch, field):
    rig = start_branch()
    field.put(ADA, antenna=1, reads=3)
    assert wait_for(lambda: "Ada Wong" in rig.out.getvalue())
    assert (rig.door.state, rig.door.reason) == ("connected", f"127.0.0.1:{rig.port}")
    t0 = time.monotonic()
    rig.branch.stop()
    assert time.monotonic() - t0 < 2.0
    assert rig.door.state == "stopped"
    rows = (
        sqlite3.connect(rig.branch.data_dir / "visits.sqlite3")
        .execute("SELECT kind, epc, customer_no, reader_id, antenna, read_count, peak_rssi FROM visits")
        .fetchall()
    )
    # two polls of three reads each make the arrival (min_reads: 2); RQL reports no RSSI
    assert rows == [("greeted", ADA, "C1", "door", 1, 6, None)]


def test_only_the_configured_antennas_are_read(start_branch, field):
    rig = start_branch(antennas="[2]")
    field.put(ADA, antenna=1)  # listed first: unfiltered, her reads would come first
    field.put(STRANGER, antenna=2)
    assert wait_for(lambda: rig.branch.status.counters["unknown"] == 1)
    assert rig.branch.status.counters["arrivals"] == 1
    assert "Ada Wong" not in rig.out.getvalue()


def test_error_answers_are_counted_logged_sparingly_and_polling_goes_on(start_branch, caplog):
    caplog.set_level(logging.WARNING, logger="vipsense.reader.door")
    rig = start_branch(protocol="NFC")  # the emulated reader answers: Error 0101: Unknown protocol
    t0 = time.monotonic()
    assert wait_for(lambda: rig.door.counters.get("rql_errors", 0) >= 10)
    elapsed = time.monotonic() - t0
    assert rig.door.state == "connected"
    logged = [r for r in caplog.records if "Unknown protocol" in r.getMessage()]
    assert 1 <= len(logged) <= 1 + int(elapsed)


def test_malformed_rows_are_dropped_and_the_good_ones_still_read(start_branch, field):
    rig = start_branch()
    field.put("NOTHEX", antenna=1)
    field.put(ADA, antenna=1)
    assert wait_for(lambda: "Ada Wong" in rig.out.getvalue())
    assert rig.door.counters["malformed_rows"] >= 2
    assert rig.door.state == "connected"


@pytest.mark.slow
def test_a_dropped_link_is_reported_and_reconnected(start_branch, field, emulator):
    rig = start_branch()
    field.put(ADA)
    assert wait_for(lambda: rig.door.state == "connected")
    emulator.drop_clients()
    assert wait_for(lambda: rig.state_after(0, "disconnected") is not None)
    lost = rig.state_after(0, "disconnected")
    reason = rig.states[lost][1]
    # EOF gives "closed the connection"; a reset while a poll was in flight "Connection reset by peer"
    assert re.fullmatch(
        rf"ConnectionError: (127\.0\.0\.1:{rig.port} closed the connection"
        rf"|lost the link to 127\.0\.0\.1:{rig.port}: .+)",
        reason,
    )
    assert wait_for(lambda: rig.state_after(lost, "connected") is not None, timeout=3.0)
    reads = rig.branch.status.counters["reads"]
    assert wait_for(lambda: rig.branch.status.counters["reads"] > reads + 2)


@pytest.mark.slow
def test_a_reader_that_goes_away_is_used_again_on_the_same_port(start_branch, field, emulator):
    rig = start_branch()
    field.put(ADA)
    assert wait_for(lambda: rig.door.state == "connected")
    port = emulator.port
    emulator.stop()
    refused = f"ConnectionError: 127.0.0.1:{port} refused the connection"
    assert wait_for(lambda: rig.state_after(0, "disconnected", refused) is not None)
    gone = len(rig.states)
    emulator.start()
    assert emulator.port == port
    assert wait_for(lambda: rig.state_after(gone, "connected") is not None, timeout=3.0)
    reads = rig.branch.status.counters["reads"]
    assert wait_for(lambda: rig.branch.status.counters["reads"] > reads + 2)


@pytest.mark.slow
def test_a_reader_that_stops_answering_is_disconnected_after_silence_timeout(start_branch, field, emulator):
    rig = start_branch(silence_timeout="500ms")
    field.put(ADA)
    assert wait_for(lambda: rig.door.state == "connected")
    emulator.set_silent(True)
    t0 = time.monotonic()
    silent = f"TimeoutError: no answer from 127.0.0.1:{rig.port} for 0.5 s"
    assert wait_for(lambda: rig.state_after(0, "disconnected", silent) is not None)
    assert 0.45 <= time.monotonic() - t0 < 2.0
    mark = len(rig.states)
    emulator.set_silent(False)
    assert wait_for(lambda: rig.state_after(mark, "connected") is not None, timeout=3.0)
