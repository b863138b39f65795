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
from vipsense.i18n import _, lazy_gettext
from vipsense.model import Notification, Visit, VisitKind
from vipsense.output import display_width, pad
from vipsense.privacy import mask_id_number, mask_mobile, printable, shown
from vipsense.sms import REASONS, tier_name

_COLOURS = {"greeted": "\x1b[1;32m", "rejected": "\x1b[1;31m", "dim": "\x1b[2m", "bold": "\x1b[1m"}
_RESET = "\x1b[0m"
#: the SMS's words for why a card was refused, and longer ones for the two suspect cards: the lobby
#: screen has room to say what was seen
_REASON_TEXT = {
    **REASONS,
    "tid_mismatch": lazy_gettext("card read with a different chip ID (TID): possible clone"),
    "too_fast": lazy_gettext("card seen at another branch moments ago: possible clone"),
}
_ROLE_TEXT = {
    "lobby_manager": lazy_gettext("lobby manager"),
    "client_manager": lazy_gettext("client manager"),
    "branch_manager": lazy_gettext("branch manager"),
    "head_office": lazy_gettext("head office"),
}
LABEL_COLUMNS = 16  #: the labels' column, in terminal columns (a Chinese character takes two)


def _row(label: str, value: str) -> str:
    """``│ label   value`` with the values lined up whatever the language of the labels."""
    return f"│ {pad(label, LABEL_COLUMNS - 2)}  {value}"


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
            self.ctx.output.write(
                self._c("dim", "    ↳ " + _("also sent to {recipient}").format(recipient=to))
            )
            return
        self._last_visit = visit.visit_id
        self.ctx.output.write(self.render(visit, to))

    def _recipient(self, n: Notification) -> str:
        role = n.recipient.role.value
        return f"{_ROLE_TEXT.get(role, role)} {printable(n.recipient.name)}"

    def render(self, visit: Visit, to: str) -> str:
        """The greeting block, in the language in force (the branch's)."""
        at = dt.datetime.fromtimestamp(visit.arrived_at, self.ctx.tz).strftime("%H:%M:%S")
        c = visit.customer
        lag = self.ctx.clock.real(self.ctx.clock.mono() - visit.arrival.arrived_mono) * 1000
        where = _("{reader}/ant {antenna}").format(
            reader=printable(visit.arrival.reader_id), antenna=visit.arrival.antenna
        )
        alert = visit.kind in (VisitKind.REJECTED, VisitKind.SUSPECT)
        if visit.kind is VisitKind.UNRESOLVED:
            title = self._c("rejected", "? " + _("CARD SEEN: identity stores not answering"))
        elif alert:
            reason = str(_REASON_TEXT.get(visit.reason.value if visit.reason else "", _("card rejected")))
            label = _("SUSPECT CARD") if visit.kind is VisitKind.SUSPECT else _("CARD ALERT")
            title = self._c(
                "rejected", "⚠ " + _("{label}: {reason}").format(label=label, reason=reason.upper())
            )
        else:
            title = self._c("greeted", "★ " + _("VIP ARRIVAL  {tier}").format(tier=tier_name(visit.tier)))
        lag_text = _("read→screen {ms} ms").format(ms=f"{lag:.0f}")
        head = f"── {at} · {where} · {lag_text} "
        rule = "─" * max(0, self.settings.width - display_width(head) - 1)
        lines = [self._c("dim", "┌" + head + rule), f"│ {title}"]
        if c is not None:
            name = self._c("bold", shown(c.name))
            lines.append(f"│ {name}" + (f"  ·  {shown(c.company)}" if c.company else ""))
            if c.usual_business:
                lines.append(_row(_("Usual business"), shown(c.usual_business)))
            if c.client_manager:
                manager = self.ctx.staff.get(c.client_manager)
                lines.append(_row(_("Client manager"), shown(manager.name if manager else c.client_manager)))
            ids = [
                _("ID {id_number}").format(id_number=printable(mask_id_number(c.id_number)))
                if c.id_number
                else "",
                _("mobile {mobile}").format(mobile=printable(mask_mobile(c.mobile))) if c.mobile else "",
            ]
            if any(ids):
                lines.append("│ " + "   ".join(i for i in ids if i))
            lines.append(_row(_("Customer no."), printable(c.customer_no)))
        elif visit.card is not None:
            text = _("Customer no. {customer_no} (no identity store answered)")
            lines.append("│ " + text.format(customer_no=printable(visit.card.customer_no)))
        elif visit.kind is VisitKind.UNRESOLVED:
            text = _("Card …{epc_tail}: whose it is cannot be looked up right now.")
            lines.append("│ " + text.format(epc_tail=visit.arrival.epc[-4:]))
            lines.append("│ " + _("Look out for the customer; a greeting follows if a store answers."))
        if visit.stale:
            lines.append("│ " + _("(from a cached copy: the identity store could not be reached)"))
        if alert:
            text = _("Card {epc}: do not greet; check the card discreetly")
            lines.append("│ " + text.format(epc=visit.arrival.epc))
        lines.append(f"│ → {to}")
        lines.append(self._c("dim", "└" + "─" * (self.settings.width - 1)))
        return "\n".join(lines)


@vipsense.hookimpl
def vipsense_register_notifier_types(register: RegisterType) -> None:
    register(
        "console",
        ConsoleSettings,
        ConsoleNotifier,
        summary=lazy_gettext("prints a greeting block on the terminal"),
    )
