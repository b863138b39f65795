"""Prints a clear greeting block for each visit on the terminal: the lobby screen of the demo.

The ID number shows only its last 4 digits and the mobile number is masked, as on every screen
(``vipsense.privacy``), and so is any ID- or phone-shaped number typed into a name or a note.  Every
value from the identity store is printed through :func:`vipsense.privacy.printable`, so a name holding
``ESC [2J`` or a newline followed by ``tier: diamond`` shows those as escapes instead of clearing the
lobby screen or forging a line.  A visit routed to several people prints once, with one line per extra
recipient, instead of repeating the block.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import attrs

import vipsense
from vipsense.api import Notifier, PluginContext, RegisterType
from vipsense.model import Notification, Visit, VisitKind
from vipsense.privacy import mask_id_number, mask_mobile, printable, shown

_COLOURS = {"greeted": "\x1b[1;32m", "rejected": "\x1b[1;31m", "dim": "\x1b[2m", "bold": "\x1b[1m"}
_RESET = "\x1b[0m"
_REASON_TEXT = {
    "lost": "card reported LOST",
    "revoked": "card REVOKED",
    "expired": "card EXPIRED",
    "not_yet_valid": "card not yet valid",
    "wrong_branch": "card not valid at this branch",
    "tid_mismatch": "card read with a different chip ID (TID): possible clone",
    "too_fast": "card seen at another branch moments ago: possible clone",
}
_ROLE_TEXT = {
    "lobby_manager": "lobby manager",
    "client_manager": "client manager",
    "branch_manager": "branch manager",
    "head_office": "head office",
}


@attrs.frozen
class ConsoleSettings:
    color: Literal["auto", "always", "never"] = "auto"
    width: int = 64


class ConsoleNotifier(Notifier):
    def __init__(self, settings: ConsoleSettings, ctx: PluginContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self.colour = settings.color == "always" or (settings.color == "auto" and ctx.output.is_tty)
        self._last_visit = ""

    def _c(self, name: str, text: str) -> str:
        return f"{_COLOURS[name]}{text}{_RESET}" if self.colour else text

    def send(self, notification: Notification) -> None:
        visit = notification.visit
        to = self._recipient(notification)
        if visit.visit_id == self._last_visit:
            self.ctx.output.write(self._c("dim", f"    ↳ also sent to {to}"))
            return
        self._last_visit = visit.visit_id
        self.ctx.output.write(self.render(visit, to))

    def _recipient(self, n: Notification) -> str:
        role = n.recipient.role.value
        return f"{_ROLE_TEXT.get(role, role)} {printable(n.recipient.name)}"

    def render(self, visit: Visit, to: str) -> str:
        at = dt.datetime.fromtimestamp(visit.arrived_at, self.ctx.tz).strftime("%H:%M:%S")
        c = visit.customer
        lag = self.ctx.clock.real(self.ctx.clock.mono() - visit.arrival.arrived_mono) * 1000
        where = f"{printable(visit.arrival.reader_id)}/ant {visit.arrival.antenna}"
        alert = visit.kind in (VisitKind.REJECTED, VisitKind.SUSPECT)
        if visit.kind is VisitKind.UNRESOLVED:
            title = self._c("rejected", "? CARD SEEN: identity stores not answering")
        elif alert:
            reason = _REASON_TEXT.get(visit.reason.value if visit.reason else "", "card rejected")
            label = "SUSPECT CARD" if visit.kind is VisitKind.SUSPECT else "CARD ALERT"
            title = self._c("rejected", f"⚠ {label}: {reason.upper()}")
        else:
            tier = printable((visit.tier or "").upper())
            title = self._c("greeted", f"★ VIP ARRIVAL  {tier}")
        head = f"── {at} · {where} · read→screen {lag:.0f} ms "
        lines = [self._c("dim", "┌" + head + "─" * max(0, self.settings.width - len(head) - 1)), f"│ {title}"]
        if c is not None:
            name = self._c("bold", shown(c.name))
            lines.append(f"│ {name}" + (f"  ·  {shown(c.company)}" if c.company else ""))
            if c.usual_business:
                lines.append(f"│ Usual business  {shown(c.usual_business)}")
            if c.client_manager:
                manager = self.ctx.staff.get(c.client_manager)
                lines.append(f"│ Client manager  {shown(manager.name if manager else c.client_manager)}")
            ids = [f"ID {printable(mask_id_number(c.id_number))}" if c.id_number else ""]
            ids.append(f"mobile {printable(mask_mobile(c.mobile))}" if c.mobile else "")
            if any(ids):
                lines.append("│ " + "   ".join(i for i in ids if i))
            lines.append(f"│ Customer no.    {printable(c.customer_no)}")
        elif visit.card is not None:
            lines.append(f"│ Customer no. {printable(visit.card.customer_no)} (no identity store answered)")
        elif visit.kind is VisitKind.UNRESOLVED:
            lines.append(f"│ Card …{visit.arrival.epc[-4:]}: whose it is cannot be looked up right now.")
            lines.append("│ Look out for the customer; a greeting follows if a store answers.")
        if visit.stale:
            lines.append("│ (from a cached copy: the identity store could not be reached)")
        if alert:
            lines.append(f"│ Card {visit.arrival.epc}: do not greet; check the card discreetly")
        lines.append(f"│ → {to}")
        lines.append(self._c("dim", "└" + "─" * (self.settings.width - 1)))
        return "\n".join(lines)


@vipsense.hookimpl
def vipsense_register_notifier_types(register: RegisterType) -> None:
    register(
        "console",
        ConsoleSettings,
        ConsoleNotifier,
        summary="prints a greeting block on the terminal",
    )
