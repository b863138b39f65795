"""The SMPP notifier against a real SMS centre on 127.0.0.1: smpp34's SMSC in a subprocess
(``tests/smsc_peer.py``), which decodes every submit_sm it gets and reassembles concatenated parts
from their UDH.  Texts, parts and surrogate pairs, bind refusals, an SMSC that is down and comes
back, throttling, delivery reports, secrets kept out of repr and logs, and one arrival through a
running Branch."""

from __future__ import annotations

import io
import json
import logging
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

smpplib_gsm = pytest.importorskip("smpplib.gsm")
pytest.importorskip("smpp34")

from vipsense.api import DeliveryFailed, Duration, PluginContext, Secret  # noqa: E402
from vipsense.clock import Clock  # noqa: E402
from vipsense.config import ProfileError  # noqa: E402
from vipsense.config.profile import load_profile  # noqa: E402
from vipsense.model import DeliveryState, Notification, RejectReason, Role, Staff, TagRead, VisitKind  # noqa: E402
from vipsense.output import Output  # noqa: E402
from vipsense.plugins.notifiers.sms_smpp import SmppNotifier, SmppSettings, encode_text  # noqa: E402

from .conftest import REPO, wait_for  # noqa: E402
from .processes import stop  # noqa: E402
from .profiles import BOSS, branch_profile, routes  # noqa: E402
from .test_gsm_pdu import ID_NUMBER, MOBILE, STAFF, YOSHI, assert_private, visit  # noqa: E402

PEER = Path(__file__).with_name("smsc_peer.py")
SYSTEM_ID, PASSWORD = "vipsense", "pw8chars"
LOBBY = "+8613800138001"
FAST = {"connect_timeout": Duration(1), "request_timeout": Duration(2)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Smsc:
    """One run of the peer SMSC; its events are read back from its JSON-lines file."""

    def __init__(self, out: Path, port: int, *options: str) -> None:
        self.out, self.port = out, port
        args = [sys.executable, str(PEER), "--port", str(port), "--out", str(out)]
        args += ["--system-id", SYSTEM_ID, "--password", PASSWORD, "--lifetime", "60", *options]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            ready, _, _ = select.select([self.proc.stdout], [], [], 10)
            line = self.proc.stdout.readline() if ready else ""
            if not line:
                raise RuntimeError(f"the SMSC peer did not start: {self.proc.stderr.read()}")
            assert json.loads(line) == {"event": "ready", "port": port}
        except BaseException:
            stop(self.proc)  # never left running behind a failed start
            raise

    def events(self, kind: str | None = None) -> list[dict]:
        if not self.out.exists():
            return []
        rows = [json.loads(line) for line in self.out.read_text(encoding="utf-8").splitlines()]
        return [r for r in rows if kind is None or r["event"] == kind]

    def wait(self, kind: str, count: int = 1, timeout: float = 5.0) -> list[dict]:
        assert wait_for(lambda: len(self.events(kind)) >= count, timeout), self.events()
        return self.events(kind)

    def stop(self) -> None:
        stop(self.proc, timeout=5)


@pytest.fixture
def smsc(tmp_path):
    """``smsc(*options, port=None)`` starts a peer SMSC; every one started is stopped afterwards."""
    made: list[Smsc] = []

    def start(*options: str, port: int | None = None) -> Smsc:
        made.append(Smsc(tmp_path / f"smsc-{len(made)}.jsonl", port or free_port(), *options))
        return made[-1]

    yield start
    for peer in made:
        peer.stop()


@pytest.fixture
def make(tmp_path):
    """``make(port, **settings)`` -> an SmppNotifier for 127.0.0.1:port; closed afterwards."""
    made: list[SmppNotifier] = []

    def build(port: int, **settings) -> SmppNotifier:
        values = {
            "host": "127.0.0.1",
            "port": port,
            "system_id": SYSTEM_ID,
            "password": Secret(PASSWORD, "secret:smpp"),
            "source_addr": "106900001",
            **FAST,
            **settings,
        }
        ctx = PluginContext(
            branch_id="sh",
            branch_name="陆家嘴支行",
            item_id="sms",
            data_dir=tmp_path,
            profile_dir=tmp_path,
            clock=Clock(),
            output=Output(io.StringIO(), live=False),
            log=logging.getLogger("vipsense.notifier.sms"),
            staff=STAFF,
        )
        made.append(SmppNotifier(SmppSettings(**values), ctx))
        return made[-1]

    yield build
    for notifier in made:
        notifier.close()


def notification(v=None, mobile: str | None = LOBBY) -> Notification:
    v = v or visit()
    person = Staff("lobby", "Lobby Person", Role.LOBBY_MANAGER, mobile=mobile)
    now = time.time()
    return Notification(f"{v.visit_id}:lobby", v, person, "sms", now, now + 600)


# -- texts ---------------------------------------------------------------------------------------------
def test_a_chinese_alert_reaches_the_smsc_as_rendered(smsc, make):
    peer = smsc()
    notifier = make(peer.port, language="zh")
    n = notification(visit(VisitKind.REJECTED, RejectReason.LOST))
    result = notifier.send(n)
    [message] = peer.wait("message")
    [submit] = peer.events("submit")
    text = notifier.render(n)
    assert message["text"] == text and "已挂失" in text and "证件尾号1234" in text
    assert (submit["data_coding"], submit["esm_class"], submit["registered_delivery"]) == (8, 0, 1)
    assert (submit["destination_addr"], submit["dest_addr_ton"], submit["dest_addr_npi"]) == (
        "8613800138001",
        1,
        1,
    )
    assert (submit["source_addr"], submit["source_addr_ton"], submit["source_addr_npi"]) == (
        "106900001",
        0,
        1,
    )
    assert_private(message["text"])
    assert result.state is DeliveryState.DELIVERED
    assert "+86*******8001" in result.detail and LOBBY not in result.detail
    assert message["message_ids"][0] in result.detail
    health = notifier.health()
    assert health["bound"] is True and health["smsc"] == f"127.0.0.1:{peer.port}"
    assert health["last_message_ids"] == message["message_ids"] and health["sent"] == 1
    [bind] = peer.events("bind")
    assert (bind["ok"], bind["mode"], bind["system_id"]) == (True, "transceiver", SYSTEM_ID)


def test_a_long_text_is_cut_in_parts_that_never_split_a_surrogate_pair(smsc, make):
    peer = smsc()
    notifier = make(peer.port, language="zh", max_parts=6)
    n = notification(visit(name="张" + YOSHI * 70))  # every other unit is a pair boundary
    text = notifier.render(n)
    # smpplib's own splitter (134-octet cuts) would have broken a pair here: why the notifier cuts
    parts, _, _ = smpplib_gsm.make_parts(text)
    assert any(0xD8 <= p[-2] <= 0xDB for p in parts[:-1])
    notifier.send(n)
    [message] = peer.wait("message")
    submits = peer.events("submit")
    assert message["text"] == text and message["parts"] == len(submits) == 3
    assert "\ufffd" not in message["text"]
    references = {tuple(s["concat"][:2]) for s in submits}
    assert len(references) == 1 and [s["concat"][2] for s in submits] == [1, 2, 3]
    for s in submits:
        assert s["esm_class"] == 0x40 and s["data_coding"] == 8
        assert len(s["text"].encode("utf-16-be")) // 2 <= 67 and "\ufffd" not in s["text"]
    assert_private(message["text"])
    # the next long text gets another concatenation reference
    notifier.send(n)
    second = peer.wait("submit", 6)[3:]
    assert {tuple(s["concat"][:2]) for s in second} != references


def test_an_english_text_goes_as_gsm_7bit_and_a_too_long_one_is_cut(smsc, make):
    peer = smsc()
    notifier = make(peer.port, max_parts=2, registered_delivery=False, source_addr="BANK")
    n = notification(visit(name="Ada Wong", client_manager=None))
    notifier.send(n)
    [message] = peer.wait("message")
    [submit] = peer.events("submit")
    assert message["text"] == notifier.render(n) == "09:41 VIP Ada Wong (GOLD) at door."
    assert (submit["data_coding"], submit["registered_delivery"]) == (0, 0)
    assert (submit["source_addr"], submit["source_addr_ton"], submit["source_addr_npi"]) == ("BANK", 5, 0)
    long = notification(visit(name="Alexandra " * 40, client_manager=None))
    result = notifier.send(long)
    [_, cut] = peer.wait("message", 2)
    assert cut["parts"] == 2 and cut["text"].endswith("...") and "(cut to 2 parts)" in result.detail
    assert encode_text(notifier.render(long), 7, 2).truncated


# -- failures ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "options", "expected"),
    [
        ({"password": Secret("wrong")}, (), "SMSC refused the bind: ESME_RINVPASWD (wrong password?)"),
        ({"system_id": "nobody"}, (), "SMSC refused the bind: ESME_RINVSYSID (wrong system_id?)"),
        (
            {},
            ("--refuse-binds", "ESME_RBINDFAIL"),
            "SMSC refused the bind: ESME_RBINDFAIL (wrong system_id/password?)",
        ),
    ],
)
def test_a_refused_bind_fails_for_good_and_is_not_hammered(smsc, make, settings, options, expected):
    peer = smsc(*options)
    notifier = make(peer.port, **settings)
    with pytest.raises(DeliveryFailed) as exc:
        notifier.send(notification())
    assert exc.value.retry is False and str(exc.value) == expected
    with pytest.raises(DeliveryFailed) as again:  # no second bind: operators lock accounts
        notifier.send(notification())
    assert again.value.retry is False and str(again.value).startswith(expected + " (not binding again for")
    assert [b["ok"] for b in peer.events("bind")] == [False]
    assert notifier.health()["bound"] is False and notifier.health()["last_error"].startswith(expected)


def test_an_smsc_that_is_down_is_retried_and_used_once_it_is_up(smsc, make):
    port = free_port()
    notifier = make(port)
    started = time.monotonic()
    with pytest.raises(DeliveryFailed) as exc:
        notifier.send(notification())
    assert exc.value.retry is True and time.monotonic() - started < 1
    assert (
        str(exc.value) == f"SMSC 127.0.0.1:{port} refused the connection (SMSC down, or wrong host or port?)"
    )
    peer = smsc(port=port)
    notifier.send(notification())
    assert peer.wait("message")[0]["text"] == notifier.render(notification())
    # the SMSC restarts: the bind it dropped is replaced, and the text still goes
    peer.stop()
    peer = smsc(port=port)
    notifier.send(notification())
    assert len(peer.wait("message")) == 1 and notifier.health()["bound"] is True


@pytest.mark.slow
def test_an_smsc_that_does_not_answer_the_bind_times_out_as_retryable(make):
    with socket.socket() as silent:  # accepts the TCP connection, never speaks SMPP
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        notifier = make(silent.getsockname()[1], request_timeout=Duration(0.5))
        started = time.monotonic()
        with pytest.raises(DeliveryFailed) as exc:
            notifier.send(notification())
    assert exc.value.retry is True and "did not answer the bind in time" in str(exc.value)
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("status", "retry", "words"),
    [
        ("ESME_RTHROTTLED", True, "sending faster than the SMS account allows"),
        ("ESME_RMSGQFUL", True, "the SMSC's queue is full"),
        ("ESME_RINVDSTADR", False, "not a valid destination number"),
    ],
)
def test_a_rejected_submit_says_why_and_whether_to_retry(smsc, make, status, retry, words):
    peer = smsc("--reject", status, "--reject-count", "1")
    notifier = make(peer.port)
    with pytest.raises(DeliveryFailed) as exc:
        notifier.send(notification())
    assert exc.value.retry is retry
    assert str(exc.value) == f"SMS to +86*******8001: SMSC rejected it: {status} ({words})"
    notifier.send(notification())  # the same bind goes on: the next submit is accepted
    assert len(peer.wait("message")) == 1 and len(peer.events("bind")) == 1


def test_a_rejected_later_part_says_which_parts_went(smsc, make):
    peer = smsc("--reject", "ESME_RTHROTTLED", "--reject-count", "1", "--reject-after", "1")
    notifier = make(peer.port, language="zh", max_parts=6)
    n = notification(visit(name=YOSHI * 70))
    with pytest.raises(DeliveryFailed) as exc:
        notifier.send(n)
    assert exc.value.retry is True
    assert str(exc.value) == (
        "SMS to +86*******8001, part 2 of 3: SMSC rejected it: ESME_RTHROTTLED (sending faster than the "
        "SMS account allows); part(s) 1-1 already accepted (message id(s) 00000001)"
    )
    notifier.send(n)  # the outbox's retry sends the whole text again, under a new reference
    [message] = peer.wait("message")
    assert message["parts"] == 3 and message["text"] == notifier.render(n)


@pytest.mark.parametrize(
    ("mobile", "words"), [(None, "has no mobile number"), ("138-abc", "is not a phone number")]
)
def test_a_recipient_without_a_usable_mobile_fails_for_good(make, mobile, words):
    notifier = make(free_port())  # nothing listens: no connection is even tried
    with pytest.raises(DeliveryFailed) as exc:
        notifier.send(notification(mobile=mobile))
    assert exc.value.retry is False and words in str(exc.value)


# -- the bind between sends ------------------------------------------------------------------------------
@pytest.mark.slow
def test_delivery_reports_and_enquire_link_on_an_idle_bind(smsc, make):
    peer = smsc("--dlr")
    notifier = make(peer.port, enquire_link=Duration(1))
    notifier.send(notification())
    ids = peer.wait("message")[0]["message_ids"]
    assert wait_for(lambda: notifier.health()["delivery_reports"] == {"DELIVRD": 1}, 5)
    assert notifier.health()["last_report"]["message_id"] == ids[0]
    assert wait_for(lambda: notifier.health()["enquire_links_answered"] >= 1, 3)
    notifier.send(notification())  # still the first bind
    assert len(peer.wait("message", 2)) == 2 and len(peer.events("bind")) == 1
    notifier.close()
    assert peer.wait("unbound") and notifier.health()["bound"] is False


# -- secrets ---------------------------------------------------------------------------------------------
def test_the_password_is_in_no_repr_health_or_log(smsc, make, caplog):
    caplog.set_level(logging.DEBUG)
    peer = smsc("--dlr")
    notifier = make(peer.port, language="zh")
    assert PASSWORD not in repr(notifier.settings) and "Secret('******')" in repr(notifier.settings)
    notifier.send(notification(visit(name=YOSHI * 40)))
    peer.wait("dlr")
    wait_for(lambda: notifier.health()["delivery_reports"], 3)
    notifier.close()
    logged = caplog.text
    assert "bound to SMSC" in logged and "SMS to +86*******8001" in logged
    for secret in (PASSWORD, PASSWORD.encode().hex(), LOBBY[1:], LOBBY[1:].encode().hex(), ID_NUMBER, MOBILE):
        assert secret not in logged
        assert secret not in repr(notifier.health())


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"host": "smpp://x"}, "host is a host name"),
        ({"system_id": "a-very-long-system-id"}, "system_id is at most 15"),
        ({"password": Secret("nine-char")}, "an SMPP password is at most 8"),
        ({"source_addr": "a sender name too long"}, "source_addr is a number"),
        ({"port": 0}, "'port' must be >= 1"),
        ({"request_timeout": Duration(0)}, "must be more than 0"),
    ],
)
def test_settings_are_checked_without_echoing_the_password(settings, words):
    values = {
        "host": "127.0.0.1",
        "system_id": SYSTEM_ID,
        "password": Secret(PASSWORD),
        "source_addr": "1069",
    }
    with pytest.raises(ValueError, match=words) as exc:
        SmppSettings(**{**values, **settings})
    assert "nine-char" not in str(exc.value) and PASSWORD not in str(exc.value)


def test_without_smpplib_the_error_says_what_to_install(make, monkeypatch):
    for name in ("smpplib", "smpplib.client", "smpplib.consts", "smpplib.exceptions", "smpplib.smpp"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'vipsense\[smpp\]'"):
        make(free_port())


# -- through a branch ------------------------------------------------------------------------------------
PROFILE = branch_profile(
    branch="{id: smpp-branch, name: 陆家嘴支行}",
    notifiers=[
        """\
id: sms
type: sms-smpp
host: 127.0.0.1
port: %(port)d
system_id: vipsense
password: !secret smpp_password
source_addr: "106900001"
language: zh
request_timeout: 2s"""
    ],
    staff=['{id: lobby, name: Lobby Person, role: lobby_manager, mobile: "+8613800138001"}', BOSS],
    routing=routes("sms", client_manager=False, rejected_to_lobby=False),
)


@pytest.mark.slow
def test_an_arrival_through_a_real_branch_reaches_the_smsc(smsc, running_branch, tmp_path):
    peer = smsc()
    (tmp_path / "secrets.yaml").write_text(f"smpp_password: {PASSWORD}\n", encoding="utf-8")
    branch = running_branch(PROFILE % {"port": peer.port}, wait_open=False)
    assert PASSWORD not in repr(branch.profile.notifiers[0].settings)
    for _ in range(3):
        branch.pipeline.submit(TagRead("door", 1, "E20000000000000000000001", -50.0, branch.clock.mono()))
    [message] = peer.wait("message")
    assert message["destination_addr"] == "8613800138001"
    assert "贵宾到店：Ada Wong（金卡）" in message["text"]
    assert "110101199003071234" not in message["text"] and "13812345678" not in message["text"]
    assert wait_for(lambda: branch.status.devices["sms"].snapshot()["details"].get("sent") == 1)
    branch.stop()
    assert peer.wait("unbound")


def test_a_too_long_password_in_a_profile_is_reported_without_its_value(write_profile, host, tmp_path):
    (tmp_path / "secrets.yaml").write_text("smpp_password: much-too-long\n", encoding="utf-8")
    with pytest.raises(ProfileError) as exc:
        load_profile(write_profile(PROFILE % {"port": 2775}), host)
    assert "an SMPP password is at most 8" in str(exc.value) and "much-too-long" not in str(exc.value)


def doc_profile(kind: str) -> str:
    """The example of ``docs/notifiers-smpp-apprise.md`` for ``kind``, as a whole branch profile."""
    text = (REPO / "docs" / "notifiers-smpp-apprise.md").read_text(encoding="utf-8")
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if f"type: {kind}" in b]
    head = "branch: {id: doc, name: Doc}\nreaders:\n  - {id: door, type: simulated, visitors: []}\n"
    return head + "stores:\n  - {id: local, type: sqlite, seed: [seed.yaml]}\n" + block


def test_the_documented_example_is_a_valid_profile(write_profile, host, tmp_path):
    (tmp_path / "secrets.yaml").write_text("smpp_password: pw8chars\n", encoding="utf-8")
    profile = load_profile(write_profile(doc_profile("sms-smpp")), host, data_dir=tmp_path / "data")
    [sms] = profile.notifiers
    assert (sms.settings.host, sms.settings.port, sms.settings.language) == (
        "smsc.operator.example",
        2775,
        "zh",
    )
    assert sms.settings.password == Secret(PASSWORD) and PASSWORD not in repr(sms.settings)
