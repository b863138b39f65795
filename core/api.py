"""What a plugin author needs: base classes for the objects factories build, and their contexts.

A factory registered through a ``vipsense_register_*_types`` hook is called as
``factory(settings, context)`` and returns one of the classes below.  Dependencies reach the object
through ``context``, never through globals.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

import attrs

from .backoff import Backoff
from .clock import Clock
from .config.types import Duration, Secret, SerialPort
from .crypto import FieldCipher
from .errors import describe
from .i18n import CORE as CORE_CATALOGUE
from .i18n import Catalogue, using
from .model import Card, CardEvent, CardStatus, Customer, DeliveryResult, Notification, Staff, TagRead
from .states import DeviceState

if TYPE_CHECKING:
    from .output import Output

__all__ = [
    "CORE_CATALOGUE",
    "Backoff",
    "Card",
    "CardEvent",
    "CardExists",
    "CardRegistry",
    "CardStatus",
    "Catalogue",
    "Customer",
    "DeliveryFailed",
    "DeliveryResult",
    "DeviceState",
    "Duration",
    "IdentityStore",
    "Notifier",
    "PluginContext",
    "Reader",
    "ReaderContext",
    "ReaderState",
    "ReaderStatus",
    "RegisterCommand",
    "RegisterType",
    "Secret",
    "SerialPort",
    "StoreUnsupported",
    "TagRead",
    "UnknownCard",
    "UplinkContext",
    "UplinkUnavailable",
    "describe",
    "using",
]


class RegisterType(Protocol):
    """The ``register`` callable handed to the ``vipsense_register_*_types`` hooks.

    ``requires`` names the modules the type needs beyond vipsense (a vendor SDK), and ``extra`` the
    pip extra of the plugin's own distribution that installs them: ``requires=("sllurp",),
    extra="llrp"``.  When one is missing the type is unavailable, and a profile that uses it fails
    ``vipsense check`` with ``pip install '<distribution>[<extra>]'``.  The modules are looked up,
    not imported: import the SDK inside the factory."""

    def __call__(
        self,
        name: str,
        settings: type,
        factory: Callable[..., Any],
        *,
        summary: str = "",
        requires: Iterable[str] = (),
        extra: str = "",
    ) -> None: ...


class RegisterCommand(Protocol):
    """The ``register`` callable handed to ``vipsense_register_commands``."""

    def __call__(self, name: str, configure: Callable[[Any], None], *, help: str = "") -> None: ...


@attrs.frozen
class PluginContext:
    """What every factory receives besides its settings."""

    branch_id: str
    branch_name: str
    item_id: str  #: this reader's, store's or notifier's ``id`` in the profile
    data_dir: Path  #: the branch's data directory; keep your files under it
    profile_dir: Path  #: relative paths in settings are relative to this
    clock: Clock
    output: Output  #: terminal output that cooperates with the live status line
    log: logging.Logger
    staff: Mapping[str, Staff] = attrs.Factory(dict)  #: the profile's ``staff:``, by id
    #: the branch's time zone (``branch.timezone``): show times of day on the branch's clock
    tz: ZoneInfo | None = None
    #: Notifiers: report a result learnt later, e.g. a failure the channel reports afterwards.
    report: Callable[[Notification, DeliveryResult], None] = lambda notification, result: None
    #: Notifiers: a recipient acknowledged the notification ``key`` (any thread, returns quickly).
    #: ``acknowledge(key, staff_id, at=None)`` returns False when the branch knows no such
    #: notification for that member of staff; ``at`` is wall-clock UNIX time, None for now.
    acknowledge: Callable[..., bool] = lambda key, staff_id, at=None: False
    #: Stores: seals and opens personal-data columns (ID and mobile numbers) and makes the ID number's
    #: blind index, with the profile's ``privacy.data_key``, else a key made for the data directory.
    #: A store encrypts with it and never reads a key itself.  Loads its keys on first use only.
    cipher: FieldCipher = attrs.field(
        default=attrs.Factory(lambda self: FieldCipher.local_only(self.data_dir), takes_self=True),
        eq=False,
    )

    def resolve(self, path: str | Path) -> Path:
        """A settings path made absolute against the profile's directory."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.profile_dir / p)


#: A reader's states are :class:`DeviceState`'s (one enum for readers, stores and notifiers); the
#: name stays for readers written against it.
ReaderState = DeviceState


@attrs.frozen
class ReaderStatus:
    state: ReaderState
    reason: str = ""
    since: float = 0.0  #: wall-clock UNIX time of the change


class ReaderContext:
    """Handed to :meth:`Reader.run`: where reads go and how the reader reports its link."""

    def __init__(
        self,
        reader_id: str,
        clock: Clock,
        emit: Callable[[TagRead], None],
        set_state: Callable[[ReaderState, str], None],
        stop: threading.Event,
        log: logging.Logger,
        counters: dict[str, int],
    ) -> None:
        self.reader_id = reader_id
        self.clock = clock
        self.log = log
        self._counters = counters
        #: Hand one :class:`TagRead` to the pipeline.  Thread-safe, never blocks.
        self.emit = emit
        self._set_state = set_state
        #: Set when the branch stops; ``run`` must return soon after.
        self.stop = stop

    def connected(self, detail: str = "") -> None:
        """Call once the device is open and configured, so status shows it."""
        self._set_state(ReaderState.CONNECTED, detail)

    def count(self, name: str, n: int = 1) -> None:
        """Add to a driver counter shown in the reader's status, e.g. ``count("crc_errors")``."""
        self._counters[name] = self._counters.get(name, 0) + n

    def read(self, epc: str, antenna: int, rssi: float | None, **extra: Any) -> None:
        """Stamp a read with the branch clock and emit it.  ``rssi=None`` when the reader has none.
        The core normalises ``epc`` (white space, case) and drops one that is no EPC, counting it as
        ``bad_epc``, so a driver hands over what it decoded.

        ``extra`` may set the other :class:`TagRead` fields: ``tid``, ``read_count``, ``reader_time``.
        """
        self.emit(
            TagRead(
                reader_id=self.reader_id,
                antenna=antenna,
                epc=epc,
                rssi=rssi,
                seen_mono=self.clock.mono(),
                **extra,
            )
        )


class Reader:
    """A reader driver instance: one physical (or simulated) reader.

    The core runs :meth:`run` on a thread of its own.  ``run`` opens the device, calls
    ``ctx.connected()``, emits reads until ``ctx.stop`` is set, and returns.  When the link is lost it
    raises: the core marks the reader disconnected with the exception's message and calls ``run``
    again after a capped exponential backoff, so drivers hold no reconnect loop of their own.
    Returning while ``ctx.stop`` is unset means the reader has finished for good.
    """

    def run(self, ctx: ReaderContext) -> None:
        raise NotImplementedError

    def interrupt(self) -> None:
        """Unblock a ``run`` stuck in I/O.  Called from another thread when the branch stops,
        after ``ctx.stop`` is set, so ``run`` can tell a stop from a lost link.

        Make the blocked call return: ``socket.shutdown(SHUT_RDWR)`` (a plain ``close()`` from another
        thread does not wake a blocked ``recv`` on Linux), or ``serial.cancel_read()``.
        """

    def close(self) -> None:
        """Release what outlives one ``run`` (a helper process, an emulator).  Called once, on the
        main thread, when the branch stops, after ``run`` has returned or been abandoned."""


class StoreUnsupported(NotImplementedError):
    """This store cannot do that (e.g. search by ID number, or list every card for a sync)."""


class UnknownCard(LookupError):
    """A card-lifecycle command named an EPC the store does not hold."""


class CardExists(ValueError):
    """An EPC that is already issued cannot be issued again; reissue or revoke it instead."""


class IdentityStore:
    """Where cards and customers are found.  All methods run on one worker thread per store.

    Only :meth:`find_card` and :meth:`find_customer` are required.  The optional methods raise
    :class:`StoreUnsupported` unless a store implements them; the core checks before relying on one.
    """

    def open(self) -> None:
        """Connect.  Raise if the store is unreachable; the core retries later."""

    def find_card(self, epc: str) -> Card | None:
        raise NotImplementedError

    def find_customer(self, customer_no: str) -> Customer | None:
        raise NotImplementedError

    def find_customers_by_id_number(self, id_number: str) -> list[Customer]:
        """Manual look-up for a customer without their card (a phone appointment): every customer
        with this ID number, usually one."""
        raise StoreUnsupported(f"{type(self).__name__} cannot search by ID number")

    def iter_cards(self) -> Iterator[Card]:
        """Every card, for ``vipsense sync`` and exports.  Streams; never builds the whole list."""
        raise StoreUnsupported(f"{type(self).__name__} cannot list its cards")

    def iter_customers(self) -> Iterator[Customer]:
        """Every customer, with photos, for ``vipsense sync`` and exports.  Streams."""
        raise StoreUnsupported(f"{type(self).__name__} cannot list its customers")

    def card_seen(self, epc: str, branch_id: str, at: float) -> None:
        """A card arrived at ``branch_id`` at wall-clock ``at``.  Stores shared between branches record
        it, so the next :meth:`find_card` anywhere returns ``last_seen_branch`` / ``last_seen_at`` and
        a card seen at two branches implausibly fast is caught.  Default: not recorded."""

    def cards_seen(self, sightings: list[tuple[str, str, float]]) -> None:
        """Several ``(epc, branch_id, at)`` sightings at once (one pipeline batch): the core calls this.
        Default: :meth:`card_seen` for each; a store can write them in one transaction instead."""
        for epc, branch_id, at in sightings:
            self.card_seen(epc, branch_id, at)

    @property
    def records_sightings(self) -> bool:
        """Whether :meth:`card_seen` records anything, so the core queues sightings only where they
        count.  Default: whether the store's class implements ``card_seen``; a store that does so only
        when a setting asks can override this."""
        return type(self).card_seen is not IdentityStore.card_seen

    def degraded(self) -> str:
        """Why the store answers only in part right now (e.g. "directory unreachable: serving 9,812
        cached entries"), or ``""``.  Status shows a non-empty answer as ``degraded``.

        The one method called from another thread (the pipeline's, after each answer): return a
        string the worker thread keeps up to date, without I/O or locks."""
        return ""

    def close(self) -> None:
        """Release connections.  Called once when the branch stops."""


class CardRegistry(IdentityStore):
    """A store that the card-issuing station writes to: cards are issued, reported lost, revoked and
    reissued here, and each change is kept in the card's history.

    Customer data and cards stay apart: none of these methods changes a customer.
    """

    def issue_card(self, card: Card, event: CardEvent) -> None:
        """Add a new card.  Raises :class:`CardExists` if the EPC is already known."""
        raise NotImplementedError

    def set_card_status(self, epc: str, status: CardStatus, event: CardEvent) -> Card:
        """Change a card's status (lost, revoked, active again) and record why; returns the card as
        it is now.  Raises :class:`UnknownCard`."""
        raise NotImplementedError

    def reissue_card(self, old_epc: str, new_card: Card, revoke: CardEvent, issue: CardEvent) -> None:
        """In one step: revoke ``old_epc`` (``revoke``) and issue ``new_card`` (``issue``).  Either
        both happen or neither does.  Raises :class:`UnknownCard` or :class:`CardExists`."""
        raise NotImplementedError

    def card_history(self, epc: str) -> list[CardEvent]:
        """The card's events, oldest first.  Raises :class:`UnknownCard`."""
        raise NotImplementedError

    def list_cards(self, customer_no: str | None = None, status: CardStatus | None = None) -> list[Card]:
        """Cards, optionally one customer's or of one status, ordered by EPC."""
        raise NotImplementedError

    def upsert_cards(self, cards: Iterable[Card], event: CardEvent) -> int:
        """Bulk card import: insert or update cards; a card that is new, or whose status changes,
        gets a history entry made from ``event`` (its ``epc`` is ignored).  Returns how many."""
        raise StoreUnsupported(f"{type(self).__name__} cannot import cards")

    def upsert_customers(self, customers: Iterable[Customer]) -> int:
        """Insert or update customers (a photo of ``None`` keeps the stored one); returns how many."""
        raise StoreUnsupported(f"{type(self).__name__} cannot write customers")

    def replace_all(self, cards: Iterable[Card], customers: Iterable[Customer]) -> tuple[int, int]:
        """Make this store an exact replica: afterwards it holds these cards and customers and no
        others, switched over atomically (lookups see the old data or the new, never a mix).
        Card histories are kept.  Returns ``(cards, customers)``."""
        raise StoreUnsupported(f"{type(self).__name__} cannot be a replica")


class UplinkUnavailable(Exception):
    """An uplink could not reach the centre (refused, timed out, a TLS failure): the message says why
    in one line, never the branch key.  The shipper keeps its cursor, backs off and tries again."""


@attrs.frozen
class UplinkContext:
    """What an uplink factory receives besides its settings (the profile's ``centre:``)."""

    url: str  #: the centre, e.g. ``https://centre.bank:8470``
    timeout: float  #: seconds one request may take
    ca: Path | None  #: the PEM file of the CA that signed the centre's certificate; None: the system's
    branch_id: str
    log: logging.Logger


class DeliveryFailed(Exception):
    """A notifier could not deliver one notification.  The message says why in words staff
    understand (e.g. "SIM not inserted (+CMS ERROR 310)").  ``retry=False`` when trying again cannot
    help, such as an invalid number; any other exception from ``send`` counts as worth a retry."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class Notifier:
    """A channel that tells staff.  :meth:`send` runs on the notifier's own worker thread."""

    def send(self, notification: Notification) -> DeliveryResult | None:
        """Deliver one notification.  Return ``None`` for plain success, or a result; raise on failure
        (:class:`DeliveryFailed` to say whether a retry can help)."""
        raise NotImplementedError

    def health(self) -> Mapping[str, Any]:
        """Facts for the status page: a modem's SIM, network registration and signal; a push
        channel's peers.  Called from other threads: return a mapping the notifier keeps up to date,
        without I/O."""
        return {}

    def close(self) -> None:
        """Flush and release.  Called once when the branch stops."""
