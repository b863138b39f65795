"""What the SQLite identity file holds, how a file of an older version is brought up to date, and how
rows become model objects.

Cards and customers are separate tables: a card maps an opaque EPC to a customer number, so revoking a
card never touches the customer's data.  ``card_history`` keeps every lifecycle change of a card; it is
never rewritten, so a card's history survives a replica refresh and a re-seed.
"""

from __future__ import annotations

import datetime as dt
import operator
import sqlite3
from typing import Any

from vipsense.model import Card, CardEvent, CardStatus, Customer, Photo
from vipsense.records import CARD_COLUMNS, CUSTOMER_COLUMNS

SCHEMA_VERSION = 2  #: ``PRAGMA user_version``: 1 had no history, consent or sightings

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
    consent_date   TEXT
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
CREATE INDEX IF NOT EXISTS cards_customer ON cards (customer_no);
CREATE INDEX IF NOT EXISTS customers_id_number ON customers (id_number);
CREATE INDEX IF NOT EXISTS card_history_epc ON card_history (epc, seq);
"""

#: Columns added since the first version, added in place to an older file when it is opened.
#: ``consent`` NULL means "not recorded", which counts as no consent.
ADDED_COLUMNS = {
    "customers": (("consent", "INTEGER"), ("consent_date", "TEXT")),
    "cards": (("last_seen_branch", "TEXT"), ("last_seen_at", "REAL")),
}

CARD_SELECT = ", ".join((*CARD_COLUMNS, "last_seen_branch", "last_seen_at"))
CUSTOMER_SELECT = ", ".join((*CUSTOMER_COLUMNS, "photo", "photo_mime", "consent", "consent_date"))
HISTORY_SELECT = "epc, action, at, actor, reason, detail"
CUSTOMER_ROW = (*CUSTOMER_COLUMNS, "photo", "photo_mime", "consent", "consent_date")
CARD_ROW = (*CARD_COLUMNS, "last_seen_branch", "last_seen_at")

# Constant SQL text, so sqlite3's statement cache prepares each lookup once per connection.
FIND_CARD_SQL = f"SELECT {CARD_SELECT} FROM cards WHERE epc = ?"
FIND_CUSTOMER_SQL = f"SELECT {CUSTOMER_SELECT} FROM customers WHERE customer_no = ?"
FIND_BY_ID_NUMBER_SQL = f"SELECT {CUSTOMER_SELECT} FROM customers WHERE id_number = ? ORDER BY customer_no"
CARD_HISTORY_SQL = f"SELECT {HISTORY_SELECT} FROM card_history WHERE epc = ? ORDER BY seq"
INSERT_HISTORY_SQL = "INSERT INTO card_history (epc, action, at, actor, reason, detail) VALUES (?,?,?,?,?,?)"


def migrate(db: sqlite3.Connection) -> list[str]:
    """Create what is missing and add the columns a file of an older version lacks; nothing is lost.
    One transaction, taken before looking, so two processes opening an old file migrate it once.
    Returns the columns added, as ``table.column``."""
    db.executescript(SCHEMA)
    added: list[str] = []
    with db:
        db.execute("BEGIN IMMEDIATE")
        for table, columns in ADDED_COLUMNS.items():
            have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            for name, decl in columns:
                if name not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
                    added.append(f"{table}.{name}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return added


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


def customer_from_row(row: tuple[Any, ...]) -> Customer:
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
        consent=bool(row[10]),
        consent_date=_date(row[11]),
    )


_customer_values = operator.attrgetter(*CUSTOMER_COLUMNS)


def customer_row(c: Customer) -> tuple[Any, ...]:
    """A customer as stored, in :data:`CUSTOMER_ROW` order."""
    photo = (c.photo.data, c.photo.mime) if c.photo else (None, None)
    return (*_customer_values(c), *photo, int(c.consent), _iso(c.consent_date))


def event_from_row(row: tuple[Any, ...]) -> CardEvent:
    return CardEvent(epc=row[0], action=row[1], at=row[2], actor=row[3], reason=row[4], detail=row[5])


def event_row(event: CardEvent, epc: str | None = None) -> tuple[Any, ...]:
    return (epc or event.epc.upper(), event.action.value, event.at, event.actor, event.reason, event.detail)


def storage_converter(kind: str, columns: tuple[str, ...]):
    """For typed CSV values (:class:`vipsense.records.CsvTable`): the function that turns a row into
    what this file stores (dates as ISO text, branches comma-separated), or None when a row is stored
    as it is (a customers file without consent columns: the bulk path, kept free of per-row work)."""
    if kind == "customers":
        if "consent_date" not in columns:
            return None
        i = columns.index("consent_date")
        return lambda row: (*row[:i], _iso(row[i]), *row[i + 1 :])
    dates = [columns.index(c) for c in ("valid_from", "valid_until") if c in columns]
    branches = columns.index("allowed_branches") if "allowed_branches" in columns else None

    def convert(row: tuple[Any, ...]) -> tuple[Any, ...]:
        out = list(row)
        for i in dates:
            out[i] = _iso(out[i])
        if branches is not None:
            out[branches] = ",".join(out[branches])
        return tuple(out)

    return convert
