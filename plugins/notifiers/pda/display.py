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

from vipsense.privacy import MASK_CHAR, mask_id_number

from .protocol import EVENT_TITLES

HINT = "press Enter (or a) to acknowledge"
REF_LABEL = "Ref"
WIDTH = 46
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
    words = EVENT_TITLES.get(doc.get("event", ""), "VIP arrival")
    reason = doc.get("reason")
    return f"{words} ({clean(reason).replace('_', ' ')})" if reason else words


def local_time(doc: dict[str, Any]) -> str:
    at = doc.get("arrived_unix")
    when = dt.datetime.fromtimestamp(at) if isinstance(at, int | float) else dt.datetime.now()
    return when.strftime("%H:%M:%S")


def label(doc: dict[str, Any]) -> str:
    """One line naming the arrival, for the acknowledgement lines and the waiting list."""
    customer = doc.get("customer") or {}
    return f"{title(doc)}: {clean(customer.get('name'))} ({clean(doc.get('tier') or customer.get('tier'))})"


def render(doc: dict[str, Any]) -> str:
    """The framed block for one verified push."""
    customer = doc.get("customer")
    lines = [f"┌{'─' * WIDTH}", f"│ {local_time(doc)}  {title(doc)}"]
    rows: list[tuple[str, str]] = []
    if customer:
        rows += [
            ("Name", clean(customer.get("name"))),
            ("Tier", clean(doc.get("tier") or customer.get("tier"))),
            ("Customer", clean(customer.get("customer_no"))),
            ("ID number", masked_id(customer.get("id_number"))),
            ("Company", clean(customer.get("company"))),
            ("Business", clean(customer.get("usual_business"))),
        ]
    elif doc.get("event") == "unresolved":
        rows.append(("Name", "(not known yet: look out at the door)"))
    else:
        rows += [("Name", "(customer not found)"), ("Tier", clean(doc.get("tier")))]
    if doc.get("escalated_from"):
        rows.append(("Escalated", f"{clean(doc['escalated_from'])} did not respond"))
    rows += [("Door", clean(doc.get("reader"))), (REF_LABEL, clean(doc.get("key")))]
    lines += [f"│ {name:<10} {value}" for name, value in rows]
    lines.append(f"└─ {HINT} {'─' * max(3, WIDTH - len(HINT) - 3)}")
    return "\n".join(lines)
