"""The LLRP driver: one sllurp client per connection, door-friendly reader settings, and the keepalive
watchdog sllurp lacks.

sllurp 3.0.5 (GPL-3.0-only) is imported here only, and this module only from the plugin's factory.
What it does and does not do is in ``llrp.md`` §2: its receive loop ``select()``s without a timeout
and only acknowledges KEEPALIVEs, so a powered-off reader or a cut cable goes unnoticed; its own
reconnect waits a fixed 60 s.  So the reader here sends a KEEPALIVE every ``keepalive_interval``,
``run`` treats 3 intervals without one (or a report) as a lost link, and the core's ReaderRunner
reconnects with its 0.1 → 1.6 s backoff (``reconnect=False`` in sllurp).

Threads: sllurp calls back on its socket thread, where slow work would stall reception and the
keepalive acks, so the tag callback only normalises and hands each read to ``ctx.read`` (which
enqueues).  ``run`` waits on its own thread and turns what the callbacks saw into an exception.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from sllurp.llrp import LLRPReaderClient, LLRPReaderConfig, LLRPReaderState
from sllurp.llrp_errors import ReaderConfigurationError

from vipsense.api import Reader, ReaderContext

from .reports import LLRPProtocolError, normalise_tag

#: IANA private enterprise numbers in GeneralDeviceCapabilities.DeviceManufacturerName (llrp.md §4).
MANUFACTURERS = {25882: "Impinj"}
KEEPALIVES_MISSED = 3  #: silent intervals before the link counts as lost
POLL = 0.1  #: seconds between checks of the link when no callback wakes ``run``
STOP_GRACE = 0.4  #: seconds for the polite DELETE_ACCESSSPEC / DELETE_ROSPEC when the branch stops
#: Responses whose failure status explains a connect that never completes.
SETUP_RESPONSES = (
    "IMPINJ_ENABLE_EXTENSIONS_RESPONSE",
    "GET_READER_CAPABILITIES_RESPONSE",
    "GET_READER_CONFIG_RESPONSE",
    "SET_READER_CONFIG_RESPONSE",
    "DELETE_ACCESSSPEC_RESPONSE",
    "DELETE_ROSPEC_RESPONSE",
    "ADD_ROSPEC_RESPONSE",
    "ENABLE_ROSPEC_RESPONSE",
)
#: What the ROSpec asks each TagReportData to carry.  sllurp's config default leaves out AntennaID
#: and PeakRSSI, and its ROSpec takes the config's selector as given (llrp_proto.py LLRPROSpec).
TAG_CONTENT = {
    "EnableROSpecID": False,
    "EnableSpecIndex": False,
    "EnableInventoryParameterSpecID": False,
    "EnableAntennaID": True,
    "EnableChannelIndex": False,
    "EnablePeakRSSI": True,
    "EnableFirstSeenTimestamp": False,
    "EnableLastSeenTimestamp": True,
    "EnableTagSeenCount": True,
    "EnableAccessSpecID": False,
}


def sllurp_config(settings: Any) -> LLRPReaderConfig:
    """The profile's settings as sllurp's config, with the door settings of llrp.md §2."""
    return LLRPReaderConfig(
        {
            "antennas": list(settings.antennas),
            "session": settings.session,
            "impinj_search_mode": settings.impinj_search_mode,
            "tx_power_dbm": None if settings.tx_power_dbm is None else float(settings.tx_power_dbm),
            "report_every_n_tags": settings.report_every_n_tags,
            "tag_population": settings.tag_population,
            "mode_identifier": settings.mode_identifier,
            "tag_content_selector": dict(TAG_CONTENT),
            "keepalive_interval": max(1, round(settings.keepalive_interval * 1000)),  # ms
            "reset_on_connect": settings.reset_on_connect,
            "start_inventory": True,
            "reconnect": False,  # the core reconnects with a short backoff; sllurp's waits 60 s
        }
    )


def describe_reader(capabilities: dict[str, Any]) -> str:
    """``Impinj model 2001002, firmware 5.14.0.240`` from GET_READER_CAPABILITIES_RESPONSE."""
    gdc = capabilities.get("GeneralDeviceCapabilities")
    if not isinstance(gdc, dict):
        return ""
    pen, model, firmware = (
        gdc.get("DeviceManufacturerName"),
        gdc.get("ModelName"),
        gdc.get("ReaderFirmwareVersion"),
    )
    name = " ".join(
        ([MANUFACTURERS.get(pen, f"manufacturer {pen}")] if isinstance(pen, int) else [])
        + ([f"model {model}"] if isinstance(model, int) else [])
    )
    if isinstance(firmware, bytes):
        firmware = firmware.decode("ascii", "replace")
    if isinstance(firmware, str) and firmware.strip():
        name += f", firmware {firmware.strip()[:40]}"
    return name


def status_text(name: str, body: dict[str, Any]) -> str | None:
    """``SET_READER_CONFIG_RESPONSE: ParameterError no ROSpec 0``, or None when it succeeded."""
    status = body.get("LLRPStatus")
    if not isinstance(status, dict) or status.get("StatusCode") == "Success":
        return None
    text = status.get("ErrorDescription", b"")
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{name}: {status.get('StatusCode')} {text}".strip()


class _Throttle:
    """Log a repeated problem at most once a second, with how often it happened meanwhile."""

    def __init__(self) -> None:
        self._next = 0.0
        self._count = 0

    def __call__(self, ctx: ReaderContext, message: str) -> None:
        self._count += 1
        now = time.monotonic()
        if now >= self._next:
            ctx.log.warning("%s (%d since the last message)", message, self._count)
            self._next, self._count = now + 1.0, 0


class Link:
    """One TCP connection to the reader: sllurp's client and what its callbacks have seen.

    Callbacks only set fields and wake ``run``; plain attribute writes are atomic in CPython.
    """

    def __init__(self, settings: Any, ctx: ReaderContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self.address = f"{settings.host}:{settings.port}"
        self.wake = threading.Event()
        self.inventorying = False
        self.lost = False
        self.refused: str | None = None  #: a failed ConnectionAttemptEvent, e.g. another client
        self.closing = False  #: the reader announced a ConnectionCloseEvent
        self.setup_error: str | None = None  #: the last ERROR_MESSAGE or failed setup response
        self.heard = time.monotonic()  #: last KEEPALIVE, report or event (host time, not branch time)
        self._closing = threading.Lock()
        self._polite_started = False
        self._bad = _Throttle()
        self.client = LLRPReaderClient(
            settings.host, settings.port, sllurp_config(settings), timeout=float(settings.connect_timeout)
        )
        self.client.add_tag_report_callback(self._on_tags)
        self.client.add_message_callback("KEEPALIVE", self._on_keepalive)
        self.client.add_message_callback("RO_ACCESS_REPORT", self._on_heard)
        self.client.add_message_callback("READER_EVENT_NOTIFICATION", self._on_event)
        self.client.add_message_callback("ERROR_MESSAGE", self._on_error)
        for name in SETUP_RESPONSES:
            self.client.add_message_callback(name, self._on_response)
        self.client.add_state_callback(LLRPReaderState.STATE_INVENTORYING, self._on_inventorying)
        self.client.add_disconnected_callback(self._on_disconnected)
        self._guard_decoder()

    def _guard_decoder(self) -> None:
        """sllurp drops a message its decoder rejects with LLRPError, but any other exception (a
        truncated TV parameter raises ``struct.error``) ends its receive thread, silently, with the
        socket left open.  Drop such a message the way sllurp drops the others: count it, discard the
        rest of that read, go on.  (If the stream lost its framing, the watchdog notices.)"""
        client, receive = self.client, self.client.raw_data_received

        def raw_data_received(data: bytes) -> None:
            try:
                receive(data)
            except ReaderConfigurationError:
                raise  # sllurp's own signal to abort the connect
            except Exception as exc:
                client.partial_data, client.expected_bytes = b"", 0
                self.ctx.count("undecodable_messages")
                self._bad(self.ctx, f"undecodable LLRP message dropped: {exc!r}")

        client.raw_data_received = raw_data_received  # sllurp's main_loop calls it on the instance

    # -- sllurp's socket thread -------------------------------------------------------------------

    def _on_tags(self, _client: Any, tags: Any) -> None:
        if not isinstance(tags, list):
            self._drop(f"TagReportData is {type(tags).__name__}")
            return
        read = self.ctx.read
        for tag in tags:
            try:
                t = normalise_tag(tag)
            except LLRPProtocolError as exc:
                self._drop(str(exc))
                continue
            read(t.epc, t.antenna, t.rssi, read_count=t.read_count, reader_time=t.reader_time)

    def _drop(self, why: str) -> None:
        self.ctx.count("malformed_tags")
        self._bad(self.ctx, f"LLRP tag report dropped: {why}")

    def _on_heard(self, _client: Any, _msg: Any) -> None:
        self.heard = time.monotonic()

    def _on_keepalive(self, _client: Any, _msg: Any) -> None:
        self.heard = time.monotonic()
        self.ctx.count("keepalives")

    def _on_event(self, _client: Any, msg: Any) -> None:
        self.heard = time.monotonic()
        data = msg.msgdict.get("READER_EVENT_NOTIFICATION", {}).get("ReaderEventNotificationData", {})
        attempt = data.get("ConnectionAttemptEvent") if isinstance(data, dict) else None
        if isinstance(attempt, dict) and attempt.get("Status") != "Success":
            self.refused = str(attempt.get("Status"))  # sllurp only logs this and waits for ever
            self.wake.set()
        if isinstance(data, dict) and "ConnectionCloseEvent" in data:
            self.closing = True

    def _on_error(self, _client: Any, msg: Any) -> None:
        self.setup_error = (
            status_text("ERROR_MESSAGE", msg.msgdict.get("ERROR_MESSAGE", {})) or "ERROR_MESSAGE"
        )

    def _on_response(self, _client: Any, msg: Any) -> None:
        name = msg.getName()
        failure = status_text(name, msg.msgdict.get(name, {}))
        if failure:
            self.setup_error = failure

    def _on_inventorying(self, _client: Any, _state: Any) -> None:
        self.heard = time.monotonic()
        self.inventorying = True
        self.wake.set()

    def _on_disconnected(self, _client: Any) -> None:
        self.lost = True
        self.wake.set()

    # -- the reader's run thread ------------------------------------------------------------------

    def state_name(self) -> str:
        """sllurp's connect state, e.g. ``SENT_SET_CONFIG``."""
        try:
            return LLRPReaderState.getStateName(self.client.llrp.state).removeprefix("STATE_")
        except Exception:
            return f"state {self.client.llrp.state!r}"

    def progress(self) -> str:
        """How far the connect sequence got, for a timeout message.  Before the reader's connection
        event sllurp's state is still DISCONNECTED, which would mislead."""
        if self.client.llrp.state == LLRPReaderState.STATE_DISCONNECTED:
            where = "no ConnectionAttemptEvent from the reader"
        else:
            where = f"stuck in {self.state_name()}"
        return f"{where}; {self.setup_error}" if self.setup_error else where

    def connect(self) -> None:
        try:
            self.client.connect()
        except OSError as exc:
            raise ConnectionError(f"cannot connect to LLRP reader {self.address}: {exc}") from exc

    def failure(self) -> Exception | None:
        """Why the link is unusable, or None while it is fine."""
        if self.refused is not None:
            return ConnectionError(f"LLRP reader {self.address} refused the connection: {self.refused}")
        if not self.lost and self.client.is_alive():
            return None
        if not self.inventorying and self.setup_error:
            return ConnectionError(
                f"LLRP reader {self.address} rejected the setup ({self.state_name()}): {self.setup_error}"
            )
        if not self.lost:  # the thread ended without telling its callbacks
            why = "sllurp's receive loop stopped (see the log)"
        elif self.closing:
            why = "the reader closed the connection (ConnectionCloseEvent)"
        else:
            why = "the reader closed the connection"
        return ConnectionError(f"LLRP connection to {self.address} lost: {why}")

    def silence(self) -> float:
        return time.monotonic() - self.heard

    def stop_politely(self) -> None:
        """Start deleting our AccessSpecs and ROSpecs, so the next connect can add them again; sllurp
        closes the socket when the reader has answered.  Does not wait."""
        with self._closing:
            if self._polite_started or not self.inventorying or not self.client.is_alive():
                return
            self._polite_started = True
        try:
            self.client.disconnect()
        except Exception as exc:  # the socket may be going away under us
            self.ctx.log.debug("polite LLRP disconnect failed: %r", exc)

    def close(self, polite: bool) -> None:
        if polite:
            self.stop_politely()
            self.client.join(STOP_GRACE)
        # sllurp 3.0.5 checks ``self._socket`` and then closes it, while its own socket thread may set
        # it to None in between; the socket is closed either way.
        with contextlib.suppress(AttributeError):
            self.client.hard_disconnect()
        self.client.join(STOP_GRACE)


class LLRPReader(Reader):
    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._link: Link | None = None

    def run(self, ctx: ReaderContext) -> None:
        if ctx.stop.is_set():
            return
        link = Link(self.settings, ctx)
        self._link = link
        try:
            link.connect()
            self._wait_for_inventory(link, ctx)
            if ctx.stop.is_set():
                return
            detail = describe_reader(link.client.llrp.capabilities)
            ctx.connected(f"{link.address} {detail}".strip())
            self._watch(link, ctx)
        finally:
            self._link = None
            link.close(polite=ctx.stop.is_set())

    def _wait_for_inventory(self, link: Link, ctx: ReaderContext) -> None:
        """sllurp's connect sequence (llrp.md §2) until the ROSpec runs, or why it did not."""
        deadline = time.monotonic() + float(self.settings.connect_timeout)
        while not ctx.stop.is_set() and not link.inventorying:
            failure = link.failure()
            if failure is not None:
                raise failure
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"LLRP reader {link.address} did not start inventory within "
                    f"{float(self.settings.connect_timeout):g} s ({link.progress()})"
                )
            link.wake.wait(min(POLL, left))
            link.wake.clear()

    def _watch(self, link: Link, ctx: ReaderContext) -> None:
        """Until the branch stops: the link's failures, and the keepalive watchdog."""
        interval = float(self.settings.keepalive_interval)
        limit = KEEPALIVES_MISSED * interval
        while not ctx.stop.is_set():
            failure = link.failure()
            if failure is not None:
                raise failure
            silent = link.silence()
            if silent > limit:
                ctx.count("keepalive_timeouts")
                link.client.hard_disconnect()
                raise TimeoutError(
                    f"no LLRP keepalive for {silent:.1f} s (expected one every {interval:g} s)"
                )
            link.wake.wait(min(POLL, limit - silent + 0.01))
            link.wake.clear()

    def interrupt(self) -> None:
        """Disconnect sllurp: politely once inventory runs, at once while still connecting."""
        link = self._link
        if link is None:
            return
        link.wake.set()
        if link.inventorying:
            link.stop_politely()
        else:
            link.client.hard_disconnect()
