"""What a new user meets in the first hour: the hints say what to type next (with the data directory
they used), a password's minimum length is said before it is asked for, empty lists say so, and a
finished replay reads as finished, not down."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

from vipsense.cli import main

from .conftest import BASE_PROFILE, REPO, wait_for


@pytest.mark.slow
def test_a_finished_replay_is_finished_on_the_status_page_not_down(web_branch):
    w = web_branch()
    assert wait_for(lambda: w.branch.readers_finished)  # the door replays an empty scenario
    boss = w.client("boss")
    assert wait_for(lambda: boss.get("/api/status").json["state"] == "finished", 3)
    status = boss.get("/api/status").json
    assert status["ok"] is True and status["problems"] == []
    assert 'class="state-finished">finished<' in boss.get("/status").text


def test_empty_account_and_token_lists_say_what_to_type(write_profile, tmp_path, capsys):
    profile = str(write_profile(BASE_PROFILE + "web: {bind: 127.0.0.1, port: 0}\n"))
    data = str(tmp_path / "elsewhere")
    assert main(["tokens", "list", profile, "--data-dir", data]) == 0
    assert main(["users", "list", profile, "--data-dir", data]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"no tokens yet: vipsense tokens add {profile} --data-dir {data} NAME --fields customer_no,name,tier",
        f"no accounts yet: vipsense users add {profile} --data-dir {data} NAME --role admin",
    ]


@pytest.mark.slow
def test_run_names_the_data_directory_in_the_first_account_hint(write_profile, tmp_path):
    profile = str(write_profile(BASE_PROFILE))
    data = str(tmp_path / "elsewhere")
    cmd = [sys.executable, "-m", "vipsense.cli", "run", profile, "--data-dir", data, "--web-port", "0"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 30
        while "Branch web:" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
        assert f"(no accounts yet: vipsense users add {profile} --data-dir {data} NAME --role admin)" in line
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_until(fd: int, text: str, timeout: float = 20.0) -> str:
    seen = b""
    end = time.monotonic() + timeout
    while text.encode() not in seen and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen.decode(errors="replace")


def test_the_password_minimum_is_said_before_the_password_is_asked_for(write_profile, tmp_path):
    """At a real terminal (a pseudo-terminal): the rule first, and a short password refused before
    it has to be typed twice."""
    profile = str(write_profile(BASE_PROFILE))
    cmd = [sys.executable, "-m", "vipsense.cli", "users", "add", profile, "admin1", "--role", "admin"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, on the pseudo-terminal
        os.chdir(REPO)
        os.execv(
            sys.executable,
            [*cmd, "--data-dir", str(tmp_path / "d")][0:1] + cmd[1:] + ["--data-dir", str(tmp_path / "d")],
        )
    try:
        before = _read_until(fd, "New password:")
        assert "A password needs at least 12 characters." in before
        assert before.index("at least 12 characters") < before.index("New password:")
        os.write(fd, b"short\n")
        after = _read_until(fd, "nothing was changed")
        assert "Again:" not in after
        assert "a password needs at least 12 characters; nothing was changed" in after
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)


def test_readme_names_every_package_the_base_install_brings():
    import configparser
    import re

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg", encoding="utf-8")
    required = [
        re.split(r"[<>=!~ ]", line.strip())[0] for line in cfg["options"]["install_requires"].splitlines()
    ]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    paragraph = readme[readme.index("Python 3.10 or newer.") :].split("\n\n")[0].lower()
    missing = [name for name in filter(None, required) if name.lower() not in paragraph]
    assert missing == [], f"README's dependency paragraph does not name {missing}"


def test_ruff_is_pinned_so_a_new_release_cannot_turn_ci_red():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg", encoding="utf-8")
    [ruff] = [line for line in cfg["options.extras_require"]["test"].splitlines() if line.startswith("ruff")]
    assert ruff.startswith("ruff==")


def test_a_command_without_as_says_what_as_is_and_who_may(write_profile, capsys):
    profile = str(write_profile(BASE_PROFILE))
    assert main(["visits", "--today", profile]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "--as STAFF_ID names you, a member of the profile's staff:" in err
    assert "boss (branch_manager)" in err and "lobby (" not in err  # who may see visits, and only them
    assert "VIPSENSE_STAFF" in err


def test_cli_tables_align_chinese_text_by_display_width():
    from vipsense.cli.common import table
    from vipsense.output import display_width

    lines = table(("NAME", "TIER"), [("王建国 Wang", "gold"), ("Ada Wong", "platinum"), ("李梅", "-")])
    tiers = ("gold", "platinum", "-")
    starts = {display_width(line[: line.rindex(tier)]) for line, tier in zip(lines[1:], tiers, strict=True)}
    assert len(starts) == 1  # every second column starts in the same terminal column
    assert display_width("王建国") == 6 and display_width("Ada") == 3 and display_width("e\u0301") == 1
