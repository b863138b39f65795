"""SMS pager notifier: texts staff through a GSM modem ("SMS cat") over pyserial, in PDU mode.

``port`` is a pyserial URL (``/dev/ttyUSB0``, ``socket://host:port``).  With ``emulate:`` instead,
the project's modem emulator runs in-process on a pseudo-terminal (or, where none can be made, a
loopback TCP port) and the real notifier talks to it: demos and tests run this way.  The recipient's
number is the staff member's ``mobile``::

    notifiers:
      - id: pager
        type: sms-modem
        port: /dev/ttyUSB2
        pin: !secret modem_pin
        language: zh

See README.md beside this file for the start-up checks and the error table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

import attrs

import vipsense
from vipsense.api import Duration, Notifier, PluginContext, RegisterType, Secret, SerialPort
from vipsense.i18n import _, lazy_gettext
from vipsense.sms import normalise_number


def _pin(inst: Any, attribute: attrs.Attribute, value: Secret | None) -> None:
    if value is not None and not re.fullmatch(r"\d{4,8}", value.reveal()):
        raise ValueError(_("a SIM PIN is 4 to 8 digits"))  # never the value itself


def _number(inst: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None:
        normalise_number(value)


def _between(low: int, high: int) -> list[Callable[[Any, attrs.Attribute[int], int], Any]]:
    return [attrs.validators.ge(low), attrs.validators.le(high)]


@attrs.frozen
class EmulatedModemSettings:
    """The project's modem emulator in-process, instead of a modem on ``port``."""

    pin: Secret | None = attrs.field(default=None, validator=_pin)  #: the emulated SIM asks for it
    registration: Literal["home", "roaming", "searching", "denied", "none"] = "home"
    signal: int = attrs.field(default=20, validator=_between(0, 99))  #: +CSQ rssi, 0-31 or 99
    operator: str = "CHINA MOBILE"
    smsc: str = attrs.field(default="+8613800210500", validator=_number)  #: on the emulated SIM
    record: str | None = None  #: a JSONL file of the texts "delivered" (relative to the profile)
    show: bool = True  #: print each delivered text on the terminal, numbers masked


@attrs.frozen
class GsmSettings:
    port: SerialPort | None = None  #: device path or pyserial URL of the modem
    emulate: EmulatedModemSettings | None = None  #: instead of ``port``: an emulated modem
    baudrate: int = 115200
    pin: Secret | None = attrs.field(default=None, validator=_pin)  #: entered only if the SIM asks
    smsc: str | None = attrs.field(default=None, validator=_number)  #: None: the SIM's (+CSCA)
    command_timeout: Duration = Duration(5)  #: one ordinary AT command
    send_timeout: Duration = Duration(30)  #: one whole send: start-up checks and every part
    max_parts: int = attrs.field(default=4, validator=_between(1, 10))  #: longer texts end in "…"
    language: Literal["en", "zh", "zh_CN"] | None = None  #: None: the branch's language

    def __attrs_post_init__(self) -> None:
        if (self.port is None) == (self.emulate is None):
            raise ValueError(_("set exactly one of 'port' (a pyserial URL) and 'emulate'"))
        if self.send_timeout < self.command_timeout:
            raise ValueError(_("send_timeout must be at least command_timeout"))


def make_notifier(settings: GsmSettings, ctx: PluginContext) -> Notifier:
    from .notifier import GsmNotifier

    if settings.port is not None:
        notifier = GsmNotifier(settings, ctx, settings.port)
        notifier.warm_up()
        return notifier
    from .emulator import ModemEmulator, ModemLink
    from .receiver import Message

    em = settings.emulate
    assert em is not None

    def show(message: Message) -> None:
        if em.show:
            shown = _("SMS in {n} part(s): {text}").format(n=len(message.parts), text=message.text)
            ctx.output.write(f"    📱 {shown}")

    emulator = ModemEmulator(
        pin=em.pin.reveal() if em.pin else None,
        registration=em.registration,
        operator=em.operator,
        rssi=em.signal,
        smsc=em.smsc,
        record=ctx.resolve(em.record) if em.record else None,
        on_message=show,
    )
    try:
        link = ModemLink.on_pty(emulator)
    except OSError as exc:  # no pseudo-terminals here: a loopback TCP port does as well
        ctx.log.warning("cannot make a pseudo-terminal (%s); emulating the modem on 127.0.0.1", exc)
        link = ModemLink.on_tcp(emulator)
    link.start()
    notifier = GsmNotifier(settings, ctx, link.url, on_close=link.stop)
    notifier.emulator = emulator  # what the emulated phones received, for tests and demos
    notifier.warm_up()
    return notifier


@vipsense.hookimpl
def vipsense_register_notifier_types(register: RegisterType) -> None:
    register(
        "sms-modem",
        GsmSettings,
        make_notifier,
        summary=lazy_gettext(
            "SMS to staff's mobiles through a GSM modem (pyserial URL, PDU mode), or its emulator"
        ),
    )
