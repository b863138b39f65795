"""The embedded identity store: customers and cards in one SQLite file, seeded from YAML or CSV.

Cards and customers are separate tables: a card maps an opaque EPC to a customer number, so revoking a
card never touches the customer's data.  Seed files are upserted each time the store opens, so editing
a seed file and restarting the branch is enough.  A CSV seed is read as cards when its header has an
``epc`` column, else as customers.

:func:`import_csv` is the bulk path for a bank's full customer list (a million rows): it streams the
file, validates each row cheaply, and upserts in batches, so one bad row is reported, never fatal.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import attrs

import vipsense
from vipsense.api import Card, Customer, IdentityStore, PluginContext
from vipsense.avatar import avatar_svg
from vipsense.config.structure import INVALID, Structurer
from vipsense.config.yamlload import load_profile_yaml
from vipsense.model import CardStatus, Photo

SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    customer_no    TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    company        TEXT,
    id_number      TEXT,
    mobile         TEXT,
    usual_business TEXT,
    tier           TEXT,
    client_manager TEXT,
    photo          BLOB,
    photo_mime     TEXT
);
CREATE TABLE IF NOT EXISTS cards (
    epc              TEXT PRIMARY KEY,
    customer_no      TEXT NOT NULL,
    tid              TEXT,
    status           TEXT NOT NULL DEFAULT 'active',
    tier             TEXT,
    valid_from       TEXT,
    valid_until      TEXT,
    allowed_branches TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS cards_customer ON cards (customer_no);
CREATE INDEX IF NOT EXISTS customers_id_number ON customers (id_number);
"""

#: Extra per-connection PRAGMAs for lookups.  Empty on purpose: measured with 1,000,000 customers
#: (bench/stores.py), a 64 MiB cache plus 256 MiB mmap gave lookup p99 0.028-0.037 ms against
#: 0.037-0.040 ms without, both far under the 0.5 ms target, while the bench's peak RSS rose from
#: ~43 to ~363 MB (mapped pages count as RSS).
READ_PRAGMAS: tuple[str, ...] = ()

# Constant SQL text, so sqlite3's statement cache prepares each lookup once per connection.
FIND_CARD_SQL = (
    "SELECT epc, customer_no, tid, status, tier, valid_from, valid_until, allowed_branches"
    " FROM cards WHERE epc = ?"
)
FIND_CUSTOMER_SQL = (
    "SELECT customer_no, name, company, id_number, mobile, usual_business, tier,"
    " client_manager, photo, photo_mime FROM customers WHERE customer_no = ?"
)

CUSTOMER_COLUMNS = (
    "customer_no",
    "name",
    "company",
    "id_number",
    "mobile",
    "usual_business",
    "tier",
    "client_manager",
)
CARD_COLUMNS = (
    "epc",
    "customer_no",
    "tid",
    "status",
    "tier",
    "valid_from",
    "valid_until",
    "allowed_branches",
)


@attrs.frozen
class SqliteSettings:
    path: str | None = None  #: the database file; default ``identity.sqlite3`` in the data directory
    seed: tuple[str, ...] = ()  #: YAML or CSV files upserted when the store opens


@attrs.frozen
class SeedCustomer:
    customer_no: str
    name: str
    company: str | None = None
    id_number: str | None = None
    mobile: str | None = None
    usual_business: str | None = None
    tier: str | None = None
    client_manager: str | None = None
    photo: str | None = None  #: an image file; default: a generated portrait


@attrs.frozen
class SeedCard:
    epc: str
    customer_no: str
    tid: str | None = None
    status: CardStatus = CardStatus.ACTIVE
    tier: str | None = None
    valid_from: dt.date | None = None
    valid_until: dt.date | None = None
    allowed_branches: tuple[str, ...] = ()


@attrs.frozen
class _SeedFile:
    customers: tuple[SeedCustomer, ...] = ()
    cards: tuple[SeedCard, ...] = ()


class SeedError(Exception):
    pass


class SqliteStore(IdentityStore):
    def __init__(self, settings: SqliteSettings, ctx: PluginContext) -> None:
        self.path = ctx.resolve(settings.path) if settings.path else ctx.data_dir / "identity.sqlite3"
        self.seeds = [ctx.resolve(p) for p in settings.seed]
        self.db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        for pragma in READ_PRAGMAS:
            db.execute(pragma)
        db.executescript(SCHEMA)
        for seed in self.seeds:
            load_seed(db, seed)
        self.db = db

    def find_card(self, epc: str) -> Card | None:
        row = self.db.execute(FIND_CARD_SQL, (epc.upper(),)).fetchone()
        if row is None:
            return None
        return Card(
            epc=row[0],
            customer_no=row[1],
            tid=row[2],
            status=CardStatus(row[3]),
            tier=row[4],
            valid_from=dt.date.fromisoformat(row[5]) if row[5] else None,
            valid_until=dt.date.fromisoformat(row[6]) if row[6] else None,
            allowed_branches=tuple(b for b in row[7].split(",") if b),
        )

    def find_customer(self, customer_no: str) -> Customer | None:
        row = self.db.execute(FIND_CUSTOMER_SQL, (customer_no,)).fetchone()
        if row is None:
            return None
        return Customer(
            customer_no=row[0],
            name=row[1],
            company=row[2],
            id_number=row[3],
            mobile=row[4],
            usual_business=row[5],
            tier=row[6],
            client_manager=row[7],
            photo=Photo(row[8], row[9]) if row[8] is not None else None,
        )

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


# -- seeding ----------------------------------------------------------------------------------------


def load_seed(db: sqlite3.Connection, path: Path) -> tuple[int, int]:
    """Upsert one seed file; returns ``(customers, cards)``.  Raises :class:`SeedError` with every
    problem, each as ``file:line: key.path: message``.  A CSV seed goes through :func:`import_csv`
    (good rows are loaded, and the rejected ones are reported in the error)."""
    if path.suffix.lower() == ".csv":
        result = import_csv(db, path)
        if result.rejected:
            shown = "; ".join(f"{path}:{r.line}: {r.reason}" for r in result.reasons)
            raise SeedError(f"{result.rejected} rows rejected, the others were loaded: {shown}")
        return (result.upserted, 0) if result.kind == "customers" else (0, result.upserted)
    customers, cards = _read_yaml(path)
    with db:
        db.executemany(
            f"INSERT OR REPLACE INTO customers ({', '.join(CUSTOMER_COLUMNS)}, photo, photo_mime)"
            f" VALUES ({', '.join('?' * (len(CUSTOMER_COLUMNS) + 2))})",
            customers,
        )
        db.executemany(
            f"INSERT OR REPLACE INTO cards ({', '.join(CARD_COLUMNS)})"
            f" VALUES ({', '.join('?' * len(CARD_COLUMNS))})",
            cards,
        )
    return len(customers), len(cards)


def _customer_row(c: SeedCustomer, base: Path, portrait: bool = True) -> tuple[Any, ...]:
    """A row to insert; without a photo file a YAML seed gets a generated portrait, a CSV none."""
    photo: Photo | None = None
    if c.photo:
        file = base / c.photo
        mime = {".png": "image/png", ".svg": "image/svg+xml"}.get(file.suffix.lower(), "image/jpeg")
        photo = Photo(file.read_bytes(), mime)
    elif portrait:
        photo = avatar_svg(c.name)
    values = tuple(getattr(c, col) for col in CUSTOMER_COLUMNS)
    return (*values, photo.data if photo else None, photo.mime if photo else None)


def _card_row(c: SeedCard) -> tuple[Any, ...]:
    return (
        c.epc.upper(),
        c.customer_no,
        c.tid,
        c.status.value,
        c.tier,
        c.valid_from.isoformat() if c.valid_from else None,
        c.valid_until.isoformat() if c.valid_until else None,
        ",".join(c.allowed_branches),
    )


def _read_yaml(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    loaded = load_profile_yaml(path)
    st = Structurer(loaded)
    st.errors.extend(loaded.errors)
    seed = st.structure_attrs(loaded.data, _SeedFile, ()) if loaded.data is not None else INVALID
    if st.errors or seed is INVALID:
        raise SeedError("; ".join(str(e) for e in st.errors))
    try:
        customers = [_customer_row(c, path.parent) for c in seed.customers]
    except OSError as exc:
        raise SeedError(f"{path}: cannot read a photo: {exc}") from exc
    return customers, [_card_row(c) for c in seed.cards]


# -- bulk CSV import --------------------------------------------------------------------------------

CARD_STATUSES = frozenset(s.value for s in CardStatus)
_HEX = re.compile(r"[0-9A-Fa-f]+")
MAX_REASONS = 20  #: rejected rows whose line and reason are kept; the rest are only counted
IMPORT_BATCH = 10_000  #: rows per executemany and per transaction


class CsvImportError(SeedError):
    """The whole file is refused (an unknown or missing column); nothing was written."""


@attrs.frozen
class RejectedRow:
    line: int  #: physical line where the row starts (the header is line 1)
    reason: str


@attrs.define
class ImportResult:
    kind: str = "customers"  #: ``customers`` or ``cards``, from the header
    rows: int = 0  #: data rows read (blank lines are not rows)
    upserted: int = 0
    rejected: int = 0
    reasons: list[RejectedRow] = attrs.Factory(list)  #: the first :data:`MAX_REASONS` rejections


class _RowError(Exception):
    pass


def _columns(header: list[str], path: Path) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """``(table, key, columns)`` for a header, or :class:`CsvImportError` naming every problem."""
    names = [h.strip() for h in header]
    table, known, required = (
        ("cards", CARD_COLUMNS, ("epc", "customer_no"))
        if "epc" in names
        else ("customers", CUSTOMER_COLUMNS, ("customer_no", "name"))
    )
    problems = [f"unknown column {n!r}" for n in names if n not in known]
    problems += [f"column {n!r} appears twice" for n in sorted({n for n in names if names.count(n) > 1})]
    problems += [f"missing column {n!r}" for n in required if n not in names]
    if problems:
        raise CsvImportError(f"{path}:1: {'; '.join(problems)} (known {table} columns: {', '.join(known)})")
    return table, required, tuple(names)


def _upsert_sql(table: str, columns: tuple[str, ...]) -> str:
    """Update only the columns the file has, so a customer's photo (or any column the file leaves out)
    survives a re-import."""
    key = CARD_COLUMNS[0] if table == "cards" else CUSTOMER_COLUMNS[0]
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        f" ON CONFLICT ({key}) DO UPDATE SET {updates}"
    )


def _card_converter(columns: tuple[str, ...]) -> Callable[[list[str]], tuple[Any, ...]]:
    """Per-column checks for a cards file, mirroring :class:`SeedCard` and :func:`_card_row`."""
    idx = {c: i for i, c in enumerate(columns)}

    def convert(row: list[str]) -> tuple[Any, ...]:
        out: list[Any] = [v or None for v in row]
        epc = row[idx["epc"]]
        if not _HEX.fullmatch(epc):
            raise _RowError("epc: must be hexadecimal")
        out[idx["epc"]] = epc.upper()
        if "status" in idx:
            status = row[idx["status"]] or CardStatus.ACTIVE.value
            if status not in CARD_STATUSES:
                raise _RowError(f"status: must be one of {', '.join(sorted(CARD_STATUSES))}")
            out[idx["status"]] = status
        for name in ("valid_from", "valid_until"):
            if name in idx and row[idx[name]]:
                try:
                    out[idx[name]] = dt.date.fromisoformat(row[idx[name]]).isoformat()
                except ValueError:
                    raise _RowError(f"{name}: not a date (YYYY-MM-DD)") from None
        if "allowed_branches" in idx:
            out[idx["allowed_branches"]] = ",".join(b for b in row[idx["allowed_branches"]].split(";") if b)
        return tuple(out)

    return convert


def _customer_converter(columns: tuple[str, ...]) -> Callable[[list[str]], tuple[Any, ...]]:
    """Customers are text throughout (tier, ID number and mobile too: leading zeros matter)."""
    return lambda row: tuple(v or None for v in row)


def _records(fh: TextIO) -> Iterator[tuple[int, list[str]]]:
    """Non-blank CSV records with the physical line each starts on."""
    reader = csv.reader(fh)
    line = reader.line_num
    for record in reader:
        if record:
            yield line + 1, record
        line = reader.line_num


def _open_csv(path: Path) -> TextIO:
    # surrogateescape: a row with bytes that are not UTF-8 is rejected on its own (see _check_row)
    # instead of a UnicodeDecodeError aborting the whole import halfway.
    return path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")


def count_csv_rows(path: Path) -> int:
    """Data rows in a CSV file (records after the header, blank lines skipped): one quick pass."""
    with _open_csv(path) as fh:
        return max(0, sum(1 for _ in _records(fh)) - 1)


def import_csv(
    db: sqlite3.Connection,
    path: Path,
    progress: Callable[[int, int], None] | None = None,
    *,
    batch: int = IMPORT_BATCH,
) -> ImportResult:
    """Upsert a customers (or, with an ``epc`` column, cards) CSV file into ``db``, streaming.

    A bad row is rejected with its line and reason and the import goes on; an unknown, duplicated or
    missing required column refuses the whole file with :class:`CsvImportError` before anything is
    written.  ``progress(rows_done, rows_total)`` is called after each batch and once at the end.

    Durability trade-off: while importing, this connection runs with ``synchronous=OFF`` (restored
    afterwards), so batches are not fsynced.  A crash of the process loses nothing committed; a power
    cut or OS crash mid-import can lose the latest batches or, at worst, damage the file.  The import is
    an idempotent upsert, so the remedy is to run it again (from a backup copy if the file is damaged).
    Normal operation never changes ``synchronous``.
    """
    path = Path(path)
    total = count_csv_rows(path) if progress else 0
    result = ImportResult()
    with _open_csv(path) as fh:
        records = _records(fh)
        first = next(records, None)
        if first is None:
            raise CsvImportError(f"{path}: empty file: a header row is needed")
        table, required, columns = _columns(first[1], path)
        result.kind = table
        sql = _upsert_sql(table, columns)
        convert = (_card_converter if table == "cards" else _customer_converter)(columns)
        required_idx = [(columns.index(c), c) for c in required]
        width = len(columns)

        def reject(line: int, reason: str) -> None:
            result.rejected += 1
            if len(result.reasons) < MAX_REASONS:
                result.reasons.append(RejectedRow(line, reason))

        saved_sync = db.execute("PRAGMA synchronous").fetchone()[0]
        db.execute("PRAGMA synchronous=OFF")
        try:
            pending: list[tuple[Any, ...]] = []
            for line, row in records:
                result.rows += 1
                if len(row) != width:
                    reject(line, f"{len(row)} fields, the header has {width}")
                    continue
                blank = next((c for i, c in required_idx if not row[i].strip()), None)
                if blank is not None:
                    reject(line, f"{blank}: required")
                    continue
                try:
                    "".join(row).encode("utf-8")
                except UnicodeEncodeError:
                    reject(line, "not valid UTF-8")
                    continue
                try:
                    pending.append(convert(row))
                except _RowError as exc:
                    reject(line, str(exc))
                    continue
                if len(pending) >= batch:
                    _write(db, sql, pending, result)
                    if progress:
                        progress(result.rows, max(total, result.rows))
            _write(db, sql, pending, result)
        finally:
            db.execute(f"PRAGMA synchronous={int(saved_sync)}")
    if progress:
        progress(result.rows, result.rows)
    return result


def _write(db: sqlite3.Connection, sql: str, pending: list[tuple[Any, ...]], result: ImportResult) -> None:
    """One transaction per batch: a failure loses at most this batch, and memory stays flat."""
    if pending:
        with db:
            db.executemany(sql, pending)
        result.upserted += len(pending)
        pending.clear()


class ProgressBar:
    """``progress`` callback for :func:`import_csv`: a redrawn bar on a terminal, else one line per
    10 %, so a log file gets ten lines, not a million carriage returns."""

    WIDTH = 30

    def __init__(self, stream: TextIO | None = None, unit: str = "rows", min_interval: float = 0.1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.unit = unit
        self.min_interval = min_interval
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._last_draw = -1.0
        self._last_tenth = 0
        self._open = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.tty:
            if done < total and now - self._last_draw < self.min_interval:
                return
            self._last_draw = now
            self.stream.write("\r" + self.render(done, total, now))
            self._open = done < total
            if not self._open:
                self.stream.write("\n")
        else:
            tenth = 10 if total <= 0 or done >= total else done * 10 // total
            if tenth <= self._last_tenth:
                return
            self._last_tenth = tenth
            self.stream.write(self.render(done, total, now) + "\n")
        self.stream.flush()

    def render(self, done: int, total: int, now: float | None = None) -> str:
        elapsed = (time.monotonic() if now is None else now) - self.started
        filled = self.WIDTH if total <= 0 else min(self.WIDTH, done * self.WIDTH // total)
        rate = done / elapsed if elapsed > 0 else 0.0
        bar = "#" * filled + " " * (self.WIDTH - filled)
        return f"[{bar}] {done:,}/{total:,} {self.unit}  {rate:,.0f} {self.unit}/s"

    def close(self) -> None:
        """End an unfinished bar's line (an import that raised)."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


@vipsense.hookimpl
def vipsense_register_store_types(register):
    register(
        "sqlite",
        SqliteSettings,
        SqliteStore,
        summary="customers and cards in a local SQLite file, seeded from YAML or CSV",
    )
