"""The demo branch, run as a user runs it: the real CLI in a subprocess, the shipped profile."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml

from vipsense.config.yamlload import load_profile_yaml

from .conftest import REPO

DEMO = REPO / "profiles" / "demo.yaml"


def epc(n: int) -> str:
    return f"E2801160600002084C1A{n:04X}"


@pytest.mark.slow
def test_demo_morning_exact_outcome(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vipsense.cli",
            "run",
            str(DEMO),
            "--speed",
            "10",
            "--data-dir",
            str(tmp_path),
            "--no-status",
            "--no-web",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    rows = (
        sqlite3.connect(tmp_path / "visits.sqlite3")
        .execute("SELECT kind, epc, customer_no, reason FROM visits")
        .fetchall()
    )

    greeted = sorted(r[2] for r in rows if r[0] == "greeted")
    assert greeted == [f"C10000{n:02d}" for n in range(1, 23)]  # 22 VIPs, each greeted once
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
    assert epc(23) not in {r[1] for r in rows}, "the passer-by outside must not arrive"
    assert len(rows) == 28

    # the demo branch's locale is zh_CN: what it tells its staff is in Chinese, whatever LANG says
    out = proc.stdout
    assert out.count("★ 贵宾到店") == 22
    assert out.count("⚠ 卡片警报") == 3
    assert "卡片警报：已挂失" in out and "卡片警报：已过期" in out
    assert "卡片警报：非本网点卡" in out
    assert out.count("→ 网点负责人 陈静 Chen Jing") == 0  # only as an extra recipient line
    assert out.count("↳ 同时发送给网点负责人 陈静 Chen Jing") == 1  # the lost card only
    assert "王建国 Wang Jianguo" in out
    seed = yaml.safe_load((REPO / "profiles" / "demo" / "customers.yaml").read_text(encoding="utf-8"))
    for customer in seed["customers"]:
        assert customer["id_number"] not in out + proc.stderr
        assert customer["mobile"] not in out + proc.stderr
        if customer["customer_no"] in greeted:
            assert f"身份证号 {'*' * 14}{customer['id_number'][-4:]}" in out
    demo = loaded_demo()
    for member in demo["staff"]:
        if "mobile" in member:
            assert member["mobile"] not in out + proc.stderr

    # The lobby manager's PDA agent, found by zeroconf on loopback, showed each VIP and each rejected
    # card once, and acknowledged them; the modem emulator decoded one Chinese SMS per client-manager
    # notification and one for the lost card.
    pda_keys = re.findall(r"^\[张伟的PDA\] │ 编号\s+(\S+)$", out, re.M)
    assert len(pda_keys) == 25 and len(set(pda_keys)) == 25, out
    # the agent follows LANG (English here) until its hub tells it the branch's language
    assert re.search(r"^\[张伟的PDA\] hub found: sh-lujiazui at 127\.0\.0\.1:\d+$", out, re.M)
    assert out.count("[张伟的PDA] 已确认：") >= 20
    sms = re.findall(r"^    📱 短信（\d 条）：(.+)$", out, re.M)
    assert len(sms) == 23
    assert sum("贵宾到店：王建国 Wang Jianguo（钻石卡）" in s for s in sms) == 1
    assert sum("客户经理：李梅 Li Mei" in s for s in sms) >= 1
    outbox = sqlite3.connect(tmp_path / "outbox.sqlite3")
    states = dict(
        outbox.execute(
            "SELECT notifier_id, GROUP_CONCAT(DISTINCT state) FROM outbox"
            " WHERE notifier_id IN ('pda', 'pager') GROUP BY notifier_id"
        ).fetchall()
    )
    assert states["pager"] == "delivered"
    assert set(states["pda"].split(",")) <= {"delivered", "acknowledged"}
    assert not proc.stderr.strip(), proc.stderr  # no warnings: nothing had to wait for a retry

    summary = out.strip().splitlines()[-1]
    said = re.match(
        r"已停止。(\d+) 次读取，28 次到达：已接待 22，拒绝 3，重复进入未通知 1，未知标签 2。", summary
    )
    assert said, summary
    reads = int(said.group(1))
    assert reads > 2000  # the lingering customers are read hundreds of times


def loaded_demo() -> dict:
    loaded = load_profile_yaml(DEMO)
    assert loaded.errors == []
    return loaded.data


def test_lingering_cards_are_read_hundreds_of_times():
    profile = loaded_demo()
    visitors = profile["readers"][0]["emulate"]["visitors"]
    long_stays = [v for v in visitors if float(str(v.get("stay", "3s")).rstrip("s")) * 10 >= 300]
    assert len(long_stays) >= 3


@pytest.mark.slow
def test_sigterm_stops_within_two_seconds_with_visits_flushed(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vipsense.cli",
            "run",
            str(DEMO),
            "--data-dir",
            str(tmp_path),
            "--no-status",
            "--no-web",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        seen = ""
        while "贵宾到店" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.readline()
        assert "贵宾到店" in seen
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0
    assert elapsed < 2.0, f"took {elapsed:.2f}s to stop"
    rows = (
        sqlite3.connect(tmp_path / "visits.sqlite3")
        .execute("SELECT kind, customer_no FROM visits")
        .fetchall()
    )
    assert ("greeted", "C1000001") in rows
