"""The branch clock: one source of time for presence, records and simulated readers.

``speed`` compresses time for simulations: at ``speed=20`` two minutes of branch time pass in six
seconds of wall time, and every window in the profile (presence, suppression, timeouts measured on
this clock) keeps its meaning.  Real branches run at ``speed=1``.
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
        """Branch wall-clock UNIX time."""
        return self._wall0 + self.mono()

    def to_wall(self, mono: float) -> float:
        return self._wall0 + mono

    def to_mono(self, wall: float) -> float:
        return wall - self._wall0

    def sleep(self, seconds: float, stop: threading.Event | None = None) -> bool:
        """Sleep ``seconds`` of branch time; return True early if ``stop`` is set."""
        real = max(0.0, seconds / self.speed)
        if stop is None:
            time.sleep(real)
            return False
        return stop.wait(real)

    def sleep_until(self, mono: float, stop: threading.Event | None = None) -> bool:
        return self.sleep(mono - self.mono(), stop)
