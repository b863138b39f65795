"""Texts staff through an operator's SMS centre (SMSC) over SMPP 3.4, with smpplib (synchronous).

For a branch with an SMS account at the operator instead of a GSM modem.  The text is the modem
notifier's (:func:`vipsense.sms.render`), so a profile can switch between
the two and staff see the same words: no phone number or full ID number, every number-like run
masked.  The recipient is the staff member's ``mobile``::

    notifiers:
      - id: sms
        type: sms-smpp
        host: smsc.operator.example
        system_id: bank0571
        password: !secret smpp_password
        source_addr: "106900000001"
        language: zh_CN         # unset: the branch's language

Encoding (``sms-paging.md`` §4, §8): a text in the GSM 7-bit alphabet goes as data_coding 0 (unpacked
septets), anything else as UCS2 (UTF-16BE, data_coding 8); a long text is sent as concatenated parts
behind the UDH ``05 00 03 <ref> <n> <i>`` (esm_class 0x40).  The parts are cut by
:func:`vipsense.sms.segment`, as the modem notifier's are, rather than ``smpplib.gsm.make_parts``:
smpplib cuts the UTF-16 bytes every 134 octets and so splits a surrogate pair (𠮷, emoji) between two
parts, which phones show as two broken characters.  Here a part holds at most 67 UTF-16 units (153
septets) and never ends inside a pair or a GSM-7 escape.

One bind (transceiver by default, so delivery reports come back on it) is kept open and used for every
send; when it fails it is dropped and the next send binds again.  A bind refused for its credentials
fails for good (``DeliveryFailed(retry=False)``); an SMSC that cannot be reached, a timeout and the
"try later" statuses (throttling, queue full, system error) are retried by the outbox.  A keeper
thread sends ``enquire_link`` when the bind has been idle for ``enquire_link`` and reads what the SMSC
pushes between sends (delivery reports, its own ``enquire_link``), so an idle bind stays alive.

Nothing secret or personal is logged: smpplib's hex dumps of each PDU (which hold the bind password
and the destination number) are dropped, numbers are logged masked, texts not at all.
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

import vipsense
from vipsense.api import (
    DeliveryFailed,
    DeliveryResult,
    Duration,
    Notifier,
    PluginContext,
    RegisterType,
    Secret,
)
from vipsense.i18n import _, lazy_gettext
from vipsense.model import DeliveryState, Notification
from vipsense.privacy import mask_mobile
from vipsense.sms import (
    Alphabet,
    Concat,
    gsm7_septets,
    normalise_number,
    notification_text,
    recipient_number,
    segment,
)

INSTALL_HINT = "the sms-smpp notifier needs smpplib: pip install 'vipsense[smpp]'"

# -- SMPP 3.4 command_status values (§5.1.3) that decide what a failure means -----------------------
ESME_RINVBNDSTS = 0x04
ESME_RSYSERR = 0x08
ESME_RBINDFAIL = 0x0D
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RMSGQFUL = 0x14
ESME_RSUBMITFAIL = 0x45
ESME_RINVSYSTYP = 0x53
ESME_RTHROTTLED = 0x58
ESME_RX_T_APPN = 0x64
ESME_RDELIVERYFAILURE = 0xFE
ESME_RUNKNOWNERR = 0xFF
#: A bind refused for these cannot succeed until the profile changes.
CREDENTIAL_REFUSALS = {
    ESME_RBINDFAIL: "wrong system_id/password?",
    ESME_RINVPASWD: "wrong password?",
    ESME_RINVSYSID: "wrong system_id?",
    ESME_RINVSYSTYP: "wrong system_type?",
}
#: Submit statuses that mean "try again later"; any other known status fails for good.
RETRYABLE = {
    ESME_RINVBNDSTS,
    ESME_RSYSERR,
    ESME_RMSGQFUL,
    ESME_RSUBMITFAIL,
    ESME_RTHROTTLED,
    ESME_RX_T_APPN,
    ESME_RDELIVERYFAILURE,
    ESME_RUNKNOWNERR,
}
#: Words for staff beside smpplib's own description of a status.
HINTS = {
    ESME_RTHROTTLED: "sending faster than the SMS account allows",
    ESME_RMSGQFUL: "the SMSC's queue is full",
    0x0A: "the SMSC does not accept source_addr for this account",
    0x0B: "not a valid destination number",
}
#: After a bind refused for its credentials, sends fail at once for this long instead of binding
#: again: operators lock an account after a few bad binds.
REFUSAL_HOLD = 60.0

UDHI = 0x40  #: esm_class: the short_message starts with a user data header
DLR_MASK = 0x3C  #: esm_class bits 2-5: the message type of a deliver_sm
DLR_TYPE = 0x04  #: SMSC delivery receipt
_DLR_FIELD = re.compile(r"\b(id|stat|err):(\S*)", re.IGNORECASE)
_KEEP_IDS = 10  #: message ids kept for the status page

TON_UNKNOWN, TON_INTERNATIONAL, TON_ALPHANUMERIC = 0, 1, 5
NPI_UNKNOWN, NPI_ISDN = 0, 1


def _lib() -> Any:
    """smpplib, imported only when an ``sms-smpp`` notifier is made."""
    try:
        import smpplib.client
        import smpplib.consts
        import smpplib.exceptions
        import smpplib.smpp
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return smpplib


def status_name(status: int) -> str:
    """``0x58`` -> ``ESME_RTHROTTLED`` (smpplib's table), or ``0x00000400`` for a vendor's own code."""
    consts = _lib().consts
    for name, value in vars(consts).items():
        if name.startswith("SMPP_ESME_") and value == status:
            return name[len("SMPP_") :]
    return f"0x{status:08X}"


def describe_status(status: int) -> str:
    """``ESME_RTHROTTLED (sending faster than the SMS account allows)``."""
    why = HINTS.get(status) or _lib().consts.DESCRIPTIONS.get(status, "")
    return f"{status_name(status)} ({why})" if why else status_name(status)


# -- settings ---------------------------------------------------------------------------------------
def _c_string(limit: int, empty: bool = False) -> Callable[[Any, attrs.Attribute[str], str], None]:
    """An SMPP C-Octet String field: printable ASCII, at most ``limit`` characters (§5.2)."""

    def check(inst: Any, attribute: attrs.Attribute, value: str) -> None:
        if not value and not empty:
            raise ValueError(_("{key} must not be empty").format(key=attribute.name))
        if len(value) > limit or not all(" " <= ch <= "~" for ch in value):
            message = _("{key} is at most {limit} printable ASCII characters, got {value!r}")
            raise ValueError(message.format(key=attribute.name, limit=limit, value=value))

    return check


def _password(inst: Any, attribute: attrs.Attribute, value: Secret) -> None:
    text = value.reveal()
    if len(text) > 8 or not all(" " <= ch <= "~" for ch in text):
        # never the value
        raise ValueError(_("an SMPP password is at most 8 printable ASCII characters"))


def _host(inst: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value or any(ch.isspace() for ch in value) or "/" in value or "@" in value:
        message = _("host is a host name or IP address (no scheme, port or path), got {value!r}")
        raise ValueError(message.format(value=value))


def _source(inst: Any, attribute: attrs.Attribute, value: str) -> None:
    if re.fullmatch(r"\+?[0-9]{1,20}", value):
        return
    if not re.fullmatch(r"[ -~]{1,11}", value):
        message = _(
            "source_addr is a number of up to 20 digits or a sender name of up to 11 ASCII characters, "
            "got {value!r}"
        )
        raise ValueError(message.format(value=value))


def _between(low: int, high: int) -> list[Callable[[Any, attrs.Attribute[int], int], Any]]:
    return [attrs.validators.ge(low), attrs.validators.le(high)]


def _optional_between(low: int, high: int) -> Callable[[Any, attrs.Attribute[int | None], int | None], Any]:
    return attrs.validators.optional(_between(low, high))


@attrs.frozen
class SmppSettings:
    host: str = attrs.field(validator=_host)  #: the operator's SMSC
    system_id: str = attrs.field(validator=_c_string(15))  #: the SMS account
    password: Secret = attrs.field(repr=lambda s: "Secret('******')", validator=_password)  #: ``!secret``
    source_addr: str = attrs.field(validator=_source)  #: the sender: a service number or a name
    port: int = attrs.field(default=2775, validator=_between(1, 65535))
    system_type: str = attrs.field(default="", validator=_c_string(12, empty=True))
    #: None: 5/0 (alphanumeric) for a sender name, 1/1 for "+86...", 0/1 for other numbers
    source_addr_ton: int | None = attrs.field(default=None, validator=_optional_between(0, 6))
    source_addr_npi: int | None = attrs.field(default=None, validator=_optional_between(0, 18))
    bind: Literal["transceiver", "transmitter"] = "transceiver"  #: a transmitter gets no reports
    registered_delivery: bool = True  #: ask the SMSC for a delivery report of each part
    connect_timeout: Duration = Duration(5)  #: the TCP connection
    request_timeout: Duration = Duration(10)  #: each answer: the bind, each submit_sm_resp
    enquire_link: Duration = Duration(30)  #: keep an idle bind alive; 0: never
    max_parts: int = attrs.field(default=4, validator=_between(1, 10))  #: longer texts end in "…"
    language: Literal["en", "zh", "zh_CN"] | None = None  #: None: the branch's language

    def __attrs_post_init__(self) -> None:
        if self.connect_timeout <= 0 or self.request_timeout <= 0:
            raise ValueError(_("connect_timeout and request_timeout must be more than 0"))
        if 0 < self.enquire_link < 1:
            raise ValueError(_("enquire_link is 0 (never) or at least 1s"))


# -- encoding -----------------------------------------------------------------------------------------
@attrs.frozen
class Encoded:
    """One text as the ``short_message`` of each submit_sm."""

    data_coding: int  #: 0 GSM 7-bit (SMSC default alphabet), 8 UCS2
    esm_class: int
    parts: tuple[bytes, ...]
    truncated: bool = False


def encode_text(text: str, reference: int, max_parts: int = 4) -> Encoded:
    """Cut ``text`` with the modem notifier's segmentation and encode each part for SMPP."""
    segments = segment(text, max_parts)
    alphabet = segments.alphabet
    total = len(segments.parts)
    out = []
    for seq, part in enumerate(segments.parts, start=1):
        body = part.encode("utf-16-be") if alphabet is Alphabet.UCS2 else bytes(gsm7_septets(part) or ())
        out.append((Concat(reference & 0xFF, total, seq).udh() if total > 1 else b"") + body)
    return Encoded(int(alphabet), UDHI if total > 1 else 0, tuple(out), segments.truncated)


def destination(number: str) -> tuple[int, int, str]:
    """``(dest_addr_ton, dest_addr_npi, destination_addr)``: ``+86...`` is international."""
    number = normalise_number(number)
    if number.startswith("+"):
        return TON_INTERNATIONAL, NPI_ISDN, number[1:]
    return TON_UNKNOWN, NPI_ISDN, number


def source(settings: SmppSettings) -> tuple[int, int, str]:
    addr = settings.source_addr
    if re.fullmatch(r"\+[0-9]+", addr):
        ton, npi, addr = TON_INTERNATIONAL, NPI_ISDN, addr[1:]
    elif re.fullmatch(r"[0-9]+", addr):
        ton, npi = TON_UNKNOWN, NPI_ISDN
    else:
        ton, npi = TON_ALPHANUMERIC, NPI_UNKNOWN
    if settings.source_addr_ton is not None:
        ton = settings.source_addr_ton
    if settings.source_addr_npi is not None:
        npi = settings.source_addr_npi
    return ton, npi, addr


# -- the notifier ---------------------------------------------------------------------------------------
class _LinkLost(Exception):
    """The bind is gone or in an unknown state: drop it, bind again next time."""


class _Rejected(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _NoWireDumps(logging.Filter):
    """Drops smpplib's hex dumps of each PDU (the bind password, numbers and texts are in them) and
    its warning on every close of a bind that the SMSC dropped first."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            isinstance(record.msg, str)
            and (record.msg.startswith((">>", "<<")) or "disconnecting in the bound state" in record.msg)
        )


class SmppNotifier(Notifier):
    def __init__(self, settings: SmppSettings, ctx: PluginContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self.lib = _lib()
        self.where = f"{settings.host}:{settings.port}"
        self._wire_log = logging.getLogger(f"{ctx.log.name}.smpplib")
        if not any(isinstance(f, _NoWireDumps) for f in self._wire_log.filters):
            self._wire_log.addFilter(_NoWireDumps())
        self._lock = threading.Lock()
        self._client: Any = None
        self._last_io = 0.0  #: monotonic time of the last PDU either way on the bind
        self._probe_sent = 0.0  #: monotonic time of an enquire_link not answered yet, or 0
        self._refused_until = 0.0
        self._refusal = ""
        self._reference = int(time.time()) % 256  #: concatenation reference, one per message
        self.sent = 0
        self.failed = 0
        self.probes_answered = 0  #: enquire_link_resp received: the SMSC answers on an idle bind
        self.reports: dict[str, int] = {}  #: delivery reports received, by ``stat``
        self._ids: tuple[str, ...] = ()  #: replaced, never changed in place: health() reads it
        self._health: dict[str, Any] = {"smsc": self.where, "system_id": settings.system_id, "bound": False}
        self._closed = threading.Event()
        self._keeper = threading.Thread(target=self._keep, name=f"smpp-keeper:{ctx.item_id}", daemon=True)
        self._keeper.start()

    # -- status ---------------------------------------------------------------------------------------
    def health(self) -> Mapping[str, Any]:
        return {
            **self._health,
            "sent": self.sent,
            "failed": self.failed,
            "last_message_ids": list(self._ids),
            "delivery_reports": dict(self.reports),
            "enquire_links_answered": self.probes_answered,
        }

    def _note(self, **facts: Any) -> None:
        self._health = {**self._health, **facts}

    def render(self, notification: Notification) -> str:
        return notification_text(notification, self.ctx, self.settings.language)

    def _fail(self, message: str, retry: bool) -> DeliveryFailed:
        self.failed += 1
        self._note(last_error=message)
        self.ctx.log.warning("SMS not sent: %s", message)
        return DeliveryFailed(message, retry=retry)

    # -- sending --------------------------------------------------------------------------------------
    def send(self, notification: Notification) -> DeliveryResult:
        try:
            number = recipient_number(notification.recipient)
        except ValueError as exc:
            raise self._fail(str(exc), False) from None
        ton, npi, digits = destination(number)
        masked = mask_mobile(number)
        with self._lock:
            encoded = encode_text(self.render(notification), self._reference, self.settings.max_parts)
            if len(encoded.parts) > 1:
                self._reference = (self._reference + 1) % 256
            ids = self._deliver(encoded, (ton, npi, digits), masked)
            self.sent += 1
        detail = f"SMS to {masked} in {len(ids)} part(s), message id(s) {', '.join(ids)}"
        if encoded.truncated:
            detail += f" (cut to {self.settings.max_parts} parts)"
        self._note(last_error="", last_sent=self.ctx.clock.wall())
        self.ctx.log.info("%s", detail)
        return DeliveryResult(
            notification.key, notification.notifier_id, DeliveryState.DELIVERED, self.ctx.clock.wall(), detail
        )

    def _deliver(self, encoded: Encoded, dest: tuple[int, int, str], masked: str) -> list[str]:
        """Every part on the bind, binding first if needed.  A bind that turns out to be stale before
        any part went is replaced once, at once."""
        total = len(encoded.parts)
        for attempt in (1, 2):
            reused = self._client is not None
            self._ensure_bound()
            ids: list[str] = []
            try:
                for part in encoded.parts:
                    ids.append(self._submit(part, encoded, dest))
                    self._ids = (*self._ids, ids[-1])[-_KEEP_IDS:]
                return ids
            except _LinkLost as exc:
                self._drop(str(exc))
                if attempt == 1 and reused and not ids:
                    self.ctx.log.info("the bind to %s was stale (%s); binding again", self.where, exc)
                    continue
                raise self._fail(
                    self._partial(f"link to the SMSC lost: {exc}", ids, total, masked), True
                ) from None
            except _Rejected as exc:
                if exc.status == ESME_RINVBNDSTS:
                    self._drop("the SMSC says the bind is not valid")
                retry = exc.status in RETRYABLE or exc.status not in _known_statuses()
                text = f"SMSC rejected it: {describe_status(exc.status)}"
                raise self._fail(self._partial(text, ids, total, masked), retry) from None
        raise AssertionError("unreachable")

    @staticmethod
    def _partial(message: str, ids: list[str], total: int, masked: str) -> str:
        """A multipart text is not atomic: say which parts went already."""
        if total == 1:
            return f"SMS to {masked}: {message}"
        text = f"SMS to {masked}, part {len(ids) + 1} of {total}: {message}"
        if ids:
            text += f"; part(s) 1-{len(ids)} already accepted (message id(s) {', '.join(ids)})"
        return text

    def _submit(self, part: bytes, encoded: Encoded, dest: tuple[int, int, str]) -> str:
        """One submit_sm, then its submit_sm_resp; what the SMSC pushes meanwhile is handled."""
        s_ton, s_npi, s_addr = source(self.settings)
        d_ton, d_npi, d_addr = dest
        client = self._client
        try:
            pdu = client.send_message(
                source_addr_ton=s_ton,
                source_addr_npi=s_npi,
                source_addr=s_addr,
                dest_addr_ton=d_ton,
                dest_addr_npi=d_npi,
                destination_addr=d_addr,
                esm_class=encoded.esm_class,
                data_coding=encoded.data_coding,
                short_message=part,
                registered_delivery=1 if self.settings.registered_delivery else 0,
            )
        except (self.lib.exceptions.ConnectionError, self.lib.exceptions.PDUError, OSError) as exc:
            raise _LinkLost(f"cannot write to the SMSC ({type(exc).__name__})") from None
        self._last_io = time.monotonic()
        deadline = time.monotonic() + float(self.settings.request_timeout)
        while True:
            resp = self._read(deadline, "submit_sm_resp")
            if resp.command in ("submit_sm_resp", "generic_nack") and resp.sequence == pdu.sequence:
                if resp.status:
                    raise _Rejected(int(resp.status))
                return _text(resp.message_id)
            self._handle(resp)

    def _read(self, deadline: float, waiting_for: str) -> Any:
        """One PDU from the SMSC before ``deadline``; :class:`_LinkLost` if none comes."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _LinkLost(f"no {waiting_for} within {float(self.settings.request_timeout):g}s")
        sock = self._client._socket  # smpplib reads with its socket's own timeout
        try:
            sock.settimeout(remaining)
            pdu = self._client.read_pdu()
        except TimeoutError:
            raise _LinkLost(f"no {waiting_for} within {float(self.settings.request_timeout):g}s") from None
        except self.lib.exceptions.ConnectionError:
            raise _LinkLost("the SMSC closed the connection") from None
        except Exception as exc:  # a PDU smpplib cannot parse: the stream is out of step
            raise _LinkLost(f"unreadable PDU from the SMSC ({type(exc).__name__})") from None
        self._last_io = time.monotonic()
        return pdu

    def _reply(self, command: str, sequence: int) -> None:
        resp = self.lib.smpp.make_pdu(command, client=self._client)
        resp.sequence = sequence
        try:
            self._client.send_pdu(resp)
        except (self.lib.exceptions.ConnectionError, OSError) as exc:
            raise _LinkLost(f"cannot write to the SMSC ({type(exc).__name__})") from None

    def _handle(self, pdu: Any) -> None:
        """A PDU that is not the answer being waited for."""
        if pdu.command == "deliver_sm":
            self._reply("deliver_sm_resp", pdu.sequence)
            self._received(pdu)
        elif pdu.command == "enquire_link":
            self._reply("enquire_link_resp", pdu.sequence)
        elif pdu.command == "enquire_link_resp":
            self._probe_sent = 0.0
            self.probes_answered += 1
        elif pdu.command == "unbind":
            with contextlib.suppress(_LinkLost):
                self._reply("unbind_resp", pdu.sequence)
            raise _LinkLost("the SMSC unbound")

    def _received(self, pdu: Any) -> None:
        """A deliver_sm: a delivery report is counted and logged (by message id), anything else (a
        staff member texting back) is ignored; neither's text nor number is logged."""
        if (pdu.esm_class or 0) & DLR_MASK != DLR_TYPE:
            self.ctx.log.info("ignored an incoming SMS from %s", mask_mobile(_text(pdu.source_addr)))
            return
        fields = {k.lower(): v for k, v in _DLR_FIELD.findall(_text(pdu.short_message))}
        message_id = _text(pdu.receipted_message_id) or fields.get("id", "?")
        stat = fields.get("stat", "").upper() or "UNKNOWN"
        self.reports = {**self.reports, stat: self.reports.get(stat, 0) + 1}  # health() reads it
        self._note(last_report={"message_id": message_id, "stat": stat, "at": self.ctx.clock.wall()})
        level = logging.INFO if stat == "DELIVRD" else logging.WARNING
        self.ctx.log.log(level, "delivery report for message %s: %s", message_id, stat)

    # -- the bind -------------------------------------------------------------------------------------
    def _ensure_bound(self) -> None:
        """Connect and bind unless bound.  Raises DeliveryFailed saying why not."""
        if self._client is not None:
            return
        now = time.monotonic()
        if now < self._refused_until:
            raise self._fail(
                f"{self._refusal} (not binding again for {self._refused_until - now:.0f}s)", False
            )
        exc_mod = self.lib.exceptions
        client = self.lib.client.Client(
            self.settings.host,
            self.settings.port,
            timeout=float(self.settings.connect_timeout),
            logger_name=self._wire_log.name,
            allow_unknown_opt_params=True,
        )
        try:
            client.connect()
        except exc_mod.ConnectionError as exc:
            client.disconnect()
            why = exc.__context__
            if isinstance(why, TimeoutError):
                text = f"did not answer within {float(self.settings.connect_timeout):g}s"
            elif isinstance(why, ConnectionRefusedError):
                text = "refused the connection (SMSC down, or wrong host or port?)"
            else:
                text = f"unreachable ({getattr(why, 'strerror', None) or why or exc})"
            self._note(bound=False)
            raise self._fail(f"SMSC {self.where} {text}", True) from None
        client._socket.settimeout(float(self.settings.request_timeout))
        bind = client.bind_transceiver if self.settings.bind == "transceiver" else client.bind_transmitter
        try:
            resp = bind(
                system_id=self.settings.system_id,
                password=self.settings.password.reveal(),
                system_type=self.settings.system_type,
            )
        except exc_mod.PDUError as exc:
            client.disconnect()
            status = exc.args[1] if len(exc.args) > 1 else ESME_RUNKNOWNERR
            self._note(bound=False)
            if status in CREDENTIAL_REFUSALS:
                hint = CREDENTIAL_REFUSALS[status]
                self._refusal = f"SMSC refused the bind: {status_name(status)} ({hint})"
                self._refused_until = time.monotonic() + REFUSAL_HOLD
                raise self._fail(self._refusal, False) from None
            raise self._fail(f"SMSC refused the bind: {describe_status(status)}", True) from None
        except (exc_mod.ConnectionError, OSError) as exc:
            client.disconnect()
            self._note(bound=False)
            timed_out = isinstance(exc.__context__, TimeoutError)
            why = "did not answer the bind in time" if timed_out else "closed the connection during the bind"
            raise self._fail(f"SMSC {self.where} {why}", True) from None
        self._client = client
        self._last_io = time.monotonic()
        self._probe_sent = 0.0
        smsc_id = _text(getattr(resp, "system_id", b""))
        self._note(bound=True, bound_since=self.ctx.clock.wall(), smsc_system_id=smsc_id, last_error="")
        self.ctx.log.info(
            "bound to SMSC %s (%s) as %s", self.where, self.settings.bind, self.settings.system_id
        )

    def _drop(self, why: str) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            self.ctx.log.warning("bind to SMSC %s dropped: %s", self.where, why)
        self._note(bound=False, last_error=why)

    # -- the keeper ---------------------------------------------------------------------------------
    def _keep(self) -> None:
        """Between sends: read what the SMSC pushes, and probe an idle bind with enquire_link."""
        idle = float(self.settings.enquire_link)
        while not self._closed.is_set():
            client = self._client
            sock = getattr(client, "_socket", None)
            if sock is None:
                self._closed.wait(0.2)
                continue
            try:
                readable = select.select([sock], [], [], 0.2)[0]
            except (OSError, ValueError):  # closed by a send that dropped the bind meanwhile
                continue
            with self._lock:
                if self._client is not client or self._closed.is_set():
                    continue
                try:
                    if readable:
                        self._poll()
                    now = time.monotonic()
                    wait = float(self.settings.request_timeout)
                    if self._probe_sent and now - self._probe_sent > wait:
                        raise _LinkLost(f"no enquire_link_resp within {wait:g}s")
                    if idle and not self._probe_sent and now - self._last_io >= idle:
                        self._probe()
                except _LinkLost as exc:
                    self._drop(str(exc))

    def _poll(self) -> None:
        sock = self._client._socket
        deadline = time.monotonic() + float(self.settings.request_timeout)
        while select.select([sock], [], [], 0)[0]:
            self._handle(self._read(deadline, "the rest of a PDU"))

    def _probe(self) -> None:
        pdu = self.lib.smpp.make_pdu("enquire_link", client=self._client)
        try:
            self._client.send_pdu(pdu)
        except (self.lib.exceptions.ConnectionError, OSError) as exc:
            raise _LinkLost(f"cannot write to the SMSC ({type(exc).__name__})") from None
        self._probe_sent = self._last_io = time.monotonic()

    def close(self) -> None:
        """Unbind politely; an SMSC that drops the line instead of answering is fine too."""
        self._closed.set()
        self._keeper.join(2)
        with self._lock:
            client, self._client = self._client, None
            if client is None:
                return
            try:
                client._socket.settimeout(min(1.0, float(self.settings.request_timeout)))
                client.unbind()
            except Exception:  # smpp34 and others close at once without unbind_resp
                pass
            client.disconnect()
            self._note(bound=False)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1").rstrip("\x00")
    return str(value)


def _known_statuses() -> set[int]:
    return {v for k, v in vars(_lib().consts).items() if k.startswith("SMPP_ESME_")}


def make_notifier(settings: SmppSettings, ctx: PluginContext) -> SmppNotifier:
    """The notifier binds at its first send, so a branch starts while the SMSC is unreachable."""
    return SmppNotifier(settings, ctx)


@vipsense.hookimpl
def vipsense_register_notifier_types(register: RegisterType) -> None:
    register(
        "sms-smpp",
        SmppSettings,
        make_notifier,
        summary=lazy_gettext("SMS to staff's mobiles through an operator's SMSC over SMPP 3.4 (smpplib)"),
        requires=("smpplib",),
        extra="smpp",
    )
