"""Masking of personal financial information (JR/T 0171-2020 class C2).

ID numbers and mobile numbers are masked on every screen, message and log by default; see
``privacy-security.md`` §1 (JR/T 0171-2020 annex A "information masking") and §4 item 3.  This is the
one module that decides how a field is masked, so every output path shows the same thing.
"""

from __future__ import annotations

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


#: Fields masked wherever a record is shown, by field name.
MASKED_FIELDS = {"id_number": mask_id_number, "mobile": mask_mobile}


def mask_field(name: str, value: str | None) -> str | None:
    """``value`` masked if ``name`` is a masked field, else unchanged."""
    masker = MASKED_FIELDS.get(name)
    return masker(value) if masker and value else value


def masked_repr(kind: str):
    """An attrs ``repr=`` callable that never shows the raw value of a C2 field."""
    masker = MASKED_FIELDS[kind]

    def _repr(value: str | None) -> str:
        return repr(masker(value))

    return _repr
