"""The centre's database layer (issue 14, part 1) on both engines: SQLite, the embedded default, and a
real PostgreSQL cluster the session starts (``tests/postgres.py``).  Migrations, idempotent writes,
monthly partitions and retention, and the errors people see when the URL or the server is wrong."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect, select, text

from vipsense.centre import migrations, partitions, schema
from vipsense.centre.database import CentreDatabaseError, Database, open_database

from .postgres import new_database

UTC = timezone.utc
#: a fixed "now" for the migration's partitions: this month and three ahead are made
NOW = datetime(2026, 3, 15, 10, 0, tzinfo=UTC)
SECRET = "S3cret-pw-不要泄露"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request, tmp_path):
    """An empty centre database on each engine, closed afterwards."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'centre.db'}"
    else:
        url = new_database(request.getfixturevalue("postgres_url"))
    db = open_database(url)
    try:
        yield db
    finally:
        db.close()


@contextmanager
def migrated_postgres(cluster_url: str) -> Iterator[Database]:
    """An empty database in the session's PostgreSQL cluster, opened and migrated at :data:`NOW`."""
    db = open_database(new_database(cluster_url))
    try:
        migrations.migrate(db, now=NOW)
        yield db
    finally:
        db.close()


def with_branches(db: Database, *branch_ids: str) -> None:
    with db.begin() as conn:
        for branch_id in branch_ids:
            conn.execute(schema.branches.insert().values(branch_id=branch_id, name=branch_id, created_at=NOW))


def visit(visit_id: str, at: datetime, branch_id: str = "bj01", **extra: object) -> dict[str, object]:
    return {
        "branch_id": branch_id,
        "visit_id": visit_id,
        "arrived_at": at,
        "kind": "arrival",
        "epc": "E2000000000000000000000A",
        "customer_no": "C1",
        "tier": "gold",
        "reason": "greeted",
        **extra,
    }


def delivery(key: str, at: datetime, branch_id: str = "bj01") -> dict[str, object]:
    return {
        "branch_id": branch_id,
        "delivery_key": key,
        "created_at": at,
        "visit_id": "v1",
        "notifier_id": "pda",
        "recipient_id": "lm1",
        "state": "delivered",
    }


def layout(db: Database) -> dict[str, object]:
    """What a migration could change: tables, their columns and indexes, and (PostgreSQL) partitions
    and every relation in the schema."""
    with db.begin() as conn:
        inspector = inspect(conn)
        found: dict[str, object] = {
            t: (
                [c["name"] for c in inspector.get_columns(t)],
                sorted(str(i["name"]) for i in inspector.get_indexes(t)),
            )
            for t in sorted(inspector.get_table_names())
        }
        found["versions"] = conn.execute(select(schema.schema_version.c.version)).scalars().all()
        if db.is_postgresql:
            found["relations"] = sorted(
                conn.execute(
                    text("SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace")
                ).scalars()
            )
    return found


def visit_partitions(db: Database, table: str = "visits") -> list[str]:
    with db.begin() as conn:
        return sorted(
            conn.execute(
                text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = CAST(:t AS regclass)"
                ),
                {"t": table},
            ).scalars()
        )


def count(db: Database, table: str) -> int:
    with db.begin() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


# -- migrations --------------------------------------------------------------------------------------


def test_a_fresh_database_migrates_to_the_latest_version(database):
    assert migrations.version(database) == 0
    changed = migrations.migrate(database, now=NOW)
    assert migrations.version(database) == migrations.LATEST
    assert set(schema.metadata.tables) <= set(changed)
    with database.begin() as conn:
        assert set(inspect(conn).get_table_names()) >= set(schema.metadata.tables)
    if database.is_postgresql:
        # this month and three ahead, for both partitioned tables
        assert {"visits_p202603", "visits_p202606", "deliveries_p202604"} <= set(changed)


def test_migrating_again_changes_nothing(database):
    migrations.migrate(database, now=NOW)
    before = layout(database)
    assert migrations.migrate(database, now=NOW) == []
    assert layout(database) == before


def test_a_database_newer_than_the_code_is_refused(database):
    migrations.migrate(database, now=NOW)
    newer = migrations.LATEST + 1
    with database.begin() as conn:
        conn.execute(
            schema.schema_version.insert().values(version=newer, name="from the future", applied_at=NOW)
        )
    before = layout(database)
    with pytest.raises(migrations.SchemaTooNew) as refused:
        migrations.migrate(database, now=NOW)
    message = str(refused.value)
    assert f"schema version {newer}" in message and f"({migrations.LATEST})" in message
    assert "upgrade vipsense" in message
    assert refused.value.__cause__ is None
    with pytest.raises(migrations.SchemaTooNew):
        migrations.check(database)
    assert layout(database) == before


def test_a_failing_step_leaves_the_database_at_the_version_before(database, monkeypatch):
    """Each step is one transaction: a step that fails half-way leaves none of its tables."""

    def half_then_fail(conn, dialect):
        migrations._create_tables(conn, dialect)
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(migrations, "STEPS", (migrations.Step(1, "tables", half_then_fail),))
    with pytest.raises(RuntimeError):
        migrations.migrate(database, now=NOW)
    assert migrations.version(database) == 0
    with database.begin() as conn:
        assert inspect(conn).get_table_names() == []


# -- idempotent writes -------------------------------------------------------------------------------


def test_visits_and_deliveries_inserted_twice_count_once(database):
    migrations.migrate(database, now=NOW)
    with_branches(database, "bj01", "sz01")
    visits = [visit(f"v{i}", NOW + timedelta(minutes=i)) for i in range(3)]
    assert database.insert_visits(visits) == 3
    assert database.insert_visits(visits) == 0
    # a batch overlapping the last one: only the new visit counts; the same visit id at another
    # branch is another visit
    overlap = [*visits[1:], visit("v3", NOW + timedelta(hours=1)), visit("v0", NOW, branch_id="sz01")]
    assert database.insert_visits(overlap) == 2
    assert count(database, "visits") == 5
    deliveries = [delivery(f"pda:v{i}:lm1", NOW + timedelta(minutes=i)) for i in range(4)]
    assert database.insert_deliveries(deliveries) == 4
    assert database.insert_deliveries(deliveries[::-1]) == 0
    assert count(database, "deliveries") == 4
    with database.begin() as conn:
        first = conn.execute(select(schema.visits).where(schema.visits.c.visit_id == "v0")).first()
    assert first is not None and first.arrived_at == NOW and first.customer_no == "C1"


def test_a_time_without_a_zone_is_refused(database):
    migrations.migrate(database, now=NOW)
    with_branches(database, "bj01")
    with pytest.raises(Exception, match="naive datetime"):
        database.insert_visits([visit("v1", NOW.replace(tzinfo=None))])
    assert count(database, "visits") == 0


# -- retention ---------------------------------------------------------------------------------------


def test_retention_removes_old_months_and_keeps_newer_ones(database):
    migrations.migrate(database, now=NOW)
    with_branches(database, "bj01")
    old = datetime(2025, 11, 20, tzinfo=UTC)  # 2025-11: wholly before the cutoff
    edge = datetime(2026, 1, 5, tzinfo=UTC)  # the cutoff's month, before the cutoff
    new = datetime(2026, 2, 1, tzinfo=UTC)
    cutoff = datetime(2026, 1, 10, tzinfo=UTC)
    database.insert_visits([visit("old", old), visit("edge", edge), visit("new", new)])
    database.insert_deliveries([delivery("old", old), delivery("new", new)])
    with database.begin() as conn:
        for visit_id, at in (("old", old), ("new", new)):
            conn.execute(
                schema.acknowledgements.insert().values(
                    branch_id="bj01", visit_id=visit_id, staff_id="lm1", acknowledged_at=at, via="pda"
                )
            )
    removed = database.drop_before(cutoff)
    assert removed.rows["acknowledgements"] == 1 and count(database, "acknowledgements") == 1
    with database.begin() as conn:
        kept = sorted(conn.execute(select(schema.visits.c.visit_id)).scalars())
    if database.is_postgresql:
        # whole partitions go; the cutoff's month (January) stays whole
        assert removed.partitions == ("visits_p202511", "deliveries_p202511")
        assert kept == ["edge", "new"]
        assert "visits_p202511" not in visit_partitions(database)
        assert "visits_p202601" in visit_partitions(database)
    else:
        assert removed.partitions == ()
        assert removed.rows["visits"] == 2 and removed.rows["deliveries"] == 1
        assert kept == ["new"]
    assert count(database, "deliveries") == 1
    # and again: nothing more to remove
    again = database.drop_before(cutoff)
    assert again.partitions == () and not any(again.rows.values())


# -- PostgreSQL only: partitions and indexes --------------------------------------------------------


@pytest.mark.postgres
def test_monthly_partitions_exist_from_this_month_ahead(postgres_url):
    with migrated_postgres(postgres_url) as postgres_database:
        assert visit_partitions(postgres_database) == [f"visits_p2026{m:02d}" for m in (3, 4, 5, 6)]
        assert visit_partitions(postgres_database, "deliveries") == [
            f"deliveries_p2026{m:02d}" for m in (3, 4, 5, 6)
        ]
        # a later month's migration makes the months it is missing, nothing else
        made = migrations.migrate(postgres_database, months_ahead=1, now=datetime(2026, 6, 2, tzinfo=UTC))
        assert made == ["visits_p202607", "deliveries_p202607"]


@pytest.mark.postgres
def test_a_visit_in_a_month_without_a_partition_makes_it_on_demand(postgres_url):
    """No default partition: a month a batch reaches first (a backlog from before the centre, a
    clock far off) gets its partition in the same transaction as the write."""
    with migrated_postgres(postgres_url) as postgres_database:
        with_branches(postgres_database, "bj01")
        long_ago = datetime(2024, 7, 31, 23, 59, tzinfo=UTC)
        assert postgres_database.insert_visits([visit("backlog", long_ago)]) == 1
        assert "visits_p202407" in visit_partitions(postgres_database)
        with postgres_database.begin() as conn:
            where = conn.execute(
                text("SELECT tableoid::regclass::text FROM visits WHERE visit_id = 'backlog'")
            ).scalar_one()
            defaults = conn.execute(
                text(
                    "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT'"
                )
            ).scalar_one()
        assert where == "visits_p202407" and defaults == 0
        # a month dropped behind this process's back (another centre process's retention) is made again
        with postgres_database.begin() as conn:
            conn.exec_driver_sql("DROP TABLE visits_p202407")
        assert postgres_database.insert_visits([visit("again", long_ago)]) == 1


@pytest.mark.postgres
def test_brin_and_report_indexes_exist(postgres_url):
    with migrated_postgres(postgres_url) as postgres_database:
        with postgres_database.begin() as conn:
            indexes = dict(
                conn.execute(
                    text(
                        "SELECT indexname, indexdef FROM pg_indexes "
                        "WHERE tablename IN ('visits', 'deliveries')"
                    )
                ).all()
            )
            partition_indexes = (
                conn.execute(text("SELECT indexdef FROM pg_indexes WHERE tablename = 'visits_p202603'"))
                .scalars()
                .all()
            )
        assert "USING brin (arrived_at)" in indexes["visits_arrived_brin"]
        assert "USING brin (created_at)" in indexes["deliveries_created_brin"]
        assert "(branch_id, arrived_at)" in indexes["visits_branch_time"]
        assert "(customer_no, arrived_at)" in indexes["visits_customer_time"]
        # the partitioned parent's indexes are made on each partition too
        assert any("USING brin (arrived_at)" in d for d in partition_indexes)
        assert any("(customer_no, arrived_at)" in d for d in partition_indexes)


def test_partition_names_and_bounds_are_utc_months():
    assert partitions.month_of(datetime(2026, 1, 1, 7, 59, tzinfo=timezone(timedelta(hours=8)))).month == 12
    assert partitions.months(datetime(2026, 11, 3).date(), 3)[-1].isoformat() == "2027-01-01"
    assert partitions.name("visits", datetime(2027, 1, 1).date()) == "visits_p202701"


# -- errors people see -------------------------------------------------------------------------------


@pytest.fixture
def refused_port():
    """A loopback port nothing listens on: bound, so nobody else takes it meanwhile, never listening."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])


def test_an_unreachable_server_is_a_clear_error_without_the_password(refused_port):
    port = refused_port
    url = f"postgresql+psycopg://vipsense:{SECRET}@127.0.0.1:{port}/centre"
    with pytest.raises(CentreDatabaseError) as failed:
        open_database(url)
    message = str(failed.value)
    assert message.startswith(
        "cannot reach the centre's database postgresql+psycopg://vipsense:***@127.0.0.1"
    )
    assert str(port) in message and "refused" in message.lower()
    assert SECRET not in message and "Traceback" not in message
    assert failed.value.__cause__ is None and failed.value.__suppress_context__


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("centre.db", "is not a database URL"),
        ("mysql://vipsense:{secret}@db.example/centre", "must be SQLite or PostgreSQL, not mysql"),
        ("postgresql+asyncpg://vipsense:{secret}@127.0.0.1/centre", "through psycopg 3"),
        ("sqlite:///{tmp}/no/such/folder/centre.db", "folder of the centre's database does not exist"),
        ("sqlite://", "needs a file"),
        ("sqlite:///{tmp}", "cannot open the centre's database"),  # a folder, not a file
    ],
)
def test_a_wrong_url_is_a_clear_error(tmp_path, url, expected):
    with pytest.raises(CentreDatabaseError, match=expected) as failed:
        open_database(url.format(secret=SECRET, tmp=tmp_path))
    assert SECRET not in str(failed.value)


@pytest.mark.postgres
def test_the_password_is_never_in_repr_or_logs(postgres_url, caplog):
    """The test cluster trusts every local connection, so any password works: the URL carries one."""
    url = new_database(postgres_url).replace("postgres@", f"postgres:{SECRET}@")
    caplog.set_level(logging.DEBUG)
    for name in ("sqlalchemy.engine", "sqlalchemy.pool", "psycopg", "psycopg.pool"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        db = open_database(url)
        try:
            migrations.migrate(db, now=NOW)
            with_branches(db, "bj01")
            db.insert_visits([visit("v1", NOW), visit("v2", datetime(2020, 1, 1, tzinfo=UTC))])
            db.drop_before(datetime(2021, 1, 1, tzinfo=UTC))
            shown = [repr(db), str(db.url), repr(db.engine), str(db.engine.url)]
        finally:
            db.close()
    finally:
        for name in ("sqlalchemy.engine", "sqlalchemy.pool", "psycopg", "psycopg.pool"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    assert "centre database: opened postgresql+psycopg://postgres:***@/" in caplog.text
    assert "made partitions on demand: visits_p202001" in caplog.text
    for text_shown in [*shown, caplog.text]:
        assert SECRET not in text_shown
    assert "***" in repr(db)


@pytest.mark.postgres
def test_a_pooled_connection_is_checked_only_after_it_was_idle(postgres_url, monkeypatch):
    """Checking every connection the pool lends cost the ingest a round trip per batch: to a caller
    that retries (``begin(retried=True)``, the ingest) one back within ``CHECK_IDLE`` is lent as it
    is, one idle longer is checked, and one the server dropped meanwhile is replaced, not handed out
    broken; every other caller (a page, a command) always gets a checked one."""
    import psycopg
    from psycopg_pool import ConnectionPool

    from vipsense.centre import database as database_module

    checked: list[object] = []
    real = ConnectionPool.check_connection

    def counting(conn: object) -> None:
        checked.append(conn)
        real(conn)  # type: ignore[arg-type]

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counting))
    monkeypatch.setattr(database_module, "CHECK_IDLE", 0.2)
    db = open_database(new_database(postgres_url), database_module.PoolSettings(min_size=1, max_size=1))
    try:

        def backend(retried: bool = True) -> int:
            with db.begin(retried=retried) as conn:
                return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())

        first = backend()
        checked.clear()
        assert backend() == first and checked == []  # just back: lent without a round trip
        assert backend(retried=False) == first and len(checked) == 1  # a page's: checked all the same
        time.sleep(0.3)
        assert backend() == first and len(checked) == 2  # idle: checked, and fine
        # the server drops it while it is idle: the check finds out and the pool lends a new one
        params = dict(p.split("=", 1) for p in postgres_url.partition("?")[2].split("&") if p)
        with psycopg.connect(
            host=params["host"], port=params["port"], user="postgres", dbname="postgres"
        ) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [first])
        time.sleep(0.3)
        assert backend() != first
        # dropped just after it came back: a page's transaction is still given a working one
        second = backend()
        with psycopg.connect(
            host=params["host"], port=params["port"], user="postgres", dbname="postgres"
        ) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [second])
        assert backend(retried=False) != second
    finally:
        db.close()
