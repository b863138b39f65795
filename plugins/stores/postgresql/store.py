"""The store: the centre's ``customers``, ``cards`` and ``card_events`` tables as an identity store
and card registry, through :func:`vipsense.centre.database.open_database` (psycopg 3 and its pool).

Every registry write is one transaction.  A card's status change locks nothing but its own row
(``UPDATE ... RETURNING``), so issuing stations and imports at many desks do not queue behind each
other.  ID and mobile numbers are sealed with the cipher the core gave this store (``ctx.cipher``),
with the same column names as associated data as the branch's SQLite store, and the ID number's
blind index sits in ``customers.id_index``: a search by ID number is one indexed, exact lookup.

A server that does not answer is a :class:`CentreUnreachable` (a :class:`ConnectionError`): the
branch's store runner shows it as the store's state and retries, the command line prints its one
sentence, and the URL in it has its password masked.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from vipsense.api import (
    Card,
    CardEvent,
    CardExists,
    CardRegistry,
    CardStatus,
    Customer,
    Duration,
    PluginContext,
    Secret,
    UnknownCard,
)
from vipsense.crypto import FieldCipher, normalise_id_number
from vipsense.errors import describe
from vipsense.i18n import _
from vipsense.model import CardAction

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from vipsense.centre.database import Database

log = logging.getLogger(__name__)

T = TypeVar("T")
CHUNK = 1_000  #: rows per statement in bulk writes, and per fetch when streaming
ID_COLUMN, MOBILE_COLUMN = "customers.id_number", "customers.mobile"  #: each value's associated data

#: The history entry of a card whose status an import changes.
_STATUS_ACTION = {
    CardStatus.LOST: CardAction.LOST,
    CardStatus.REVOKED: CardAction.REVOKED,
    CardStatus.ACTIVE: CardAction.RESTORED,
}


def _positive(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    # a wait of 0 would fail every look-up; an unbounded one would let a dead server hold the door
    if isinstance(value, bool) or not value > 0:
        raise ValueError(
            _("{key}: must be more than 0, got {value!r}").format(key=attribute.name, value=value)
        )


@attrs.frozen
class PostgresqlSettings:
    #: ``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DBNAME``, from ``!secret``: it holds a password
    url: Secret = attrs.field(repr=False)
    min_size: int = attrs.field(default=1, validator=_positive)  #: connections kept open
    max_size: int = attrs.field(default=4, validator=_positive)  #: connections at most
    #: how long a call waits for a connection (a server that went away fails within this)
    timeout: Duration = attrs.field(default=Duration(2), validator=_positive)
    connect_timeout: Duration = attrs.field(default=Duration(2), validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.max_size < self.min_size:
            raise ValueError(
                _("max_size: {max} is less than min_size {min}").format(max=self.max_size, min=self.min_size)
            )


class CentreUnreachable(ConnectionError):
    """The centre's database does not answer (or cannot be opened); the message is for people."""


def _chunks(items: Iterable[T], size: int = CHUNK) -> Iterator[list[T]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _utc(at: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(at, dt.timezone.utc)


class PostgresqlStore(CardRegistry):
    """The central identity store: one database for every branch and issuing station."""

    def __init__(self, settings: PostgresqlSettings, ctx: PluginContext) -> None:
        self.settings = settings
        self.cipher: FieldCipher = ctx.cipher
        self.station = ctx.branch_id  #: recorded with each history entry: where the change was made
        self.db: Database | None = None
        self.shown_url = ""  #: the URL with its password masked, for messages
        #: why the last call failed ("" after one that worked): what :meth:`degraded` shows, so a
        #: call that failed after outliving the runner's wait still leaves the status saying why
        self.trouble = ""

    def __repr__(self) -> str:
        return f"PostgresqlStore({self.shown_url or 'not open'})"

    # -- opening ----------------------------------------------------------------------------------

    def open(self) -> None:
        from vipsense.centre.database import CentreDatabaseError, PoolSettings, mask_url, open_database
        from vipsense.centre.migrations import migrate

        url = self.settings.url.reveal()
        try:
            self.shown_url = mask_url(url)
        except Exception:  # not a URL at all: open_database says so, masked
            self.shown_url = ""
        pool = PoolSettings(
            min_size=self.settings.min_size,
            max_size=self.settings.max_size,
            timeout=float(self.settings.timeout),
            connect_timeout=max(2, round(self.settings.connect_timeout)),  # libpq's least is 2 s
        )
        try:
            db = open_database(url, pool)
        except CentreDatabaseError as exc:
            raise CentreUnreachable(str(exc)) from None
        try:
            if not db.is_postgresql:
                raise CentreUnreachable(
                    _("the postgresql store needs a postgresql+psycopg:// URL, not {url}").format(url=db.url)
                )
            with self._errors():
                migrate(db)
        except BaseException:
            db.close()
            raise
        self.db = db

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    @property
    def _db(self) -> Database:
        if self.db is None:
            raise RuntimeError("the postgresql store is not open")
        return self.db

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """A server that went away, or a pool with no connection to lend, as one clear sentence."""
        from psycopg import OperationalError as PsycopgOperational
        from sqlalchemy.exc import InterfaceError, OperationalError

        try:
            yield
        except (OperationalError, InterfaceError, PsycopgOperational) as exc:
            original = getattr(exc, "orig", None) or exc
            reason = describe(original, typed=False).replace(self.settings.url.reveal(), "***")
            self.trouble = _("the centre's database {url} does not answer: {reason}").format(
                url=self.shown_url, reason=reason
            )
            raise CentreUnreachable(self.trouble) from None
        self.trouble = ""

    def degraded(self) -> str:
        return self.trouble

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._errors(), self._db.begin() as conn:
            yield conn

    # -- rows and model objects -------------------------------------------------------------------

    def _customer(self, row: Any) -> Customer:
        no = row.customer_no
        return Customer(
            customer_no=no,
            name=row.name,
            tier=row.tier or None,
            company=row.company,
            id_number=self.cipher.decrypt(ID_COLUMN, no, row.id_number_enc),
            mobile=self.cipher.decrypt(MOBILE_COLUMN, no, row.mobile_enc),
            usual_business=row.usual_business,
            client_manager=row.client_manager,
            consent=bool(row.consent),
            consent_date=row.consent_date,
        )

    def _customer_values(self, c: Customer, now: dt.datetime) -> dict[str, Any]:
        no = c.customer_no
        return {
            "customer_no": no,
            "name": c.name,
            "tier": c.tier or "",  # part 1's column is NOT NULL; "" reads back as None
            "company": c.company,
            "client_manager": c.client_manager,
            "id_number_enc": self.cipher.encrypt(ID_COLUMN, no, c.id_number),
            "mobile_enc": self.cipher.encrypt(MOBILE_COLUMN, no, c.mobile),
            "id_index": self.cipher.index(c.id_number),
            "usual_business": c.usual_business,
            "consent": c.consent,
            "consent_date": c.consent_date,
            "updated_at": now,
        }

    @staticmethod
    def _card(row: Any) -> Card:
        return Card(
            epc=row.epc,
            customer_no=row.customer_no,
            status=CardStatus(row.status),
            tier=row.tier,
            valid_from=row.valid_from,
            valid_until=row.valid_until,
            allowed_branches=tuple(b for b in (row.allowed_branches or "").split(",") if b),
            tid=row.tid,
            last_seen_branch=row.last_seen_branch,
            last_seen_at=row.last_seen_at,
        )

    @staticmethod
    def _card_values(card: Card, now: dt.datetime) -> dict[str, Any]:
        """A card as a registry write sets it (its sightings are the store's own to record)."""
        return {
            "epc": card.epc.upper(),
            "customer_no": card.customer_no,
            "tid": card.tid.upper() if card.tid else None,
            "status": CardStatus(card.status).value,
            "tier": card.tier,
            "valid_from": card.valid_from,
            "valid_until": card.valid_until,
            "allowed_branches": ",".join(card.allowed_branches),
            "issued_at": now,
            "updated_at": now,
        }

    def _event_values(self, event: CardEvent, epc: str, customer_no: str) -> dict[str, Any]:
        return {
            "epc": epc,
            "customer_no": customer_no,
            "event": event.action.value,
            "at": _utc(event.at),
            "staff_id": event.actor,
            "station": self.station,
            "reason": event.reason,
            "detail": event.detail,
        }

    # -- lookups ----------------------------------------------------------------------------------

    def find_card(self, epc: str) -> Card | None:
        from vipsense.centre.schema import cards

        with self._transaction() as conn:
            row = conn.execute(cards.select().where(cards.c.epc == epc.upper())).first()
        return self._card(row) if row else None

    def find_customer(self, customer_no: str) -> Customer | None:
        from vipsense.centre.schema import customers

        with self._transaction() as conn:
            row = conn.execute(customers.select().where(customers.c.customer_no == customer_no)).first()
        return self._customer(row) if row else None

    def find_customers_by_id_number(self, id_number: str) -> list[Customer]:
        """Exact, as the SQLite store does it: the blind index (under every key held) finds the
        candidates, and each one's decrypted number must equal the one asked for."""
        from vipsense.centre.schema import customers

        indexes = self.cipher.indexes(id_number)
        query = customers.select().where(customers.c.id_index.in_(indexes)).order_by(customers.c.customer_no)
        with self._transaction() as conn:
            found = [self._customer(r) for r in conn.execute(query)]
        wanted = normalise_id_number(id_number)
        return [c for c in found if c.id_number is not None and normalise_id_number(c.id_number) == wanted]

    def cards_seen(self, sightings: list[tuple[str, str, float]]) -> None:
        """One transaction per pipeline batch; every branch writes here, so a card seen at two
        branches too quickly is caught wherever it turns up next."""
        from sqlalchemy import bindparam

        from vipsense.centre.schema import cards

        statement = (
            cards.update()
            .where(cards.c.epc == bindparam("b_epc"))
            .values(last_seen_branch=bindparam("b_branch"), last_seen_at=bindparam("b_at"))
        )
        rows = [{"b_epc": epc.upper(), "b_branch": branch, "b_at": at} for epc, branch, at in sightings]
        with self._transaction() as conn:
            conn.execute(statement, rows)

    def card_seen(self, epc: str, branch_id: str, at: float) -> None:
        self.cards_seen([(epc, branch_id, at)])

    def iter_cards(self) -> Iterator[Card]:
        from vipsense.centre.schema import cards

        return (self._card(r) for r in self._stream(cards.select().order_by(cards.c.epc)))

    def iter_customers(self) -> Iterator[Customer]:
        """Without photos: the centre's ``customers`` holds none (see docs/centre.md)."""
        from vipsense.centre.schema import customers

        query = customers.select().order_by(customers.c.customer_no)
        return (self._customer(r) for r in self._stream(query))

    def _stream(self, query: Any) -> Iterator[Any]:
        """One query's rows through a server-side cursor, :data:`CHUNK` at a time: a sync of a
        million cards never holds them all, and one transaction gives a consistent snapshot."""
        with self._transaction() as conn:
            result = conn.execution_options(stream_results=True, yield_per=CHUNK).execute(query)
            yield from result

    # -- the card registry ------------------------------------------------------------------------

    def list_cards(self, customer_no: str | None = None, status: CardStatus | None = None) -> list[Card]:
        from vipsense.centre.schema import cards

        query = cards.select().order_by(cards.c.epc)
        if customer_no is not None:
            query = query.where(cards.c.customer_no == customer_no)
        if status is not None:
            query = query.where(cards.c.status == CardStatus(status).value)
        with self._transaction() as conn:
            return [self._card(r) for r in conn.execute(query)]

    def card_history(self, epc: str) -> list[CardEvent]:
        from vipsense.centre.schema import card_events, cards

        epc = epc.upper()
        query = card_events.select().where(card_events.c.epc == epc).order_by(card_events.c.event_id)
        with self._transaction() as conn:
            rows = conn.execute(query).all()
            known = rows or conn.execute(cards.select().where(cards.c.epc == epc)).first()
        if not known:
            raise UnknownCard(_("no card has EPC {epc}").format(epc=epc))
        return [
            CardEvent(
                epc=r.epc,
                action=r.event,
                at=r.at.timestamp(),
                actor=r.staff_id or "",
                reason=r.reason or "",
                detail=r.detail or "",
            )
            for r in rows
        ]

    def issue_card(self, card: Card, event: CardEvent) -> None:
        with self._transaction() as conn:
            self._insert_card(conn, card)
            self._history(conn, [self._event_values(event, card.epc.upper(), card.customer_no)])

    def _insert_card(self, conn: Connection, card: Card) -> None:
        """Insert a new card; :class:`CardExists` if the EPC is known, ``ValueError`` if its customer
        is not in the centre (the card's foreign key)."""
        from sqlalchemy.dialects.postgresql import insert
        from sqlalchemy.exc import IntegrityError

        from vipsense.centre.schema import cards

        statement = insert(cards).on_conflict_do_nothing(index_elements=["epc"]).returning(cards.c.epc)
        values = self._card_values(card, dt.datetime.now(dt.timezone.utc))
        try:
            with conn.begin_nested():
                inserted = conn.execute(statement, values).first()
        except IntegrityError as exc:
            if getattr(exc.orig, "sqlstate", None) != "23503":  # foreign_key_violation
                raise
            raise ValueError(
                _("customer {customer} is not in the centre's database: add the customer first").format(
                    customer=card.customer_no
                )
            ) from None
        if inserted is None:
            raise CardExists(_("card {epc} is already issued").format(epc=card.epc.upper()))

    def _history(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        from vipsense.centre.schema import card_events

        if rows:
            conn.execute(card_events.insert(), rows)

    def set_card_status(self, epc: str, status: CardStatus, event: CardEvent) -> Card:
        epc = epc.upper()
        with self._transaction() as conn:
            self._set_status(conn, epc, status, event)
        card = self.find_card(epc)
        assert card is not None, "_set_status raised UnknownCard for a card that is not there"
        return card

    def _set_status(self, conn: Connection, epc: str, status: CardStatus, event: CardEvent) -> None:
        from vipsense.centre.schema import cards

        statement = (
            cards.update()
            .where(cards.c.epc == epc)
            .values(status=CardStatus(status).value, updated_at=dt.datetime.now(dt.timezone.utc))
            .returning(cards.c.customer_no)
        )
        row = conn.execute(statement).first()
        if row is None:
            raise UnknownCard(_("no card has EPC {epc}").format(epc=epc))
        self._history(conn, [self._event_values(event, epc, row.customer_no)])

    def reissue_card(self, old_epc: str, new_card: Card, revoke: CardEvent, issue: CardEvent) -> None:
        with self._transaction() as conn:  # one transaction: a failure of either half rolls back both
            self._set_status(conn, old_epc.upper(), CardStatus.REVOKED, revoke)
            self._insert_card(conn, new_card)
            self._history(conn, [self._event_values(issue, new_card.epc.upper(), new_card.customer_no)])

    def upsert_cards(self, cards: Iterable[Card], event: CardEvent) -> int:
        """As the SQLite registry: a new card's entry is ``issued`` (``imported as lost`` and the
        like when it arrives in another status), a status change's is what happened to the card.
        One transaction for the whole call."""
        from sqlalchemy import select
        from sqlalchemy.dialects.postgresql import insert

        from vipsense.centre.schema import cards as table

        done = 0
        with self._transaction() as conn:
            for chunk in _chunks(cards):
                now = dt.datetime.now(dt.timezone.utc)
                rows = list({v["epc"]: v for v in (self._card_values(c, now) for c in chunk)}.values())
                epcs = [r["epc"] for r in rows]
                before = dict(
                    conn.execute(
                        select(table.c.epc, table.c.status).where(table.c.epc.in_(epcs)).with_for_update()
                    ).all()
                )
                history = [e for r in rows if (e := self._import_entry(r, before.get(r["epc"]), event))]
                statement = insert(table)
                kept = {"epc", "issued_at", "last_seen_branch", "last_seen_at"}
                statement = statement.on_conflict_do_update(
                    index_elements=["epc"],
                    set_={c.name: statement.excluded[c.name] for c in table.columns if c.name not in kept},
                )
                conn.execute(statement, rows)
                self._history(conn, history)
                done += len(chunk)
        return done

    def _import_entry(
        self, row: dict[str, Any], before: str | None, event: CardEvent
    ) -> dict[str, Any] | None:
        status = CardStatus(row["status"])
        if before is None:
            detail = event.detail if status is CardStatus.ACTIVE else f"imported as {status.value}"
            entry = attrs.evolve(event, action=CardAction.ISSUED, detail=detail)
        elif before != status.value:
            entry = attrs.evolve(event, action=_STATUS_ACTION[status])
        else:
            return None
        return self._event_values(entry, row["epc"], row["customer_no"])

    def upsert_customers(self, customers: Iterable[Customer]) -> int:
        """One transaction per call (all or nothing), streamed in chunks.  Photos are not kept."""
        from sqlalchemy.dialects.postgresql import insert

        from vipsense.centre.schema import customers as table

        done = 0
        with self._transaction() as conn:
            for chunk in _chunks(customers):
                now = dt.datetime.now(dt.timezone.utc)
                rows = list({c.customer_no: self._customer_values(c, now) for c in chunk}.values())
                statement = insert(table)
                statement = statement.on_conflict_do_update(
                    index_elements=["customer_no"],
                    set_={k: statement.excluded[k] for k in rows[0] if k != "customer_no"},
                )
                conn.execute(statement, rows)
                done += len(chunk)
        return done
