"""Chinese resident ID numbers (GB 11643-1999): is a string a whole, well-formed one?

An ID number is 18 characters: a 6-digit region code, the 8-digit birth date (YYYYMMDD), a 3-digit
sequence number (odd for men) and a check character computed over the first 17 with ISO 7064
MOD 11-2 (``X`` stands for 10).  Reference: ``centre.md`` (ID-number structure).

Look-ups by ID number answer only for a number that passes :func:`valid_id_number` (pen test point 1):
a guess at the digits a masked number hides must be a whole, valid number, and each one counts
against the look-up limits.
"""

from __future__ import annotations

import datetime as dt
import re

_SHAPE = re.compile(r"\d{17}[\dX]")
#: ISO 7064 MOD 11-2 weights, 2**(17 - i) mod 11 for positions 0..16
WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK = "10X98765432"  #: the check character for each remainder 0..10


def check_character(first17: str) -> str:
    """The check character of the first 17 digits of an ID number."""
    return CHECK[sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True)) % 11]


def valid_id_number(value: str, today: dt.date | None = None) -> bool:
    """Whether ``value`` (upper-case ``X``) is a whole ID number: 17 digits and the right check
    character, with a birth date that is a real day between 1900-01-01 and today."""
    if not _SHAPE.fullmatch(value) or check_character(value[:17]) != value[17]:
        return False
    try:
        born = dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    return dt.date(1900, 1, 1) <= born <= (today or dt.date.today())
