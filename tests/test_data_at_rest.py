"""Personal data at rest (the penetration test's point 2): the SQLite identity store holds no ID or
mobile number in clear, whichever way a customer got there (seed, import, sync), its files are its
owner's alone, the ID-number search stays exact, and keys rotate.  Real SQLite files, the real command
line, real subprocesses; every byte of the files is searched, the WAL included."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from .conftest import REPO
from .keyed import KeyedBranch, keyed_branch, name_data_key
from .lifecycle import ADA_ID, ADA_MOBILE, BO_ID

#: Customers whose numbers must never be found in clear on disk (fictional).
IMPORTED = {
    "C7": ("310102198002081033", "13900007919"),  # a whole, checksum-valid ID number
    "C8": ("31011519800315107X", "13900015838"),
    "C9": ("110101800307123", "13812340000"),  # a first-generation 15-digit ID number
}
CSV = "customer_no,name,id_number,mobile,consent\n" + "".join(
    f"{no},Customer {no},{idn},{mob},yes\n" for no, (idn, mob) in IMPORTED.items()
)
SEEDED = (ADA_ID, ADA_MOBILE, BO_ID)


def numbers() -> list[bytes]:
    """Each number as text would store it, UTF-8, plus the seeded ones."""
    return [n.encode() for pair in IMPORTED.values() for n in pair] + [n.encode() for n in SEEDED]


def branch(tmp_path: Path, capsys, keyed: bool) -> KeyedBranch:
    return keyed_branch(tmp_path, capsys, keyed=keyed)


def in_clear(data: bytes) -> list[bytes]:
    return [n for n in numbers() if n in data]


# -- nothing in clear -------------------------------------------------------------------------------


@pytest.mark.parametrize("keyed", [False, True], ids=["key-of-the-data-dir", "key-from-secrets"])
def test_an_import_leaves_no_id_or_mobile_number_in_clear_in_any_byte_of_the_store(tmp_path, capsys, keyed):
    b = branch(tmp_path, capsys, keyed)
    assert b.cli("customers", "show", "C1", who="boss")[0] == 0  # the store is made, seeded
    running = sqlite3.connect(b.identity_file)  # a running branch keeps the file open, so the WAL stays
    try:
        running.execute("SELECT count(*) FROM customers").fetchone()
        (tmp_path / "customers.csv").write_text(CSV, encoding="utf-8")
        code, out, err = b.cli("customers", "import", str(tmp_path / "customers.csv"), who="boss")
        assert (code, out) == (0, "3 customers imported, 0 rejected of 3 rows\n"), err
        wal = Path(f"{b.identity_file}-wal")
        assert wal.stat().st_size > 0  # the import is in the WAL: searched too
        assert in_clear(b.identity_bytes()) == []
    finally:
        running.close()
    assert in_clear(b.identity_bytes()) == []
    # ... and yet the branch reads them, and finds a customer by ID number, exactly and unmasked
    code, out, _ = b.cli(
        "customers", "search", "--id-number", "310102 19800208 1033", "--unmask", "--reason", "x", who="boss"
    )
    assert code == 0 and "  ID number:  310102198002081033" in out.splitlines()
    assert b.customer("C8").id_number == "31011519800315107X"
    assert b.customer("C1").mobile == ADA_MOBILE  # the seeded customer too


@pytest.mark.slow
def test_the_demo_data_directory_holds_no_id_or_mobile_number_in_clear(tmp_path):
    """The shipped demo, as a user runs a command on it, in a subprocess: its seed's numbers are
    encrypted with a key made for the data directory, in an owner-only file."""
    data = tmp_path / "demo-data"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vipsense.cli",
            "customers",
            "show",
            "profiles/demo.yaml",
            "C1000001",
            "--as",
            "zhang.wei",
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert "**************1033" in proc.stdout and "139****7919" in proc.stdout
    seed = yaml.safe_load((REPO / "profiles" / "demo" / "customers.yaml").read_text(encoding="utf-8"))
    secrets = [c[k].encode() for c in seed["customers"] for k in ("id_number", "mobile") if c.get(k)]
    everything = b"".join(p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file())
    assert [s for s in secrets if s in everything] == []
    for name in ("identity.sqlite3", "data.key"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name


@pytest.mark.slow
def test_a_whole_demo_morning_leaves_no_id_or_mobile_number_in_clear_anywhere_in_its_data(tmp_path):
    """The demo run as a user runs it (every store, the outbox, the visits, the audit log, the PDA
    state): no file of the data directory holds a seeded number, as text, as UTF-16 (an SMS in UCS2)
    or as the hex of an SMS PDU; and every file is its owner's alone."""
    data = tmp_path / "demo-data"
    argv = ["run", "profiles/demo.yaml", "--speed", "10", "--data-dir", str(data), "--no-status", "--no-web"]
    proc = subprocess.run(
        [sys.executable, "-m", "vipsense.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        proc.stdout.count("★ 贵宾到店") == 22
    )  # the morning really ran (in Chinese: the demo branch's locale)
    seed = yaml.safe_load((REPO / "profiles" / "demo" / "customers.yaml").read_text(encoding="utf-8"))
    numbers = [c[k] for c in seed["customers"] for k in ("id_number", "mobile") if c.get(k)]
    forms = {
        n: (
            n.encode(),
            n.encode("utf-16-be"),
            n.encode("utf-16-le"),
            n.encode("utf-16-be").hex().upper().encode(),
        )
        for n in numbers
    }
    files = [p for p in sorted(data.rglob("*")) if p.is_file()]
    assert {p.name for p in files} >= {
        "identity.sqlite3",
        "outbox.sqlite3",
        "visits.sqlite3",
        "audit.sqlite3",
    }
    found = {
        p.name: [n for n, shapes in forms.items() if any(s in p.read_bytes() for s in shapes)] for p in files
    }
    assert {name: hits for name, hits in found.items() if hits} == {}
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files if p.stat().st_mode & 0o077} == {}


def test_a_file_of_the_previous_version_is_encrypted_in_place_leaving_no_trace(tmp_path):
    """A branch's identity.sqlite3 from before encryption (numbers in clear, some in its WAL) is
    migrated at open: encrypted, blind index filled, old page contents overwritten."""
    from vipsense.api import PluginContext
    from vipsense.clock import Clock
    from vipsense.output import Output
    from vipsense.plugins.stores.sqlite import SqliteSettings, SqliteStore

    path = tmp_path / "identity.sqlite3"
    old = sqlite3.connect(path)
    old.execute("PRAGMA journal_mode=WAL")
    old.executescript(
        "CREATE TABLE customers (customer_no TEXT PRIMARY KEY, name TEXT NOT NULL, company TEXT,"
        " id_number TEXT, mobile TEXT, usual_business TEXT, tier TEXT, client_manager TEXT, photo BLOB,"
        " photo_mime TEXT, consent INTEGER, consent_date TEXT);"
        "CREATE TABLE cards (epc TEXT PRIMARY KEY, customer_no TEXT NOT NULL, tid TEXT,"
        " status TEXT NOT NULL DEFAULT 'active', tier TEXT, valid_from TEXT, valid_until TEXT,"
        " allowed_branches TEXT NOT NULL DEFAULT '', last_seen_branch TEXT, last_seen_at REAL);"
        "CREATE INDEX customers_id_number ON customers (id_number); PRAGMA user_version = 2;"
    )
    with old:
        old.executemany(
            "INSERT INTO customers (customer_no, name, id_number, mobile) VALUES (?, ?, ?, ?)",
            [(no, f"N {no}", idn, mob) for no, (idn, mob) in IMPORTED.items()],
        )
    # (the connection stays open, so the rows are still in the WAL when the new version opens the file)
    ctx = PluginContext(
        "t", "T", "local", tmp_path, tmp_path, Clock(), Output(live=False), logging.getLogger("t")
    )
    store = SqliteStore(SqliteSettings(path=str(path)), ctx)
    store.open()
    try:
        assert [c.customer_no for c in store.find_customers_by_id_number("31011519800315107x")] == ["C8"]
        assert store.find_customer("C9").mobile == "13812340000"
        assert store.data_key_ids() == {store.cipher.current.key_id: 6}
    finally:
        store.close()
    old.close()
    files = b"".join(p.read_bytes() for p in tmp_path.glob("identity.sqlite3*"))
    assert [n for n in numbers()[:6] if n in files] == []


def test_a_sync_into_the_replica_encrypts_what_it_copies(tmp_path, capsys):
    """``vipsense sync`` (and a running branch's refresh) writes the replica through ``replace_all``:
    the same sealing path, so the replica holds no number in clear either."""
    from vipsense.cli import main

    seed = "customers:\n" + "".join(
        f'  - {{customer_no: {no}, name: N, id_number: "{idn}", mobile: "{mob}"}}\n'
        for no, (idn, mob) in IMPORTED.items()
    )
    seed += "cards:\n" + "".join(
        f"  - {{epc: E2000000000000000000000{i}, customer_no: {no}}}\n" for i, no in enumerate(IMPORTED)
    )
    (tmp_path / "seed.yaml").write_text(seed, encoding="utf-8")
    profile = tmp_path / "branch.yaml"
    profile.write_text(
        textwrap.dedent(
            """\
            branch: {id: sh-test, name: Test Branch}
            data_dir: data
            readers: [{id: door, type: simulated, visitors: []}]
            stores:
              - {id: central, type: sqlite, path: central.sqlite3, seed: [seed.yaml]}
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
    assert main(["sync", str(profile)]) == 0
    assert "3 cards and 3 customers" in capsys.readouterr().out
    replica = b"".join(p.read_bytes() for p in tmp_path.glob("replica.sqlite3*"))
    assert replica and [n for n in numbers()[:6] if n in replica] == []


# -- owner only -------------------------------------------------------------------------------------


def test_the_store_files_are_owner_only_whatever_the_umask_and_a_readable_one_is_fixed(tmp_path, caplog):
    from vipsense.api import PluginContext
    from vipsense.clock import Clock
    from vipsense.model import Customer
    from vipsense.output import Output
    from vipsense.plugins.stores.sqlite import SqliteSettings, SqliteStore

    ctx = PluginContext(
        "t", "T", "local", tmp_path / "d", tmp_path, Clock(), Output(live=False), logging.getLogger("t")
    )
    store = SqliteStore(SqliteSettings(), ctx)
    umask = os.umask(0o022)  # a system default: files 644, directories 755
    try:
        store.open()
        store.upsert_customers([Customer("C1", "Ada", id_number=ADA_ID, mobile=ADA_MOBILE)])
    finally:
        os.umask(umask)
    try:
        made = sorted(p.name for p in (tmp_path / "d").iterdir())
        assert {"identity.sqlite3", "identity.sqlite3-wal", "identity.sqlite3-shm"} <= set(made)
        for p in (tmp_path / "d").iterdir():
            assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, (p.name, oct(p.stat().st_mode))
    finally:
        store.close()
    (tmp_path / "d" / "identity.sqlite3").chmod(0o644)  # someone made it readable again
    with caplog.at_level(logging.WARNING):
        store.open()
        store.close()
    assert stat.S_IMODE((tmp_path / "d" / "identity.sqlite3").stat().st_mode) == 0o600
    assert "was readable by other users" in caplog.text


# -- the keys ---------------------------------------------------------------------------------------


def test_a_profile_without_the_key_its_data_was_written_under_is_refused_in_one_line(tmp_path, capsys):
    b = branch(tmp_path, capsys, keyed=True)
    assert b.cli("customers", "show", "C1", who="boss")[0] == 0
    name_data_key(b.profile)  # another key, and the first one forgotten
    code, out, err = b.cli("customers", "show", "C1", who="boss")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "encrypted under data key" in err and "privacy.retired_data_keys" in err


def test_a_key_written_into_the_profile_or_too_short_is_a_profile_error(tmp_path, capsys):
    b = branch(tmp_path, capsys, keyed=True)
    text = b.profile.read_text(encoding="utf-8")
    b.profile.write_text(text.replace("!secret data_key", "abcdefghijklmnopqrstuvwxyz0123456789"))
    code, _, err = b.cli("customers", "show", "C1", who="boss")
    assert code == 1 and "privacy.data_key: a data key is a secret: write !secret NAME" in err
    (tmp_path / "secrets.yaml").write_text("data_key: short\n", encoding="utf-8")
    b.profile.write_text(text)
    code, _, err = b.cli("customers", "show", "C1", who="boss")
    assert code == 1 and "privacy.data_key: a data key needs at least 32 characters, got 5" in err
    assert "short" not in err


def test_a_ciphertext_moved_to_another_customer_does_not_decrypt(tmp_path, capsys):
    """An attacker who can write the file copies Ada's sealed ID number onto Bo's row: it is bound
    to Ada's row, so reading Bo says the file was altered, in one line."""
    b = branch(tmp_path, capsys, keyed=True)
    (tmp_path / "customers.csv").write_text(CSV, encoding="utf-8")
    assert b.cli("customers", "import", str(tmp_path / "customers.csv"), who="boss")[0] == 0
    db = sqlite3.connect(b.identity_file)
    db.execute("UPDATE customers SET id_number = (SELECT id_number FROM customers WHERE customer_no = 'C7')"
               " WHERE customer_no = 'C8'")  # fmt: skip
    db.commit()
    db.close()
    code, out, err = b.cli("customers", "show", "C8", who="boss")
    assert (code, out) == (1, "")
    assert err.startswith("vipsense: the stored customers.id_number of 'C8' does not decrypt")
    assert not [n for n in numbers() if n.decode() in err]


def test_keys_rotate_with_a_named_key_moves_every_value_and_says_what_to_do_with_the_old_one(
    tmp_path, capsys
):
    b = branch(tmp_path, capsys, keyed=True)
    (tmp_path / "customers.csv").write_text(CSV, encoding="utf-8")
    assert b.cli("customers", "import", str(tmp_path / "customers.csv"), who="boss")[0] == 0
    before = b.store().data_key_ids()
    [old_id] = before
    code, out, _ = b.cli("keys", "rotate")
    assert code == 0 and "nothing to rotate" in out and "vipsense keys new" in out
    new = name_data_key(b.profile, retired=(b.key,))  # the bank's step: a new data_key, the old retired
    code, out, _ = b.cli("keys", "rotate")
    assert code == 0
    store = b.store()
    try:
        [new_id] = store.data_key_ids()
        assert new_id != old_id and store.cipher.current.key_id == new_id
        assert store.data_key_ids()[new_id] == before[old_id] == 9  # every value is under the new key
    finally:
        store.close()
    lines = out.splitlines()  # (the seeded customers were sealed anew when the seed was loaded)
    # every value the file held: the 6 imported and the 3 of the seed file (re-sealed when the store opens)
    assert lines[0] == f"store local: 9 values moved from data key {old_id} to {new_id}"
    assert lines[1].startswith(f"no value is under the retired data key {old_id} (old_key_0) any more")
    # the old key can go: the search by ID number and every value work with the new key alone
    name_data_key(b.profile, key=new)
    code, out, _ = b.cli(
        "customers", "search", "--id-number", "310102198002081033", "--reason", "x", who="boss"
    )
    assert code == 0 and out.startswith("customer C7 ")
    assert b.customer("C1").mobile == ADA_MOBILE
    assert in_clear(b.identity_bytes()) == []
    assert [e[4] for e in b.entries() if e[2] == "config_change"] == ["success", "success"]


def test_keys_rotate_of_the_data_directory_key_replaces_it(tmp_path, capsys):
    from cryptography.exceptions import InvalidTag

    from vipsense.crypto import DataKey

    b = branch(tmp_path, capsys, keyed=False)
    (tmp_path / "customers.csv").write_text(CSV, encoding="utf-8")
    assert b.cli("customers", "import", str(tmp_path / "customers.csv"), who="boss")[0] == 0
    key_file = tmp_path / "data" / "data.key"
    old_key = [k for k in key_file.read_text().splitlines() if not k.startswith("#")]
    db = sqlite3.connect(b.identity_file)
    [(sealed,)] = db.execute("SELECT id_number FROM customers WHERE customer_no = 'C7'").fetchall()
    db.close()
    code, out, _ = b.cli("keys", "rotate")
    assert code == 0, out
    assert out.splitlines()[0].startswith(
        "store local: 9 values moved from data key "
    )  # 6 imported, 3 seeded
    assert "the old key was removed from" in out
    new_key = [k for k in key_file.read_text().splitlines() if not k.startswith("#")]
    assert len(new_key) == 1 and new_key != old_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b.customer("C7").id_number == IMPORTED["C7"][0]  # readable with the new key
    aad = b"customers.id_number\x00C7"
    with pytest.raises(InvalidTag):  # a copy of the file from before the rotation needs the old key
        DataKey(new_key[0], "new").open(sealed, aad)
    assert DataKey(old_key[0], "old").open(sealed, aad) == IMPORTED["C7"][0].encode()
    assert in_clear(b.identity_bytes()) == []


def test_keys_new_prints_a_fresh_key_each_time(capsys):
    from vipsense.cli import main

    keys = []
    for _ in range(2):
        assert main(["keys", "new"]) == 0
        keys.append(capsys.readouterr().out.strip())
    assert keys[0] != keys[1] and all(len(k) >= 43 for k in keys)


def test_without_a_named_key_the_note_for_check_names_the_key_file_and_no_command_warns(tmp_path, capsys):
    """The demo and tests run on the data directory's key without a warning on every command (the
    demo's ``check`` and ``run`` print nothing on stderr); ``vipsense check`` notes the trade-off from
    :func:`vipsense.crypto.local_key_note`."""
    from vipsense.config.profile import load_profile
    from vipsense.crypto import local_key_note
    from vipsense.pluginhost import load_host

    b = branch(tmp_path, capsys, keyed=False)
    _, _, err = b.cli("customers", "show", "C1", who="boss")
    assert "data_key" not in err and "data.key" not in err
    profile = load_profile(b.profile, load_host())
    assert not [w for w in profile.warnings if "data_key" in str(w) or "data.key" in str(w)]
    note = local_key_note(profile.privacy.data_key, profile.data_dir)
    assert note is not None and str(profile.data_dir / "data.key") in note and "!secret data_key" in note
    (tmp_path / "k").mkdir()
    keyed = branch(tmp_path / "k", capsys, keyed=True)
    profile = load_profile(keyed.profile, load_host())
    assert local_key_note(profile.privacy.data_key, profile.data_dir) is None


def test_keys_rotate_without_an_encrypting_store_says_so_and_makes_no_key(tmp_path, capsys, monkeypatch):
    from .lifecycle import host_with_directory

    b = keyed_branch(tmp_path, capsys, keyed=False, stores="  - {id: dir, type: directory-only}")
    monkeypatch.setattr("vipsense.cli.load_host", host_with_directory)
    code, out, err = b.cli("keys", "rotate")
    assert (code, out) == (1, "")
    assert (
        err.splitlines()[-1]
        == f"vipsense: no store of {b.profile.name} keeps personal data encrypted by vipsense"
    )
    assert not (tmp_path / "data" / "data.key").exists()
