"""The words the branch web shows for codes: states, visit kinds, roles, audit actions and results,
HTTP statuses.  The codes stay English (the API, the audit log, CSS classes and ``data-*``
attributes use them); what a person reads is the word, in the viewer's language.  Kept apart from
the views so that the templates, the status page's problems and the tests share one list."""

from __future__ import annotations

import json
from typing import Any

from .. import i18n
from ..i18n import lazy_gettext
from ..model import DeliveryState, Role, VisitKind
from ..states import LABELS as DEVICE_LABELS
from ..storage.audit import AuditAction, AuditResult
from ..texts import translated
from .auth import web

#: the status page's own words beside the device states: a store's ``ok``/``stale``/``down``, the
#: page's overall state, a plugin's, a PDA's (as discovery reports it) and a held card's
STATE_WORDS: dict[str, Any] = {
    "ok": lazy_gettext("ok"),
    "stale": lazy_gettext("stale"),
    "down": lazy_gettext("down"),
    "unknown": lazy_gettext("unknown"),
    "loaded": lazy_gettext("loaded"),
    "blocked": lazy_gettext("blocked"),
    "waiting": lazy_gettext("waiting"),
    "pending": lazy_gettext("pending"),
    "unresolved": lazy_gettext("unresolved"),
}

STATUSES: dict[int, Any] = {
    400: lazy_gettext("Bad request"),
    401: lazy_gettext("Not logged in"),
    403: lazy_gettext("Not allowed"),
    404: lazy_gettext("Not found"),
    405: lazy_gettext("Method not allowed"),
    409: lazy_gettext("Conflict"),
    413: lazy_gettext("Request too large"),
    429: lazy_gettext("Too many requests"),
    500: lazy_gettext("Internal error"),
    501: lazy_gettext("Not supported"),
    503: lazy_gettext("Unavailable"),
}


def _enum_label(kind: Any, value: str) -> str | None:
    try:
        return str(kind(value).label)
    except ValueError:
        return None


def state_name(state: Any) -> str:
    """A device's, store's, plugin's, PDA's or delivery's state as staff read it; an unknown word as
    it is."""
    if state is None or state == "":
        return ""
    word = str(state)
    found = DEVICE_LABELS.get(word) or STATE_WORDS.get(word)  # type: ignore[call-overload]
    if found is not None:
        return str(found)
    return _enum_label(DeliveryState, word) or word


#: a PDA as discovery last saw it: announced (``appeared``, ``updated``) or withdrawn (``gone``)
PDA_STATES: dict[str, Any] = {
    "appeared": lazy_gettext("online"),
    "updated": lazy_gettext("online"),
    "gone": lazy_gettext("offline"),
}


def pda_state(state: str | None) -> str:
    found = PDA_STATES.get(state or "")
    return str(found) if found is not None else state_name(state)


def kind_name(kind: str | None) -> str:
    """A visit's kind (``greeted``, ``rejected`` ...) as staff read it."""
    return (_enum_label(VisitKind, kind) or kind) if kind else ""


def role_name(role: str | None) -> str:
    """A role (``lobby_manager``: 大堂经理) as staff read it; ``system``, the branch itself in the
    audit log, too."""
    if role == "system":
        return str(SYSTEM)
    return (_enum_label(Role, role) or role) if role else ""


SYSTEM = lazy_gettext("system")


def action_name(action: str) -> str:
    """An audit entry's action (``card_lost``: 挂失) in the words of the audit log's own labels."""
    return _enum_label(AuditAction, action) or action


def result_name(result: str) -> str:
    return _enum_label(AuditResult, result) or result


def status_name(status: int) -> str:
    """An HTTP status as the error page heads it."""
    found = STATUSES.get(status)
    return str(found) if found is not None else ""


def tier_name(code: str | None) -> str:
    """A tier as people call it in the viewer's language (``gold``: 金卡): the profile's own name for
    it, else the core's name of the usual tiers, else the code; ``-`` for none."""
    if not code:
        return "-"
    return web().profile.tier_name(code, i18n.current())


def with_tier_name(item: dict[str, Any] | None) -> dict[str, Any] | None:
    """A visit or customer dict made for one viewer, with its tier's name in their language beside the
    code (``tier_name``; the console's script shows it)."""
    if item is None:
        return None
    out = dict(item)
    if out.get("tier"):
        out["tier_name"] = tier_name(out["tier"])
    if isinstance(out.get("customer"), dict):
        out["customer"] = with_tier_name(out["customer"])
    return out


#: what the templates call
def tier_names_json() -> str:
    """The profile's tiers by code with their names in the viewer's language, for the console's
    script: a live arrival carries only the code, since one event goes to viewers of every language."""
    profile = web().profile
    return json.dumps({code: tier_name(code) for code in profile.tiers}, ensure_ascii=False)


GLOBALS = {
    "translated": translated,
    "tier_names_json": tier_names_json,
    "state_name": state_name,
    "pda_state": pda_state,
    "kind_name": kind_name,
    "role_name": role_name,
    "action_name": action_name,
    "result_name": result_name,
    "status_name": status_name,
}
