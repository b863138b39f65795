"""Stopping on SIGINT or SIGTERM without deadlocking.

A signal handler runs in the main thread between two bytecodes, possibly while that thread holds a
lock.  ``threading.Event.set`` takes the event's lock, so a handler that sets an event can deadlock
when a second signal arrives while the first handler is inside ``set`` (seen: a PDA agent orphaned by
``kill -9`` of its demo received two SIGTERMs and hung for ever).  So the handler here only flips a
flag, and the main thread polls it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

POLL = 0.05  #: seconds between looks at the flag while waiting


class Shutdown:
    """Set by SIGINT/SIGTERM once :meth:`handle_signals` is in force; :attr:`event` follows it for
    other threads, set by the thread that notices (never by the handler)."""

    def __init__(self) -> None:
        self.requested = False
        self.event = threading.Event()

    def request(self, signum: int | None = None, frame: Any = None) -> None:
        """The signal handler: a plain assignment, safe whatever the main thread holds."""
        self.requested = True

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` (main thread); True as soon as a stop was requested."""
        end = time.monotonic() + seconds
        while not self.requested:
            left = end - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(POLL, left))
        self.event.set()
        return True

    @classmethod
    def on_signals(cls) -> Shutdown:
        """For a command-line program (an emulator) that should leave its ``with`` blocks, close its
        pty or port and exit 0 when stopped.  SIGTERM always requests the stop; SIGINT too, unless it
        was inherited ignored (a job a non-interactive shell starts in the background), in which case
        it stays ignored as Python itself leaves it.  Install before printing where the program
        listens: whoever reads that line may signal at once."""
        stop = cls()
        signal.signal(signal.SIGTERM, stop.request)
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, stop.request)
        return stop

    def wait_until_requested(self) -> None:
        """Block the main thread until a stop is requested."""
        while not self.wait(0.5):
            pass

    @contextmanager
    def handle_signals(self) -> Iterator[Shutdown]:
        """SIGINT and SIGTERM request a stop while the block runs (main thread only); the previous
        handlers are put back after it."""
        previous = {sig: signal.signal(sig, self.request) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
