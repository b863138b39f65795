"""Legacy ThingMagic Mercury4 fixed readers (2005), which speak RQL, an SQL-like text protocol, on
TCP port 8080.  The driver polls with one timed SELECT after another; RQL reports no signal
strength, so reads carry ``rssi: None`` (leave ``presence.min_rssi`` unset for these readers)::

    readers:
      - id: door
        type: mercury4
        host: 192.168.1.40
        antennas: [1, 2]        # empty or absent: every antenna the reader has
        poll_timeout: 250ms     # each SELECT reads this long (RQL ``SET time_out=``)

``python -m vipsense.plugins.readers.mercury4.emulator --port 8080 --tag <EPC>`` runs a stand-in
reader on 127.0.0.1 for trying a profile without the hardware.
"""

from __future__ import annotations

from typing import Any

import attrs

import vipsense
from vipsense.api import Duration, PluginContext, Reader, RegisterType
from vipsense.i18n import _, lazy_gettext

from .protocol import valid_protocol


def _host(inst: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value.strip() or any(c.isspace() for c in value):
        raise ValueError(_("expected a host name or IP address, got {value!r}").format(value=value))


def _port(inst: Any, attribute: attrs.Attribute, value: int) -> None:
    if isinstance(value, bool) or not 1 <= value <= 65535:
        raise ValueError(_("a TCP port is 1-65535, got {value!r}").format(value=value))


def _antennas(inst: Any, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    if any(not 1 <= a <= 16 for a in value) or len(set(value)) != len(value):
        raise ValueError(
            _("antennas must be distinct port numbers 1-16, got {value}").format(value=list(value))
        )


def _poll_timeout(inst: Any, attribute: attrs.Attribute, value: Duration) -> None:
    if not 0.01 <= value <= 60:
        raise ValueError(_("poll_timeout must be 10ms-60s, got {value:g} s").format(value=value))


def _positive(inst: Any, attribute: attrs.Attribute, value: Duration) -> None:
    if value <= 0:
        raise ValueError(
            _("{key} must be longer than 0, got {value:g} s").format(key=attribute.name, value=value)
        )


def _protocol(inst: Any, attribute: attrs.Attribute, value: str) -> None:
    if not valid_protocol(value):
        raise ValueError(_("expected a tag protocol name such as GEN2, got {value!r}").format(value=value))


@attrs.frozen
class Mercury4Settings:
    host: str = attrs.field(validator=_host)  #: the reader's host name or IP address
    port: int = attrs.field(default=8080, validator=_port)
    antennas: tuple[int, ...] = attrs.field(default=(), validator=_antennas)  #: empty: all
    poll_timeout: Duration = attrs.field(default=Duration(0.25), validator=_poll_timeout)
    connect_timeout: Duration = attrs.field(default=Duration(2.0), validator=_positive)
    #: no complete answer for this long: the link is lost
    silence_timeout: Duration = attrs.field(default=Duration(5.0), validator=_positive)
    protocol: str = attrs.field(default="GEN2", validator=_protocol)  #: RQL ``protocol_id``

    def __attrs_post_init__(self) -> None:
        if self.silence_timeout <= self.poll_timeout:
            message = _(
                "silence_timeout ({silence:g} s) must be longer than poll_timeout ({poll:g} s): the "
                "reader answers each poll only after poll_timeout"
            )
            raise ValueError(message.format(silence=self.silence_timeout, poll=self.poll_timeout))


def make_reader(settings: Mercury4Settings, ctx: PluginContext) -> Reader:
    from .driver import Mercury4Reader

    return Mercury4Reader(settings)


@vipsense.hookimpl
def vipsense_register_reader_types(register: RegisterType) -> None:
    register(
        "mercury4",
        Mercury4Settings,
        make_reader,
        summary=lazy_gettext("legacy ThingMagic Mercury4 fixed reader, RQL over TCP (port 8080)"),
    )
