"""Identity across layers and branches: suspect cards, stale answers, sightings, the door's audit
trail, and the branch replica kept fresh by ``sync``.  Real threads and real SQLite files; the only
test-made store is one that serves a cached copy, to show how stale answers are ranked."""

from __future__ import annotations

import io
import sqlite3
import textwrap

import attrs
import pytest

import vipsense
from vipsense.api import IdentityStore, Notifier
from vipsense.branch import Branch
from vipsense.config.profile import load_profile
from vipsense.identity.sync import SyncError, sync_once
from vipsense.model import Card, CardEvent, CardStatus, RejectReason, TagRead, VisitKind
from vipsense.output import Output
from vipsense.pluginhost import load_host
from vipsense.storage.audit import AuditLog

from .conftest import wait_for
from .profiles import branch_profile

ADA = "E20000000000000000000001"  # customer C1, active, bound to TID ADA_TID
BO = "E20000000000000000000002"  # customer C2, active, valid only at the other branch
ADA_TID = "E2801160200000000000AAAA"


@attrs.frozen
class NoSettings:
    pass


class Recording(Notifier):
    def __init__(self) -> None:
        self.sent = []

    def send(self, notification):
        self.sent.append(notification)


class CachedCopy(IdentityStore):
    """A store whose directory is down: it answers from its cache, marked stale."""

    def find_card(self, epc):
        return Card(epc=epc, customer_no="C1", status=CardStatus.ACTIVE, stale=True) if epc == ADA else None

    def find_customer(self, customer_no):
        return None

    def degraded(self):
        return "directory unreachable: serving cached entries"


class ListsNothing(IdentityStore):
    """A store that cannot list its cards: no good as a sync source."""

    def find_card(self, epc):
        return None

    def find_customer(self, customer_no):
        return None


class Plugin:
    def __init__(self) -> None:
        self.pda = Recording()
        self.events = []

    @vipsense.hookimpl
    def vipsense_register_notifier_types(self, register):
        register("recording", NoSettings, lambda settings, ctx: self.pda)

    @vipsense.hookimpl
    def vipsense_register_store_types(self, register):
        register("cached-copy", NoSettings, lambda settings, ctx: CachedCopy())
        register("lists-nothing", NoSettings, lambda settings, ctx: ListsNothing())

    @vipsense.hookimpl
    def vipsense_card_suspect(self, visit):
        self.events.append(("suspect", visit.arrival.epc, visit.reason))


SEED = f"""\
customers:
  - {{customer_no: C1, name: Ada Wong, tier: gold, client_manager: cm1, consent: true}}
  - {{customer_no: C2, name: Bo Li, tier: platinum, consent: true}}
cards:
  - {{epc: {ADA}, customer_no: C1, tid: {ADA_TID}}}
  - {{epc: {BO}, customer_no: C2, allowed_branches: [bj-west]}}
"""

PROFILE = branch_profile(
    branch="{id: %(branch)s, name: Test Branch}",
    stores="%(stores)s",
    notifiers=["{id: pda, type: recording}"],
    extra=["security: {min_travel: %(travel)s}"],
    via="pda",
    tail="%(tail)s",
)

LOCAL = "  - {id: local, type: sqlite, path: local.sqlite3, seed: [seed.yaml]}"


@pytest.fixture
def make_branch(tmp_path):
    (tmp_path / "seed.yaml").write_text(SEED, encoding="utf-8")
    made = []

    def make(stores=LOCAL, branch="sh-test", travel="20m", tail="", start=True):
        plugin = Plugin()
        host = load_host()
        host.add(plugin, "layer-test-types")
        path = tmp_path / f"{branch}.yaml"
        text = PROFILE % {"branch": branch, "stores": stores, "travel": travel, "tail": tail}
        path.write_text(text, encoding="utf-8")
        profile = load_profile(path, host, data_dir=tmp_path / "data" / branch)
        b = Branch(profile, host, output=Output(io.StringIO(), live=False))
        if start:
            b.start()
        made.append(b)
        return b, plugin

    yield make
    for b in made:
        if not b.stopping:
            b.stop()


def walk_in(branch, epc, tid=None, n=3):
    for _ in range(n):
        branch.pipeline.submit(TagRead("door", 1, epc, -50.0, branch.clock.mono(), tid=tid))


def kinds(branch):
    db = sqlite3.connect(branch.data_dir / "visits.sqlite3")
    try:
        return db.execute("SELECT epc, kind, reason FROM visits ORDER BY arrived_at").fetchall()
    finally:
        db.close()


# -- cloned cards -----------------------------------------------------------------------------------


def test_card_read_with_another_tid_is_suspect_and_only_the_branch_manager_is_told(make_branch):
    branch, plugin = make_branch()
    walk_in(branch, ADA, tid="E2801160200000000000BBBB")
    assert wait_for(lambda: plugin.pda.sent)
    assert wait_for(lambda: branch.status.counters["suspect"] == 1)
    assert [n.recipient.id for n in plugin.pda.sent] == ["boss"]
    visit = plugin.pda.sent[0].visit
    assert (visit.kind, visit.reason) == (VisitKind.SUSPECT, RejectReason.TID_MISMATCH)
    assert plugin.events == [("suspect", ADA, RejectReason.TID_MISMATCH)]
    assert branch.status.counters["greeted"] == 0
    branch.stop()
    assert kinds(branch) == [(ADA, "suspect", "tid_mismatch")]


@pytest.mark.parametrize("tid", [ADA_TID, ADA_TID.lower(), None], ids=["same", "lower-case", "no-tid"])
def test_the_enrolled_tid_or_a_read_without_tid_is_greeted(make_branch, tid):
    branch, plugin = make_branch()
    walk_in(branch, ADA, tid=tid)
    assert wait_for(lambda: len(plugin.pda.sent) == 2)
    assert {n.visit.kind for n in plugin.pda.sent} == {VisitKind.GREETED}


@pytest.mark.slow
def test_a_card_seen_at_another_branch_moments_ago_is_suspect(make_branch):
    # Both branches use one identity store file (as they would a central store); it records sightings.
    shared = "  - {id: central, type: sqlite, path: central.sqlite3, seed: [seed.yaml]}"
    beijing, _ = make_branch(stores=shared, branch="bj-west")
    walk_in(beijing, BO)
    assert wait_for(lambda: beijing.status.counters["greeted"] == 1)
    beijing.stop()  # the sighting is written before the store closes

    shanghai, sh = make_branch(stores=shared, branch="sh-test")
    walk_in(shanghai, BO)
    assert wait_for(lambda: shanghai.status.counters["suspect"] == 1)
    assert wait_for(lambda: sh.pda.sent)
    assert [(n.recipient.id, n.visit.reason) for n in sh.pda.sent] == [("boss", RejectReason.TOO_FAST)]
    assert shanghai.status.counters["greeted"] == 0


@pytest.mark.slow
def test_travel_check_is_off_with_zero_and_a_return_to_the_same_branch_is_fine(make_branch):
    shared = "  - {id: central, type: sqlite, path: central.sqlite3, seed: [seed.yaml]}"
    first, _ = make_branch(stores=shared, branch="bj-west")
    walk_in(first, BO)
    assert wait_for(lambda: first.status.counters["greeted"] == 1)
    first.stop()
    again, _ = make_branch(stores=shared, branch="bj-west")  # same branch: a normal re-entry
    walk_in(again, ADA)
    assert wait_for(lambda: again.status.counters["greeted"] == 1)
    again.stop()
    # another branch, travel check off: the card is judged only on its own terms (wrong branch)
    other, _ = make_branch(stores=shared, branch="sh-test", travel="0s")
    walk_in(other, BO)
    assert wait_for(lambda: other.status.counters["rejected"] == 1)
    assert other.status.counters["suspect"] == 0


# -- stale answers and degraded stores --------------------------------------------------------------


def test_a_stale_copy_yields_to_a_fresh_answer_from_a_later_store(make_branch, tmp_path):
    # The branch replica knows the card was revoked; the central store's cache from before does not.
    stores = "  - {id: central, type: cached-copy}\n" + LOCAL
    branch, plugin = make_branch(stores=stores, start=False)
    replica = sqlite3.connect(tmp_path / "local.sqlite3")
    branch.start()
    assert wait_for(lambda: branch.status.devices["local"].state == "ready")
    replica.execute("UPDATE cards SET status = 'revoked' WHERE epc = ?", (ADA,))
    replica.commit()
    walk_in(branch, ADA, tid=ADA_TID)
    assert wait_for(lambda: branch.status.counters["rejected"] == 1)
    assert wait_for(lambda: plugin.pda.sent)
    visit = plugin.pda.sent[0].visit
    assert (visit.reason, visit.store_id, visit.stale) == (RejectReason.REVOKED, "local", False)


def test_a_stale_copy_is_used_when_no_store_has_a_fresh_one(make_branch):
    branch, plugin = make_branch(stores="  - {id: central, type: cached-copy}")
    walk_in(branch, ADA)
    assert wait_for(lambda: branch.status.counters["greeted"] == 1)
    assert branch.status.counters["stale"] == 1
    assert wait_for(lambda: plugin.pda.sent)
    visit = plugin.pda.sent[0].visit
    assert (visit.store_id, visit.stale) == ("central", True)
    device = branch.status.devices["central"]
    assert (device.state, device.reason) == ("degraded", "directory unreachable: serving cached entries")


# -- the door's audit trail -------------------------------------------------------------------------


def test_every_customer_looked_up_at_the_door_is_in_the_verified_audit_log(make_branch):
    branch, plugin = make_branch()
    walk_in(branch, ADA)
    walk_in(branch, "E2000000000000000000FFFF")  # not a card: no customer data was looked up
    assert wait_for(lambda: branch.status.counters["arrivals"] == 2)
    assert wait_for(lambda: plugin.pda.sent)
    visit_id = plugin.pda.sent[0].visit.visit_id if plugin.pda.sent else None
    branch.stop()
    audit = AuditLog(branch.data_dir / "audit.sqlite3")
    try:
        entries = list(audit.entries())
        assert audit.verify().ok
    finally:
        audit.close()
    lookups = [e for e in entries if e.action.value == "lookup"]
    assert [(e.actor, e.object, e.result.value) for e in lookups] == [("system:door:door", "C1", "success")]
    assert visit_id and visit_id in lookups[0].reason
    # the branch also ran its retention purge at start, and said so
    assert [(e.actor, e.action.value) for e in entries if e.action.value != "lookup"] == [
        ("system:retention", "purge")
    ]


# -- the branch replica ---------------------------------------------------------------------------

CENTRAL_AND_REPLICA = (
    "  - {id: central, type: sqlite, path: central.sqlite3, seed: [seed.yaml]}\n"
    "  - {id: local, type: sqlite, path: replica.sqlite3}"
)


def replica_cards(tmp_path):
    """The replica's cards, or None while it is not there yet."""
    path = tmp_path / "replica.sqlite3"
    if not path.exists():
        return None
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT epc, status FROM cards ORDER BY epc").fetchall()
    except sqlite3.OperationalError:  # the store is still creating its tables
        return None
    finally:
        db.close()


def test_sync_copies_this_branchs_cards_and_their_customers(make_branch, tmp_path):
    branch, _ = make_branch(
        stores=CENTRAL_AND_REPLICA, tail="sync: {source: central, target: local}\n", start=False
    )
    result = sync_once(branch.profile, branch.host)
    # BO is valid only at bj-west, so this Shanghai branch's replica holds Ada's card alone
    assert (result.source, result.target, result.cards, result.customers) == ("central", "local", 1, 1)
    assert replica_cards(tmp_path) == [(ADA, "active")]
    audit = AuditLog(branch.data_dir / "audit.sqlite3")
    try:
        [entry] = list(audit.entries(action="sync"))
    finally:
        audit.close()
    assert (entry.actor, entry.action.value, entry.object, entry.reason) == (
        "system:sync",
        "sync",
        "replica:local",
        "1 cards, 1 customers",
    )


@pytest.mark.slow
def test_a_central_revocation_reaches_the_running_branchs_replica_within_the_interval(make_branch, tmp_path):
    tail = "sync: {source: central, target: local, interval: 300ms}\n"
    branch, _ = make_branch(stores=CENTRAL_AND_REPLICA, tail=tail)
    assert wait_for(
        lambda: (
            replica_cards(tmp_path) == [(ADA, "active")] if (tmp_path / "replica.sqlite3").exists() else False
        )
    )
    central = branch.stores[0].store
    # the card-issuing station revokes the card centrally
    event = CardEvent(ADA, "revoked", 0.0, "issuer1", reason="reported stolen")
    branch.stores[0]._pool.submit(central.set_card_status, ADA, CardStatus.REVOKED, event).result(5)
    assert wait_for(lambda: replica_cards(tmp_path) == [(ADA, "revoked")], timeout=3.0)
    assert branch.status.sync["state"] == "ok"


def test_sync_errors_are_clear(make_branch):
    branch, _ = make_branch(start=False)
    with pytest.raises(SyncError, match="no 'sync:' section"):
        sync_once(branch.profile, branch.host)
    stores = "  - {id: central, type: lists-nothing}\n" + LOCAL
    other, _ = make_branch(
        stores=stores, branch="sh-other", tail="sync: {source: central, target: local}\n", start=False
    )
    with pytest.raises(SyncError, match="cannot sync central -> local: ListsNothing cannot list its cards"):
        sync_once(other.profile, other.host)


def test_sync_section_must_name_two_stores_of_the_profile(write_profile, host):
    from vipsense.config import ProfileError

    text = textwrap.dedent(
        PROFILE
        % {"branch": "b", "stores": LOCAL, "travel": "20m", "tail": "sync: {source: centrl, target: local}\n"}
    )
    plugin_host = load_host()
    plugin_host.add(Plugin(), "layer-test-types")
    path = write_profile(text)
    with pytest.raises(ProfileError) as err:
        load_profile(path, plugin_host)
    assert [(e.path, e.message) for e in err.value.errors] == [
        ("sync.source", "no store has id 'centrl' (store ids: local)")
    ]


# -- retention while running ------------------------------------------------------------------------


def test_a_running_branch_purges_visits_past_retention_at_start(make_branch):
    import time

    branch, _ = make_branch(start=False, tail="privacy: {visit_retention: 30d}\n")
    old, recent = time.time() - 31 * 86400, time.time() - 29 * 86400
    db = sqlite3.connect(branch.visit_log.path)
    for vid, at in (("old", old), ("recent", recent)):
        db.execute(
            "INSERT INTO visits (visit_id, branch_id, kind, epc, reader_id, antenna, read_count, arrived_at)"
            " VALUES (?, 'sh-test', 'greeted', ?, 'door', 1, 3, ?)",
            (vid, ADA, at),
        )
    db.commit()
    db.close()
    branch.start()

    def remaining():
        with sqlite3.connect(branch.visit_log.path) as check:
            return [r[0] for r in check.execute("SELECT visit_id FROM visits ORDER BY arrived_at")]

    assert wait_for(lambda: remaining() == ["recent"])
    branch.stop()
    audit = AuditLog(branch.data_dir / "audit.sqlite3")
    try:
        [purge] = list(audit.entries(action="purge"))
    finally:
        audit.close()
    assert (purge.actor, purge.result.value) == ("system:retention", "success")
    assert purge.object.endswith(": 1 deleted")


# -- the centre unreachable: the replica carries the branch -----------------------------------------


@pytest.mark.slapd
def test_with_the_central_directory_down_the_replica_greets_every_card_it_holds(make_branch, tmp_path):
    """Central LDAP first, the SQLite replica second.  One refresh, then slapd is killed: every card in
    the replica is still greeted, and a card revoked centrally before that refresh is refused."""
    pytest.importorskip("ldap", reason="python-ldap is not installed: pip install 'vipsense[ldap]'")
    from vipsense.plugins.stores.ldap.ldif import main as to_ldif

    from .slapd import BASE_LDIF, CARDS, CUSTOMERS, SERVICE_DN, SERVICE_PW, Slapd, missing_tools

    if missing_tools():
        pytest.skip(f"slapd tools missing: {', '.join(missing_tools())} (bash tests/install.sh)")
    people = [(f"E2000000000000000000{i:04X}", f"K{i:03d}") for i in range(1, 11)]
    seed = "customers:\n" + "".join(
        f"  - {{customer_no: {no}, name: 客户{no} Customer {no}, tier: gold, consent: true}}\n"
        for _, no in people
    )
    seed += "cards:\n" + "".join(f"  - {{epc: {epc}, customer_no: {no}}}\n" for epc, no in people)
    (tmp_path / "central-seed.yaml").write_text(seed, encoding="utf-8")
    ldif = io.StringIO()
    args = [str(tmp_path / "central-seed.yaml"), "--base-customers", CUSTOMERS, "--base-cards", CARDS]
    assert to_ldif(args, ldif) == 0
    server = Slapd(tmp_path / "central-slapd")
    server.slapadd(BASE_LDIF + ldif.getvalue())
    server.start()
    (tmp_path / "secrets.yaml").write_text(f"ldap_password: {SERVICE_PW!r}\n", encoding="utf-8")
    stores = (
        f"  - {{id: central, type: ldap, uri: '{server.uri}', bind_dn: '{SERVICE_DN}',"
        f" password: !secret ldap_password,\n"
        f"     customers: {{base: '{CUSTOMERS}'}}, cards: {{base: '{CARDS}'}}}}\n"
        "  - {id: local, type: sqlite, path: replica.sqlite3}"
    )
    try:
        revoked_epc = people[0][0]
        server.ldapmodify(
            f"dn: vipsenseEpc={revoked_epc},{CARDS}\nchangetype: modify\n"
            "replace: vipsenseCardStatus\nvipsenseCardStatus: revoked\n"
        )
        branch, plugin = make_branch(
            stores=stores, tail="sync: {source: central, target: local, interval: 1h}\n"
        )
        assert wait_for(lambda: branch.status.sync.get("state") == "ok", timeout=10)
        assert (branch.status.sync["cards"], branch.status.sync["customers"]) == (10, 10)
        server.kill()
        for epc, _ in people:
            walk_in(branch, epc)
        assert wait_for(lambda: branch.status.counters["arrivals"] == 10, timeout=10)
        assert branch.status.counters["greeted"] == 9
        assert branch.status.counters["rejected"] == 1
        # nine greetings to the lobby, and the revoked card to the lobby and the branch manager
        assert wait_for(lambda: len(plugin.pda.sent) == 11)
        greeted = {n.visit.customer.customer_no for n in plugin.pda.sent if n.visit.kind is VisitKind.GREETED}
        assert greeted == {no for _, no in people[1:]}
        assert {n.visit.store_id for n in plugin.pda.sent} == {"local"}
        assert branch.status.devices["central"].state == "unavailable"
    finally:
        server.stop()
