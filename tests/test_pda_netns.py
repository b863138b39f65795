"""The hub and a PDA on two hosts of a real LAN: two network namespaces made by this test and joined
by a veth pair, with multicast on.  The hub (``vipsense run``) lives in one, the PDA agent in the
other; they find each other by mDNS over the veth, not over loopback.

Needs root (CI is root) and iproute2; skipped otherwise, and then ``test_pda.py`` covers the same
protocol on loopback.  Nothing leaves the namespaces: the only addresses used are the two ends of the
veth, in a private /24 chosen at random.  Recipe: ``test-peers.md``, "zeroconf / mDNS".
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import uuid

import pytest

from .conftest import REPO, wait_for
from .test_pda import KEY, SEED, AgentProcess, outbox_rows

pytestmark = [pytest.mark.netns, pytest.mark.slow]

PROFILE = """\
branch: {id: %(branch)s, name: Two Host Branch}
readers:
  - id: door
    type: simulated
    visitors:
      - {card: E20000000000000000000001, at: 1s, reads: 3, rate: 20}
      - {card: E20000000000000000000002, at: 1.5s, reads: 3, rate: 20}
      - {card: E20000000000000000000003, at: 1h, reads: 1}   # keeps the replay running
stores:
  - {id: local, type: sqlite, seed: [seed.yaml]}
notifiers:
  - {id: pda, type: pda, key: !secret pda_key, interfaces: [%(hub)s], retry: {first: 200ms, max: 1s}}
presence: {min_reads: 2, window: 1s, depart_after: 1s}
notification_ttl: 10m
staff:
  - {id: lobby1, name: 王芳, role: lobby_manager}
  - {id: boss, name: Branch Boss, role: branch_manager}
routing:
  - {event: arrival, to: lobby_manager, via: [pda]}
  - {event: rejected, to: branch_manager, via: [pda]}
  - {event: suspect, to: branch_manager, via: [pda]}
"""


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


@pytest.fixture
def lan():
    """Two namespaces joined by a veth pair: (hub namespace, hub address, PDA namespace, PDA address)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2 (test_pda.py covers loopback)")
    tag = uuid.uuid4().hex[:6]
    hub_ns, pda_ns = f"vs-hub-{tag}", f"vs-pda-{tag}"
    net = f"10.{random.randint(64, 250)}.{random.randint(1, 250)}"
    hub_ip, pda_ip = f"{net}.1", f"{net}.2"
    made: list[str] = []
    try:
        for ns in (hub_ns, pda_ns):
            r = _ip("netns", "add", ns)
            if r.returncode:
                pytest.skip(f"cannot make a network namespace here: {r.stderr.strip()}")
            made.append(ns)
        steps = [
            (
                "link",
                "add",
                f"vh{tag}",
                "netns",
                hub_ns,
                "type",
                "veth",
                "peer",
                "name",
                f"vp{tag}",
                "netns",
                pda_ns,
            ),
            ("-n", hub_ns, "addr", "add", f"{hub_ip}/24", "dev", f"vh{tag}"),
            ("-n", pda_ns, "addr", "add", f"{pda_ip}/24", "dev", f"vp{tag}"),
            ("-n", hub_ns, "link", "set", "lo", "up"),
            ("-n", pda_ns, "link", "set", "lo", "up"),
            ("-n", hub_ns, "link", "set", f"vh{tag}", "up", "multicast", "on"),
            ("-n", pda_ns, "link", "set", f"vp{tag}", "up", "multicast", "on"),
        ]
        for step in steps:
            r = _ip(*step)
            assert r.returncode == 0, f"ip {' '.join(step)}: {r.stderr}"
        yield hub_ns, hub_ip, pda_ns, pda_ip
    finally:
        for ns in made:
            _ip("netns", "del", ns)


def test_hub_and_pda_in_two_namespaces_find_each_other_over_multicast_and_ack(lan, write_profile, tmp_path):
    hub_ns, hub_ip, pda_ns, pda_ip = lan
    branch_id = f"lan-{uuid.uuid4().hex[:6]}"
    (tmp_path / "secrets.yaml").write_text(f"pda_key: {KEY}\n", encoding="utf-8")
    profile = write_profile(PROFILE % {"branch": branch_id, "hub": hub_ip}, seed=SEED)
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    hub = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            hub_ns,
            sys.executable,
            "-m",
            "vipsense.cli",
            "run",
            str(profile),
            "--data-dir",
            str(data),
            "--no-status",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    pda = AgentProcess(
        name="王芳的PDA",
        staff="lobby1",
        branch=branch_id,
        key=KEY,
        interface=pda_ip,
        auto_ack=0.1,
        data_dir=tmp_path / "pda",
        prefix=["ip", "netns", "exec", pda_ns],
    )
    try:
        found = pda.wait_for(rf"hub found: {branch_id} at ([\d.]+):\d+$", timeout=20)
        assert found, (pda.out, pda.errors)
        assert found.group(1) == hub_ip  # reached across the veth, not over loopback

        def states() -> list[tuple]:
            return outbox_rows(data, "SELECT key, state FROM outbox")

        assert wait_for(lambda: [s for _, s in states()] == ["acknowledged"] * 2, timeout=30), (
            states(),
            pda.out,
        )
        keys = [k for k, _ in states()]
        assert all(k.endswith(":lobby1") and pda.shown(k) == 1 for k in keys), pda.out
        assert pda.blocks() == 2
        acked = outbox_rows(data, "SELECT key FROM outbox WHERE acknowledged_at IS NOT NULL")
        assert [k for (k,) in acked] == sorted(keys)
    finally:
        if hub.poll() is None:
            hub.terminate()
        try:
            hub.wait(10)
        except subprocess.TimeoutExpired:
            hub.kill()
            hub.wait()
        assert pda.stop() == 0
    assert hub.returncode == 0, hub.stderr.read() if hub.stderr else ""
    assert pda.wait_for(f"hub gone: {branch_id}"), pda.out  # goodbye packets crossed the veth too
    assert KEY not in pda.out
