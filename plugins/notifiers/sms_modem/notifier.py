"""The SMS pager notifier: one text per notification through a GSM modem, in PDU mode.

``send`` renders the visit (:func:`vipsense.sms.render`), cuts it into concatenated PDUs (:mod:`.pdu`), makes
sure the modem is ready (:mod:`.modem`: the port opened and the start-up checks passed, again after
any failure) and sends each part with ``AT+CMGS``.  It raises :class:`vipsense.api.DeliveryFailed`
with words staff understand and whether a retry can help; it never waits past ``send_timeout``.

A multipart text is not atomic (``sms-paging.md`` §4): if part 2 fails, part 1 was delivered.  The
failure says so, with the ``+CMGS`` reference of each part that went.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from vipsense.api import DeliveryFailed, DeliveryResult, Notifier, PluginContext
from vipsense.model import DeliveryState, Notification
from vipsense.privacy import mask_mobile
from vipsense.sms import notification_text, recipient_number

from .at import AtError, AtTimeout, LinkLost
from .modem import Modem, ModemNotReady
from .pdu import encode_message


class GsmNotifier(Notifier):
    def __init__(
        self, settings: Any, ctx: PluginContext, url: str, on_close: Callable[[], None] | None = None
    ) -> None:
        self.settings = settings
        self.ctx = ctx
        self.modem = Modem(
            url,
            baudrate=settings.baudrate,
            pin=settings.pin,
            smsc=settings.smsc,
            command_timeout=float(settings.command_timeout),
            log=ctx.log,
            wall=ctx.clock.wall,
        )
        self._on_close = on_close
        self.emulator: Any = None  #: with ``emulate:``, the in-process modem emulator
        self.warming: threading.Thread | None = None  #: the start-up checks run at start
        self._lock = threading.Lock()
        self._reference = random.randrange(256)  #: concatenation reference, fresh per message (§4)
        self.sent = 0
        self.failed = 0

    def health(self) -> Mapping[str, Any]:
        return {**self.modem.health, "sent": self.sent, "failed": self.failed}

    def render(self, notification: Notification) -> str:
        return notification_text(notification, self.ctx, self.settings.language)

    def _fail(self, message: str, retry: bool) -> DeliveryFailed:
        self.failed += 1
        self.modem.note(last_error=message)
        self.ctx.log.warning("SMS not sent: %s", message)
        return DeliveryFailed(message, retry=retry)

    def send(self, notification: Notification) -> DeliveryResult:
        try:
            number = recipient_number(notification.recipient)
        except ValueError as exc:
            raise self._fail(str(exc), False) from None
        masked = mask_mobile(number)
        with self._lock:
            segments, pdus = encode_message(
                number,
                self.render(notification),
                reference=self._reference,
                max_parts=self.settings.max_parts,
                smsc=self.settings.smsc,
            )
            if len(pdus) > 1:
                self._reference = (self._reference + 1) % 256
            references = self._deliver(pdus, masked, time.monotonic() + float(self.settings.send_timeout))
            self.sent += 1
        refs = ", ".join("?" if r is None else str(r) for r in references)
        detail = f"SMS to {masked} in {len(pdus)} part(s), reference(s) {refs}"
        if segments.truncated:
            detail += f" (cut to {self.settings.max_parts} parts)"
        self.ctx.log.info("%s", detail)
        return DeliveryResult(
            notification.key, notification.notifier_id, DeliveryState.DELIVERED, self.ctx.clock.wall(), detail
        )

    def warm_up(self) -> threading.Thread:
        """Run the start-up checks now, on a thread, so the status page shows SIM, network and
        signal before the first visit; a failure is only recorded (the next send tries again)."""

        def check() -> None:
            with self._lock:
                try:
                    self._ready(time.monotonic() + float(self.settings.send_timeout))
                except (ModemNotReady, AtTimeout, LinkLost) as exc:
                    self.modem.close()
                    self.modem.note(last_error=str(exc))
                    self.ctx.log.warning("modem not ready yet: %s", exc)

        thread = threading.Thread(target=check, name=f"gsm-warm-up:{self.ctx.item_id}", daemon=True)
        thread.start()
        self.warming = thread
        return thread

    def _ready(self, deadline: float) -> None:
        try:
            self.modem.ensure_ready(deadline)
        except AtError as exc:  # a start-up command refused: say which
            raise ModemNotReady(str(exc), retry=exc.info.retry) from exc

    def _deliver(self, pdus: list, masked: str, deadline: float) -> list[int | None]:
        """Each part in turn; any failure becomes one DeliveryFailed."""
        references: list[int | None] = []
        try:
            self._ready(deadline)
            for pdu in pdus:
                references.append(self.modem.send_pdu(pdu.hex, pdu.tpdu_length, deadline))
        except ModemNotReady as exc:
            self.modem.close()
            raise self._fail(f"modem not ready: {exc}", exc.retry) from exc
        except AtError as exc:
            self.modem.ready = False  # check SIM, network and SMS centre again before the next one
            raise self._fail(
                self._partial(exc.info.message, references, len(pdus), masked), exc.info.retry
            ) from exc
        except AtTimeout as exc:
            self.modem.close(str(exc))  # the line is in an unknown state: start afresh next time
            message = f"{exc} (send_timeout {self.settings.send_timeout:g} s)"
            raise self._fail(self._partial(message, references, len(pdus), masked), True) from exc
        except LinkLost as exc:
            self.modem.close(str(exc))
            raise self._fail(
                self._partial(f"modem link lost: {exc}", references, len(pdus), masked), True
            ) from exc
        return references

    @staticmethod
    def _partial(message: str, references: list[int | None], total: int, masked: str) -> str:
        if total == 1:
            return f"SMS to {masked}: {message}"
        done = len(references)
        text = f"SMS to {masked}, part {done + 1} of {total}: {message}"
        if done:
            refs = ", ".join("?" if r is None else str(r) for r in references)
            text += f"; part(s) 1-{done} already delivered (reference(s) {refs})"
        return text

    def close(self) -> None:
        self.modem.close(final=True)
        if self._on_close is not None:
            self._on_close()
