"""Keep a branch's local replica of cards and customers fresh from the central store.

A profile layers its stores, e.g. the central LDAP directory first and a local SQLite replica second,
and names them in ``sync: {source: central, target: local, interval: 5m}``.  One refresh reads every
card (and the customers those cards belong to) from the source and replaces the replica's contents
in one transaction, so lookups see the old copy or the new one, never a mix.

The guarantee, for a branch that is running: a card revoked (or reported lost) centrally at time *t*
is refused by the replica from the first refresh that starts after *t*, that is by
*t + interval + the refresh's own duration*, provided the centre was reachable for that refresh.
While the centre itself answers, the door asks it first and sees the revocation at once (subject to
that store's own cache; the LDAP store keeps card entries for a short TTL).  If the centre becomes
unreachable before a refresh after *t* succeeds, the replica still holds the card as it was: status
shows the time of the last good refresh, so staff know how old the branch's copy is.

What is copied is checked as an import checks a file (:func:`vipsense.identity.records.clean_customer`): text
without control characters and within its length, a plain customer number.  A customer or card that
fails (a NUL character, a wildcard customer number) is left out, logged and counted in the audit entry;
the rest is copied.  The replica seals the ID and mobile numbers itself, as every write to it does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import attrs

from ..api import CardRegistry, IdentityStore, StoreUnsupported
from ..clock import Clock
from ..config.profile import Profile
from ..errors import describe
from ..i18n import _
from ..model import Card
from ..pluginhost import PluginHost
from ..privacy import printable
from ..storage.audit import AuditAction, AuditLog, AuditResult, open_audit_log
from .records import FieldError, clean_card, clean_customer
from .standalone import build

log = logging.getLogger(__name__)
T = TypeVar("T")

SYNC_ACTOR = "system:sync"


class SyncError(Exception):
    """A refresh that could not run; the message says why and what to do."""


@attrs.frozen
class SyncResult:
    source: str
    target: str
    cards: int
    customers: int
    seconds: float
    finished_at: float  #: wall-clock time the replica switched over
    #: what was left out, ``customer C1: name: contains a NUL character``, the first few of them
    skipped: tuple[str, ...] = ()
    n_skipped: int = 0


MAX_SKIPPED_SHOWN = 5  #: left-out entries named in the audit entry and the result; the rest are counted


class _Skipped:
    """What a refresh leaves out, counted, with the first few named."""

    def __init__(self) -> None:
        self.n = 0
        self.shown: list[str] = []

    def add(self, what: str, key: str, exc: FieldError) -> None:
        self.n += 1
        thing = _("card {key}: {error}") if what == "card" else _("customer {key}: {error}")
        text = thing.format(key=printable(key), error=exc)
        log.warning("sync: left out %s", text)
        if len(self.shown) < MAX_SKIPPED_SHOWN:
            self.shown.append(text)


def _cleaned(
    items: Iterable[T], clean: Callable[[T], T], what: str, key: Callable[[T], str], skipped: _Skipped
) -> Iterator[T]:
    """``items`` as ``clean`` leaves them; one it refuses is left out and counted in ``skipped``."""
    for item in items:
        try:
            yield clean(item)
        except FieldError as exc:
            skipped.add(what, key(item), exc)


def _store(profile: Profile, host: PluginHost, store_id: str, clock: Clock) -> IdentityStore:
    cfg = next(s for s in profile.stores if s.id == store_id)
    try:
        return build(host, profile, cfg, clock)
    except Exception as exc:
        raise SyncError(
            _("store {store}: cannot start: {error}").format(store=store_id, error=describe(exc))
        ) from exc


def _for_branch(cards: Iterator[Card], branch_id: str, keep: set[str]) -> Iterator[Card]:
    for card in cards:
        if not card.allowed_branches or branch_id in card.allowed_branches:
            keep.add(card.customer_no)
            yield card


def sync_once(profile: Profile, host: PluginHost, audit: AuditLog | None = None) -> SyncResult:
    """Refresh the replica named in ``profile.sync`` from its source, once.  Raises :class:`SyncError`.

    The refresh is audited (personal data is copied to the branch): with ``audit`` given, or in the
    branch's own audit log otherwise."""
    plan = profile.sync
    if plan is None:
        raise SyncError(
            _("the profile has no 'sync:' section; add e.g. sync: {{source: central, target: local}}")
        )
    clock = Clock()
    t0 = time.perf_counter()
    source = _store(profile, host, plan.source, clock)
    target = _store(profile, host, plan.target, clock)
    if not isinstance(target, CardRegistry):
        raise SyncError(
            _("store {store} ({type}) cannot be a replica").format(
                store=plan.target, type=type(target).__name__
            )
        )
    own_audit = audit is None
    audit = audit or open_audit_log(profile)
    outcome = AuditResult.ERROR
    detail = ""
    skipped = _Skipped()
    try:
        for name, store in ((plan.source, source), (plan.target, target)):
            try:
                store.open()
            except Exception as exc:
                raise SyncError(
                    _("store {store} is unreachable: {error}").format(store=name, error=describe(exc))
                ) from exc
        try:
            all_cards = _cleaned(source.iter_cards(), clean_card, "card", lambda c: c.epc, skipped)
            if plan.this_branch_only:
                customer_nos: set[str] = set()
                cards = list(_for_branch(all_cards, profile.branch.id, customer_nos))
                customers: Any = (c for c in source.iter_customers() if c.customer_no in customer_nos)
            else:
                cards, customers = list(all_cards), source.iter_customers()
            n_cards, n_customers = target.replace_all(
                cards, _cleaned(customers, clean_customer, "customer", lambda c: c.customer_no, skipped)
            )
        except StoreUnsupported as exc:
            raise SyncError(
                _("cannot sync {source} -> {target}: {error}").format(
                    source=plan.source, target=plan.target, error=exc
                )
            ) from exc
        except SyncError:
            raise
        except Exception as exc:
            raise SyncError(
                _("sync {source} -> {target} failed: {error}").format(
                    source=plan.source, target=plan.target, error=describe(exc)
                )
            ) from exc
        outcome = AuditResult.SUCCESS
        detail = f"{n_cards} cards, {n_customers} customers"
        if skipped.n:
            detail += f"; {skipped.n} left out: {'; '.join(skipped.shown)}"
        return SyncResult(
            plan.source,
            plan.target,
            n_cards,
            n_customers,
            time.perf_counter() - t0,
            time.time(),
            tuple(skipped.shown),
            skipped.n,
        )
    except SyncError as exc:
        detail = str(exc)
        raise
    finally:
        for store in (source, target):
            try:
                store.close()
            except Exception as exc:
                log.warning("sync: closing a store failed: %s", describe(exc))
        audit.append(
            actor=SYNC_ACTOR,
            role="system",
            branch=profile.branch.id,
            action=AuditAction.SYNC,
            object=f"replica:{plan.target}",
            source=f"store:{plan.source}",
            result=outcome,
            reason=detail,
        )
        if own_audit:
            audit.close()
