"""What the SQLite identity file holds, how a file of an older version is brought up to date, and how
rows become model objects.

Cards and customers are separate tables: a card maps an opaque EPC to a customer number, so revoking a
card never touches the customer's data.  ``card_history`` keeps every lifecycle change of a card; it is
never rewritten, so a card's history survives a replica refresh and a re-seed.

The ID and mobile numbers are stored encrypted (``privacy-security.md`` §1: C2 data encrypted at rest),
by the :class:`vipsense.crypto.FieldCipher` the core hands the store: each value a BLOB sealed for its
column and customer number.  ``id_index`` holds the ID number's blind index (an HMAC), indexed, so a
search by ID number is one exact, indexed lookup.  ``data_keys`` lists the key ids the file's values may
be under, so a store opened without one of those keys says so at once.  :func:`migrate` encrypts the
clear values of an older file in place, in one transaction.
"""

from __future__ import annotations

import datetime as dt
import operator
import sqlite3
from collections.abc import Callable
from typing import Any

from vipsense.crypto import CipherError, FieldCipher, key_id_of
from vipsense.i18n import _
from vipsense.identity.records import CARD_COLUMNS, CUSTOMER_COLUMNS
from vipsense.model import Card, CardEvent, CardStatus, Customer, Photo
from vipsense.storage import migrations
from vipsense.storage.migrations import add_columns, adding_columns

#: ``PRAGMA user_version``: 1 had no history, consent or sightings; 2 kept ID and mobile numbers in clear
SCHEMA_VERSION = 3
ID_COLUMN, MOBILE_COLUMN = "customers.id_number", "customers.mobile"  #: each value's associated data

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
    photo_mime     TEXT,
    consent        INTEGER,
    consent_date   TEXT,
    id_index       BLOB
);
CREATE TABLE IF NOT EXISTS cards (
    epc              TEXT PRIMARY KEY,
    customer_no      TEXT NOT NULL,
    tid              TEXT,
    status           TEXT NOT NULL DEFAULT 'active',
    tier             TEXT,
    valid_from       TEXT,
    valid_until      TEXT,
    allowed_branches TEXT NOT NULL DEFAULT '',
    last_seen_branch TEXT,
    last_seen_at     REAL
);
CREATE TABLE IF NOT EXISTS card_history (
    seq    INTEGER PRIMARY KEY,
    epc    TEXT NOT NULL,
    action TEXT NOT NULL,
    at     REAL NOT NULL,
    actor  TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS data_keys (
    key_id TEXT PRIMARY KEY,
    since  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS cards_customer ON cards (customer_no);
CREATE INDEX IF NOT EXISTS card_history_epc ON card_history (epc, seq);
"""
#: Made once the columns are there (an older file gets ``id_index`` from :func:`migrate` first).  The
#: index on the ID number itself is dropped: it indexed ciphertexts, useless and a copy of them.
INDEXES = """
DROP INDEX IF EXISTS customers_id_number;
CREATE INDEX IF NOT EXISTS customers_id_index ON customers (id_index);
"""

#: Columns added since the first version, added in place to an older file when it is opened.
#: ``consent`` NULL means "not recorded", which counts as no consent.
ADDED_COLUMNS = {
    "customers": (("consent", "INTEGER"), ("consent_date", "TEXT"), ("id_index", "BLOB")),
    "cards": (("last_seen_branch", "TEXT"), ("last_seen_at", "REAL")),
}

CARD_SELECT = ", ".join((*CARD_COLUMNS, "last_seen_branch", "last_seen_at"))
CUSTOMER_SELECT = ", ".join((*CUSTOMER_COLUMNS, "photo", "photo_mime", "consent", "consent_date"))
HISTORY_SELECT = "epc, action, at, actor, reason, detail"
CUSTOMER_ROW = (*CUSTOMER_COLUMNS, "photo", "photo_mime", "consent", "consent_date")
CUSTOMER_STORED = (*CUSTOMER_ROW, "id_index")  #: what a customer's write sets: its row and the blind index
CARD_ROW = (*CARD_COLUMNS, "last_seen_branch", "last_seen_at")
_ID_I, _MOBILE_I = CUSTOMER_ROW.index("id_number"), CUSTOMER_ROW.index("mobile")

# Constant SQL text, so sqlite3's statement cache prepares each lookup once per connection.
FIND_CARD_SQL = f"SELECT {CARD_SELECT} FROM cards WHERE epc = ?"
FIND_CUSTOMER_SQL = f"SELECT {CUSTOMER_SELECT} FROM customers WHERE customer_no = ?"
FIND_BY_ID_NUMBER_SQL = f"SELECT {CUSTOMER_SELECT} FROM customers WHERE id_index = ? ORDER BY customer_no"
CARD_HISTORY_SQL = f"SELECT {HISTORY_SELECT} FROM card_history WHERE epc = ? ORDER BY seq"
INSERT_HISTORY_SQL = "INSERT INTO card_history (epc, action, at, actor, reason, detail) VALUES (?,?,?,?,?,?)"


def find_by_id_index_sql(keys: int) -> str:
    """The ID-number search for a cipher holding ``keys`` keys (values written before a rotation are
    found by their index under the older key).  Both forms use ``customers_id_index``."""
    if keys == 1:
        return FIND_BY_ID_NUMBER_SQL
    marks = ", ".join("?" * keys)
    return f"SELECT {CUSTOMER_SELECT} FROM customers WHERE id_index IN ({marks}) ORDER BY customer_no"


def migrate(db: sqlite3.Connection, cipher: FieldCipher, now: float = 0.0) -> list[str]:
    """Create what is missing, add the columns a file of an older version lacks, and encrypt the ID and
    mobile numbers it holds in clear; nothing is lost.  One transaction, taken before looking, so two
    processes opening an old file migrate it once (:func:`vipsense.storage.migrations.migrate`).  Returns the
    columns added, as ``table.column``.

    Also records the cipher's current key id in ``data_keys``, and refuses (:class:`CipherError`) a file
    with values under a key the cipher does not hold."""
    db.executescript(SCHEMA)

    def encrypted(db: sqlite3.Connection) -> list[str]:
        added = add_columns(db, {"customers": (("id_index", "BLOB"),)})  # the blind index comes with it
        encrypt_clear_values(db, cipher)
        return added

    def every_opening(db: sqlite3.Connection) -> list[str]:
        for statement in INDEXES.strip().split(";"):
            if statement.strip():
                db.execute(statement)
        check_keys(db, cipher, now)
        return []

    steps: tuple[migrations.Step, ...] = (
        lambda db: [],  # 1: the first layout; the tables a file lacks come from SCHEMA
        adding_columns(ADDED_COLUMNS),  # 2: history (a table of SCHEMA), consent, sightings
        encrypted,  # 3: ID and mobile numbers encrypted
    )
    assert len(steps) == SCHEMA_VERSION
    return migrations.migrate(db, steps, then=every_opening)


def encrypt_clear_values(db: sqlite3.Connection, cipher: FieldCipher) -> int:
    """Every ID and mobile number still in clear, encrypted, with its blind index; inside the caller's
    transaction.  Returns how many customers changed."""
    done, last = 0, ""
    while True:
        rows = db.execute(
            "SELECT customer_no, id_number, mobile FROM customers WHERE customer_no > ?"
            " AND (typeof(id_number) = 'text' OR typeof(mobile) = 'text') ORDER BY customer_no LIMIT 10000",
            (last,),
        ).fetchall()
        if not rows:
            return done
        db.executemany(
            "UPDATE customers SET id_number = ?, mobile = ?, id_index = ? WHERE customer_no = ?",
            [(*reseal(cipher, no, idn, mob), no) for no, idn, mob in rows],
        )
        done += len(rows)
        last = rows[-1][0]


def reseal(cipher: FieldCipher, no: str, id_number: Any, mobile: Any) -> tuple[Any, ...]:
    """Stored numbers (in clear, or under any key the cipher holds) sealed again under its current key."""
    return seal_numbers(
        cipher, no, cipher.decrypt(ID_COLUMN, no, id_number), cipher.decrypt(MOBILE_COLUMN, no, mobile)
    )


def key_ids_in_use(db: sqlite3.Connection) -> dict[str, int]:
    """How many stored values are under each key id (``clear`` for values not encrypted): a full
    scan, for key rotation and checks, never on the door's path."""
    counts: dict[str, int] = {}
    for column in ("id_number", "mobile"):
        for kid, n in db.execute(
            f"SELECT CASE typeof({column}) WHEN 'blob' THEN lower(hex(substr({column}, 2, 4)))"
            f" ELSE 'clear' END, count(*) FROM customers WHERE {column} IS NOT NULL GROUP BY 1"
        ):
            counts[kid] = counts.get(kid, 0) + n
    return counts


def check_keys(db: sqlite3.Connection, cipher: FieldCipher, now: float) -> None:
    """Record the current key id; refuse a file with values under a key id the cipher lacks (an id that
    is listed but no longer used, e.g. after a rotation elsewhere, is dropped from the list)."""
    current = cipher.current.key_id
    db.execute("INSERT OR IGNORE INTO data_keys (key_id, since) VALUES (?, ?)", (current, now))
    listed = [kid for (kid,) in db.execute("SELECT key_id FROM data_keys")]
    unknown = [kid for kid in listed if not cipher.knows(kid)]
    if not unknown:
        return
    used = key_ids_in_use(db)
    missing = [kid for kid in unknown if used.get(kid)]
    if missing:
        message = _(
            "this store holds ID and mobile numbers encrypted under data key {keys}, which {cipher} does "
            "not hold; name that key in privacy.data_key or privacy.retired_data_keys"
        )
        raise CipherError(message.format(keys=", ".join(missing), cipher=cipher.describe))
    db.executemany("DELETE FROM data_keys WHERE key_id = ?", [(kid,) for kid in unknown])


def upsert_sql(table: str, columns: tuple[str, ...], *, seed: bool = False) -> str:
    """Insert or update only ``columns``, so whatever a file leaves out (a photo, a consent, a sighting)
    survives.  A photo of NULL keeps the stored one.

    ``seed=True`` is for seed files, which are upserted on every open: there an empty consent cell keeps
    the stored consent, and a card that has a history keeps its status, because its status is the
    card registry's (a card reported lost stays lost after a restart, whatever the seed says).
    """
    key = columns[0]
    kept = {"photo", "photo_mime"} | ({"consent", "consent_date"} if seed else set())
    updates = []
    for c in columns[1:]:
        if c in kept:
            updates.append(f"{c} = COALESCE(excluded.{c}, {table}.{c})")
        elif seed and table == "cards" and c == "status":
            updates.append(
                "status = CASE WHEN EXISTS (SELECT 1 FROM card_history h WHERE h.epc = cards.epc)"
                " THEN cards.status ELSE excluded.status END"
            )
        else:
            updates.append(f"{c} = excluded.{c}")
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        f" ON CONFLICT ({key}) DO UPDATE SET {', '.join(updates)}"
    )


def _date(text: str | None) -> dt.date | None:
    return dt.date.fromisoformat(text) if text else None


def _iso(value: dt.date | None) -> str | None:
    return value.isoformat() if value else None


def card_from_row(row: tuple[Any, ...]) -> Card:
    return Card(
        epc=row[0],
        customer_no=row[1],
        tid=row[2],
        status=CardStatus(row[3]),
        tier=row[4],
        valid_from=_date(row[5]),
        valid_until=_date(row[6]),
        allowed_branches=tuple(b for b in (row[7] or "").split(",") if b),
        last_seen_branch=row[8],
        last_seen_at=row[9],
    )


def card_row(card: Card) -> tuple[Any, ...]:
    """A card as stored, in :data:`CARD_ROW` order."""
    return (
        card.epc.upper(),
        card.customer_no,
        card.tid.upper() if card.tid else None,
        CardStatus(card.status).value,
        card.tier,
        _iso(card.valid_from),
        _iso(card.valid_until),
        ",".join(card.allowed_branches),
        card.last_seen_branch,
        card.last_seen_at,
    )


def customer_from_row(row: tuple[Any, ...], cipher: FieldCipher) -> Customer:
    no = row[0]
    return Customer(
        customer_no=no,
        name=row[1],
        company=row[2],
        id_number=cipher.decrypt(ID_COLUMN, no, row[3]),
        mobile=cipher.decrypt(MOBILE_COLUMN, no, row[4]),
        usual_business=row[5],
        tier=row[6],
        client_manager=row[7],
        photo=Photo(row[8], row[9]) if row[8] is not None else None,
        consent=bool(row[10]),
        consent_date=_date(row[11]),
    )


_customer_values = operator.attrgetter(*CUSTOMER_COLUMNS)


def seal_numbers(
    cipher: FieldCipher, customer_no: str, id_number: str | None, mobile: str | None
) -> tuple[bytes | None, bytes | None, bytes | None]:
    """``(id_number, mobile, id_index)`` as stored: both sealed for this customer, and the index."""
    return (
        cipher.encrypt(ID_COLUMN, customer_no, id_number),
        cipher.encrypt(MOBILE_COLUMN, customer_no, mobile),
        cipher.index(id_number),
    )


def seal_row(values: tuple[Any, ...], cipher: FieldCipher) -> tuple[Any, ...]:
    """A row in :data:`CUSTOMER_ROW` order as stored, in :data:`CUSTOMER_STORED` order."""
    id_number, mobile, index = seal_numbers(cipher, values[0], values[_ID_I], values[_MOBILE_I])
    out = list(values)
    out[_ID_I], out[_MOBILE_I] = id_number, mobile
    return (*out, index)


def customer_row(c: Customer, cipher: FieldCipher) -> tuple[Any, ...]:
    """A customer as stored, in :data:`CUSTOMER_STORED` order."""
    photo = (c.photo.data, c.photo.mime) if c.photo else (None, None)
    return seal_row((*_customer_values(c), *photo, int(c.consent), _iso(c.consent_date)), cipher)


def event_from_row(row: tuple[Any, ...]) -> CardEvent:
    return CardEvent(epc=row[0], action=row[1], at=row[2], actor=row[3], reason=row[4], detail=row[5])


def event_row(event: CardEvent, epc: str | None = None) -> tuple[Any, ...]:
    return (epc or event.epc.upper(), event.action.value, event.at, event.actor, event.reason, event.detail)


def storage_converter(
    kind: str, columns: tuple[str, ...], cipher: FieldCipher
) -> tuple[tuple[str, ...], Callable[[tuple[Any, ...]], tuple[Any, ...]] | None]:
    """For typed CSV values (:class:`vipsense.identity.records.CsvTable`): the columns a row is written
    to, and the function that turns a row into what this file stores (numbers sealed and the blind index
    added, dates as ISO text, branches comma-separated), or None when a row is stored as it is (a
    customers file with no ID, mobile or consent column: kept free of per-row work)."""
    if kind == "customers":
        date_i = columns.index("consent_date") if "consent_date" in columns else None
        id_i = columns.index("id_number") if "id_number" in columns else None
        mobile_i = columns.index("mobile") if "mobile" in columns else None
        if date_i is None and id_i is None and mobile_i is None:
            return columns, None
        stored = (*columns, "id_index") if id_i is not None else columns

        def customer(row: tuple[Any, ...]) -> tuple[Any, ...]:
            out = list(row)
            no = row[0]
            if date_i is not None:
                out[date_i] = _iso(row[date_i])
            if mobile_i is not None:
                out[mobile_i] = cipher.encrypt(MOBILE_COLUMN, no, row[mobile_i])
            if id_i is not None:
                out[id_i] = cipher.encrypt(ID_COLUMN, no, row[id_i])
                out.append(cipher.index(row[id_i]))
            return tuple(out)

        return stored, customer
    dates = [columns.index(c) for c in ("valid_from", "valid_until") if c in columns]
    branches = columns.index("allowed_branches") if "allowed_branches" in columns else None

    def convert(row: tuple[Any, ...]) -> tuple[Any, ...]:
        out = list(row)
        for i in dates:
            out[i] = _iso(out[i])
        if branches is not None:
            out[branches] = ",".join(out[branches])
        return tuple(out)

    return columns, convert


def is_sealed(value: Any) -> bool:
    """Whether a stored value is encrypted (a check for tests and tools)."""
    return key_id_of(value) is not None
