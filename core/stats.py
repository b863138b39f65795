"""The one percentile definition of the status page, the response report and the benchmarks."""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank ``q``-quantile (``0 < q <= 1``): the smallest value that at least ``q`` of the
    values do not exceed, always one of the values (never interpolated).  ``values`` need not be sorted
    (an already sorted list costs one pass).  Raises :exc:`ValueError` when there are none."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(len(ordered) * q))  # 1-based
    return ordered[min(rank, len(ordered)) - 1]


__all__ = ["percentile"]
