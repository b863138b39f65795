"""Escalation: when a recipient has not acknowledged a notification by its routing rule's deadline
(``escalate: {after: 60s, to: lobby_manager, via: [pda]}``), or it failed for good, the rule's
fallback is told instead, once, with who did not respond.

The deadline and the fallback are stored in the outbox row with the notification, so an escalation
that was due while the hub was down happens right after the restart.  The outbox writer's thread
runs :meth:`Escalator.run` between batches; it is the only one that writes the fallback rows.
An escalation does not escalate again, and a fallback who was already told of the visit through
the same notifier is not told twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection

from ..clock import Clock
from ..model import Notification
from ..storage.outbox import Outbox, decode_visit
from .routing import Router

log = logging.getLogger(__name__)

EVERY = 0.2  #: seconds between looks for due escalations


class Escalator:
    def __init__(self, outbox: Outbox, router: Router, clock: Clock, notifier_ids: Collection[str]) -> None:
        self.outbox = outbox
        self.router = router
        self.clock = clock
        self.notifier_ids = notifier_ids

    def run(self) -> list[Notification]:
        """Store the fallbacks of every due escalation; returns the new ones, to be dispatched."""
        now = self.clock.wall()
        due = self.outbox.due_escalations(now)
        if not due:
            return []
        keys, fallbacks = [], []
        for e in due:
            keys.append(e.key)
            try:
                visit = decode_visit(json.loads(e.payload), self.clock)
                fb = e.fallback()
            except (ValueError, KeyError, TypeError) as exc:
                log.error("escalation: unreadable outbox entry %s: %s", e.key, exc)
                continue
            people = [p for p in self.router.recipients(fb.to, visit) if p.id != e.recipient_id]
            vias = [v for v in fb.via if v in self.notifier_ids]
            if not people or not vias:
                log.error(
                    "escalation: %s did not respond to visit %s, and no %s can be told (%s)",
                    e.recipient_id,
                    visit.visit_id,
                    fb.to.value,
                    "nobody holds that role" if not people else "its notifiers are not running",
                )
                continue
            for person in people:
                for via in vias:
                    fallbacks.append(
                        Notification.of_visit(
                            visit, person, via, now, e.expires_at, escalated_from=e.recipient_id
                        )
                    )
            log.warning(
                "escalation: %s did not acknowledge visit %s in time; telling %s",
                e.recipient_id,
                visit.visit_id,
                ", ".join(p.id for p in people),
            )
        return self.outbox.escalated(keys, fallbacks, now)
