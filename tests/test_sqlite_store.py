"""The SQLite identity store's bulk CSV import and lookups, on real SQLite files (small data: the
million-row figures come from bench/stores.py)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vipsense.api import PluginContext
from vipsense.clock import Clock
from vipsense.model import Card, CardStatus, Customer
from vipsense.output import Output
from vipsense.plugins.stores.sqlite import (
    CUSTOMER_COLUMNS,
    MAX_REASONS,
    CsvImportError,
    ProgressBar,
    RejectedRow,
    SeedError,
    SqliteSettings,
    SqliteStore,
    import_csv,
)

CUSTOMERS_CSV = """\
customer_no,name,company,id_number,mobile,usual_business,tier,client_manager
C1,王小明,华兴贸易有限公司,11010119900307123X,13812345678,对公结算,gold,cm1
C2,,Acme,,,,,
C3,Ada Wong,,,013800000000,,0007,
,No Number,,,,,,

C4,"Lee, Bo","multi
line company",,,,platinum,
C5,Too Few
C6,   ,,,,,,
C7,Zoë O'Brien,,,,,diamond,cm2
"""


def make_store(tmp_path: Path, seed: tuple[str, ...] = ()) -> SqliteStore:
    ctx = PluginContext(
        branch_id="t",
        branch_name="T",
        item_id="local",
        data_dir=tmp_path,
        profile_dir=tmp_path,
        clock=Clock(),
        output=Output(live=False),
        log=logging.getLogger("test"),
    )
    store = SqliteStore(SqliteSettings(path=str(tmp_path / "id.sqlite3"), seed=seed), ctx)
    store.open()
    return store


@pytest.fixture
def store(tmp_path):
    s = make_store(tmp_path)
    yield s
    s.close()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def count(db: sqlite3.Connection, table: str) -> int:
    return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_import_keeps_good_rows_and_reports_bad_ones_by_line(store, tmp_path):
    result = import_csv(store.db, write(tmp_path, "c.csv", CUSTOMERS_CSV))
    assert result.kind == "customers"
    assert result.rows == 8  # the blank line is not a row
    assert result.upserted == 4
    assert result.rejected == 4
    assert result.reasons == [
        RejectedRow(3, "name: required"),
        RejectedRow(5, "customer_no: required"),
        RejectedRow(9, "2 fields, the header has 8"),  # C4's quoted company spans lines 7-8
        RejectedRow(10, "name: required"),
    ]
    assert count(store.db, "customers") == 4
    ming = store.find_customer("C1")
    assert ming == Customer(
        customer_no="C1",
        name="王小明",
        company="华兴贸易有限公司",
        id_number="11010119900307123X",
        mobile="13812345678",
        usual_business="对公结算",
        tier="gold",
        client_manager="cm1",
    )
    ada = store.find_customer("C3")
    assert (ada.mobile, ada.tier, ada.company) == ("013800000000", "0007", None)  # text, zeros kept
    assert store.find_customer("C4").company == "multi\nline company"
    assert store.find_customer("C7").name == "Zoë O'Brien"
    assert store.find_customer("C2") is None


def test_only_the_first_reasons_are_kept_but_all_rejections_counted(store, tmp_path):
    lines = ["customer_no,name"] + [f"B{i}," for i in range(MAX_REASONS + 5)] + ["OK,Fine"]
    result = import_csv(store.db, write(tmp_path, "c.csv", "\n".join(lines) + "\n"))
    assert result.rejected == MAX_REASONS + 5
    assert len(result.reasons) == MAX_REASONS
    assert result.reasons[-1].line == MAX_REASONS + 1
    assert store.find_customer("OK").name == "Fine"


def test_invalid_utf8_rejects_that_row_only(store, tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b"customer_no,name\nC1,Good\nC2,Bad\xff\xfe\nC3,Also good\n")
    result = import_csv(store.db, path)
    assert result.reasons == [RejectedRow(3, "not valid UTF-8")]
    assert [store.find_customer(c) is not None for c in ("C1", "C2", "C3")] == [True, False, True]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("customer_no,name,nickname", "unknown column 'nickname'"),
        ("customer_no,name,name", "column 'name' appears twice"),
        ("customer_no,tier", "missing column 'name'"),
        ("epc,status", "missing column 'customer_no'"),
    ],
)
def test_a_bad_header_refuses_the_file_before_writing(store, tmp_path, header, message):
    path = write(tmp_path, "c.csv", f"{header}\n" + "C1,x,y\n" * 3)
    calls = []
    with pytest.raises(CsvImportError, match=message) as err:
        import_csv(store.db, path, lambda done, total: calls.append(done))
    assert ":1:" in str(err.value)
    assert count(store.db, "customers") == 0
    assert count(store.db, "cards") == 0
    assert calls == []


def test_reimport_upserts_without_duplicates_and_keeps_other_columns(store, tmp_path):
    import_csv(store.db, write(tmp_path, "a.csv", "customer_no,name,tier\nC1,Ada,gold\nC2,Bo,gold\n"))
    store.db.execute("UPDATE customers SET photo = x'FFD8', photo_mime = 'image/jpeg' WHERE customer_no='C1'")
    store.db.commit()
    result = import_csv(store.db, write(tmp_path, "b.csv", "customer_no,name\nC1,Ada Wong\nC3,Cy\n"))
    assert result.upserted == 2
    assert count(store.db, "customers") == 3
    ada = store.find_customer("C1")
    assert (ada.name, ada.tier, ada.photo.data) == ("Ada Wong", "gold", b"\xff\xd8")


def test_progress_counts_increase_to_the_total(store, tmp_path):
    lines = ["customer_no,name"] + [f"C{i},N{i}" for i in range(1050)] + ["bad,"]
    calls: list[tuple[int, int]] = []
    result = import_csv(
        store.db, write(tmp_path, "c.csv", "\n".join(lines)), lambda d, t: calls.append((d, t)), batch=100
    )
    assert result.rows == 1051
    dones = [d for d, _ in calls]
    assert len(calls) >= 10
    assert dones == sorted(dones)
    assert all(t == 1051 for _, t in calls)
    assert calls[-1] == (1051, 1051)


def test_import_restores_synchronous(store, tmp_path):
    before = store.db.execute("PRAGMA synchronous").fetchone()[0]
    import_csv(store.db, write(tmp_path, "c.csv", "customer_no,name\nC1,A\n"))
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == before != 0


CARDS_CSV = """\
epc,customer_no,status,valid_from,valid_until,allowed_branches,tid
e20000000000000000000001,C1,,2024-01-01,2030-12-31,SZ001;SZ002,E2003412
E20000000000000000000002,C1,lost,,,,
E2000000000000000000000Z,C1,,,,,
E20000000000000000000003,C1,stolen,,,,
E20000000000000000000004,C1,,2024-02-30,,,
E20000000000000000000005,,,,,,
"""


def test_cards_import_and_lookup(store, tmp_path):
    import_csv(store.db, write(tmp_path, "c.csv", CUSTOMERS_CSV))
    result = import_csv(store.db, write(tmp_path, "cards.csv", CARDS_CSV))
    assert result.kind == "cards"
    assert result.upserted == 2
    assert [(r.line, r.reason.split(":")[0]) for r in result.reasons] == [
        (4, "epc"),
        (5, "status"),
        (6, "valid_from"),
        (7, "customer_no"),
    ]
    card = store.find_card("E20000000000000000000001")
    assert card == Card(
        epc="E20000000000000000000001",
        customer_no="C1",
        status=CardStatus.ACTIVE,
        valid_from=dt.date(2024, 1, 1),
        valid_until=dt.date(2030, 12, 31),
        allowed_branches=("SZ001", "SZ002"),
        tid="E2003412",
    )
    assert store.find_card("e20000000000000000000002").status is CardStatus.LOST
    assert store.find_customer(card.customer_no).name == "王小明"


def plan(db: sqlite3.Connection, sql: str) -> str:
    return " | ".join(row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + sql, ("x",)))


def test_lookups_use_the_primary_keys_and_the_id_number_index(store):
    from vipsense.plugins.stores.sqlite import FIND_CARD_SQL, FIND_CUSTOMER_SQL

    card_plan = plan(store.db, FIND_CARD_SQL)
    customer_plan = plan(store.db, FIND_CUSTOMER_SQL)
    id_plan = plan(store.db, "SELECT customer_no FROM customers WHERE id_number = ?")
    assert "USING INDEX sqlite_autoindex_cards_1 (epc=?)" in card_plan, card_plan
    assert "USING INDEX sqlite_autoindex_customers_1 (customer_no=?)" in customer_plan, customer_plan
    assert "USING INDEX customers_id_number (id_number=?)" in id_plan, id_plan
    for p in (card_plan, customer_plan, id_plan):
        assert not p.startswith("SCAN"), p


def test_hostile_keys_are_parameters_not_sql(store, tmp_path):
    import_csv(store.db, write(tmp_path, "c.csv", CUSTOMERS_CSV))
    for key in ("x' OR '1'='1", "'; DROP TABLE customers; --", "C1' --"):
        assert store.find_customer(key) is None
        assert store.find_card(key) is None
    assert count(store.db, "customers") == 4
    assert store.find_customer("C1").name == "王小明"


def test_progress_bar_on_a_pipe_writes_a_line_per_tenth():
    out = io.StringIO()
    bar = ProgressBar(out)
    for done in range(0, 1_000_001, 10_000):
        bar(done, 1_000_000)
    bar(1_000_000, 1_000_000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[4].startswith("[###############               ] 500,000/1,000,000 rows  ")
    assert lines[-1].startswith("[" + "#" * 30 + "] 1,000,000/1,000,000 rows")
    assert "\r" not in out.getvalue()


def test_progress_bar_on_a_terminal_redraws_one_line():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    bar = ProgressBar(out, min_interval=0.0)
    bar(512_000, 1_000_000)
    bar(1_000_000, 1_000_000)
    text = out.getvalue()
    assert text.startswith("\r[###############               ] 512,000/1,000,000 rows  ")
    assert text.count("\r") == 2
    assert text.endswith(" rows/s\n")


# -- property: whatever text a bank's export holds comes back exactly ---------------------------------

required = st.text(min_size=1).filter(lambda s: s.strip() != "")
optional = st.one_of(st.just(""), st.text(min_size=1))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(required, required, optional, optional, optional, optional, optional, optional),
        min_size=1,
        max_size=5,
        unique_by=lambda r: r[0],
    )
)
def test_arbitrary_unicode_round_trips(tmp_path_factory, rows):
    tmp = tmp_path_factory.mktemp("rt")
    store = make_store(tmp)
    try:
        path = tmp / "c.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(CUSTOMER_COLUMNS)
            w.writerows(rows)
        result = import_csv(store.db, path)
        assert (result.upserted, result.rejected) == (len(rows), 0), result.reasons
        for no, name, company, id_number, mobile, business, tier, cm in rows:
            got = store.find_customer(no)
            assert got is not None
            assert (got.customer_no, got.name) == (no, name)
            assert (
                got.company,
                got.id_number,
                got.mobile,
                got.usual_business,
                got.tier,
                got.client_manager,
            ) == (
                company or None,
                id_number or None,
                mobile or None,
                business or None,
                tier or None,
                cm or None,
            )
    finally:
        store.close()


def test_csv_seed_files_load_through_the_importer(tmp_path):
    write(tmp_path, "customers.csv", "customer_no,name,tier\nC1,Ada Wong,gold\n")
    write(tmp_path, "cards.csv", "epc,customer_no,allowed_branches\nE20000000000000000000001,C1,sh;bj\n")
    store = make_store(tmp_path, seed=("customers.csv", "cards.csv"))
    try:
        assert store.find_customer("C1").name == "Ada Wong"
        assert store.find_card("E20000000000000000000001").allowed_branches == ("sh", "bj")
    finally:
        store.close()


def test_csv_seed_with_a_bad_row_names_it_and_keeps_the_good_ones(tmp_path):
    path = write(tmp_path, "customers.csv", "customer_no,name\nC1,Ada Wong\nC2,\n")
    with pytest.raises(SeedError) as exc:
        make_store(tmp_path, seed=("customers.csv",))
    assert str(exc.value).startswith(f"1 rows rejected, the others were loaded: {path}:3: ")
    db = sqlite3.connect(tmp_path / "id.sqlite3")
    assert db.execute("SELECT customer_no FROM customers").fetchall() == [("C1",)]
