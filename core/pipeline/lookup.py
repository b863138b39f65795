"""One look-up across the branch's identity stores, in profile order: the rule the door and the web
share.

* The first *fresh* hit wins.
* A *stale* hit (a cached copy its store could not refresh) is kept as a fallback while later stores
  are asked, so a branch replica that knows of a revocation beats a central cache from before it.
* "Not found" is an answer only when every store answered.  A store that could not answer might hold
  the card, so then the outcome is :attr:`Outcome.NO_ANSWER`, or :attr:`Outcome.WAIT` while a store
  is still inside its start-up grace period.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

import attrs

from ..api import IdentityStore
from ..devices import Reply, StoreRunner


class Outcome(enum.Enum):
    FOUND = "found"
    NOT_FOUND = "not_found"  #: every store answered and none knows the key
    WAIT = "wait"  #: no fresh hit yet, and a store is still starting: ask again soon
    NO_ANSWER = "no_answer"  #: a store could not answer and no store that did knows the key


@attrs.frozen
class Answer:
    outcome: Outcome
    result: Any = None
    store_id: str | None = None  #: the store whose answer this is

    @property
    def answered(self) -> bool:
        """A conclusive answer: found, or not found by every store."""
        return self.outcome in (Outcome.FOUND, Outcome.NOT_FOUND)


def supports(store: IdentityStore, method: str) -> bool:
    """Whether the store implements an optional method (asking one that does not would mark it
    unavailable on the status page)."""
    return method == "find_customer" or getattr(type(store), method) is not getattr(IdentityStore, method)


def _stale(result: Any) -> bool:
    items = result if isinstance(result, list) else [result]
    return any(getattr(item, "stale", False) for item in items)


def ask(runners: Iterable[StoreRunner], method: str, key: str) -> Answer:
    """Ask each store in turn for ``method(key)``; see the module docstring for the rule."""
    fallback: Answer | None = None
    starting = missing = False
    for runner in runners:
        reply, result = runner.lookup(method, key)
        if reply is Reply.ANSWERED:
            if result is None or result == []:
                continue
            if not _stale(result):
                return Answer(Outcome.FOUND, result, runner.store_id)
            fallback = fallback or Answer(Outcome.FOUND, result, runner.store_id)
        elif reply is Reply.STARTING:
            starting = True
        else:
            missing = True
    if starting:  # the starting store may hold a fresher answer than any stale one here
        return Answer(Outcome.WAIT)
    if fallback is not None:
        return fallback
    return Answer(Outcome.NO_ANSWER if missing else Outcome.NOT_FOUND)
