"""One GSM modem behind a pyserial URL: open it, run the start-up checks, send PDUs, keep health.

The start-up checks follow ``sms-paging.md`` §1: ``AT``, ``ATE0``, ``AT+CMEE=1`` (numeric errors),
``AT+CPIN?`` (and the PIN if the SIM asks), ``AT+CREG?`` (home or roaming), ``AT+CSQ``, ``AT+CSCA?``
and ``AT+CMGF=0`` (PDU mode, §3).  The modem is "ready" only when SIM, registration, SMS centre and
PDU mode are.  Every check's result is kept in :attr:`Modem.health` for the status page.

A PIN the SIM refused is never sent again by this process: three wrong tries block the SIM.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from vipsense.api import Secret

from .at import AtChannel, AtError, AtTimeout, LinkLost

#: ``+CREG`` <stat> (TS 27.007 §7.2): words, and whether the modem can send.
REGISTRATION = {
    0: ("not registered, not searching", False),
    1: ("registered (home)", True),
    2: ("searching", False),
    3: ("registration denied", False),
    4: ("unknown", False),
    5: ("registered (roaming)", True),
    6: ("registered for SMS only (home)", True),
    7: ("registered for SMS only (roaming)", True),
}
RECHECK_AFTER = 60.0  #: seconds: registration and signal are asked again before a send after this
ESC_SETTLE = 0.1  #: seconds for a modem to answer the ESC that starts every start-up
READ_TIMEOUT = 0.05  #: one pyserial read; the AT deadlines bound the waits


class ModemNotReady(Exception):
    """A start-up check failed.  ``retry`` says whether trying again later can help."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


def signal_quality(rssi: int) -> tuple[int | None, int | None, str]:
    """``+CSQ`` rssi (0-31, 99 unknown; TS 27.007 §8.5) as dBm, bars 0-4 and a word."""
    if not 0 <= rssi <= 31:
        return None, None, "unknown"
    dbm = -113 + 2 * rssi
    for floor, bars, word in ((20, 4, "excellent"), (15, 3, "good"), (10, 2, "ok"), (2, 1, "marginal")):
        if rssi >= floor:
            return dbm, bars, word
    return dbm, 0, "none"


def _fields(line: str) -> list[str]:
    """``+CREG: 0,1`` -> ``["0", "1"]`` (quotes removed)."""
    return [f.strip().strip('"') for f in line.split(":", 1)[1].split(",")]


def _decode_ucs2_hex(value: str) -> str:
    """``+CSCA`` answers in the character set of ``+CSCS``: undo UCS2 hex if that is what came."""
    if len(value) >= 8 and len(value) % 4 == 0 and value.startswith("00"):
        with contextlib.suppress(ValueError):
            return bytes.fromhex(value).decode("utf-16-be")
    return value


class Modem:
    """Not thread-safe: the notifier's worker thread uses it; :meth:`close` may come from another."""

    def __init__(
        self,
        url: str,
        *,
        baudrate: int,
        pin: Secret | None,
        smsc: str | None,
        command_timeout: float,
        log: logging.Logger,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.baudrate = baudrate
        self.pin = pin
        self.smsc = smsc
        self.command_timeout = command_timeout
        self.log = log
        self.wall = wall
        self.port: Any = None
        self.channel: AtChannel | None = None
        self.ready = False
        self.checked_mono = 0.0
        self.pin_refused = False
        self.shut = False  #: closed for good (the branch stopped): never opened again
        #: what the status page shows; replaced whole, so readers on other threads see one version
        self.health: dict[str, Any] = {"state": "not connected", "port": url}

    # -- port ------------------------------------------------------------------------------------
    def _open(self) -> None:
        import serial  # pyserial: imported when a modem notifier starts, not when plugins load

        if self.shut:
            raise LinkLost("the notifier is closed")
        try:
            self.port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=READ_TIMEOUT)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkLost(f"cannot open {self.url}: {exc}") from exc
        self.channel = AtChannel(self.port, self.log)

    def close(self, reason: str = "", *, final: bool = False) -> None:
        """Close the port; the next :meth:`ensure_ready` opens it again and re-runs the checks,
        unless ``final``."""
        self.shut = self.shut or final
        port, self.port, self.channel, self.ready = self.port, None, None, False
        if port is not None:
            with contextlib.suppress(Exception):  # unblock a read on another thread first
                port.cancel_read()
            with contextlib.suppress(Exception):  # already gone with the adapter
                port.close()
        if reason:
            self.note(state="disconnected", last_error=reason)

    def note(self, **facts: Any) -> None:
        self.health = {**self.health, **facts}

    # -- checks ----------------------------------------------------------------------------------
    def _cmd(
        self, cmd: str, deadline: float, expect: str | None = None, shown: str | None = None
    ) -> list[str]:
        left = min(self.command_timeout, deadline - time.monotonic())
        if left <= 0:
            raise AtTimeout(f"no time left for {shown or cmd}")
        return self._channel().command(cmd, left, expect=expect, shown=shown)

    def _channel(self) -> AtChannel:
        channel = self.channel
        if channel is None:  # closed from another thread (the branch is stopping)
            raise LinkLost("the modem port was closed")
        return channel

    def ensure_ready(self, deadline: float) -> None:
        """Open the port and run the start-up checks if needed; re-ask registration and signal if
        the last check is old.  Raises :class:`ModemNotReady`, :class:`AtTimeout`, :class:`LinkLost`."""
        fresh = self.port is None
        if fresh:
            self._open()
        if not self.ready:
            self.startup(deadline, escape=fresh)
        elif time.monotonic() - self.checked_mono > RECHECK_AFTER:
            self._check_registration(deadline)
            self._check_signal(deadline)
            self.checked_mono = time.monotonic()

    def startup(self, deadline: float, escape: bool = True) -> None:
        """The checks of §1.  ``escape`` first, on a port just opened: a previous process may have
        left the modem waiting for a PDU."""
        self.ready = False
        self.note(state="starting")
        channel = self._channel()
        if escape:
            channel.write(b"\x1b")  # abort a half-typed AT+CMGS
            time.sleep(ESC_SETTLE)
            channel.reset()
            channel.drop_pending()  # the OK that an aborted AT+CMGS answers
        self._cmd("AT", deadline)
        self._cmd("ATE0", deadline)
        try:
            self._cmd("AT+CMEE=1", deadline)
        except AtError:
            self.log.warning("the modem refuses AT+CMEE=1: errors will be a bare ERROR")
        self._identify(deadline)
        self._check_sim(deadline)
        self._check_registration(deadline)
        self._check_signal(deadline)
        self._check_smsc(deadline)
        try:
            self._cmd("AT+CMGF=0", deadline)
        except AtError as exc:
            message = f"the modem refuses PDU mode (AT+CMGF=0): {exc.info.message}"
            raise ModemNotReady(message, retry=False) from exc
        self.ready = True
        self.checked_mono = time.monotonic()
        self.note(state="ready", pdu_mode=True, checked_at=self.wall(), last_error="")

    def _identify(self, deadline: float) -> None:
        parts = []
        for cmd in ("AT+CGMI", "AT+CGMM", "AT+CGMR"):
            with contextlib.suppress(AtError):
                parts += [line.split(":", 1)[-1].strip() for line in self._cmd(cmd, deadline)[:1]]
        self.note(modem=" ".join(parts))

    def _not_ready(self, message: str, retry: bool, **facts: Any) -> ModemNotReady:
        self.note(state="not ready", last_error=message, checked_at=self.wall(), **facts)
        return ModemNotReady(message, retry=retry)

    def _sim_state(self, deadline: float) -> str:
        try:
            lines = self._cmd("AT+CPIN?", deadline, expect="+CPIN:")
        except AtError as exc:  # +CME ERROR 10: no SIM; 13: SIM failure; 14: busy
            raise self._not_ready(f"SIM: {exc.info.message}", exc.info.retry, sim="error") from exc
        if not lines:
            raise self._not_ready("SIM: the modem gave no +CPIN answer", True, sim="unknown")
        return lines[-1].split(":", 1)[1].strip().upper()

    def _check_sim(self, deadline: float) -> None:
        state = self._sim_state(deadline)
        if state == "SIM PIN":
            self._enter_pin(deadline)
            state = self._sim_state(deadline)
            end = min(deadline, time.monotonic() + self.command_timeout)
            while state != "READY" and time.monotonic() < end:  # some SIMs take a moment
                time.sleep(0.1)
                state = self._sim_state(deadline)
        if state == "READY":
            self.note(sim="ready")
            return
        if state == "SIM PUK":
            raise self._not_ready(
                "SIM PUK required: the SIM is blocked after wrong PINs; unblock it in a phone",
                False,
                sim="PUK required",
            )
        raise self._not_ready(f"the SIM asks for {state}", False, sim=state)

    def _enter_pin(self, deadline: float) -> None:
        if self.pin is None:
            message = "SIM PIN required: set 'pin' (a !secret) in the notifier's settings"
            raise self._not_ready(message, False, sim="PIN required")
        if self.pin_refused:
            message = (
                "SIM PIN was refused before; not tried again, or the SIM would block: fix 'pin', restart"
            )
            raise self._not_ready(message, False, sim="PIN refused")
        try:
            self._cmd(f'AT+CPIN="{self.pin.reveal()}"', deadline, shown='AT+CPIN="****"')
        except AtError as exc:
            if exc.kind == "CME" and exc.code in (16, 12):  # incorrect password / PUK now
                self.pin_refused = True
                message = f"SIM PIN refused: {exc.info.message}"
                raise self._not_ready(message, False, sim="PIN refused") from exc
            raise self._not_ready(f"SIM PIN: {exc.info.message}", exc.info.retry, sim="PIN required") from exc
        self.log.info("SIM PIN accepted")

    def _check_registration(self, deadline: float) -> None:
        end = min(deadline, time.monotonic() + self.command_timeout)
        while True:
            try:
                lines = self._cmd("AT+CREG?", deadline, expect="+CREG:")
            except AtError as exc:
                message = f"network: {exc.info.message}"
                raise self._not_ready(message, exc.info.retry, network="error") from exc
            values = [int(f) for f in _fields(lines[-1]) if f.isdigit()] if lines else []
            stat = values[1] if len(values) >= 2 else (values[0] if values else 4)
            word, ok = REGISTRATION.get(stat, (f"state {stat}", False))
            if ok:
                self.note(network=word, operator=self._operator(deadline))
                return
            if stat in (2, 4) and time.monotonic() + 0.25 < end:  # still looking: wait a little
                time.sleep(0.25)
                continue
            if stat == 3:
                raise self._not_ready(
                    "network registration denied: is the SIM active and allowed on this network?",
                    False,
                    network=word,
                )
            raise self._not_ready(f"not registered on the network ({word})", True, network=word)

    def _operator(self, deadline: float) -> str:
        with contextlib.suppress(AtError):
            lines = self._cmd("AT+COPS?", deadline, expect="+COPS:")
            fields = _fields(lines[-1]) if lines else []
            if len(fields) >= 3:
                return fields[2]
        return ""

    def _check_signal(self, deadline: float) -> None:
        rssi = 99
        with contextlib.suppress(AtError, ValueError, IndexError):
            rssi = int(_fields(self._cmd("AT+CSQ", deadline, expect="+CSQ:")[-1])[0])
        dbm, bars, word = signal_quality(rssi)
        self.note(signal_dbm=dbm, signal_bars=bars, signal=word)
        if bars == 0:
            self.log.warning("modem signal is very weak (%s dBm)", dbm)

    def _check_smsc(self, deadline: float) -> None:
        if self.smsc:
            self.note(smsc=f"{self.smsc} (from settings)")
            return
        try:
            lines = self._cmd("AT+CSCA?", deadline, expect="+CSCA:")
        except AtError:
            self.note(smsc="unknown (the modem does not answer AT+CSCA?)")
            return
        number = _decode_ucs2_hex(_fields(lines[-1])[0]) if lines else ""
        if not number:
            raise self._not_ready("no SMS centre address on the SIM: set 'smsc'", False, smsc="none")
        self.note(smsc=number)

    # -- sending ---------------------------------------------------------------------------------
    def send_pdu(self, pdu_hex: str, tpdu_length: int, deadline: float) -> int | None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AtTimeout("no time left to send the message")
        return self._channel().send_pdu(pdu_hex, tpdu_length, min(self.command_timeout, left), left)
