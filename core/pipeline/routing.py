"""Routing: who is told about a visit, and through which notifiers.

Rules come from the profile's ``routing:`` list.  Every matching rule adds its recipients; one person
reached through one notifier gets one notification even when several rules match.  ``client_manager``
means the customer's own assigned manager, looked up in ``staff:`` by id.
"""

from __future__ import annotations

from ..config.profile import Escalation, RouteRule
from ..model import EVENTS, Role, Staff, Visit


class Router:
    def __init__(self, rules: tuple[RouteRule, ...], staff: tuple[Staff, ...]) -> None:
        self.rules = rules
        self.staff = {s.id: s for s in staff}
        self.by_role: dict[Role, list[Staff]] = {}
        for person in staff:
            self.by_role.setdefault(person.role, []).append(person)

    def route(self, visit: Visit) -> list[tuple[Staff, str, Escalation | None]]:
        """``(recipient, notifier_id, escalation)`` for ``visit``; empty for re-entries and unknown
        tags.  When several rules reach one person through one notifier, the first rule with an
        ``escalate:`` gives the escalation."""
        event = EVENTS.get(visit.kind)
        if event is None:
            return []
        out: dict[tuple[str, str], tuple[Staff, str, Escalation | None]] = {}
        for rule in self.rules:
            if rule.event != event:
                continue
            if rule.tiers and visit.tier not in rule.tiers:
                continue
            if rule.reasons and visit.reason not in rule.reasons:
                continue
            for person in self.recipients(rule.to, visit):
                for via in rule.via:
                    known = out.get((person.id, via))
                    if known is None or (known[2] is None and rule.escalate is not None):
                        out[(person.id, via)] = (person, via, rule.escalate)
        return list(out.values())

    def recipients(self, role: Role, visit: Visit) -> list[Staff]:
        """Everyone holding ``role`` for this visit (``client_manager``: the customer's own)."""
        if role is Role.CLIENT_MANAGER:
            manager = visit.customer.client_manager if visit.customer else None
            if not manager:
                return []
            return [self.staff.get(manager) or Staff(id=manager, name=manager, role=role)]
        return self.by_role.get(role, [])
