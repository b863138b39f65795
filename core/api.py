"""What a plugin author needs: base classes for the objects factories build, and their contexts.

A factory registered through a ``vipsense_register_*_types`` hook is called as
``factory(settings, context)`` and returns one of the classes below.  Dependencies reach the object
through ``context``, never through globals.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .clock import Clock
from .config.types import Duration, Secret
from .model import Card, Customer, DeliveryResult, Notification, Staff, TagRead

if TYPE_CHECKING:
    from .output import Output

__all__ = [
    "Card",
    "Customer",
    "DeliveryResult",
    "Duration",
    "IdentityStore",
    "Notifier",
    "PluginContext",
    "Reader",
    "ReaderContext",
    "ReaderState",
    "ReaderStatus",
    "RegisterType",
    "Secret",
    "TagRead",
]


class RegisterType(Protocol):
    """The ``register`` callable handed to the ``vipsense_register_*_types`` hooks."""

    def __call__(
        self, name: str, settings: type, factory: Callable[..., Any], *, summary: str = ""
    ) -> None: ...


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
    #: Notifiers: report a result learnt later, e.g. a recipient's acknowledgement, from any thread.
    report: Callable[[Notification, DeliveryResult], None] = lambda notification, result: None

    def resolve(self, path: str | Path) -> Path:
        """A settings path made absolute against the profile's directory."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.profile_dir / p)


class ReaderState(str, enum.Enum):
    STARTING = "starting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  #: the core will call ``run`` again after a backoff
    FAILED = "failed"  #: the factory failed: the reader cannot start until the profile changes
    FINISHED = "finished"  #: ``run`` returned by itself (a replay that reached its end)
    STOPPED = "stopped"


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

        ``extra`` may set the other :class:`TagRead` fields: ``tid``, ``read_count``, ``reader_time``.
        """
        self.emit(
            TagRead(
                reader_id=self.reader_id,
                antenna=antenna,
                epc=epc.upper(),
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


class IdentityStore:
    """Where cards and customers are found.  All methods run on one worker thread per store."""

    def open(self) -> None:
        """Connect.  Raise if the store is unreachable; the core retries later."""

    def find_card(self, epc: str) -> Card | None:
        raise NotImplementedError

    def find_customer(self, customer_no: str) -> Customer | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections.  Called once when the branch stops."""


class Notifier:
    """A channel that tells staff.  :meth:`send` runs on the notifier's own worker thread."""

    def send(self, notification: Notification) -> DeliveryResult | None:
        """Deliver one notification.  Return ``None`` for plain success, or a result; raise on failure."""
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release.  Called once when the branch stops."""
