"""The store itself: lookups on one connection, the card registry's writes, and the replica switch.

Lookups and registry writes share the store's connection (WAL, ``synchronous=NORMAL``: a sighting or a
status change is one cheap commit, durable against a crash of the process).  Listing everything and
replacing everything use connections of their own, so a sync running on another thread never shows
half-written data to the lookups: they keep reading the old snapshot until the switch commits.

Every customer written, whichever way (a seed, ``customers import``, ``upsert_customers``, the
``replace_all`` of a sync from LDAP), goes through :func:`.schema.customer_row` or the importer's
:func:`.schema.storage_converter`, which seal the ID and mobile numbers with the cipher the core gave
this store (``ctx.cipher``); the store never reads a key itself.  The database file, its WAL and its
shared-memory file are readable by their owner only (``privacy-security.md`` §4 item 7).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import attrs

from vipsense.api import (
    Card,
    CardEvent,
    CardExists,
    CardRegistry,
    CardStatus,
    Customer,
    PluginContext,
    UnknownCard,
)
from vipsense.crypto import FieldCipher, key_id_of, normalise_id_number
from vipsense.i18n import _
from vipsense.model import CardAction
from vipsense.storage import migrations

from .schema import (
    CARD_HISTORY_SQL,
    CARD_ROW,
    CARD_SELECT,
    CUSTOMER_SELECT,
    CUSTOMER_STORED,
    FIND_CARD_SQL,
    FIND_CUSTOMER_SQL,
    INSERT_HISTORY_SQL,
    card_from_row,
    card_row,
    customer_from_row,
    customer_row,
    event_from_row,
    event_row,
    find_by_id_index_sql,
    key_ids_in_use,
    migrate,
    reseal,
    upsert_sql,
)
from .seed import load_seed

log = logging.getLogger(__name__)

CHUNK = 10_000  #: rows per executemany (and per transaction, for upserts)
BUSY_TIMEOUT = 10.0  #: seconds a write waits for another process's transaction (a running branch)

#: The history entry of a card whose status an import changes.
_STATUS_ACTION = {
    CardStatus.LOST: CardAction.LOST,
    CardStatus.REVOKED: CardAction.REVOKED,
    CardStatus.ACTIVE: CardAction.RESTORED,
}

_INSERT_CARD_SQL = f"INSERT INTO cards ({', '.join(CARD_ROW)}) VALUES ({', '.join('?' * len(CARD_ROW))})"
_INSERT_CUSTOMER_SQL = (
    f"INSERT INTO customers ({', '.join(CUSTOMER_STORED)}) VALUES ({', '.join('?' * len(CUSTOMER_STORED))})"
)
#: An import or registry write never touches a card's sightings; the store records those itself.
_UPSERT_CARD_SQL = upsert_sql("cards", CARD_ROW[:-2])
_UPSERT_CUSTOMER_SQL = upsert_sql("customers", CUSTOMER_STORED)


@attrs.frozen
class SqliteSettings:
    path: str | None = None  #: the database file; default ``identity.sqlite3`` in the data directory
    seed: tuple[str, ...] = ()  #: YAML or CSV files upserted when the store opens


class Connection(sqlite3.Connection):
    """The store's connection, carrying the store's cipher, so :func:`.importer.import_csv` given the
    connection seals what it writes the same way."""

    cipher: FieldCipher | None = None


def owner_only(path: Path) -> None:
    """Create the database file readable and writable by its owner only (SQLite gives its WAL and
    shared-memory files the same mode), and make an existing one so, with a warning."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            file.chmod(mode & 0o700)
            log.warning("%s was readable by other users (mode %o); it is now owner-only", file, mode)


def _key_id(value: Any) -> str:
    return key_id_of(value) or "clear"


def _chunks(items: Iterable[Any], size: int = CHUNK) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class SqliteStore(CardRegistry):
    def __init__(self, settings: SqliteSettings, ctx: PluginContext) -> None:
        self.path = ctx.resolve(settings.path) if settings.path else ctx.data_dir / "identity.sqlite3"
        self.seeds = [ctx.resolve(p) for p in settings.seed]
        self.cipher: FieldCipher = ctx.cipher
        self.db: Connection | None = None

    def _connect(self) -> Connection:
        db = sqlite3.connect(
            str(self.path), check_same_thread=False, timeout=BUSY_TIMEOUT, factory=Connection
        )
        db.cipher = self.cipher
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # What is deleted or rewritten (a number sealed in place, a replica's old rows) is overwritten
        # with zeros, not left in free space for someone reading the file's bytes.
        db.execute("PRAGMA secure_delete=ON")
        return db

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A connection of its own in one IMMEDIATE transaction: committed when the block ends, rolled
        back if it raises, closed either way.  Lookups on the store's connection see the old data until
        it commits."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def _reading(self) -> sqlite3.Connection:
        """A read-only connection of its own: a consistent snapshot that never blocks the store's."""
        return sqlite3.connect(
            f"{Path(self.path).resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT
        )

    def open(self) -> None:
        from . import READ_PRAGMAS  # the package's, so bench/stores.py --tuned-reads can set it

        owner_only(self.path)
        db = self._connect()
        try:
            for pragma in READ_PRAGMAS:
                db.execute(pragma)
            version = migrations.version(db)
            migrate(db, self.cipher, time.time())
            if 0 < version < 3:  # numbers were in clear: leave none in an old WAL frame either
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            for seed in self.seeds:
                load_seed(db, seed, self.cipher)
        except BaseException:
            db.close()
            raise
        owner_only(self.path)  # the WAL and shared-memory files now exist: check them too
        self.db = db

    @property
    def _open_db(self) -> Connection:
        """The connection, for the calls that need one: only between :meth:`open` and :meth:`close`."""
        if self.db is None:
            raise RuntimeError(f"the SQLite store {self.path} is not open")
        return self.db

    # -- lookups ----------------------------------------------------------------------------------

    def find_card(self, epc: str) -> Card | None:
        row = self._open_db.execute(FIND_CARD_SQL, (epc.upper(),)).fetchone()
        return card_from_row(row) if row else None

    def find_customer(self, customer_no: str) -> Customer | None:
        row = self._open_db.execute(FIND_CUSTOMER_SQL, (customer_no,)).fetchone()
        return customer_from_row(row, self.cipher) if row else None

    def find_customers_by_id_number(self, id_number: str) -> list[Customer]:
        """Exact: the blind index finds the candidates (one indexed lookup per key held), and each one's
        decrypted number must equal the one asked for, both normalised."""
        indexes = self.cipher.indexes(id_number)
        rows = self._open_db.execute(find_by_id_index_sql(len(indexes)), indexes).fetchall()
        wanted = normalise_id_number(id_number)
        found = [customer_from_row(r, self.cipher) for r in rows]
        return [c for c in found if c.id_number is not None and normalise_id_number(c.id_number) == wanted]

    def card_seen(self, epc: str, branch_id: str, at: float) -> None:
        self.cards_seen([(epc, branch_id, at)])

    def cards_seen(self, sightings: list[tuple[str, str, float]]) -> None:
        """One transaction per pipeline batch: the same thread answers the door's look-ups."""
        with self._open_db:
            self._open_db.executemany(
                "UPDATE cards SET last_seen_branch = ?, last_seen_at = ? WHERE epc = ?",
                [(branch_id, at, epc.upper()) for epc, branch_id, at in sightings],
            )

    def iter_cards(self) -> Iterator[Card]:
        return (card_from_row(r) for r in self._stream(f"SELECT {CARD_SELECT} FROM cards"))

    def iter_customers(self) -> Iterator[Customer]:
        cipher = self.cipher
        rows = self._stream(f"SELECT {CUSTOMER_SELECT} FROM customers")
        return (customer_from_row(r, cipher) for r in rows)

    def _stream(self, sql: str) -> Iterator[tuple[Any, ...]]:
        """Rows of one query on a read-only connection of its own: one consistent snapshot, fetched a
        chunk at a time, and the store's connection stays free for lookups meanwhile."""
        db = self._reading()
        try:
            cursor = db.execute(sql)
            while rows := cursor.fetchmany(1000):
                yield from rows
        finally:
            db.close()

    # -- the card registry ------------------------------------------------------------------------

    def list_cards(self, customer_no: str | None = None, status: CardStatus | None = None) -> list[Card]:
        where, args = [], []
        if customer_no is not None:
            where.append("customer_no = ?")
            args.append(customer_no)
        if status is not None:
            where.append("status = ?")
            args.append(CardStatus(status).value)
        sql = f"SELECT {CARD_SELECT} FROM cards"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [card_from_row(r) for r in self._open_db.execute(sql + " ORDER BY epc", args)]

    def card_history(self, epc: str) -> list[CardEvent]:
        epc = epc.upper()
        rows = self._open_db.execute(CARD_HISTORY_SQL, (epc,)).fetchall()
        if not rows and self.find_card(epc) is None:
            raise UnknownCard(_("no card has EPC {epc}").format(epc=epc))
        return [event_from_row(r) for r in rows]

    def issue_card(self, card: Card, event: CardEvent) -> None:
        with self._open_db:
            self._insert_card(card)
            self._open_db.execute(INSERT_HISTORY_SQL, event_row(event, card.epc.upper()))

    def _insert_card(self, card: Card) -> None:
        try:
            self._open_db.execute(_INSERT_CARD_SQL, card_row(card))
        except sqlite3.IntegrityError:
            if self.find_card(card.epc) is None:
                raise  # some other constraint
            raise CardExists(_("card {epc} is already issued").format(epc=card.epc.upper())) from None

    def set_card_status(self, epc: str, status: CardStatus, event: CardEvent) -> Card:
        epc = epc.upper()
        with self._open_db:
            self._set_status(epc, status, event)
        card = self.find_card(epc)
        assert card is not None, "_set_status raised UnknownCard for a card that is not there"
        return card

    def _set_status(self, epc: str, status: CardStatus, event: CardEvent) -> None:
        cursor = self._open_db.execute(
            "UPDATE cards SET status = ? WHERE epc = ?", (CardStatus(status).value, epc)
        )
        if cursor.rowcount == 0:
            raise UnknownCard(_("no card has EPC {epc}").format(epc=epc))
        self._open_db.execute(INSERT_HISTORY_SQL, event_row(event, epc))

    def reissue_card(self, old_epc: str, new_card: Card, revoke: CardEvent, issue: CardEvent) -> None:
        old_epc = old_epc.upper()
        with self._open_db:  # one transaction: a failure of either half rolls back both
            self._set_status(old_epc, CardStatus.REVOKED, revoke)
            self._insert_card(new_card)
            self._open_db.execute(INSERT_HISTORY_SQL, event_row(issue, new_card.epc.upper()))

    def upsert_cards(self, cards: Iterable[Card], event: CardEvent) -> int:
        """A new card's entry is ``issued``; a status change's is ``lost``, ``revoked`` or ``restored``
        (what happened to that card); time, actor, reason and detail come from ``event``.  One
        transaction per call, like :meth:`upsert_customers`."""
        done = 0
        with self._open_db:
            for chunk in _chunks(cards):
                rows = [card_row(c)[:-2] for c in chunk]
                history = [entry for row in rows if (entry := self._import_entry(row, event))]
                self._open_db.executemany(_UPSERT_CARD_SQL, rows)
                self._open_db.executemany(INSERT_HISTORY_SQL, history)
                done += len(rows)
        return done

    def _import_entry(self, row: tuple[Any, ...], event: CardEvent) -> tuple[Any, ...] | None:
        """The history row an import of ``row`` makes, or None when the card's status stays."""
        epc, status = row[0], CardStatus(row[3])
        before = self._open_db.execute("SELECT status FROM cards WHERE epc = ?", (epc,)).fetchone()
        if before is None:
            detail = event.detail if status is CardStatus.ACTIVE else f"imported as {status.value}"
            return event_row(attrs.evolve(event, action=CardAction.ISSUED, detail=detail), epc)
        if before[0] != status.value:
            return event_row(attrs.evolve(event, action=_STATUS_ACTION[status]), epc)
        return None

    def upsert_customers(self, customers: Iterable[Customer]) -> int:
        """One transaction per call (all or nothing), streamed: callers choose the batch size.  Bigger
        batches are faster (fewer WAL checkpoints): 50,000 rows took 16 s a million against 24 s at
        10,000 (one core, SQLite 3.40)."""
        done = 0

        def rows() -> Iterator[tuple[Any, ...]]:
            nonlocal done
            for c in customers:
                done += 1
                yield customer_row(c, self.cipher)

        with self._open_db:
            self._open_db.executemany(_UPSERT_CUSTOMER_SQL, rows())
        return done

    def replace_all(self, cards: Iterable[Card], customers: Iterable[Customer]) -> tuple[int, int]:
        """One transaction on a connection of its own: lookups see the old data until it commits, then
        the new.  Histories are not touched.  A sighting this replica recorded itself is kept when it is
        newer than the one the new data brings."""
        n_cards = n_customers = 0
        with self._writing() as db:
            db.execute("DROP TABLE IF EXISTS temp.seen")
            db.execute(
                "CREATE TEMP TABLE seen AS SELECT epc, last_seen_branch, last_seen_at FROM cards"
                " WHERE last_seen_at IS NOT NULL"
            )
            db.execute("DELETE FROM cards")
            db.execute("DELETE FROM customers")
            for chunk in _chunks(customers):
                db.executemany(_INSERT_CUSTOMER_SQL, [customer_row(c, self.cipher) for c in chunk])
                n_customers += len(chunk)
            for chunk in _chunks(cards):
                db.executemany(_INSERT_CARD_SQL, [card_row(c) for c in chunk])
                n_cards += len(chunk)
            db.execute(
                "UPDATE cards SET"
                " last_seen_branch = (SELECT s.last_seen_branch FROM seen s WHERE s.epc = cards.epc),"
                " last_seen_at = (SELECT s.last_seen_at FROM seen s WHERE s.epc = cards.epc)"
                " WHERE epc IN (SELECT s.epc FROM seen s"
                "               WHERE s.last_seen_at > COALESCE(cards.last_seen_at, -1))"
            )
            db.execute("DROP TABLE temp.seen")
        return n_cards, n_customers

    # -- keys -------------------------------------------------------------------------------------------

    def data_key_ids(self) -> dict[str, int]:
        """How many stored values are under each data key id (``clear``: not encrypted).  A full scan.
        Before :meth:`open` it reads the file as it is (read-only, no migration, no seed): what a key
        rotation starts from, since opening re-seals every customer a seed file lists."""
        if self.db is not None:
            return key_ids_in_use(self.db)
        if not self.path.exists():
            return {}
        db = self._reading()
        try:
            found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'customers'")
            return key_ids_in_use(db) if found.fetchone() else {}
        finally:
            db.close()

    def reencrypt(self) -> dict[str, int]:
        """Every ID and mobile number sealed again under the cipher's current key, and every blind index
        made under it, in one transaction on a connection of its own (lookups see the old values until
        it commits).  Returns how many values were under each other key id before (``clear`` counted
        too); afterwards ``data_keys`` lists the current key only."""
        current = self.cipher.current.key_id
        moved: dict[str, int] = {}
        with self._writing() as db:
            last = ""
            while rows := db.execute(
                "SELECT customer_no, id_number, mobile FROM customers WHERE customer_no > ?"
                " ORDER BY customer_no LIMIT ?",
                (last, CHUNK),
            ).fetchall():
                stale = []
                for no, id_number, mobile in rows:
                    old = [
                        k for k in (_key_id(v) for v in (id_number, mobile) if v is not None) if k != current
                    ]
                    for kid in old:
                        moved[kid] = moved.get(kid, 0) + 1
                    if old:
                        stale.append((*reseal(self.cipher, no, id_number, mobile), no))
                db.executemany(
                    "UPDATE customers SET id_number = ?, mobile = ?, id_index = ? WHERE customer_no = ?",
                    stale,
                )
                last = rows[-1][0]
            db.execute("DELETE FROM data_keys WHERE key_id != ?", (current,))
            db.execute(
                "INSERT OR IGNORE INTO data_keys (key_id, since) VALUES (?, ?)", (current, time.time())
            )
        return moved

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
