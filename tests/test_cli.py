"""The command line's own behaviour: version, clear errors instead of tracebacks."""

from __future__ import annotations

import pytest

from vipsense import __version__
from vipsense.cli import main

from .conftest import REPO

DEMO = str(REPO / "profiles" / "demo.yaml")


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"vipsense {__version__}"


def test_run_with_unusable_data_dir_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main(["run", DEMO, "--data-dir", str(blocker / "sub"), "--no-status"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot use the data directory {blocker / 'sub'}: [Errno 20] Not a directory" in err
    assert "Traceback" not in err


def test_run_with_missing_profile(tmp_path, capsys):
    code = main(["run", str(tmp_path / "nope.yaml"), "--no-status"])
    err = capsys.readouterr().err
    assert code == 1
    assert "nope.yaml: file not found" in err
    assert "nothing was started" in err


def test_speed_must_be_positive(capsys):
    assert main(["run", DEMO, "--speed", "0"]) == 2
    assert "--speed must be greater than 0" in capsys.readouterr().err


def test_audit_verify_reports_an_intact_chain_and_names_a_broken_link(tmp_path, capsys):
    import sqlite3

    from vipsense.storage.audit import AuditAction, AuditLog, AuditResult

    log = AuditLog(tmp_path / "audit.sqlite3")
    for n in range(5):
        log.append(
            "li.mei",
            "client_manager",
            "sh-lujiazui",
            AuditAction.LOOKUP,
            f"C100000{n}",
            "cli",
            AuditResult.SUCCESS,
            reason="phone appointment",
        )
    log.close()
    assert main(["audit", "verify", DEMO, "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"{tmp_path / 'audit.sqlite3'}: 5 entries, hash chain intact"

    db = sqlite3.connect(tmp_path / "audit.sqlite3")
    for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        db.execute(f"DROP TRIGGER {name}")
    db.execute("UPDATE audit SET object = 'C9999999' WHERE seq = 3")
    db.commit()
    db.close()
    assert main(["audit", "verify", DEMO, "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"{tmp_path / 'audit.sqlite3'}: BROKEN after 2 good entries: "
        "entry 3: hash does not match its contents (edited?)"
    )


def test_audit_verify_without_a_log_says_so(tmp_path, capsys):
    assert main(["audit", "verify", DEMO, "--data-dir", str(tmp_path)]) == 1
    assert "no audit log yet" in capsys.readouterr().err
