"""The SMS pager notifier against the project's modem emulator over real links: pseudo-terminals,
a socat pty pair that is unplugged and plugged back, loopback TCP (pyserial ``socket://``), the
emulator's command line, a running Branch, and gammu as an independent AT client.  Every byte
between them is the AT dialogue, and every text is read back by decoding the PDUs sent."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from vipsense.api import DeliveryFailed, Duration, PluginContext, Secret
from vipsense.branch import Branch
from vipsense.clock import Clock
from vipsense.config import ProfileError
from vipsense.config.profile import load_profile
from vipsense.model import DeliveryState, Notification, Role, Staff, TagRead
from vipsense.output import Output
from vipsense.plugins.notifiers.sms_modem import GsmSettings, make_notifier
from vipsense.plugins.notifiers.sms_modem.emulator import ModemEmulator, ModemLink
from vipsense.sms import segment

from .conftest import wait_for
from .processes import stop
from .profiles import CM1, SCREEN, alarm_routes, branch_profile
from .test_gsm_pdu import MOBILE, STAFF, YOSHI, assert_private, visit

LOBBY = "+8613800138001"
FAST = {"command_timeout": Duration(0.5), "send_timeout": Duration(2)}


def context(tmp_path: Path) -> PluginContext:
    return PluginContext(
        branch_id="sh",
        branch_name="Lujiazui",
        item_id="sms",
        data_dir=tmp_path,
        profile_dir=tmp_path,
        clock=Clock(),
        output=Output(io.StringIO(), live=False),
        log=logging.getLogger("vipsense.notifier.sms"),
        staff=STAFF,
    )


def notification(v=None, mobile: str | None = LOBBY) -> Notification:
    v = v or visit()
    person = Staff("lobby", "Lobby Person", Role.LOBBY_MANAGER, mobile=mobile)
    now = time.time()
    return Notification(f"{v.visit_id}:lobby", v, person, "sms", now, now + 600)


@pytest.fixture
def rig(tmp_path):
    """``rig(emulator=None, **settings)`` -> (notifier, emulator, link) over a fresh pty."""
    made = []

    def make(emulator: ModemEmulator | None = None, link: ModemLink | None = None, **settings):
        emulator = emulator or ModemEmulator()
        link = link or ModemLink.on_pty(emulator)
        link.start()
        notifier = make_notifier(GsmSettings(port=link.url, **{**FAST, **settings}), context(tmp_path))
        notifier.warming.join(5)  # the start-up checks run as the notifier starts
        made.append((notifier, link))
        return notifier, emulator, link

    yield make
    for notifier, link in made:
        notifier.close()
        link.stop()


def failure(notifier, n=None, within: float = 3.0) -> DeliveryFailed:
    started = time.monotonic()
    with pytest.raises(DeliveryFailed) as exc:
        notifier.send(n or notification())
    assert time.monotonic() - started < within, "a failed send must not hang"
    return exc.value


# -- start-up checks and health ----------------------------------------------------------------------
def test_startup_checks_are_reported_by_health(rig):
    notifier, emulator, _ = rig()
    health = notifier.health()  # before any message: the checks ran as the notifier started
    assert {k: health[k] for k in ("state", "sim", "network", "operator", "signal_dbm", "signal_bars")} == {
        "state": "ready",
        "sim": "ready",
        "network": "registered (home)",
        "operator": "CHINA MOBILE",
        "signal_dbm": -73,
        "signal_bars": 4,
    }
    assert health["smsc"] == "+8613800210500" and health["pdu_mode"] is True and health["sent"] == 0
    assert health["modem"] == "VIPSENSE GSM-EMU-1 1.0.0" and health["last_error"] == ""
    startup = ["AT", "ATE0", "AT+CMEE=1", "AT+CPIN?", "AT+CREG?", "AT+CSQ", "AT+CSCA?", "AT+CMGF=0"]
    assert [c for c in emulator.commands if c in startup] == startup
    result = notifier.send(notification())
    assert notifier.health()["sent"] == 1 and emulator.commands[-1].startswith("AT+CMGS=")
    assert len(emulator.commands) == len(startup) + 5, "a ready modem is not checked again"
    assert result.state is DeliveryState.DELIVERED and result.notifier_id == "sms"
    assert result.detail == "SMS to +86*******8001 in 1 part(s), reference(s) 1"


def test_the_text_sent_is_the_text_received(rig):
    notifier, emulator, _ = rig()
    n = notification()
    notifier.send(n)
    (message,) = emulator.received
    assert message.number == LOBBY
    assert (
        message.text
        == notifier.render(n)
        == "09:41 VIP 张伟 Zhang Wei (GOLD) at door. Client manager: 王芳 Wang Fang."
    )
    assert_private(message.text)


def test_long_chinese_text_goes_in_concatenated_parts(rig):
    notifier, emulator, _ = rig(language="zh")
    name = "欧阳" + YOSHI + "娜娜 Ouyang Nana，贵宾中的贵宾，" * 12
    result = notifier.send(notification(visit(name=name)))
    (message,) = emulator.received
    assert message.text == segment(notifier.render(notification(visit(name=name))), 4).text
    assert YOSHI in message.text and message.errors == ()
    assert len(message.parts) == 4 and result.detail.endswith("reference(s) 1, 2, 3, 4 (cut to 4 parts)")
    assert message.text.endswith("…")
    assert len({p.reference for p in message.parts}) == 1


def test_gsm7_text_with_extension_characters(rig):
    notifier, emulator, _ = rig()
    n = notification(visit(name="Ada [Wong] {jr} €", client_manager=None))
    notifier.send(n)
    (message,) = emulator.received
    assert message.parts[0].alphabet == "gsm7" and "Ada [Wong] {jr} €" in message.text
    assert message.text == notifier.render(n)


def test_smsc_from_settings_goes_in_the_pdu(rig):
    notifier, emulator, _ = rig(emulator=ModemEmulator(smsc=""), smsc="+8613800210500")
    notifier.send(notification())
    assert emulator.received[0].parts[0].smsc == "+8613800210500"
    assert notifier.health()["smsc"] == "+8613800210500 (from settings)"


def test_no_smsc_anywhere_is_a_clear_error(rig):
    notifier, _, _ = rig(emulator=ModemEmulator(smsc=""))
    exc = failure(notifier)
    assert str(exc) == "modem not ready: no SMS centre address on the SIM: set 'smsc'" and not exc.retry


def test_sim_pin_required_without_a_pin(rig):
    notifier, emulator, _ = rig(emulator=ModemEmulator(pin="4321"))
    exc = failure(notifier)
    assert "SIM PIN required: set 'pin'" in str(exc) and exc.retry is False
    assert notifier.health()["sim"] == "PIN required" and notifier.health()["state"] == "not ready"
    assert emulator.received == []


@pytest.mark.parametrize("sticky_echo", [False, True], ids=["ATE0", "echo-despite-ATE0"])
def test_sim_pin_is_entered_and_never_shown(rig, caplog, sticky_echo):
    caplog.set_level(logging.DEBUG, logger="vipsense")
    emulator = ModemEmulator(pin="4321", sticky_echo=sticky_echo)
    notifier, emulator, _ = rig(emulator=emulator, pin=Secret("4321"))
    notifier.send(notification())
    assert notifier.health()["sim"] == "ready" and len(emulator.received) == 1
    assert 'AT+CPIN="****"' in caplog.text and "4321" not in caplog.text
    assert "4321" not in repr(notifier.settings)
    assert MOBILE not in caplog.text and LOBBY not in caplog.text and "+86*******8001" in caplog.text


def test_a_wrong_pin_is_tried_once_only(rig):
    notifier, emulator, _ = rig(emulator=ModemEmulator(pin="4321"), pin=Secret("1111"))
    health = notifier.health()
    assert health["sim"] == "PIN refused"
    assert health["last_error"] == "SIM PIN refused: incorrect SIM PIN (+CME ERROR 16)"
    exc = failure(notifier)
    assert "SIM PIN was refused before; not tried again" in str(exc) and not exc.retry
    assert emulator.pin_tries == 2, "a second wrong try would bring the SIM closer to blocking"


@pytest.mark.parametrize(
    ("sim", "message"),
    [("absent", "SIM: SIM not inserted (+CME ERROR 10)"), ("puk", "SIM PUK required: the SIM is blocked")],
)
def test_sim_faults(rig, sim, message):
    notifier, _, _ = rig(emulator=ModemEmulator(sim=sim))
    exc = failure(notifier)
    assert message in str(exc) and exc.retry is False


@pytest.mark.slow
@pytest.mark.parametrize(
    ("registration", "message", "retry"),
    [
        ("searching", "not registered on the network (searching)", True),
        ("none", "not registered on the network (not registered, not searching)", True),
        ("denied", "network registration denied", False),
    ],
)
def test_not_registered(rig, registration, message, retry):
    notifier, emulator, _ = rig(emulator=ModemEmulator(registration=registration))
    exc = failure(notifier)
    assert message in str(exc) and exc.retry is retry
    assert notifier.health()["network"] in message
    emulator.registration = "roaming"  # the modem finds a network: the next send checks again
    notifier.send(notification())
    assert notifier.health()["network"] == "registered (roaming)"


# -- +CMS ERROR ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "words", "retry"),
    [
        (331, "no network service", True),
        (332, "network timeout", True),
        (314, "SIM busy", True),
        (304, "invalid PDU mode parameter (the modem may not send concatenated SMS)", False),
        (330, "SMS centre address unknown: set 'smsc'", False),
        (1, "unassigned number: the recipient's number does not exist", False),
    ],
)
def test_cms_errors_become_delivery_failures(rig, code, words, retry):
    notifier, emulator, _ = rig()
    emulator.fail_sends(code)
    exc = failure(notifier)
    assert str(exc) == f"SMS to +86*******8001: {words} (+CMS ERROR {code})"
    assert exc.retry is retry and notifier.health()["failed"] == 1
    notifier.send(notification())  # the next one goes (after the start-up checks ran again)
    assert len(emulator.received) == 1 and emulator.commands.count("AT+CPIN?") == 2


def test_a_failed_second_part_says_the_first_was_delivered(rig):
    notifier, emulator, _ = rig(language="zh")
    emulator.fail_sends(42, after=1)
    exc = failure(notifier, notification(visit(name="欧阳娜娜" * 30)))
    assert (
        "part 2 of 3: network congestion (+CMS ERROR 42); part(s) 1-1 already delivered (reference(s) 1)"
        in str(exc)
    )
    assert exc.retry is True and emulator.received == [] and emulator.inbox.incomplete == 1


def test_bare_error_when_the_modem_refuses_numeric_errors(rig):
    notifier, emulator, link = rig()
    notifier.send(notification())
    link.call(lambda em: setattr(em, "cmee", 0))
    emulator.fail_sends(331)
    exc = failure(notifier)
    assert str(exc) == "SMS to +86*******8001: the modem answered ERROR" and exc.retry is True


# -- recipients ------------------------------------------------------------------------------------
def test_recipient_without_a_mobile(rig):
    notifier, emulator, _ = rig()
    exc = failure(notifier, notification(mobile=None))
    assert str(exc) == "Lobby Person (lobby) has no mobile number in the profile's staff list"
    assert exc.retry is False and emulator.received == []
    bad = failure(notifier, notification(mobile="13800-CALL-ME"))
    assert "is not a phone number" in str(bad) and not bad.retry


def test_national_numbers_are_sent_as_dialled(rig):
    notifier, emulator, _ = rig()
    notifier.send(notification(mobile="138 0013 8002"))
    assert emulator.received[0].number == "13800138002"


# -- unsolicited result codes and stalls -----------------------------------------------------------
def test_unsolicited_codes_are_ignored(rig):
    notifier, emulator, link = rig()
    emulator.queue_urc("RING", '+CMTI: "SM",3')  # between AT and its OK
    link.urc("+CREG: 1")
    notifier.send(notification())
    link.urc('+CMTI: "SM",4')
    link.urc("^RSSI: 18")
    time.sleep(0.05)
    emulator.queue_urc("+CDSI: 1")  # between AT+CMGS and its OK
    notifier.send(notification())
    assert len(emulator.received) == 2 and notifier.health()["state"] == "ready"


@pytest.mark.slow
@pytest.mark.parametrize("stall", ["all", "send"])
def test_a_stalled_modem_fails_within_the_timeout_and_recovers(rig, stall):
    notifier, emulator, link = rig(send_timeout=Duration(1))
    notifier.send(notification())
    link.call(lambda em: setattr(em, "stall", stall))
    exc = failure(notifier, within=1.6)
    assert "no answer to" in str(exc) or "no '> ' prompt" in str(exc)
    assert exc.retry is True and notifier.health()["state"] == "disconnected"
    link.call(lambda em: setattr(em, "stall", ""))
    notifier.send(notification())
    assert len(emulator.received) == 2


def test_a_modem_that_rebooted_behind_our_back(rig):
    notifier, emulator, link = rig(emulator=ModemEmulator(pin="4321"), pin=Secret("4321"))
    notifier.send(notification())
    link.reboot()  # power glitch: echo on, CMEE=0, the SIM locked again
    exc = failure(notifier)
    assert str(exc) == "SMS to +86*******8001: the modem answered ERROR" and exc.retry is True
    notifier.send(notification())  # start-up checks again: ATE0, AT+CMEE=1, the PIN
    assert len(emulator.received) == 2 and emulator.commands.count('AT+CPIN="****"') == 2


def test_pty_master_closed_mid_run(rig):
    notifier, _, link = rig()
    notifier.send(notification())
    link.stop()  # the modem's end of the line is gone
    exc = failure(notifier, within=1.0)
    assert str(exc).startswith("SMS to +86*******8001: modem link lost: ") and exc.retry
    assert notifier.health()["state"] == "disconnected"
    again = failure(notifier, within=1.0)  # the old pty cannot come back: fails fast, every time
    assert "modem link lost" in str(again)


# -- an unplugged USB adapter: a socat pty pair with stable names (test-peers.md) ------------------
class Adapter:
    """Killing socat unplugs the adapter and both ends vanish; starting it again with the same link
    names plugs it back.  The modem behind it loses power with it."""

    def __init__(self, directory: Path, emulator: ModemEmulator) -> None:
        self.host, self.dev = directory / "ttyHOST", directory / "ttyDEV"
        self.emulator = emulator
        self.proc: subprocess.Popen | None = None
        self.link: ModemLink | None = None

    def plug(self) -> None:
        self.emulator.power_cycle()
        self.proc = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={self.host}", f"pty,raw,echo=0,link={self.dev}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_for(lambda: self.host.exists() and self.dev.exists())
        fd = os.open(self.dev, os.O_RDWR | os.O_NOCTTY)
        self.link = ModemLink.on_fd(self.emulator, fd).start()

    def unplug(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(5)
        self.link.stop()
        assert wait_for(lambda: not self.host.exists())

    def close(self) -> None:
        """Teardown, whatever happened: socat stopped and reaped, the modem's end closed."""
        if self.proc is not None:
            stop(self.proc)
        if self.link is not None:
            self.link.stop()


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is installed by tests/install.sh")
def test_unplugged_modem_fails_the_send_and_works_once_back(tmp_path, rig):
    emulator = ModemEmulator()
    adapter = Adapter(tmp_path, emulator)
    try:
        adapter.plug()
        notifier = make_notifier(GsmSettings(port=str(adapter.host), **FAST), context(tmp_path))
        notifier.warming.join(5)
        notifier.send(notification())
        adapter.unplug()
        exc = failure(notifier, within=1.0)
        assert "modem link lost" in str(exc) and exc.retry
        while_away = failure(notifier, within=1.0)
        assert "cannot open" in str(while_away)
        adapter.plug()
        assert emulator.echo is True, "the modem came back with its power-up defaults"
        notifier.send(notification())
        assert emulator.echo is False and emulator.commands.count("ATE0") == 2  # start-up ran again
        assert [m.number for m in emulator.received] == [LOBBY, LOBBY]
        assert notifier.health()["state"] == "ready"
        notifier.close()
    finally:
        adapter.close()


@pytest.mark.slow
def test_socket_url(rig):
    emulator = ModemEmulator()
    notifier, _, link = rig(emulator=emulator, link=ModemLink.on_tcp(emulator))
    assert link.url.startswith("socket://127.0.0.1:")
    notifier.send(notification())
    assert len(emulator.received) == 1


# -- the emulator over a raw terminal --------------------------------------------------------------
FINAL = re.compile(r"(\r\nOK\r\n|\r\nERROR\r\n|\r\n\+CM[ES] ERROR: [^\r]*\r\n|\r\n> )$")


class Terminal:
    def __init__(self, url: str) -> None:
        self.port = serial.serial_for_url(url, baudrate=115200, timeout=0.05)

    def ask(self, text: str) -> str:
        self.port.write(text.encode("utf-8"))
        out, deadline = "", time.monotonic() + 2
        while time.monotonic() < deadline:
            out += self.port.read(4096).decode("utf-8", "replace")
            if FINAL.search(out):
                return out
        raise AssertionError(f"no final result code: {out!r}")


@pytest.fixture
def terminal(tmp_path):
    emulator = ModemEmulator(record=tmp_path / "sms.jsonl")
    with ModemLink.on_pty(emulator) as link:
        term = Terminal(link.url)
        yield term, emulator, tmp_path / "sms.jsonl"
        term.port.close()


@pytest.mark.slow
def test_emulator_dialogue(terminal):
    term, emulator, _ = terminal
    assert term.ask("AT\r") == "AT\r\r\nOK\r\n"  # echo is on after power-up
    assert term.ask("ATE0\r") == "ATE0\r\r\nOK\r\n"
    assert term.ask("ATI\r") == "\r\nVIPSENSE\r\n\r\nGSM-EMU-1\r\n\r\nRevision: 1.0.0\r\n\r\nOK\r\n"
    assert term.ask("AT+CGSN\r") == "\r\n358240051111110\r\n\r\nOK\r\n"
    assert term.ask("AT+CSQ;+CREG?\r") == "\r\n+CSQ: 20,99\r\n\r\n+CREG: 0,1\r\n\r\nOK\r\n"
    assert term.ask("AT+COPS?\r") == '\r\n+COPS: 0,0,"CHINA MOBILE"\r\n\r\nOK\r\n'
    assert term.ask("AT+NOPE\r") == "\r\nERROR\r\n"
    assert term.ask("AT+CMGS=999\r") == "\r\nERROR\r\n"  # AT+CMEE=0: a bare ERROR
    assert term.ask("AT+CMEE=1\r") == "\r\nOK\r\n"
    assert term.ask("AT+CMGS=999\r") == "\r\n+CMS ERROR: 304\r\n"
    assert term.ask("AT+CMEE=2\r") == "\r\nOK\r\n"
    assert term.ask('AT+CPIN="1234"\r') == "\r\n+CME ERROR: operation not allowed\r\n"
    assert emulator.commands[-1] == 'AT+CPIN="****"'


@pytest.mark.slow
def test_emulator_pdu_mode(terminal):
    term, emulator, record = terminal
    term.ask("ATE0;+CMEE=1\r")
    assert term.ask("AT+CMGS=18\r") == "\r\n> "
    assert term.ask("0001000D91683108108300F00008045F204F1F\x1a") == "\r\n+CMGS: 1\r\n\r\nOK\r\n"
    assert term.ask("AT+CMGS=17\r") == "\r\n> "  # the length does not match the PDU
    assert term.ask("0001000D91683108108300F00008045F204F1F\x1a") == "\r\n+CMS ERROR: 304\r\n"
    assert term.ask("AT+CMGS=18\r") == "\r\n> "
    assert term.ask("not hex\x1a") == "\r\n+CMS ERROR: 304\r\n"
    assert term.ask("AT+CMGS=18\r") == "\r\n> "
    assert term.ask("0001\x1b") == "\r\nOK\r\n"  # ESC cancels
    (message,) = emulator.received
    assert (message.number, message.text, message.references) == ("+8613800138000", "张伟", (1,))
    line = json.loads(record.read_text(encoding="utf-8"))
    assert (line["number"], line["text"], line["parts"], line["alphabet"]) == (
        "+8613800138000",
        "张伟",
        1,
        "ucs2",
    )


def test_emulator_text_mode(terminal):
    term, emulator, _ = terminal
    term.ask("ATE0\r")
    assert term.ask("AT+CMGF=1\r") == "\r\nOK\r\n"
    assert term.ask('AT+CMGS="+8613800138000"\r') == "\r\n> "
    assert term.ask("Hello\x1a") == "\r\n+CMGS: 1\r\n\r\nOK\r\n"
    term.ask('AT+CSCS="UCS2"\r')
    assert term.ask('AT+CMGS="002B0038003600310033003800300030003100330038003000300030"\r') == "\r\n> "
    assert term.ask("5F204F1F\x1a") == "\r\n+CMGS: 2\r\n\r\nOK\r\n"
    assert [(m.number, m.text) for m in emulator.received] == [
        ("+8613800138000", "Hello"),
        ("+8613800138000", "张伟"),
    ]


@pytest.mark.slow
def test_emulator_command_line(tmp_path):
    record = tmp_path / "sms.jsonl"
    module = "vipsense.plugins.notifiers.sms_modem.emulator"
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--pty", "--record", str(record)], stdout=subprocess.PIPE, text=True
    )
    try:
        path = process.stdout.readline().strip()
        assert path.startswith("/dev/pts/")
        notifier = make_notifier(GsmSettings(port=path, **FAST), context(tmp_path))
        notifier.send(notification())
        notifier.close()
        process.stdout.readline()  # "emulating a GSM modem; Ctrl-C or SIGTERM stops"
        shown = process.stdout.readline().strip()
        assert shown == "SMS to +86*******8001 in 1 part(s): " + notifier.render(notification())
        assert json.loads(record.read_text(encoding="utf-8"))["number"] == LOBBY
    finally:
        code = stop(process)  # SIGTERM: a background job would not see a SIGINT
    assert code == 0 and wait_for(lambda: not os.path.exists(path), timeout=2)  # the pty released


# -- through a running branch --------------------------------------------------------------------------
ADA, LOST, BOUND = "E20000000000000000000001", "E20000000000000000000002", "E20000000000000000000003"
BRANCH_SEED = """\
customers:
  - {customer_no: C1, name: Ada Wong, tier: gold, id_number: "110101199003071234",
     mobile: "13812345678", client_manager: cm1}
  - {customer_no: C2, name: Bo Li, tier: platinum, id_number: "310115198002081033", mobile: "13987654321"}
cards:
  - {epc: E20000000000000000000001, customer_no: C1}
  - {epc: E20000000000000000000002, customer_no: C2, status: lost}
  - {epc: E20000000000000000000003, customer_no: C2, tid: E2801160200000000000AAAA}
"""
BRANCH_PROFILE = branch_profile(
    notifiers=[
        SCREEN,
        "{id: sms, type: sms-modem, emulate: {show: false, record: sms.jsonl}, command_timeout: 1s}",
    ],
    staff=[
        '{id: lobby, name: Lobby Person, role: lobby_manager, mobile: "+8613800138001"}',
        '{id: boss, name: Branch Boss, role: branch_manager, mobile: "13800138002"}',
        CM1,
    ],
    routing=[
        "{event: arrival, to: lobby_manager, via: [screen, sms]}",
        "{event: arrival, to: client_manager, via: [sms]}",
        "{event: rejected, to: lobby_manager, via: [screen]}",
        *alarm_routes("sms"),
    ],
)


class Deliveries:
    def __init__(self) -> None:
        self.results = []

    def vipsense_delivery_result(self, notification, result):
        self.results.append((notification.recipient.id, result))


def test_a_branch_texts_arrivals_and_alerts(write_profile, host, tmp_path):
    profile = load_profile(write_profile(BRANCH_PROFILE, seed=BRANCH_SEED), host, data_dir=tmp_path / "data")
    out = io.StringIO()
    branch = Branch(profile, host, output=Output(out, live=False))
    seen = Deliveries()
    branch.host.add(seen, "gsm-test-deliveries")
    branch.start()
    try:
        emulator = branch.notifiers["sms"].notifier.emulator

        def walk_in(epc: str, tid: str | None = None) -> None:
            before = len(emulator.received)
            for _ in range(3):
                branch.pipeline.submit(TagRead("door", 1, epc, -50.0, branch.clock.mono(), tid=tid))
            assert wait_for(lambda: len(emulator.received) > before, timeout=5)

        walk_in(ADA)
        walk_in(LOST)
        walk_in(BOUND, tid="E2801160200000000000BBBB")  # enrolled with another TID: suspect
        greeting, lost, suspect = emulator.received
        assert greeting.number == "+8613800138001"
        assert greeting.text.endswith("VIP Ada Wong (GOLD) at door. Client manager: Client Manager One.")
        assert lost.number == "13800138002"
        assert (
            "Test Branch" in lost.text
            and "CARD ALERT: card reported LOST. Bo Li (PLATINUM), ID *1033" in lost.text
        )
        assert suspect.number == "13800138002" and "SUSPECT CARD: chip ID mismatch" in suspect.text
        for message in emulator.received:
            for secret in ("110101199003071234", "310115198002081033", "13812345678", "13987654321"):
                assert secret not in message.text
        assert wait_for(lambda: len([r for who, r in seen.results if who == "cm1"]) == 1)
        details = branch.status.devices["sms"].snapshot()["details"]
        assert (details["sim"], details["network"], details["signal_dbm"], details["sent"]) == (
            "ready",
            "registered (home)",
            -73,
            3,
        )
    finally:
        branch.stop()
    states = {(who, r.state) for who, r in seen.results if r.notifier_id == "sms"}
    assert states == {
        ("lobby", DeliveryState.DELIVERED),
        ("boss", DeliveryState.DELIVERED),
        ("cm1", DeliveryState.FAILED),
    }
    (cm1,) = [r for who, r in seen.results if who == "cm1"]
    assert "has no mobile number" in cm1.detail
    assert len((tmp_path / "sms.jsonl").read_text(encoding="utf-8").splitlines()) == 3
    assert branch.status.counters["suspect"] == 1 and branch.status.counters["rejected"] == 1


def test_profile_errors(write_profile, host):
    notifier = "{id: sms, type: sms-modem, port: /dev/ttyUSB0, emulate: {}, pin: '12ab'}"
    text = BRANCH_PROFILE.replace(
        "{id: sms, type: sms-modem, emulate: {show: false, record: sms.jsonl}, command_timeout: 1s}", notifier
    )
    with pytest.raises(ProfileError) as exc:
        load_profile(write_profile(text, seed=BRANCH_SEED), host)
    messages = [e.message for e in exc.value.errors]
    assert "a SIM PIN is 4 to 8 digits" in " ".join(messages) and "12ab" not in str(exc.value)


# -- an independent AT client --------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("gammu") is None, reason="gammu is not installed (tests/install.sh installs it from Debian)"
)
def test_gammu_sends_a_long_unicode_text_through_the_emulator(tmp_path):
    emulator = ModemEmulator()
    text = "贵宾张伟先生已到达大堂，请接待。" + YOSHI + " 🙂 " + "欧阳娜娜女士随后到达。" * 6
    with ModemLink.on_pty(emulator) as link:
        config = tmp_path / "gammurc"
        config.write_text(f"[gammu]\ndevice = {link.url}\nconnection = at115200\n", encoding="utf-8")
        result = subprocess.run(
            [
                "gammu",
                "-c",
                str(config),
                "sendsms",
                "TEXT",
                "+8613800138000",
                "-unicode",
                "-autolen",
                "1000",
                "-text",
                text,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            # gammu reads -text in the C library's locale: the tests' en_US.UTF-8 may not be installed
            # (then it is plain ASCII and the text arrives empty); C.UTF-8 always is
            env={**os.environ, "LANG": "C.UTF-8"},
        )
    assert result.returncode == 0, result.stdout + result.stderr
    (message,) = emulator.received
    assert message.number == "+8613800138000" and message.text == text and message.errors == ()
    assert len(message.parts) > 1 and "AT+CMGF=0" in emulator.commands
