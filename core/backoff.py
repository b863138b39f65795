"""The one capped-doubling backoff: how long a device, a store or a delivery waits before trying again."""

from __future__ import annotations

import attrs


def doubled(first: float, cap: float, failures: int) -> float:
    """The wait after ``failures`` failures in a row (at least one): ``first``, doubled at each further
    failure, never more than ``cap``."""
    return min(first * 2.0 ** min(failures - 1, 64), cap)  # 2**64 * first is past any cap


@attrs.define
class Backoff:
    """Counts failures in a row; :meth:`failed` says how long to wait, :meth:`succeeded` starts over."""

    first: float
    cap: float
    failures: int = 0

    @property
    def delay(self) -> float:
        """The wait the last failure was given; 0 after a success."""
        return doubled(self.first, self.cap, self.failures) if self.failures else 0.0

    def failed(self) -> float:
        """Count a failure and return the wait before the next attempt."""
        self.failures += 1
        return self.delay

    def succeeded(self) -> None:
        self.failures = 0


__all__ = ["Backoff", "doubled"]
