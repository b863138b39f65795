"""The centre's tables, written once in SQLAlchemy Core for both engines.

:data:`metadata` is the logical schema the queries use.  :func:`build` makes it, and with
``partitioned=True`` makes PostgreSQL's form of it: ``visits`` and ``deliveries`` partitioned by
month on their time column (``PARTITION BY RANGE``).  PostgreSQL requires the partition key in every
unique constraint of a partitioned table, so there their primary keys also carry the time: a replayed
visit carries the time it was first sent with, so ``(branch_id, visit_id)`` stays the key in effect.

Times are ``timestamptz`` on PostgreSQL; SQLite has no such type, so :class:`UtcDateTime` stores UTC
and gives back aware datetimes on both.  Visits carry customer numbers, never ID numbers: the centre
holds customers (and their encrypted numbers) once, in ``customers``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    TypeDecorator,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

#: the partitioned tables and the column each is partitioned on
PARTITIONED = {"visits": "arrived_at", "deliveries": "created_at"}


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime in, an aware UTC datetime out, on both engines: a naive one is refused,
    since a branch's local time without its zone would land in the wrong hour (and partition)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: the centre stores aware times only")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite: stored as UTC
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class unix_seconds(FunctionElement[float]):  # an SQL function, named as one
    """A time column as unix seconds (a float), computed by the database: reading thousands of
    datetimes only to call ``timestamp()`` on each cost the board more than its queries."""

    type = Float()
    inherit_cache = True


@compiles(unix_seconds, "postgresql")
def _unix_seconds_postgresql(element: unix_seconds, compiler: Any, **kw: Any) -> str:
    return f"date_part('epoch', {compiler.process(element.clauses, **kw)})"  # double precision


@compiles(unix_seconds, "sqlite")
def _unix_seconds_sqlite(element: unix_seconds, compiler: Any, **kw: Any) -> str:
    # stored as UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff' (UtcDateTime): whole seconds by strftime,
    # the microseconds from the text (SQLite's date functions keep milliseconds only)
    column = compiler.process(element.clauses, **kw)
    return f"(CAST(strftime('%s', {column}) AS REAL) + CAST(substr({column}, 20) AS REAL))"


#: row ids that count up: BIGINT on PostgreSQL, SQLite's INTEGER PRIMARY KEY (the rowid) there
RowId = BigInteger().with_variant(Integer(), "sqlite")


def _partitioned(table: str, partitioned: bool) -> dict[str, Any]:
    return {"postgresql_partition_by": f"RANGE ({PARTITIONED[table]})"} if partitioned else {}


def customer_columns() -> list[Column[Any]]:
    """What a branch's customer has beyond part 1's columns (schema version 2: the central identity
    store keeps the whole customer); ``id_index`` is the ID number's blind index (an HMAC)."""
    return [
        Column("company", Text),
        Column("usual_business", Text),
        Column("consent", Boolean),  # NULL: not recorded, which counts as no consent
        Column("consent_date", Date),
        Column("id_index", LargeBinary),
    ]


def card_columns() -> list[Column[Any]]:
    """What a branch's card has beyond part 1's columns (schema version 2)."""
    return [
        Column("tier", Text),
        Column("valid_from", Date),
        Column("valid_until", Date),  # inclusive
        Column("allowed_branches", Text, nullable=False, server_default=""),  # comma-separated
        Column("last_seen_branch", Text),
        Column("last_seen_at", Float),  # wall-clock UNIX time
    ]


def card_event_columns() -> list[Column[Any]]:
    """What a card's history entry has beyond part 1's columns (schema version 2)."""
    return [Column("detail", Text, nullable=False, server_default="")]


#: the columns schema version 2 adds, per table (a database made by version 1 gets them by ALTER)
ADDED_IN_2 = {"customers": customer_columns, "cards": card_columns, "card_events": card_event_columns}


def branch_ingest_columns() -> list[Column[Any]]:
    """What the ingest keeps per branch (schema version 3): its key, sealed with the centre's key;
    the last change sequence number applied per stream (the branch resends from there); the
    branch's own clock at its last report; its backlog and version from its last heartbeat."""
    return [
        Column("key_enc", LargeBinary),
        Column("visits_position", BigInteger, nullable=False, server_default="0"),
        Column("deliveries_position", BigInteger, nullable=False, server_default="0"),
        Column("reported_at", UtcDateTime),
        # from the last heartbeat: rows the branch had not yet had taken, and its vipsense version
        Column("backlog_visits", BigInteger),
        Column("backlog_deliveries", BigInteger),
        Column("version", Text),
    ]


def change_seq_columns() -> list[Column[Any]]:
    """The branch's change sequence number of the state held (schema version 3): an upsert only
    replaces a row with a newer state, so a batch resent out of order cannot undo a later one."""
    return [Column("change_seq", BigInteger, nullable=False, server_default="0")]


#: the columns schema version 3 adds, per table
ADDED_IN_3 = {
    "branches": branch_ingest_columns,
    "visits": change_seq_columns,
    "deliveries": change_seq_columns,
}


def branch_alarm_columns() -> list[Column[Any]]:
    """What the centre found wrong with a branch's audit chain (schema version 5,
    :mod:`vipsense.centre.anchors`): one English sentence and when, kept until someone clears it."""
    return [Column("audit_alarm", Text), Column("audit_alarm_at", UtcDateTime)]


#: the columns schema version 5 adds, per table (with the table ``audit_heads``)
ADDED_IN_5 = {"branches": branch_alarm_columns}


def build(partitioned: bool = False) -> MetaData:
    """The whole schema; ``partitioned`` gives PostgreSQL's form (see the module's docstring)."""
    md = MetaData()

    # A branch of the bank: the unit that reports, is keyed and is shown on the board.  The last
    # heartbeat, its clock offset and its audit chain head are kept here, one row per branch, so
    # the board reads one small table (parts 3 and 4 of issue 14 write them).
    Table(
        "branches",
        md,
        Column("branch_id", Text, primary_key=True),
        Column("name", Text, nullable=False),
        Column("timezone", Text, nullable=False, server_default="Asia/Shanghai"),
        Column("created_at", UtcDateTime, nullable=False),
        Column("revoked_at", UtcDateTime),  # a revoked branch's reports are refused
        Column("last_heartbeat_at", UtcDateTime),
        Column("clock_offset_s", Float),  # the branch's clock minus the centre's, at its last report
        Column("audit_head", Text),  # the branch's audit chain head, as last reported
        *branch_ingest_columns(),
        *branch_alarm_columns(),
    )

    # Staff across the bank: a bank-wide staff id; branch_id is NULL for head office.
    Table(
        "staff",
        md,
        Column("staff_id", Text, primary_key=True),
        Column("branch_id", Text, ForeignKey("branches.branch_id")),
        Column("name", Text, nullable=False),
        Column("role", Text, nullable=False),  # lobby_manager, client_manager, branch_manager, ...
        Column("active", Boolean, nullable=False, server_default=true()),
    )

    # Customers, once for the whole bank.  ID and mobile numbers only encrypted (vipsense.crypto, as
    # at the branch); nothing else in the centre carries them.
    Table(
        "customers",
        md,
        Column("customer_no", Text, primary_key=True),
        Column("name", Text, nullable=False),
        Column("tier", Text, nullable=False),
        Column("client_manager", Text),  # a staff id
        Column("home_branch_id", Text, ForeignKey("branches.branch_id")),
        Column("id_number_enc", LargeBinary),
        Column("mobile_enc", LargeBinary),
        Column("updated_at", UtcDateTime, nullable=False),
        *customer_columns(),
        Index("customers_id_index", "id_index"),
    )

    # Each card's current state (part 2's card registry reads and writes it).
    Table(
        "cards",
        md,
        Column("epc", Text, primary_key=True),
        Column("tid", Text),
        Column("customer_no", Text, ForeignKey("customers.customer_no"), nullable=False),
        Column("status", Text, nullable=False),  # active, lost, revoked, replaced
        Column("issued_at", UtcDateTime, nullable=False),
        Column("updated_at", UtcDateTime, nullable=False),
        *card_columns(),
        Index("cards_customer", "customer_no"),
    )

    # Cards' history: every issue, loss, revocation and reissue, appended, never updated.
    Table(
        "card_events",
        md,
        Column("event_id", RowId, primary_key=True, autoincrement=True),
        Column("epc", Text, nullable=False),
        Column("customer_no", Text, nullable=False),
        Column("event", Text, nullable=False),  # issued, lost, revoked, reissued, replaced
        Column("at", UtcDateTime, nullable=False),
        Column("staff_id", Text),
        Column("station", Text),  # the card-issuing station, or the branch that did it
        Column("reason", Text),
        *card_event_columns(),
        Index("card_events_epc", "epc", "at"),
    )

    # Every arrival a branch reports: the biggest table, partitioned by month on PostgreSQL.  Keyed
    # by the branch's own visit id, so a replayed batch changes nothing.  customer_no, never an ID
    # number; kind is arrival/re-entry, reason why it was greeted or refused, tier at the time.
    Table(
        "visits",
        md,
        Column("branch_id", Text, ForeignKey("branches.branch_id"), nullable=False),
        Column("visit_id", Text, nullable=False),
        Column("arrived_at", UtcDateTime, nullable=False),
        Column("kind", Text, nullable=False),
        Column("epc", Text, nullable=False),
        Column("customer_no", Text),  # NULL for a card no store knew
        Column("tier", Text),
        Column("reason", Text),
        Column("reader_id", Text),
        Column("departed_at", UtcDateTime),
        Column("acknowledged_at", UtcDateTime),
        Column("acknowledged_by", Text),
        Column("received_at", UtcDateTime, nullable=False),  # the centre's clock: lateness, skew
        *change_seq_columns(),
        PrimaryKeyConstraint(
            "branch_id", "visit_id", *(["arrived_at"] if partitioned else []), name="visits_pkey"
        ),
        # reports: one branch over time, one customer over time; BRIN on time for range scans
        Index("visits_branch_time", "branch_id", "arrived_at"),
        Index("visits_customer_time", "customer_no", "arrived_at"),
        Index("visits_arrived_brin", "arrived_at", postgresql_using="brin"),
        **_partitioned("visits", partitioned),
    )

    # Each notification a branch sent (its outbox): keyed by the branch's delivery key (notifier id
    # and the outbox key), partitioned by month like visits.
    Table(
        "deliveries",
        md,
        Column("branch_id", Text, ForeignKey("branches.branch_id"), nullable=False),
        Column("delivery_key", Text, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("visit_id", Text, nullable=False),
        Column("notifier_id", Text, nullable=False),
        Column("recipient_id", Text, nullable=False),
        Column("state", Text, nullable=False),  # delivered, acknowledged, failed, expired, ...
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("delivered_at", UtcDateTime),
        Column("acknowledged_at", UtcDateTime),
        Column("finished_at", UtcDateTime),
        Column("escalated_from", Text),
        *change_seq_columns(),
        PrimaryKeyConstraint(
            "branch_id",
            "delivery_key",
            *(["created_at"] if partitioned else []),
            name="deliveries_pkey",
        ),
        Index("deliveries_visit", "branch_id", "visit_id"),
        Index("deliveries_created_brin", "created_at", postgresql_using="brin"),
        **_partitioned("deliveries", partitioned),
    )

    # Who acknowledged which visit, how and when (response times); small, one row per staff
    # member and visit, so not partitioned: retention deletes its rows with the months dropped.
    Table(
        "acknowledgements",
        md,
        Column("branch_id", Text, ForeignKey("branches.branch_id"), nullable=False),
        Column("visit_id", Text, nullable=False),
        Column("staff_id", Text, nullable=False),
        Column("acknowledged_at", UtcDateTime, nullable=False),
        Column("via", Text, nullable=False),  # pda, web
        Column("delivery_key", Text),
        PrimaryKeyConstraint("branch_id", "visit_id", "staff_id", name="acknowledgements_pkey"),
        Index("acknowledgements_time", "acknowledged_at"),
    )

    # Card sightings: a card seen at a branch's reader (a lost card turning up elsewhere).
    Table(
        "sightings",
        md,
        Column("branch_id", Text, ForeignKey("branches.branch_id"), nullable=False),
        Column("epc", Text, nullable=False),
        Column("reader_id", Text, nullable=False),
        Column("seen_at", UtcDateTime, nullable=False),
        Column("read_count", Integer, nullable=False, server_default="1"),
        Column("peak_rssi", Float),
        PrimaryKeyConstraint("branch_id", "epc", "reader_id", "seen_at", name="sightings_pkey"),
        Index("sightings_epc_time", "epc", "seen_at"),
    )

    # Each branch's arrivals per day of its own zone (schema version 4): the board's figures, recounted
    # from visits by the ingest in the transaction that writes them, so the board of 1,000 branches
    # reads 1,000 rows rather than aggregating the day's visits (issue 14 part 7).
    Table(
        "branch_days",
        md,
        Column("branch_id", Text, ForeignKey("branches.branch_id"), nullable=False),
        Column("day", Date, nullable=False),  # the branch's local date
        Column("arrivals", Integer, nullable=False),
        Column("greeted", Integer, nullable=False),
        Column("rejected", Integer, nullable=False),
        Column("suspect", Integer, nullable=False),
        Column("last_arrival_at", UtcDateTime),
        PrimaryKeyConstraint("branch_id", "day", name="branch_days_pkey"),
    )

    # Every audit chain head each branch reported (schema version 5): the branch's log must still hold
    # each of them, so a log rewritten or cut short after it reported is caught (vipsense.centre.anchors).
    Table(
        "audit_heads",
        md,
        Column("branch_id", Text, ForeignKey("branches.branch_id"), nullable=False),
        Column("seq", BigInteger, nullable=False),
        Column("hash", Text, nullable=False),
        Column("reported_at", UtcDateTime, nullable=False),  # the centre's clock
        PrimaryKeyConstraint("branch_id", "seq", name="audit_heads_pkey"),
    )

    # Each device's last reported state (the board's devices column): one row per device,
    # overwritten by each heartbeat; history is in the branch's own status.
    Table(
        "device_status",
        md,
        Column("branch_id", Text, ForeignKey("branches.branch_id"), nullable=False),
        Column("kind", Text, nullable=False),  # reader, store, notifier, pda
        Column("device_id", Text, nullable=False),
        Column("state", Text, nullable=False),  # vipsense.states
        Column("reason", Text),
        Column("updated_at", UtcDateTime, nullable=False),
        PrimaryKeyConstraint("branch_id", "kind", "device_id", name="device_status_pkey"),
    )

    # The centre's own audit log, hash-chained like the branch's: who saw or changed what.
    Table(
        "audit",
        md,
        Column("seq", RowId, primary_key=True, autoincrement=True),
        Column("at", UtcDateTime, nullable=False),
        Column("actor", Text, nullable=False),
        Column("action", Text, nullable=False),
        Column("target", Text),
        Column("detail", Text),  # JSON
        Column("prev_hash", Text, nullable=False),
        Column("hash", Text, nullable=False),
        Index("audit_time", "at"),
    )

    # Which migrations ran (vipsense.centre.migrations): one row per step.
    Table(
        "schema_version",
        md,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("name", Text, nullable=False),
        Column("applied_at", UtcDateTime, nullable=False),
    )
    return md


metadata = build()
branches = metadata.tables["branches"]
staff = metadata.tables["staff"]
customers = metadata.tables["customers"]
cards = metadata.tables["cards"]
card_events = metadata.tables["card_events"]
visits = metadata.tables["visits"]
deliveries = metadata.tables["deliveries"]
acknowledgements = metadata.tables["acknowledgements"]
sightings = metadata.tables["sightings"]
device_status = metadata.tables["device_status"]
branch_days = metadata.tables["branch_days"]
audit_heads = metadata.tables["audit_heads"]
audit = metadata.tables["audit"]
schema_version = metadata.tables["schema_version"]

__all__ = [
    "ADDED_IN_2",
    "ADDED_IN_3",
    "ADDED_IN_5",
    "PARTITIONED",
    "UtcDateTime",
    "acknowledgements",
    "audit",
    "audit_heads",
    "branch_days",
    "branches",
    "build",
    "card_events",
    "cards",
    "customers",
    "deliveries",
    "device_status",
    "metadata",
    "schema_version",
    "sightings",
    "staff",
    "unix_seconds",
    "visits",
]
