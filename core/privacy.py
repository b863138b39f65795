"""Masking of personal financial information (JR/T 0171-2020 class C2).

ID numbers and mobile numbers are masked on every screen, message and log by default; see
``privacy-security.md`` §1 (JR/T 0171-2020 annex A "information masking") and §4 item 3.  This is the
one module that decides how a field is masked, so every output path shows the same thing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

MASK_CHAR = "*"


def mask_tail(value: str | None, keep: int = 4) -> str:
    """Mask everything but the last ``keep`` characters: ``110101199003071234`` -> ``**************1234``."""
    if not value:
        return ""
    if len(value) <= keep:
        return MASK_CHAR * len(value)
    return MASK_CHAR * (len(value) - keep) + value[-keep:]


def mask_id_number(value: str | None) -> str:
    """An ID number shows only its last 4 characters."""
    return mask_tail(value, 4)


def mask_mobile(value: str | None) -> str:
    """A mobile number keeps its first 3 and last 4 digits: ``138****5678``."""
    if not value:
        return ""
    if len(value) <= 7:
        return mask_tail(value, 2)
    return value[:3] + MASK_CHAR * (len(value) - 7) + value[-4:]


#: The customer fields a notifier may send off the branch (a profile lists which); the masked ones masked.
CUSTOMER_FIELDS = ("customer_no", "name", "tier", "company", "id_number", "mobile", "usual_business")

#: Fields masked wherever a record is shown, by field name.
MASKED_FIELDS = {"id_number": mask_id_number, "mobile": mask_mobile}


def mask_field(name: str, value: str | None) -> str | None:
    """``value`` masked if ``name`` is a masked field, else unchanged."""
    masker = MASKED_FIELDS.get(name)
    return masker(value) if masker and value else value


def masked_repr(kind: str) -> Callable[[str | None], str]:
    """An attrs ``repr=`` callable that never shows the raw value of a C2 field."""
    masker = MASKED_FIELDS[kind]

    def _repr(value: str | None) -> str:
        return repr(masker(value))

    return _repr


# -- numbers in free text ----------------------------------------------------------------------------
# A name, a company, an audit reason or a card-history note is free text, and people type personal
# numbers into it however they like: "tel+8613900007919", "ID310115198002081033", "139 0000 7919",
# "(021) 5888-1234".  ``privacy-security.md`` §1 asks for masking on every screen, message and log
# line, so free text is searched for numbers of these shapes, written with the usual separators,
# prefixes and country codes, and masked like the fields they belong to:
#
# * a resident ID number (GB 11643, ``centre.md``: 6-digit region, birth date, 3-digit sequence,
#   check character; the first-generation form has a 6-digit birth date and no check character):
#   everything but its last 4 characters;
# * a mobile number (11 digits, 1[3-9]...), with or without +86 / 0086 / 86: its first 3 and last
#   4 digits stay, as :func:`mask_mobile` shows a mobile field;
# * an 8-digit landline, with or without an area code or +86: only its last 4 digits stay, whichever
#   way it is written, so one number always masks to the same digits.
#
# Separators (space, dash, dot) and prefixes are kept, so the text still reads.  An EPC or TID (a
# token of 16 or more hex characters with a letter in it) is never touched, and neither is a number
# glued to letters, such as a customer number "C13900007919", unless those letters are a label such
# as "tel", "mobile" or "ID" (an ID number, whose birth date makes its shape specific, is masked
# after any letters).

_SEP = r"[ .\-\u00a0]?"
_ID_18 = re.compile(
    r"(?<![0-9])[0-9]{6}" + _SEP + r"(?:19|20)[0-9]{2}" + _SEP + r"(?:0[1-9]|1[0-2])" + _SEP
    + r"(?:0[1-9]|[12][0-9]|3[01])" + _SEP + r"[0-9]{3}[0-9Xx](?![0-9])"
)  # fmt: skip
_ID_15 = re.compile(
    r"(?<![0-9])[0-9]{6}" + _SEP + r"[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])" + _SEP
    + r"[0-9]{3}(?![0-9Xx])"
)  # fmt: skip
_COUNTRY = r"(?:(?:\+|00)86[ \-]?|\(\+?86\)[ \-]?)"
_MOBILE = re.compile(
    r"(?<![0-9])(?P<cc>" + _COUNTRY + r"|86[ \-]?)?(?P<no>1[3-9][0-9]" + _SEP + r"[0-9]{4}" + _SEP
    + r"[0-9]{4})(?![0-9])"
)  # fmt: skip
_LANDLINE = re.compile(
    r"(?<![0-9])(?P<cc>" + _COUNTRY + r")?(?P<no>(?:\(?0?[1-9][0-9]{1,2}\)?[ \-]?)?[2-9][0-9]{3}"
    + _SEP + r"[0-9]{4})(?![0-9])"
)  # fmt: skip
_LABELS = ("tel", "phone", "ph", "mobile", "mob", "cell", "fax", "id", "idno", "idcard", "no", "nr", "num")
_ALNUM_BEFORE = re.compile(r"[0-9A-Za-z]+$")
_HEX_TOKEN = re.compile(r"[0-9A-Fa-f]{16,}")
_TOKEN = re.compile(r"[0-9A-Za-z]+")
_WIDE = str.maketrans("０１２３４５６７８９＋－（）", "0123456789+-()")


def _glued(text: str, start: int) -> bool:
    """Whether the number at ``start`` is glued to letters that are not a label (a customer number)."""
    before = _ALNUM_BEFORE.search(text, 0, start)
    if before is None:
        return False
    word = before.group().lower()
    return not any(word.endswith(label) for label in _LABELS)


def _in_epc(tokens: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(a <= start and end <= b for a, b in tokens)


def _keep_digits(span: str, keep_first: int, keep_last: int) -> str:
    """``span`` with every digit (and an ID's X) masked but the first and last ones asked for."""
    positions = [i for i, ch in enumerate(span) if ch.isdigit() or ch in "Xx"]
    shown = set(positions[:keep_first]) | set(positions[len(positions) - keep_last :])
    return "".join(MASK_CHAR if i in positions and i not in shown else ch for i, ch in enumerate(span))


def mask_personal_numbers(text: str | None) -> str:
    """``text`` with every ID-number-, mobile- or landline-shaped number masked, however written.
    Never an EPC or a customer number (see the comment above)."""
    if not text:
        return text or ""
    plain = text.translate(_WIDE)  # the same length: positions stay those of ``text``
    if not any(ch.isdigit() for ch in plain):
        return text
    epcs = [
        m.span()
        for m in _TOKEN.finditer(plain)
        if _HEX_TOKEN.fullmatch(m.group()) and not m.group().isdigit()
    ]
    out = list(text)
    masked = [False] * len(text)

    def apply(pattern: re.Pattern[str], mask: Callable[[str], str], any_letters: bool) -> None:
        for m in pattern.finditer(plain):
            start = m.start("no") if "no" in pattern.groupindex else m.start()
            end = m.end()
            if _in_epc(epcs, start, end) or any(masked[start:end]):
                continue
            if not any_letters and _glued(plain, m.start()):
                continue
            span = mask(plain[start:end])
            for i, ch in enumerate(span):
                if ch == MASK_CHAR:
                    out[start + i] = MASK_CHAR
                masked[start + i] = True

    apply(_ID_18, lambda s: _keep_digits(s, 0, 4), any_letters=True)
    apply(_ID_15, lambda s: _keep_digits(s, 0, 4), any_letters=True)
    apply(_MOBILE, lambda s: _keep_digits(s, 3, 4), any_letters=False)
    apply(_LANDLINE, lambda s: _keep_digits(s, 0, 4), any_letters=False)
    return "".join(out)


# -- text fit to print and to store -----------------------------------------------------------------
# A customer's fields come from the bank's files and directory, and a terminal obeys what it is sent:
# ESC [ 2 J clears the screen, ESC ] 0 ; ... BEL sets the window title, a newline starts a line that
# looks like vipsense's own ("tier: diamond").  So control characters (C0, DEL, C1), the Unicode line
# and paragraph separators, and the bidirectional overrides that reorder what is shown are removed
# when data is stored (:func:`clean_text`; NUL is refused: it ends strings in C and in many tools),
# and shown as visible escapes (``\x1b``, ``\n``) wherever text is printed (:func:`printable`), for
# data stored before this rule or reaching a screen by another way.

#: What :func:`clean_text` removes and :func:`printable` escapes.
UNSAFE = _UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile("(?:\r\n|[\t\n\v\f\r\x85\u2028\u2029])+")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class UnsafeText(ValueError):
    """A value that must not be stored (a NUL character)."""


def _escape(m: re.Match[str]) -> str:
    ch = m.group()
    return _ESCAPES.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def printable(text: Any) -> str:
    """``text`` (anything, as ``str``) fit to print on a terminal, a page or a text message: control
    characters and direction overrides shown as escapes (``ESC`` as ``\\x1b``), never sent raw."""
    text = "" if text is None else str(text)
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def clean_text(text: str) -> str:
    """``text`` fit to store: line breaks and tabs become one space, other control characters and
    direction overrides are removed.  Raises :class:`UnsafeText` for a NUL character."""
    if not _UNSAFE.search(text):
        return text
    if "\x00" in text:
        raise UnsafeText("contains a NUL character")
    return _UNSAFE.sub("", _LINE_BREAKS.sub(" ", text))


def shown(text: Any, unmask: bool = False) -> str:
    """Free text for a screen: personal numbers in it masked (unless ``unmask``), printable."""
    value = "" if text is None else str(text)
    return printable(value if unmask else mask_personal_numbers(value))
