"""The AT dialogue over a pyserial port (TS 27.007 / 27.005, ``sms-paging.md`` §1-§3).

One command at a time: write it, read lines until a final result code (``OK``, ``ERROR``,
``+CMS ERROR: n``, ``+CME ERROR: n``), keep the information lines the command asked for and drop
everything else: echoes (before ``ATE0``) and unsolicited result codes (``RING``, ``+CMTI: …``) that a
modem may send at any time, even between a command and its ``OK``.  ``AT+CMGS`` adds the ``> ``
prompt that is not a line.  Every wait has a deadline; a port that fails raises :class:`LinkLost`.

Nothing secret or personal reaches the log: a command can be logged under another text (the PIN),
a PDU only by its length, and every line read is masked by :func:`vipsense.sms.mask_numbers`.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from vipsense.sms import mask_numbers

from .errors import ErrorInfo, describe

CTRL_Z, ESC = b"\x1a", b"\x1b"
_FINAL_ERROR = re.compile(r"^\+(CMS|CME) ERROR:\s*(.*)$")
#: Final codes a modem may give for commands it does not know (besides ERROR).
_OTHER_ERRORS = ("COMMAND NOT SUPPORT", "TOO MANY PARAMETERS")
#: Lines that are unsolicited whatever command is running.
_URC_WORDS = ("RING", "NO CARRIER", "BUSY", "NO ANSWER", "NO DIALTONE", "RDY", "Call Ready", "SMS Ready")


class LinkLost(ConnectionError):
    """The serial port failed (adapter unplugged, pty closed, TCP peer gone)."""


class AtTimeout(TimeoutError):
    """The modem did not finish answering in time."""


class AtError(Exception):
    """The modem answered a command with an error final result code."""

    def __init__(self, command: str, kind: str, code: int | None, text: str = "") -> None:
        self.command = command  #: as logged (never the PIN)
        self.kind = kind  #: "CMS", "CME" or "ERROR"
        self.code = code  #: None for a bare ERROR or a verbose (AT+CMEE=2) answer
        self.info: ErrorInfo = describe(kind, code, text)
        super().__init__(f"{command}: {self.info.message}")


def parse_final(line: str) -> tuple[str, int | None, str] | None:
    """``("OK", None, "")``, ``("CMS", 331, "")``, ``("ERROR", None, "")`` … or None for other lines."""
    if line == "OK":
        return ("OK", None, "")
    if line == "ERROR" or line in _OTHER_ERRORS:
        return ("ERROR", None, "" if line == "ERROR" else line)
    m = _FINAL_ERROR.match(line)
    if m:
        value = m.group(2).strip()
        return (m.group(1), int(value), "") if value.isdigit() else (m.group(1), None, value)
    return None


def is_urc(line: str) -> bool:
    """A line no plain command answers with: a known word, or a ``+XXX:``/``^XXX:`` report."""
    return line in _URC_WORDS or line.startswith(("+", "^", "*"))


class AtChannel:
    """Commands and answers over one open port (``timeout`` on the port should be short: it only
    bounds one read, the deadlines here bound the wait)."""

    def __init__(self, port: Any, log: logging.Logger) -> None:
        self.port = port
        self.log = log
        self._buf = bytearray()
        self.urcs = 0  #: unsolicited lines seen and dropped

    # -- bytes and lines ---------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        try:
            self.port.write(data)
            self.port.flush()
        except Exception as exc:  # SerialException, OSError; TypeError if closed under our feet
            raise LinkLost(f"cannot write to the modem: {exc}") from exc

    def _read(self) -> None:
        try:
            data = self.port.read(max(1, self.port.in_waiting))
        except Exception as exc:
            raise LinkLost(f"cannot read from the modem: {exc}") from exc
        self._buf += data

    def _take_line(self) -> str | None:
        """A complete line from the buffer, or None; empty lines are skipped."""
        while True:
            m = re.search(rb"[\r\n]", self._buf)
            if m is None:
                return None
            raw = bytes(self._buf[: m.start()])
            del self._buf[: m.end()]
            line = raw.replace(CTRL_Z, b"").decode("ascii", "replace").strip()
            if line:
                return line

    def _line(self, deadline: float, what: str, echo: str = "") -> str:
        """The next line that is not the echo of ``echo``; logged masked (an echo is never logged:
        it may carry the PIN)."""
        while True:
            line = self._take_line()
            if line is not None and line.upper() != echo.upper():
                self.log.debug("modem: %s", mask_numbers(line))
                return line
            if line is not None:
                continue
            if time.monotonic() >= deadline:
                raise AtTimeout(f"no answer to {what} from the modem")
            self._read()

    def _prompt(self) -> bool:
        """The ``> `` of AT+CMGS at the start of the buffer (a line start): take it."""
        stripped = self._buf.lstrip(b"\r\n")
        if stripped.startswith(b">"):
            self._buf = bytearray(stripped[2:] if stripped.startswith(b"> ") else stripped[1:])
            return True
        return False

    def drop_pending(self) -> None:
        """Read what is waiting and drop it: unsolicited lines from before this command."""
        try:
            waiting = self.port.in_waiting
        except Exception as exc:
            raise LinkLost(f"cannot read from the modem: {exc}") from exc
        if waiting:
            self._read()
        while (line := self._take_line()) is not None:
            self.log.debug("modem (unsolicited): %s", mask_numbers(line))
            self.urcs += 1

    def reset(self) -> None:
        """Forget partial input (after a timeout the line is in an unknown state)."""
        self._buf.clear()

    # -- commands ----------------------------------------------------------------------------------
    def command(
        self, cmd: str, timeout: float, expect: str | None = None, shown: str | None = None
    ) -> list[str]:
        """Run ``cmd`` and return its information lines: those starting with ``expect`` if given,
        else every line that is not an unsolicited report.  Raises :class:`AtError` on an error."""
        shown = shown or cmd
        self.drop_pending()
        self.log.debug("host: %s", shown)
        self.write(cmd.encode("ascii") + b"\r")
        deadline = time.monotonic() + timeout
        info: list[str] = []
        while True:
            line = self._line(deadline, shown, echo=cmd)
            final = parse_final(line)
            if final is not None:
                kind, code, text = final
                if kind == "OK":
                    return info
                raise AtError(shown, kind, code, text)
            wanted = line.startswith(expect) if expect is not None else not is_urc(line)
            if wanted:
                info.append(line)
            else:
                self.urcs += 1

    def send_pdu(self, pdu_hex: str, tpdu_length: int, prompt_timeout: float, timeout: float) -> int | None:
        """``AT+CMGS=<length>``, the prompt, the PDU and Ctrl-Z (§3); returns the message reference
        from ``+CMGS: <mr>``.  Without a prompt in time the command is aborted with ESC."""
        cmd = f"AT+CMGS={tpdu_length}"
        self.drop_pending()
        self.log.debug("host: %s", cmd)
        self.write(cmd.encode("ascii") + b"\r")
        deadline = time.monotonic() + prompt_timeout
        while not self._prompt():
            line = self._take_line()
            if line is not None and line.upper() == cmd.upper():  # the echo
                continue
            if line is None:
                if self._prompt():
                    break
                if time.monotonic() >= deadline:
                    self.write(ESC)
                    raise AtTimeout(f"no '> ' prompt after {cmd} from the modem")
                self._read()
                continue
            final = parse_final(line)
            if final is not None:
                kind, code, text = final
                if kind == "OK":  # no prompt: the modem does not take PDUs this way
                    raise AtError(cmd, "ERROR", None, "the modem answered OK instead of the '> ' prompt")
                raise AtError(cmd, kind, code, text)
            self.log.debug("modem (unsolicited): %s", mask_numbers(line))
            self.urcs += 1
        self.log.debug("host: <PDU of %d octets> Ctrl-Z", tpdu_length)
        self.write(pdu_hex.encode("ascii") + CTRL_Z)
        deadline = time.monotonic() + timeout
        reference: int | None = None
        while True:
            line = self._line(deadline, "the message (after Ctrl-Z)", echo=pdu_hex)
            if line.startswith("+CMGS:"):
                value = line.split(":", 1)[1].split(",")[0].strip()
                reference = int(value) if value.isdigit() else None
                continue
            final = parse_final(line)
            if final is not None:
                kind, code, text = final
                if kind == "OK":
                    return reference
                raise AtError(cmd, kind, code, text)
            self.urcs += 1  # unsolicited
