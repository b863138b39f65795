"""The ThingMagic driver against the project's module emulator over real links: a pseudo-terminal, a
loopback TCP socket (pyserial ``socket://``) and a socat pty pair that is unplugged and plugged back.
Every byte between driver and emulator is the module's binary protocol."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from vipsense.branch import Branch
from vipsense.config.profile import load_profile
from vipsense.output import Output
from vipsense.plugins.readers.thingmagic.emulator import EmulatedRead, ModuleEmulator, ModuleLink, ReadQueue

from .conftest import BASE_PROFILE, wait_for
from .processes import stop

ADA = "E20000000000000000000001"
LOST = "E20000000000000000000002"

READER = "{id: door, type: thingmagic, region: PRC, port: '%s', silence_timeout: 1s%s}"


@pytest.fixture
def branch_on(write_profile, host, tmp_path):
    """Start a branch whose door reader is a ThingMagic module at ``url``."""
    made = []

    def start(url: str, extra: str = "") -> tuple[Branch, io.StringIO]:
        text = BASE_PROFILE.replace("{id: door, type: simulated, visitors: []}", READER % (url, extra))
        profile = load_profile(write_profile(text), host, data_dir=tmp_path / f"data{len(made)}")
        out = io.StringIO()
        branch = Branch(profile, host, output=Output(out, live=False))
        branch.start()
        made.append(branch)
        return branch, out

    yield start
    for branch in made:
        if not branch.stopping:
            branch.stop()


@pytest.fixture
def module():
    """An emulated module on a fresh pty, with a hand-fed read queue."""
    links = []

    def make(**kwargs) -> tuple[ModuleLink, ReadQueue]:
        reads = ReadQueue()
        link = ModuleLink.on_pty(ModuleEmulator(reads, **kwargs)).start()
        links.append(link)
        return link, reads

    yield make
    for link in links:
        link.stop()


def door(branch: Branch):
    return branch.status.devices["door"]


def walk_in(reads: ReadQueue, epc: str = ADA, n: int = 3) -> None:
    reads.add(*[EmulatedRead(epc, antenna=1, rssi=-48)] * n)


def test_bring_up_then_stream_greets_a_customer(module, branch_on):
    link, reads = module()
    branch, out = branch_on(link.url)
    assert wait_for(lambda: door(branch).state == "connected")
    assert door(branch).reason == f"M6e Nano firmware 01.03.01.47 on {link.url}, streaming"
    assert not link.emulator.in_bootloader, "the driver booted the firmware"
    walk_in(reads)
    assert wait_for(lambda: "Ada Wong" in out.getvalue())
    branch.stop()
    rows = sqlite3.connect(branch.data_dir / "visits.sqlite3").execute(
        "SELECT kind, epc, peak_rssi FROM visits"
    )
    assert rows.fetchall() == [("greeted", ADA, -48.0)]


@pytest.mark.slow
def test_socket_url_works_like_a_serial_port(branch_on):
    reads = ReadQueue()
    with ModuleLink.on_tcp(ModuleEmulator(reads)) as link:
        branch, out = branch_on(link.url)
        assert wait_for(lambda: door(branch).state == "connected")
        assert link.url.startswith("socket://127.0.0.1:")
        walk_in(reads)
        assert wait_for(lambda: "Ada Wong" in out.getvalue())
        branch.stop()


@pytest.mark.slow
def test_module_that_cannot_stream_is_polled(module, branch_on):
    link, reads = module(streaming=False)
    branch, out = branch_on(link.url)
    assert wait_for(lambda: door(branch).state == "connected")
    assert door(branch).reason.endswith("polling every 0.25 s")
    for _ in range(3):  # three polls' worth of reads, one card
        walk_in(reads, n=1)
        time.sleep(0.3)
    assert wait_for(lambda: "Ada Wong" in out.getvalue())


@pytest.mark.slow
def test_polling_fetches_a_tag_buffer_larger_than_one_reply(module, branch_on):
    link, reads = module(streaming=False)
    branch, _ = branch_on(link.url)
    assert wait_for(lambda: door(branch).state == "connected")
    strangers = [f"E2000000000000000000{n:04X}" for n in range(0x100, 0x114)]  # 20 unknown tags
    for _ in range(3):
        reads.add(*[EmulatedRead(epc, antenna=1, rssi=-50) for epc in strangers])
        time.sleep(0.3)
    assert wait_for(lambda: branch.status.counters["unknown"] == 20)


def test_streaming_on_refuses_a_module_that_cannot(module, branch_on):
    link, _ = module(streaming=False)
    branch, _ = branch_on(link.url, ", streaming: 'on'")
    assert wait_for(lambda: door(branch).state == "disconnected")
    assert "cannot stream" in door(branch).reason


def test_missing_antenna_is_a_clear_status(module, branch_on):
    link, _ = module(connected_antennas=(1,))
    branch, _ = branch_on(link.url, ", antennas: [1, 3]")
    assert wait_for(lambda: door(branch).state == "disconnected")
    assert door(branch).reason == "ProtocolError: antenna not connected (configured antennas: 1, 3)"


def test_power_cycle_is_noticed_and_the_module_reconfigured(module, branch_on):
    link, reads = module()
    branch, out = branch_on(link.url)
    assert wait_for(lambda: door(branch).state == "connected")
    states = []
    branch.host.add(
        type(
            "Watch",
            (),
            {
                "vipsense_reader_status_changed": staticmethod(
                    lambda reader_id, status: states.append((status.state.value, status.reason))
                )
            },
        ),
        "watch",
    )
    link.reboot()  # back in the bootloader, region and antennas forgotten, a 0x04 frame sent
    assert wait_for(lambda: ("disconnected", "LinkLost: module rebooted (power cycle?)") in states)
    assert wait_for(lambda: door(branch).state == "connected")
    assert not link.emulator.in_bootloader
    walk_in(reads)
    assert wait_for(lambda: "Ada Wong" in out.getvalue())


@pytest.mark.slow
def test_silent_link_is_detected_and_recovers(module, branch_on):
    link, reads = module(keepalive_interval=0.2)
    branch, out = branch_on(link.url)
    assert wait_for(lambda: door(branch).state == "connected")
    link.set_silent(True)
    assert wait_for(lambda: door(branch).state == "disconnected", timeout=4)
    assert door(branch).reason.startswith("TimeoutError: no frames from the module for 1.")
    link.set_silent(False)
    assert wait_for(lambda: door(branch).state == "connected", timeout=4)
    walk_in(reads)
    assert wait_for(lambda: "Ada Wong" in out.getvalue())


def test_garbage_and_corrupt_frames_are_counted_and_reading_goes_on(module, branch_on):
    link, reads = module()
    branch, out = branch_on(link.url)
    assert wait_for(lambda: door(branch).state == "connected")
    good = bytes.fromhex("FF0022000000")  # a keep-alive shape with a wrong CRC
    link.inject(b"\x00\x13garbage" + good + b"\xff\xff\x01")
    walk_in(reads)
    assert wait_for(lambda: "Ada Wong" in out.getvalue())
    counters = door(branch).counters
    assert counters.get("dropped_bytes", 0) > 0
    assert door(branch).state == "connected"


# -- unplugging a USB-serial adapter: a socat pty pair with stable names -------------------------------


class Adapter:
    """A socat pty pair standing in for a USB-serial adapter: killing socat unplugs it and both
    ends vanish; starting it again with the same names plugs it back in (test-peers.md)."""

    def __init__(self, directory: Path) -> None:
        self.host = directory / "ttyHOST"
        self.dev = directory / "ttyDEV"
        self.proc: subprocess.Popen | None = None
        self.link: ModuleLink | None = None
        self.reads = ReadQueue()

    def plug(self) -> None:
        self.proc = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={self.host}", f"pty,raw,echo=0,link={self.dev}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_for(lambda: self.host.exists() and self.dev.exists())
        fd = os.open(self.dev, os.O_RDWR | os.O_NOCTTY)
        self.link = ModuleLink.on_fd(ModuleEmulator(self.reads), fd).start()

    def unplug(self) -> None:
        """Pull the adapter: socat ends (SIGTERM, then SIGKILL), reaped; the emulator stops."""
        if self.proc is not None:
            stop(self.proc, timeout=5)
        if self.link is not None:
            self.link.stop()
            self.link = None
        assert wait_for(lambda: not self.host.exists())


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is installed by tests/install.sh")
def test_unplugged_adapter_shows_disconnected_and_recovers_by_itself(tmp_path, branch_on):
    adapter = Adapter(tmp_path)
    try:
        adapter.plug()
        branch, out = branch_on(str(adapter.host))
        assert wait_for(lambda: door(branch).state == "connected")
        adapter.unplug()
        assert wait_for(lambda: door(branch).state == "disconnected", timeout=4)
        reason = door(branch).reason
        assert reason.startswith(("LinkLost: serial link lost", "LinkLost: cannot open")), reason
        time.sleep(1.0)
        adapter.plug()
        plugged = time.monotonic()
        assert wait_for(lambda: door(branch).state == "connected", timeout=5)
        assert time.monotonic() - plugged < 2.0, "back within 2 s of the adapter returning"
        walk_in(adapter.reads)
        assert wait_for(lambda: "Ada Wong" in out.getvalue())
    finally:
        adapter.unplug()  # whatever happened: socat reaped, the emulator stopped


@pytest.mark.slow
def test_emulated_door_in_a_profile_finishes_with_its_scenario(write_profile, host, tmp_path):
    reader = (
        "{id: door, type: thingmagic, region: PRC, emulate: {visitors: ["
        f"{{card: {ADA}, at: 0.2s, stay: 1s, rssi: -50}}, "
        f"{{card: {LOST}, at: 0.5s, stay: 1s, rssi: -50}}]}}}}"
    )
    text = BASE_PROFILE.replace("{id: door, type: simulated, visitors: []}", reader)
    profile = load_profile(write_profile(text), host, data_dir=tmp_path / "data")
    out = io.StringIO()
    branch = Branch(profile, host, output=Output(out, live=False))
    branch.start()
    try:
        assert wait_for(lambda: branch.readers_finished, timeout=8)
        assert door(branch).state == "finished"
    finally:
        branch.stop()
    assert branch.status.counters["greeted"] == 1
    assert branch.status.counters["rejected"] == 1
    assert "Ada Wong" in out.getvalue() and "CARD REPORTED LOST" in out.getvalue()


def test_port_and_emulate_are_exclusive(write_profile, host):
    from vipsense.config import ProfileError

    text = BASE_PROFILE.replace(
        "{id: door, type: simulated, visitors: []}", "{id: door, type: thingmagic, region: PRC}"
    )
    with pytest.raises(ProfileError) as exc:
        load_profile(write_profile(text), host)
    assert [e.message for e in exc.value.errors] == [
        "set exactly one of 'port' (a pyserial URL) and 'emulate'"
    ]
