"""Card policy: which cards must never be greeted.  A pure function, so it is easy to test."""

from __future__ import annotations

import datetime as dt

from .model import Card, CardStatus, RejectReason

#: Reasons that also alert the branch manager (the card may be in the wrong hands).
ALERT_REASONS = frozenset({RejectReason.LOST, RejectReason.REVOKED})


def judge(card: Card, branch_id: str, today: dt.date) -> RejectReason | None:
    """``None`` for a card that may be greeted, else the first reason it may not."""
    if card.status is CardStatus.LOST:
        return RejectReason.LOST
    if card.status is CardStatus.REVOKED:
        return RejectReason.REVOKED
    if card.valid_until is not None and today > card.valid_until:
        return RejectReason.EXPIRED
    if card.valid_from is not None and today < card.valid_from:
        return RejectReason.NOT_YET_VALID
    if card.allowed_branches and branch_id not in card.allowed_branches:
        return RejectReason.WRONG_BRANCH
    return None
