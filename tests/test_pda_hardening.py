"""Attacks on the PDA side (issue "Hardening for a bank", point 16, and the agent's screen), with real
parts only: PDA agents as subprocesses, the real notifier, real sockets and zeroconf on 127.0.0.1.

* A PDA that accepts the connection and never answers, announced with a real zeroconf record, must
  not hold up the push to a healthy PDA; a PDA that answers a byte at a time is cut at its deadline.
* Discovery records that are ignored are logged once each, with the reason; a record with port 0 or
  a TXT record that is not UTF-8 is never taken.
* No push and no announcement can drive the agent's terminal or forge a line of its block.
"""

from __future__ import annotations

import json
import logging
import re
import selectors
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping

import attrs
import pytest
from zeroconf import DNSOutgoing, ServiceInfo, Zeroconf
from zeroconf.const import _FLAGS_AA, _FLAGS_QR_RESPONSE

from vipsense.api import DeliveryFailed, Duration
from vipsense.plugins.notifiers.pda.discovery import host_name, open_zeroconf
from vipsense.plugins.notifiers.pda.display import REF_LABEL
from vipsense.plugins.notifiers.pda.protocol import (
    HUB_TYPE,
    PDA_TYPE,
    encode,
    hub_txt,
    pda_txt,
    push_body,
)
from vipsense.plugins.notifiers.pda.transport import Unreachable, hub_instance_at, post_signed

from .conftest import wait_for
from .test_pda import HUB, KEY, AgentProcess, Hub, notification

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")

LOGGER = "vipsense.notifier.pda"  #: the hub's log in these tests (``test_pda.Hub``)


@pytest.fixture
def branch_id() -> str:
    return f"pda-h-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def hub(branch_id, tmp_path):
    made: list[Hub] = []

    def make(**settings) -> Hub:
        made.append(Hub(branch_id, tmp_path / f"data{len(made)}", True, **settings))
        return made[-1]

    yield make
    for h in made:
        h.n.close()


@pytest.fixture
def agents():
    made: list[AgentProcess] = []

    def start(**kw) -> AgentProcess:
        made.append(AgentProcess(key=KEY, **kw))
        return made[-1]

    yield start
    for agent in made:
        agent.stop()


class Announcer:
    """Service records announced by hand on 127.0.0.1, good or bad, as anyone on the LAN could."""

    def __init__(self) -> None:
        self.zc: Zeroconf = open_zeroconf(["127.0.0.1"])
        self.infos: dict[str, ServiceInfo] = {}

    def announce(self, type_: str, instance: str, port: int, props: Mapping[str, str | bytes]) -> None:
        info = ServiceInfo(
            type_,
            f"{instance}.{type_}",
            port=port,
            properties=dict(props),
            parsed_addresses=["127.0.0.1"],
            server=host_name("announcer"),
        )
        self.zc.register_service(info, cooperating_responders=True)  # no probing: 0.45 s
        self.infos[instance] = info

    def withdraw(self, instance: str) -> None:
        self.zc.unregister_service(self.infos.pop(instance))

    def close(self) -> None:
        for instance in list(self.infos):
            self.withdraw(instance)
        self.zc.close()


@pytest.fixture
def announcer() -> Iterator[Announcer]:
    a = Announcer()
    yield a
    a.close()


class SilentPda:
    """A PDA that accepts every connection, reads what it is sent and never answers: a listening
    socket on 127.0.0.1.  ``open`` counts the connections its peer has not given up on yet.  Set
    ``answer`` to have it wake up and answer (a fake: it cannot check a signature)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.ended = 0  #: connections the other side closed
        self.answer: bytes | None = None
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="silent-pda", daemon=True)
        self._thread.start()

    @property
    def open(self) -> int:
        return self.accepted - self.ended

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.05):
                if key.fileobj is self.listener:
                    conn, _ = self.listener.accept()
                    conn.setblocking(False)
                    self._selector.register(conn, selectors.EVENT_READ)
                    self.accepted += 1
                    continue
                try:
                    data = key.fileobj.recv(65536)
                    if data and self.answer is not None:
                        key.fileobj.sendall(self.answer)
                        data = b""
                except OSError:
                    data = b""
                if not data:
                    self._selector.unregister(key.fileobj)
                    key.fileobj.close()
                    self.ended += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()
        self._selector.close()


@pytest.fixture
def silent_pda() -> Iterator[SilentPda]:
    s = SilentPda()
    yield s
    s.close()


# -- a PDA that never answers holds up no other ----------------------------------------------------


@pytest.mark.slow
def test_a_pda_that_accepts_and_never_answers_holds_up_no_other_pda(
    hub, agents, announcer, silent_pda, branch_id, caplog
):
    """Attack: anyone on the LAN announces a PDA for a member of staff and leaves every push hanging.
    The hub used to push to its PDAs one after the other, so the healthy PDA waited the whole
    ``push_timeout`` (2 s) first."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    h = hub()  # push_timeout: 2 s, the default
    txt = pda_txt(staff="lobby1", role="lobby", branch=branch_id, port=silent_pda.port, name="silent PDA")
    announcer.announce(PDA_TYPE, "silent PDA", silent_pda.port, txt)
    assert h.n.pdas.wait(lambda: [p.instance for p in h.n.pdas.peers()] == ["silent PDA"], 10)
    healthy = agents(name="healthy PDA", staff="lobby1", branch=branch_id)
    assert h.n.pdas.wait(lambda: len(h.n.pdas.peers()) == 2, 10)
    # the table lists the silent PDA first, so one after the other it would be pushed to first
    assert [p.instance for p in h.n.pdas.peers()] == ["silent PDA", "healthy PDA"]
    n = notification(branch_id)
    t0 = time.monotonic()
    result = h.n.send(n)
    returned = time.monotonic() - t0
    still_waiting_on_return = silent_pda.open
    assert healthy.wait_for(rf"^│ {REF_LABEL}\s+{re.escape(n.key)}$"), healthy.out
    shown = time.monotonic() - t0
    # the healthy PDA showed it, and send() returned, while the silent one still held its push open
    assert (silent_pda.accepted, still_waiting_on_return, silent_pda.open) == (1, 1, 1)
    assert result.detail == "on healthy PDA (shown)"
    # the silent PDA's push ends at its own deadline, and the log says so
    assert wait_for(lambda: silent_pda.open == 0, timeout=5)
    where = f"PDA 'silent PDA' (127.0.0.1:{silent_pda.port})"
    assert wait_for(lambda: f"had returned: {where}: no answer within 2 s" in caplog.text, timeout=2)
    print(f"\nsilent PDA first: healthy PDA shown in {shown * 1000:.0f} ms, send() {returned * 1000:.0f} ms")


@pytest.mark.slow
def test_a_pda_that_never_answered_holds_up_no_later_notification(
    hub, agents, announcer, silent_pda, branch_id, caplog
):
    """Attack: a silent PDA announced for one member of staff.  The core sends one notification after
    another, and every push and retry for that member used to hold the notifier's thread for the
    whole ``push_timeout``, so everyone else's arrivals waited behind it."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    h = hub()  # push_timeout: 2 s, the default
    txt = pda_txt(staff="cm1", role="manager", branch=branch_id, port=silent_pda.port, name="silent PDA")
    announcer.announce(PDA_TYPE, "silent PDA", silent_pda.port, txt)
    healthy = agents(name="lobby PDA", staff="lobby1", branch=branch_id)
    assert h.n.pdas.wait(lambda: len(h.n.pdas.peers()) == 2, 10)
    where = f"PDA 'silent PDA' (127.0.0.1:{silent_pda.port})"
    with pytest.raises(DeliveryFailed) as first:  # not known to be silent yet: waited for, once
        h.n.send(notification(branch_id, staff="cm1", visit_id="c1"))
    assert str(first.value) == f"{where}: no answer within 2 s" and first.value.retry is True
    assert wait_for(lambda: silent_pda.open == 0, timeout=2)
    t0 = time.monotonic()
    with pytest.raises(DeliveryFailed) as again:  # the next one, or a retry: pushed, not waited for
        h.n.send(notification(branch_id, staff="cm1", visit_id="c2"))
    returned = time.monotonic() - t0
    assert wait_for(lambda: silent_pda.accepted == 2, timeout=2)
    assert silent_pda.open == 1  # send() returned while that push was still open
    assert str(again.value) == f"{where}: no answer to its last push; pushed again, not waited for"
    assert again.value.retry is True
    n = notification(branch_id, visit_id="l1")
    assert h.n.send(n).detail == "on lobby PDA (shown)"
    assert healthy.wait_for(rf"^│ {REF_LABEL}\s+{re.escape(n.key)}$"), healthy.out
    shown = time.monotonic() - t0
    assert silent_pda.open == 1  # the lobby manager's arrival did not wait for it either
    print(f"\nsilent PDA of cm1: send() {returned * 1000:.0f} ms, lobby arrival shown {shown * 1000:.0f} ms")
    # once it answers again it is waited for again: a retry delivers
    assert wait_for(lambda: silent_pda.open == 0, timeout=5)
    body = b'{"shown": true}'
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    silent_pda.answer = head.encode() + body
    results = []
    for _ in range(2):  # the outbox's retry comes after its backoff: by then the push has answered
        try:
            results.append(h.n.send(notification(branch_id, staff="cm1", visit_id="c3")).detail)
            break
        except DeliveryFailed as exc:
            results.append(str(exc))
            assert wait_for(lambda: f"pushed c3:cm1 to {where} in" in caplog.text, timeout=5)
    assert results[-1] == "on silent PDA (shown)", results


@pytest.mark.slow
def test_only_silent_pdas_is_a_failure_worth_a_retry_at_the_deadline(hub, announcer, silent_pda, branch_id):
    h = hub(push_timeout=Duration(1))
    for name in ("silent one", "silent two"):  # both on the one silent socket
        txt = pda_txt(staff="lobby1", role="lobby", branch=branch_id, port=silent_pda.port, name=name)
        announcer.announce(PDA_TYPE, name, silent_pda.port, txt)
    assert h.n.pdas.wait(lambda: len(h.n.pdas.peers()) == 2, 10)
    with pytest.raises(DeliveryFailed) as e:
        h.n.send(notification(branch_id))
    assert e.value.retry is True and str(e.value).count("no answer within 1 s") == 2
    assert silent_pda.accepted == 2 and wait_for(lambda: silent_pda.open == 0, timeout=2)


class TricklingServer:
    """Answers every request one byte at a time, forever: the status line, then a header that never
    ends.  Each read of the client sees a byte well within any socket timeout."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trickler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                    while not self._stop.wait(0.2):
                        conn.sendall(b"z")
                except OSError:
                    continue

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.listener.close()


@pytest.mark.slow
@pytest.mark.parametrize("call", ["push", "hub probe"])
def test_a_peer_that_answers_a_byte_at_a_time_is_cut_at_the_deadline(call):
    """Attack: a socket timeout bounds each read, not the answer; a peer that trickles held the
    caller (the hub's push thread, the agent's probe) for as long as it liked."""
    server = TricklingServer()
    url = f"http://127.0.0.1:{server.port}/v1/push"
    outcome: list[str] = []

    def run() -> None:
        try:
            if call == "push":
                post_signed(url, KEY.encode(), b"{}", 1.0)
            else:
                hub_instance_at(url, 1.0)
        except Unreachable as exc:
            outcome.append(str(exc))

    worker = threading.Thread(target=run, daemon=True)
    try:
        worker.start()
        worker.join(6)  # far past the 1 s deadline
        assert not worker.is_alive(), "the request outlived its deadline"
    finally:
        server.close()
        worker.join(5)
    assert outcome == ["no answer within 1 s"]


# -- discovery records that are ignored ------------------------------------------------------------


def bad_records(branch: str) -> dict[str, tuple[int, dict[str, str | bytes], str]]:
    """instance -> (SRV port, TXT, the reason it is ignored for)."""

    def txt(**changes: str | bytes | None) -> dict[str, str | bytes]:
        base: dict[str, str | bytes | None] = {
            "txtvers": "1",
            "proto": "2",
            "staff": "lobby1",
            "role": "lobby",
            "branch": branch,
            "port": "9",
        }
        base.update(changes)
        return {k: v for k, v in base.items() if v is not None}

    return {
        "no staff": (9, txt(staff=None), "TXT lacks staff"),
        "wrong proto": (9, txt(proto="1"), "protocol '1', not 2"),
        "other branch": (9, txt(branch=f"{branch}-x"), f"a PDA of branch '{branch}-x'"),
        "bad port": (9, txt(port="9x"), "TXT port '9x' is not a number"),
        "not utf-8": (9, txt(staff=b"lobby\xff"), "TXT b'staff' is not UTF-8"),
        "srv port 0": (0, txt(port=None), "SRV port 0"),
        "txt port 0": (9, txt(port="0"), "TXT port 0 is out of range (1 to 65535)"),
        "txt port 70000": (9, txt(port="70000"), "TXT port 70000 is out of range (1 to 65535)"),
    }


@pytest.mark.slow
def test_ignored_discovery_records_are_logged_once_with_the_reason(hub, announcer, branch_id, caplog):
    """Attack: records a neighbour or an attacker announces.  Port 0 and TXT values that are not
    UTF-8 used to be taken (the latter with replacement characters); nothing ignored was logged."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    h = hub()
    bad = bad_records(branch_id)
    for name, (port, props, _) in bad.items():
        announcer.announce(PDA_TYPE, name, port, props)
    good = pda_txt(staff="lobby1", role="lobby", branch=branch_id, port=9, name="good")
    announcer.announce(PDA_TYPE, "good", 9, good)

    def ignored(categories: bool = False) -> dict[str, str]:  # ours: other tests may announce too
        found = {n[: -len(PDA_TYPE) - 1]: seen for n, seen in h.n.pdas.ignored().items()}
        return {n: seen[0] if categories else seen[1] for n, seen in found.items() if n in bad}

    def logged(name: str) -> int:
        return caplog.text.count(f"ignored {PDA_TYPE} record {name!r}: {bad[name][2]}\n")

    assert h.n.pdas.wait(lambda: len(ignored()) == len(bad) and bool(h.n.pdas.peers()), 15), ignored()
    assert ignored() == {name: reason for name, (_, _, reason) in bad.items()}
    assert [p.instance for p in h.n.pdas.peers()] == ["good"]  # port 0 and bad UTF-8 never taken
    assert wait_for(lambda: all(logged(name) == 1 for name in bad), timeout=5), caplog.text
    # the same records gone and announced again: still logged once each
    again = ("wrong proto", "srv port 0", "not utf-8")
    for name in again:
        announcer.withdraw(name)
    assert h.n.pdas.wait(lambda: not set(again) & set(ignored()), 10)
    for name in again:
        announcer.announce(PDA_TYPE, name, *bad[name][:2])
    assert h.n.pdas.wait(lambda: set(again) <= set(ignored()), 10)
    assert all(logged(name) == 1 for name in bad)
    assert sorted(ignored(categories=True).values()) == ["other_branch", "other_proto", *["unusable"] * 6]


def test_a_record_whose_instance_name_is_not_utf8_is_not_taken(hub, branch_id, caplog):
    """Attack: a record whose instance name is not UTF-8, sent as a raw mDNS answer (zeroconf cannot
    announce one).  zeroconf reads the name with replacement characters, and it used to be taken."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    h = hub()
    info = ServiceInfo(
        PDA_TYPE,
        f"PDA-QQQQ.{PDA_TYPE}",
        port=9,
        properties=pda_txt(staff="lobby1", role="lobby", branch=branch_id, port=9, name="raw"),
        parsed_addresses=["127.0.0.1"],
        server=host_name("raw"),
    )
    out = DNSOutgoing(_FLAGS_QR_RESPONSE | _FLAGS_AA)
    for record in (info.dns_pointer(), info.dns_service(), info.dns_text(), *info.dns_addresses()):
        out.add_answer_at_time(record, 0)
    [packet] = out.packets()
    assert packet.count(b"QQQQ") == 1  # the name is written once, then pointed to
    packet = packet.replace(b"QQQQ", b"\xff\xfe\xff\xfe")  # the same length: still a valid packet
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)  # loopback only
        sender.sendto(packet, ("224.0.0.251", 5353))
    finally:
        sender.close()
    name = f"PDA-\ufffd\ufffd\ufffd\ufffd.{PDA_TYPE}"
    assert h.n.pdas.wait(lambda: name in h.n.pdas.ignored(), 10), h.n.pdas.ignored()
    assert h.n.pdas.ignored()[name] == ("unusable", "the instance name is not UTF-8")
    assert h.n.pdas.peers() == []
    line = f"ignored {PDA_TYPE} record 'PDA-\ufffd\ufffd\ufffd\ufffd': the instance name is not UTF-8"
    assert wait_for(lambda: caplog.text.count(line) == 1, timeout=2), caplog.text


# -- the agent's screen ----------------------------------------------------------------------------

#: what a terminal obeys: ESC and BEL, C1 controls (CSI, OSC, ST, NEL...), carriage return, and
#: the bidirectional overrides and isolates, plus zero-width characters
FORBIDDEN = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
NASTY = (
    "李娜\x1b[2J\x1b[31m\n│ Ref        forged:lobby1\r│ Ref        forged:lobby1"
    "\x1b]0;pwned\x07\x1b]8;;http://evil.example\x1b\\link\x1b]8;;\x1b\\"
    "\x9b31m\x9d0;c1 title\x9c\u202egnp.exe\u202c\u2066iso\u2069\u200b\x85\u2028next"
)


@pytest.mark.slow
def test_nothing_a_push_or_an_announcement_carries_can_drive_the_agents_terminal(
    agents, announcer, branch_id
):
    """Attack: a push from a key holder, or any announcement on the LAN, carrying escape sequences,
    C1 controls, bidi overrides and line breaks.  The agent printed a hub's TXT branch as it came,
    and passed the bidi overrides of a push through."""
    a = agents(name="PDA-screen", staff="lobby1", branch=branch_id)
    n = notification(branch_id)
    doc = push_body(n, branch_id, "http://127.0.0.1:9/v1/ack", hub=HUB)
    doc["customer"].update(name=NASTY, company=NASTY, usual_business=NASTY)
    doc["reader"] = NASTY
    reply = post_signed(f"http://127.0.0.1:{a.port}/v1/push", KEY.encode(), encode(doc), 5)
    assert reply.doc == {"shown": True}
    fake = f"evil\x1b[2J\n│ {REF_LABEL}        forged2:lobby1\u202e"
    announcer.announce(HUB_TYPE, "fake hub", 9, {**hub_txt("x", HUB), "branch": fake})
    assert a.wait_for(r"^hub found: evil"), a.out
    assert a.wait_for(rf"^│ {REF_LABEL}\s+{re.escape(n.key)}$"), a.out
    out = a.out
    assert not FORBIDDEN.search(out), [line for line in a.lines if FORBIDDEN.search(line)]
    refs = [line for line in a.lines if line.startswith(f"│ {REF_LABEL}")]
    assert refs == [f"│ {REF_LABEL}        {n.key}"]  # no forged line
    [name] = [line for line in a.lines if line.startswith("│ Name")]
    assert name.startswith("│ Name       李娜") and "gnp.exe" in name and name.endswith("next")
    assert a.shown("forged:lobby1") == a.shown("forged2:lobby1") == 0


def test_printable_strips_every_escape_sequence_and_control_character():
    from vipsense.plugins.notifiers.pda.display import printable

    assert printable("a\x1b[1;31mred\x1b[0m") == "ared"
    assert printable("x\x1b]0;title\x07y\x1b]8;;http://e\x1b\\z") == "xyz"
    assert printable("\x9b2J\x9d0;t\x9cok\x90q\x9c") == "ok"
    assert printable("a\u202ab\u202bc\u202cd\u202de\u202ef\u2066g\u2067h\u2068i\u2069") == "abcdefghi"
    assert printable("one\ntwo\rthree\x85four\u2028five\tsix") == "one two three four five six"
    assert printable("\ud800李\u200b娜\ufeff") == "李娜"  # a lone surrogate cannot even be printed
    assert printable("\ue000罕见字") == "\ue000罕见字"  # private use: rare characters of Chinese names


def test_an_id_or_mobile_number_typed_into_a_free_text_field_is_masked_in_the_push(branch_id):
    """Pen test point 10: the push carries the ID number masked and no mobile, but an ID number typed
    into the name (or a phone number into the usual business) went to the PDA in clear."""
    n = notification(branch_id)
    person = attrs.evolve(
        n.visit.customer, name="李娜 310115198002081033", company="tel+8613900007919",
        usual_business="理财 139 0000 7919",
    )  # fmt: skip
    n = attrs.evolve(n, visit=attrs.evolve(n.visit, customer=person))
    body = encode(push_body(n, branch_id, "http://127.0.0.1:9/v1/ack", hub=HUB)).decode()
    for number in ("310115198002081033", "13900007919", "139 0000 7919", "8002081"):
        assert number not in body
    customer = json.loads(body)["customer"]
    assert customer["name"].startswith("李娜 ") and customer["name"].endswith("1033")
    assert customer["company"].endswith("7919") and customer["usual_business"].startswith("理财 ")
