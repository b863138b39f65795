"""The demo branch, run as a user runs it: the real CLI in a subprocess, the shipped profile."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone

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


@pytest.mark.slow
def test_the_demo_branch_reports_live_to_the_demo_centre(tmp_path):
    """README's demo command also serves the demo centre (SQLite, in the same process): the board
    shows the live branch with every visit it recorded, beside two branches with 90 days of history,
    and a head-office account sees it over HTTP."""
    from vipsense.centre.database import open_database
    from vipsense.centre.queries import board

    from .processes import stop
    from .test_centre_cli import Browser, run
    from .web_support import PASSWORD

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LANG": "en_US.UTF-8"}
    proc = subprocess.Popen(
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
            "--web-port",
            "0",
            "--centre-port",
            "0",
            "--no-status",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    try:
        # the branch speaks its staff's language (zh_CN) once started; the centre line comes before
        over = re.compile("The replay is over|回放已结束")
        centre_url, seen, deadline = "", "", time.monotonic() + 120
        while not over.search(seen) and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                pytest.fail(f"the demo stopped: {proc.stderr.read()}")
            seen += line
            if not centre_url and (found := re.search(r"Centre web: (http://127\.0\.0\.1:\d+)/", line)):
                centre_url = found.group(1)
        assert centre_url and over.search(seen), seen[-2000:]
        branch_visits = sqlite3.connect(tmp_path / "visits.sqlite3").execute("SELECT COUNT(*) FROM visits")
        expected = branch_visits.fetchone()[0]
        assert expected == 28
        database = open_database(f"sqlite:///{tmp_path / 'centre' / 'centre.sqlite3'}")
        try:
            deadline = time.monotonic() + 15  # the next report (every 2 s) brings the last visits

            def at_centre() -> dict[str, tuple[int, int]]:
                with database.begin() as conn:
                    return {
                        branch: (visits, days)
                        for branch, visits, days in conn.exec_driver_sql(
                            "SELECT branch_id, COUNT(*), COUNT(DISTINCT date(arrived_at)) FROM visits"
                            " GROUP BY branch_id"
                        )
                    }

            while at_centre().get("sh-lujiazui", (0, 0))[0] < expected and time.monotonic() < deadline:
                time.sleep(0.5)
            held = at_centre()
            assert held["sh-lujiazui"][0] == expected, held  # every visit, once
            rows = {row.branch_id: row for row in board(database, datetime.now(timezone.utc))}
            assert set(rows) == {"sh-lujiazui", "bj-xidan", "sz-industrial-park"}
            assert rows["sh-lujiazui"].state == "online", rows["sh-lujiazui"]
            history = {branch: days for branch, (_visits, days) in held.items()}
            assert history["bj-xidan"] >= 60 and history["sz-industrial-park"] >= 60, history
        finally:
            database.close()

        # head office logs in to the centre the demo serves and finds the live branch on the board
        data = str(tmp_path / "centre")
        added = run(
            "centre",
            "users",
            "add",
            str(REPO / "profiles/demo/centre.yaml"),
            "--data-dir",
            data,
            "wang",
            "--role",
            "head_office",
            "--password-stdin",
            stdin=PASSWORD,
        )
        assert added.returncode == 0, added.stderr
        browser = Browser(centre_url)
        assert browser.login("wang")[0] == 302
        status, _headers, page = browser.request("/api/board")
        assert status == 200
        found = {b["branch_id"]: b for b in json.loads(page)["branches"]}
        assert found["sh-lujiazui"]["state"] == "online" and found["sh-lujiazui"]["arrivals_today"] > 0
    finally:
        stop(proc)
