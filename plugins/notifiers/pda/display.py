"""How a PDA shows one push in a terminal: a framed block a busy lobby manager reads at a glance.

Text from the network is stripped of control characters before it is printed, so a push cannot
move the cursor or change the terminal; an ID number that somehow arrives unmasked is masked here
too (defence in depth: the hub already masks it).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from vipsense.privacy import MASK_CHAR, mask_id_number

from .protocol import EVENT_TITLES

HINT = "press Enter (or a) to acknowledge"
REF_LABEL = "Ref"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
WIDTH = 46


def clean(value: Any) -> str:
    """A value fit to print: a string without control characters, or ``-``."""
    if value is None or value == "":
        return "-"
    return _CONTROL.sub(" ", str(value)).strip() or "-"


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
