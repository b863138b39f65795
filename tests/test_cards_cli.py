"""``vipsense cards``: the card lifecycle through the real command line, on real SQLite files, with the
audit entry every command leaves checked exactly."""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
import shutil
import stat
import subprocess
import sys

import pytest

from vipsense.permissions import GRANTS, Permission
from vipsense.permissions import __doc__ as PERMISSIONS_DOC
from vipsense.storage.audit import AuditLog

from .keyed import keyed_branch
from .lifecycle import ADA_CARD, CY_CARD, DESK_EPC, DESK_TID, host_with_directory

NEW = "E20000000000000000000009"
TODAY = dt.date.today().isoformat()


@pytest.fixture
def branch(tmp_path, capsys):
    return keyed_branch(tmp_path, capsys)


def card_row(branch, epc):
    return branch.rows(
        "SELECT customer_no, status, tier, tid, valid_from, valid_until, allowed_branches"
        " FROM cards WHERE epc = ?",
        epc,
    )


def card_history(branch, epc):
    return branch.rows(
        "SELECT action, actor, reason, detail FROM card_history WHERE epc = ? ORDER BY seq", epc
    )


# -- issue -----------------------------------------------------------------------------------------


def test_issue_records_the_card_its_history_and_one_audit_entry(branch):
    code, out, err = branch.cli(
        "cards", "issue", "--customer", "C1", "--epc", NEW.lower(), "--tier", "gold",
        "--valid-from", "2025-01-01", "--valid-until", "2030-12-31", "--branch", "sh-test", "bj-1",
        "--tid", "e2801160", "--reason", "new VIP", who="issuer",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out == (
        f"issued card {NEW} to customer C1 (tier Gold; valid 2025-01-01 to 2030-12-31; only at sh-test, bj-1;"
        " bound to TID E2801160)\n"
    )
    assert card_row(branch, NEW) == [
        ("C1", "active", "gold", "E2801160", "2025-01-01", "2030-12-31", "sh-test,bj-1")
    ]
    assert card_history(branch, NEW) == [("issued", "issuer", "new VIP", "")]
    assert branch.entries() == [("issuer", "card_issuer", "card_issue", NEW, "success", "new VIP")]


def test_issue_from_the_desk_reader_takes_the_epc_and_tid_of_the_card_read(branch):
    code, out, _ = branch.cli("cards", "issue", "--customer", "C1", "--from-reader", "desk", who="issuer")
    assert code == 0
    assert out == f"issued card {DESK_EPC} to customer C1 (bound to TID {DESK_TID})\n"
    assert card_row(branch, DESK_EPC)[0][3] == DESK_TID
    assert branch.entries() == [("issuer", "card_issuer", "card_issue", DESK_EPC, "success", "")]


def test_a_reader_that_reads_no_card_times_out_with_a_clear_error(branch):
    code, out, err = branch.cli(
        "cards", "issue", "--customer", "C1", "--from-reader", "slow-desk", "--wait", "300ms", who="issuer"
    )
    assert (code, out) == (1, "")
    assert err.startswith("vipsense: no card was read by reader slow-desk within 0.3 s")
    assert err.count("\n") == 1
    [entry] = branch.entries()
    assert entry[2:5] == ("card_issue", "reader:slow-desk", "error")
    assert "no card was read by reader slow-desk" in entry[5]
    assert branch.rows("SELECT count(*) FROM cards") == [(2,)]


def test_an_unknown_reader_is_named(branch):
    code, _, err = branch.cli("cards", "issue", "--customer", "C1", "--from-reader", "dsk", who="issuer")
    assert code == 1
    assert err == "vipsense: no reader has id 'dsk' (reader ids: door, desk, slow-desk)\n"


def test_a_customer_without_consent_is_refused_and_consent_can_be_recorded_at_issue(branch):
    code, _, err = branch.cli("cards", "issue", "--customer", "C2", "--epc", NEW, who="issuer")
    assert code == 1
    assert "customer C2 has not given separate consent to recognition at the door" in err
    assert branch.rows("SELECT count(*) FROM cards WHERE epc = ?", NEW) == [(0,)]
    argv = ("cards", "issue", "--customer", "C2", "--epc", NEW, "--consent-given")
    assert branch.cli(*argv, who="issuer")[0] == 0
    assert branch.rows("SELECT consent, consent_date FROM customers WHERE customer_no = 'C2'") == [(1, TODAY)]
    entries = branch.entries()
    assert [e[2:5] for e in entries] == [
        ("card_issue", NEW, "denied"),
        ("consent", "C2", "success"),
        ("card_issue", NEW, "success"),
    ]
    assert entries[0][5].startswith("denied: customer C2 has not given separate consent")
    assert entries[1][5] == "given at card issue"


def test_without_consent_required_a_card_is_issued_and_no_consent_is_invented(tmp_path, capsys):
    branch = keyed_branch(tmp_path, capsys, consent=False)
    assert branch.cli("cards", "issue", "--customer", "C2", "--epc", NEW, who="issuer")[0] == 0
    assert branch.rows("SELECT consent FROM customers WHERE customer_no = 'C2'") == [(None,)]


@pytest.mark.parametrize(
    ("argv", "message", "audited"),
    [
        (["--customer", "C1", "--epc", "E2-XYZ"], "--epc: must be hexadecimal, got 'E2-XYZ'", None),
        (["--customer", "C1", "--epc", NEW, "--tid", "zz"], "--tid: must be hexadecimal, got 'zz'", None),
        (["--customer", "C1", "--epc", NEW, "--valid-from", "2025-02-30"],
         "--valid-from: not a date (YYYY-MM-DD), got '2025-02-30'", None),
        (["--customer", "C1", "--epc", NEW, "--valid-from", "2025-02-03", "--valid-until", "2025-01-01"],
         "--valid-until: 2025-01-01 is before --valid-from 2025-02-03", None),
        (["--customer", "C1", "--epc", NEW, "--tier", "gld"],
         "--tier: unknown tier 'gld' (tiers: standard, gold, platinum, diamond)", None),
        (["--customer", "C9", "--epc", NEW], "unknown customer C9", "error"),
        (["--customer", "C1", "--epc", ADA_CARD],
         f"card {ADA_CARD} is already issued; reissue or revoke it instead", "error"),
        (["--customer", "C1", "--epc", NEW, "--store", "locl"],
         "no store has id 'locl'; did you mean 'local'? (store ids: local)", "error"),
    ],
    ids=["non-hex-epc", "non-hex-tid", "bad-date", "until-before-from", "unknown-tier", "unknown-customer",
         "epc-issued", "unknown-store"],
)  # fmt: skip
def test_bad_input_is_one_clear_line_and_exit_1(branch, argv, message, audited):
    code, out, err = branch.cli("cards", "issue", *argv, who="issuer")
    assert (code, out, err) == (1, "", f"vipsense: {message}\n")
    entries = branch.entries()
    if audited is None:  # refused before anything was attempted
        assert entries == []
    else:
        assert [e[4] for e in entries] == [audited]
        assert entries[0][5] == f"error: {message}"


def test_a_store_that_is_no_card_registry_is_refused(tmp_path, capsys, monkeypatch):
    stores = "  - {id: dir, type: directory-only}\n  - {id: local, type: sqlite, path: identity.sqlite3}"
    branch = keyed_branch(tmp_path, capsys, stores=stores)
    monkeypatch.setattr("vipsense.cli.load_host", host_with_directory)
    code, _, err = branch.cli("cards", "list", "--store", "dir", who="issuer")
    assert code == 1
    assert (
        err
        == "vipsense: store dir (directory-only) is not a card registry: it cannot issue or change cards\n"
    )
    # without --store the first store that is a registry is used
    code, out, _ = branch.cli("cards", "list", who="issuer")
    assert (code, out) == (0, "EPC  CUSTOMER  STATUS  TIER  VALID  BRANCHES  LAST SEEN\n0 cards\n")


# -- who may -----------------------------------------------------------------------------------------


def test_unknown_staff_missing_staff_and_missing_permission_are_denied_and_audited(branch, monkeypatch):
    monkeypatch.delenv("VIPSENSE_STAFF", raising=False)
    argv = ("cards", "issue", "--customer", "C1", "--epc", NEW)
    assert branch.cli(*argv, who="lobby")[::2] == (
        1,
        "vipsense: lobby (lobby_manager) may not issue cards"
        " (cards.issue needs branch_manager or card_issuer)\n",
    )
    assert branch.cli(*argv, who="isuer")[::2] == (
        1,
        "vipsense: unknown staff id 'isuer': not in the staff: of branch.yaml; did you mean 'issuer'?\n",
    )
    code, _, err = branch.cli(*argv)
    assert code == 1 and "say who is acting: --as STAFF_ID names you" in err
    assert [(e[0], e[1], e[2], e[4]) for e in branch.entries()] == [
        ("lobby", "lobby_manager", "card_issue", "denied"),
        ("isuer", "", "card_issue", "denied"),
        ("(none)", "", "card_issue", "denied"),
    ]
    assert not (branch.dir / "identity.sqlite3").exists()  # refused before the store was opened
    monkeypatch.setenv("VIPSENSE_STAFF", "issuer")
    assert branch.cli(*argv)[0] == 0
    assert branch.entries()[-1][:2] == ("issuer", "card_issuer")


def test_staff_at_the_door_may_report_a_card_lost_but_not_restore_it(branch):
    assert branch.cli("cards", "lost", ADA_CARD, "--reason", "left in a taxi", who="lobby")[0] == 0
    code, _, err = branch.cli("cards", "found", ADA_CARD, "--reason", "back", who="lobby")
    assert code == 1 and "may not restore lost cards" in err
    assert card_row(branch, ADA_CARD)[0][1] == "lost"


def test_the_permission_table_in_the_docstring_is_the_one_enforced():
    rows = re.findall(r"^\| (\S+)\s+\|(.*)\|$", PERMISSIONS_DOC, re.M)
    header = [h.strip() for h in rows[0][1].split("|")]
    table = {
        Permission(name): {role for role, mark in zip(header, marks.split("|"), strict=True) if mark.strip()}
        for name, marks in rows[1:]
        if not name.startswith("-")
    }
    assert table == {p: {r.value for r in roles} for p, roles in GRANTS.items()}


# -- lost, found, revoke, reissue --------------------------------------------------------------------


@pytest.mark.slow
def test_a_session_of_lifecycle_commands_leaves_exactly_the_expected_entries_and_a_valid_chain(branch):
    steps = [
        (("cards", "lost", ADA_CARD, "--reason", "left in a taxi"), "cm1", 0,
         ("cm1", "client_manager", "card_lost", ADA_CARD, "success", "left in a taxi")),
        (("cards", "lost", ADA_CARD, "--reason", "again"), "cm1", 1,
         ("cm1", "client_manager", "card_lost", ADA_CARD, "error",
          f"again (error: card {ADA_CARD} is already lost)")),
        (("cards", "found", ADA_CARD, "--reason", "handed in"), "issuer", 0,
         ("issuer", "card_issuer", "card_restore", ADA_CARD, "success", "handed in")),
        (("cards", "reissue", ADA_CARD, "--epc", NEW, "--reason", "chip damaged"), "issuer", 0,
         ("issuer", "card_issuer", "card_reissue", f"{ADA_CARD} -> {NEW}", "success", "chip damaged")),
        (("cards", "revoke", NEW, "--reason", "fraud suspected"), "boss", 0,
         ("boss", "branch_manager", "card_revoke", NEW, "success", "fraud suspected")),
        (("cards", "found", NEW, "--reason", "oops"), "boss", 1,
         ("boss", "branch_manager", "card_restore", NEW, "error",
          f"oops (error: card {NEW} is revoked, and a revoked card stays revoked"
          " (issue a new card instead))")),
        (("cards", "show", NEW), "hq", 0, ("hq", "head_office", "view", NEW, "success", "")),
        (("cards", "list", "--status", "revoked"), "hq", 0,
         ("hq", "head_office", "view", "cards status=revoked", "success", "")),
    ]  # fmt: skip
    for argv, who, expected_code, expected_entry in steps:
        before = len(branch.entries())
        code, out, err = branch.cli(*argv, who=who)
        assert code == expected_code, (argv, out, err)
        assert branch.entries()[before:] == [expected_entry], argv
    assert card_history(branch, ADA_CARD) == [
        ("lost", "cm1", "left in a taxi", ""),
        ("restored", "issuer", "handed in", ""),
        ("revoked", "issuer", "chip damaged", f"replaced by {NEW}"),
    ]
    assert card_history(branch, NEW) == [
        ("reissued", "issuer", "chip damaged", f"replaces {ADA_CARD}"),
        ("revoked", "boss", "fraud suspected", ""),
    ]
    code, out, _ = branch.cli("audit", "verify")
    assert code == 0
    assert out == f"{branch.audit_file}: 8 entries, hash chain intact\n"


def test_show_prints_the_card_and_its_history(branch):
    branch.cli("cards", "lost", ADA_CARD, "--reason", "left in a taxi", who="cm1")
    code, out, _ = branch.cli("cards", "show", ADA_CARD.lower(), who="issuer")
    assert code == 0
    lines = out.splitlines()
    assert lines[:3] == [f"card {ADA_CARD}", "  customer:    C1", "  status:      reported lost"]
    assert lines[-2] == "history:"
    # the date as English writes it, on the branch's clock; the actions padded to the longest
    assert re.fullmatch(
        r"  [A-Z][a-z]{2} \d{1,2}, \d{4} \d\d:\d\d  reported lost +by cm1: left in a taxi", lines[-1]
    )


def test_reissue_keeps_the_old_cards_terms_but_never_its_tid(branch):
    branch.cli("cards", "issue", "--customer", "C1", "--epc", NEW, "--tier", "diamond", "--tid", "AAAA",
               "--valid-until", "2031-01-31", "--branch", "sh-test", who="issuer")  # fmt: skip
    code, out, _ = branch.cli(
        "cards", "reissue", NEW, "--from-reader", "desk", "--reason", "lost abroad", who="issuer"
    )
    assert code == 0
    assert out == f"card {NEW} revoked; card {DESK_EPC} issued to customer C1 in its place\n"
    assert card_row(branch, DESK_EPC) == [
        ("C1", "active", "diamond", DESK_TID, None, "2031-01-31", "sh-test")
    ]
    assert card_row(branch, NEW)[0][1] == "revoked"


def test_a_failed_reissue_leaves_the_old_card_as_it_was(branch):
    code, _, err = branch.cli("cards", "reissue", ADA_CARD, "--epc", CY_CARD, "--reason", "x", who="issuer")
    assert code == 1 and err == f"vipsense: card {CY_CARD} is already issued; reissue or revoke it instead\n"
    assert card_row(branch, ADA_CARD)[0][1] == "active"
    assert card_history(branch, ADA_CARD) == []
    code, _, err = branch.cli("cards", "reissue", "E2000000000000000000FFFF", "--epc", NEW, "--reason", "x",
                              who="issuer")  # fmt: skip
    assert (code, err) == (1, "vipsense: no card has EPC E2000000000000000000FFFF\n")


def test_lost_needs_a_reason(branch):
    with pytest.raises(SystemExit) as exc:
        branch.cli("cards", "lost", ADA_CARD, who="cm1")
    assert exc.value.code == 2
    assert "the following arguments are required: --reason" in branch.capsys.readouterr().err


# -- import, export ----------------------------------------------------------------------------------


def test_import_keeps_good_rows_and_rejects_each_bad_one_with_its_line_and_reason(branch):
    path = branch.dir / "cards.csv"
    path.write_text(
        "epc,customer_no,status,tier\n"
        f"{NEW},C1,,gold\n"  # new: issued
        f"{CY_CARD},C3,active,\n"  # lost -> active: restored
        "E2000000000000000000000A,C9,,\n"  # unknown customer
        "E2000000000000000000000B,C2,,\n"  # no consent
        f"{ADA_CARD},C3,,\n"  # someone else's card
        "E2-NOT-HEX,C1,,\n"
        "E2000000000000000000000C,C1,stolen,\n",
        encoding="utf-8",
    )
    branch.cli("cards", "revoke", ADA_CARD, "--reason", "fraud", who="boss")
    path.write_text(path.read_text() + f"{ADA_CARD},C1,active,\n", encoding="utf-8")  # revoked stays revoked
    code, out, err = branch.cli("cards", "import", str(path), "--reason", "bank export", who="issuer")
    assert code == 1
    assert out == "2 cards imported, 6 rejected of 8 rows\n"
    assert err.splitlines()[-6:] == [
        "  line 4: customer_no: unknown customer C9",
        "  line 5: customer_no: customer C2 has not consented to recognition",
        f"  line 6: customer_no: card {ADA_CARD} belongs to customer C1; a card is never moved to another"
        " customer (revoke it and issue a new one)",
        "  line 7: epc: must be hexadecimal, got 'E2-NOT-HEX'",
        "  line 8: status: must be one of active, lost, revoked",
        f"  line 9: status: card {ADA_CARD} is revoked, and a revoked card stays revoked (issue a new card"
        " instead)",
    ]
    assert "[##############################] 8/8 cards" in err
    assert card_row(branch, NEW)[0][:3] == ("C1", "active", "gold")
    assert card_history(branch, NEW) == [("issued", "issuer", "bank export", "imported from cards.csv")]
    assert card_history(branch, CY_CARD) == [("restored", "issuer", "bank export", "imported from cards.csv")]
    assert card_row(branch, ADA_CARD)[0][1] == "revoked"
    assert branch.entries()[-1] == (
        "issuer", "card_issuer", "import", "cards.csv: 2 cards imported, 6 rejected", "success",
        "bank export",
    )  # fmt: skip


def test_import_of_a_file_with_a_bad_header_is_refused_whole(branch):
    path = branch.dir / "cards.csv"
    path.write_text(f"epc,customer_no,colour\n{NEW},C1,red\n", encoding="utf-8")
    code, _, err = branch.cli("cards", "import", str(path), who="issuer")
    assert code == 1
    assert err.strip().endswith(
        "cards.csv:1: unknown column 'colour' (known cards columns: epc, customer_no, tid, status, tier,"
        " valid_from, valid_until, allowed_branches)"
    )
    assert branch.entries()[-1][2:5] == ("import", "cards.csv", "error")


def test_export_writes_an_owner_only_file_that_imports_back_unchanged(branch):
    branch.cli("cards", "issue", "--customer", "C1", "--epc", NEW, "--branch", "sh", "bj",
               "--valid-until", "2030-01-01", who="issuer")  # fmt: skip
    out_file = branch.dir / "export.csv"
    code, out, _ = branch.cli("cards", "export", str(out_file), "--reason", "audit request", who="boss")
    assert (code, out) == (0, f"exported 3 cards to {out_file}\n")
    assert stat.S_IMODE(os.stat(out_file).st_mode) == 0o600
    with out_file.open(newline="", encoding="utf-8") as fh:
        rows = sorted(csv.reader(fh))
    assert rows == sorted(
        [
            ["epc", "customer_no", "tid", "status", "tier", "valid_from", "valid_until", "allowed_branches"],
            [ADA_CARD, "C1", "", "active", "", "", "", ""],
            [CY_CARD, "C3", "", "lost", "", "", "", ""],
            [NEW, "C1", "", "active", "", "", "2030-01-01", "sh;bj"],
        ]
    )
    assert branch.entries()[-1] == ("boss", "branch_manager", "export", "export.csv: 3 cards", "success",
                                    "audit request")  # fmt: skip
    before = branch.rows("SELECT * FROM cards ORDER BY epc")
    assert branch.cli("cards", "import", str(out_file), who="issuer")[:2] == (
        0,
        "3 cards imported (3 unchanged), 0 rejected of 3 rows\n",
    )
    assert branch.rows("SELECT * FROM cards ORDER BY epc") == before
    code, _, err = branch.cli("cards", "export", str(out_file), who="boss")
    assert (code, err) == (1, f"vipsense: {out_file} already exists; export to a new file\n")


def test_an_export_stays_owner_only_even_over_a_planted_partial_file(tmp_path, capsys):
    """A ``.partial`` file left behind or planted (world-readable, or a link to a file the attacker
    reads) must neither make the export readable by others nor send it elsewhere."""
    branch = keyed_branch(tmp_path, capsys, keyed=False)
    out_file = branch.dir / "export.csv"
    planted = branch.dir / "export.csv.partial"
    planted.write_text("planted\n")
    planted.chmod(0o644)
    umask = os.umask(0o022)
    try:
        assert branch.cli("cards", "export", str(out_file), who="boss")[0] == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(out_file).st_mode) == 0o600
    stolen = branch.dir / "attacker-reads-this"
    stolen.write_text("")
    (branch.dir / "again.csv.partial").symlink_to(stolen)
    assert branch.cli("cards", "export", str(branch.dir / "again.csv"), who="boss")[0] == 0
    assert stolen.read_text() == "" and stat.S_IMODE(os.stat(branch.dir / "again.csv").st_mode) == 0o600


def test_a_card_issuer_may_not_export(branch):
    code, _, err = branch.cli("cards", "export", str(branch.dir / "x.csv"), who="issuer")
    assert code == 1 and "may not export cards" in err
    assert not (branch.dir / "x.csv").exists()
    assert branch.entries()[-1][2:5] == ("export", "x.csv", "denied")


# -- end to end --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_console_script_end_to_end(branch):
    """The installed ``vipsense`` command in a process of its own: issue from the desk reader, report
    the card lost, reissue it, and verify the audit chain."""
    exe = shutil.which("vipsense") or pytest.fail("the vipsense console script is not installed")
    env = {**os.environ, "VIPSENSE_STAFF": "issuer"}

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [exe, *argv[:2], str(branch.profile), *argv[2:]],
            capture_output=True, text=True, env=env, timeout=60, cwd=branch.dir,
        )  # fmt: skip

    issued = run("cards", "issue", "--customer", "C3", "--from-reader", "desk", "--reason", "new VIP")
    assert issued.returncode == 0, issued.stderr
    assert issued.stdout == f"issued card {DESK_EPC} to customer C3 (bound to TID {DESK_TID})\n"
    assert run("cards", "lost", DESK_EPC, "--reason", "stolen bag").returncode == 0
    reissued = run("cards", "reissue", DESK_EPC, "--epc", NEW, "--reason", "stolen bag")
    assert reissued.returncode == 0, reissued.stderr
    bad = run("cards", "revoke", "not-hex", "--reason", "x")
    assert (bad.returncode, bad.stderr) == (1, "vipsense: EPC: must be hexadecimal, got 'not-hex'\n")
    verify = subprocess.run([exe, "audit", "verify", str(branch.profile)], capture_output=True, text=True)
    assert verify.returncode == 0
    assert verify.stdout == f"{branch.audit_file}: 3 entries, hash chain intact\n"
    log = AuditLog(branch.audit_file)
    try:
        sources = {e.source for e in log.entries()}
    finally:
        log.close()
    assert len(sources) == 1 and re.fullmatch(r"cli:\S+@\S+", sources.pop())
    assert "Traceback" not in issued.stderr + reissued.stderr + bad.stderr


def test_python_dash_m_runs_the_same_command_line(branch):
    result = subprocess.run(
        [sys.executable, "-m", "vipsense.cli", "cards", "list", str(branch.profile), "--as", "hq"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "2 cards"
