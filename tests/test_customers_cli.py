"""``vipsense customers``: the manual look-up, masking and unmasking, and the customer import, through
the real command line on real SQLite files, with every audit entry checked."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from .keyed import keyed_branch
from .lifecycle import ADA_ID, ADA_MOBILE, BO_ID, host_with_directory


@pytest.fixture
def branch(tmp_path, capsys):
    return keyed_branch(tmp_path, capsys)


def audit_text(branch) -> str:
    """Everything the audit file holds, as text: what someone reading the raw file would see."""
    db = sqlite3.connect(branch.audit_file)
    try:
        return "\n".join(" ".join(str(v) for v in row) for row in db.execute("SELECT * FROM audit"))
    finally:
        db.close()


# -- show ------------------------------------------------------------------------------------------


def test_show_is_masked_by_default_and_audited_as_a_view(branch):
    code, out, err = branch.cli("customers", "show", "C1", who="lobby")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "customer C1  Ada Wong",
        "  tier:       Gold",
        "  company:    -",
        "  ID number:  **************1234",
        "  mobile:     138****5678",
        "  business:   -",
        "  client mgr: cm1 (Client Manager One)",
        "  consent:    given 2024-03-01",
        "  photo:      image/svg+xml, 261 bytes",
        "  cards:      E20000000000000000000001 active",
    ]
    assert ADA_ID not in out and ADA_MOBILE not in out
    assert branch.entries() == [("lobby", "lobby_manager", "view", "C1", "success", "")]


def test_unmask_by_the_branch_manager_with_a_reason_shows_the_numbers_and_is_audited(branch):
    code, out, _ = branch.cli(
        "customers", "show", "C1", "--unmask", "--reason", "customer verifying ID", who="boss"
    )
    assert code == 0
    assert f"  ID number:  {ADA_ID}" in out.splitlines()
    assert f"  mobile:     {ADA_MOBILE}" in out.splitlines()
    assert branch.entries() == [
        ("boss", "branch_manager", "view", "C1", "success", "customer verifying ID"),
        ("boss", "branch_manager", "unmask", "C1", "success", "customer verifying ID"),
    ]
    assert ADA_ID not in audit_text(branch)


@pytest.mark.parametrize(
    ("who", "reason", "message"),
    [
        ("lobby", "customer asked", "lobby (lobby_manager) may not unmask ID and mobile numbers"
         " (customers.unmask needs branch_manager or head_office)"),
        ("boss", "", "--unmask needs --reason: why the numbers must be seen in clear"),
        ("nobody", "x", "unknown staff id 'nobody': not in the staff: of branch.yaml"),
    ],
    ids=["role", "no-reason", "unknown-staff"],
)  # fmt: skip
def test_a_refused_unmask_is_denied_audited_and_shows_nothing(branch, who, reason, message):
    code, out, err = branch.cli("customers", "show", "C1", "--unmask", "--reason", reason, who=who)
    assert (code, out, err) == (1, "", f"vipsense: {message}\n")
    [entry] = branch.entries()
    assert entry[2:5] == ("unmask", "C1", "denied")
    assert entry[5] == (f"{reason} (denied: {message})" if reason else f"denied: {message}")


def test_an_unknown_customer_is_a_clear_error_and_audited(branch):
    assert branch.cli("customers", "show", "C99", who="cm1") == (1, "", "vipsense: unknown customer C99\n")
    assert branch.entries() == [
        ("cm1", "client_manager", "view", "C99", "error", "error: unknown customer C99")
    ]


# -- search ----------------------------------------------------------------------------------------


def test_a_search_by_id_number_needs_a_reason(branch):
    code, out, err = branch.cli("customers", "search", "--id-number", BO_ID, who="boss")
    assert (code, out) == (1, "")
    assert err == "vipsense: a search by ID number needs --reason (e.g. 'phone appointment')\n"
    assert branch.entries() == [
        ("boss", "branch_manager", "lookup", "id_number **************5678", "denied",
         "denied: a search by ID number needs --reason (e.g. 'phone appointment')"),
    ]  # fmt: skip


def test_a_search_by_id_number_finds_the_customer_masked_and_audits_the_customer_number(branch):
    code, out, _ = branch.cli(
        "customers", "search", "--id-number", f" {BO_ID} ", "--reason", "phone appointment", who="boss"
    )
    assert code == 0
    assert out.splitlines()[:4] == [
        "customer C2  Bo Li",
        "  tier:       Platinum",
        "  company:    -",
        "  ID number:  **************5678",
    ]
    assert BO_ID not in out
    assert branch.entries() == [("boss", "branch_manager", "lookup", "C2", "success", "phone appointment")]
    assert BO_ID not in audit_text(branch)


def test_a_search_without_a_match_says_so_and_is_still_audited(branch):
    code, out, err = branch.cli(
        "customers", "search", "--id-number", "110101199003079999", "--reason", "appointment", who="boss"
    )
    assert (code, out, err) == (1, "", "vipsense: no customer has that ID number\n")
    assert branch.entries() == [
        ("boss", "branch_manager", "lookup", "id_number **************9999", "success",
         "appointment (no match)"),
    ]  # fmt: skip


def test_a_client_manager_may_not_search_by_id_number(branch):
    """Pen test point 1, at the command line: the right to search by ID number is not every user's."""
    code, out, err = branch.cli("customers", "search", "--id-number", BO_ID, "--reason", "x", who="cm1")
    assert (code, out) == (1, "")
    assert err.startswith("vipsense: cm1 (client_manager) may not search customers by ID number")
    assert [e[4] for e in branch.entries()] == ["denied"]


def test_a_search_by_id_number_answers_only_for_a_whole_valid_number(branch):
    """Pen test point 1: a guess at the digits a mask hides is refused before any store is asked,
    whether it is short, has the wrong check character or an impossible birth date."""
    for guess in ("5678", BO_ID[:-1] + "9", "110105199013075678", "110105199003075678 OR 1=1"):
        code, out, err = branch.cli("customers", "search", "--id-number", guess, "--reason", "x", who="boss")
        assert (code, out) == (1, ""), guess
        assert err.startswith("vipsense: not a whole ID number"), err
    entries = branch.entries()
    assert [e[4] for e in entries] == ["denied"] * 5  # the third refusal is also a security alert
    assert [e[3] for e in entries].index("security alert: id_lookup_limit") == 3


@pytest.mark.slow
def test_guessing_by_id_number_at_the_command_line_hits_the_limit_and_alerts(branch):
    """Pen test point 1: ``web.id_lookup``'s limits hold at the command line too, counted from the
    audit log; the third refusal in a day is a security alert."""
    numbers = ["110101199003079999"] * 10
    for n in numbers:
        assert branch.cli("customers", "search", "--id-number", n, "--reason", "x", who="boss")[0] == 1
    refused = []
    for _ in range(3):
        code, _, err = branch.cli("customers", "search", "--id-number", BO_ID, "--reason", "x", who="boss")
        refused.append((code, err))
    assert refused == [(1, "vipsense: more than 10 look-ups by ID number a minute; wait a minute\n")] * 3
    alerts = [e for e in branch.entries() if e[3] == "security alert: id_lookup_limit"]
    assert len(alerts) == 1 and alerts[0][5].startswith("3 refused look-ups by ID number")
    assert BO_ID not in audit_text(branch)


def test_a_search_by_customer_number_and_unmasked(branch):
    code, out, _ = branch.cli(
        "customers", "search", "--customer-no", "C1", "--unmask", "--reason", "appointment", who="hq"
    )
    assert code == 0
    assert f"  mobile:     {ADA_MOBILE}" in out.splitlines()
    assert branch.entries() == [
        ("hq", "head_office", "lookup", "C1", "success", "appointment"),
        ("hq", "head_office", "unmask", "C1", "success", "appointment"),
    ]


def test_a_store_that_cannot_search_by_id_number_says_so(tmp_path, capsys, monkeypatch):
    branch = keyed_branch(tmp_path, capsys, stores="  - {id: dir, type: directory-only}")
    monkeypatch.setattr("vipsense.cli.load_host", host_with_directory)
    code, _, err = branch.cli("customers", "search", "--id-number", BO_ID, "--reason", "x", who="boss")
    assert (code, err) == (1, "vipsense: DirectoryOnly cannot search by ID number\n")  # the only store
    code, _, err = branch.cli("customers", "search", "--customer-no", "C1", "--store", "dir", who="cm1")
    assert (code, err) == (1, "vipsense: no customer has customer number C1\n")
    code, _, err = branch.cli("cards", "list", who="hq")
    assert (code, err) == (
        1,
        "vipsense: no store of branch.yaml is a card registry (stores: dir); name one with --store\n",
    )
    assert branch.entries()[0][4:] == ("error", "x (error: DirectoryOnly cannot search by ID number)")


# -- import ----------------------------------------------------------------------------------------

CUSTOMERS_CSV = """\
customer_no,name,tier,mobile,consent
C7,New Customer,diamond,13900001111,yes
C8,,gold,,
C9,Wrong Tier,golden,,
C10,Bad Consent,gold,,maybe
C11,Second New,gold,,
C12,Too Few
"""


def test_import_keeps_every_good_row_and_reports_each_rejected_one(branch):
    path = branch.dir / "customers.csv"
    path.write_text(CUSTOMERS_CSV, encoding="utf-8")
    code, out, err = branch.cli("customers", "import", str(path), "--reason", "monthly refresh", who="issuer")
    assert code == 1  # some rows were rejected
    assert out == "2 customers imported, 4 rejected of 6 rows\n"
    assert err.splitlines() == [
        "[##############################] 6/6 customers  " + err.splitlines()[0].split("customers  ")[1],
        "  line 3: name: required",
        "  line 4: tier: unknown tier 'golden'",
        "  line 5: consent: must be yes or no (1/0, true/false)",
        "  line 7: 2 fields, the header has 5",
    ]
    rows = branch.rows("SELECT customer_no FROM customers ORDER BY customer_no")
    assert len(rows) == 5  # the three seeded and the two good rows
    got = [branch.customer(no) for no in ("C7", "C11")]
    assert [(c.customer_no, c.name, c.tier, c.mobile, c.consent) for c in got] == [
        ("C7", "New Customer", "diamond", "13900001111", True),
        ("C11", "Second New", "gold", None, False),
    ]
    assert b"13900001111" not in branch.identity_bytes()  # stored encrypted
    assert branch.entries() == [
        ("issuer", "card_issuer", "import", "customers.csv: 2 customers imported, 4 rejected", "success",
         "monthly refresh"),
    ]  # fmt: skip


def test_reimport_without_consent_columns_keeps_consent_photo_and_columns_the_file_lacks(tmp_path, capsys):
    branch = keyed_branch(tmp_path, capsys, seed="customers: []\n")
    path = tmp_path / "customers.csv"
    path.write_text("customer_no,name,tier,id_number\nC7,Ann Lee,gold,110101199003071234\n", encoding="utf-8")
    assert branch.cli("customers", "import", str(path), who="boss")[0] == 0
    branch.cli("cards", "issue", "--customer", "C7", "--epc", "E2AA", "--consent-given", who="issuer")
    db = branch.db()
    db.execute("UPDATE customers SET photo = x'FFD8', photo_mime = 'image/jpeg', company = 'Acme'")
    db.commit()
    db.close()
    path.write_text("customer_no,name,tier\nC7,Ann Lee-Wu,platinum\n", encoding="utf-8")
    assert branch.cli("customers", "import", str(path), who="boss")[:2] == (
        0,
        "1 customer imported, 0 rejected of 1 row\n",
    )
    ann = branch.customer("C7")
    assert (
        ann.name,
        ann.tier,
        ann.id_number,
        ann.company,
        ann.photo.data,
        ann.consent,
        ann.consent_date,
    ) == (
        "Ann Lee-Wu",
        "platinum",
        "110101199003071234",
        "Acme",
        b"\xff\xd8",
        True,
        dt.date.today(),
    )


def test_a_second_import_of_the_same_file_writes_nothing_and_says_so(branch):
    path = branch.dir / "customers.csv"
    path.write_text("customer_no,name,tier\nC7,Ann Lee,gold\nC8,Bo Chen,diamond\n", encoding="utf-8")
    assert (
        branch.cli("customers", "import", str(path), who="boss")[1]
        == "2 customers imported, 0 rejected of 2 rows\n"
    )
    db = branch.db()
    db.execute("UPDATE customers SET consent = 1 WHERE customer_no = 'C7'")  # recorded meanwhile
    db.commit()
    db.close()
    assert branch.cli("customers", "import", str(path), who="boss")[:2] == (
        0,
        "2 customers imported (2 unchanged), 0 rejected of 2 rows\n",
    )
    consent = "SELECT customer_no, consent FROM customers WHERE customer_no IN ('C7', 'C8') ORDER BY 1"
    assert branch.rows(consent) == [("C7", 1), ("C8", 0)]  # the consent recorded meanwhile is kept
    assert branch.entries()[-1][3] == "customers.csv: 2 customers imported (2 unchanged), 0 rejected"


def test_import_needs_a_role_that_may(branch):
    path = branch.dir / "customers.csv"
    path.write_text(CUSTOMERS_CSV, encoding="utf-8")
    code, _, err = branch.cli("customers", "import", str(path), who="lobby")
    assert code == 1 and "may not import customers" in err
    assert not (branch.dir / "identity.sqlite3").exists()  # refused before the store was opened


def test_import_of_a_missing_file_is_a_clear_error(branch):
    code, _, err = branch.cli("customers", "import", str(branch.dir / "nope.csv"), who="boss")
    assert code == 1
    assert err.startswith("vipsense: FileNotFoundError: [Errno 2] No such file or directory:")
    assert branch.entries()[-1][2:5] == ("import", "nope.csv", "error")
