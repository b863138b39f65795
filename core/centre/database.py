"""Opening the centre's database, and the writes and retention every later part builds on.

One code path, two engines: a SQLite file is the embedded default (a demo, a one-branch bank: no
server to install), ``postgresql+psycopg://...`` is production, with psycopg 3's own connection pool
(``psycopg_pool``, sized by :class:`PoolSettings`) under SQLAlchemy.  What only PostgreSQL has
(monthly partitions, BRIN) sits behind :attr:`Database.is_postgresql`.

An address that is wrong or a server that does not answer is a :class:`CentreDatabaseError` whose
message is written for people; the password in a URL is never shown: :func:`mask_url` is the only
form of the URL kept, in ``repr`` and in logs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import Connection, Engine, Table, create_engine, delete, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.pool import NullPool

from ..errors import describe
from ..i18n import _
from . import partitions, schema

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

log = logging.getLogger("vipsense.centre")

#: the oldest PostgreSQL the centre runs on: partitioned tables with primary keys, foreign keys and
#: indexes on the parent (11+), and 13's faster partition pruning and BRIN on partitioned tables
MIN_POSTGRESQL = 130000
MASK = "***"


class CentreDatabaseError(Exception):
    """The centre's database cannot be used: a wrong URL, a server that does not answer, a schema
    from a newer vipsense.  The message is for people, translated; no traceback is needed."""


@attrs.frozen
class PoolSettings:
    """How many PostgreSQL connections the centre keeps and how long it waits (ignored for SQLite)."""

    min_size: int = 2  #: kept open, so a burst of reports does not wait for connections
    max_size: int = 10  #: at most, whatever the load: the server's max_connections is shared
    timeout: float = 10.0  #: seconds a request waits for a free connection before it fails
    connect_timeout: int = 5  #: seconds to reach the server when opening a connection


@attrs.frozen
class Removed:
    """What :meth:`Database.drop_before` removed: whole partitions (PostgreSQL) and rows per table."""

    partitions: tuple[str, ...] = ()
    rows: Mapping[str, int] = attrs.field(factory=dict)


def mask_url(url: str | URL) -> str:
    """The URL with its password (in the userinfo or a ``password=`` parameter) replaced by ***."""
    parsed = make_url(url)
    if "password" in parsed.query:
        parsed = parsed.update_query_dict({"password": MASK})
    return parsed.render_as_string(hide_password=True)


def _without_secret(message: str, url: URL) -> str:
    """``message`` with the URL's password taken out, should a driver ever repeat it."""
    secrets = [url.password, url.query.get("password")]
    for secret in secrets:
        for value in [secret] if isinstance(secret, str) else list(secret or ()):
            if value:
                message = message.replace(str(value), MASK)
    return message


class Database:
    """An open centre database: an SQLAlchemy engine and which engine it is.

    ``begin()`` is one transaction; the writes make the partitions a batch needs first."""

    def __init__(self, engine: Engine, url: URL, pool: ConnectionPool[Any] | None = None) -> None:
        self.engine = engine
        self.url = mask_url(url)  #: the URL as shown anywhere: the password masked
        self.dialect = engine.dialect.name
        self._pool = pool
        self._months: set[tuple[str, Any]] = set()  #: (table, month) partitions known to exist

    @property
    def is_postgresql(self) -> bool:
        """The check in front of every PostgreSQL-only feature (partitions, BRIN, advisory locks)."""
        return self.dialect == "postgresql"

    def __repr__(self) -> str:
        return f"Database({self.url!r})"

    @contextmanager
    def begin(self, *, immediate: bool = False) -> Iterator[Connection]:
        """One transaction; ``immediate`` takes SQLite's write lock at once (migrations), so two
        processes cannot both read the old version and both write."""
        engine = self.engine.execution_options(vipsense_begin="IMMEDIATE") if immediate else self.engine
        with engine.begin() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()
        if self._pool is not None:
            # the pool's workers may be retrying a server that is down: do not wait for them the
            # default 5 s (a store runner gives close() 0.5 s); they are daemon threads and stop
            self._pool.close(timeout=0.3)

    # -- partitions ------------------------------------------------------------------------------

    def ensure_partitions(self, months_ahead: int = 3, start: datetime | None = None) -> list[str]:
        """Make the monthly partitions from ``start``'s month (default: now) to ``months_ahead``
        months after it, for every partitioned table; idempotent.  Returns those made (none on
        SQLite, which has no partitions)."""
        if not self.is_postgresql:
            return []
        first = partitions.month_of(start or datetime.now(timezone.utc))
        wanted = partitions.months(first, months_ahead + 1)
        with self.begin() as conn:
            made = [p for table in schema.PARTITIONED for p in partitions.create(conn, table, wanted)]
        self._months |= {(t, m) for t in schema.PARTITIONED for m in wanted}
        return made

    # -- idempotent writes -----------------------------------------------------------------------

    def insert_visits(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert visits, skipping any already held (same branch and visit id); returns how many
        were new.  ``received_at`` defaults to now."""
        now = datetime.now(timezone.utc)
        return self._insert(schema.visits, [{"received_at": now, **row} for row in rows])

    def insert_deliveries(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert deliveries, skipping any already held (same branch and delivery key); returns how
        many were new."""
        return self._insert(schema.deliveries, [dict(row) for row in rows])

    def _insert(self, table: Table, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        if self.is_postgresql:
            statement = postgresql.insert(table).on_conflict_do_nothing().returning(table.c.branch_id)
        else:
            statement = sqlite.insert(table).on_conflict_do_nothing().returning(table.c.branch_id)
        for attempt in (1, 2):
            try:
                with self.begin() as conn:
                    self._partitions_for(conn, table.name, rows)
                    return len(conn.execute(statement, rows).all())
            except IntegrityError as exc:
                # another process dropped a month this process thought it had: make it again, once.
                # "no partition of relation ... found for row" is a check_violation (23514), and
                # these tables have no CHECK constraints of their own; the code, not the (possibly
                # translated) message, says so
                if attempt == 2 or getattr(exc.orig, "sqlstate", None) != "23514":
                    raise
                self._months = {known for known in self._months if known[0] != table.name}
        raise AssertionError("unreachable")

    def _partitions_for(self, conn: Connection, table: str, rows: list[dict[str, Any]]) -> None:
        """Make, in the write's own transaction, the month partitions the rows need and lack."""
        if not self.is_postgresql or table not in schema.PARTITIONED:
            return
        column = schema.PARTITIONED[table]
        needed = {partitions.month_of(row[column]) for row in rows} - {
            m for t, m in self._months if t == table
        }
        if needed:
            made = partitions.create(conn, table, needed)
            if made:
                log.info("centre database: made partitions on demand: %s", ", ".join(made))
            self._months |= {(table, m) for m in needed}

    # -- retention -------------------------------------------------------------------------------

    def drop_before(self, cutoff: datetime) -> Removed:
        """Remove visits and deliveries older than ``cutoff``, and acknowledgements with them.

        On PostgreSQL whole monthly partitions go (``DROP TABLE``, never row-by-row deletes), so the
        month ``cutoff`` falls in stays whole; on SQLite the rows before ``cutoff`` are deleted."""
        if cutoff.tzinfo is None:
            raise ValueError("drop_before needs an aware datetime")
        with self.begin() as conn:
            if self.is_postgresql:
                dropped = [p for t in schema.PARTITIONED for p in partitions.drop_before(conn, t, cutoff)]
                month = partitions.month_of(cutoff)
                boundary = datetime(month.year, month.month, 1, tzinfo=timezone.utc)
                acks = schema.acknowledgements
                gone = conn.execute(delete(acks).where(acks.c.acknowledged_at < boundary)).rowcount
                self._months = {(t, m) for t, m in self._months if partitions.name(t, m) not in set(dropped)}
                removed = Removed(tuple(dropped), {"acknowledgements": gone})
            else:
                rows = {}
                for table, column in [*schema.PARTITIONED.items(), ("acknowledgements", "acknowledged_at")]:
                    target = schema.metadata.tables[table]
                    rows[table] = conn.execute(delete(target).where(target.c[column] < cutoff)).rowcount
                removed = Removed((), rows)
        log.info("centre database: retention before %s removed %s", cutoff.isoformat(), removed)
        return removed


def open_database(url: str, pool: PoolSettings | None = None) -> Database:
    """Open the centre's database at ``url``: ``sqlite:///path/centre.db`` (the folder must exist;
    the file is made) or ``postgresql+psycopg://user:password@host:port/dbname`` (the server must
    answer, and be PostgreSQL 13 or newer).  Raises :class:`CentreDatabaseError`; nothing is
    migrated here (:func:`vipsense.centre.migrations.migrate`)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise CentreDatabaseError(
            _("{url} is not a database URL: write sqlite:///PATH or postgresql+psycopg://HOST/DBNAME").format(
                url=_shown(url)
            )
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = _open_sqlite(parsed)
    elif backend == "postgresql":
        database = _open_postgresql(parsed, pool or PoolSettings())
    else:
        raise CentreDatabaseError(
            _("the centre's database must be SQLite or PostgreSQL, not {backend} ({url})").format(
                backend=backend, url=mask_url(parsed)
            )
        )
    log.info("centre database: opened %s", database.url)
    return database


def _shown(url: str) -> str:
    """A URL SQLAlchemy cannot parse, shown without its userinfo (which may hold a password)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}://{MASK}@{rest.rpartition('@')[2]}" if sep and "@" in rest else url


def _open_sqlite(url: URL) -> Database:
    if not url.database or url.database == ":memory:":
        raise CentreDatabaseError(
            _("the centre's SQLite database needs a file: sqlite:///PATH (got {url})").format(
                url=mask_url(url)
            )
        )
    folder = Path(url.database).expanduser().resolve().parent
    if not folder.is_dir():
        raise CentreDatabaseError(
            _("the folder of the centre's database does not exist: {folder}").format(folder=folder)
        )
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        # the driver's own transaction handling would run DDL outside any transaction: take it over
        dbapi_connection.isolation_level = None
        for pragma in ("foreign_keys = ON", "journal_mode = WAL", "busy_timeout = 10000"):
            dbapi_connection.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('vipsense_begin', '')}")

    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
        engine.dispose()
        raise CentreDatabaseError(
            _("cannot open the centre's database {url}: {reason}").format(
                url=mask_url(url), reason=describe(exc.orig or exc, typed=False)
            )
        ) from None
    return Database(engine, url)


def _open_postgresql(url: URL, settings: PoolSettings) -> Database:
    try:
        import psycopg
        from psycopg.conninfo import make_conninfo
        from psycopg_pool import ConnectionPool
    except ImportError:
        raise CentreDatabaseError(
            _("PostgreSQL needs the postgresql extra: pip install 'vipsense[postgresql]'")
        ) from None
    if url.drivername not in ("postgresql", "postgresql+psycopg"):
        raise CentreDatabaseError(
            _(
                "the centre talks to PostgreSQL through psycopg 3: write postgresql+psycopg:// (got {url})"
            ).format(url=mask_url(url))
        )
    url = url.set(drivername="postgresql+psycopg")
    params: dict[str, Any] = {
        "connect_timeout": settings.connect_timeout,
        "application_name": "vipsense-centre",
    }
    params |= {k: v for k, v in (("host", url.host), ("port", url.port), ("user", url.username)) if v}
    params |= {k: v for k, v in (("password", url.password), ("dbname", url.database)) if v}
    params |= {k: v if isinstance(v, str) else v[-1] for k, v in url.query.items()}
    try:
        conninfo = make_conninfo(**params)
        with psycopg.connect(conninfo) as probe:  # fail now, clearly, rather than in the pool's thread
            version = probe.info.server_version
    except psycopg.Error as exc:
        raise CentreDatabaseError(
            _("cannot reach the centre's database {url}: {reason}").format(
                url=mask_url(url), reason=_without_secret(describe(exc, typed=False), url)
            )
        ) from None
    if version < MIN_POSTGRESQL:
        raise CentreDatabaseError(
            _("the centre needs PostgreSQL {needed} or newer; {url} is {found}").format(
                needed=MIN_POSTGRESQL // 10000,
                url=mask_url(url),
                found=f"{version // 10000}.{version % 10000}",
            )
        )
    pool: ConnectionPool[Any] = ConnectionPool(
        conninfo,
        min_size=settings.min_size,
        max_size=settings.max_size,
        timeout=settings.timeout,
        check=ConnectionPool.check_connection,  # a connection the server dropped is replaced
        close_returns=True,  # SQLAlchemy closes what it borrowed: that gives it back to the pool
        name="vipsense-centre",
        open=True,
    )
    engine = create_engine(url, poolclass=NullPool, creator=pool.getconn)
    return Database(engine, url, pool)


__all__ = ["CentreDatabaseError", "Database", "PoolSettings", "Removed", "mask_url", "open_database"]
