"""vipsense reader type ``acme-tcp``: the ACME door reader, which reports tags as lines over TCP.

The reader is the TCP server; this driver connects to it and reads one line per tag report::

    TAG <EPC in hex> <antenna> <RSSI in dBm>\\n        e.g.  TAG E2801160600002084C1A0001 2 -51.5

Antenna and RSSI may be left off: the antenna is then ``antenna_default`` and the RSSI vipsense's
default.  Any other line is skipped, counted and logged; it never stops the reader.  When the
connection drops, ``run`` raises and the vipsense core reconnects with backoff, so there is no
reconnect loop here.

A profile uses it like this::

    readers:
      - id: door
        type: acme-tcp
        host: 10.20.0.15
        port: 4001

Its messages have a catalogue of their own, ``locale/<language>/LC_MESSAGES/vipsense_acme_reader.mo``
beside this file (shipped as package data): a profile error or a setting's help reads in Chinese or
English as vipsense's own do, and a message the catalogue lacks falls back to vipsense's catalogue.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from pathlib import Path

import attrs

import vipsense
from vipsense.api import CORE_CATALOGUE, Catalogue, Duration, PluginContext, Reader, ReaderContext

#: this package's messages: a domain of its own (never vipsense's), falling back to vipsense's
CATALOGUE = Catalogue(
    Path(__file__).resolve().parent / "locale", "vipsense_acme_reader", fallback=CORE_CATALOGUE
)
_ = CATALOGUE.gettext
_l = CATALOGUE.lazy_gettext  #: for text made at import time: translated each time it is shown

MAX_LINE = 256  #: bytes; a longer line is cut and its pieces count as malformed
WARN_EVERY = 1.0  #: seconds; at most one warning about malformed lines per this interval
_EPC = re.compile(r"(?:[0-9A-Fa-f]{4})+")  # an EPC is a whole number of 16-bit words


def _positive(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(
            _("{key} must be greater than 0, got {value:g} s").format(key=attribute.name, value=value)
        )


def _port(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if not 1 <= value <= 65535:
        # vipsense's own words (its LLRP reader says the same): its catalogue translates them, so
        # this package's need not
        raise ValueError(
            _("{key}: a TCP port is 1-65535, got {value}").format(key=attribute.name, value=value)
        )


@attrs.frozen
class AcmeSettings:
    """The profile keys of an ``acme-tcp`` reader (besides ``id`` and ``type``)."""

    port: int = attrs.field(
        validator=_port,
        metadata={"help": _l("TCP port the reader listens on")},
    )
    host: str = attrs.field(
        default="127.0.0.1", metadata={"help": _l("the reader's host name or IP address")}
    )
    antenna_default: int = attrs.field(
        default=1,
        validator=attrs.validators.ge(1),
        metadata={"help": _l("antenna of a line that names none")},
    )
    connect_timeout: Duration = attrs.field(
        default=Duration(2.0),
        validator=_positive,
        metadata={"help": _l("how long to wait for the reader to accept the connection")},
    )


@attrs.frozen
class TagLine:
    epc: str
    antenna: int
    rssi: float | None


def parse_line(line: str, antenna_default: int) -> TagLine | None:
    """One line of the protocol as a tag report, or ``None`` when it is not a valid one."""
    parts = line.split()
    if not 2 <= len(parts) <= 4 or parts[0] != "TAG" or not _EPC.fullmatch(parts[1]):
        return None
    try:
        antenna = int(parts[2]) if len(parts) > 2 else antenna_default
        rssi = float(parts[3]) if len(parts) > 3 else None
    except ValueError:
        return None
    if antenna < 1 or (rssi is not None and not -130.0 <= rssi <= 0.0):
        return None
    return TagLine(parts[1], antenna, rssi)


class AcmeReader(Reader):
    def __init__(self, settings: AcmeSettings, context: PluginContext) -> None:
        self.settings = settings
        self.log = context.log
        self.malformed = 0  #: lines skipped since the branch started
        self._last_warning = float("-inf")
        self._sock: socket.socket | None = None

    def run(self, ctx: ReaderContext) -> None:
        s = self.settings
        sock = socket.create_connection((s.host, s.port), timeout=float(s.connect_timeout))
        sock.settimeout(None)  # block in recv; interrupt() wakes it
        self._sock = sock
        try:
            _keepalive(sock)
            # The core sets ctx.stop before calling interrupt(), so checking it after publishing
            # the socket closes the window where a stop arrives while we are still connecting.
            if ctx.stop.is_set():
                return
            ctx.connected(f"{s.host}:{s.port}")
            with sock.makefile("rb") as stream:
                while raw := stream.readline(MAX_LINE):
                    self._handle(raw.decode("ascii", "replace").strip(), ctx)
        except OSError:
            if ctx.stop.is_set():
                return  # interrupt() shut the socket down under us: a normal stop
            raise
        finally:
            self._sock = None
            sock.close()
        if not ctx.stop.is_set():
            raise ConnectionError("reader closed the connection")

    def _handle(self, line: str, ctx: ReaderContext) -> None:
        if not line:
            return
        tag = parse_line(line, self.settings.antenna_default)
        if tag is None:
            self._skip(line, ctx)
        else:
            ctx.read(tag.epc, antenna=tag.antenna, rssi=tag.rssi)

    def _skip(self, line: str, ctx: ReaderContext) -> None:
        self.malformed += 1
        ctx.count("malformed_lines")
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            self.log.warning("skipped malformed line %r (%d so far)", line[:60], self.malformed)

    def interrupt(self) -> None:
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already disconnected
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv; close() alone does not


def _keepalive(sock: socket.socket) -> None:
    """Notice a reader that vanished without closing (power cut, cable pulled) within ~30 s."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 15), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, name):  # Linux; other systems keep their defaults
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


@vipsense.hookimpl
def vipsense_register_reader_types(register):
    register("acme-tcp", AcmeSettings, AcmeReader, summary=_l("ACME door reader, text lines over TCP"))
