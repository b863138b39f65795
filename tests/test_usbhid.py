"""The ``usb-hid`` reader: boot keyboard report decoding, and the driver against an emulated device.

This machine has no USB: its kernel has no USB support and cannot load modules, so no real or virtual
(gadget, dummy_hcd, usbip) device can exist here.  The driver is therefore tested against a fake pyusb
backend, :class:`FakeBackend`, a ``usb.backend.IBackend`` that behaves as a HID boot keyboard would
through libusb: real descriptors walked by real pyusb (interface class 3, subclass 1 boot, protocol 1
keyboard; interrupt IN endpoint 0x81), a kernel driver bound until detached (claiming before detaching
fails with EBUSY as it does on Linux), reports handed out by ``intr_read`` or ``USBTimeoutError`` when
none came within the timeout, and ``USBError`` errno ENODEV after an unplug.  Everything above the
backend (pyusb's ``usb.core``/``usb.util``, the driver, the core's reader runner and pipeline) is real.
The approach and its pitfall (descriptor getters must raise IndexError past the last index) are from
the developer reference, ``test-peers.md`` section "USB (pyusb)".
"""

from __future__ import annotations

import errno
import io
import logging
import queue
import subprocess
import sys
import threading
import time
from array import array
from types import SimpleNamespace

import pytest
import usb.backend
import usb.core
from hypothesis import given, settings
from hypothesis import strategies as st

import vipsense
from vipsense.api import Duration, ReaderContext, ReaderState
from vipsense.branch import Branch
from vipsense.clock import Clock
from vipsense.config.errors import ProfileError
from vipsense.config.profile import load_profile
from vipsense.output import Output
from vipsense.pluginhost import Kind, load_host
from vipsense.plugins.readers.usb_hid import UsbHidSettings, make_reader
from vipsense.plugins.readers.usb_hid.driver import UsbHidReader
from vipsense.plugins.readers.usb_hid.keyboard import (
    ENTER,
    KEYPAD_ENTER,
    MAX_LINE,
    EpcLineDecoder,
    HidReportError,
    KeyboardDecoder,
    parse_report,
)

from .conftest import BASE_PROFILE, wait_for

ADA = "E20000000000000000000001"  # customer C1 in conftest's seed, active
LOST = "E20000000000000000000002"  # customer C2, card reported lost
VID, PID = 0x08FF, 0x0009
LEFT_SHIFT, RIGHT_SHIFT = 0x02, 0x20
RELEASE = bytes(8)
ROLLOVER = bytes([0, 0, 1, 1, 1, 1, 1, 1])


# -- building reports ------------------------------------------------------------------------------


def report(*keys: int, mod: int = 0) -> bytes:
    assert len(keys) <= 6
    return bytes([mod, 0, *keys, *[0] * (6 - len(keys))])


def usage(char: str, keypad: bool = False) -> int:
    """The usage ID of a character on the Keyboard/Keypad page (0x07), ignoring case and Shift."""
    c = char.lower()
    if c == "\n":
        return KEYPAD_ENTER if keypad else ENTER
    if c in " !":
        return {" ": 0x2C, "!": 0x1E}[c]
    if c.isdigit():
        index = "1234567890".index(c)
        return (0x59 if keypad else 0x1E) + index
    return 0x04 + ord(c) - ord("a")


def typed(text: str, keypad: bool = False) -> list[bytes]:
    """How a plain reader types ``text``: each key down (Shift for capitals), then all keys up."""
    out = []
    for char in text:
        mod = LEFT_SHIFT if char.isupper() or char == "!" else 0
        out += [report(usage(char, keypad), mod=mod), RELEASE]
    return out


def decode(reports, lengths=(24, 32)):
    decoder = EpcLineDecoder(lengths)
    results = [decoder.feed(r) for r in reports]
    return (
        [epc for r in results for epc in r.epcs],
        {
            "bad_lines": sum(r.bad_lines for r in results),
            "rollovers": sum(r.rollovers for r in results),
            "bad_reports": sum(r.bad_reports for r in results),
        },
    )


# -- keyboard decoding ------------------------------------------------------------------------------


def test_lower_case_hex_line_becomes_an_upper_case_epc():
    assert decode(typed(ADA.lower() + "\n")) == ([ADA], {"bad_lines": 0, "rollovers": 0, "bad_reports": 0})


def test_shift_gives_capitals_and_shifted_digits_give_symbols():
    keyboard = KeyboardDecoder()
    assert keyboard.typed(parse_report(report(0x04, mod=LEFT_SHIFT))) == "A"
    assert keyboard.typed(parse_report(report(0x05, mod=RIGHT_SHIFT))) == "B"
    assert keyboard.typed(parse_report(report(0x06))) == "c"
    assert keyboard.typed(parse_report(report(0x1E, mod=LEFT_SHIFT))) == "!"
    assert keyboard.typed(parse_report(report(0x27))) == "0"


def test_a_held_key_is_typed_once_and_again_only_after_release():
    down = report(usage("e"))
    reports = [down, down, down, RELEASE, down, RELEASE, RELEASE]
    keyboard = KeyboardDecoder()
    assert "".join(keyboard.typed(parse_report(r)) for r in reports) == "ee"


def test_rolling_keys_type_only_the_newly_pressed_one():
    keyboard = KeyboardDecoder()
    steps = [report(0x04), report(0x04, 0x05), report(0x05), report(0x05, 0x06), report(0x06, 0x04), RELEASE]
    assert [keyboard.typed(parse_report(r)) for r in steps] == ["a", "b", "", "c", "a", ""]


def test_keypad_digits_and_keypad_enter():
    assert decode(typed("1234567890" * 2 + "5678\n", keypad=True)) == (
        ["123456789012345678905678"],
        {"bad_lines": 0, "rollovers": 0, "bad_reports": 0},
    )


def test_release_reports_and_stray_enters_type_nothing():
    epcs, counts = decode([RELEASE, RELEASE, *typed("\n\n"), RELEASE, report(mod=LEFT_SHIFT)])
    assert epcs == [] and counts == {"bad_lines": 0, "rollovers": 0, "bad_reports": 0}


def test_rollover_report_types_nothing_and_keeps_the_held_keys():
    keyboard = KeyboardDecoder()
    held = parse_report(report(0x04, 0x05))
    assert keyboard.typed(held) == "ab"
    assert keyboard.typed(parse_report(ROLLOVER)) == ""
    assert keyboard.typed(parse_report(report(0x04, 0x05, 0x06))) == "c"


def test_rollover_leaves_the_line_intact():
    e = report(usage("e"), mod=LEFT_SHIFT)
    # "E" held through a rollover report: typed once; the line goes on to make a full EPC.
    reports = [e, ROLLOVER, e, RELEASE, *typed(ADA[1:] + "\n")]
    epcs, counts = decode(reports)
    assert epcs == [ADA]
    assert counts == {"bad_lines": 0, "rollovers": 1, "bad_reports": 0}


@pytest.mark.parametrize(
    "line",
    [
        "E2000000000000000000000",  # 23 digits: a keystroke lost
        "E200000000000000000000012",  # 25 digits
        "E2000000000000000000000G",  # not hex
        "E20000000000000000000 01",  # a space
        "E!000000000000000000001",  # a shifted digit
        "F" * (MAX_LINE + 10),  # far too long
    ],
)
def test_lines_that_are_not_card_numbers_are_dropped_and_counted(line):
    epcs, counts = decode([*typed(line + "\n"), *typed(ADA + "\n")])
    assert epcs == [ADA]
    assert counts["bad_lines"] == 1


def test_reports_of_the_wrong_size_are_counted_and_skipped():
    epcs, counts = decode([b"", bytes(9), *typed(ADA + "\n"), b"\x00" * 7])
    assert epcs == [ADA] and counts["bad_reports"] == 3
    with pytest.raises(HidReportError):
        parse_report(bytes(9))


def test_configured_lengths_decide_what_is_a_card_number():
    assert decode(typed("0123456789ABCDEF\n"), lengths=(16,))[0] == ["0123456789ABCDEF"]
    assert decode(typed("0123456789ABCDEF\n"))[0] == []


def test_an_unfinished_line_can_be_discarded():
    decoder = EpcLineDecoder()
    for r in typed(ADA[:10]):
        decoder.feed(r)
    assert decoder.pending and decoder.discard_pending() and not decoder.pending
    assert [e for r in typed(ADA + "\n") for e in decoder.feed(r).epcs] == [ADA]


# -- properties --------------------------------------------------------------------------------------

any_report = st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=12))


@given(st.lists(any_report, max_size=60))
def test_any_reports_never_raise_and_only_yield_valid_epcs(reports):
    decoder = EpcLineDecoder()
    for r in reports:
        for epc in decoder.feed(r).epcs:
            assert len(epc) in (24, 32) and int(epc, 16) >= 0 and epc == epc.upper()


@given(st.binary(max_size=16))
def test_parse_report_raises_only_its_own_error(data):
    try:
        parsed = parse_report(data)
    except HidReportError:
        assert len(data) != 8
    else:
        assert len(parsed.keys) <= 6 and 0 not in parsed.keys


@st.composite
def typist(draw, text: str) -> list[bytes]:
    """``text`` typed the way real readers and people do: keys held over several reports, the next key
    pressed before the last is let go, release reports with or without Shift still down, either Enter,
    main-row or keypad digits, letters in either case with either Shift."""
    out: list[bytes] = []
    last: tuple[int, ...] = ()
    for char in text:
        key = usage(char, keypad=draw(st.booleans()))
        mod = 0
        if char.isalpha():
            mod = draw(st.sampled_from([0, LEFT_SHIFT, RIGHT_SHIFT, LEFT_SHIFT | RIGHT_SHIFT]))
        if key in last:  # the same key again: a real keyboard must let go of it first
            out.append(RELEASE)
            last = ()
        keys = (last[-1], key) if last and draw(st.booleans()) else (key,)
        out += [report(*keys, mod=mod)] * draw(st.integers(1, 3))
        if draw(st.booleans()):
            out.append(report(mod=mod) if draw(st.booleans()) else RELEASE)
            last = ()
        else:
            last = keys
    return [*out, RELEASE]


@st.composite
def card_numbers(draw) -> str:
    digits = draw(st.sampled_from([24, 32]))
    number = draw(st.integers(0, 16**digits - 1))
    text = f"{number:0{digits}x}"
    return "".join(c.upper() if draw(st.booleans()) else c for c in text)


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(st.data(), st.lists(card_numbers(), min_size=1, max_size=4))
def test_epcs_typed_any_way_after_any_garbage_are_decoded_exactly(data, numbers):
    decoder = EpcLineDecoder()
    for number in numbers:
        for garbage in data.draw(st.lists(any_report, max_size=8)):
            decoder.feed(garbage)
        for r in (RELEASE, report(ENTER), RELEASE):  # whatever the garbage typed ends here
            decoder.feed(r)
        got = [epc for r in data.draw(typist(number + "\n")) for epc in decoder.feed(r).epcs]
        assert got == [number.upper()]


# -- a fake USB HID keyboard behind a pyusb backend ---------------------------------------------------

UNPLUGGED = None  #: queued to wake a blocked read when the device goes away


def usb_error(code: int) -> usb.core.USBError:
    """The error libusb1's backend raises: libusb's text, its error code and the errno it maps to."""
    text = {
        errno.ENODEV: ("No such device (it may have been disconnected)", -4),
        errno.EACCES: ("Access denied (insufficient permissions)", -3),
        errno.EBUSY: ("Resource busy", -6),
        errno.ENOENT: ("Entity not found", -5),
    }
    message, libusb_code = text[code]
    return usb.core.USBError(message, libusb_code, code)


class FakeKeyboard:
    """One emulated desktop reader: what the host did to it and the reports it is about to send."""

    def __init__(self, address: int = 1, vid: int = VID, pid: int = PID, interface_class: int = 3) -> None:
        self.plugged = True
        self.denied = False  #: opening fails with EACCES, as without a udev rule
        self.kernel_driver = True  #: usbhid is bound, as after enumeration
        self.claimed: set[int] = set()
        self.open_handles = 0
        self.events: list[tuple] = []
        self.reports: queue.Queue[bytes | None] = queue.Queue()
        self.device = SimpleNamespace(
            bLength=18, bDescriptorType=1, bcdUSB=0x0110, bDeviceClass=0, bDeviceSubClass=0,
            bDeviceProtocol=0, bMaxPacketSize0=8, idVendor=vid, idProduct=pid, bcdDevice=0x0100,
            iManufacturer=0, iProduct=0, iSerialNumber=0, bNumConfigurations=1,
            address=address, bus=1, port_number=2, port_numbers=(2,), speed=1,
        )  # fmt: skip
        self.configuration = SimpleNamespace(
            bLength=9, bDescriptorType=2, wTotalLength=34, bNumInterfaces=1, bConfigurationValue=1,
            iConfiguration=0, bmAttributes=0xA0, bMaxPower=50, extra_descriptors=[],
        )  # fmt: skip
        hid_descriptor = [9, 0x21, 0x11, 0x01, 0, 1, 0x22, 63, 0]  # HID 1.11, one report descriptor
        self.interface = SimpleNamespace(
            bLength=9, bDescriptorType=4, bInterfaceNumber=0, bAlternateSetting=0, bNumEndpoints=1,
            bInterfaceClass=interface_class, bInterfaceSubClass=1, bInterfaceProtocol=1, iInterface=0,
            extra_descriptors=hid_descriptor,
        )  # fmt: skip
        self.endpoint = SimpleNamespace(
            bLength=7, bDescriptorType=5, bEndpointAddress=0x81, bmAttributes=0x03, wMaxPacketSize=8,
            bInterval=10, bRefresh=0, bSynchAddress=0, extra_descriptors=[],
        )  # fmt: skip

    def type(self, reports: list[bytes]) -> None:
        for r in reports:
            self.reports.put(bytes(r))

    def unplug(self) -> None:
        self.plugged = False
        self.reports.put(UNPLUGGED)

    def check(self) -> None:
        if not self.plugged:
            raise usb_error(errno.ENODEV)


class FakeBackend(usb.backend.IBackend):
    """A pyusb backend whose bus holds :class:`FakeKeyboard` devices."""

    def __init__(self, *keyboards: FakeKeyboard) -> None:
        super().__init__()
        self.bus = list(keyboards)

    def plug(self, keyboard: FakeKeyboard) -> None:
        self.bus.append(keyboard)

    def enumerate_devices(self):
        return [k for k in self.bus if k.plugged]

    def get_device_descriptor(self, dev):
        return dev.device

    # Out-of-range indexes must raise IndexError: pyusb probes alternate settings until they do.
    def get_configuration_descriptor(self, dev, config):
        if config != 0:
            raise IndexError(config)
        return dev.configuration

    def get_interface_descriptor(self, dev, intf, alt, config):
        if (intf, alt, config) != (0, 0, 0):
            raise IndexError((intf, alt, config))
        return dev.interface

    def get_endpoint_descriptor(self, dev, ep, intf, alt, config):
        if (ep, intf, alt, config) != (0, 0, 0, 0):
            raise IndexError((ep, intf, alt, config))
        return dev.endpoint

    def open_device(self, dev):
        dev.check()
        if dev.denied:
            raise usb_error(errno.EACCES)
        dev.open_handles += 1
        return SimpleNamespace(dev=dev)

    def close_device(self, dev_handle):
        dev_handle.dev.open_handles -= 1
        dev_handle.dev.events.append(("close",))

    def get_configuration(self, dev_handle):
        dev_handle.dev.check()
        return 1  # the kernel configured it at enumeration

    def set_configuration(self, dev_handle, config_value):
        dev_handle.dev.check()
        dev_handle.dev.events.append(("set_configuration", config_value))

    def is_kernel_driver_active(self, dev_handle, intf):
        dev_handle.dev.check()
        return dev_handle.dev.kernel_driver

    def detach_kernel_driver(self, dev_handle, intf):
        dev = dev_handle.dev
        dev.check()
        if not dev.kernel_driver:
            raise usb_error(errno.ENOENT)
        dev.kernel_driver = False
        dev.events.append(("detach", intf))

    def attach_kernel_driver(self, dev_handle, intf):
        dev = dev_handle.dev
        dev.check()
        if intf in dev.claimed:
            raise usb_error(errno.EBUSY)
        dev.kernel_driver = True
        dev.events.append(("attach", intf))

    def claim_interface(self, dev_handle, intf):
        dev = dev_handle.dev
        dev.check()
        if dev.kernel_driver:  # Linux refuses while usbhid is bound
            raise usb_error(errno.EBUSY)
        dev.claimed.add(intf)
        dev.events.append(("claim", intf))

    def release_interface(self, dev_handle, intf):
        dev = dev_handle.dev
        dev.check()
        dev.claimed.discard(intf)
        dev.events.append(("release", intf))

    def ctrl_transfer(self, dev_handle, bmRequestType, bRequest, wValue, wIndex, data, timeout):
        dev = dev_handle.dev
        dev.check()
        dev.events.append(("control", bmRequestType, bRequest, wValue, wIndex))
        return 0

    def intr_read(self, dev_handle, ep, intf, buff, timeout):
        dev = dev_handle.dev
        dev.check()
        assert ep == 0x81 and intf in dev.claimed, "read from an unclaimed interface"
        try:
            data = dev.reports.get(timeout=timeout / 1000)
        except queue.Empty:
            raise usb.core.USBTimeoutError("Operation timed out", -7, errno.ETIMEDOUT) from None
        if data is UNPLUGGED:
            raise usb_error(errno.ENODEV)
        buff[: len(data)] = array("B", data[: len(buff)])
        return min(len(data), len(buff))


# -- the driver against the fake device ----------------------------------------------------------------


class Session:
    """``reader.run(ctx)`` on a thread, with a context that records what the core would see."""

    def __init__(self, reader: UsbHidReader) -> None:
        self.reader = reader
        self.reads: list = []
        self.states: list[tuple[ReaderState, str]] = []
        self.counters: dict[str, int] = {}
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.ctx = ReaderContext(
            "issuing", Clock(), self.reads.append, lambda s, r: self.states.append((s, r)), self.stop,
            logging.getLogger("test.usbhid"), self.counters,
        )  # fmt: skip
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.reader.run(self.ctx)
        except BaseException as exc:
            self.error = exc

    @property
    def connected(self) -> bool:
        return any(s is ReaderState.CONNECTED for s, _ in self.states)

    def close(self) -> None:
        self.stop.set()
        self.reader.interrupt()
        self.thread.join(2.0)


@pytest.fixture
def sessions():
    started: list[Session] = []

    def start(backend, reader=None, **overrides) -> Session:
        options = {"vendor_id": VID, "product_id": PID, "read_timeout": Duration(0.05), **overrides}
        session = Session(reader or UsbHidReader(UsbHidSettings(**options), backend=backend))
        started.append(session)
        return session

    yield start
    for s in started:
        s.close()


def test_reader_takes_the_keyboard_from_the_kernel_reads_and_gives_it_back(sessions):
    keyboard = FakeKeyboard()
    session = sessions(FakeBackend(keyboard), antenna=3)
    assert wait_for(lambda: session.connected)
    assert session.states == [(ReaderState.CONNECTED, "USB 08ff:0009 interface 0, endpoint 0x81")]
    assert keyboard.kernel_driver is False and keyboard.claimed == {0}
    assert keyboard.events == [
        ("detach", 0),
        ("claim", 0),
        ("control", 0x21, 0x0B, 0, 0),  # SET_PROTOCOL boot
        ("control", 0x21, 0x0A, 0, 0),  # SET_IDLE: report on change only
    ]
    keyboard.type(typed(ADA.lower() + "\n"))
    assert wait_for(lambda: len(session.reads) == 1)
    [read] = session.reads
    assert (read.reader_id, read.epc, read.antenna, read.rssi) == ("issuing", ADA, 3, None)

    t0 = time.monotonic()
    session.close()
    assert not session.thread.is_alive() and time.monotonic() - t0 < 1.0  # within read_timeout
    assert session.error is None
    assert keyboard.events[-3:] == [("release", 0), ("attach", 0), ("close",)]
    assert keyboard.kernel_driver is True and keyboard.claimed == set() and keyboard.open_handles == 0


def test_bad_input_is_counted_and_reading_goes_on(sessions):
    keyboard = FakeKeyboard()
    session = sessions(FakeBackend(keyboard))
    assert wait_for(lambda: session.connected)
    keyboard.type([*typed("E2000000000000000000000\n"), ROLLOVER, bytes(3), *typed(LOST + "\n")])
    assert wait_for(lambda: [r.epc for r in session.reads] == [LOST])
    assert session.counters == {"bad_lines": 1, "rollovers": 1, "bad_reports": 1}


def test_a_line_never_ended_is_dropped_instead_of_prefixing_the_next(sessions, monkeypatch):
    monkeypatch.setattr("vipsense.plugins.readers.usb_hid.driver.STALE_LINE", 0.2)
    keyboard = FakeKeyboard()
    session = sessions(FakeBackend(keyboard))
    assert wait_for(lambda: session.connected)
    keyboard.type(typed("E2000000"))
    assert wait_for(lambda: session.counters.get("bad_lines") == 1)
    keyboard.type(typed(ADA + "\n"))
    assert wait_for(lambda: [r.epc for r in session.reads] == [ADA])


def test_unplug_raises_and_a_new_run_finds_the_reader_when_it_is_back(sessions):
    first = FakeKeyboard(address=5)
    backend = FakeBackend(first)
    session = sessions(backend)
    assert wait_for(lambda: session.connected)
    first.type([*typed("E2000"), report(usage("0"))])  # unplugged mid-line, a key down
    assert wait_for(first.reports.empty)  # all taken: each is decoded before the next read
    first.unplug()
    assert wait_for(lambda: not session.thread.is_alive())
    assert isinstance(session.error, ConnectionError)
    assert str(session.error) == "USB reader unplugged"
    # Given back as far as a gone device allows: nothing re-attached, but pyusb's handle is closed.
    assert ("attach", 0) not in first.events and first.open_handles == 0

    absent = sessions(backend, session.reader)  # the core calls run() again on the same reader
    assert wait_for(lambda: not absent.thread.is_alive())
    assert isinstance(absent.error, ConnectionError)
    assert str(absent.error) == "USB reader 08ff:0009 not found"

    second = FakeKeyboard(address=6)  # plugged back in: re-enumerated, usbhid bound again
    backend.plug(second)
    again = sessions(backend, session.reader)
    assert wait_for(lambda: again.connected)
    assert second.events[:2] == [("detach", 0), ("claim", 0)]
    second.type(typed("0" + ADA[1:] + "\n"))  # starts with the key held at the unplug; no stale prefix
    assert wait_for(lambda: [r.epc for r in again.reads] == ["0" + ADA[1:]])


def test_permission_denied_tells_the_user_to_add_a_udev_rule(sessions):
    keyboard = FakeKeyboard()
    keyboard.denied = True
    session = sessions(FakeBackend(keyboard))
    assert wait_for(lambda: not session.thread.is_alive())
    assert isinstance(session.error, PermissionError)
    assert "udev rule" in str(session.error)
    assert 'ATTR{idVendor}=="08ff"' in str(session.error) and 'ATTR{idProduct}=="0009"' in str(session.error)


def test_an_interface_that_is_no_hid_device_is_refused_and_handed_back(sessions):
    keyboard = FakeKeyboard(interface_class=8)  # mass storage
    session = sessions(FakeBackend(keyboard))
    assert wait_for(lambda: not session.thread.is_alive())
    assert "is not a HID device (class 8)" in str(session.error)
    assert keyboard.kernel_driver is True and keyboard.claimed == set()


def test_only_the_configured_ids_are_taken(sessions):
    other = FakeKeyboard(pid=0x0001)  # somebody's real keyboard
    session = sessions(FakeBackend(other))
    assert wait_for(lambda: not session.thread.is_alive())
    assert str(session.error) == "USB reader 08ff:0009 not found"
    assert other.events == [] and other.kernel_driver is True


# -- through a real branch -------------------------------------------------------------------------------


@pytest.mark.slow
def test_branch_greets_a_card_typed_on_the_usb_reader_and_rides_out_an_unplug(write_profile, tmp_path):
    backend = FakeBackend(FakeKeyboard(address=1))
    states: list[tuple[str, str, str]] = []

    class TestReaders:
        @vipsense.hookimpl
        def vipsense_register_reader_types(self, register):
            register("usb-hid-fake", UsbHidSettings, lambda s, c: make_reader(s, c, backend=backend))

        @vipsense.hookimpl
        def vipsense_reader_status_changed(self, reader_id, status):
            states.append((reader_id, status.state.value, status.reason))

    host = load_host()
    host.add(TestReaders(), "test-usb-readers")
    text = BASE_PROFILE.replace(
        "  - {id: door, type: simulated, visitors: []}",
        "  - {id: desk, type: usb-hid-fake, vendor_id: 0x08ff, product_id: 0x0009, read_timeout: 50ms}",
    ).replace("min_reads: 2", "min_reads: 1")
    profile = load_profile(write_profile(text), host, data_dir=tmp_path / "data")
    branch = Branch(profile, host, output=Output(io.StringIO(), live=False))
    branch.start()
    try:
        assert wait_for(lambda: ("desk", "connected", "USB 08ff:0009 interface 0, endpoint 0x81") in states)
        backend.bus[0].type(typed(ADA + "\n"))
        assert wait_for(lambda: branch.status.counters["greeted"] == 1)

        backend.bus[0].unplug()
        assert wait_for(lambda: ("desk", "disconnected", "ConnectionError: USB reader unplugged") in states)
        missing = ("desk", "disconnected", "ConnectionError: USB reader 08ff:0009 not found")
        assert wait_for(lambda: missing in states)

        backend.plug(FakeKeyboard(address=2))
        assert wait_for(lambda: states[-1][:2] == ("desk", "connected"))
        backend.bus[1].type(typed(LOST + "\n"))
        assert wait_for(lambda: branch.status.counters["rejected"] == 1)
    finally:
        branch.stop()
    assert branch.status.devices["desk"].state == "stopped"
    assert backend.bus[1].kernel_driver is True and backend.bus[1].claimed == set()


# -- settings and registration ---------------------------------------------------------------------------


def test_usb_hid_is_a_built_in_reader_type(host):
    assert host.types[Kind.READER]["usb-hid"].settings is UsbHidSettings


def test_loading_the_plugin_does_not_import_pyusb():
    code = "import sys, vipsense.plugins.readers.usb_hid; print('usb' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "False", result.stderr


def desk_profile(write_profile, keys: str):
    """The conftest branch with its door reader replaced by a ``usb-hid`` one with these keys."""
    return write_profile(
        BASE_PROFILE.replace(
            "  - {id: door, type: simulated, visitors: []}", f"  - {{id: desk, type: usb-hid, {keys}}}"
        )
    )


def test_usb_ids_are_written_in_hex_in_the_profile(host, write_profile, tmp_path):
    path = desk_profile(write_profile, "vendor_id: 0x08FF, product_id: 0x0009, interface: 1, antenna: 2")
    parsed = load_profile(path, host, data_dir=tmp_path / "data").readers[0].settings
    assert parsed == UsbHidSettings(vendor_id=0x08FF, product_id=9, interface=1, antenna=2)
    assert (parsed.read_timeout, parsed.epc_lengths) == (0.5, (24, 32))


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ("vendor_id: 0x08ff, product_id: 0009", "expected an integer, got '0009'"),
        ("vendor_id: 0x108ff, product_id: 0x0009", "must be a 16-bit USB id such as 0x08ff, got 67839"),
        ("vendor_id: 0x08ff", "missing required key 'product_id'"),
        ("vendor_id: 0x08ff, product_id: 0x0009, read_timeout: 0ms", "must be between 10ms and 5s, got 0s"),
        ("vendor_id: 0x08ff, product_id: 0x0009, epc_lengths: [23]", "16-bit words"),
        ("vendor_id: 0x08ff, product_id: 0x0009, epc_lengths: []", "must list at least one length"),
        ("vendor_id: 0x08ff, product_id: 0x0009, interface: -1", "must be 0 or more, got -1"),
    ],
)
def test_bad_settings_are_profile_errors(host, write_profile, tmp_path, keys, expected):
    with pytest.raises(ProfileError) as excinfo:
        load_profile(desk_profile(write_profile, keys), host, data_dir=tmp_path / "data")
    assert expected in str(excinfo.value)
