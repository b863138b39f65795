"""Decode the 8-byte boot-protocol keyboard reports of a reader that "types" card numbers.

A desktop RFID reader in keyboard mode types the card's EPC and presses Enter.  Read through pyusb,
its keystrokes arrive as HID boot keyboard reports (Device Class Definition for HID 1.11, appendix B.1;
USB HID Usage Tables, Keyboard/Keypad page 0x07)::

    byte 0     modifier bits: 0x01 left Ctrl, 0x02 left Shift, ... 0x20 right Shift, ...
    byte 1     reserved
    bytes 2-7  usage IDs of up to six keys held down now; 0x00 is an empty slot

A report describes which keys are *held*, not which were pressed: the reader sends one report with the
key down and another (all zeros) when it lets go, and a device may resend an unchanged report.  So a
character is typed only on a key-down transition, a usage present now but not in the previous report.
When too many keys are down the device fills every slot with ErrorRollOver (0x01); such a report says
nothing about the keys and is ignored.

Nothing here imports pyusb: the decoding is pure and tested on its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

REPORT_SIZE = 8
SHIFT_BITS = 0x02 | 0x20  #: left Shift, right Shift
ERROR_ROLLOVER = 0x01
POST_FAIL = 0x02
ERROR_UNDEFINED = 0x03
ENTER = 0x28
KEYPAD_ENTER = 0x58

#: Lines longer than this are not card numbers; typing is discarded until the next Enter.
MAX_LINE = 128
#: EPC lengths in hex digits a Gen2 tag can hold: its PC word gives 0-31 16-bit words.
POSSIBLE_EPC_DIGITS = range(4, 125, 4)

_HEX = re.compile(r"[0-9A-Fa-f]+")


def _keymap() -> dict[int, tuple[str, str]]:
    """Usage ID -> (character, character with Shift) for the keys a reader types (US layout)."""
    keys: dict[int, tuple[str, str]] = {}
    for i, letter in enumerate("abcdefghijklmnopqrstuvwxyz"):
        keys[0x04 + i] = (letter, letter.upper())  # 0x04 a ... 0x1D z
    for i, (digit, shifted) in enumerate(zip("1234567890", "!@#$%^&*()", strict=True)):
        keys[0x1E + i] = (digit, shifted)  # 0x1E 1 ... 0x26 9, 0x27 0
        keys[0x59 + i] = (digit, digit)  # keypad: 0x59 1 ... 0x61 9, 0x62 0
    keys[0x2C] = (" ", " ")
    keys[0x2D] = ("-", "_")
    keys[0x56] = ("-", "-")  # keypad minus
    return keys


KEYMAP = _keymap()
UNKNOWN_KEY = "\ufffd"  #: stands for a key with no meaning here, so the line cannot pass as an EPC
MODIFIER_USAGES = range(0xE0, 0xE8)  #: modifiers some devices also list as keys; byte 0 already says


class HidReportError(ValueError):
    """A report that is not an 8-byte boot keyboard report."""


class BootReport(NamedTuple):
    modifiers: int
    keys: tuple[int, ...]  #: usage IDs held down, in slot order, without empty slots or repeats

    @property
    def shift(self) -> bool:
        return bool(self.modifiers & SHIFT_BITS)

    @property
    def rollover(self) -> bool:
        """Every key slot says ErrorRollOver (or POSTFail / ErrorUndefined): the keys are unknown."""
        return bool(self.keys) and all(k in (ERROR_ROLLOVER, POST_FAIL, ERROR_UNDEFINED) for k in self.keys)


def parse_report(data: bytes) -> BootReport:
    """One boot keyboard report.  Raises :class:`HidReportError` for anything that is not 8 bytes."""
    if len(data) != REPORT_SIZE:
        raise HidReportError(f"a boot keyboard report has {REPORT_SIZE} bytes, got {len(data)}")
    keys: list[int] = []
    for usage in data[2:]:
        if usage and usage not in keys:
            keys.append(usage)
    return BootReport(data[0], tuple(keys))


class KeyboardDecoder:
    """Turns a stream of reports into the characters typed: one character per key-down transition,
    ``"\\n"`` for Enter or keypad Enter."""

    def __init__(self) -> None:
        self._held: frozenset[int] = frozenset()

    def reset(self) -> None:
        """Forget which keys are down, e.g. after the device was reopened."""
        self._held = frozenset()

    def typed(self, report: BootReport) -> str:
        """The characters this report types.  A rollover report types nothing and changes nothing,
        so keys still held when it clears are not typed twice."""
        if report.rollover:
            return ""
        out = []
        for usage in report.keys:
            if usage in self._held or usage in MODIFIER_USAGES:
                continue
            if usage in (ENTER, KEYPAD_ENTER):
                out.append("\n")
            elif usage in KEYMAP:
                plain, shifted = KEYMAP[usage]
                out.append(shifted if report.shift else plain)
            else:
                out.append(UNKNOWN_KEY)
        self._held = frozenset(report.keys)
        return "".join(out)


def epc_from_line(line: str, lengths: Iterable[int]) -> str | None:
    """The EPC a typed line holds, upper case, or ``None`` when it is not hex of an expected length."""
    if len(line) in lengths and _HEX.fullmatch(line):
        return line.upper()
    return None


class Decoded(NamedTuple):
    epcs: list[str]  #: complete, valid card numbers, upper-case hex
    bad_lines: int = 0  #: lines dropped: not hex, unexpected length, or too long
    rollovers: int = 0  #: ErrorRollOver reports ignored
    bad_reports: int = 0  #: reports that were not 8 bytes
    typed: int = 0  #: characters (Enter included) this report typed


class EpcLineDecoder:
    """Reports in, EPCs out: collects typed characters into lines ended by Enter and keeps the lines
    that are card numbers.  Never raises on any input."""

    def __init__(self, lengths: Iterable[int] = (24, 32)) -> None:
        self.lengths = frozenset(lengths)
        self.keyboard = KeyboardDecoder()
        self._line: list[str] = []
        self._overlong = False

    @property
    def pending(self) -> bool:
        """Part of a line has been typed but not yet ended by Enter."""
        return bool(self._line) or self._overlong

    def feed(self, data: bytes) -> Decoded:
        try:
            report = parse_report(bytes(data))
        except HidReportError:
            return Decoded([], bad_reports=1)
        if report.rollover:
            return Decoded([], rollovers=1)
        epcs: list[str] = []
        bad = 0
        typed = self.keyboard.typed(report)
        for char in typed:
            if char != "\n":
                if len(self._line) < MAX_LINE:
                    self._line.append(char)
                else:
                    self._overlong = True
                continue
            line, overlong = "".join(self._line), self._overlong
            self._line, self._overlong = [], False
            if not line and not overlong:
                continue  # a stray Enter
            epc = None if overlong else epc_from_line(line, self.lengths)
            if epc is None:
                bad += 1
            else:
                epcs.append(epc)
        return Decoded(epcs, bad_lines=bad, typed=len(typed))

    def discard_pending(self) -> bool:
        """Drop a line that was never ended (the reader went quiet mid-line); True if there was one."""
        had = self.pending
        self._line, self._overlong = [], False
        return had

    def reset(self) -> None:
        """Start clean, as after reopening the device: no keys held, no partial line."""
        self.keyboard.reset()
        self.discard_pending()
