"""Card policy: which cards must never be greeted.  Pure functions, so they are easy to test."""

from __future__ import annotations

import datetime as dt

from ..model import Card, CardStatus, RejectReason

#: Reasons that also alert the branch manager (the card may be in the wrong hands).
ALERT_REASONS = frozenset({RejectReason.LOST, RejectReason.REVOKED})


def judge(
    card: Card,
    branch_id: str,
    today: dt.date,
    *,
    read_tid: str | None = None,
    now: float | None = None,
    min_travel: float = 0.0,
) -> RejectReason | None:
    """``None`` for a card that may be greeted, else the first reason it may not.

    Lost and revoked come first (the card is known to be in the wrong hands), then the two suspect
    reasons (``privacy-security.md`` §5 countermeasures 2 and 5), then validity.
    """
    if card.status is CardStatus.LOST:
        return RejectReason.LOST
    if card.status is CardStatus.REVOKED:
        return RejectReason.REVOKED
    suspect = judge_suspect(card, branch_id, read_tid=read_tid, now=now, min_travel=min_travel)
    if suspect is not None:
        return suspect
    if card.valid_until is not None and today > card.valid_until:
        return RejectReason.EXPIRED
    if card.valid_from is not None and today < card.valid_from:
        return RejectReason.NOT_YET_VALID
    if card.allowed_branches and branch_id not in card.allowed_branches:
        return RejectReason.WRONG_BRANCH
    return None


def judge_suspect(
    card: Card, branch_id: str, *, read_tid: str | None, now: float | None, min_travel: float
) -> RejectReason | None:
    """A probably cloned or misused card.

    * TID binding: a card enrolled with a TID and read with another one.  A read without a TID
      (a reader not set to report it) proves nothing either way, so it is not suspect.
    * Travel: the card arrived at another branch less than ``min_travel`` seconds ago.  Needs a
      store shared between branches that records sightings (:meth:`IdentityStore.card_seen`).
    """
    if card.tid and read_tid and card.tid.upper() != read_tid.upper():
        return RejectReason.TID_MISMATCH
    if (
        min_travel > 0
        and now is not None
        and card.last_seen_at is not None
        and card.last_seen_branch
        and card.last_seen_branch != branch_id
        and now - card.last_seen_at < min_travel
    ):
        return RejectReason.TOO_FAST
    return None
