"""LLRP fixed readers (Impinj Speedway/R700, Zebra FX7500/FX9600, later ThingMagic fixed readers) over
TCP port 5084, through sllurp.

sllurp is GPL-3.0-only, so it is an optional extra (``pip install 'vipsense[llrp]'``) and is imported
only when a profile actually uses ``type: llrp``: this module, and so ``vipsense plugins``, works
without it.  The defaults suit a door (``llrp.md`` §2 "Pitfalls", ``presence.md`` §3 and §6)::

    readers:
      - id: door
        type: llrp
        host: 192.168.1.50
        session: 1                # or impinj_search_mode: 2 (dual target) on Impinj readers
        antennas: [1, 2]
        tx_power_dbm: 27.0
"""

from __future__ import annotations

import math
from typing import Any, Literal

import attrs

import vipsense
from vipsense.api import Duration, PluginContext, Reader, RegisterType
from vipsense.i18n import _, lazy_gettext

MISSING_EXTRA = (
    "LLRP support needs the optional extra: pip install 'vipsense[llrp]' "
    "(sllurp is GPL-3.0-only, so it is not installed by default)"
)


def _not_bool(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    if isinstance(value, bool):
        raise ValueError(_("{key}: expected a number, got {value!r}").format(key=attribute.name, value=value))


def _port(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if not 1 <= value <= 65535:
        raise ValueError(
            _("{key}: a TCP port is 1-65535, got {value}").format(key=attribute.name, value=value)
        )


def _antennas(instance: Any, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    if not value:
        raise ValueError(_("antennas: name at least one antenna port, e.g. [1]"))
    bad = [a for a in value if isinstance(a, bool) or not 1 <= a <= 65535]
    if bad:
        raise ValueError(_("antennas: ports are numbered from 1, got {port!r}").format(port=bad[0]))
    if len(set(value)) != len(value):
        raise ValueError(_("antennas: each port once, got {value}").format(value=list(value)))


def _search_mode(instance: Any, attribute: attrs.Attribute, value: int | None) -> None:
    # Impinj InventorySearchMode: 1 single target, 2 dual target, 3 single target with suppression
    # (TagFocus); 0 "reader selected" is what omitting the setting gives (llrp.md §2, presence.md §3).
    if value is not None and (isinstance(value, bool) or not 1 <= value <= 6):
        raise ValueError(
            _("impinj_search_mode: 1-6 (2 = dual target) or leave it out, got {value!r}").format(value=value)
        )


def _tx_power(instance: Any, attribute: attrs.Attribute, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and 0.0 <= value <= 40.0):
        raise ValueError(
            _("tx_power_dbm: 0-40 dBm (the reader picks its nearest level), got {value!r}").format(
                value=value
            )
        )


def _positive(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not value > 0:
        raise ValueError(
            _("{key}: must be more than 0, got {value!r}").format(key=attribute.name, value=value)
        )


def _at_least_one(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if isinstance(value, bool) or value < 1:
        raise ValueError(_("{key}: must be 1 or more, got {value!r}").format(key=attribute.name, value=value))


@attrs.frozen
class LLRPSettings:
    host: str  #: the reader's address; LLRP allows one client connection per reader (llrp.md §1)
    port: int = attrs.field(default=5084, validator=_port)
    antennas: tuple[int, ...] = attrs.field(default=(1,), validator=_antennas)
    #: Gen2 session: 0 or 1 keep a card that stands in the door answering; sllurp's default 2
    #: reads it once and then it goes silent (presence.md §3).
    session: Literal[0, 1, 2, 3] = attrs.field(default=1, validator=_not_bool)
    impinj_search_mode: int | None = attrs.field(default=None, validator=_search_mode)
    tx_power_dbm: float | None = attrs.field(default=None, validator=_tx_power)  #: None: the maximum
    #: A report per tag read: sllurp's default (N = 0 with a never-ending AISpec) may never report.
    report_every_n_tags: int = attrs.field(default=1, validator=_at_least_one)
    tag_population: int = attrs.field(default=2, validator=_at_least_one)  #: 1-2 cards at a door
    mode_identifier: int | None = None  #: the reader's RF mode (its capabilities list them)
    #: The reader sends a KEEPALIVE this often; 3 intervals of silence count as a lost link.
    keepalive_interval: Duration = attrs.field(default=Duration(5.0), validator=_positive)
    connect_timeout: Duration = attrs.field(default=Duration(5.0), validator=_positive)
    #: Delete every ROSpec and AccessSpec on connect: right when vipsense owns the reader.
    reset_on_connect: bool = True


def make_reader(settings: LLRPSettings, ctx: PluginContext) -> Reader:
    """Import sllurp now, not when the plugin loads, so the base install needs no GPL code."""
    try:
        import sllurp.llrp  # noqa: F401
    except ImportError as exc:
        raise ImportError(MISSING_EXTRA) from exc
    from .driver import LLRPReader

    return LLRPReader(settings)


@vipsense.hookimpl
def vipsense_register_reader_types(register: RegisterType) -> None:
    register(
        "llrp",
        LLRPSettings,
        make_reader,
        summary=lazy_gettext("LLRP fixed reader (Impinj, Zebra, ...) over TCP; needs vipsense[llrp]"),
        requires=("sllurp",),
        extra="llrp",
    )
