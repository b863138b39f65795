"""The one way the centre's database is brought up to date: :data:`STEPS`, in order, each in its own
transaction, each recorded in ``schema_version`` in that same transaction.

Step ``n`` brings a database from version ``n - 1`` to ``n``; a step that fails leaves the database
at ``n - 1`` (PostgreSQL's DDL is transactional, and on SQLite the centre runs DDL inside the
transaction too).  Re-running :func:`migrate` on an up-to-date database changes nothing; a database
recorded at a version this code does not know was written by a newer vipsense and is refused
(:class:`SchemaTooNew`), never guessed at.  Step 1 creates the tables from
:mod:`vipsense.centre.schema`; a later step that changes a table must also leave a database that step
1 made with the newer schema unchanged (check, then alter), like the branch's migrations.

On PostgreSQL the migration also makes the monthly partitions of ``visits`` and ``deliveries`` for
this month and the next few (:meth:`Database.ensure_partitions`); migrating again in a later month
makes that month's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import attrs
from sqlalchemy import Connection, func, inspect, select
from sqlalchemy.schema import CreateColumn

from ..i18n import _
from . import schema
from .database import CentreDatabaseError, Database
from .partitions import LOCK


class SchemaTooNew(CentreDatabaseError):
    """The database was migrated by a newer vipsense than this one."""


@attrs.frozen
class Step:
    """One migration: ``apply(conn, dialect)`` changes the database; returns what it changed."""

    version: int
    name: str
    apply: Callable[[Connection, str], list[str]]


def _create_tables(conn: Connection, dialect: str) -> list[str]:
    """Version 1: every table of the schema; PostgreSQL's form partitions visits and deliveries."""
    metadata = schema.build(partitioned=dialect == "postgresql")
    have = set(inspect(conn).get_table_names())
    made = [t.name for t in metadata.sorted_tables if t.name not in have]
    metadata.create_all(conn, checkfirst=True)
    return made


def _add_columns(conn: Connection, added_in: dict[str, Any]) -> list[str]:
    """Add the columns of ``added_in`` (table -> the function giving its new columns) that a table
    lacks, each as SQLAlchemy writes its definition (type, default, NOT NULL) for this dialect; a
    column the table has already (a newer step 1 made it) is left alone."""
    inspector = inspect(conn)
    added = []
    for table, columns in added_in.items():
        have = {c["name"] for c in inspector.get_columns(table)}
        for column in columns():
            if column.name not in have:
                definition = CreateColumn(column).compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {definition}")
                added.append(f"{table}.{column.name}")
    return added


def _identity_columns(conn: Connection, dialect: str) -> list[str]:
    """Version 2: the columns the central identity store needs (a whole customer, card and history
    entry, as a branch has them) and the index of the ID numbers' blind index.  Checks first: a
    database that a newer step 1 made has them already and is left unchanged."""
    added = _add_columns(conn, schema.ADDED_IN_2)
    inspector = inspect(conn)
    if "customers_id_index" not in {i["name"] for i in inspector.get_indexes("customers")}:
        conn.exec_driver_sql("CREATE INDEX customers_id_index ON customers (id_index)")
        added.append("index customers_id_index")
    return added


def _ingest_columns(conn: Connection, dialect: str) -> list[str]:
    """Version 3: what the ingest needs (branch keys, stream positions, the branch's report time,
    change sequence numbers).  Checks first, like version 2; on PostgreSQL a column added to a
    partitioned table reaches every partition."""
    return _add_columns(conn, schema.ADDED_IN_3)


def _branch_days(conn: Connection, dialect: str) -> list[str]:
    """Version 4: ``branch_days``, the board's per-branch, per-day counts, filled from the visits
    held (each branch's days in its own zone).  Checks first, like version 2."""
    if "branch_days" in set(inspect(conn).get_table_names()):
        return []
    schema.branch_days.create(conn)
    from .days import recount_all

    recount_all(conn, dialect)
    return ["branch_days"]


def _audit_heads(conn: Connection, dialect: str) -> list[str]:
    """Version 5: ``audit_heads``, every audit chain head each branch reported, and the branch's alarm
    columns (:mod:`vipsense.centre.anchors`).  Checks first, like version 2."""
    added = []
    if not inspect(conn).has_table("audit_heads"):
        schema.audit_heads.create(conn)
        added.append("audit_heads")
    return added + _add_columns(conn, schema.ADDED_IN_5)


#: every step, oldest first; a step's version is its place in this list
STEPS: tuple[Step, ...] = (
    Step(1, "the centre's tables", _create_tables),
    Step(2, "the central identity store's columns", _identity_columns),
    Step(3, "the ingest's columns", _ingest_columns),
    Step(4, "the board's counts per branch and day", _branch_days),
    Step(5, "each branch's audit chain heads", _audit_heads),
)

#: the version this code brings a database to
LATEST = STEPS[-1].version


def version(db: Database) -> int:
    """The database's schema version: 0 for an empty database."""
    with db.begin() as conn:
        return _version(conn)


def _version(conn: Connection) -> int:
    if not inspect(conn).has_table("schema_version"):
        return 0
    return int(conn.execute(select(func.coalesce(func.max(schema.schema_version.c.version), 0))).scalar_one())


def _lock(conn: Connection, db: Database) -> None:
    """Only one process migrates at a time: PostgreSQL's advisory lock (SQLite: ``BEGIN IMMEDIATE``)."""
    if db.is_postgresql:
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({LOCK + 1})")


def _refuse_newer(found: int, db: Database) -> None:
    if found > LATEST:
        raise SchemaTooNew(
            _(
                "the centre's database {url} is at schema version {found}, newer than this vipsense "
                "knows ({latest}): upgrade vipsense before using it"
            ).format(url=db.url, found=found, latest=LATEST)
        )


def check(db: Database) -> int:
    """The database's version, after refusing one newer than this code (:class:`SchemaTooNew`)."""
    found = version(db)
    _refuse_newer(found, db)
    return found


def migrate(db: Database, months_ahead: int = 3, now: datetime | None = None) -> list[str]:
    """Run the steps the database has not had, each in one transaction, then make the monthly
    partitions from ``now``'s month to ``months_ahead`` after it (PostgreSQL).  Returns what changed:
    empty when nothing did."""
    changed: list[str] = []
    for step in STEPS:
        with db.begin(immediate=True) as conn:
            _lock(conn, db)
            found = _version(conn)
            _refuse_newer(found, db)
            if found >= step.version:
                continue
            changed += step.apply(conn, db.dialect)
            conn.execute(
                schema.schema_version.insert().values(
                    version=step.version, name=step.name, applied_at=datetime.now(timezone.utc)
                )
            )
            changed.append(f"schema version {step.version}: {step.name}")
    changed += db.ensure_partitions(months_ahead, now)
    return changed


__all__ = ["LATEST", "STEPS", "SchemaTooNew", "Step", "check", "migrate", "version"]
