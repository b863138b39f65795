"""A progress bar for long imports that behaves on a terminal and in a log file alike."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from .i18n import _, lazy_gettext


class ProgressBar:
    """``progress(done, total)`` callback for imports: a redrawn bar on a terminal, else one line per
    10 %, so a log file gets ten lines, not a million carriage returns."""

    WIDTH = 30

    def __init__(self, stream: TextIO | None = None, unit: Any = None, min_interval: float = 0.1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        #: what is counted, as the reader reads it (the caller's translated word; default "rows")
        self.unit = lazy_gettext("rows") if unit is None else unit
        self.min_interval = min_interval
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._last_draw = -1.0
        self._last_tenth = 0
        self._open = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.tty:
            if done < total and now - self._last_draw < self.min_interval:
                return
            self._last_draw = now
            self.stream.write("\r" + self.render(done, total, now))
            self._open = done < total
            if not self._open:
                self.stream.write("\n")
        else:
            tenth = 10 if total <= 0 or done >= total else done * 10 // total
            if tenth <= self._last_tenth:
                return
            self._last_tenth = tenth
            self.stream.write(self.render(done, total, now) + "\n")
        self.stream.flush()

    def render(self, done: int, total: int, now: float | None = None) -> str:
        elapsed = (time.monotonic() if now is None else now) - self.started
        filled = self.WIDTH if total <= 0 else min(self.WIDTH, done * self.WIDTH // total)
        rate = done / elapsed if elapsed > 0 else 0.0
        bar = "#" * filled + " " * (self.WIDTH - filled)
        return _("[{bar}] {done}/{total} {unit}  {rate} {unit}/s").format(
            bar=bar, done=f"{done:,}", total=f"{total:,}", unit=self.unit, rate=f"{rate:,.0f}"
        )

    def close(self) -> None:
        """End an unfinished bar's line (an import that raised)."""
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False
