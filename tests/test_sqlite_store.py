"""The SQLite identity store's bulk CSV import and lookups, on real SQLite files (small data: the
million-row figures come from bench/stores.py)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import sqlite3
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vipsense.api import CardExists, CardRegistry, PluginContext, UnknownCard
from vipsense.clock import Clock
from vipsense.crypto import FieldCipher
from vipsense.model import Card, CardEvent, CardStatus, Customer, Photo
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
    migrate,
)
from vipsense.plugins.stores.sqlite.schema import is_sealed
from vipsense.privacy import clean_text

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
    assert store.find_customer("C4").company == "multi line company"  # a line break is stored as a space
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
    id_plan = plan(store.db, "SELECT customer_no FROM customers WHERE id_index = ?")
    assert "USING INDEX sqlite_autoindex_cards_1 (epc=?)" in card_plan, card_plan
    assert "USING INDEX sqlite_autoindex_customers_1 (customer_no=?)" in customer_plan, customer_plan
    assert "USING INDEX customers_id_index (id_index=?)" in id_plan, id_plan
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


# -- property: whatever text a bank's export holds comes back exactly, cleaned -----------------------
# Control characters are removed and line breaks become spaces when stored (vipsense.privacy.clean_text);
# a NUL refuses the row and a customer number is one plain token, so the strategies leave those out.

_TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
customer_nos = st.text(
    st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Zs", "Zl", "Zp"), blacklist_characters="*?"),
    min_size=1,
    max_size=20,
)
required = st.text(_TEXT, min_size=1, max_size=30).filter(lambda s: clean_text(s).strip() != "")
optional = st.one_of(st.just(""), st.text(_TEXT, min_size=1, max_size=30))


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(customer_nos, required, optional, optional, optional, optional, optional, optional),
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
        for no, *fields in rows:
            got = store.find_customer(no)
            assert got is not None
            assert (
                got.name,
                got.company,
                got.id_number,
                got.mobile,
                got.usual_business,
                got.tier,
                got.client_manager,
            ) == tuple(clean_text(f) or None for f in fields)
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


# -- the card registry ----------------------------------------------------------------------------

ADA_CARD, BO_CARD, NEW_CARD = (
    "E20000000000000000000001",
    "E20000000000000000000002",
    "E20000000000000000000009",
)
REGISTRY_SEED = """\
customers:
  - {customer_no: C1, name: Ada Wong, id_number: "110101199003071234", consent: true,
     consent_date: 2024-03-01}
  - {customer_no: C2, name: Bo Li, id_number: "110101199003071234"}
  - {customer_no: C3, name: Cy Zhao, id_number: "310115198002081033"}
cards:
  - {epc: E20000000000000000000001, customer_no: C1, tier: gold}
  - {epc: E20000000000000000000002, customer_no: C2, status: lost}
"""


def event(action: str, epc: str = "", at: float = 1_700_000_000.0, **kw) -> CardEvent:
    return CardEvent(epc, action, at, kw.pop("actor", "issuer"), **kw)


@pytest.fixture
def registry(tmp_path):
    write(tmp_path, "seed.yaml", REGISTRY_SEED)
    s = make_store(tmp_path, seed=("seed.yaml",))
    yield s
    s.close()


def history(store: SqliteStore, epc: str) -> list[tuple[str, str, str, str]]:
    return [(e.action.value, e.actor, e.reason, e.detail) for e in store.card_history(epc)]


def test_the_store_is_a_card_registry_on_wal_with_synchronous_normal(registry):
    assert isinstance(registry, CardRegistry)
    assert registry.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert registry.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert registry.db.execute("PRAGMA user_version").fetchone()[0] == 3


def test_issue_then_history_and_a_second_issue_is_refused(registry):
    card = Card(NEW_CARD.lower(), "C1", tier="gold", valid_until=dt.date(2030, 1, 31), tid="e2801160")
    registry.issue_card(card, event("issued", NEW_CARD, reason="new VIP"))
    got = registry.find_card(NEW_CARD)
    assert (got.epc, got.customer_no, got.tid, got.valid_until, got.status) == (
        NEW_CARD,
        "C1",
        "E2801160",
        dt.date(2030, 1, 31),
        CardStatus.ACTIVE,
    )
    assert history(registry, NEW_CARD) == [("issued", "issuer", "new VIP", "")]
    with pytest.raises(CardExists, match=f"card {NEW_CARD} is already issued"):
        registry.issue_card(Card(NEW_CARD, "C2"), event("issued", NEW_CARD))
    assert registry.find_card(NEW_CARD).customer_no == "C1"
    assert len(registry.card_history(NEW_CARD)) == 1


def test_status_changes_are_kept_in_order_and_unknown_cards_are_named(registry):
    lost = registry.set_card_status(ADA_CARD, CardStatus.LOST, event("lost", ADA_CARD, 1.0, reason="taxi"))
    assert lost.status is CardStatus.LOST and lost.tier == "gold"
    registry.set_card_status(ADA_CARD, CardStatus.ACTIVE, event("restored", ADA_CARD, 2.0, actor="boss"))
    assert history(registry, ADA_CARD) == [("lost", "issuer", "taxi", ""), ("restored", "boss", "", "")]
    assert [e.at for e in registry.card_history(ADA_CARD)] == [1.0, 2.0]
    with pytest.raises(UnknownCard, match="no card has EPC E2000000000000000000FFFF"):
        registry.set_card_status("E2000000000000000000FFFF", CardStatus.LOST, event("lost"))
    with pytest.raises(UnknownCard):
        registry.card_history("E2000000000000000000FFFF")
    assert registry.card_history(BO_CARD) == []  # seeded: no history, but a known card


def test_reissue_revokes_and_issues_in_one_step(registry):
    registry.reissue_card(
        ADA_CARD,
        Card(NEW_CARD, "C1", tier="gold"),
        event("revoked", ADA_CARD, reason="damaged", detail=f"replaced by {NEW_CARD}"),
        event("reissued", NEW_CARD, reason="damaged", detail=f"replaces {ADA_CARD}"),
    )
    assert registry.find_card(ADA_CARD).status is CardStatus.REVOKED
    assert registry.find_card(NEW_CARD).status is CardStatus.ACTIVE
    assert history(registry, ADA_CARD) == [("revoked", "issuer", "damaged", f"replaced by {NEW_CARD}")]
    assert history(registry, NEW_CARD) == [("reissued", "issuer", "damaged", f"replaces {ADA_CARD}")]


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [(ADA_CARD, BO_CARD, CardExists), ("E2000000000000000000FFFF", NEW_CARD, UnknownCard)],
    ids=["new-epc-taken", "old-epc-unknown"],
)
def test_a_failed_reissue_changes_nothing(registry, old, new, error):
    before = [registry.find_card(e) for e in (ADA_CARD, BO_CARD)]
    with pytest.raises(error):
        registry.reissue_card(old, Card(new, "C1"), event("revoked", old), event("reissued", new))
    assert [registry.find_card(e) for e in (ADA_CARD, BO_CARD)] == before
    assert registry.find_card(NEW_CARD) is None
    assert count(registry.db, "card_history") == 0


def test_list_cards_filters_and_orders_by_epc(registry):
    registry.issue_card(Card("E20000000000000000000000", "C1"), event("issued"))
    assert [c.epc for c in registry.list_cards()] == ["E20000000000000000000000", ADA_CARD, BO_CARD]
    assert [c.epc for c in registry.list_cards(customer_no="C1")] == ["E20000000000000000000000", ADA_CARD]
    assert [c.epc for c in registry.list_cards(status=CardStatus.LOST)] == [BO_CARD]
    assert registry.list_cards(customer_no="C2", status=CardStatus.ACTIVE) == []


def test_the_id_number_search_and_the_history_use_their_indexes(registry):
    """The ID numbers are encrypted, so the search goes by their blind index: still one indexed
    lookup, also with several keys held (a rotation in progress)."""
    from vipsense.plugins.stores.sqlite.schema import CARD_HISTORY_SQL, find_by_id_index_sql

    by_id = plan(registry.db, find_by_id_index_sql(1))
    assert "SEARCH customers USING INDEX customers_id_index (id_index=?)" in by_id, by_id
    by_two = " | ".join(
        row[-1] for row in registry.db.execute("EXPLAIN QUERY PLAN " + find_by_id_index_sql(2), (b"x", b"y"))
    )
    assert "SEARCH customers USING INDEX customers_id_index (id_index=?)" in by_two, by_two
    assert "SCAN customers" not in by_id + by_two
    assert "SEARCH card_history USING INDEX card_history_epc (epc=?)" in plan(registry.db, CARD_HISTORY_SQL)


def test_find_customers_by_id_number_returns_every_holder(registry):
    found = registry.find_customers_by_id_number("110101199003071234")
    assert [(c.customer_no, c.consent, c.consent_date) for c in found] == [
        ("C1", True, dt.date(2024, 3, 1)),
        ("C2", False, None),
    ]
    assert registry.find_customers_by_id_number("000000000000000000") == []


def test_card_seen_is_recorded_and_returned(registry, tmp_path):
    registry.card_seen(ADA_CARD.lower(), "bj-west", 1_717_000_000.5)
    card = registry.find_card(ADA_CARD)
    assert (card.last_seen_branch, card.last_seen_at) == ("bj-west", 1_717_000_000.5)
    other = make_store(tmp_path)  # another process's connection sees it: committed
    try:
        assert other.find_card(ADA_CARD).last_seen_branch == "bj-west"
    finally:
        other.close()


def test_iter_cards_and_customers_stream_everything_with_every_field(registry):
    registry.card_seen(ADA_CARD, "sh", 5.0)
    cards = registry.iter_cards()
    assert iter(cards) is cards  # a generator, not a list
    by_epc = {c.epc: c for c in cards}
    assert set(by_epc) == {ADA_CARD, BO_CARD}
    assert (by_epc[ADA_CARD].tier, by_epc[ADA_CARD].last_seen_at) == ("gold", 5.0)
    customers = {c.customer_no: c for c in registry.iter_customers()}
    assert set(customers) == {"C1", "C2", "C3"}
    assert customers["C1"].photo is not None and customers["C1"].photo.mime == "image/svg+xml"
    assert (customers["C1"].consent, customers["C2"].consent) == (True, False)


def test_upsert_cards_writes_history_for_new_cards_and_status_changes_only(registry):
    n = registry.upsert_cards(
        [
            Card(ADA_CARD, "C1", tier="platinum"),  # same status: no entry
            Card(BO_CARD, "C2", status=CardStatus.REVOKED),  # lost -> revoked
            Card(NEW_CARD, "C3"),  # new
            Card("E2000000000000000000000A", "C3", status=CardStatus.LOST),  # new, lost
        ],
        event("issued", reason="bank export", detail="imported from cards.csv"),
    )
    assert n == 4
    assert registry.find_card(ADA_CARD).tier == "platinum"
    assert registry.card_history(ADA_CARD) == []
    assert history(registry, BO_CARD) == [("revoked", "issuer", "bank export", "imported from cards.csv")]
    assert history(registry, NEW_CARD) == [("issued", "issuer", "bank export", "imported from cards.csv")]
    assert history(registry, "E2000000000000000000000A") == [
        ("issued", "issuer", "bank export", "imported as lost")
    ]


def test_upsert_cards_keeps_sightings(registry):
    registry.card_seen(ADA_CARD, "sh", 7.0)
    registry.upsert_cards([Card(ADA_CARD, "C1", tier="gold")], event("issued"))
    assert registry.find_card(ADA_CARD).last_seen_at == 7.0


def test_upsert_customers_keeps_the_photo_when_none_is_given(registry):
    photo = registry.find_customer("C1").photo
    n = registry.upsert_customers(
        [
            Customer("C1", "Ada Wong-Li", consent=True, consent_date=dt.date(2024, 3, 1)),
            Customer("C9", "Nine"),
        ]
    )
    assert n == 2
    ada = registry.find_customer("C1")
    assert (ada.name, ada.photo, ada.id_number) == ("Ada Wong-Li", photo, None)
    assert registry.find_customer("C9").photo is None
    registry.upsert_customers([Customer("C9", "Nine", photo=Photo(b"\xff\xd8", "image/jpeg"))])
    assert registry.find_customer("C9").photo == Photo(b"\xff\xd8", "image/jpeg")


# -- the replica switch ---------------------------------------------------------------------------


def test_replace_all_holds_exactly_the_new_data_and_keeps_histories(registry):
    registry.set_card_status(ADA_CARD, CardStatus.LOST, event("lost", ADA_CARD))
    registry.card_seen(BO_CARD, "sh", 100.0)
    n = registry.replace_all(
        [Card(BO_CARD, "C2", last_seen_branch="bj", last_seen_at=50.0), Card(NEW_CARD, "C9")],
        [Customer("C2", "Bo Li"), Customer("C9", "Nine", consent=True)],
    )
    assert n == (2, 2)
    assert {c.epc for c in registry.iter_cards()} == {BO_CARD, NEW_CARD}
    assert {c.customer_no for c in registry.iter_customers()} == {"C2", "C9"}
    assert registry.find_card(ADA_CARD) is None
    assert registry.find_customer("C1") is None
    assert history(registry, ADA_CARD) == [("lost", "issuer", "", "")]  # kept
    bo = registry.find_card(BO_CARD)
    assert (bo.last_seen_branch, bo.last_seen_at) == ("sh", 100.0)  # this replica's own sighting is newer
    assert registry.find_customer("C9").consent is True


def test_replace_all_is_atomic_for_a_concurrent_reader(registry, tmp_path):
    reader = make_store(tmp_path)  # a branch process looking cards up meanwhile
    seen_midway = []

    def cards():
        for i in range(25_000):
            if i == 20_000:  # well into the switch: the reader still sees the old data, whole
                seen_midway.append((reader.find_card(ADA_CARD), reader.find_card(f"E3{i:022X}")))
            yield Card(f"E3{i:022X}", "C9")

    try:
        registry.replace_all(cards(), [Customer("C9", "Nine")])
        old_card, new_card = seen_midway[0]
        assert old_card is not None and old_card.customer_no == "C1"
        assert new_card is None
        assert reader.find_card(ADA_CARD) is None
        assert reader.find_card(f"E3{24_999:022X}").customer_no == "C9"
        assert count(reader.db, "cards") == 25_000
    finally:
        reader.close()


def test_a_replace_all_that_fails_halfway_leaves_the_old_data(registry):
    before = sorted(c.epc for c in registry.iter_cards())
    with pytest.raises(sqlite3.IntegrityError):
        registry.replace_all([Card(NEW_CARD, "C9"), Card(NEW_CARD, "C9")], [Customer("C9", "Nine")])
    assert sorted(c.epc for c in registry.iter_cards()) == before
    assert registry.find_customer("C1").name == "Ada Wong"
    assert registry.find_customer("C9") is None


# -- seeds and older files ------------------------------------------------------------------------


def test_a_seed_never_undoes_a_registry_change_across_restarts(tmp_path):
    write(tmp_path, "seed.yaml", REGISTRY_SEED)
    store = make_store(tmp_path, seed=("seed.yaml",))
    store.set_card_status(ADA_CARD, CardStatus.REVOKED, event("revoked", ADA_CARD, reason="fraud"))
    store.set_card_status(BO_CARD, CardStatus.ACTIVE, event("restored", BO_CARD, reason="found"))
    store.upsert_customers([attrs.evolve(store.find_customer("C2"), consent=True)])
    store.close()
    for _ in range(2):  # the same seed, twice: a restart, then another
        store = make_store(tmp_path, seed=("seed.yaml",))
        try:
            assert store.find_card(ADA_CARD).status is CardStatus.REVOKED
            assert store.find_card(BO_CARD).status is CardStatus.ACTIVE  # the seed says lost
            assert store.find_customer("C2").consent is True  # the seed says nothing of consent
            assert store.find_card(ADA_CARD).tier == "gold"
        finally:
            store.close()


def test_a_seed_still_changes_cards_without_history(tmp_path):
    write(tmp_path, "seed.yaml", REGISTRY_SEED)
    make_store(tmp_path, seed=("seed.yaml",)).close()
    write(tmp_path, "seed.yaml", REGISTRY_SEED.replace("tier: gold", "tier: diamond, status: revoked"))
    store = make_store(tmp_path, seed=("seed.yaml",))
    try:
        card = store.find_card(ADA_CARD)
        assert (card.tier, card.status) == ("diamond", CardStatus.REVOKED)
    finally:
        store.close()


def test_a_csv_seed_keeps_a_registry_status_too(tmp_path):
    write(tmp_path, "cards.csv", f"epc,customer_no,status\n{ADA_CARD},C1,active\n")
    store = make_store(tmp_path, seed=("cards.csv",))
    store.set_card_status(ADA_CARD, CardStatus.LOST, event("lost", ADA_CARD))
    store.close()
    store = make_store(tmp_path, seed=("cards.csv",))
    try:
        assert store.find_card(ADA_CARD).status is CardStatus.LOST
    finally:
        store.close()


#: The schema of the first version (commit 68ec6e2), written by hand as an old branch left it.
OLD_SCHEMA = """
CREATE TABLE customers (customer_no TEXT PRIMARY KEY, name TEXT NOT NULL, company TEXT, id_number TEXT,
    mobile TEXT, usual_business TEXT, tier TEXT, client_manager TEXT, photo BLOB, photo_mime TEXT);
CREATE TABLE cards (epc TEXT PRIMARY KEY, customer_no TEXT NOT NULL, tid TEXT,
    status TEXT NOT NULL DEFAULT 'active', tier TEXT, valid_from TEXT, valid_until TEXT,
    allowed_branches TEXT NOT NULL DEFAULT '');
CREATE INDEX cards_customer ON cards (customer_no);
CREATE INDEX customers_id_number ON customers (id_number);
INSERT INTO customers VALUES ('C1', 'Ada Wong', 'Acme', '110101199003071234', '13812345678', 'fx', 'gold',
    'cm1', x'FFD8', 'image/jpeg');
INSERT INTO cards VALUES ('E20000000000000000000001', 'C1', 'E2801160', 'lost', 'gold', '2024-01-01',
    '2030-12-31', 'sh,bj');
"""


def test_an_old_file_is_migrated_in_place_and_nothing_is_lost(tmp_path):
    old = sqlite3.connect(tmp_path / "id.sqlite3")
    old.executescript(OLD_SCHEMA)
    old.close()
    store = make_store(tmp_path)
    try:
        columns = {
            t: [r[1] for r in store.db.execute(f"PRAGMA table_info({t})")] for t in ("customers", "cards")
        }
        assert columns["customers"][-3:] == ["consent", "consent_date", "id_index"]
        assert columns["cards"][-2:] == ["last_seen_branch", "last_seen_at"]
        # the numbers it held in clear are encrypted in place, and found by their blind index
        [(id_number, mobile, index)] = store.db.execute("SELECT id_number, mobile, id_index FROM customers")
        assert is_sealed(id_number) and is_sealed(mobile) and len(index) == 16
        assert [c.customer_no for c in store.find_customers_by_id_number("110101199003071234")] == ["C1"]
        assert store.find_customer("C1") == Customer(
            customer_no="C1",
            name="Ada Wong",
            company="Acme",
            id_number="110101199003071234",
            mobile="13812345678",
            usual_business="fx",
            tier="gold",
            client_manager="cm1",
            photo=Photo(b"\xff\xd8", "image/jpeg"),
            consent=False,
            consent_date=None,
        )
        assert store.find_card(ADA_CARD) == Card(
            epc=ADA_CARD,
            customer_no="C1",
            status=CardStatus.LOST,
            tier="gold",
            valid_from=dt.date(2024, 1, 1),
            valid_until=dt.date(2030, 12, 31),
            allowed_branches=("sh", "bj"),
            tid="E2801160",
        )
        store.set_card_status(ADA_CARD, CardStatus.REVOKED, event("revoked", ADA_CARD))  # the new table works
        store.card_seen(ADA_CARD, "sh", 9.0)
        assert store.find_card(ADA_CARD).last_seen_at == 9.0
    finally:
        store.close()
    again = make_store(tmp_path)  # opening a migrated file again changes nothing
    try:
        assert [r[1] for r in again.db.execute("PRAGMA table_info(cards)")][-2:] == [
            "last_seen_branch",
            "last_seen_at",
        ]
        assert history(again, ADA_CARD) == [("revoked", "issuer", "", "")]
    finally:
        again.close()


def test_migrate_reports_what_it_added_once(tmp_path):
    db = sqlite3.connect(tmp_path / "old.sqlite3")
    db.executescript(OLD_SCHEMA)
    cipher = FieldCipher.local_only(tmp_path)
    assert migrate(db, cipher) == [
        "customers.consent",
        "customers.consent_date",
        "customers.id_index",
        "cards.last_seen_branch",
        "cards.last_seen_at",
    ]
    assert migrate(db, cipher) == []
    db.close()


def test_consent_columns_in_a_customers_csv_are_checked_and_an_empty_cell_keeps_the_stored_one(
    store, tmp_path
):
    import_csv(
        store.db, write(tmp_path, "a.csv", "customer_no,name,consent,consent_date\nC1,Ada,yes,2024-03-01\n")
    )
    result = import_csv(
        store.db,
        write(
            tmp_path,
            "b.csv",
            "customer_no,name,consent,consent_date\nC1,Ada W,,\nC2,Bo,maybe,\nC3,Cy,no,2024-13-01\n",
        ),
    )
    assert [(r.line, r.reason) for r in result.reasons] == [
        (3, "consent: must be yes or no (1/0, true/false)"),
        (4, "consent_date: not a date (YYYY-MM-DD), got '2024-13-01'"),
    ]
    ada = store.find_customer("C1")
    assert (ada.name, ada.consent, ada.consent_date) == ("Ada W", True, dt.date(2024, 3, 1))
