"""The branch clock: one source of time for presence, records and simulated readers.

Two kinds of time, never mixed (see :mod:`vipsense.model`):

* **branch time** (:meth:`Clock.mono`), monotonic seconds on which presence and replays run.
  ``speed`` compresses it for simulations: at ``speed=20`` two minutes of branch time pass in six
  real seconds, so a replayed morning keeps every window of the profile (presence, re-entry).
* **wall time** (:meth:`Clock.wall`), true UNIX time, on every record: visits, deliveries,
  acknowledgements.  A sped-up replay still records when things really happened, so response times
  are never negative and its rows can sit beside real ones.  A profile duration measured against wall
  time (a notification's lifetime, an escalation deadline) goes through :meth:`Clock.real` first.

Real branches run at ``speed=1``, where both advance together.
"""

from __future__ import annotations

import threading
import time


class Clock:
    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._mono0 = time.monotonic()
        self._wall0 = time.time()

    def mono(self) -> float:
        """Branch monotonic seconds."""
        return (time.monotonic() - self._mono0) * self.speed

    def wall(self) -> float:
        """True wall-clock UNIX time (as the branch's monotonic clock counts it since the start)."""
        return self._wall0 + self.real(self.mono())

    def real(self, branch_seconds: float) -> float:
        """How many real seconds a span of branch time takes."""
        return branch_seconds / self.speed

    def to_wall(self, mono: float) -> float:
        return self._wall0 + self.real(mono)

    def to_mono(self, wall: float) -> float:
        return (wall - self._wall0) * self.speed

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Sleep ``seconds`` of branch time; return True early if ``stop`` is set."""
        real = max(0.0, seconds / self.speed)
        if stop is None:
            time.sleep(real)
            return False
        return stop.wait(real)

    def sleep_until(self, mono: float, stop: threading.Event | None = None) -> bool:
        return self.sleep(mono - self.mono(), stop)


class ManualClock(Clock):
    """A branch clock that moves only when told to (:meth:`advance`): for tests and replays that must
    be exact, such as "the VIP returns 11 minutes later", without waiting 11 minutes.  Wall time is
    ``wall0 + mono``, as on a running clock."""

    def __init__(self, wall0: float | None = None) -> None:
        super().__init__()
        self._now = 0.0
        self._wall0 = time.time() if wall0 is None else wall0
        self._moved = threading.Condition()

    def mono(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward (never back); returns the new branch monotonic time."""
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        with self._moved:
            self._now += seconds
            self._moved.notify_all()
        return self._now

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Wait until the clock has been advanced ``seconds`` (or ``stop`` is set: True)."""
        until = self._now + seconds
        with self._moved:
            while self._now < until:
                if stop is not None and stop.is_set():
                    return True
                self._moved.wait(0.05)
        return bool(stop is not None and stop.is_set())
