"""The demo's emulated PDAs keep to their own demo: two ``vipsense run`` demos on one machine, three
seconds apart, each PDA showing its own branch's arrivals only; and an emulated PDA that stops when its
demo is killed with ``kill -9``.  Real processes, zeroconf on loopback only (the demo profile's
``interfaces: [127.0.0.1]``: ``test-peers.md``, "Network safety"), and every process stopped and
reaped whatever happens."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vipsense.config.profile import load_profile
from vipsense.pluginhost import load_host

from .conftest import REPO, wait_for

PDA = "张伟的PDA"  #: the lobby manager's emulated PDA in profiles/demo.yaml
AGENT_MODULE = b"vipsense.plugins.notifiers.pda.agent"
PR_SET_CHILD_SUBREAPER = 36  #: linux/prctl.h


def demo_copy(tmp_path: Path, name: str) -> Path:
    """A copy of the shipped profiles (demo.yaml, its base, its seed), as a user would make one."""
    return Path(shutil.copytree(REPO / "profiles", tmp_path / name))


def start_demo(profiles: Path, data: Path, *args: str) -> subprocess.Popen:
    """``vipsense run demo.yaml --no-web --data-dir DATA ...``; stdout and stderr go to files in DATA."""
    data.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "vipsense.cli", "run", str(profiles / "demo.yaml")]
    cmd += ["--no-web", "--no-status", "--data-dir", str(data), *args]
    with open(data / "stdout.txt", "wb") as out, open(data / "stderr.txt", "wb") as err:
        return subprocess.Popen(
            cmd, stdout=out, stderr=err, cwd=profiles, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it does not stop; always reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def output(data: Path, name: str = "stdout.txt") -> str:
    return (data / name).read_text(encoding="utf-8", errors="replace")


def shown_keys(out: str) -> list[str]:
    """The notification keys the emulated PDA showed, one per framed block (in Chinese: the demo's
    branch.locale is zh_CN, and a push says so)."""
    return re.findall(rf"^\[{PDA}\] │ 编号\s+(\S+)$", out, re.M)


def pda_outbox_keys(data: Path) -> list[str]:
    db = sqlite3.connect(data / "outbox.sqlite3")
    try:
        return sorted(k for (k,) in db.execute("SELECT key FROM outbox WHERE notifier_id = 'pda'"))
    finally:
        db.close()


def test_the_demo_needs_no_pda_key_in_a_secrets_file(tmp_path, monkeypatch):
    empty = tmp_path / "secrets.yaml"
    empty.write_text("# nothing\n", encoding="utf-8")
    monkeypatch.setenv("VIPSENSE_SECRETS", str(empty))
    profile = load_profile(REPO / "profiles" / "demo.yaml", load_host(), data_dir=tmp_path / "data")
    [pda] = [n for n in profile.notifiers if n.type == "pda"]
    assert pda.settings.key is None and pda.settings.emulate


@pytest.mark.slow
def test_two_demos_on_one_machine_each_show_their_own_arrivals_once(tmp_path):
    data = {name: tmp_path / f"data-{name}" for name in ("first", "second")}
    procs: list[subprocess.Popen] = []
    try:
        procs.append(start_demo(demo_copy(tmp_path, "profiles-first"), data["first"], "--speed", "10"))
        time.sleep(3)  # the tester's scenario: the second demo three seconds after the first
        procs.append(start_demo(demo_copy(tmp_path, "profiles-second"), data["second"], "--speed", "10"))
        for proc in procs:
            proc.wait(120)
    finally:
        for proc in procs:
            stop(proc)
    seen: dict[str, list[str]] = {}
    for (name, where), proc in zip(data.items(), procs, strict=True):
        out, err = output(where), output(where, "stderr.txt")
        assert proc.returncode == 0, f"{name}: {err}"
        assert "Traceback" not in out + err, f"{name}: {err}"
        keys = seen[name] = shown_keys(out)
        assert len(keys) == 25 and len(set(keys)) == 25, f"{name}: {len(keys)} shown\n{out}"
        assert sorted(keys) == pda_outbox_keys(where), f"{name} showed another demo's arrivals"
        # in the PDA's own language (the tests' English) until the first push, the demo's Chinese after
        for dropped in ("hub answered 404", "ack dropped", "中心应答 404", "确认已放弃"):
            assert dropped not in out, out
        for refused in ("push refused", "拒绝推送"):  # neither hub even tried the other demo's PDA
            assert refused not in out, out
        assert out.count(f"[{PDA}] 已确认：") >= 20, out
    assert not set(seen["first"]) & set(seen["second"])


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(entry.name))
    return kids


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _subreaper(on: bool) -> None:
    """Adopt orphaned descendants (so this test can reap the agent its killed demo leaves behind)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        pytest.skip(f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(ctypes.get_errno())}")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and uses prctl")
def test_an_emulated_pda_stops_when_its_demo_is_killed_with_kill_9(tmp_path):
    data = tmp_path / "data"
    _subreaper(True)
    agents: list[int] = []
    statuses: dict[int, int] = {}  #: agent pid -> wait status, once reaped

    def find_agents() -> list[int]:
        return [pid for pid in _children(demo.pid) if AGENT_MODULE in _cmdline(pid)]

    def reaped() -> bool:  # an orphan is ours (subreaper): reap each agent once it has exited
        for pid in agents:
            if pid not in statuses:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    statuses[pid] = status
        return len(statuses) == len(agents)

    demo = start_demo(demo_copy(tmp_path, "profiles"), data)  # the two-minute morning: still running
    try:
        advertised = wait_for(lambda: f"[{PDA}] advertised as " in output(data), timeout=30)
        assert advertised, output(data) + output(data, "stderr.txt")
        agents = find_agents()
        assert len(agents) == 1, [_cmdline(pid) for pid in _children(demo.pid)]
        demo.send_signal(signal.SIGKILL)
        demo.wait(10)
        assert wait_for(reaped, timeout=10), "the emulated PDA outlived its demo"
        # SIGTERM from the kernel (or its parent watch) made it withdraw and exit cleanly
        assert [os.waitstatus_to_exitcode(s) for s in statuses.values()] == [0]
    finally:
        if demo.poll() is None:
            agents = agents or find_agents()
            demo.kill()
            demo.wait()
        for pid in set(agents) - set(statuses):  # left only if the test failed: stop and reap it
            with contextlib.suppress(ChildProcessError, ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                if not wait_for(reaped, timeout=5):
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
        _subreaper(False)
