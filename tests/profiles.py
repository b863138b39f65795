"""The one branch-profile template the tests build on: a small valid branch (one simulated door, the
SQLite store seeded from ``seed.yaml``, a console screen, three staff, the five usual routes) whose
parts a test replaces to say what it is about.  Written once so that a change to the profile format is
made in one place, and so that a test's profile shows only what differs from an ordinary branch.

    branch_profile(notifiers=["{id: pda, type: recording}"], via="pda")

A part given as a list is YAML list items, one string each (a flow mapping, or a block mapping over
several lines); a part given as a string is put in as it is, already indented (e.g. ``"%(stores)s"``,
for a template a test fills in later with ``%``).
"""

from __future__ import annotations

from collections.abc import Sequence

Part = str | Sequence[str]

#: English, so that tests read the messages as written; the Chinese ones have tests of their own
BRANCH = "{id: test-branch, name: Test Branch, locale: en}"
DOOR = "{id: door, type: simulated, visitors: []}"
LOCAL_SQLITE = "{id: local, type: sqlite, seed: [seed.yaml]}"
SCREEN = "{id: screen, type: console, color: never}"
PRESENCE = "{min_reads: 2, window: 1s, depart_after: 1s}"
LOBBY = "{id: lobby, name: Lobby Person, role: lobby_manager}"
BOSS = "{id: boss, name: Branch Boss, role: branch_manager}"
CM1 = "{id: cm1, name: Client Manager One, role: client_manager}"
STAFF = (LOBBY, BOSS, CM1)


def alarm_routes(via: str) -> list[str]:
    """Lost or revoked cards and suspect cards to the branch manager: what every valid profile routes."""
    return [
        f"{{event: rejected, reasons: [lost, revoked], to: branch_manager, via: [{via}]}}",
        f"{{event: suspect, to: branch_manager, via: [{via}]}}",
    ]


def routes(via: str, client_manager: bool = True, rejected_to_lobby: bool = True) -> list[str]:
    """The usual routes, every one through ``via`` (e.g. ``"pda"`` or ``"screen, pda"``): arrivals to
    the lobby manager (and to the customer's client manager), rejected cards to the lobby manager, and
    the :func:`alarm_routes`."""
    rules = [f"{{event: arrival, to: lobby_manager, via: [{via}]}}"]
    if client_manager:
        rules.append(f"{{event: arrival, to: client_manager, via: [{via}]}}")
    if rejected_to_lobby:
        rules.append(f"{{event: rejected, to: lobby_manager, via: [{via}]}}")
    return rules + alarm_routes(via)


def _section(key: str, part: Part) -> str:
    if isinstance(part, str):
        return key + ":\n" + part.rstrip("\n") + "\n"
    items = "".join("  - " + item.strip().replace("\n", "\n    ") + "\n" for item in part)
    return f"{key}:\n{items}"


def branch_profile(
    *,
    branch: str = BRANCH,
    readers: Part = (DOOR,),
    stores: Part = (LOCAL_SQLITE,),
    notifiers: Part = (SCREEN,),
    presence: str | None = PRESENCE,
    extra: Sequence[str] = (),
    staff: Part = STAFF,
    via: str = "screen",
    routing: Part | None = None,
    tail: str = "",
) -> str:
    """A profile's text from its parts.  ``presence=None`` leaves the section out (its defaults);
    ``extra`` are further top-level lines (``"notification_ttl: 10m"``), put after ``presence``;
    ``routing`` defaults to :func:`routes` through ``via``; ``tail`` is appended as it is."""
    return (
        f"branch: {branch}\n"
        + _section("readers", readers)
        + _section("stores", stores)
        + _section("notifiers", notifiers)
        + ("" if presence is None else f"presence: {presence}\n")
        + "".join(line.rstrip("\n") + "\n" for line in extra)
        + _section("staff", staff)
        + _section("routing", routes(via) if routing is None else routing)
        + tail
    )
