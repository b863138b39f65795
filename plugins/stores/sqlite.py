"""The embedded identity store: customers and cards in one SQLite file, seeded from YAML or CSV.

Cards and customers are separate tables: a card maps an opaque EPC to a customer number, so revoking a
card never touches the customer's data.  Seed files are upserted each time the store opens, so editing
a seed file and restarting the branch is enough.  A CSV seed is read as cards when its header has an
``epc`` column, else as customers.
"""

from __future__ import annotations

import csv
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import attrs

import vipsense
from vipsense.api import Card, Customer, IdentityStore, PluginContext
from vipsense.avatar import avatar_svg
from vipsense.config.structure import INVALID, Structurer
from vipsense.config.yamlload import LoadedYaml, load_profile_yaml
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
"""

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
        db.executescript(SCHEMA)
        for seed in self.seeds:
            load_seed(db, seed)
        self.db = db

    def find_card(self, epc: str) -> Card | None:
        row = self.db.execute(
            "SELECT epc, customer_no, tid, status, tier, valid_from, valid_until, allowed_branches"
            " FROM cards WHERE epc = ?",
            (epc.upper(),),
        ).fetchone()
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
        row = self.db.execute(
            "SELECT customer_no, name, company, id_number, mobile, usual_business, tier,"
            " client_manager, photo, photo_mime FROM customers WHERE customer_no = ?",
            (customer_no,),
        ).fetchone()
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
    problem, each as ``file:line: key.path: message``."""
    if path.suffix.lower() == ".csv":
        customers, cards = _read_csv(path)
    else:
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


def _read_csv(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    is_cards = bool(rows) and "epc" in rows[0]
    cls = SeedCard if is_cards else SeedCustomer
    # Give each CSV row a "line" so errors read like YAML ones: file:line: [row].column: message.
    locs = {(i,): (str(path), i + 2) for i in range(len(rows))}
    data = [
        {k: (v.split(";") if k == "allowed_branches" else v) for k, v in r.items() if v not in ("", None)}
        for r in rows
    ]
    st = Structurer(LoadedYaml(data, locs, []))
    items = st.structure(data, tuple[cls, ...], ())
    if st.errors:
        raise SeedError("; ".join(str(e) for e in st.errors[:20]))
    if is_cards:
        return [], [_card_row(c) for c in items]
    return [_customer_row(c, path.parent, portrait=False) for c in items], []


@vipsense.hookimpl
def vipsense_register_store_types(register):
    register(
        "sqlite",
        SqliteSettings,
        SqliteStore,
        summary="customers and cards in a local SQLite file, seeded from YAML or CSV",
    )
