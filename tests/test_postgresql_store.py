"""The central identity store (issue 14, part 2) against a real PostgreSQL cluster: the registry's
rules, the ``cards`` commands writing into it, and a running branch whose ``sync:`` copies from it,
refusing a card revoked at the centre and greeting from its replica when the centre is gone.

Nothing is mocked: the session's cluster (tests/postgres.py) for most tests, and for the branch test
a cluster of its own, which the test stops while the branch runs."""

from __future__ import annotations

import datetime as dt
import io
import socket
import sqlite3
import time

import attrs
import pytest
from sqlalchemy import text

import vipsense
from vipsense.api import CardExists, Notifier, UnknownCard
from vipsense.branch import Branch
from vipsense.config.profile import load_profile
from vipsense.model import Card, CardEvent, CardStatus, Customer, RejectReason, TagRead, VisitKind
from vipsense.output import Output
from vipsense.pluginhost import load_host

from .conftest import wait_for
from .keyed import keyed_branch
from .lifecycle import ADA_ID, ADA_MOBILE, BO_ID
from .postgres import Cluster, binaries, new_database
from .profiles import branch_profile

pytestmark = pytest.mark.postgres
pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'vipsense[postgresql]'")

ADA, BO, CY = "E20000000000000000000001", "E20000000000000000000002", "E20000000000000000000003"
NEW = "E20000000000000000000009"
CENTRAL = "  - {id: central, type: postgresql, url: !secret centre_db}"
PEOPLE = [
    Customer("C1", "Ada Wong", tier="gold", id_number=ADA_ID, mobile=ADA_MOBILE, consent=True),
    Customer("C2", "Bo Li", tier="platinum", id_number=BO_ID, consent=True, consent_date=dt.date(2024, 5, 2)),
    Customer("C3", "Cy Zhao", tier="gold", consent=True),
]


def event(epc: str, action: str, reason: str = "", detail: str = "", actor: str = "issuer") -> CardEvent:
    return CardEvent(epc, action, time.time(), actor, reason=reason, detail=detail)


def with_centre(branch, url: str) -> None:
    """Name the centre's URL in the branch's secrets file, as a bank's station has it."""
    secrets = branch.profile.parent / "secrets.yaml"
    secrets.write_text(secrets.read_text(encoding="utf-8") + f"centre_db: '{url}'\n", encoding="utf-8")


@pytest.fixture
def station(tmp_path, capsys, postgres_url):
    """An issuing station whose only store is the centre's database (an empty one of its own)."""
    branch = keyed_branch(tmp_path, capsys, stores=CENTRAL)
    url = new_database(postgres_url)
    with_centre(branch, url)
    store = branch.store("central")
    store.upsert_customers(PEOPLE)
    yield branch, store, url
    store.close()


def test_issue_look_up_lose_restore_revoke_and_the_history(station):
    _, store, _ = station
    store.issue_card(Card(ADA, "C1", tier="gold", allowed_branches=("sh-test", "bj-1")), event(ADA, "issued"))
    card = store.find_card(ADA.lower())
    assert (card.epc, card.customer_no, card.status, card.allowed_branches) == (
        ADA, "C1", CardStatus.ACTIVE, ("sh-test", "bj-1")
    )  # fmt: skip
    assert store.find_card(NEW) is None
    with pytest.raises(CardExists, match=f"card {ADA} is already issued"):
        store.issue_card(Card(ADA, "C2"), event(ADA, "issued"))
    lost = store.set_card_status(ADA, CardStatus.LOST, event(ADA, "lost", "left in a taxi"))
    assert lost.status is CardStatus.LOST
    store.set_card_status(ADA, CardStatus.ACTIVE, event(ADA, "restored", "found"))
    store.set_card_status(ADA, CardStatus.REVOKED, event(ADA, "revoked", "account closed", actor="boss"))
    assert store.find_card(ADA).status is CardStatus.REVOKED
    assert [(e.action.value, e.actor, e.reason) for e in store.card_history(ADA)] == [
        ("issued", "issuer", ""),
        ("lost", "issuer", "left in a taxi"),
        ("restored", "issuer", "found"),
        ("revoked", "boss", "account closed"),
    ]
    with pytest.raises(UnknownCard):
        store.set_card_status(NEW, CardStatus.LOST, event(NEW, "lost"))
    with pytest.raises(UnknownCard):
        store.card_history(NEW)
    assert [c.epc for c in store.list_cards(status=CardStatus.REVOKED)] == [ADA]
    assert store.list_cards(customer_no="C2") == []


def test_a_card_for_a_customer_the_centre_lacks_is_refused_and_nothing_is_written(station):
    _, store, _ = station
    with pytest.raises(ValueError, match="customer C404 is not in the centre's database"):
        store.issue_card(Card(NEW, "C404"), event(NEW, "issued"))
    with pytest.raises(UnknownCard):
        store.card_history(NEW)


def test_reissue_is_one_transaction(station):
    _, store, _ = station
    store.issue_card(Card(ADA, "C1"), event(ADA, "issued"))
    store.issue_card(Card(BO, "C2"), event(BO, "issued"))
    # the new card's EPC is taken: neither half happens
    with pytest.raises(CardExists):
        store.reissue_card(ADA, Card(BO, "C1"), event(ADA, "revoked"), event(BO, "reissued"))
    assert store.find_card(ADA).status is CardStatus.ACTIVE
    assert [e.action.value for e in store.card_history(ADA)] == ["issued"]
    store.reissue_card(
        ADA, Card(NEW, "C1"), event(ADA, "revoked", detail=f"replaced by {NEW}"), event(NEW, "reissued")
    )
    assert (store.find_card(ADA).status, store.find_card(NEW).status) == (
        CardStatus.REVOKED,
        CardStatus.ACTIVE,
    )
    assert [(e.action.value, e.detail) for e in store.card_history(ADA)] == [
        ("issued", ""),
        ("revoked", f"replaced by {NEW}"),
    ]


def test_id_and_mobile_numbers_are_sealed_and_the_id_number_search_is_exact(station):
    _, store, url = station
    assert [c.customer_no for c in store.find_customers_by_id_number(BO_ID)] == ["C2"]
    assert store.find_customers_by_id_number("110105199003075679") == []
    ada = store.find_customer("C1")
    assert (ada.id_number, ada.mobile, ada.tier, ada.consent) == (ADA_ID, ADA_MOBILE, "gold", True)
    assert store.find_customer("C2").consent_date == dt.date(2024, 5, 2)
    assert store.find_customer("C9") is None
    from vipsense.centre.database import open_database

    raw = open_database(url)
    try:
        with raw.begin() as conn:
            rows = conn.execute(text("SELECT id_number_enc, mobile_enc, id_index FROM customers")).all()
    finally:
        raw.close()
    stored = b"".join(bytes(v) for row in rows for v in row if v is not None)
    assert (
        ADA_ID.encode() not in stored and ADA_MOBILE.encode() not in stored and BO_ID.encode() not in stored
    )
    assert sum(row[2] is not None for row in rows) == 2  # the two customers with an ID number


def test_an_import_records_what_happened_to_each_card(station):
    _, store, _ = station
    store.issue_card(Card(ADA, "C1"), event(ADA, "issued"))
    batch = [Card(ADA, "C1", status=CardStatus.LOST), Card(BO, "C2"), Card(CY, "C3", status=CardStatus.LOST)]
    assert store.upsert_cards(batch, event("", "issued", "import cards.csv")) == 3
    assert [(e.action.value, e.detail) for e in store.card_history(ADA)] == [("issued", ""), ("lost", "")]
    assert [(e.action.value, e.detail) for e in store.card_history(CY)] == [("issued", "imported as lost")]
    assert store.upsert_cards([Card(BO, "C2", tier="gold")], event("", "issued")) == 1
    assert len(store.card_history(BO)) == 1  # same status: no entry
    assert store.find_card(BO).tier == "gold"
    assert [c.epc for c in store.iter_cards()] == [ADA, BO, CY]
    assert [c.customer_no for c in store.iter_customers()] == ["C1", "C2", "C3"]


def test_the_cards_commands_write_into_the_centre(station):
    branch, store, _ = station
    code, out, err = branch.cli(
        "cards", "issue", "--customer", "C1", "--epc", NEW.lower(), "--tier", "gold", "--reason", "new VIP",
        who="issuer",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out == f"issued card {NEW} to customer C1 (tier Gold)\n"
    code, out, err = branch.cli("cards", "revoke", NEW, "--reason", "account closed", who="boss")
    assert (code, err) == (0, "")
    assert out == f"card {NEW} of customer C1 is now revoked\n"
    assert store.find_card(NEW).status is CardStatus.REVOKED
    assert [(e.action.value, e.actor, e.reason) for e in store.card_history(NEW)] == [
        ("issued", "issuer", "new VIP"),
        ("revoked", "boss", "account closed"),
    ]
    # a revoked card stays revoked: the same rule as on SQLite
    code, out, err = branch.cli("cards", "found", NEW, "--reason", "found it", who="issuer")
    assert (code, out) == (1, "")
    assert "a revoked card stays revoked" in err
    assert [e[2:5] for e in branch.entries()] == [
        ("card_issue", NEW, "success"),
        ("card_revoke", NEW, "success"),
        ("card_restore", NEW, "error"),  # as on SQLite
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_centre_is_one_clear_sentence_without_its_password(tmp_path, capsys):
    branch = keyed_branch(tmp_path, capsys, stores=CENTRAL)
    with_centre(branch, f"postgresql+psycopg://centre:s3cret-pw@127.0.0.1:{free_port()}/centre")
    code, out, err = branch.cli("cards", "revoke", NEW, "--reason", "closed", who="boss")
    assert (code, out) == (1, "")
    assert err.startswith(
        "vipsense: store central (postgresql) cannot be opened:"
        " CentreUnreachable: cannot reach the centre's database postgresql+psycopg://centre:***@127.0.0.1:"
    )
    assert err.rstrip().endswith("Connection refused")
    assert "s3cret-pw" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# -- a running branch -------------------------------------------------------------------------------


@attrs.frozen
class NoSettings:
    pass


class Recording(Notifier):
    def __init__(self) -> None:
        self.sent: list = []

    def send(self, notification):
        self.sent.append(notification)


class Plugin:
    def __init__(self) -> None:
        self.pda = Recording()

    @vipsense.hookimpl
    def vipsense_register_notifier_types(self, register):
        register("recording", NoSettings, lambda settings, ctx: self.pda)


def replica_status(path, epc):
    try:
        db = sqlite3.connect(path)
        try:
            row = db.execute("SELECT status FROM cards WHERE epc = ?", (epc,)).fetchone()
        finally:
            db.close()
    except sqlite3.OperationalError:  # not made yet
        return None
    return row[0] if row else None


@pytest.mark.slow
def test_a_running_branch_refuses_a_card_revoked_centrally_and_greets_from_its_replica_without_the_centre(
    tmp_path,
):
    bin_dir = binaries()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl): run tests/install.sh as root")
    cluster = Cluster(bin_dir)  # the branch's own centre: this test stops it
    branch = None
    try:
        url = cluster.start()
        secrets = tmp_path / "secrets.yaml"
        secrets.write_text(f"centre_db: '{url}'\ndata_key: {'k' * 43}\n", encoding="utf-8")
        secrets.chmod(0o600)
        profile = tmp_path / "branch.yaml"
        profile.write_text(
            branch_profile(
                branch="{id: sh-test, name: Test Branch}",
                stores=[CENTRAL.strip()[2:], "{id: local, type: sqlite, path: replica.sqlite3}"],
                notifiers=["{id: pda, type: recording}"],
                extra=["privacy: {data_key: !secret data_key}"],
                via="pda",
                tail="sync: {source: central, target: local, interval: 1s}\n",
            ),
            encoding="utf-8",
        )
        plugin = Plugin()
        host = load_host()
        host.add(plugin, "pg-branch-test")
        loaded = load_profile(profile, host, data_dir=tmp_path / "data")
        branch = Branch(loaded, host, output=Output(io.StringIO(), live=False))
        branch.start()
        assert wait_for(lambda: branch.status.devices["central"].state == "ready", timeout=15)
        runner = branch.stores[0]
        central = runner.store  # the issuing station's writes, through the same store type

        def on_central(method, *args):
            return runner._pool.submit(getattr(central, method), *args).result(10)

        on_central("upsert_customers", PEOPLE)
        on_central("upsert_cards", [Card(ADA, "C1"), Card(BO, "C2"), Card(CY, "C3")], event("", "issued"))
        replica = tmp_path / "replica.sqlite3"
        assert wait_for(lambda: replica_status(replica, CY) == "active", timeout=10)

        # the centre revokes Ada's card: the next sync (1 s) brings it to the replica
        revoked_at = time.monotonic()
        on_central("set_card_status", ADA, CardStatus.REVOKED, event(ADA, "revoked", "reported stolen"))
        on_central("set_card_status", CY, CardStatus.REVOKED, event(CY, "revoked", "account closed"))
        assert wait_for(lambda: replica_status(replica, CY) == "revoked", timeout=5)
        assert replica_status(replica, ADA) == "revoked"
        reached = time.monotonic() - revoked_at
        assert reached < 3.0, f"the revocation took {reached:.2f} s to reach the replica"
        for _ in range(3):
            branch.pipeline.submit(TagRead("door", 1, ADA, -50.0, branch.clock.mono()))
        assert wait_for(lambda: branch.status.counters["rejected"] == 1, timeout=10)

        # the centre goes away: the replica carries the door, revocations and all
        cluster.stop()
        for epc in (BO, CY):
            for _ in range(3):
                branch.pipeline.submit(TagRead("door", 1, epc, -50.0, branch.clock.mono()))
        assert wait_for(lambda: branch.status.counters["arrivals"] == 3, timeout=20)
        assert wait_for(
            lambda: branch.status.counters["greeted"] == 1 and branch.status.counters["rejected"] == 2
        )
        assert wait_for(lambda: {ADA, BO, CY} <= {n.visit.arrival.epc for n in plugin.pda.sent})
        visits = {n.visit.arrival.epc: n.visit for n in plugin.pda.sent}
        assert (visits[ADA].kind, visits[ADA].reason) == (VisitKind.REJECTED, RejectReason.REVOKED)
        assert (visits[BO].kind, visits[BO].store_id) == (VisitKind.GREETED, "local")
        assert visits[BO].customer.name == "Bo Li"
        assert (visits[CY].kind, visits[CY].reason, visits[CY].store_id) == (
            VisitKind.REJECTED, RejectReason.REVOKED, "local"
        )  # fmt: skip
        # the store says why: unavailable (a call failed), or degraded after a call that outlived
        # the runner's wait failed late
        device = branch.status.devices["central"]
        assert wait_for(lambda: device.state in ("unavailable", "degraded"), timeout=10)
        assert "the centre's database" in str(device.reason) and "does not answer" in str(device.reason)
        assert wait_for(lambda: branch.status.sync.get("state") == "failed", timeout=10)
        assert "store central is unreachable" in branch.status.sync["error"]
    finally:
        if branch is not None and not branch.stopping:
            branch.stop()
        cluster.stop()


def test_a_centre_database_from_part_1_gets_the_identity_columns_and_keeps_its_rows(postgres_url):
    """Version 2 alters a database that version 1 made (check, then alter): the columns and the blind
    index's index come, the rows stay, and a second migration changes nothing."""
    from vipsense.centre import migrations
    from vipsense.centre.database import open_database

    db = open_database(new_database(postgres_url))
    try:
        migrations.migrate(db)
        with db.begin() as conn:  # back to what part 1 made
            for added in (migrations.schema.ADDED_IN_2, migrations.schema.ADDED_IN_3):
                for table, columns in added.items():
                    for column in columns():
                        conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column.name}")
            conn.exec_driver_sql("DELETE FROM schema_version WHERE version >= 2")
            conn.exec_driver_sql(
                "INSERT INTO customers (customer_no, name, tier, updated_at)"
                " VALUES ('C1', 'Ada', 'gold', now())"
            )
        assert migrations.version(db) == 1
        changed = migrations.migrate(db)
        assert {"customers.id_index", "cards.allowed_branches", "card_events.detail"} <= set(changed)
        assert "index customers_id_index" in changed
        assert {"branches.key_enc", "visits.change_seq", "deliveries.change_seq"} <= set(changed)
        assert migrations.version(db) == migrations.LATEST
        assert migrations.migrate(db) == []
        with db.begin() as conn:
            row = conn.execute(text("SELECT name, consent, id_index FROM customers")).one()
        assert tuple(row) == ("Ada", None, None)
    finally:
        db.close()
