"""Routing: who is told about a visit, and through which notifiers.

Rules come from the profile's ``routing:`` list.  Every matching rule adds its recipients; one person
reached through one notifier gets one notification even when several rules match.  ``client_manager``
means the customer's own assigned manager, looked up in ``staff:`` by id.
"""

from __future__ import annotations

from .config.profile import RouteRule
from .model import Role, Staff, Visit, VisitKind

_EVENT_OF = {VisitKind.GREETED: "arrival", VisitKind.REJECTED: "rejected", VisitKind.SUSPECT: "suspect"}


class Router:
    def __init__(self, rules: tuple[RouteRule, ...], staff: tuple[Staff, ...]) -> None:
        self.rules = rules
        self.staff = {s.id: s for s in staff}
        self.by_role: dict[Role, list[Staff]] = {}
        for person in staff:
            self.by_role.setdefault(person.role, []).append(person)

    def route(self, visit: Visit) -> list[tuple[Staff, str]]:
        """``(recipient, notifier_id)`` pairs for ``visit``; empty for re-entries and unknown tags."""
        event = _EVENT_OF.get(visit.kind)
        if event is None:
            return []
        out: list[tuple[Staff, str]] = []
        seen: set[tuple[str, str]] = set()
        for rule in self.rules:
            if rule.event != event:
                continue
            if rule.tiers and visit.tier not in rule.tiers:
                continue
            if rule.reasons and visit.reason not in rule.reasons:
                continue
            for person in self._recipients(rule.to, visit):
                for via in rule.via:
                    if (person.id, via) not in seen:
                        seen.add((person.id, via))
                        out.append((person, via))
        return out

    def _recipients(self, role: Role, visit: Visit) -> list[Staff]:
        if role is Role.CLIENT_MANAGER:
            manager = visit.customer.client_manager if visit.customer else None
            if not manager:
                return []
            return [self.staff.get(manager) or Staff(id=manager, name=manager, role=role)]
        return self.by_role.get(role, [])
