"""How a PDA shows one push in a terminal: a framed block a busy lobby manager reads at a glance.

Everything the agent prints goes through :func:`printable` first (its ``say``), and every value from
the network through :func:`clean` before it is put in a line: a push or a zeroconf record must not be
able to move the cursor, retitle or recolour the terminal, reorder text, or forge a line of the block.
So escape sequences are dropped whole (CSI, OSC, DCS and the rest, in their ESC and C1 forms), other
control characters become spaces (a newline in a name stays on its line), and format characters go
(the bidirectional overrides and isolates U+202A-U+202E and U+2066-U+2069, zero-width characters).
An ID number that somehow arrives unmasked is masked here too (defence in depth: the hub already
masks it).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Any

from vipsense.i18n import _, lazy_gettext
from vipsense.output import display_width, pad
from vipsense.privacy import MASK_CHAR, mask_id_number
from vipsense.sms import REASONS, tier_name

from .protocol import EVENT_TITLES

HINT = lazy_gettext("press Enter (or a) to acknowledge")
REF_LABEL = lazy_gettext("Ref")  #: the label of the line that names the push (tests look for it)
WIDTH = 46
LABEL_COLUMNS = 10  #: terminal columns of the labels (a Chinese character takes two)
#: An escape sequence as a terminal (ECMA-48) reads it, in its 7-bit (ESC ...) or 8-bit (C1) form.
_ESCAPE = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?"  # CSI: parameters, intermediates, final
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC DCS SOS PM APC
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]?"  # any other ESC sequence
)
#: Unicode categories replaced by a space (controls, line and paragraph separators) or dropped
#: (format characters such as the bidi overrides, and lone surrogates, which cannot even be encoded).
_AS_SPACE = frozenset({"Cc", "Zl", "Zp"})
_DROPPED = frozenset({"Cf", "Cs"})


def printable(text: str) -> str:
    """``text`` without escape sequences, control or format characters; line breaks become spaces.
    Private-use and unassigned characters stay: rare characters in Chinese names use them."""
    text = _ESCAPE.sub("", text)
    out = []
    for char in text:
        if char.isprintable():  # the quick path: most characters
            out.append(char)
            continue
        category = unicodedata.category(char)
        if category in _AS_SPACE:
            out.append(" ")
        elif category not in _DROPPED:
            out.append(char)
    return "".join(out)


def screen(text: str) -> str:
    """A block of lines as the agent prints it: each line made :func:`printable`, the line breaks kept."""
    return "\n".join(printable(line) for line in text.split("\n"))


def clean(value: Any) -> str:
    """A value from the network fit to put in one line: :func:`printable`, trimmed, or ``-``."""
    if value is None or value == "":
        return "-"
    return printable(str(value)).strip() or "-"


def masked_id(value: Any) -> str:
    if not value:
        return "-"
    text = clean(value)
    return text if MASK_CHAR in text else mask_id_number(text)


def title(doc: dict[str, Any]) -> str:
    words = str(EVENT_TITLES.get(doc.get("event", ""), EVENT_TITLES["arrival"]))
    reason = doc.get("reason")
    if not reason:
        return words
    # a reason this agent knows is shown in its words; one from a newer hub as it was sent
    known = REASONS.get(str(reason))
    why = str(known) if known is not None else clean(reason).replace("_", " ")
    return _("{event} ({reason})").format(event=words, reason=why)


def local_time(doc: dict[str, Any]) -> str:
    at = doc.get("arrived_unix")
    when = dt.datetime.fromtimestamp(at) if isinstance(at, int | float) else dt.datetime.now()
    return when.strftime("%H:%M:%S")


def label(doc: dict[str, Any]) -> str:
    """One line naming the arrival, for the acknowledgement lines and the waiting list."""
    customer = doc.get("customer") or {}
    tier = tier_name(doc.get("tier") or customer.get("tier")) or "-"
    return _("{event}: {name} ({tier})").format(
        event=title(doc), name=clean(customer.get("name")), tier=clean(tier)
    )


def render(doc: dict[str, Any]) -> str:
    """The framed block for one verified push, in the language in force (the hub's, else the PDA's)."""
    customer = doc.get("customer")
    lines = [f"┌{'─' * WIDTH}", f"│ {local_time(doc)}  {title(doc)}"]
    rows: list[tuple[str, str]] = []
    tier = clean(tier_name(doc.get("tier") or (customer or {}).get("tier")))
    if customer:
        rows += [
            (_("Name"), clean(customer.get("name"))),
            (_("Tier"), tier),
            (_("Customer"), clean(customer.get("customer_no"))),
            (_("ID number"), masked_id(customer.get("id_number"))),
            (_("Company"), clean(customer.get("company"))),
            (_("Business"), clean(customer.get("usual_business"))),
        ]
    elif doc.get("event") == "unresolved":
        rows.append((_("Name"), _("(not known yet: look out at the door)")))
    else:
        rows += [(_("Name"), _("(customer not found)")), (_("Tier"), tier)]
    if doc.get("escalated_from"):
        rows.append((_("Escalated"), _("{name} did not respond").format(name=clean(doc["escalated_from"]))))
    rows += [(_("Door"), clean(doc.get("reader"))), (str(REF_LABEL), clean(doc.get("key")))]
    lines += [f"│ {pad(name, LABEL_COLUMNS)} {value}" for name, value in rows]
    hint = str(HINT)
    lines.append(f"└─ {hint} {'─' * max(3, WIDTH - display_width(hint) - 3)}")
    return "\n".join(lines)
