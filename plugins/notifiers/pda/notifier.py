"""The hub side: pushes each notification to the PDAs of its recipient found on the branch LAN, and
takes their acknowledgements.

One Zeroconf instance per notifier, on the configured IPv4 addresses only.  It advertises the hub
(``_vipsense._tcp.local.``, port = the acknowledgement server) and browses for PDAs
(``_vipsense-pda._tcp.local.``) into a live table.  ``send`` pushes to every present PDA whose TXT
names the recipient's staff id and this branch; the table only says where to knock, the signature
does the rest.  Nobody there, or no answer: ``DeliveryFailed(retry=True)``, and the core's outbox
tries again with backoff until the notification's TTL.

The pushes of one ``send`` run at once, each on its own thread with its own deadline
(``push_timeout``, connect to last byte), and ``send`` returns as soon as one PDA has shown the
notification.  So a PDA that accepts the connection and never answers (a hung handheld, or anyone on
the LAN announcing a staff id) delays no other PDA's push; its own push ends at its deadline and is
logged then.  The core sends one notification after another, so a ``send`` that waits also holds
up the notifications queued behind it: a PDA whose last push got no answer by its deadline is
therefore still pushed to but not waited for, until it answers again.  A silent PDA costs the
notifier's thread one deadline, not one per notification and retry.

Each start is a new hub instance with a random id, announced in the TXT record and carried in every
push, so a PDA takes pushes from its own hub only.  A profile whose PDAs are all emulated may leave
``key`` out: the notifier then makes a key for this run and hands it to its own agents only.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from vipsense.api import DeliveryFailed, DeliveryResult, Notifier, PluginContext
from vipsense.model import DeliveryState, Notification
from vipsense.signing import BadSignature, verify

from .discovery import (
    Advertisement,
    Directory,
    Peer,
    Withdrawn,
    check_interfaces,
    host_name,
    open_zeroconf,
)
from .display import clean, printable
from .emulated import EmulatedAgent
from .protocol import (
    ACK_PATH,
    HUB_HEADER,
    HUB_TYPE,
    MISDIRECTED,
    PDA_TYPE,
    PUSH_PATH,
    BadMessage,
    PdaTxt,
    UnusableTxt,
    encode,
    hub_txt,
    instance_name,
    new_instance_id,
    parse_ack,
    parse_pda_txt,
    push_body,
)
from .settings import PdaSettings
from .transport import JsonHandler, Reply, Server, Unreachable, post_signed

_REASON_MAX = 160
EMULATED_WAIT = 10.0  #: seconds the notifier waits at start for its emulated PDAs to be found
PUSH_GRACE = 1.0  #: seconds past ``push_timeout`` that ``send`` waits for a push thread to report
#: answers that mean "not now, or not this PDA": the table was out of date, or the PDA is busy
RETRY_STATUSES = (403, 408, 409, 429, MISDIRECTED)


PeerKey = tuple[str, str, int]  #: a PDA as pushed to: service name, address, port


def peer_key(peer: Peer) -> PeerKey:
    return (peer.name, peer.address, peer.port)


@attrs.frozen
class Outcome:
    """How one push of one notification to one PDA went."""

    peer: PeerKey
    shown: str = ""  #: for the delivery's detail when the PDA took it, else empty
    error: str = ""  #: why not, when it did not
    retry: bool = False  #: whether a retry may mend that
    silent: bool = False  #: no answer by the deadline: the PDA is not waited for until it answers


class PushRound:
    """The pushes of one ``send``: outcomes go to ``send`` until it stops collecting (``close``);
    after that each push thread reports its own outcome (logged, and in ``last_error``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._open = True

    def report(self, outcome: Outcome) -> bool:
        """Hand ``outcome`` to ``send``; ``False`` when ``send`` has already returned."""
        with self._lock:
            if self._open:
                self._outcomes.put(outcome)
            return self._open

    def next(self, timeout: float) -> Outcome | None:
        try:
            return self._outcomes.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def close(self) -> list[Outcome]:
        """Stop collecting; the outcomes reported meanwhile."""
        with self._lock:
            self._open = False
            left: list[Outcome] = []
            while not self._outcomes.empty():
                left.append(self._outcomes.get_nowait())
            return left


class PdaNotifier(Notifier):
    def __init__(self, settings: PdaSettings, ctx: PluginContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self.instance = new_instance_id()  #: this start of the hub, in its TXT record and every push
        # No key in the profile (allowed when every PDA is emulated): one for this run, which only our
        # own agents are given, so no other hub or demo can sign a push they take.
        self._key_text = settings.key.reveal() if settings.key is not None else secrets.token_urlsafe(32)
        self._key = self._key_text.encode("utf-8")
        self.interfaces = check_interfaces(settings.interfaces)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._closed = False
        self.counts = dict.fromkeys(
            (
                "pushes_ok",
                "pushes_failed",
                "acks_received",
                "acks_unknown",
                "bad_acks",
                "rejected_signatures",
            ),
            0,
        )
        self.last_error = ""
        self._silent: set[PeerKey] = set()  #: PDAs whose last push got no answer: not waited for
        self.hub_service = ""  #: the registered instance name, once announced
        self.agents: list[EmulatedAgent] = []
        self.servers: list[Server] = []
        self.zc: Any = None
        self.advert: Advertisement | None = None
        self.pdas: Directory | None = None
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        port = self.settings.ack_port
        for address in self.interfaces:  # one acknowledgement server per address, all on one port
            server = Server(address, port, self._ack_handler())
            port = server.port
            self.servers.append(server.start())
        self.ack_port = port
        self.zc = open_zeroconf(self.interfaces)
        name = instance_name(f"vipsense hub {self.ctx.branch_id}")
        self.advert = Advertisement(
            self.zc,
            HUB_TYPE,
            name,
            self.ack_port,
            hub_txt(self.ctx.branch_id, self.instance),
            self.interfaces,
            host_name(f"hub-{self.ctx.branch_id}"),
        )
        self._announcing = threading.Thread(target=self._announce, name="pda-hub-announce", daemon=True)
        self._announcing.start()  # probing takes ~1.5 s: the branch does not wait for it
        self.pdas = Directory(
            self.zc, PDA_TYPE, self._parse_pda, on_change=self._pda_changed, logger=self.ctx.log
        )
        for i, pda in enumerate(self.settings.emulate):
            data_dir = self.ctx.data_dir / f"{self.ctx.item_id}-emulated-pda-{i + 1}"
            self.agents.append(
                EmulatedAgent(
                    pda, self.ctx.branch_id, self._key_text, self.instance, data_dir, self.ctx.output
                )
            )
        if self.agents:
            if self.settings.key is None:
                self.ctx.log.info("no key in the profile: the emulated PDAs use one made for this run")
            self._await_emulated()

    def _await_emulated(self) -> None:
        """Give the emulated PDAs (demos) time to be found, so the first arrival finds them there
        instead of waiting for a retry.  A real handheld is never waited for."""
        pdas = self.pdas
        assert pdas is not None
        staff = {a.pda.staff_id for a in self.agents}

        def all_present() -> bool:  # ours: pinned to this instance (another demo's have the same staff)
            return staff <= {p.parsed.staff for p in pdas.peers() if p.parsed.hub == self.instance}

        t0 = time.monotonic()
        if pdas.wait(all_present, EMULATED_WAIT):
            self.ctx.log.info("emulated PDAs found in %.1f s", time.monotonic() - t0)
        else:
            self.ctx.log.warning("emulated PDAs not found in %.0f s; arrivals wait for them", EMULATED_WAIT)

    def _announce(self) -> None:
        assert self.advert is not None
        try:
            self.hub_service = self.advert.register()
            self.ctx.log.info(
                "hub announced as %r (instance %s) on %s",
                self.hub_service,
                self.instance,
                ", ".join(self.interfaces),
            )
        except Withdrawn:  # closed while announcing
            pass
        except Exception as exc:
            if not self._closing.is_set():
                self.last_error = f"cannot announce the hub: {type(exc).__name__}: {exc}"
                self.ctx.log.warning("%s", self.last_error)

    # -- the PDA table ----------------------------------------------------------------------------

    def _parse_pda(self, txt: dict[str, str], port: int) -> PdaTxt:
        pda = parse_pda_txt(txt, port)
        if pda.branch != self.ctx.branch_id:
            raise UnusableTxt(f"a PDA of branch {pda.branch!r}", category="other_branch")
        if pda.hub and pda.hub != self.instance:  # another demo's emulated PDA
            raise UnusableTxt(f"a PDA pinned to hub instance {pda.hub}", category="other_hub")
        return pda

    def _pda_changed(self, peer: Peer) -> None:  # zeroconf's thread: log and return
        pda = peer.parsed
        self.ctx.log.info(  # staff and role as the record said them: quoted, so no line can be forged
            "PDA %s %r: staff %r (%r) at %s:%s",
            peer.state,
            peer.instance,
            pda.staff,
            pda.role,
            peer.address,
            peer.port,
        )

    def pda_table(self) -> list[dict[str, Any]]:
        """The PDAs seen, present and gone: the status page's view (no I/O)."""
        if self.pdas is None:
            return []
        return [
            {
                "name": p.instance,
                "staff": p.parsed.staff,
                "role": p.parsed.role,
                "branch": p.parsed.branch,
                "address": p.address,
                "port": p.port,
                "first_seen": p.first_seen,
                "last_seen": p.last_seen,
                "state": p.state,
            }
            for p in self.pdas.peers(include_gone=True)
        ]

    # -- pushing ----------------------------------------------------------------------------------

    def send(self, notification: Notification) -> DeliveryResult:
        staff = notification.recipient.id
        present = self.pdas.peers() if self.pdas else []
        peers = [p for p in present if p.parsed.staff == staff]
        if not peers:
            raise self._failed(f"no PDA of staff {staff} is on the network", retry=True, count=False)
        with self._lock:
            self._silent &= {peer_key(p) for p in present}  # forget PDAs that left the table
            waited = {peer_key(p) for p in peers} - self._silent
        pushes = PushRound()
        for peer in peers:  # all at once, each with its own deadline: no PDA waits for another
            threading.Thread(
                target=self._push_one,
                args=(peer, notification, pushes),
                name=f"pda-push:{peer.address}:{peer.port}",
                daemon=True,
            ).start()
        outcomes: list[Outcome] = []
        limit = time.monotonic() + float(self.settings.push_timeout) + PUSH_GRACE
        while waited - {o.peer for o in outcomes} and not any(o.shown for o in outcomes):
            outcome = pushes.next(limit - time.monotonic())
            if outcome is None:  # a push thread overran its deadline: it reports itself later
                break
            outcomes.append(outcome)
        outcomes += pushes.close()  # and what came in meanwhile, from the PDAs not waited for too
        shown = [o.shown for o in outcomes if o.shown]
        errors = [o.error for o in outcomes if o.error]
        if shown:
            with self._lock:
                self.counts["pushes_ok"] += 1
                self.last_error = "; ".join(errors)
            detail = "on " + ", ".join(shown)
            return DeliveryResult(
                notification.key,
                notification.notifier_id,
                DeliveryState.DELIVERED,
                self.ctx.clock.wall(),
                detail,
            )
        answered = {o.peer for o in outcomes}
        timeout = float(self.settings.push_timeout)
        for peer in peers:
            if peer_key(peer) in answered:
                continue
            where = self._where(peer)
            if peer_key(peer) in waited:
                errors.append(f"{where}: no answer within {timeout:g} s")
            else:
                errors.append(f"{where}: no answer to its last push; pushed again, not waited for")
        retry = len(answered) < len(peers) or any(o.retry for o in outcomes)
        raise self._failed("; ".join(errors), retry=retry)

    @staticmethod
    def _where(peer: Peer) -> str:
        return f"PDA {peer.instance!r} ({peer.address}:{peer.port})"

    def _push_one(self, peer: Peer, notification: Notification, pushes: PushRound) -> None:
        """One push, on its own thread: its outcome to ``send``, or logged if ``send`` has returned."""
        where, key = self._where(peer), peer_key(peer)
        try:
            outcome = self._judge(where, peer, self._push(peer, notification), notification)
        except Unreachable as exc:
            outcome = Outcome(key, error=f"{where}: {exc}", retry=True, silent=exc.timed_out)
        except Exception as exc:  # a thread of ours must not die silently
            self.ctx.log.exception("pushing %s to %s failed", notification.key, where)
            outcome = Outcome(key, error=f"{where}: {type(exc).__name__}", retry=True)
        with self._lock:
            if outcome.silent:
                self._silent.add(key)
            else:
                self._silent.discard(key)
        if pushes.report(outcome) or not outcome.error:
            return
        self.ctx.log.info("push of %s ended after send() had returned: %s", notification.key, outcome.error)
        with self._lock:
            self.last_error = outcome.error

    def _judge(self, where: str, peer: Peer, reply: Reply, notification: Notification) -> Outcome:
        key, status = peer_key(peer), reply.status
        why = printable(str((reply.doc or {}).get("error", ""))).strip()[:_REASON_MAX]
        if 200 <= status < 300:
            again = bool((reply.doc or {}).get("duplicate"))
            self.ctx.log.info("pushed %s to %s in %.0f ms", notification.key, where, reply.elapsed * 1000)
            return Outcome(key, shown=f"{clean(peer.instance)} ({'already shown' if again else 'shown'})")
        if status == 401:
            return Outcome(key, error=f"{where}: PDA rejected the signature: check the branch key ({why})")
        retry = status >= 500 or status in RETRY_STATUSES  # a stale table, or busy
        return Outcome(key, error=f"{where} answered HTTP {status} {why}".rstrip(), retry=retry)

    def _push(self, peer: Peer, notification: Notification) -> Reply:
        def body(local: str) -> bytes:
            address = local if local in self.interfaces else self.interfaces[0]
            ack_url = f"http://{address}:{self.ack_port}{ACK_PATH}"
            return encode(push_body(notification, self.ctx.branch_id, ack_url, hub=self.instance))

        url = f"http://{peer.address}:{peer.port}{PUSH_PATH}"
        return post_signed(
            url,
            self._key,
            body,
            float(self.settings.push_timeout),
            headers={"Idempotency-Key": notification.key},
        )

    def _failed(self, message: str, retry: bool, count: bool = True) -> DeliveryFailed:
        with self._lock:
            if count:
                self.counts["pushes_failed"] += 1
            self.last_error = message
        return DeliveryFailed(message, retry=retry)

    # -- acknowledgements -------------------------------------------------------------------------

    def _ack_handler(self) -> type[JsonHandler]:
        notifier = self

        class AckHandler(JsonHandler):
            # so a PDA can tell whether the instance it is bound to still answers here
            identity: ClassVar[Mapping[str, str]] = {HUB_HEADER: notifier.instance}

            def do_POST(self) -> None:
                if self.path.split("?")[0] != ACK_PATH:
                    self.reply(404, {"error": f"POST {ACK_PATH} only"})
                    return
                body = self.read_body()
                if body is not None:
                    self.reply(*notifier.handle_ack(self.headers, body, self.client_address[0]))

        return AckHandler

    def handle_ack(self, headers: Any, body: bytes, client: str = "") -> tuple[int, dict[str, Any]]:
        """Verify and record one acknowledgement; the HTTP status and answer."""
        try:
            verify(self._key, headers, body)
        except BadSignature as exc:
            self._count("rejected_signatures")
            self.ctx.log.warning("acknowledgement from %s refused: %s", client or "?", exc)
            return 401, {"error": str(exc)}
        try:
            key, staff, at, device = parse_ack(body)
        except BadMessage as exc:
            self._count("bad_acks")
            return 400, {"error": str(exc)}
        acknowledge = getattr(self.ctx, "acknowledge", None)
        if acknowledge is None:
            return 501, {"error": "this hub cannot record acknowledgements"}
        try:
            known = bool(acknowledge(key, staff, at))
        except Exception as exc:
            self.ctx.log.exception("recording the acknowledgement of %s failed", key)
            return 500, {"error": type(exc).__name__}
        if not known:
            self._count("acks_unknown")
            return 404, {"error": f"no notification {key} for staff {staff}"}
        self._count("acks_received")
        self.ctx.log.info("acknowledged %s by %s on %r", key, staff, device)
        return 200, {"acknowledged": True}

    def _count(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    # -- status and shutdown ----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        ignored: dict[str, int] = {}
        for category, _ in (self.pdas.ignored() if self.pdas else {}).values():
            ignored[category] = ignored.get(category, 0) + 1
        with self._lock:
            counts = dict(self.counts)
            last_error = self.last_error
        return {
            "interfaces": list(self.interfaces),
            "ack_servers": [f"http://{s.address}:{s.port}{ACK_PATH}" for s in self.servers],
            "hub_service": self.hub_service,
            "instance": self.instance,
            "pdas": self.pda_table(),
            "ignored": ignored,
            **counts,
            "emulated": [a.pda.name for a in self.agents],
            "last_error": last_error,
        }

    def close(self) -> None:
        """Goodbye packets for the hub, then zeroconf, the ack servers and emulated PDAs (~1 s).
        Once: a second call does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._closing.set()
        start = time.monotonic()
        for agent in self.agents:
            agent.terminate()  # they withdraw themselves meanwhile
        if self.advert is not None:
            self.advert.unregister()
        if self.pdas is not None:
            self.pdas.close()
        if self.zc is not None:
            self.zc.close()
        for server in self.servers:
            server.close()
        for agent in self.agents:
            agent.wait(max(0.2, 1.5 - (time.monotonic() - start)))
        self.agents = []
