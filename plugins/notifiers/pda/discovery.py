"""mDNS/DNS-SD for the hub and the PDAs: a safe Zeroconf instance, one advertisement, one live table.

Safety first (``zeroconf.md`` §4-5, ``test-peers.md``): a Zeroconf instance is only ever made here,
with an explicit list of IPv4 addresses and ``IPVersion.V4Only``.  A default instance would announce
the branch on every network the machine is on (VPNs, a second NIC) and multicast there.

The table is an address book: what a TXT record says is shown and used to choose where to push, but
authorises nothing (every push and ack is signed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceInfo

from .protocol import UnusableTxt, decode_txt

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT_MS = 3000
REGISTER_TIMEOUT = 15.0  #: seconds: probing and announcing take about 1.5 s; more means a stuck loop
KEEP_GONE = 200  #: entries of departed peers kept for the status page
KEEP_LOGGED = 1000  #: (record, reason) pairs remembered so that each ignored record is logged once
#: categories of ignored records that say something is wrong (logged as warnings); the others are
#: a neighbour's business (another branch, another demo's hub instance), logged for information
WRONG = frozenset({"unusable", "other_proto"})


def check_interfaces(values: Iterable[str]) -> list[str]:
    """The addresses as a list of IPv4 literals; ``ValueError`` (naming the bad one) otherwise."""
    out: list[str] = []
    for value in values:
        try:
            address = ipaddress.IPv4Address(str(value).strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 address") from None
        if address.is_unspecified or address.is_multicast or str(address) == "255.255.255.255":
            raise ValueError(f"{value!r} is not one interface's address")
        out.append(str(address))
    if not out:
        raise ValueError("no interface address given")
    return out


def open_zeroconf(interfaces: Iterable[str]) -> Zeroconf:
    """The one way this package makes a Zeroconf instance: these IPv4 addresses only."""
    return Zeroconf(interfaces=check_interfaces(interfaces), ip_version=IPVersion.V4Only)


def host_name(prefix: str) -> str:
    """A fresh ``<prefix>-<random>.local.`` host name, so two devices never claim the same one."""
    clean = "".join(c if c.isascii() and c.isalnum() else "-" for c in prefix).strip("-")[:40] or "host"
    return f"{clean}-{uuid.uuid4().hex[:8]}.local."


class Advertisement:
    """One service announced with ``allow_name_change`` and withdrawn (goodbye packets) on close.

    ``register`` (probing and announcing, about 1.5 s) may run on one thread while ``unregister`` is
    called on another: the registration still in flight is cancelled on zeroconf's loop, and nothing is
    ever handed to a loop that has closed (a coroutine handed to a closed loop is never awaited).  The
    owner closes its Zeroconf after ``unregister`` ("unregister before close so peers get goodbyes",
    ``zeroconf.md`` §1); that close says goodbye for a registration that completed just as it was
    withdrawn.
    """

    def __init__(
        self,
        zc: Zeroconf,
        type_: str,
        instance: str,
        port: int,
        properties: Mapping[str, str],
        addresses: Iterable[str],
        server: str,
    ) -> None:
        self.zc = zc
        self.info = ServiceInfo(
            type_,
            f"{instance}.{type_}",
            port=port,
            properties=dict(properties),
            parsed_addresses=list(addresses),
            server=server,
        )
        self.registered = False
        self._lock = threading.Lock()
        self._withdrawn = False
        self._pending: concurrent.futures.Future | None = None

    @property
    def name(self) -> str:
        """The instance name as registered (zeroconf appends ``-2`` and so on after a clash)."""
        return self.info.name[: -len(self.info.type) - 1]

    def register(self) -> str:
        """Announce the service; its registered instance name.  ``Withdrawn`` if ``unregister`` came
        first or meanwhile."""
        with self._lock:
            if self._withdrawn or self.zc.done or self.zc.loop is None:
                raise Withdrawn(f"{self.info.name} was withdrawn before it was announced")
            announce = self._register()
            try:
                pending = self._pending = asyncio.run_coroutine_threadsafe(announce, self.zc.loop)
            except RuntimeError:  # the loop closed meanwhile
                announce.close()
                raise Withdrawn(f"{self.info.name} was withdrawn before it was announced") from None
        try:
            pending.result(REGISTER_TIMEOUT)
        except concurrent.futures.CancelledError:
            raise Withdrawn(f"{self.info.name} was withdrawn while it was being announced") from None
        except concurrent.futures.TimeoutError:
            pending.cancel()
            raise TimeoutError(f"announcing {self.info.name} took over {REGISTER_TIMEOUT:g} s") from None
        with self._lock:
            self._pending = None
            if self._withdrawn:  # zeroconf's own close sends the goodbye for what it still holds
                raise Withdrawn(f"{self.info.name} was withdrawn while it was being announced")
            self.registered = True
        return self.name

    async def _register(self) -> None:
        broadcast = await self.zc.async_register_service(self.info, allow_name_change=True)
        await broadcast

    def unregister(self) -> None:
        """Withdraw the service (goodbye packets) or cancel its announcement; safe to call again."""
        with self._lock:
            self._withdrawn = True
            pending, self._pending = self._pending, None
            registered, self.registered = self.registered, False
        if pending is not None:
            pending.cancel()
        if not registered or self.zc.done:  # a closed Zeroconf already said goodbye for its services
            return
        try:
            self.zc.unregister_service(self.info)
        except Exception as exc:  # closing anyway; say why peers may see it late
            log.warning("could not withdraw %s: %s", self.info.name, exc)


class Withdrawn(Exception):
    """The advertisement was withdrawn before its announcement finished (the owner is closing)."""


@attrs.define
class Peer:
    """One instance of the browsed type, as last resolved."""

    name: str  #: the full service name
    instance: str  #: the instance part, for display
    address: str
    port: int
    txt: dict[str, str]
    parsed: Any  #: what the directory's ``parse`` made of the TXT record
    first_seen: float  #: wall-clock UNIX time
    last_seen: float
    state: str = "appeared"  #: appeared, updated or gone

    def row(self) -> dict[str, Any]:
        return {
            "name": self.instance,
            "address": self.address,
            "port": self.port,
            "txt": dict(self.txt),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "state": self.state,
        }


def _usable(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not (ip.is_unspecified or ip.is_link_local or ip.is_multicast)


class Directory:
    """A live table of one service type on the network, kept by a ``ServiceBrowser``.

    Browser callbacks never block: they only schedule a resolve (cache first, else a query) on
    zeroconf's own event loop and keep a reference to it.  ``parse(txt, port)`` turns a TXT record
    into what the owner needs, or raises ``ValueError`` (with a ``category`` attribute, see
    :class:`.protocol.UnusableTxt`) to have the instance ignored and counted.

    Before ``parse`` sees it, a record is refused (category ``unusable``) when its instance name or
    TXT record is not UTF-8, its SRV port is 0, or it has no usable IPv4 address.  Each ignored
    record is logged once with the reason (again only after it was usable meanwhile, or for another
    reason); every value from the record is quoted with ``repr`` so a log line cannot be forged.
    """

    def __init__(
        self,
        zc: Zeroconf,
        type_: str,
        parse: Callable[[dict[str, str], int], Any],
        on_change: Callable[[Peer], None] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.zc = zc
        self.type = type_
        self._parse = parse
        self._on_change = on_change
        self._log = logger or log
        self._lock = threading.RLock()  #: re-entrant: ``wait``'s condition may read the table
        self._peers: dict[str, Peer] = {}
        self._ignored: dict[str, tuple[str, str]] = {}  #: name -> (category, reason)
        self._logged: OrderedDict[tuple[str, str], None] = OrderedDict()  #: (name, reason) logged
        self._generation: dict[str, int] = {}
        self._tasks: set[concurrent.futures.Future] = set()
        self.changed = threading.Condition(self._lock)  #: notified on every change (tests wait on it)
        self.browser = ServiceBrowser(zc, type_, handlers=[self._on_state_change])

    # -- the browser's callbacks (zeroconf's threads: never block) ---------------------------------

    def _on_state_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        with self._lock:
            generation = self._generation[name] = self._generation.get(name, 0) + 1
            if state_change is ServiceStateChange.Removed:
                self._ignored.pop(name, None)
                peer = self._peers.get(name)
                if peer is not None and peer.state != "gone":
                    peer.state, peer.last_seen = "gone", time.time()
                    self._prune()
                    self.changed.notify_all()
                else:
                    peer = None
            else:
                peer = None
        if peer is not None:
            self._notify(peer)
            return
        if state_change is ServiceStateChange.Removed or self.zc.loop is None:
            return
        resolve = self._resolve(name, generation)
        try:
            task = asyncio.run_coroutine_threadsafe(resolve, self.zc.loop)
        except RuntimeError:  # the loop has closed: never leave a coroutine unawaited
            resolve.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, name: str, generation: int) -> None:
        info = AsyncServiceInfo(self.type, name)
        if not info.load_from_cache(self.zc) and not await info.async_request(self.zc, RESOLVE_TIMEOUT_MS):
            log.debug("could not resolve %s", name)
            return
        if info.port is None:
            log.debug("%s has no SRV record", name)
            return
        addresses = [a for a in info.parsed_addresses(IPVersion.V4Only) if _usable(a)]
        try:
            if "\ufffd" in name:  # zeroconf decodes a label that is not UTF-8 with replacements
                raise UnusableTxt("the instance name is not UTF-8")
            if not addresses:
                raise UnusableTxt("no usable IPv4 address")
            if info.port == 0:
                raise UnusableTxt("SRV port 0")
            txt = decode_txt(info.properties)
            parsed = self._parse(txt, info.port)
        except ValueError as exc:
            self._ignore(name, generation, getattr(exc, "category", "unusable"), str(exc))
            return
        now = time.time()
        instance = name[: -len(self.type) - 1]
        with self._lock:
            if self._generation.get(name) != generation:  # removed (or changed again) meanwhile
                return
            self._ignored.pop(name, None)
            for seen in [k for k in self._logged if k[0] == name]:  # usable now: log a relapse again
                del self._logged[seen]
            old = self._peers.get(name)
            if old is not None and old.state != "gone":
                old.address, old.port, old.txt, old.parsed = addresses[0], info.port, txt, parsed
                old.last_seen, old.state = now, "updated"
                peer = old
            else:
                peer = self._peers[name] = Peer(
                    name, instance, addresses[0], info.port, txt, parsed, now, now
                )
            self.changed.notify_all()
        self._notify(peer)

    def _ignore(self, name: str, generation: int, category: str, reason: str) -> None:
        """Put ``name`` in the ignored list (unless it changed meanwhile) and log it, once per reason."""
        with self._lock:
            if self._generation.get(name) != generation:
                return
            self._ignored[name] = (category, reason)
            self._peers.pop(name, None)
            self.changed.notify_all()
            first = (name, reason) not in self._logged
            if first:
                self._logged[(name, reason)] = None
                while len(self._logged) > KEEP_LOGGED:
                    self._logged.popitem(last=False)
        if first:
            level = logging.WARNING if category in WRONG else logging.INFO
            self._log.log(level, "ignored %s record %r: %s", self.type, name[: -len(self.type) - 1], reason)

    def _notify(self, peer: Peer) -> None:
        if self._on_change is not None:
            try:
                self._on_change(attrs.evolve(peer))
            except Exception:
                log.exception("peer change handler failed")

    def _prune(self) -> None:
        gone = [p for p in self._peers.values() if p.state == "gone"]
        for peer in sorted(gone, key=lambda p: p.last_seen)[: max(0, len(gone) - KEEP_GONE)]:
            del self._peers[peer.name]

    # -- for any thread ---------------------------------------------------------------------------

    def peers(self, include_gone: bool = False) -> list[Peer]:
        """Copies of the table's entries, present ones only unless ``include_gone``."""
        with self._lock:
            return [attrs.evolve(p) for p in self._peers.values() if include_gone or p.state != "gone"]

    def ignored(self) -> dict[str, tuple[str, str]]:
        """Instances seen but not usable: name -> (category, reason)."""
        with self._lock:
            return dict(self._ignored)

    def wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Block until ``condition()`` holds (checked after each change) or ``timeout`` passes."""
        end = time.monotonic() + timeout
        with self.changed:
            while not condition():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 0.1))
        return True

    def close(self) -> None:
        try:
            self.browser.cancel()
        except Exception as exc:
            log.debug("browser cancel: %s", exc)
        for task in list(self._tasks):
            task.cancel()
