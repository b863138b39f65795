"""A protocol-accurate GSM modem ("SMS cat") on a pseudo-terminal, an fd or a loopback TCP socket.

No AT modem simulator exists in Debian or on PyPI (``sms-paging.md`` §7), so the project has its
own.  The notifier and its tests talk to it exactly as to hardware, over a real pty opened with
pyserial.  Two layers, as with the ThingMagic emulator:

* :class:`ModemEmulator`: the modem.  ``feed(bytes)`` returns the bytes it answers: echo (``ATE1``),
  information lines, final result codes, the ``> `` prompt of ``AT+CMGS``.  It decodes every PDU it
  is given with :mod:`.receiver` (not with the sender's encoder), answers ``+CMS ERROR: 304`` to a
  bad one, reassembles concatenated parts and records whole messages in :attr:`received` (and a JSONL
  file).  Faults on demand: ``+CMS ERROR`` codes, a SIM that wants a PIN or is absent or blocked, no
  network, unsolicited result codes between a command and its ``OK``, a modem that stalls.
* :class:`ModemLink`: runs an emulator behind a pty (``on_pty``), an fd (``on_fd``, e.g. one end of a
  socat pair) or a loopback TCP server (``on_tcp``, for pyserial ``socket://``) on a thread.

Commands: ``AT``, ``ATZ``, ``AT&F``, ``ATE0/1``, ``ATI``, ``ATV1``, ``ATQ0``, ``+CGMI/+CGMM/+CGMR/+CGSN/
+CIMI`` (and ``+GMI``…), ``+CSQ``, ``+CREG``, ``+COPS``, ``+CPIN``, ``+CFUN``, ``+CMEE``, ``+CMGF``,
``+CSCA``, ``+CSCS``, ``+CSMP``, ``+CPMS``, ``+CNMI``, ``+CLAC``, and ``+CMGS`` in PDU and text mode.
Anything else answers ``ERROR``, as modems do.

Command line::

    python -m vipsense.plugins.notifiers.sms_modem.emulator --pty
    python -m vipsense.plugins.notifiers.sms_modem.emulator --tcp 7001 --pin 1234 --record sms.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import re
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

from vipsense.shutdown import Shutdown
from vipsense.sms import mask_numbers
from vipsense.testing import EmulatorLink

from .errors import cme_error, cms_error
from .receiver import Inbox, Message, Submit, decode_submit

CTRL_Z, ESC = 0x1A, 0x1B
MAX_LINE = 4096  #: a command line longer than this is dropped, as a modem's buffer would
MAX_TPDU = 164  #: octets: the largest SMS-SUBMIT (TS 23.040)
PUK = "12345678"
REGISTRATION_WORDS = {"none": 0, "home": 1, "searching": 2, "denied": 3, "unknown": 4, "roaming": 5}
COMMANDS = (
    "AT", "ATZ", "AT&F", "ATE", "ATI", "ATV", "ATQ", "AT+CGMI", "AT+CGMM", "AT+CGMR", "AT+CGSN", "AT+CIMI",
    "AT+GMI", "AT+GMM", "AT+GMR", "AT+GSN", "AT+CSQ", "AT+CREG", "AT+COPS", "AT+CPIN", "AT+CFUN",
    "AT+CMEE", "AT+CMGF", "AT+CSCA", "AT+CSCS", "AT+CSMP", "AT+CPMS", "AT+CNMI", "AT+CLAC", "AT+CMGS",
)  # fmt: skip


Handler = Callable[["ModemEmulator", str, str], bytes]
_OK = b"\r\nOK\r\n"


def _quoted(args: str) -> list[str]:
    """``"SM","ME",1`` -> ``["SM", "ME", "1"]``."""
    return [a.strip().strip('"') for a in args.split(",")] if args else []


def _ident(attr: str, needs_sim: bool = False) -> Handler:
    """+CGMI and friends: one line with a fixed value."""

    def handler(self: ModemEmulator, form: str, args: str) -> bytes:
        if form == "=?":
            return self._final()
        if form != "exec":
            return self._error()
        if needs_sim and self.sim != "ready":
            return self._cme(10 if self.sim == "absent" else 11)
        return self._final(getattr(self, attr))

    return handler


def _setting(attr: str, choices: tuple[str, ...], test: str) -> Handler:
    """A setting read with ``?`` and set with ``=`` (AT+CMEE, AT+CMGF, AT+CSCS, AT+CFUN)."""

    def handler(self: ModemEmulator, form: str, args: str) -> bytes:
        name = "+" + attr.upper()
        if form == "?":
            value = getattr(self, attr)
            return self._final(f'{name}: "{value}"' if isinstance(value, str) else f"{name}: {value}")
        if form == "=?":
            return self._final(f"{name}: {test}")
        value = args.split(",")[0].strip().strip('"').upper() if form == "set" else ""
        if value not in choices:
            return self._cme(3)
        setattr(self, attr, int(value) if value.isdigit() else value)
        return self._final()

    return handler


def _accept(reply: str, test: str = "") -> Handler:
    """A command whose settings do not matter here: answered like a modem, otherwise ignored."""

    def handler(self: ModemEmulator, form: str, args: str) -> bytes:
        if form == "?":
            return self._final(reply)
        if form == "=?" and test:
            return self._final(test)
        return self._final()

    return handler


class ModemEmulator:
    """The modem's state.  Not thread-safe: :class:`ModemLink` serialises access."""

    manufacturer = "VIPSENSE"
    model = "GSM-EMU-1"
    revision = "1.0.0"
    imei = "358240051111110"  #: fictional
    imsi = "460001234567890"  #: fictional, MCC 460 (China)

    def __init__(
        self,
        *,
        pin: str | None = None,
        sim: str = "ready",
        registration: str | int = "home",
        operator: str = "CHINA MOBILE",
        rssi: int = 20,
        smsc: str = "+8613800210500",
        record: Path | str | None = None,
        on_message: Callable[[Message], None] | None = None,
        sticky_echo: bool = False,
    ) -> None:
        self.sticky_echo = sticky_echo  #: like some modems, keep echoing whatever ATE0 says
        self.pin = pin  #: with a PIN the SIM starts locked ("SIM PIN") after every power-up
        self.sim_fault = sim  #: "ready", "absent" or "puk"
        self.registration = registration  #: a word of REGISTRATION_WORDS or a +CREG <stat>
        self.operator = operator
        self.rssi = rssi  #: +CSQ 0-31, 99 unknown
        self.inbox = Inbox(Path(record) if record else None, on_message)
        self.commands: list[str] = []  #: every command line, the PIN masked
        self.stall = ""  #: "all": answer nothing at all; "send": take a PDU but never answer it
        self._cms_errors: deque[int | None] = deque()
        self._urcs: list[str] = []
        self._mr = 0
        self._smsc_default = smsc
        self.power_cycle()

    # -- state -----------------------------------------------------------------------------------
    def power_cycle(self) -> None:
        """Power off and on: settings back to defaults, the SIM locked again if it has a PIN."""
        self.echo = True
        self.cmee = 0
        self.cmgf = 0
        self.cscs = "GSM"
        self.creg_n = 0
        self.cfun = 1
        self.smsc = self._smsc_default
        self.pin_tries = 3
        self.sim = {"absent": "absent", "puk": "puk"}.get(self.sim_fault, "pin" if self.pin else "ready")
        self.new_line()

    def new_line(self) -> None:
        """Forget half-typed input (a new TCP client)."""
        self._buf = bytearray()
        self._mode = "command"  #: "command", "pdu" or "text"
        self._pending_length = 0
        self._pending_number = ""

    @property
    def received(self) -> list[Message]:
        """Whole messages delivered, in order (concatenated ones once every part came)."""
        return self.inbox.messages

    @property
    def stat(self) -> int:
        if self.sim != "ready" or self.cfun == 0:
            return 0
        value = self.registration
        return REGISTRATION_WORDS[value] if isinstance(value, str) else int(value)

    @property
    def registered(self) -> bool:
        return self.stat in (1, 5)

    def fail_sends(self, code: int, times: int = 1, after: int = 0) -> None:
        """After ``after`` more parts go through, the next ``times`` are answered ``+CMS ERROR: code``."""
        self._cms_errors.extend([None] * after + [code] * times)

    def queue_urc(self, *lines: str) -> None:
        """Send these unsolicited lines just before the next final result code."""
        self._urcs.extend(lines)

    # -- bytes -----------------------------------------------------------------------------------
    def feed(self, data: bytes) -> bytes:
        """Bytes from the host in, bytes to the host out."""
        if self.stall == "all":
            return b""
        out = bytearray(data if self.echo else b"")
        self._buf += data
        while True:
            if self._mode == "command":
                end = self._buf.find(b"\r")
                if end < 0:
                    if len(self._buf) > MAX_LINE:
                        self._buf.clear()
                    return bytes(out)
                line = bytes(b for b in self._buf[:end] if b >= 0x20).strip()  # ESC, LF: ignored
                del self._buf[: end + 1]
                if line:
                    out += self._command(line.decode("ascii", "replace"))
                continue
            m = re.search(rb"[\x1a\x1b]", self._buf)
            if m is None:
                if len(self._buf) > MAX_LINE:
                    self.new_line()
                return bytes(out)
            body, terminator = bytes(self._buf[: m.start()]), self._buf[m.start()]
            del self._buf[: m.end()]
            mode, self._mode = self._mode, "command"
            if terminator == ESC:
                out += self._final()  # sending cancelled
            elif mode == "pdu":
                out += self._submit_pdu(body)
            else:
                out += self._submit_text(body)

    # -- responses -------------------------------------------------------------------------------
    @staticmethod
    def _lines(*lines: str) -> bytes:
        return b"".join(b"\r\n" + line.encode("utf-8") + b"\r\n" for line in lines)

    def _final(self, *info: str, result: str = "OK") -> bytes:
        urcs, self._urcs = self._urcs, []
        return self._lines(*info, *urcs, result)

    def _error(self) -> bytes:
        return self._final(result="ERROR")

    def _cms(self, code: int) -> bytes:
        if self.cmee == 0:
            return self._error()
        return self._final(result=f"+CMS ERROR: {code if self.cmee == 1 else cms_error(code).message}")

    def _cme(self, code: int) -> bytes:
        if self.cmee == 0:
            return self._error()
        return self._final(result=f"+CME ERROR: {code if self.cmee == 1 else cme_error(code).message}")

    # -- commands --------------------------------------------------------------------------------
    def _command(self, line: str) -> bytes:
        self.commands.append(re.sub(r"(?i)(\+CPIN=).*", r'\1"****"', line))
        if line[:2].upper() != "AT":
            return b""  # line noise: a modem ignores what does not start with AT
        rest = line[2:].strip()
        parts = [p.strip() for p in rest.split(";")] if rest else [""]
        out = bytearray()
        for i, part in enumerate(parts):
            if i and part[:1] not in ("+", "^"):
                return self._error()
            result = self._one(part)
            if i == len(parts) - 1 or not result.endswith(_OK):
                return bytes(out + result)
            out += result[: -len(_OK)]  # chained commands: one final result code at the end
        return bytes(out)

    def _one(self, cmd: str) -> bytes:
        if not cmd:
            return self._final()
        if cmd[0] not in "+^":
            return self._basic(cmd)
        m = re.match(r"^([+^][A-Za-z]+)(=\?|\?|=(.*))?$", cmd)
        handler = self._EXTENDED.get(m.group(1).upper()) if m else None
        if m is None or handler is None:
            return self._error()
        form = {"": "exec", "?": "?", "=?": "=?"}.get(m.group(2) or "", "set")
        return handler(self, form, m.group(3) or "")

    def _basic(self, cmd: str) -> bytes:
        found = list(re.finditer(r"(&?[A-Za-z])(\d*)", cmd))
        if "".join(m.group() for m in found) != cmd:
            return self._error()
        info: list[str] = []
        for m in found:
            letter, value = m.group(1).upper(), m.group(2)
            if letter == "E":
                self.echo = value != "0" or self.sticky_echo
            elif letter in ("Z", "&F"):
                self.echo, self.cmee, self.cmgf, self.cscs = True, 0, 0, "GSM"
            elif letter == "I":
                info = [self.manufacturer, self.model, f"Revision: {self.revision}"]
            elif letter not in ("V", "Q", "X", "&D", "&C", "&W", "L", "M"):
                return self._error()
        return self._final(*info)

    def _csq(self, form: str, args: str) -> bytes:
        if form == "=?":
            return self._final("+CSQ: (0-31,99),(0-7,99)")
        return self._final(f"+CSQ: {self.rssi},99") if form == "exec" else self._error()

    def _creg(self, form: str, args: str) -> bytes:
        if form == "?":
            return self._final(f"+CREG: {self.creg_n},{self.stat}")
        if form == "=?":
            return self._final("+CREG: (0-2)")
        if form == "set" and args in ("0", "1", "2"):
            self.creg_n = int(args)
            return self._final()
        return self._cme(3)

    def _cops(self, form: str, args: str) -> bytes:
        if form == "?":
            return self._final(f'+COPS: 0,0,"{self.operator}"' if self.registered else "+COPS: 0")
        if form == "=?":
            return self._final(f'+COPS: (2,"{self.operator}","CMCC","46000"),,(0-4),(0-2)')
        return self._final() if form == "set" else self._error()

    def _cpin(self, form: str, args: str) -> bytes:
        if form == "=?":
            return self._final()
        if self.sim == "absent":
            return self._cme(10)
        if form == "?":
            return self._final("+CPIN: " + {"ready": "READY", "pin": "SIM PIN", "puk": "SIM PUK"}[self.sim])
        if form != "set":
            return self._error()
        values = _quoted(args)
        if self.sim == "puk":  # AT+CPIN="<puk>","<new pin>"
            if len(values) == 2 and values[0] == PUK:
                self.pin, self.sim, self.pin_tries = values[1], "ready", 3
                return self._final()
            return self._cme(16)
        if self.sim == "ready":
            return self._cme(3)
        if values[:1] == [self.pin]:
            self.sim = "ready"
            return self._final()
        self.pin_tries -= 1
        if self.pin_tries == 0:
            self.sim = "puk"
        return self._cme(16)

    def _csca(self, form: str, args: str) -> bytes:
        if form == "?":
            return self._final(f'+CSCA: "{self.smsc}",{145 if self.smsc.startswith("+") else 129}')
        if form == "set" and args:
            self.smsc = _quoted(args)[0]
            return self._final()
        return self._final() if form == "=?" else self._error()

    def _cpms(self, form: str, args: str) -> bytes:
        if form == "?":
            return self._final('+CPMS: "SM",0,20,"SM",0,20,"SM",0,20')
        if form == "=?":
            return self._final('+CPMS: ("SM","ME"),("SM","ME"),("SM","ME")')
        return self._final("+CPMS: 0,20,0,20,0,20") if form == "set" else self._error()

    def _clac(self, form: str, args: str) -> bytes:
        return self._final(*COMMANDS) if form == "exec" else self._error()

    def _cmgs(self, form: str, args: str) -> bytes:
        if form != "set":
            return self._final() if form == "=?" else self._error()
        if self.sim != "ready":
            return self._cms({"absent": 310, "puk": 316}.get(self.sim, 311))
        if self.cmgf == 0:
            if not args.strip().isdigit() or not 1 <= int(args) <= MAX_TPDU:
                return self._cms(304)
            self._mode, self._pending_length = "pdu", int(args)
            return b"\r\n> "
        values = _quoted(args)
        number = values[0] if values else ""
        if self.cscs == "UCS2":
            with contextlib.suppress(ValueError):
                number = bytes.fromhex(number).decode("utf-16-be")
        if not re.fullmatch(r"\+?\d{1,20}", number):
            return self._cms(305)
        self._mode, self._pending_number = "text", number
        return b"\r\n> "

    # -- delivering ------------------------------------------------------------------------------
    def _deliver(self, part: Submit) -> bytes:
        code = self._cms_errors.popleft() if self._cms_errors else None
        if code is not None:
            return self._cms(code)
        if not self.registered:
            return self._cms(331)
        if self.stall == "send":
            return b""  # the network never answers
        self._mr = (self._mr + 1) % 256
        self.inbox.add(part, self._mr)
        return self._final(f"+CMGS: {self._mr}")

    def _submit_pdu(self, body: bytes) -> bytes:
        try:
            part = decode_submit(bytes.fromhex(body.decode("ascii").strip()), self._pending_length)
        except (ValueError, UnicodeDecodeError):  # BadPdu is a ValueError too
            return self._cms(304)
        if part.smsc is None and not self.smsc:
            return self._cms(330)
        return self._deliver(part)

    def _submit_text(self, body: bytes) -> bytes:
        text = body.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
        if self.cscs == "UCS2":
            try:
                text = bytes.fromhex(text.strip()).decode("utf-16-be")
            except ValueError:
                return self._cms(305)
        if not self.smsc:
            return self._cms(330)
        return self._deliver(Submit(number=self._pending_number, text=text, alphabet="text"))

    _EXTENDED: ClassVar[dict[str, Handler]] = {
        **dict.fromkeys(("+CGMI", "+GMI"), _ident("manufacturer")),
        **dict.fromkeys(("+CGMM", "+GMM"), _ident("model")),
        **dict.fromkeys(("+CGMR", "+GMR"), _ident("revision")),
        **dict.fromkeys(("+CGSN", "+GSN"), _ident("imei")),
        "+CIMI": _ident("imsi", needs_sim=True),
        "+CSQ": _csq,
        "+CREG": _creg,
        "+COPS": _cops,
        "+CPIN": _cpin,
        "+CMEE": _setting("cmee", ("0", "1", "2"), "(0-2)"),
        "+CMGF": _setting("cmgf", ("0", "1"), "(0,1)"),
        "+CSCS": _setting("cscs", ("GSM", "IRA", "UCS2"), '("GSM","IRA","UCS2")'),
        "+CFUN": _setting("cfun", ("0", "1"), "(0,1),(0,1)"),
        "+CSCA": _csca,
        "+CSMP": _accept("+CSMP: 17,167,0,0"),
        "+CNMI": _accept("+CNMI: 2,1,0,0,0", "+CNMI: (0-2),(0-3),(0-3),(0-2),(0,1)"),
        "+CPMS": _cpms,
        "+CLAC": _clac,
        "+CMGS": _cmgs,
    }


# -- the link --------------------------------------------------------------------------------------------
class ModemLink(EmulatorLink[ModemEmulator]):
    """Runs a :class:`ModemEmulator` behind a real pty (``on_pty``), an fd (``on_fd``, e.g. one end of
    a socat pair) or a loopback TCP server (``on_tcp``) on a background thread.

    The line (construction, ``url``, ``start``/``stop``, ``inject``, ``call``) is
    :class:`vipsense.testing.EmulatorLink`, the same for any device; this adds the modem's loop."""

    thread_name = "gsm-modem-emulator"

    def urc(self, line: str) -> None:
        """Send an unsolicited result code now, e.g. ``RING`` or ``+CMTI: "SM",1``."""
        self.inject(b"\r\n" + line.encode() + b"\r\n")

    def reboot(self) -> None:
        """The modem loses power and comes back: defaults again, the SIM locked if it has a PIN."""
        with self.lock:
            self.emulator.power_cycle()

    def set_silent(self, silent: bool) -> None:
        """Hang (True) or recover (False): input is read and nothing is answered, not even an echo."""
        self.call(lambda em: setattr(em, "stall", "all" if silent else ""))

    def serve(self) -> None:
        while not self.stopping.is_set():
            chunk = self.read(0.02)
            with self.lock:
                if self.fresh_line():  # a new TCP client: a fresh line
                    self.emulator.new_line()
                self.write(self.emulator.feed(chunk) if chunk else b"")


# -- command line ----------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vipsense.plugins.notifiers.sms_modem.emulator",
        description="An emulated GSM modem (AT commands, SMS in PDU and text mode) on a pty or TCP port.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="create a pseudo-terminal and print its path")
    where.add_argument("--tcp", type=int, metavar="PORT", help="listen on 127.0.0.1:PORT (0 = any free port)")
    parser.add_argument("--pin", help="the SIM asks for this PIN after power-up")
    parser.add_argument("--sim", choices=("ready", "absent", "puk"), default="ready", help="SIM fault")
    parser.add_argument("--registration", choices=sorted(REGISTRATION_WORDS), default="home")
    parser.add_argument("--signal", type=int, default=20, metavar="RSSI", help="+CSQ rssi 0-31 (default 20)")
    parser.add_argument("--operator", default="CHINA MOBILE")
    parser.add_argument("--smsc", default="+8613800210500", help="the SIM's SMS centre ('' for none)")
    parser.add_argument("--cms-error", type=int, metavar="CODE", help="answer every message with this error")
    parser.add_argument("--record", metavar="FILE", help="append each message received to FILE as JSON")
    args = parser.parse_args(argv)

    def show(message: Message) -> None:
        where = f"SMS to {mask_numbers(message.number)} in {len(message.parts)} part(s)"
        print(f"{where}: {message.text}", flush=True)

    emulator = ModemEmulator(
        pin=args.pin,
        sim=args.sim,
        registration=args.registration,
        operator=args.operator,
        rssi=args.signal,
        smsc=args.smsc,
        record=args.record,
        on_message=show,
    )
    if args.cms_error is not None:
        emulator.fail_sends(args.cms_error, times=1 << 30)
    link = ModemLink.on_pty(emulator) if args.pty else ModemLink.on_tcp(emulator, port=args.tcp)
    stop = Shutdown.on_signals()
    with link:
        print(link.url, flush=True)
        print("emulating a GSM modem; Ctrl-C or SIGTERM stops", flush=True)
        stop.wait_until_requested()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
