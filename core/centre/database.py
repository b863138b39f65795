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

import contextvars
import logging
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import Connection, Engine, Table, create_engine, delete, event, select, text
from sqlalchemy import update as sql_update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.pool import NullPool

from ..errors import describe
from ..i18n import _
from . import days, partitions, schema

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
        #: built once: a new engine per transaction cost 0.5 ms of every batch
        self._immediate = engine.execution_options(vipsense_begin="IMMEDIATE")
        self._unnest: dict[tuple[Any, ...], str] = {}  #: PostgreSQL upserts, compiled once per shape
        self._sqlite: dict[tuple[Any, ...], Any] = {}  #: SQLite upserts, built once per shape

    @property
    def is_postgresql(self) -> bool:
        """The check in front of every PostgreSQL-only feature (partitions, BRIN, advisory locks)."""
        return self.dialect == "postgresql"

    def __repr__(self) -> str:
        return f"Database({self.url!r})"

    @contextmanager
    def begin(self, *, immediate: bool = False, retried: bool = False) -> Iterator[Connection]:
        """One transaction; ``immediate`` takes SQLite's write lock at once (migrations), so two
        processes cannot both read the old version and both write.  ``retried``: the caller tries
        the transaction again on a connection error (the ingest), so a PostgreSQL connection back
        in the pool moments ago is lent without a check (:data:`CHECK_IDLE`)."""
        with ExitStack() as stack:
            token = _CALLER_RETRIES.set(retried)  # read by the pool's check, while borrowing only
            try:
                conn = stack.enter_context((self._immediate if immediate else self.engine).begin())
            finally:
                _CALLER_RETRIES.reset(token)
            yield conn

    def check_pool(self) -> None:
        """After a connection error: check the pool's idle PostgreSQL connections now and replace
        those the server dropped (a restart drops them all), rather than lending them one by one."""
        if self._pool is not None:
            try:
                self._pool.check()
            except Exception as exc:  # the server is still down: the next try finds out
                log.debug("centre database: pool check: %s", exc)

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
                    new = len(conn.execute(statement, rows).all())
                    if table.name == "visits":
                        self.recount_days(conn, rows)
                    return new
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

    def upsert(
        self,
        conn: Connection,
        table: Table,
        rows: list[dict[str, Any]],
        update: Sequence[str] = (),
        newer: str | None = None,
    ) -> None:
        """Insert ``rows`` in the caller's transaction, or, for a row already held (same key), set its
        ``update`` columns (none: keep it as it is), and only from a state at least as new when
        ``newer`` names the column that orders states.  Makes the partitions the rows need first
        (PostgreSQL), as the other writes do.  The rows' keys must be unique among them.

        On SQLite: one short statement executed for many rows.  On PostgreSQL (the centre at bank
        scale): one statement per table whatever the number of rows, each column sent as one array
        and unnested by the server (:meth:`upserts`)."""
        self.upserts(conn, [(table, rows, update, newer)])

    def lock_row(self, conn: Connection, table: Table, key: Mapping[str, Any], columns: Sequence[str]) -> Any:
        """The ``columns`` of the row of ``table`` matching ``key``, locked until the transaction ends
        (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's write lock is the caller's ``BEGIN
        IMMEDIATE``), or None.  Attributes by column name.  On PostgreSQL straight through psycopg
        (the ingest's hot path: SQLAlchemy's statement handling cost more than the query)."""
        if not self.is_postgresql:
            query = select(*(table.c[c] for c in columns)).where(*(table.c[k] == v for k, v in key.items()))
            return conn.execute(query).first()
        from psycopg.rows import namedtuple_row

        sql = self._unnest.get(("lock", table.name, tuple(key), tuple(columns)))
        if sql is None:
            where = " AND ".join(f"{table.c[k].name} = %s" for k in key)
            shown = ", ".join(table.c[c].name for c in columns)
            sql = f"SELECT {shown} FROM {table.name} WHERE {where} FOR UPDATE"
            self._unnest[("lock", table.name, tuple(key), tuple(columns))] = sql
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor(row_factory=namedtuple_row) as cur:
            return cur.execute(sql, list(key.values())).fetchone()

    def upserts(
        self,
        conn: Connection,
        writes: Sequence[tuple[Table, list[dict[str, Any]], Sequence[str], str | None]],
        then: tuple[Table, Mapping[str, Any], Mapping[str, Any]] | None = None,
        also: Sequence[tuple[Any, list[dict[str, Any]]]] = (),
    ) -> None:
        """Several :meth:`upsert` calls in one go: ``(table, rows, update, newer)`` each, in order,
        then (``then``: table, key columns and values, columns to set) one row's update, then
        ``also``: statements of the dialect's own (psycopg's text, SQLAlchemy's on SQLite) with one
        set of parameters per execution, such as :func:`~vipsense.centre.days.recount_statement`.

        PostgreSQL's path is the ingest's hot path, measured (issue 14 part 7): through SQLAlchemy, a
        batch of 25 visits and 25 deliveries cost about 9 ms of Python (statements rebuilt each
        call, each row a pipelined execution).  Here each table's rows go as one
        ``INSERT ... SELECT * FROM unnest(%s::type[], ...) ON CONFLICT ...`` whose text is compiled
        once per table and shape (and prepared by psycopg after a few uses), all the batch's
        statements in one psycopg pipeline: one round trip, a handful of parameters however many
        rows, and the same rules (conflict target with the partition key, the ``newer`` guard)."""
        todo = [(t, rows, tuple(u), n) for t, rows, u, n in writes if rows]
        if then is not None and not then[2]:
            then = None
        if not todo and then is None and not also:
            return
        for table, rows, *_unused in todo:
            self._partitions_for(conn, table.name, rows)
        if not self.is_postgresql:
            for table, rows, update, newer in todo:
                conn.execute(self._sqlite_upsert(table, update, newer), rows)
            if then is not None:
                table, key, values = then
                conn.execute(
                    sql_update(table).where(*(table.c[k] == v for k, v in key.items())).values(**values)
                )
            for statement, params in also:
                conn.execute(statement, params)
            return
        import psycopg

        raw = conn.connection.driver_connection
        assert raw is not None
        statements: list[tuple[str, list[Any]]] = []
        for table, rows, update, newer in todo:
            columns = tuple(rows[0])
            arrays = [[row[c] for row in rows] for c in columns]
            if any(len(row) != len(columns) for row in rows):
                raise ValueError(f"upsert into {table.name}: every row needs the same columns")
            for name, column_values in zip(columns, arrays, strict=True):
                if isinstance(table.c[name].type, schema.UtcDateTime):
                    for value in column_values:  # what UtcDateTime checks on SQLAlchemy's path
                        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
                            raise ValueError(f"naive datetime in {table.name}.{name}: aware times only")
            statements.append((self._unnest_sql(table, columns, update, newer), arrays))
        if then is not None:  # one row's update by its key, in the same round trip
            table, key, values = then
            for name, value in values.items():
                if isinstance(value, datetime) and (value.tzinfo is None or value.utcoffset() is None):
                    raise ValueError(f"naive datetime in {table.name}.{name}: aware times only")
            assignments = ", ".join(f"{table.c[c].name} = %s" for c in values)
            where = " AND ".join(f"{table.c[k].name} = %s" for k in key)
            statements.append(
                (f"UPDATE {table.name} SET {assignments} WHERE {where}", [*values.values(), *key.values()])
            )
        try:
            with raw.pipeline(), raw.cursor() as cur:
                for sql, arrays in statements:
                    cur.execute(sql, arrays)
                for sql, params in also:
                    cur.executemany(sql, params)
        except psycopg.IntegrityError as exc:
            # as SQLAlchemy's path raises it: a month another process dropped is a check violation
            raise IntegrityError(statements[-1][0], None, exc) from exc

    def _sqlite_upsert(self, table: Table, update: tuple[str, ...], newer: str | None) -> Any:
        """SQLite's upsert statement, built once per table and shape."""
        key = (table.name, update, newer)
        cached = self._sqlite.get(key)
        if cached is not None:
            return cached
        statement = sqlite.insert(table)
        keys = [c.name for c in table.primary_key.columns]
        if update:
            statement = statement.on_conflict_do_update(
                index_elements=keys,
                set_={name: statement.excluded[name] for name in update},
                where=(table.c[newer] <= statement.excluded[newer]) if newer else None,
            )
        else:
            statement = statement.on_conflict_do_nothing(index_elements=keys)
        self._sqlite[key] = statement
        return statement

    def _unnest_sql(
        self, table: Table, columns: tuple[str, ...], update: tuple[str, ...], newer: str | None
    ) -> str:
        """The PostgreSQL upsert of ``columns`` from one array each, compiled once per shape."""
        key = (table.name, columns, update, newer)
        sql = self._unnest.get(key)
        if sql is not None:
            return sql
        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        keys = [c.name for c in table.primary_key.columns]
        if table.name in schema.PARTITIONED:
            keys.append(schema.PARTITIONED[table.name])  # PostgreSQL's keys carry the partition key
        arrays = ", ".join(f"%b::{table.c[c].type.compile(dialect=dialect)}[]" for c in columns)
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"
        target = f" ON CONFLICT ({', '.join(keys)}) DO "
        if update:
            sql += target + "UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in update)
            if newer:
                sql += f" WHERE {table.name}.{newer} <= EXCLUDED.{newer}"
        else:
            sql += target + "NOTHING"
        self._unnest[key] = sql
        return sql

    def recount_days(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        """Recount, in the caller's transaction, the board's days (``branch_days``) that the visits
        ``rows`` (just written) fall on, each in its branch's zone."""
        arrived: dict[str, list[datetime]] = {}
        for row in rows:
            arrived.setdefault(row["branch_id"], []).append(row["arrived_at"])
        if not arrived:
            return
        b = schema.branches.c
        query = select(b.branch_id, b.timezone).where(b.branch_id.in_(sorted(arrived)))
        zones = dict(conn.execute(query).all())
        for branch_id, times in arrived.items():
            tz = days.zone(zones.get(branch_id))
            days.recount(conn, self.is_postgresql, branch_id, zones.get(branch_id), days.days_of(times, tz))

    def forget_partitions(self) -> None:
        """Forget which partitions exist (another process dropped one): the next write checks again."""
        self._months = set()

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


#: a pooled connection back this recently is lent to a caller that retries (``begin(retried=True)``)
#: without a check: checking each one cost the ingest a round trip per batch (issue 14 part 7); one
#: the server dropped meanwhile fails its transaction, which the ingest tries again
#: (``ingest.RETRIES``) on another connection.  Every other caller (pages, commands) gets a checked one
CHECK_IDLE = 1.0
_last_returned: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
_CALLER_RETRIES: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "vipsense_centre_retries", default=False
)


def _returned(conn: Any) -> None:
    """The pool's ``reset``: note when the connection came back."""
    _last_returned[conn] = time.monotonic()


def _check_idle(conn: Any) -> None:
    """The pool's ``check`` (run in the borrowing thread): a round trip, unless the caller retries and
    the connection came back less than :data:`CHECK_IDLE` ago."""
    back = _last_returned.get(conn)
    if not _CALLER_RETRIES.get() or back is None or time.monotonic() - back >= CHECK_IDLE:
        from psycopg_pool import ConnectionPool

        ConnectionPool.check_connection(conn)


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
        check=_check_idle,  # a connection the server dropped is replaced
        reset=_returned,
        close_returns=True,  # SQLAlchemy closes what it borrowed: that gives it back to the pool
        name="vipsense-centre",
        open=True,
    )
    engine = create_engine(url, poolclass=NullPool, creator=pool.getconn)
    return Database(engine, url, pool)


__all__ = ["CentreDatabaseError", "Database", "PoolSettings", "Removed", "mask_url", "open_database"]
