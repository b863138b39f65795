"""The ``pda`` notifier's settings: checked when the profile loads, with messages that say what to do.

Importing this module never imports zeroconf, so ``vipsense check`` and ``vipsense plugins`` stay fast.
"""

from __future__ import annotations

from typing import Any

import attrs

from vipsense.api import Duration, Secret
from vipsense.i18n import _, lazy_gettext

from .protocol import role_name

INTERFACES_HINT = lazy_gettext(
    "list the branch LAN address of this hub, e.g. interfaces: [192.168.10.5], or [127.0.0.1] for a "
    "demo; discovery never runs on all interfaces, which would announce the branch on every network "
    "this machine is on"
)


KEY_HINT = lazy_gettext(
    "set the branch key with key: !secret pda_key; only a demo whose PDAs are all emulated (emulate:) "
    "may leave it out, and then gets a key made afresh for each run"
)


def _key(inst: Any, attribute: attrs.Attribute, value: Secret | None) -> None:
    if value is not None and (not isinstance(value, Secret) or not value.reveal().strip()):
        raise ValueError(_("the branch key is empty: {hint}").format(hint=KEY_HINT))  # never the value


def _interfaces(inst: Any, attribute: attrs.Attribute, value: list[str]) -> None:
    import ipaddress

    if not value:
        raise ValueError(_("no address given: {hint}").format(hint=INTERFACES_HINT))
    for address in value:
        try:
            ip = ipaddress.IPv4Address(str(address).strip())
        except ValueError:
            message = _("{address!r} is not an IPv4 address: {hint}")
            raise ValueError(message.format(address=address, hint=INTERFACES_HINT)) from None
        if ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
            message = _("{address!r} is not one interface's address: {hint}")
            raise ValueError(message.format(address=address, hint=INTERFACES_HINT))
    if len(set(value)) != len(value):
        raise ValueError(_("an address is listed twice"))


def _port(inst: Any, attribute: attrs.Attribute, value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(_("a TCP port is 0 (any free port) to 65535, got {value}").format(value=value))


def _positive(inst: Any, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(_("must be greater than 0, got {value:g}").format(value=value))


def _role(inst: Any, attribute: attrs.Attribute, value: str) -> None:
    role_name(value)


def _auto_ack(inst: Any, attribute: attrs.Attribute, value: Duration) -> None:
    if not 0 <= float(value) < 3600:
        raise ValueError(_("auto_ack is 0s to 59m"))


@attrs.frozen
class EmulatedPda:
    """A PDA agent the notifier starts itself, on 127.0.0.1, for a demo."""

    name: str  #: display name (Chinese is fine)
    role: str = attrs.field(validator=_role)  #: lobby, manager or branch
    staff_id: str = attrs.field()  #: whose PDA it plays
    #: "press Enter" this long after each arrival (the agent takes 0 to just under an hour)
    auto_ack: Duration = attrs.field(default=Duration(3), validator=_auto_ack)


@attrs.frozen
class PdaSettings:
    interfaces: list[str] = attrs.field(validator=_interfaces)  #: IPv4 addresses, required
    #: the branch key shared with the PDAs, from ``!secret``; ``None`` (emulated PDAs only): made per run
    key: Secret | None = attrs.field(default=None, validator=_key)
    ack_port: int = attrs.field(default=0, validator=_port)  #: the acknowledgement server; 0: any free
    push_timeout: Duration = attrs.field(default=Duration(2), validator=_positive)  #: one push
    emulate: tuple[EmulatedPda, ...] = ()  #: PDA agents to start as subprocesses (demos)

    def __attrs_post_init__(self) -> None:
        if self.key is None and not self.emulate:
            raise ValueError(_("no branch key: {hint}").format(hint=KEY_HINT))
        if self.emulate and "127.0.0.1" not in [a.strip() for a in self.interfaces]:
            raise ValueError(_("emulated PDAs run on 127.0.0.1: add 127.0.0.1 to interfaces"))
        names = [e.name for e in self.emulate]
        if len(set(names)) != len(names):
            raise ValueError(_("two emulated PDAs have the same name"))
