"""RQL, the SQL-like text protocol of ThingMagic Mercury4 fixed readers on TCP 8080: the poll
statement, and a parser for the reader's answers.

Facts from ``thingmagic-serial.md`` §10 and the sources it cites:

* A statement ends with ``;``; the client sends it followed by a newline (MercuryAPI 1.23
  ``RqlReader.java`` ``sendQuery``).  Keywords are case-insensitive (the Rifidi wiki types them in
  lower case), table and column names are lower case.
* ``SELECT id, antenna_id, read_count FROM tag_id WHERE protocol_id='GEN2' AND (antenna_id=1 OR
  antenna_id=2) SET time_out=250;`` reads for ``time_out`` ms and then answers (``RqlReader.java``
  ``readPlanWhereClause`` and ``makeSelect``; Rifidi wiki "Getting tags").
* An answer is zero or more lines, one row each, columns joined by ``|`` in the order the SELECT
  named them, ``id`` as ``0x`` + hex (``0x300833B2DDD906C000000000|1``); an empty line ends it
  (Rifidi Edge ``ThingmagicMessageParsingStrategy.java``; ``RqlReader.java`` ``receiveBatch``).
* An error is one line starting with ``Error``, then the empty line (``receiveBatch``).  Its form is
  ``Error <code>: <text>``, e.g. ``Error 0100: Cursor does not exist`` (OMRON V740 operation manual
  §2.2.5, an RQL reader built on the ThingMagic engine): 0100 = invalid arguments (unknown table,
  field or setting, syntax error), 0101 = invalid data (unknown protocol, ``time_out`` out of range).

MercuryAPI treats the last two bytes of a Mercury5/Astra ``id`` as the tag's CRC; Mercury4 rows as
Rifidi shows them carry the EPC alone, so the whole ``id`` is taken as the EPC here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

#: Columns the driver asks for, in this order.
POLL_COLUMNS = ("id", "antenna_id", "read_count")
#: Columns of the ``tag_id`` table (§10).
TAG_ID_COLUMNS = ("id", "protocol_id", "antenna_id", "read_count", "frequency", "dspmicros", "timestamp")

ERROR_INVALID_ARGUMENTS = "0100"
ERROR_INVALID_DATA = "0101"

#: Longest line kept; a reader row is far shorter, so anything longer is garbage.
MAX_LINE = 4096
_MAX_EPC_HEX = 124  # 496-bit EPC, the Gen2 maximum
_PROTOCOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")
_HEX = re.compile(r"^[0-9A-Fa-f]+$")
_ERROR = re.compile(r"^Error\s*(\d+)?\s*:?\s*(.*)$", re.DOTALL)


class RqlError(Exception):
    """A malformed row or statement, or an error the reader reported.  ``code`` is the reader's
    error code when it gave one (``"0100"``)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TagRow:
    epc: str  #: upper-case hex, without ``0x``
    antenna: int
    read_count: int


@dataclass
class Response:
    """One answer: everything up to the empty line that ends it."""

    rows: list[TagRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  #: ``Error …`` lines, as the reader sent them
    malformed: int = 0  #: lines that were neither a row nor an error
    sample: str = ""  #: the first malformed line (shortened), for the log


def valid_protocol(name: str) -> bool:
    """A protocol name safe to put between quotes in a statement (``GEN2``, ``ISO18000-6B``)."""
    return bool(_PROTOCOL.match(name))


def select_statement(
    antennas: Sequence[int] = (),
    time_out_ms: int = 250,
    protocol: str = "GEN2",
    columns: Sequence[str] = POLL_COLUMNS,
) -> str:
    """The poll statement, with its ``;`` and newline.  No antennas: the reader uses all of them."""
    if not valid_protocol(protocol):
        raise ValueError(f"not a tag protocol name: {protocol!r}")
    if any(isinstance(a, bool) or not isinstance(a, int) or a < 1 for a in antennas):
        raise ValueError(f"antennas must be positive port numbers, got {list(antennas)}")
    if time_out_ms < 0:
        raise ValueError(f"time_out must not be negative, got {time_out_ms}")
    where = f"protocol_id='{protocol}'"
    if antennas:
        where += " AND (" + " OR ".join(f"antenna_id={a}" for a in antennas) + ")"
    return f"SELECT {', '.join(columns)} FROM tag_id WHERE {where} SET time_out={int(time_out_ms)};\n"


def error_line(code: str, message: str) -> str:
    """An error as the reader words it (without the empty line that follows)."""
    return f"Error {code}: {message}"


def parse_error(line: str) -> RqlError | None:
    """The error an ``Error …`` line reports, or None for any other line.  Like MercuryAPI, any line
    that starts with ``Error`` is one."""
    m = _ERROR.match(line.strip())
    if m is None:
        return None
    return RqlError(m.group(2) or line.strip(), m.group(1))


def _number(text: str, what: str, low: int, high: int) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise RqlError(f"{what} is not a number: {text[:40]!r}")
    value = int(text)
    if not low <= value <= high:
        raise RqlError(f"{what} out of range: {value}")
    return value


def parse_epc(text: str) -> str:
    """``0x30083…`` -> ``30083…`` in upper case."""
    text = text.strip()
    if text[:2] not in ("0x", "0X"):
        raise RqlError(f"tag id without 0x: {text[:40]!r}")
    digits = text[2:]
    if not digits.isascii() or not _HEX.match(digits):
        raise RqlError(f"tag id is not hex: {text[:40]!r}")
    if len(digits) % 2 or not 4 <= len(digits) <= _MAX_EPC_HEX:
        raise RqlError(f"tag id has an impossible length ({len(digits)} hex digits)")
    return digits.upper()


def parse_row(line: str, columns: Sequence[str] = POLL_COLUMNS) -> TagRow:
    """One row of a ``tag_id`` answer whose SELECT named ``columns``.  Raises :class:`RqlError`
    and nothing else.  A row is a tag the reader read, so ``read_count`` is at least 1 (and 1 when the
    SELECT did not ask for it)."""
    fields = line.strip().split("|")
    if len(fields) != len(columns):
        raise RqlError(f"expected {len(columns)} columns, got {len(fields)}")
    values = dict(zip(columns, fields, strict=True))
    if "id" not in values or "antenna_id" not in values:
        raise RqlError("a row needs the id and antenna_id columns")
    return TagRow(
        epc=parse_epc(values["id"]),
        antenna=_number(values["antenna_id"], "antenna_id", 1, 255),
        read_count=_number(values["read_count"], "read_count", 1, 2**31 - 1) if "read_count" in values else 1,
    )


class ResponseParser:
    """Turns the byte stream from the reader into :class:`Response` objects, however the bytes are
    split across ``recv`` calls.  Never raises: bad lines are counted in the response they belong to.
    """

    def __init__(self, columns: Sequence[str] = POLL_COLUMNS) -> None:
        self.columns = tuple(columns)
        self._buffer = b""
        self._overlong = False  # inside a line already too long to keep
        self._current = Response()

    def feed(self, data: bytes) -> list[Response]:
        """The answers completed by ``data``."""
        done: list[Response] = []
        *lines, rest = (self._buffer + data).split(b"\n")
        for raw in lines:
            if self._overlong:  # the end of a line already dropped and counted
                self._overlong = False
                continue
            if len(raw) > MAX_LINE:
                self._bad("(line too long)")
                continue
            response = self._line(raw.decode("utf-8", errors="replace"))
            if response is not None:
                done.append(response)
        if len(rest) > MAX_LINE:  # no newline in sight: drop what there is, count the line once
            if not self._overlong:
                self._bad("(line too long)")
            self._overlong, rest = True, b""
        self._buffer = rest
        return done

    def _line(self, line: str) -> Response | None:
        if not line.strip():
            response, self._current = self._current, Response()
            return response
        error = parse_error(line)
        if error is not None:
            self._current.errors.append(line.strip())
            return None
        try:
            self._current.rows.append(parse_row(line, self.columns))
        except RqlError:
            self._bad(line)
        return None

    def _bad(self, line: str) -> None:
        self._current.malformed += 1
        if not self._current.sample:
            self._current.sample = line.strip()[:80]
