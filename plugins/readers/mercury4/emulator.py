"""A Mercury4 stand-in that speaks RQL over real TCP on loopback, for tests, demos and integrators
without the (long discontinued) reader.  It answers the statements the driver sends the way
``protocol.py`` describes the real reader: rows joined by ``|`` in the column order asked for, an
empty line after every answer, ``Error <code>: <text>`` for what it cannot run, and it waits
``time_out`` ms before answering a SELECT, like the reader's read cycle.

What it understands: ``SELECT <columns> FROM tag_id [WHERE …] [SET time_out=<ms>];`` and ``RESET;``.
In WHERE it knows ``protocol_id='…'``, ``antenna_id=<n>`` and ``id=0x…`` joined by AND/OR and
parentheses; terms on the same column form a set (the Rifidi wiki: ``protocol_id='EPC1' AND
protocol_id='GEN2'`` means either), different columns must all match.

    python -m vipsense.plugins.readers.mercury4.emulator --port 8080 --tag E20000000000000000000001

listens on 127.0.0.1 only and keeps the given cards in the field until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import ipaddress
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from vipsense.shutdown import Shutdown

from .protocol import ERROR_INVALID_ARGUMENTS, ERROR_INVALID_DATA, TAG_ID_COLUMNS, RqlError, error_line

log = logging.getLogger(__name__)

Tags = Callable[[], Iterable[tuple[str, int, int]]]  #: (EPC hex, antenna, reads this cycle)

KNOWN_PROTOCOLS = frozenset({"GEN2", "EPC0", "EPC1", "ISO18000-6B", "IPX64", "IPX256"})
MAX_TIME_OUT_MS = 65535
MAX_STATEMENT = 65536  #: bytes without a ``;`` before the emulator gives up on the statement
FREQUENCY_KHZ = 920625  # a channel of the Chinese 920-925 MHz band

_SELECT = re.compile(
    r"^SELECT\s+(?P<cols>.+?)\s+FROM\s+(?P<table>\S+)"
    r"(?:\s+WHERE\s+(?P<where>.+?))?(?:\s+SET\s+(?P<set>.+))?$",
    re.IGNORECASE | re.DOTALL,
)
_TOKEN = re.compile(
    r"\s*(?:(?P<open>\()|(?P<close>\))|(?P<op>AND|OR)(?![\w])"
    r"|(?P<col>[A-Za-z_]\w*)\s*=\s*(?P<val>'[^']*'|[0-9A-Za-z]+))",
    re.IGNORECASE,
)
_SETTING = re.compile(r"^\s*(?P<name>[A-Za-z_]\w*)\s*=\s*(?P<value>\S+)\s*$")


@dataclass(frozen=True)
class Select:
    columns: tuple[str, ...]
    antennas: frozenset[int] = frozenset()  #: empty: every antenna
    protocols: frozenset[str] = frozenset()  #: empty: every protocol
    ids: frozenset[str] = frozenset()  #: EPCs in upper case; empty: every tag
    time_out_ms: int = 0


def _syntax(detail: str = "") -> RqlError:
    return RqlError("Syntax Error" + (f" near {detail[:30]!r}" if detail else ""), ERROR_INVALID_ARGUMENTS)


def _where(text: str) -> tuple[frozenset[int], frozenset[str], frozenset[str]]:
    antennas: set[int] = set()
    protocols: set[str] = set()
    ids: set[str] = set()
    depth, pos, expect_term = 0, 0, True
    while pos < len(text):
        if not text[pos:].strip():
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            raise _syntax(text[pos:].strip())
        pos = m.end()
        if m.group("open"):
            if not expect_term:
                raise _syntax("(")
            depth += 1
        elif m.group("close"):
            depth -= 1
            if depth < 0 or expect_term:
                raise _syntax(")")
        elif m.group("op"):
            if expect_term:
                raise _syntax(m.group("op"))
            expect_term = True
        else:
            if not expect_term:
                raise _syntax(m.group(0).strip())
            expect_term = False
            col, val = m.group("col").lower(), m.group("val")
            if col == "protocol_id":
                if not val.startswith("'"):
                    raise _syntax(val)
                name = val.strip("'").upper()
                if name not in KNOWN_PROTOCOLS:
                    raise RqlError("Unknown protocol", ERROR_INVALID_DATA)
                protocols.add(name)
            elif col == "antenna_id":
                if not val.isdigit() or len(val) > 5:
                    raise RqlError("Invalid argument", ERROR_INVALID_ARGUMENTS)
                antennas.add(int(val))
            elif col == "id":
                if not re.fullmatch(r"0[xX][0-9A-Fa-f]+", val):
                    raise RqlError("Invalid argument", ERROR_INVALID_ARGUMENTS)
                ids.add(val[2:].upper())
            else:
                raise RqlError("Unknown field", ERROR_INVALID_ARGUMENTS)
    if depth != 0 or expect_term:
        raise _syntax(text.strip()[-10:])
    return frozenset(antennas), frozenset(protocols), frozenset(ids)


def _time_out(text: str) -> int:
    time_out = 0
    for part in text.split(","):
        m = _SETTING.match(part)
        if m is None:
            raise _syntax(part.strip())
        if m.group("name").lower() != "time_out":
            raise RqlError("Unknown setting", ERROR_INVALID_ARGUMENTS)
        value = m.group("value")
        if not value.isascii() or not value.isdigit() or len(value) > 9 or int(value) > MAX_TIME_OUT_MS:
            raise RqlError("time_out value out of range", ERROR_INVALID_DATA)
        time_out = int(value)
    return time_out


def parse_statement(text: str) -> Select | None:
    """One statement without its ``;``: a :class:`Select`, or None for ``RESET``.  Raises
    :class:`RqlError` (with the reader's code) for anything else, and nothing else."""
    text = text.strip()
    if text.upper() == "RESET":
        return None
    m = _SELECT.match(text)
    if m is None:
        raise _syntax(text)
    columns = tuple(c.strip().lower() for c in m.group("cols").split(","))
    if any(c not in TAG_ID_COLUMNS for c in columns):
        raise RqlError("Unknown field", ERROR_INVALID_ARGUMENTS)
    if m.group("table").lower() != "tag_id":
        raise RqlError("Unknown table", ERROR_INVALID_ARGUMENTS)
    select = Select(columns)
    if m.group("where"):
        antennas, protocols, ids = _where(m.group("where"))
        select = replace(select, antennas=antennas, protocols=protocols, ids=ids)
    if m.group("set"):
        select = replace(select, time_out_ms=_time_out(m.group("set")))
    return select


def format_rows(select: Select, tags: Iterable[tuple[str, int, int]], cycle_start: float) -> list[str]:
    """The rows the reader would send for what was in the field during one read cycle."""
    if select.protocols and "GEN2" not in select.protocols:
        return []  # every emulated card is a Gen2 tag
    now = time.time()
    stamp = dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    rows = []
    for epc, antenna, count in tags:
        epc = epc.upper()
        if count <= 0 or (select.antennas and antenna not in select.antennas):
            continue
        if select.ids and epc not in select.ids:
            continue
        values = {
            "id": f"0x{epc}",
            "protocol_id": "GEN2",
            "antenna_id": str(antenna),
            "read_count": str(count),
            "frequency": str(FREQUENCY_KHZ),
            "dspmicros": str(int((now - cycle_start) * 1e6)),
            "timestamp": stamp,
        }
        rows.append("|".join(values[c] for c in select.columns))
    return rows


class RqlEmulator:
    """A threaded RQL server on 127.0.0.1.  ``tags()`` says what is in the field at each read cycle.

    ``start()`` binds (an ephemeral port the first time unless ``port`` is given, the same port on a
    restart), ``stop()`` closes everything, ``drop_clients()`` cuts the open connections but keeps
    listening, ``set_silent(True)`` keeps accepting statements but never answers.
    """

    def __init__(self, tags: Tags, port: int = 0, host: str = "127.0.0.1") -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the emulator listens on loopback only, not {host}")
        self.tags = tags
        self.host = host
        self.port = port
        self.statements = 0  #: statements received, for tests
        self._silent = False
        self._lock = threading.Lock()
        self._clients: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> RqlEmulator:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart on the same port
        listener.bind((self.host, self.port))
        listener.listen(8)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopping = threading.Event()
        self._spawn(self._accept_loop, f"rql-emulator:{self.port}")
        return self

    def stop(self) -> None:
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self.drop_clients()
        with self._lock:
            threads, self._threads = self._threads, []
        for t in threads:
            t.join(2.0)

    def __enter__(self) -> RqlEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drop_clients(self) -> None:
        """Close every open connection, as a pulled cable or a reader reboot would."""
        with self._lock:
            clients, self._clients = self._clients, set()
        for conn in clients:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def set_silent(self, silent: bool) -> None:
        self._silent = silent

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    # -- serving --------------------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        stopping, listener = self._stopping, self._listener
        while not stopping.is_set() and listener is not None:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by stop()
            conn.settimeout(None)
            with self._lock:
                self._clients.add(conn)
            self._spawn(self._serve, f"rql-client:{self.port}", conn, stopping)

    def _serve(self, conn: socket.socket, stopping: threading.Event) -> None:
        buffer = b""
        try:
            while not stopping.is_set():
                data = conn.recv(4096)
                if not data:
                    return
                buffer += data
                *statements, buffer = buffer.split(b";")
                if len(buffer) > MAX_STATEMENT:
                    buffer, statements = b"", [*statements, b"\x00"]  # answered as a syntax error
                for raw in statements:
                    text = raw.decode("utf-8", errors="replace").strip()
                    if not text:
                        continue
                    with self._lock:
                        self.statements += 1
                    if self._silent:
                        continue
                    conn.sendall(self._answer(text, stopping).encode())
        except OSError:
            return  # dropped, or the client went away
        finally:
            with self._lock:
                self._clients.discard(conn)
            conn.close()

    def _answer(self, text: str, stopping: threading.Event) -> str:
        try:
            select = parse_statement(text)
        except RqlError as exc:
            return error_line(exc.code or ERROR_INVALID_ARGUMENTS, str(exc)) + "\n\n"
        if select is None:  # RESET
            return "\n"
        start = time.time()
        if select.time_out_ms:
            stopping.wait(select.time_out_ms / 1000)
        rows = format_rows(select, list(self.tags()), start)
        return "".join(f"{row}\n" for row in rows) + "\n"


def _tag(text: str) -> tuple[str, int, int]:
    parts = text.split(":")
    if not 1 <= len(parts) <= 3 or not re.fullmatch(r"(?:[0-9A-Fa-f]{2}){2,62}", parts[0]):
        raise argparse.ArgumentTypeError(f"expected EPC[:ANTENNA[:READS]] with EPC in hex, got {text!r}")
    try:
        antenna = int(parts[1]) if len(parts) > 1 else 1
        reads = int(parts[2]) if len(parts) > 2 else 4
    except ValueError:
        raise argparse.ArgumentTypeError(f"antenna and reads must be numbers in {text!r}") from None
    return parts[0].upper(), antenna, reads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vipsense.plugins.readers.mercury4.emulator",
        description="Emulate a ThingMagic Mercury4 reader (RQL over TCP) on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=8080, help="TCP port (0: any free port); default 8080")
    parser.add_argument(
        "--tag",
        type=_tag,
        action="append",
        default=[],
        metavar="EPC[:ANTENNA[:READS]]",
        help="a card kept in the field (repeatable); antenna 1 and 4 reads per cycle unless given",
    )
    args = parser.parse_args(argv)
    tags = tuple(args.tag)
    emulator = RqlEmulator(lambda: tags, port=args.port)
    stop = Shutdown.on_signals()
    try:
        emulator.start()
    except OSError as exc:
        print(f"cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"Mercury4 RQL emulator on 127.0.0.1:{emulator.port}, {len(tags)} card(s) in the field", flush=True)
    try:
        stop.wait_until_requested()
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
