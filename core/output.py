"""Terminal output shared by the CLI's live status line and plugins that print (the console notifier).

Printing a block first clears the status line and then redraws it, so the two never garble each
other.  When the stream is not a terminal there is no status line at all.
"""

from __future__ import annotations

import sys
import threading
import unicodedata
from typing import TextIO


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal: East Asian wide and full-width characters take two,
    combining marks and zero-width characters none (Unicode UAX #11, as wcwidth counts them)."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def pad(text: str, width: int) -> str:
    """``text`` padded with spaces to ``width`` terminal columns."""
    return text + " " * max(0, width - display_width(text))


class Output:
    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.is_tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.live = self.is_tty if live is None else live
        self._status = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        """Print ``text`` (a line or a block) above the status line."""
        with self._lock:
            if self.live and self._status:
                self.stream.write("\r\x1b[2K")
            self.stream.write(text if text.endswith("\n") else text + "\n")
            if self.live and self._status:
                self.stream.write(self._status)
            self.stream.flush()

    def status(self, line: str) -> None:
        """Replace the live one-line status (terminals only)."""
        if not self.live:
            return
        with self._lock:
            self._status = line
            self.stream.write("\r\x1b[2K" + line)
            self.stream.flush()

    def clear_status(self) -> None:
        if not self.live:
            return
        with self._lock:
            if self._status:
                self.stream.write("\r\x1b[2K")
                self.stream.flush()
            self._status = ""
