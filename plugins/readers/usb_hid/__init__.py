"""The card-issuing station's desktop reader: a USB "keyboard" that types each card's EPC and Enter.

Left to the operating system, those keystrokes would land in whatever window has focus, card numbers
included.  This driver takes the device away from the kernel's keyboard driver and reads its HID boot
reports itself with pyusb, so the numbers reach only vipsense.  A profile names the device by its USB
ids (``lsusb`` shows them); write them in hex with ``0x``, which YAML reads as integers::

    readers:
      - id: issuing-desk
        type: usb-hid
        vendor_id: 0x08ff
        product_id: 0x0009

Without ``0x``, ``0009`` would be read as the text "0009" and rejected, and ``0010`` as octal 8.

Reading a USB device needs permission to open it.  As a service user, add a udev rule, e.g.
``/etc/udev/rules.d/70-vipsense-reader.rules``::

    SUBSYSTEM=="usb", ATTR{idVendor}=="08ff", ATTR{idProduct}=="0009", MODE="0660", GROUP="plugdev"
"""

from __future__ import annotations

from typing import Any

import attrs

import vipsense
from vipsense.api import Duration, PluginContext, Reader, RegisterType
from vipsense.i18n import _, lazy_gettext

from .keyboard import POSSIBLE_EPC_DIGITS


def _usb_id(inst: Any, attribute: attrs.Attribute, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(_("must be a 16-bit USB id such as 0x08ff, got {value}").format(value=value))


def _not_negative(inst: Any, attribute: attrs.Attribute, value: int) -> None:
    if value < 0:
        raise ValueError(_("must be 0 or more, got {value}").format(value=value))


def _read_timeout(inst: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0.01 <= value <= 5.0:  # also rejects NaN; 0 would mean "wait forever" to libusb
        raise ValueError(_("must be between 10ms and 5s, got {value:g}s").format(value=float(value)))


def _epc_lengths(inst: Any, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    if not value:
        raise ValueError(_("must list at least one length"))
    for n in value:
        if n not in POSSIBLE_EPC_DIGITS:
            message = _(
                "an EPC is a whole number of 16-bit words, 4 to 124 hex digits in steps of 4, got {n}"
            )
            raise ValueError(message.format(n=n))


@attrs.frozen
class UsbHidSettings:
    vendor_id: int = attrs.field(validator=_usb_id)  #: idVendor, e.g. 0x08ff
    product_id: int = attrs.field(validator=_usb_id)  #: idProduct, e.g. 0x0009
    interface: int = attrs.field(default=0, validator=_not_negative)  #: bInterfaceNumber of the keyboard
    antenna: int = attrs.field(default=1, validator=_not_negative)  #: antenna number reported with reads
    #: Longest wait for a report; a stop is noticed within this.
    read_timeout: Duration = attrs.field(default=Duration(0.5), validator=_read_timeout)
    #: Accepted EPC lengths in hex digits (EPC-96 is 24); other lines are dropped and counted.
    epc_lengths: tuple[int, ...] = attrs.field(default=(24, 32), validator=_epc_lengths)


def make_reader(settings: UsbHidSettings, ctx: PluginContext, backend: Any = None) -> Reader:
    """Build the driver; pyusb is imported only here, so ``vipsense plugins`` works without it.

    ``backend`` is a pyusb backend object (``usb.backend.IBackend``); ``None`` lets pyusb pick libusb.
    Profiles cannot set it: tests register a type of their own whose factory passes one."""
    try:
        from .driver import UsbHidReader
    except ImportError as exc:
        raise RuntimeError(
            _("the usb-hid reader needs pyusb: pip install pyusb ({error})").format(error=exc)
        ) from exc
    return UsbHidReader(settings, backend=backend)


@vipsense.hookimpl
def vipsense_register_reader_types(register: RegisterType) -> None:
    register(
        "usb-hid",
        UsbHidSettings,
        make_reader,
        summary=lazy_gettext("desktop reader that types EPCs as a USB keyboard, read privately with pyusb"),
    )
