"""The ``usb-hid`` reader: claims the keyboard interface from the kernel and reads its reports.

One ``run`` is one USB session: find the device, detach the kernel's keyboard driver (so keystrokes stop
reaching the focused window), claim the interface, read reports from its interrupt IN endpoint until the
branch stops, then give the interface back to the kernel.  A missing or unplugged device makes ``run``
raise; the core then retries with backoff, which is how a reader plugged back in is picked up again.

pyusb facts used here (pyusb 1.3 ``usb/core.py`` and ``usb/backend/libusb1.py``): ``Device.read`` raises
``USBTimeoutError`` when nothing arrived within the timeout and ``USBError`` with errno ENODEV
("No such device") once the device is gone; libusb's access error arrives as errno EACCES.
"""

from __future__ import annotations

import contextlib
import errno
import time
from typing import TYPE_CHECKING, Any

import usb.core
import usb.util

from vipsense.api import Reader, ReaderContext

from .keyboard import REPORT_SIZE, EpcLineDecoder

if TYPE_CHECKING:
    from . import UsbHidSettings

HID_CLASS = 3
BOOT_SUBCLASS = 1
# HID 1.11 §7.2: class requests, host to device, addressed to the interface (bmRequestType 0x21).
HID_CLASS_OUT = 0x21
SET_IDLE = 0x0A  #: wValue high byte 0: report only on change, not every idle period
SET_PROTOCOL = 0x0B  #: wValue 0 selects the 8-byte boot report format
BOOT_PROTOCOL = 0
CONTROL_TIMEOUT_MS = 1000

#: A line not ended within this (seconds) was cut off; a reader types a whole EPC far faster.
STALE_LINE = 1.0
LOG_EVERY = 1.0  #: seconds between log lines about the same kind of bad input


def _is_interrupt_in(ep: Any) -> bool:
    return (
        usb.util.endpoint_direction(ep.bEndpointAddress) == usb.util.ENDPOINT_IN
        and usb.util.endpoint_type(ep.bmAttributes) == usb.util.ENDPOINT_TYPE_INTR
    )


def _unplugged(exc: usb.core.USBError) -> bool:
    return exc.errno == errno.ENODEV or "No such device" in str(exc)


class _Throttle:
    """Log each kind of problem at most once per :data:`LOG_EVERY`."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def due(self, kind: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(kind, -LOG_EVERY) < LOG_EVERY:
            return False
        self._last[kind] = now
        return True


class UsbHidReader(Reader):
    def __init__(self, settings: UsbHidSettings, backend: Any = None) -> None:
        self.settings = settings
        self.backend = backend  #: a pyusb backend; None lets pyusb choose libusb
        self.name = f"{settings.vendor_id:04x}:{settings.product_id:04x}"
        self.decoder = EpcLineDecoder(settings.epc_lengths)
        self._detached = False  #: we took the interface from a kernel driver and owe it back
        self._throttle = _Throttle()

    # -- one session ------------------------------------------------------------------------------

    def run(self, ctx: ReaderContext) -> None:
        dev = self._find()
        try:
            endpoint = self._open(dev, ctx)
            self.decoder.reset()
            address = endpoint.bEndpointAddress
            ctx.connected(f"USB {self.name} interface {self.settings.interface}, endpoint 0x{address:02x}")
            self._read_until_stopped(dev, endpoint, ctx)
        finally:
            self._close(dev, ctx)

    def interrupt(self) -> None:
        """Nothing to do: every read returns within ``read_timeout``, and ``run`` then sees the stop."""

    # -- steps ------------------------------------------------------------------------------------

    def _find(self) -> Any:
        try:
            dev = usb.core.find(
                idVendor=self.settings.vendor_id, idProduct=self.settings.product_id, backend=self.backend
            )
        except usb.core.NoBackendError as exc:
            raise RuntimeError(
                "pyusb found no USB library: install libusb 1.0 (Debian: apt-get install libusb-1.0-0)"
            ) from exc
        except usb.core.USBError as exc:
            raise self._explain(exc, "listing USB devices") from exc
        if dev is None:
            raise ConnectionError(f"USB reader {self.name} not found")
        return dev

    def _open(self, dev: Any, ctx: ReaderContext) -> Any:
        """Take the interface from the kernel and claim it; returns its interrupt IN endpoint."""
        number = self.settings.interface
        try:
            if self._kernel_driver_active(dev, number):
                dev.detach_kernel_driver(number)
                self._detached = True
            intf = usb.util.find_descriptor(self._configuration(dev), bInterfaceNumber=number)
            if intf is None:
                raise ConnectionError(f"USB reader {self.name} has no interface {number}")
            if intf.bInterfaceClass != HID_CLASS:
                raise ConnectionError(
                    f"interface {number} of USB reader {self.name} is not a HID device "
                    f"(class {intf.bInterfaceClass}); set interface: to the keyboard's"
                )
            endpoint = usb.util.find_descriptor(intf, custom_match=_is_interrupt_in)
            if endpoint is None:
                raise ConnectionError(
                    f"interface {number} of USB reader {self.name} has no interrupt IN endpoint"
                )
            usb.util.claim_interface(dev, number)
            if intf.bInterfaceSubClass == BOOT_SUBCLASS:
                self._select_boot_reports(dev, number, ctx)
            else:
                ctx.log.info(
                    "interface %d is no boot interface; assuming its reports use the boot layout", number
                )
        except usb.core.USBError as exc:
            raise self._explain(exc, "opening the device") from exc
        return endpoint

    @staticmethod
    def _kernel_driver_active(dev: Any, number: int) -> bool:
        try:
            return bool(dev.is_kernel_driver_active(number))
        except NotImplementedError:  # libusb cannot tell on this platform (Windows, macOS)
            return False

    @staticmethod
    def _configuration(dev: Any) -> Any:
        """The active configuration; an unconfigured device (errno None from pyusb) gets its first."""
        try:
            return dev.get_active_configuration()
        except usb.core.USBError as exc:
            if exc.errno is not None:
                raise
        dev.set_configuration()
        return dev.get_active_configuration()

    def _select_boot_reports(self, dev: Any, number: int, ctx: ReaderContext) -> None:
        """Ask for boot reports (a boot interface must accept SET_PROTOCOL) and for no idle repeats
        (SET_IDLE is optional: a refusal only means repeated reports, which the decoder ignores)."""
        for request, value, label in (
            (SET_PROTOCOL, BOOT_PROTOCOL, "SET_PROTOCOL"),
            (SET_IDLE, 0, "SET_IDLE"),
        ):
            try:
                dev.ctrl_transfer(HID_CLASS_OUT, request, value, number, None, CONTROL_TIMEOUT_MS)
            except usb.core.USBError as exc:
                if _unplugged(exc):
                    raise
                ctx.log.debug("%s refused by USB reader %s: %s", label, self.name, exc)

    def _read_until_stopped(self, dev: Any, endpoint: Any, ctx: ReaderContext) -> None:
        address = endpoint.bEndpointAddress
        # A whole packet, so a longer report (one with a report ID, say) is counted, not an overflow error.
        size = max(REPORT_SIZE, endpoint.wMaxPacketSize)
        timeout_ms = max(1, round(self.settings.read_timeout * 1000))  # 0 would mean "forever"
        last_typed = time.monotonic()
        while not ctx.stop.is_set():
            try:
                data = dev.read(address, size, timeout_ms)
            except usb.core.USBTimeoutError:
                self._drop_stale_line(last_typed, ctx)
                continue
            except usb.core.USBError as exc:
                if ctx.stop.is_set():
                    return
                raise self._explain(exc, "reading") from exc
            self._drop_stale_line(last_typed, ctx)
            result = self.decoder.feed(bytes(data))
            if result.typed:
                last_typed = time.monotonic()
            for epc in result.epcs:
                ctx.read(epc, antenna=self.settings.antenna, rssi=None)
            self._count(ctx, "bad_lines", result.bad_lines, "dropped a typed line that is not a card number")
            self._count(ctx, "rollovers", result.rollovers, "ignored an ErrorRollOver report")
            self._count(ctx, "bad_reports", result.bad_reports, "ignored a report that is not 8 bytes")

    def _drop_stale_line(self, last_typed: float, ctx: ReaderContext) -> None:
        if self.decoder.pending and time.monotonic() - last_typed > STALE_LINE:
            self.decoder.discard_pending()
            self._count(ctx, "bad_lines", 1, "dropped a line the reader never ended with Enter")

    def _count(self, ctx: ReaderContext, name: str, n: int, message: str) -> None:
        """Count bad input; log it now and then, never with its content (it may be a card number)."""
        if n:
            ctx.count(name, n)
            if self._throttle.due(name):
                ctx.log.warning("USB reader %s: %s (counter %s)", self.name, message, name)

    def _close(self, dev: Any, ctx: ReaderContext) -> None:
        """Give everything back, as far as a device that may be gone allows."""
        number = self.settings.interface
        with contextlib.suppress(usb.core.USBError):
            usb.util.release_interface(dev, number)
        if self._detached:
            self._detached = False
            try:
                dev.attach_kernel_driver(number)
            except (usb.core.USBError, NotImplementedError) as exc:
                # Unplugged: the kernel binds its driver again when the device comes back.
                ctx.log.debug("USB reader %s: kernel driver not re-attached: %s", self.name, exc)
        with contextlib.suppress(usb.core.USBError):
            usb.util.dispose_resources(dev)

    def _explain(self, exc: usb.core.USBError, doing: str) -> Exception:
        """The error ``run`` raises, worded for the person reading the reader's status."""
        if _unplugged(exc):
            return ConnectionError("USB reader unplugged")
        if exc.errno == errno.EACCES:
            return PermissionError(
                f"no permission to open USB reader {self.name}: add a udev rule such as "
                f'SUBSYSTEM=="usb", ATTR{{idVendor}}=="{self.settings.vendor_id:04x}", '
                f'ATTR{{idProduct}}=="{self.settings.product_id:04x}", MODE="0660", GROUP="plugdev" '
                "and put the service user in that group"
            )
        if exc.errno == errno.EBUSY:
            return ConnectionError(
                f"USB reader {self.name} is busy: another program holds interface {self.settings.interface}"
            )
        return ConnectionError(f"USB reader {self.name}: {doing} failed: {exc}")
