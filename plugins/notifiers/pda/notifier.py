"""The hub side: pushes each notification to the PDAs of its recipient found on the branch LAN, and
takes their acknowledgements.

One Zeroconf instance per notifier, on the configured IPv4 addresses only.  It advertises the hub
(``_vipsense._tcp.local.``, port = the acknowledgement server) and browses for PDAs
(``_vipsense-pda._tcp.local.``) into a live table.  ``send`` pushes to every present PDA whose TXT
names the recipient's staff id and this branch; the table only says where to knock, the signature
does the rest.  Nobody there, or no answer: ``DeliveryFailed(retry=True)``, and the core's outbox
tries again with backoff until the notification's TTL.

Each start is a new hub instance with a random id, announced in the TXT record and carried in every
push, so a PDA takes pushes from its own hub only.  A profile whose PDAs are all emulated may leave
``key`` out: the notifier then makes a key for this run and hands it to its own agents only.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar

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
#: answers that mean "not now, or not this PDA": the table was out of date, or the PDA is busy
RETRY_STATUSES = (403, 408, 409, 429, MISDIRECTED)


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
        self.pdas = Directory(self.zc, PDA_TYPE, self._parse_pda, on_change=self._pda_changed)
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
        assert self.pdas is not None
        staff = {a.pda.staff_id for a in self.agents}

        def all_present() -> bool:  # ours: pinned to this instance (another demo's have the same staff)
            return staff <= {p.parsed.staff for p in self.pdas.peers() if p.parsed.hub == self.instance}

        t0 = time.monotonic()
        if self.pdas.wait(all_present, EMULATED_WAIT):
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
        self.ctx.log.info(
            "PDA %s %r: staff %s (%s) at %s:%s",
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
        peers = [p for p in (self.pdas.peers() if self.pdas else []) if p.parsed.staff == staff]
        if not peers:
            raise self._failed(f"no PDA of staff {staff} is on the network", retry=True, count=False)
        shown: list[str] = []
        errors: list[str] = []
        retry = False
        for peer in peers:
            where = f"PDA {peer.instance!r} ({peer.address}:{peer.port})"
            try:
                reply = self._push(peer, notification)
            except Unreachable as exc:
                errors.append(f"{where}: {exc}")
                retry = True
                continue
            status = reply.status
            why = str((reply.doc or {}).get("error", ""))[:_REASON_MAX]
            if 200 <= status < 300:
                again = bool((reply.doc or {}).get("duplicate"))
                shown.append(f"{peer.instance} ({'already shown' if again else 'shown'})")
                self.ctx.log.info("pushed %s to %s in %.0f ms", notification.key, where, reply.elapsed * 1000)
            elif status == 401:
                errors.append(f"{where}: PDA rejected the signature: check the branch key ({why})")
            elif status >= 500 or status in RETRY_STATUSES:
                errors.append(f"{where} answered HTTP {status} {why}".rstrip())  # a stale table, or busy
                retry = True
            else:
                errors.append(f"{where} answered HTTP {status} {why}".rstrip())
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
        raise self._failed("; ".join(errors), retry=retry)

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
