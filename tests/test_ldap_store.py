"""The LDAP store against a real OpenLDAP slapd (tests/slapd.py): 10,000 customers and cards loaded
offline, lookups, injection, paging, TLS, the card registry, and outages (killed and frozen slapd)."""

from __future__ import annotations

import datetime as dt
import io
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import attrs
import pytest

from vipsense.api import (
    CardExists,
    CardStatus,
    Duration,
    PluginContext,
    Secret,
    StoreUnsupported,
    UnknownCard,
)
from vipsense.clock import Clock
from vipsense.model import Card, CardAction, CardEvent, Customer, Photo
from vipsense.output import Output

from .conftest import REPO, wait_for
from .profiles import branch_profile
from .slapd import (
    BASE_LDIF,
    CARDS,
    CUSTOMERS,
    DEFAULT_ACL,
    ROOT_DN,
    ROOT_PW,
    SERVICE_DN,
    SERVICE_PW,
    Slapd,
    card_epc,
    customer_no,
    fake_jpeg,
    fictional_cards,
    fictional_customers,
    free_port,
    make_tls,
    missing_tools,
    population_ldif,
)

pytestmark = [pytest.mark.slapd, pytest.mark.slow]  # 10,000 entries loaded, outages waited out

if missing_tools():
    pytest.skip(
        f"slapd tests need OpenLDAP: {', '.join(missing_tools())} missing (bash tests/install.sh)",
        allow_module_level=True,
    )
ldap = pytest.importorskip("ldap", reason="python-ldap is not installed: pip install 'vipsense[ldap]'")

from vipsense.plugins.stores.ldap import make_store  # noqa: E402
from vipsense.plugins.stores.ldap.connection import (  # noqa: E402
    BACKOFF_CAP,
    DirectoryDown,
    DirectoryError,
    check_transport,
)
from vipsense.plugins.stores.ldap.settings import (  # noqa: E402
    CacheSettings,
    CardSettings,
    CustomerSettings,
    LdapSettings,
    TlsSettings,
)
from vipsense.plugins.stores.ldap.store import AmbiguousEntry, LdapStore  # noqa: E402

N = 10_000
FROZEN_EPC = "E200000000000000000F0E2E"  #: the service account may not change this card's status
ACL_FROZEN = f"""\
access to dn.exact="vipsenseEpc={FROZEN_EPC},{CARDS}" attrs=vipsenseCardStatus
    by * read
"""
#: the service account gets at most 500 entries per plain search, unlimited with paging (RFC 2696)
LIMITS = f'limits dn.exact="{SERVICE_DN}" size.soft=500 size.hard=500 size.prtotal=unlimited\n'
SPECIAL_CUSTOMERS = (
    Customer("张001", "张伟", tier="gold", id_number="110101199003071234", mobile="13812345678"),
    Customer("张002", "张伟明", tier="diamond", id_number="110101199003071234", company="明达物流"),
    Customer("Z003", "赵磊", id_number="张三1234"),
    Customer("PH01", "Photo Person", photo=Photo(fake_jpeg(424242))),
)
SPECIAL_CARDS = (
    Card("E20000000000000000000A01", "张001", tier="gold"),
    Card(FROZEN_EPC, "Z003"),
)


def event(
    epc: str, action: CardAction, reason: str = "", detail: str = "", at: float | None = None
) -> CardEvent:
    return CardEvent(epc, action, at if at is not None else time.time(), "zhang.wei", reason, detail)


# -- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def directory(tmp_path_factory, tls):
    """One slapd for the module: 10,000 customers and cards plus a few special ones, loaded offline."""
    root = tmp_path_factory.mktemp("slapd")
    server = Slapd(root / "srv", tls=tls, acl=ACL_FROZEN + DEFAULT_ACL, db_extra=LIMITS)
    population_ldif(root / "population.ldif", N, SPECIAL_CUSTOMERS, SPECIAL_CARDS)
    server.slapadd(root / "population.ldif")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def small_directory(tmp_path):
    """A slapd of its own, for tests that kill or freeze it."""
    server = Slapd(tmp_path / "small")
    population_ldif(tmp_path / "small.ldif", 20)
    server.slapadd(tmp_path / "small.ldif")
    server.start()
    yield server
    server.stop()


def context(tmp_path: Path, log: logging.Logger | None = None) -> PluginContext:
    return PluginContext(
        branch_id="sh-lujiazui",
        branch_name="Lujiazui",
        item_id="directory",
        data_dir=tmp_path,
        profile_dir=tmp_path,
        clock=Clock(),
        output=Output(io.StringIO(), live=False),
        log=log or logging.getLogger("vipsense.store.directory"),
    )


def settings_for(uri: str, **changes) -> LdapSettings:
    base = LdapSettings(
        uri=uri,
        bind_dn=SERVICE_DN,
        password=Secret(SERVICE_PW, "secret:ldap_password"),
        customers=CustomerSettings(base=CUSTOMERS),
        cards=CardSettings(base=CARDS),
    )
    return attrs.evolve(base, **changes)


@pytest.fixture
def open_store(tmp_path):
    made: list[LdapStore] = []

    def make(uri: str, **changes) -> LdapStore:
        store = make_store(settings_for(uri, **changes), context(tmp_path))
        store.open()
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store(directory, open_store):
    return open_store(directory.uri)


def root_connection(server: Slapd):
    conn = ldap.initialize(server.uri)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 2.0)
    conn.simple_bind_s(ROOT_DN, ROOT_PW)
    return conn


# -- the plugin --------------------------------------------------------------------------------------


def test_the_plugin_module_loads_without_importing_python_ldap():
    code = (
        "import sys; import vipsense.plugins.stores.ldap as p; from vipsense.pluginhost import load_host;"
        " h = load_host(); assert 'ldap' in h.types[next(k for k in h.types if k.value == 'store')];"
        " print(sorted(m for m in sys.modules if m == 'ldap' or m.startswith(('ldap.', '_ldap'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_without_python_ldap_the_factory_says_what_to_install(tmp_path):
    code = (
        "import sys; sys.modules['ldap'] = None\n"
        "from vipsense.plugins.stores.ldap import make_store\n"
        "try:\n    make_store(None, None)\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(
        "MissingExtra the LDAP store needs python-ldap: pip install 'vipsense[ldap]'"
    )


def test_a_profile_item_gets_the_defaults_and_typos_are_caught(tmp_path, host, monkeypatch):
    from vipsense.config.profile import ProfileError, load_profile

    monkeypatch.setenv("VIPSENSE_LDAP_URI", "ldaps://ldap.bank.example")
    (tmp_path / "secrets.yaml").write_text(f"ldap_password: {SERVICE_PW!r}\n", encoding="utf-8")
    monkeypatch.delenv("VIPSENSE_SECRETS", raising=False)
    (tmp_path / "seed.yaml").write_text("customers: []\n", encoding="utf-8")
    item = (
        "{id: directory, type: ldap, uri: !env VIPSENSE_LDAP_URI, bind_dn: 'cn=x,dc=bank,dc=example',"
        f" password: !secret ldap_password, timeout: 400ms, customers: {{base: '{CUSTOMERS}'}},"
        f" cards: {{base: '{CARDS}'}}}}"
    )
    good = branch_profile(stores=[item])
    (tmp_path / "branch.yaml").write_text(good, encoding="utf-8")
    loaded = load_profile(tmp_path / "branch.yaml", host, data_dir=tmp_path / "data")
    [cfg] = loaded.stores
    s = cfg.settings
    assert cfg.timeout == 0.4  # the core's key, not the plugin's
    assert (s.uri, s.password.reveal()) == ("ldaps://ldap.bank.example", SERVICE_PW)
    assert (s.connect_timeout, s.operation_timeout) == (0.25, 0.25)
    assert (s.cache.customers, s.cache.cards, s.cache.negative, s.cache.max_entries) == (300, 30, 10, 10_000)
    assert s.customers.attributes.customer_no == "employeeNumber"
    assert s.cards.attributes.allowed_branches == "vipsenseAllowedBranch"
    assert SERVICE_PW not in repr(s) and SERVICE_PW not in str(s)

    bad = good.replace("timeout: 400ms,", "timeout: 400ms, cache: {cards: 30s, negativ: 5s},").replace(
        "customers: {base:", "customers: {filter: 'objectClass=inetOrgPerson', base:"
    )
    (tmp_path / "branch.yaml").write_text(bad, encoding="utf-8")
    with pytest.raises(ProfileError) as err:
        load_profile(tmp_path / "branch.yaml", host, data_dir=tmp_path / "data")
    messages = "\n".join(str(e) for e in err.value.errors)
    assert "stores[0].cache.negativ: unknown key; did you mean 'negative'?" in messages
    assert "stores[0].customers.filter: filter: expected one filter in parentheses" in messages
    assert SERVICE_PW not in messages


def test_plain_text_passwords_go_only_to_loopback():
    for uri in ("ldap://127.0.0.1:389", "ldap://localhost", "ldaps://ldap.bank.example", "ldapi:///"):
        check_transport(settings_for(uri))  # no error, and nothing is sent anywhere
    check_transport(settings_for("ldap://ldap.bank.example", tls=TlsSettings(start_tls=True)))
    check_transport(settings_for("ldap://ldap.bank.example", allow_plaintext_bind=True))
    with pytest.raises(DirectoryError, match="refusing to send the bind password in clear text"):
        check_transport(settings_for("ldap://ldap.bank.example"))
    with pytest.raises(ValueError, match="not with ldaps"):
        settings_for("ldaps://x", tls=TlsSettings(start_tls=True))


# -- lookups over 10,000 entries ---------------------------------------------------------------------


def test_cards_and_customers_resolve_exactly(store):
    expected_customers = {c.customer_no: c for c in fictional_customers(N)}
    expected_cards = {c.epc: c for c in fictional_cards(N)}
    for i in (0, 1, 7, 10, 11, 97, 4242, N - 1):
        card = store.find_card(card_epc(i).lower())  # EPCs compare without case
        assert card == expected_cards[card_epc(i)]
        assert store.find_customer(card.customer_no) == expected_customers[customer_no(i)]
    assert store.find_customer(customer_no(0)).photo == Photo(fake_jpeg(0), "image/jpeg")
    assert store.find_customer(customer_no(2)).consent_date == dt.date(2024, 1, 1) + dt.timedelta(days=2)
    assert store.find_card(card_epc(3)).allowed_branches == ("SZ001", "SZ002")  # multi-valued
    assert store.find_card(card_epc(97)).status is CardStatus.LOST
    assert store.find_card("E2801170FFFFFFFFFFFFFFFF") is None
    assert store.find_customer("V9999999") is None


def test_chinese_names_and_numbers(store):
    wei = store.find_customer("张001")
    assert (wei.name, wei.tier, wei.id_number, wei.mobile) == (
        "张伟",
        "gold",
        "110101199003071234",
        "13812345678",
    )
    assert store.find_card("E20000000000000000000A01").customer_no == "张001"
    assert [c.customer_no for c in store.find_customers_by_id_number("110101199003071234")] == [
        "张001",
        "张002",
    ]
    assert [c.name for c in store.find_customers_by_id_number("张三1234")] == ["赵磊"]
    assert store.find_customer(customer_no(2)).name == "张" + "伟"  # a generated Chinese name


def test_filter_injection_matches_nothing(store, directory):
    hostile = ("*)(objectClass=*", "*", "V000000*", "张*", "*))(|(employeeNumber=*", "V0000001\\", "x\x00*")
    for value in hostile:
        assert store.find_customer(value) is None, value
        assert store.find_card(value) is None, value
        assert store.find_customers_by_id_number(value) == [], value
    assert store.find_customers_by_id_number("1101*") == []
    # the same value unescaped really would match: ldap.md §2 saw 2 entries, here thousands
    conn = root_connection(directory)
    try:
        raw = conn.search_s(
            CUSTOMERS,
            ldap.SCOPE_SUBTREE,
            "(&(objectClass=inetOrgPerson)(employeeNumber=*)(objectClass=*))",
            ["1.1"],
        )
        wild = conn.search_s(CUSTOMERS, ldap.SCOPE_SUBTREE, "(employeeNumber=张*)", ["1.1"])
    finally:
        conn.unbind_s()
    assert len(raw) > N and len(wild) == 2


def test_a_literal_star_finds_exactly_its_entry(store, directory, open_store):
    assert store.find_customer("张*") is None
    directory.ldapadd(
        f"dn: employeeNumber=张*,{CUSTOMERS}\nobjectClass: inetOrgPerson\ncn: 星\nsn: 星\n"
        "displayName: 张星号\nemployeeNumber: 张*\n"
    )
    fresh = open_store(directory.uri)  # the first store remembers "no such customer" for 10 s
    assert fresh.find_customer("张*").name == "张星号"
    assert fresh.find_customer("张001").name == "张伟"


def test_a_key_on_two_entries_is_refused_not_guessed(store, directory):
    epc = "E2000000000000000000D0D0"
    directory.ldapadd(
        f"dn: ou=old,{CARDS}\nobjectClass: organizationalUnit\nou: old\n\n"
        f"dn: vipsenseEpc={epc},ou=old,{CARDS}\nobjectClass: vipsenseCard\nvipsenseEpc: {epc}\n"
        "vipsenseCustomerNo: DUP1\nvipsenseCardStatus: revoked\n\n"
        f"dn: vipsenseEpc={epc},{CARDS}\nobjectClass: vipsenseCard\nvipsenseEpc: {epc}\n"
        "vipsenseCustomerNo: DUP1\n\n"
        f"dn: ou=old,{CUSTOMERS}\nobjectClass: organizationalUnit\nou: old\n\n"
        f"dn: cn=dup,ou=old,{CUSTOMERS}\nobjectClass: inetOrgPerson\ncn: dup\nsn: dup\n"
        "employeeNumber: 张001\n"
    )
    with pytest.raises(AmbiguousEntry, match=f"card {epc}: more than one entry under {CARDS} matches"):
        store.find_card(epc)
    with pytest.raises(AmbiguousEntry, match="customer: more than one entry"):
        store.find_customer("张001")
    assert store.find_customer("张002").name == "张伟明"  # the rest of the directory still answers
    directory.ldapdelete(f"cn=dup,ou=old,{CUSTOMERS}")


def test_listings_page_through_everything(store, directory):
    conn = ldap.initialize(directory.uri)
    conn.simple_bind_s(SERVICE_DN, SERVICE_PW)
    with pytest.raises(ldap.SIZELIMIT_EXCEEDED):  # without paging the service account gets 500
        conn.search_s(CUSTOMERS, ldap.SCOPE_SUBTREE, "(objectClass=inetOrgPerson)", ["1.1"])
    conn.unbind_s()
    t0 = time.perf_counter()
    numbers = [c.customer_no for c in store.iter_customers()]
    elapsed = time.perf_counter() - t0
    assert len(numbers) >= N + len(SPECIAL_CUSTOMERS) and len(set(numbers)) == len(numbers)
    assert {customer_no(0), customer_no(N - 1), "张001"} <= set(numbers)
    cards = list(store.iter_cards())
    assert len(cards) >= N + len(SPECIAL_CARDS)
    assert elapsed < 5, f"listing {len(numbers)} customers took {elapsed:.1f} s"
    lost = store.list_cards(status=CardStatus.LOST)
    assert [c.epc for c in lost] == sorted(c.epc for c in fictional_cards(N) if c.status is CardStatus.LOST)
    assert [c.epc for c in store.list_cards(customer_no(5))] == [card_epc(5)]


# -- the cache ---------------------------------------------------------------------------------------


def test_cache_expiry_and_negative_caching(directory, open_store):
    cache = CacheSettings(customers=Duration(0.3), cards=Duration(0.3), negative=Duration(0.3))
    store = open_store(directory.uri, cache=cache)
    epc = "E2000000000000000000C0DE"
    assert store.find_card(epc) is None
    directory.ldapadd(
        f"dn: vipsenseEpc={epc},{CARDS}\nobjectClass: vipsenseCard\nvipsenseEpc: {epc}\n"
        f"vipsenseCustomerNo: {customer_no(1)}\n"
    )
    assert store.find_card(epc) is None  # "no such card" is remembered for the negative TTL
    time.sleep(0.35)
    assert store.find_card(epc).status is CardStatus.ACTIVE
    # The bank's own tool revokes it: the cache may hide that for the (short) card TTL, no longer.
    directory.ldapmodify(
        f"dn: vipsenseEpc={epc},{CARDS}\nchangetype: modify\n"
        "replace: vipsenseCardStatus\nvipsenseCardStatus: revoked\n"
    )
    assert store.find_card(epc).status is CardStatus.ACTIVE
    time.sleep(0.35)
    assert store.find_card(epc).status is CardStatus.REVOKED


def test_cached_lookups_do_not_touch_the_directory(store, directory):
    store.find_card(card_epc(12))
    store.find_customer(customer_no(12))
    directory.freeze()
    try:
        t0 = time.perf_counter()
        for _ in range(1000):
            assert store.find_card(card_epc(12)).stale is False
            assert store.find_customer(customer_no(12)).stale is False
        assert time.perf_counter() - t0 < 0.5
    finally:
        directory.thaw()


# -- outages -----------------------------------------------------------------------------------------


def timed(fn, *args):
    t0 = time.perf_counter()
    try:
        return fn(*args), time.perf_counter() - t0
    except Exception as exc:
        return exc, time.perf_counter() - t0


def test_killed_directory_serves_stale_fails_fast_and_recovers(small_directory, tmp_path, caplog):
    from vipsense.devices import Reply, StoreRunner
    from vipsense.status import DeviceStatus

    cache = CacheSettings(customers=Duration(0.2), cards=Duration(0.2), negative=Duration(0.2))
    store = make_store(settings_for(small_directory.uri, cache=cache), context(tmp_path))
    runner = StoreRunner("directory", store, 0.5, DeviceStatus("store", "ldap"))
    runner.open()
    assert runner.wait_open(5)
    warm = [card_epc(i) for i in range(5)]
    for epc in warm:
        assert runner.lookup("find_card", epc)[0] is Reply.ANSWERED
        assert runner.lookup("find_customer", store.find_card(epc).customer_no)[0] is Reply.ANSWERED
    assert store.degraded() == ""
    time.sleep(0.25)  # every cached entry has outlived its TTL

    small_directory.kill()
    durations = []
    for epc in warm:
        card, took = timed(store.find_card, epc)
        durations.append(took)
        assert card.stale and card.epc == epc
        customer, took = timed(store.find_customer, card.customer_no)
        durations.append(took)
        assert customer.stale and customer.customer_no == card.customer_no
    assert "directory unreachable" in store.degraded() and "cached entries" in store.degraded()
    failures, reasons = 0, set()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:  # uncached lookups: raise, fast, whether backing off or retrying
        result, took = timed(store.find_card, card_epc(15))
        assert isinstance(result, DirectoryDown), result
        durations.append(took)
        failures += 1
        reasons.add(store.degraded())
        time.sleep(0.01)
    assert len(reasons) == 1, reasons  # stable while down: the core logs changes, not every answer
    assert max(durations) < 0.5, f"slowest call {max(durations) * 1000:.0f} ms"
    assert failures > 20 and store.link.retry.delay >= 0.4  # retried only after each backoff
    reply, result = runner.lookup("find_card", card_epc(16))  # the core sees "unavailable"
    assert (reply, result) == (Reply.NO_ANSWER, None)
    reply, result = runner.lookup("find_card", warm[0])
    assert reply is Reply.ANSWERED and result.stale
    assert (runner.status.state, runner.status.reason) == ("degraded", store.degraded())
    assert "Can't contact LDAP server" in store.degraded()

    small_directory.start()  # the same port
    assert wait_for(lambda: isinstance(timed(store.find_card, card_epc(15))[0], Card), BACKOFF_CAP + 1)
    assert store.find_card(card_epc(15)).customer_no == customer_no(15)
    assert store.find_card(warm[0]).stale is False
    assert store.degraded() == ""
    assert runner.lookup("find_card", warm[1])[0] is Reply.ANSWERED and runner.status.state == "ready"
    logged = [r.getMessage() for r in caplog.records if r.name == "vipsense.store.directory"]
    assert sum("unreachable" in m for m in logged) <= 3, logged  # state changes, not every retry
    assert any("reachable again" in m for m in logged)
    runner.close()


def test_frozen_directory_times_out_within_the_budget(small_directory, tmp_path):
    store = make_store(settings_for(small_directory.uri), context(tmp_path))
    store.open()
    card = store.find_card(card_epc(1))
    small_directory.freeze()
    try:
        store.cards.clear()  # nothing cached: the lookup must reach the network and give up
        result, took = timed(store.find_card, card_epc(1))
        assert isinstance(result, DirectoryDown) and "timed out" in str(result)
        assert 0.2 < took < 0.4, took  # the operation timeout (250 ms), not the 500 ms budget
        result, took = timed(store.find_card, card_epc(2))
        assert isinstance(result, DirectoryDown) and took < 0.02  # backing off: no network at all
        time.sleep(0.15)
        result, took = timed(store.find_card, card_epc(2))  # a new connection to a hung server
        assert isinstance(result, DirectoryDown) and took < 0.55, took
        store.cards.put(card.epc, (card, f"vipsenseEpc={card.epc},{CARDS}"))
        assert store.find_card(card_epc(1)).stale
    finally:
        small_directory.thaw()
    assert wait_for(lambda: isinstance(timed(store.find_card, card_epc(2))[0], Card), BACKOFF_CAP + 1)
    assert store.find_card(card_epc(1)).stale is False
    store.close()


def test_backoff_doubles_to_its_cap(tmp_path):
    """Against a port where nothing listens: attempts are forced, to read the schedule quickly."""
    store = make_store(settings_for(f"ldap://127.0.0.1:{free_port()}"), context(tmp_path))
    with pytest.raises(DirectoryDown):
        store.open()
    schedule = [store.link.retry.delay]
    for _ in range(6):
        store.link.next_retry = 0.0
        with pytest.raises(DirectoryDown):
            store.find_card(card_epc(1))
        schedule.append(store.link.retry.delay)
    assert schedule == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    before = store.link.next_retry
    with pytest.raises(DirectoryDown):
        store.find_card(card_epc(2))  # inside the backoff: no attempt, same schedule
    assert store.link.next_retry == before


# -- TLS and the bind secret -------------------------------------------------------------------------


def test_ldaps_and_start_tls_with_the_bank_ca(directory, tls, open_store):
    via_ldaps = open_store(directory.ldaps_uri, tls=TlsSettings(ca_file=str(tls.ca)))
    assert via_ldaps.find_card(card_epc(8)).customer_no == customer_no(8)
    via_start_tls = open_store(directory.uri, tls=TlsSettings(start_tls=True, ca_file=str(tls.ca)))
    assert via_start_tls.find_customer(customer_no(8)).name


@pytest.mark.parametrize("start_tls", [False, True])
def test_a_wrong_ca_fails_with_a_clear_error(directory, tls, tmp_path, start_tls):
    uri = directory.uri if start_tls else directory.ldaps_uri
    store = make_store(
        settings_for(uri, tls=TlsSettings(start_tls=start_tls, ca_file=str(tls.wrong_ca))), context(tmp_path)
    )
    with pytest.raises(DirectoryError) as err:
        store.open()
    assert f"{uri}: TLS handshake failed: the server certificate is not signed by a CA in" in str(err.value)
    assert str(tls.wrong_ca) in str(err.value)


def test_a_missing_ca_file_is_named(tmp_path):
    with pytest.raises(DirectoryError, match=r"tls\.ca_file: no such file: .*nope\.pem"):
        make_store(
            settings_for("ldaps://127.0.0.1:1", tls=TlsSettings(ca_file="nope.pem")), context(tmp_path)
        )


def test_a_directory_that_demands_a_client_certificate(tmp_path, tls, open_store):
    server = Slapd(tmp_path / "mtls", tls=tls, verify_client="demand")
    server.slapadd(BASE_LDIF)
    server.start()
    try:
        ca = str(tls.ca)
        anonymous = make_store(settings_for(server.ldaps_uri, tls=TlsSettings(ca_file=ca)), context(tmp_path))
        with pytest.raises(DirectoryError) as err:  # the hang-up is seen as one of two errors: a race
            anonymous.open()
        assert str(err.value) == (
            f"{server.ldaps_uri}: TLS handshake failed: the server closed the connection"
            " (does it require a client certificate? set tls.cert_file and tls.key_file)"
        )
        with_cert = TlsSettings(ca_file=ca, cert_file=str(tls.client_cert), key_file=str(tls.client_key))
        assert open_store(server.ldaps_uri, tls=with_cert).find_card(card_epc(1)) is None  # bound, empty
    finally:
        server.stop()


def test_the_password_comes_from_a_secret_and_is_never_shown(directory, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    s = settings_for(directory.uri)
    assert isinstance(s.password, Secret) and s.password.reveal() == SERVICE_PW
    store = make_store(s, context(tmp_path))
    store.open()
    store.find_customer("张001")
    store.find_customers_by_id_number("110101199003071234")
    wrong = make_store(settings_for(directory.uri, password=Secret("wrong-" + SERVICE_PW)), context(tmp_path))
    with pytest.raises(DirectoryDown) as err:
        wrong.open()
    assert "Invalid credentials" in str(err.value)
    shown = "\n".join(
        [repr(s), str(s), repr(store), store.degraded(), str(err.value), wrong.degraded(), caplog.text]
    )
    for text in (SERVICE_PW, "110101199003071234", "13812345678"):
        assert text not in shown
    assert "**************1234" in caplog.text  # the ID number was logged masked
    with pytest.raises(DirectoryDown):  # a refused bind backs off too: no password hammering
        wrong.find_card(card_epc(1))
    assert wrong.link.next_retry > time.monotonic()
    store.close()


def test_open_names_a_missing_base(directory, tmp_path):
    store = make_store(
        settings_for(directory.uri, cards=CardSettings(base="ou=kards,dc=bank,dc=example")), context(tmp_path)
    )
    with pytest.raises(DirectoryError) as err:
        store.open()
    assert (
        str(err.value) == f"cards.base: ou=kards,dc=bank,dc=example is not in the directory {directory.uri}"
    )


# -- the card registry -------------------------------------------------------------------------------


def test_issue_status_history_and_listing(store, open_store, directory):
    epc = "E2000000000000000000B001"
    card = Card(
        epc,
        "张001",
        tier="gold",
        valid_until=dt.date(2030, 12, 31),
        allowed_branches=("sh-lujiazui", "bj-guomao"),
        tid="E2003412AB",
    )
    store.issue_card(card, event(epc, CardAction.ISSUED, "新卡：首次发放", at=1000.0))
    with pytest.raises(CardExists):
        store.issue_card(card, event(epc, CardAction.ISSUED))
    other = open_store(directory.uri)  # another branch: reads the directory, not our cache
    assert other.find_card(epc) == attrs.evolve(card, allowed_branches=("bj-guomao", "sh-lujiazui"))

    hostile = 'lost at "the door", then; {"seq": 99}\nsecond line'
    lost = store.set_card_status(epc, CardStatus.LOST, event(epc, CardAction.LOST, hostile, at=1001.0))
    assert lost.status is CardStatus.LOST and store.find_card(epc).status is CardStatus.LOST
    store.set_card_status(epc, CardStatus.ACTIVE, event(epc, CardAction.RESTORED, "找到了", at=1002.0))
    history = other.card_history(epc)
    assert [(e.action, e.reason, e.at) for e in history] == [
        (CardAction.ISSUED, "新卡：首次发放", 1000.0),
        (CardAction.LOST, hostile, 1001.0),
        (CardAction.RESTORED, "找到了", 1002.0),
    ]
    assert all(e.epc == epc and e.actor == "zhang.wei" for e in history)
    assert [c.epc for c in store.list_cards("张001")] == ["E20000000000000000000A01", epc]
    assert [c.epc for c in store.list_cards("张001", CardStatus.ACTIVE)] == ["E20000000000000000000A01", epc]
    with pytest.raises(UnknownCard):
        store.set_card_status("E2FFFF", CardStatus.LOST, event("E2FFFF", CardAction.LOST))
    with pytest.raises(UnknownCard):
        store.card_history("E2FFFF")


def test_a_dn_special_epc_is_one_entry(store, directory):
    epc = "E200,OU=EVIL+CN=X\\;"
    store.issue_card(Card(epc, customer_no(3)), event(epc, CardAction.ISSUED))
    conn = root_connection(directory)
    try:
        [(dn, _)] = conn.search_s(
            CARDS, ldap.SCOPE_ONELEVEL, f"(vipsenseEpc={ldap.filter.escape_filter_chars(epc)})"
        )
        assert ldap.dn.str2dn(dn)[0] == [("vipsenseEpc", epc, 1)]
        assert conn.search_s(CARDS, ldap.SCOPE_SUBTREE, "(ou=EVIL)") == []
    finally:
        conn.unbind_s()
    assert store.card_history(epc)[0].action is CardAction.ISSUED


def test_reissue_revokes_the_old_and_issues_the_new(store):
    old, new = "E2000000000000000000B101", "E2000000000000000000B102"
    store.issue_card(Card(old, customer_no(4)), event(old, CardAction.ISSUED))
    store.reissue_card(
        old,
        Card(new, customer_no(4), tier="platinum"),
        event(old, CardAction.REVOKED, "卡片损坏", f"replaced by {new}"),
        event(new, CardAction.REISSUED, "卡片损坏", f"replaces {old}"),
    )
    assert store.find_card(old).status is CardStatus.REVOKED
    assert store.find_card(new).status is CardStatus.ACTIVE
    assert [e.detail for e in store.card_history(old)] == ["", f"replaced by {new}"]
    assert [e.action for e in store.card_history(new)] == [CardAction.REISSUED]
    with pytest.raises(CardExists):  # reissue onto a card that exists: nothing changes
        store.reissue_card(
            new, Card(old, customer_no(4)), event(new, CardAction.REVOKED), event(old, CardAction.REISSUED)
        )
    assert store.find_card(new).status is CardStatus.ACTIVE
    with pytest.raises(UnknownCard):
        store.reissue_card(
            "E2FFFF",
            Card("E2FFFE", "x"),
            event("E2FFFF", CardAction.REVOKED),
            event("E2FFFE", CardAction.REISSUED),
        )
    assert store.find_card("E2FFFE") is None


def test_a_reissue_whose_revocation_fails_is_undone(store, directory, open_store):
    new = "E2000000000000000000B201"
    with pytest.raises(ldap.INSUFFICIENT_ACCESS):  # the ACL forbids changing this card's status
        store.reissue_card(
            FROZEN_EPC,
            Card(new, "Z003"),
            event(FROZEN_EPC, CardAction.REVOKED, detail=f"replaced by {new}"),
            event(new, CardAction.REISSUED),
        )
    fresh = open_store(directory.uri)
    assert fresh.find_card(new) is None  # the new card was removed again: neither happened
    assert store.find_card(new) is None
    assert fresh.find_card(FROZEN_EPC).status is CardStatus.ACTIVE
    assert fresh.card_history(FROZEN_EPC) == []


def test_concurrent_writers_never_lose_or_duplicate_history(directory, open_store):
    epc = "E2000000000000000000B301"
    a, b = open_store(directory.uri), open_store(directory.uri)
    a.issue_card(Card(epc, customer_no(6)), event(epc, CardAction.ISSUED))
    done: list[int] = []

    def toggle(store: LdapStore, who: int) -> None:
        for i in range(10):
            status = CardStatus.LOST if i % 2 == 0 else CardStatus.ACTIVE
            action = CardAction.LOST if i % 2 == 0 else CardAction.RESTORED
            try:
                store.set_card_status(epc, status, attrs.evolve(event(epc, action), actor=f"w{who}-{i}"))
                done.append(who)
            except DirectoryError as exc:  # the history kept changing: the caller may try again
                assert "kept changing" in str(exc)

    threads = [threading.Thread(target=toggle, args=(s, n)) for n, s in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a writer is stuck on the directory"
    history = a.card_history(epc)
    assert len(history) == 1 + len(done) and len(done) >= 10
    assert len({e.actor for e in history}) == len(history)
    conn = root_connection(directory)
    [(_, entry)] = conn.search_s(
        f"vipsenseEpc={epc},{CARDS}", ldap.SCOPE_BASE, attrlist=["vipsenseCardEventCount"]
    )
    conn.unbind_s()
    assert entry["vipsenseCardEventCount"] == [str(len(history)).encode()]


def test_sightings_are_written_only_when_asked(directory, open_store):
    quiet = open_store(directory.uri)
    recording = open_store(directory.uri, record_sightings=True)
    epc = card_epc(30)
    quiet.find_card(epc)
    quiet.card_seen(epc, "sh-lujiazui", 1_764_000_000.0)
    assert open_store(directory.uri).find_card(epc).last_seen_branch is None
    at = 1_764_000_123.456789
    recording.find_card(epc)
    recording.card_seen(epc, "bj-guomao", at)
    seen = open_store(directory.uri).find_card(epc)
    assert seen.last_seen_branch == "bj-guomao" and seen.last_seen_at == pytest.approx(at, abs=1e-6)
    assert recording.find_card(epc).last_seen_branch == "bj-guomao"
    recording.card_seen(card_epc(31), "bj-guomao", at)  # not cached yet: looked up, then written
    assert open_store(directory.uri).find_card(card_epc(31)).last_seen_branch == "bj-guomao"


def test_upsert_cards_adds_changes_and_records_status_changes(store):
    cards = [
        Card("E2000000000000000000B401", customer_no(7)),
        Card("E2000000000000000000B402", customer_no(7)),
    ]
    assert store.upsert_cards(cards, event("", CardAction.ISSUED, "bulk import")) == 2
    changed = [
        attrs.evolve(cards[0], status=CardStatus.LOST),
        attrs.evolve(cards[1], tier="gold", valid_until=dt.date(2031, 1, 31)),
    ]
    assert store.upsert_cards(changed, event("", CardAction.LOST, "bulk import")) == 2
    assert store.find_card(cards[0].epc).status is CardStatus.LOST
    assert (store.find_card(cards[1].epc).tier, store.find_card(cards[1].epc).valid_until) == (
        "gold",
        dt.date(2031, 1, 31),
    )
    assert [e.action for e in store.card_history(cards[0].epc)] == [CardAction.ISSUED, CardAction.LOST]
    assert [e.action for e in store.card_history(cards[1].epc)] == [CardAction.ISSUED]
    assert store.upsert_cards([attrs.evolve(cards[1], tier=None)], event("", CardAction.ISSUED)) == 1
    assert store.find_card(cards[1].epc).tier is None


def test_customers_are_the_banks_master_data(store):
    with pytest.raises(StoreUnsupported, match="master data"):
        store.upsert_customers([Customer("C1", "Ada")])
    with pytest.raises(StoreUnsupported, match="master data"):
        store.replace_all([], [])


# -- the converter and the demo ----------------------------------------------------------------------


def test_csv_seeds_convert_and_load(directory, tmp_path, open_store):
    from vipsense.plugins.stores.ldap.ldif import main

    (tmp_path / "c.csv").write_text(
        "customer_no,name,company,id_number,mobile,tier,consent,consent_date\n"
        'CSV1,"王, 小明",华兴贸易,11010119900307123X,13812345678,gold,true,2025-03-01\n'
        "CSV2, leading space,,,,,,\n",
        encoding="utf-8",
    )
    (tmp_path / "k.csv").write_text(
        "epc,customer_no,status,valid_until,allowed_branches\ne2000000000000000000c5c1,CSV1,lost,2030-12-31,SZ001;SZ002\n",
        encoding="utf-8",
    )
    out = io.StringIO()
    bases = ["--base-customers", f"ou=csv,{CUSTOMERS}", "--base-cards", f"ou=csv,{CARDS}", "--with-bases"]
    assert main([str(tmp_path / "c.csv"), str(tmp_path / "k.csv"), *bases], out) == 0
    directory.ldapadd(out.getvalue())
    store = open_store(directory.uri)
    ming = store.find_customer("CSV1")
    assert (ming.name, ming.company, ming.consent, ming.consent_date) == (
        "王, 小明",
        "华兴贸易",
        True,
        dt.date(2025, 3, 1),
    )
    assert store.find_customer("CSV2").name == " leading space"
    card = store.find_card("E2000000000000000000C5C1")
    assert (card.status, card.allowed_branches, card.valid_until) == (
        CardStatus.LOST,
        ("SZ001", "SZ002"),
        dt.date(2030, 12, 31),
    )


def epc(n: int) -> str:
    return f"E2801160600002084C1A{n:04X}"


def test_the_demo_morning_on_ldap_matches_the_sqlite_demo(tmp_path, monkeypatch, host):
    """profiles/demo-ldap.yaml: the demo data converted to LDIF, loaded online, the morning replayed
    through the real Branch at 20x; the outcome is test_demo.py's."""
    from vipsense.branch import Branch
    from vipsense.config.profile import load_profile

    server = Slapd(tmp_path / "demo-slapd")
    server.slapadd(BASE_LDIF.split(f"dn: {CUSTOMERS}")[0])  # no bases: the converter makes them
    server.start()
    try:
        demo_secrets = (REPO / "profiles" / "secrets.yaml").read_text(encoding="utf-8")  # the PDA key
        (tmp_path / "secrets.yaml").write_text(
            f"{demo_secrets}ldap_password: {SERVICE_PW!r}\n", encoding="utf-8"
        )
        monkeypatch.setenv("VIPSENSE_SECRETS", str(tmp_path / "secrets.yaml"))
        monkeypatch.setenv("VIPSENSE_LDAP_URI", server.uri)
        profile_path = REPO / "profiles" / "demo-ldap.yaml"
        convert = subprocess.run(
            [sys.executable, "-m", "vipsense.plugins.stores.ldap.ldif", "profiles/demo/customers.yaml",
             "--profile", str(profile_path), "--with-bases"],
            capture_output=True, text=True, cwd=REPO, env=os.environ, timeout=60,
        )  # fmt: skip
        assert convert.returncode == 0, convert.stderr
        server.ldapadd(convert.stdout)

        profile = load_profile(profile_path, host, data_dir=tmp_path / "data")
        assert [s.type for s in profile.stores] == ["ldap"]
        out = io.StringIO()
        branch = Branch(profile, host, Clock(20), Output(out, live=False))
        branch.start()
        try:
            deadline = time.monotonic() + 30
            while not branch.readers_finished and time.monotonic() < deadline:
                time.sleep(0.05)
            branch.clock.sleep(float(profile.presence.depart_after) + 0.5)
            assert branch.status.devices["directory"].state == "ready"
        finally:
            branch.stop()
    finally:
        server.stop()

    rows = (
        sqlite3.connect(tmp_path / "data" / "visits.sqlite3")
        .execute("SELECT kind, epc, customer_no, reason, store_id FROM visits")
        .fetchall()
    )
    greeted = sorted(r[2] for r in rows if r[0] == "greeted")
    assert greeted == [f"C10000{n:02d}" for n in range(1, 23)]
    assert sorted((r[2], r[1]) for r in rows if r[0] == "suppressed") == [("C1000003", epc(3))]
    assert sorted((r[2], r[3]) for r in rows if r[0] == "rejected") == [
        ("C1000024", "lost"),
        ("C1000025", "expired"),
        ("C1000026", "wrong_branch"),
    ]
    assert sorted(r[1] for r in rows if r[0] == "unknown") == [
        "300833B2DDD9014000000001",
        "E2003412012345678900AB12",
    ]
    assert len(rows) == 28
    assert {r[4] for r in rows if r[0] != "unknown"} == {"directory"}
    c = branch.status.counters
    assert (c["greeted"], c["rejected"], c["suppressed"], c["unknown"], c["unresolved"]) == (22, 3, 1, 2, 0)
    assert out.getvalue().count("★ 贵宾到店") == 22  # the demo speaks Chinese (branch.locale: zh_CN)
    assert "王建国 Wang Jianguo" in out.getvalue()
