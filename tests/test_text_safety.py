"""Text that cannot attack a terminal, numbers masked however they are written, and fields of bounded
length (the penetration test's points 9, 10 and 12).  Customer data arrives with ESC sequences, OSC
titles, NUL and forged lines; it is cleaned when stored and escaped again wherever it is printed:
the real command line, the console notifier of a running branch, the SMS text, a sync."""

from __future__ import annotations

import datetime as dt
import io
import sqlite3
import textwrap

import pytest

from vipsense.model import Arrival, Card, Customer, Role, Staff, TagRead, Visit, VisitKind
from vipsense.output import Output

from .conftest import BASE_PROFILE, wait_for
from .keyed import keyed_branch

CLEAR = "\x1b[2J"  #: clears the screen
TITLE = "\x1b]0;vipsense pwned\x07"  #: sets the terminal's title (OSC ... BEL)
FORGED = "fx\ntier: diamond"  #: a line that looks like vipsense's own
ID, MOBILE = "310115198002081033", "13900007919"


def no_controls(text: str) -> None:
    """No byte a terminal would act on: ESC, BEL, NUL, CR, and no other C0/C1 control."""
    bad = [hex(ord(ch)) for ch in text if (ord(ch) < 0x20 and ch != "\n") or 0x7F <= ord(ch) < 0xA0]
    assert bad == [], (bad, text)


@pytest.fixture
def branch(tmp_path, capsys):
    return keyed_branch(tmp_path, capsys, keyed=False)  # as profiles are today: runs before the fix too


def hostile_csv(path) -> None:
    rows = [
        "customer_no,name,company,usual_business,tier,id_number,mobile,consent",
        f'C20,Evil{CLEAR}Name,{TITLE}Corp,"{FORGED}",gold,{ID},{MOBILE},yes',
        "C21,Nul\x00Name,,,gold,,,",
        "*,Star,,,gold,,,",
        " C22,Leading,,,gold,,,",
        "C23 ,Trailing,,,gold,,,",
        f"C24,Ada {ID},Tel +86 139 0000 7919,021-58881234,gold,,,yes",
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


# -- point 9: control characters ---------------------------------------------------------------------


def test_an_import_stores_clean_text_and_refuses_nul_and_odd_customer_numbers_by_line(branch):
    path = branch.dir / "customers.csv"
    hostile_csv(path)
    code, out, err = branch.cli("customers", "import", str(path), who="boss")
    assert (code, out) == (1, "2 customers imported, 4 rejected of 6 rows\n")
    assert err.splitlines()[1:] == [
        "  line 4: name: contains a NUL character",
        "  line 5: customer_no: '*' holds a wildcard (* or ?)",
        "  line 6: customer_no: ' C22' has white space around it",
        "  line 7: customer_no: 'C23 ' has white space around it",
    ]
    stored = branch.rows("SELECT name, company, usual_business FROM customers WHERE customer_no = 'C20'")
    assert stored == [("Evil[2JName", "]0;vipsense pwnedCorp", "fx tier: diamond")]


def test_a_rejected_row_quoting_a_number_never_shows_it_in_clear(branch):
    """A customer number that is someone's ID or mobile number, refused for the white space around it:
    the reason quotes the value, masked."""
    path = branch.dir / "customers.csv"
    path.write_text(f"customer_no,name\n {ID},Ada\n{MOBILE} ,Bo\n", encoding="utf-8")
    code, _, err = branch.cli("customers", "import", str(path), who="boss")
    assert code == 1
    assert err.splitlines()[1:] == [
        "  line 2: customer_no: ' **************1033' has white space around it",
        "  line 3: customer_no: '139****7919 ' has white space around it",
    ]


def test_customers_show_escapes_what_was_stored_before_and_forges_no_line(branch):
    path = branch.dir / "customers.csv"
    hostile_csv(path)
    branch.cli("customers", "import", str(path), who="boss")
    db = sqlite3.connect(branch.identity_file)  # data from before the rule, or written by another tool
    db.execute(
        "UPDATE customers SET name = ?, company = ?, usual_business = ? WHERE customer_no = 'C20'",
        (f"Evil{CLEAR}Name", f"{TITLE}Corp", FORGED),
    )
    db.commit()
    db.close()
    code, out, err = branch.cli("customers", "show", "C20", who="lobby")
    assert (code, err) == (0, "")
    no_controls(out)
    lines = out.splitlines()
    assert lines[0] == "customer C20  Evil\\x1b[2JName"
    assert "  company:    \\x1b]0;vipsense pwned\\x07Corp" in lines
    assert "  business:   fx\\ntier: diamond" in lines
    assert [line for line in lines if "tier:" in line.split("\\n")[0]] == ["  tier:       Gold"]
    code, out, _ = branch.cli("customers", "search", "--customer-no", f"C{CLEAR}", who="lobby")
    assert code == 1
    no_controls(out + branch.capsys.readouterr().err)


def test_cards_list_and_show_escape_stored_text(branch):
    branch.cli("cards", "issue", "--customer", "C1", "--epc", "E2000000000000000000AAAA", "--reason",
               f"walk-in{CLEAR}", who="issuer")  # fmt: skip
    db = sqlite3.connect(branch.identity_file)
    db.execute("UPDATE cards SET tier = ? WHERE epc = 'E2000000000000000000AAAA'", (f"gold{TITLE}",))
    db.commit()
    db.close()
    code, out, _ = branch.cli("cards", "list", who="boss")
    assert code == 0
    no_controls(out)
    assert "gold\\x1b]0;vipsense pwned\\x07" in out
    code, out, _ = branch.cli("cards", "show", "E2000000000000000000AAAA", who="boss")
    assert code == 0
    no_controls(out)
    assert "walk-in\\x1b[2J" in out


SEED = f"""\
customers:
  - {{customer_no: C1, name: "Evil\\e[2JAda\\nTier: diamond", company: "\\e]0;pwned\\aAcme", tier: gold,
     id_number: "110101199003071234", usual_business: "ID {ID}", client_manager: cm1}}
cards:
  - {{epc: E20000000000000000000001, customer_no: C1}}
"""


def test_the_console_of_a_running_branch_prints_no_control_sequence(running_branch):
    screen = io.StringIO()
    branch = running_branch(BASE_PROFILE, seed=SEED, output=Output(screen, live=False))
    for _ in range(3):
        branch.pipeline.submit(TagRead("door", 1, "E20000000000000000000001", -50.0, branch.clock.mono()))
    assert wait_for(lambda: "VIP ARRIVAL" in screen.getvalue())
    text = screen.getvalue()
    no_controls(text)
    assert "Evil[2JAda Tier: diamond" in text  # cleaned when the seed was stored
    assert ID not in text and f"ID {'*' * 14}{ID[-4:]}" in text


def visit(customer: Customer) -> Visit:
    return Visit(
        visit_id="v1",
        branch_id="sh",
        kind=VisitKind.GREETED,
        arrival=Arrival("E2000001", "door", 1, 0.0, 0.0, 3, -50.0),
        arrived_at=dt.datetime(2026, 11, 23, 9, 41).timestamp(),
        card=Card("E2000001", customer.customer_no),
        customer=customer,
        tier=customer.tier,
    )


DIRTY = Customer(
    "C1",
    f"Evil{CLEAR}Ada{TITLE}\n│ tier: DIAMOND",
    company=f"Acme{CLEAR}",
    usual_business=f"call tel+86{MOBILE} or ID{ID}",
    tier=f"gold{CLEAR}",
    client_manager="cm1",
    id_number=ID,
    mobile=MOBILE,
)
STAFF = {"cm1": Staff("cm1", f"Li{CLEAR}Mei", Role.CLIENT_MANAGER, mobile="13900000001")}


def test_the_console_notifier_escapes_a_customer_stored_before_the_rule(tmp_path):
    import logging

    from vipsense.api import PluginContext
    from vipsense.clock import Clock
    from vipsense.plugins.notifiers.console import ConsoleNotifier, ConsoleSettings

    ctx = PluginContext(
        "sh", "SH", "screen", tmp_path, tmp_path, Clock(), Output(live=False), logging.getLogger("t"), STAFF
    )
    text = ConsoleNotifier(ConsoleSettings(color="never"), ctx).render(visit(DIRTY), "lobby manager X")
    no_controls(text)
    lines = text.splitlines()
    assert not any(line.startswith("│ tier:") for line in lines), text  # no forged line
    assert "│ Evil\\x1b[2JAda\\x1b]0;vipsense pwned\\x07\\n│ tier: DIAMOND  ·  Acme\\x1b[2J" in lines
    assert MOBILE not in text and ID not in text and "tel+86139****7919" in text


def test_the_sms_text_carries_no_control_character_and_no_number(tmp_path):
    from vipsense.sms import render

    for language in ("en", "zh"):
        text = render(visit(DIRTY), branch_name=f"B{CLEAR}", staff=STAFF, language=language)
        no_controls(text)
        assert "\n" not in text and MOBILE not in text and ID not in text


# -- point 10: numbers however written ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("tel+8613900007919", "tel+86139****7919"),
        ("ID310115198002081033", "ID**************1033"),
        ("tel 139 0000 7919", "tel 139 **** 7919"),
        ("+86 139-0000-7919", "+86 139-****-7919"),
        ("Wang 310115 19800208 1033", "Wang ****** ******** 1033"),
        ("old ID 310115800208103", "old ID ***********8103"),
        ("王建国310115198002081033", "王建国**************1033"),
        ("021-58881234", "***-****1234"),
        ("(021) 5888 1234", "(***) **** 1234"),
        ("58881234", "****1234"),
        ("+86 21 5888 1234", "+86 ** **** 1234"),
        # never an EPC, a customer number, a date or a time
        ("card E2801160600002084C1A0001", "card E2801160600002084C1A0001"),
        ("card 13900007919ABCDEF12345678", "card 13900007919ABCDEF12345678"),
        ("customers C13900007919,C1000001", "customers C13900007919,C1000001"),
        ("visits before 2026-03-01: 5 deleted", "visits before 2026-03-01: 5 deleted"),
        ("at 1717000000.25", "at 1717000000.25"),
    ],
)
def test_free_text_masks_numbers_however_written(text, masked):
    from vipsense.privacy import mask_personal_numbers

    assert mask_personal_numbers(text) == masked


def test_a_landline_masks_to_the_same_digits_however_written():
    from vipsense.privacy import mask_personal_numbers

    shown = {mask_personal_numbers(t).replace("*", "").strip("-() +") for t in
             ("021-58881234", "02158881234", "(021) 5888-1234", "58881234", "+86 21 5888 1234")}  # fmt: skip
    assert {s[-4:] for s in shown} == {"1234"} and all(set(s[:-4]) <= set(" -()+86") for s in shown)


def test_an_id_number_in_a_name_is_masked_on_the_command_line_unless_unmasked(branch):
    path = branch.dir / "customers.csv"
    hostile_csv(path)
    branch.cli("customers", "import", str(path), who="boss")
    code, out, _ = branch.cli("customers", "show", "C24", who="lobby")
    assert code == 0
    assert out.splitlines()[:3] == [
        "customer C24  Ada **************1033",
        "  tier:       Gold",
        "  company:    Tel +86 139 **** 7919",
    ]
    assert "  business:   ***-****1234" in out.splitlines()
    assert ID not in out
    code, out, _ = branch.cli("customers", "show", "C24", "--unmask", "--reason", "check", who="boss")
    assert out.splitlines()[0] == f"customer C24  Ada {ID}"


# -- point 12: field lengths ---------------------------------------------------------------------------


def test_a_field_of_200000_characters_rejects_its_row_and_the_import_goes_on(branch):
    path = branch.dir / "customers.csv"
    huge = "x" * 200_000
    path.write_text(
        f'customer_no,name,company\nC30,Before,\nC31,Huge,"{huge}"\nC32,{huge},\nC33,After,\n',
        encoding="utf-8",
    )
    code, out, err = branch.cli("customers", "import", str(path), who="boss")
    assert (code, out) == (1, "2 customers imported, 2 rejected of 4 rows\n")
    assert err.splitlines()[1:] == [
        "  line 3: company: 200,000 characters, at most 200 are allowed",
        "  line 4: name: 200,000 characters, at most 200 are allowed",
    ]
    assert "Traceback" not in err
    assert [branch.customer(no) is not None for no in ("C30", "C31", "C32", "C33")] == [
        True,
        False,
        False,
        True,
    ]


def test_a_cards_file_with_a_huge_field_is_reported_by_row_too(branch):
    path = branch.dir / "cards.csv"
    path.write_text(
        f"epc,customer_no,tier\nE2000000000000000000BBBB,C1,{'g' * 140_000}\n"
        "E2000000000000000000CCCC,C1,gold\n",
        encoding="utf-8",
    )
    code, out, err = branch.cli("cards", "import", str(path), who="issuer")
    assert (code, out) == (1, "1 card imported, 1 rejected of 2 rows\n")
    assert err.splitlines()[1:] == ["  line 2: tier: 140,000 characters, at most 32 are allowed"]


@pytest.mark.parametrize(
    ("column", "limit"),
    [("customer_no", 64), ("name", 200), ("company", 200), ("id_number", 32), ("mobile", 32),
     ("usual_business", 1000), ("tier", 32), ("client_manager", 64)],
)  # fmt: skip
def test_each_customer_field_has_the_documented_maximum(branch, column, limit):
    """A value of the maximum length is taken, one character more rejects its row (docs/cards.md)."""
    header = "customer_no,name" if column in ("customer_no", "name") else f"customer_no,name,{column}"
    rows = []
    for n, length in ((0, limit), (1, limit + 1)):
        values = {"customer_no": f"C4{n}", "name": "N", column: "7" * length}
        rows.append(",".join(values[c] for c in header.split(",")))
    (branch.dir / "c.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    _, out, err = branch.cli("customers", "import", str(branch.dir / "c.csv"), who="boss")
    reasons = err.splitlines()[1:]
    assert f"  line 3: {column}: {limit + 1:,} characters, at most {limit:,} are allowed" in reasons
    if column == "tier":  # within the length, 7s are still no tier of the profile
        assert reasons[0] == f"  line 2: tier: unknown tier {'7' * limit!r}"
    else:
        assert out == "1 customer imported, 1 rejected of 2 rows\n", err


# -- sync -----------------------------------------------------------------------------------------------


def test_a_sync_cleans_text_and_leaves_out_a_customer_holding_nul(tmp_path):
    from vipsense.config.profile import load_profile
    from vipsense.identity.standalone import build
    from vipsense.identity.sync import sync_once
    from vipsense.pluginhost import load_host
    from vipsense.storage.audit import AuditLog

    profile = tmp_path / "branch.yaml"
    profile.write_text(
        textwrap.dedent(
            """\
            branch: {id: sh-test, name: Test Branch}
            data_dir: data
            readers: [{id: door, type: simulated, visitors: []}]
            stores:
              - {id: central, type: sqlite, path: central.sqlite3}
              - {id: local, type: sqlite, path: replica.sqlite3}
            sync: {source: central, target: local}
            staff: [{id: boss, name: Boss, role: branch_manager}]
            routing:
              - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: []}
              - {event: suspect, to: branch_manager, via: []}
            """
        ),
        encoding="utf-8",
    )
    host = load_host()
    loaded = load_profile(profile, host)
    central = tmp_path / "central.sqlite3"

    store = build(host, loaded, loaded.stores[0])
    store.open()  # made by the branch's own code, then changed the way a directory could hold it
    store.db.executemany(
        "INSERT INTO customers (customer_no, name, company) VALUES (?, ?, ?)",
        [("C1", f"Ada{CLEAR}\ntier: diamond", f"{TITLE}Acme"), ("C2", "Bo\x00Li", None)],
    )
    store.db.executemany(
        "INSERT INTO cards (epc, customer_no) VALUES (?, ?)",
        [("E20000000000000000000001", "C1"), ("E20000000000000000000002", "C2")],
    )
    store.db.commit()
    store.close()
    assert central.exists()
    result = sync_once(loaded, host)
    replica = sqlite3.connect(tmp_path / "replica.sqlite3")
    assert replica.execute("SELECT customer_no, name, company FROM customers").fetchall() == [
        ("C1", "Ada[2J tier: diamond", "]0;vipsense pwnedAcme")
    ]
    replica.close()
    assert (result.cards, result.customers, result.n_skipped) == (2, 1, 1)
    assert result.skipped == ("customer C2: name: contains a NUL character",)
    audit = AuditLog(tmp_path / "data" / "audit.sqlite3")
    try:
        [entry] = [e for e in audit.entries() if e.action.value == "sync"]
    finally:
        audit.close()
    assert entry.reason == "2 cards, 1 customers; 1 left out: customer C2: name: contains a NUL character"
