"""A card's life: which status changes are allowed, so every tool that changes cards (the command line,
an import, later the web station) refuses the same things.

    active --lost--> lost --restored--> active
    active or lost --revoked--> revoked          (final: a revoked card never comes back)

A reissue revokes the old card, so it too needs an active or lost one.  A new card starts active.
"""

from __future__ import annotations

from ..i18n import _
from ..model import Card, CardAction, CardStatus

#: The status each action leaves a card in.
NEW_STATUS = {
    CardAction.LOST: CardStatus.LOST,
    CardAction.RESTORED: CardStatus.ACTIVE,
    CardAction.REVOKED: CardStatus.REVOKED,
}

#: The statuses each action may start from.
ALLOWED_FROM = {
    CardAction.LOST: frozenset({CardStatus.ACTIVE}),
    CardAction.RESTORED: frozenset({CardStatus.LOST}),
    CardAction.REVOKED: frozenset({CardStatus.ACTIVE, CardStatus.LOST}),
}

#: The action a change from one status to another is, for imports that state the new status.
ACTION_TO = {status: action for action, status in NEW_STATUS.items()}


class TransitionError(ValueError):
    """The card is not in a status this change can start from."""


def check(card: Card, action: CardAction) -> CardStatus:
    """The status ``action`` leaves ``card`` in, or :class:`TransitionError` saying why not."""
    status = CardStatus(card.status)
    if status not in ALLOWED_FROM[action]:
        raise TransitionError(_why(card.epc, status, action))
    return NEW_STATUS[action]


def check_change(card: Card, new_status: CardStatus) -> None:
    """For an import that sets a status: the same rules, named by the status wanted."""
    if CardStatus(card.status) is not CardStatus(new_status):
        check(card, ACTION_TO[CardStatus(new_status)])


def _why(epc: str, status: CardStatus, action: CardAction) -> str:
    """The refusal in the language in force: the issuer reads it at the station or the command line."""
    if status is CardStatus.REVOKED:
        return _("card {epc} is revoked, and a revoked card stays revoked (issue a new card instead)").format(
            epc=epc
        )
    if action is CardAction.LOST:
        return _("card {epc} is already lost").format(epc=epc)
    if action is CardAction.RESTORED:
        return _("card {epc} is {status}, not lost: only a lost card can be found again").format(
            epc=epc, status=status.label
        )
    return _("card {epc} is {status}").format(epc=epc, status=status.label)
