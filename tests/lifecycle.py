"""A small branch for the card and customer lifecycle tests: a profile with every staff role, an
issuing-desk reader that reads one card, one that never does, a SQLite registry seeded with three
customers, and helpers to run the real command line and read back the real audit log."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import attrs
import pytest

import vipsense
from vipsense.api import Card, IdentityStore
from vipsense.cli import main
from vipsense.pluginhost import load_host
from vipsense.storage.audit import AuditLog

from .profiles import BOSS, CM1, DOOR, LOBBY, branch_profile, routes

ADA_ID, ADA_MOBILE = "110101199003071234", "13812345678"
BO_ID = "110105199003075678"  # a whole, checksum-valid number: the one a search by ID number can find
DESK_EPC, DESK_TID = "E200000000000000000000AA", "E2801160200000000000ABCD"
ADA_CARD, CY_CARD = "E20000000000000000000001", "E20000000000000000000002"

PROFILE = branch_profile(
    branch="{id: sh-test, name: Test Branch}",
    readers=[
        DOOR,
        """\
id: desk
type: simulated
visitors: [{card: e200000000000000000000aa, at: 0.05s, reads: 3, tid: E2801160200000000000ABCD}]""",
        "{id: slow-desk, type: simulated, loop: true, visitors: [{card: E200000000000000000000BB, at: 1h}]}",
    ],
    stores="%(stores)s",
    presence=None,
    extra=["data_dir: data", "privacy: {visit_retention: 30d, consent_required: %(consent)s}"],
    staff=[
        "{id: issuer, name: Card Issuer, role: card_issuer}",
        BOSS,
        "{id: hq, name: Head Office, role: head_office}",
        LOBBY,
        CM1,
    ],
    routing=routes("screen", client_manager=False, rejected_to_lobby=False),
)

LOCAL = "  - {id: local, type: sqlite, path: identity.sqlite3, seed: [seed.yaml]}"

SEED = f"""\
customers:
  - {{customer_no: C1, name: Ada Wong, tier: gold, id_number: "{ADA_ID}", mobile: "{ADA_MOBILE}",
     client_manager: cm1, consent: true, consent_date: 2024-03-01}}
  - {{customer_no: C2, name: Bo Li, tier: platinum, id_number: "{BO_ID}"}}
  - {{customer_no: C3, name: Cy Zhao, tier: gold, consent: true, consent_date: 2024-05-02}}
cards:
  - {{epc: {ADA_CARD}, customer_no: C1}}
  - {{epc: {CY_CARD}, customer_no: C3, status: lost}}
"""


@attrs.frozen
class NoSettings:
    pass


class DirectoryOnly(IdentityStore):
    """An identity store that is no card registry and cannot search by ID number (like a directory)."""

    def find_card(self, epc: str) -> Card | None:
        return None

    def find_customer(self, customer_no: str):
        return None


class DirectoryPlugin:
    @vipsense.hookimpl
    def vipsense_register_store_types(self, register):
        register("directory-only", NoSettings, lambda settings, ctx: DirectoryOnly())


def host_with_directory():
    host = load_host()
    host.add(DirectoryPlugin(), "test-directory-only")
    return host


@attrs.define
class Branch:
    """One branch directory on disk and the command line pointed at it."""

    dir: Path
    profile: Path
    capsys: pytest.CaptureFixture

    def cli(self, *argv: str, who: str | None = None) -> tuple[int, str, str]:
        """Run ``vipsense ARGV[0] ARGV[1] PROFILE ARGV[2:]`` (``--as who`` added); (code, out, err)."""
        args = [*argv[:2], str(self.profile), *argv[2:]]
        if who is not None:
            args += ["--as", who]
        self.capsys.readouterr()
        code = main(args)
        out, err = self.capsys.readouterr()
        return code, out, err

    @property
    def audit_file(self) -> Path:
        return self.dir / "data" / "audit.sqlite3"

    def entries(self) -> list[tuple[str, str, str, str, str, str]]:
        """``(actor, role, action, object, result, reason)`` of every audit entry, in order."""
        if not self.audit_file.exists():
            return []
        log = AuditLog(self.audit_file)
        try:
            return [
                (e.actor, e.role, e.action.value, e.object, e.result.value, e.reason) for e in log.entries()
            ]
        finally:
            log.close()

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.dir / "identity.sqlite3")

    def rows(self, sql: str, *args: object) -> list[tuple]:
        db = self.db()
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()


def make_branch(
    tmp_path: Path, capsys, consent: bool = True, stores: str = LOCAL, seed: str = SEED
) -> Branch:
    (tmp_path / "seed.yaml").write_text(seed, encoding="utf-8")
    profile = tmp_path / "branch.yaml"
    text = PROFILE % {"consent": str(consent).lower(), "stores": stores}
    profile.write_text(textwrap.dedent(text), encoding="utf-8")
    return Branch(tmp_path, profile, capsys)
