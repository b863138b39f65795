"""Personal data stays the owner's: every file vipsense creates is 0600 in 0700 directories, and a
branch makes an over-open data directory owner-only at start (the penetration test found 644 files
in a 755 directory)."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys

import pytest

from vipsense.files import secure_tree

from .conftest import BASE_PROFILE, REPO


def modes(directory):
    return {
        p.relative_to(directory).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in [directory, *directory.rglob("*")]
    }


def test_an_over_open_data_directory_is_made_owner_only_at_start(running_branch, tmp_path, caplog):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    (data / "visits.sqlite3").write_bytes(b"")
    os.chmod(data / "visits.sqlite3", 0o644)
    (data / "old").mkdir()
    os.chmod(data / "old", 0o777)
    with caplog.at_level(logging.WARNING, logger="vipsense.files"):
        opened = secure_tree(data)
    assert {p.name: m for p, m in opened} == {"data": 0o755, "visits.sqlite3": 0o644, "old": 0o777}
    assert "was open to other accounts (mode 644): made owner-only" in caplog.text
    assert modes(data) == {".": 0o700, "visits.sqlite3": 0o600, "old": 0o700}
    os.chmod(data / "visits.sqlite3", 0o640)
    branch = running_branch(BASE_PROFILE, data_dir=data)  # a branch checks at start as well
    assert stat.S_IMODE((data / "visits.sqlite3").stat().st_mode) == 0o600
    assert branch.data_dir == data


@pytest.mark.slow
def test_a_command_creates_nothing_that_another_account_can_read(write_profile, tmp_path):
    """The whole data directory of a real run of ``vipsense run`` (visit log, outbox, audit log,
    identity store, their -wal and -shm files, keys) is owner-only, whatever the caller's umask."""
    profile = write_profile(
        BASE_PROFILE.replace("visitors: []", "visitors: [{card: E20000000000000000000001, at: 0s, stay: 2s}]")
    )
    data = tmp_path / "run-data"
    cmd = [
        sys.executable,
        "-c",
        "import os, sys; os.umask(0o022); from vipsense.cli import main; sys.exit(main())",
    ]
    done = subprocess.run(
        [*cmd, "run", str(profile), "--data-dir", str(data), "--no-status", "--no-web"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found = modes(data)
    assert len(found) >= 4, found
    assert {m for m in found.values()} <= {0o700, 0o600}, found
