"""Malformed branch profiles: every problem is reported as ``file:line: key.path: message``.

Each case starts from one valid profile (:func:`profile`) and changes one thing, then compares the
exact error lines.  Expected line numbers are found by searching the profile text for a marker
(:func:`line_of`), so they do not depend on the loader.
"""

from __future__ import annotations

import datetime as dt
import os
import zoneinfo
from pathlib import Path
from textwrap import dedent

import attrs
import pytest
import yaml

from vipsense.cli import main
from vipsense.config.errors import ProfileError
from vipsense.config.profile import host_timezone, load_profile
from vipsense.config.types import Secret
from vipsense.config.yamlload import load_profile_yaml
from vipsense.pluginhost import Kind, PluginHost, load_host

#: what an unknown-type error lists: every reader type installed with the project
READER_TYPES = ", ".join(sorted(load_host().types[Kind.READER]))

FILE = "branch.yaml"  #: every case is written to this name in the current directory (tmp_path)

SECTIONS: dict[str, str] = {
    "branch": """\
        branch:
          id: t1
          name: Test Branch
        """,
    "readers": """\
        readers:
          - id: door
            type: simulated
            visitors: []
        """,
    "stores": """\
        stores:
          - id: local
            type: sqlite
        """,
    "notifiers": """\
        notifiers:
          - id: screen
            type: console
        """,
    "staff": """\
        staff:
          - {id: boss, name: The Boss, role: branch_manager}
          - {id: lobby, name: Lobby Person, role: lobby_manager}
        """,
    "routing": """\
        routing:
          - {event: arrival, to: lobby_manager, via: [screen]}
          - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [screen]}
          - {event: suspect, to: branch_manager, via: [screen]}
        """,
}

KNOWN_TOP = (
    "branch, readers, stores, notifiers, data_dir, tiers, presence, staff, routing, notification_ttl,"
    " privacy, security, sync, web, centre"
)
KNOWN_PRESENCE = "min_reads, window, min_rssi, reentry_suppress, depart_after"
ROLES = "lobby_manager, client_manager, branch_manager, head_office, card_issuer, admin, auditor"
REASONS = "lost, revoked, expired, not_yet_valid, wrong_branch, tid_mismatch, too_fast"
ALERT_RULE = (
    "lost and revoked cards must alert the branch manager; add a rule such as "
    "{event: rejected, reasons: [lost, revoked], to: branch_manager, via: [NOTIFIER-ID]}"
)
SUSPECT_RULE = (
    "suspect cards (cloned or misused) must alert the branch manager; add a rule such as "
    "{event: suspect, to: branch_manager, via: [NOTIFIER-ID]}"
)


def profile(head: str = "", tail: str = "", **sections: str | None) -> str:
    """A valid profile, with sections replaced (text) or left out (None), and text added around it."""
    unknown = set(sections) - set(SECTIONS)
    assert not unknown, f"no such section: {unknown}"
    parts = [dedent(head)]
    for name, default in SECTIONS.items():
        text = sections.get(name, default)
        if text is not None:
            parts.append(dedent(text))
    parts.append(dedent(tail))
    return "".join(parts)


def line_of(text: str, marker: str) -> int:
    """The 1-based number of the one line of ``text`` that contains ``marker``."""
    found = [n for n, line in enumerate(text.splitlines(), 1) if marker in line]
    assert len(found) == 1, f"marker {marker!r} is on lines {found}"
    return found[0]


#: a marker to search for, a line number, either with a column (YAML syntax errors), or None for no line
Where = str | int | tuple[str | int, int] | None


def expect(text: str, *errors: tuple[Where, str], file: str = FILE) -> list[str]:
    """Build the expected error lines: ``(where, "key.path: message")`` -> ``file:line: ...``, or
    ``((where, column), ...)`` -> ``file:line:column: ...``."""
    out = []
    for where, rest in errors:
        if where is None:
            out.append(f"{file}: {rest}")
            continue
        where, column = where if isinstance(where, tuple) else (where, None)
        line = where if isinstance(where, int) else line_of(text, where)
        out.append(f"{file}:{line}:{column}: {rest}" if column else f"{file}:{line}: {rest}")
    return out


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in tmp_path (so messages name files relative to it) with no secrets file override."""
    monkeypatch.chdir(tmp_path)
    for var in ("VIPSENSE_SECRETS", "VIPSENSE_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("VIPSENSE_DATA_DIR", str(tmp_path / "data"))


def write(name: str, text: str) -> Path:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path: Path, host: PluginHost) -> list[str]:
    """The error lines of a profile that must fail to load."""
    with pytest.raises(ProfileError) as excinfo:
        load_profile(path, host)
    return [str(e) for e in excinfo.value.errors]


# -- the helper's profile is valid ------------------------------------------------------------------


def test_helper_profile_is_valid(host):
    text = profile()
    p = load_profile(write(FILE, text), host)
    assert p.branch.id == "t1"
    assert p.branch.name == "Test Branch"
    assert [(r.id, r.type) for r in p.readers] == [("door", "simulated")]
    assert [(s.id, s.type) for s in p.stores] == [("local", "sqlite")]
    assert [(n.id, n.type) for n in p.notifiers] == [("screen", "console")]
    assert [s.id for s in p.staff] == ["boss", "lobby"]
    assert [r.event for r in p.routing] == ["arrival", "rejected", "suspect"]
    assert p.source == (Path.cwd() / FILE).resolve()


def test_line_of_finds_markers():
    text = profile()
    assert line_of(text, "name: Test Branch") == 3
    assert line_of(text, "type: console") == 13
    assert line_of(text, "reasons: [lost, revoked]") == 19


# -- one malformed thing per profile ---------------------------------------------------------------

_CASES: list[tuple[str, str, list[tuple[Where, str]]]] = [
    (
        "yaml-syntax-error",
        profile(
            branch="""\
            branch:
              id: t1
              name: Test: Branch
            """
        ),
        [
            (
                ("name: Test: Branch", 13),
                "YAML syntax error: mapping values are not allowed here; a value that contains ': ' "
                "must be quoted, e.g. name: 'Lujiazui: Shanghai'",
            )
        ],
    ),
    (
        "yaml-syntax-error-tab",
        profile(branch="branch:\n  id: t1\n\tname: Test Branch\n"),
        [
            (
                ("\tname:", 1),
                "YAML syntax error: while scanning for the next token; "
                "found character '\\t' that cannot start any token; replace the tab with spaces: "
                "YAML does not allow tabs for indentation or after a 'key:'",
            )
        ],
    ),
    (
        # the second document starts at '---'; PyYAML's context mark is the start of the first one
        "yaml-two-documents",
        profile(tail="---\nextra: 1\n"),
        [
            (
                ("---", 1),
                "YAML syntax error: expected a single document in the stream; but found another document",
            )
        ],
    ),
    (
        # PyYAML's mark is past the end of the file (line 21 of 20): clamped to the last line
        "yaml-directive-after-the-document",
        profile(tail="%YAML 1.1\n"),
        [("%YAML", "YAML syntax error: expected '<document start>', but found '<stream end>'")],
    ),
    ("empty-file", "", [(1, "the file is empty")]),
    ("only-comments", "# nothing here yet\n\n", [(1, "the file is empty")]),
    ("top-level-list", "- branch\n- readers\n", [(1, "a profile must be a mapping of keys")]),
    ("top-level-scalar", "just some text\n", [(1, "a profile must be a mapping of keys")]),
    (
        "duplicate-key",
        profile(
            branch="""\
            branch:
              id: t1
              name: Test Branch
              id: t2
            """
        ),
        [("id: t2", "branch.id: duplicate key: this key is already set above")],
    ),
    (
        "duplicate-top-level-section",
        profile(
            tail="""\
            tiers: [gold]
            tiers: [platinum]
            """
        ),
        [("tiers: [platinum]", "tiers: duplicate key: this key is already set above")],
    ),
    (
        "unknown-top-level-key",
        profile(
            tail="""\
            presense:
              min_reads: 3
            """
        ),
        [("presense:", f"presense: unknown key; did you mean 'presence'? (known keys: {KNOWN_TOP})")],
    ),
    (
        "unknown-top-level-key-no-suggestion",
        profile(tail="colour_scheme: dark\n"),
        [("colour_scheme", f"colour_scheme: unknown key (known keys: {KNOWN_TOP})")],
    ),
    ("missing-branch", profile(branch=None), [(1, "missing required key 'branch'")]),
    ("missing-stores", profile(stores=None), [(1, "missing required key 'stores'")]),
    (
        "missing-branch-name",
        profile(
            branch="""\
            branch:
              id: t1
            """
        ),
        [("branch:", "branch: missing required key 'name'")],
    ),
    (
        "branch-not-a-mapping",
        profile(branch="branch: t1\n"),
        [("branch: t1", "branch: expected a mapping of keys, got 't1'")],
    ),
    (
        "wrong-scalar-type",
        profile(
            tail="""\
            presence:
              min_reads: "three"
            """
        ),
        [("min_reads:", "presence.min_reads: expected an integer, got 'three'")],
    ),
    (
        "float-for-integer",
        profile(
            tail="""\
            presence:
              min_reads: 2.5
            """
        ),
        [("min_reads:", "presence.min_reads: expected an integer, got 2.5")],
    ),
    (
        "bool-for-integer",
        profile(
            tail="""\
            presence:
              min_reads: yes
            """
        ),
        [("min_reads:", "presence.min_reads: expected an integer, got True")],
    ),
    (
        "text-for-number",
        profile(
            tail="""\
            presence:
              min_rssi: loud
            """
        ),
        [("min_rssi:", "presence.min_rssi: expected a number, got 'loud'")],
    ),
    (
        "invalid-duration",
        profile(
            tail="""\
            presence:
              window: fast
            """
        ),
        [("window: fast", "presence.window: expected a duration such as 500ms, 2s or 10m, got 'fast'")],
    ),
    (
        "negative-duration",
        profile(
            tail="""\
            presence:
              depart_after: -1
            """
        ),
        [("depart_after", "presence.depart_after: a duration must be a finite, non-negative time, got -1")],
    ),
    (
        "negative-duration-with-unit",
        profile(
            tail="""\
            presence:
              window: -1s
            """
        ),
        [("window: -1s", "presence.window: expected a duration such as 500ms, 2s or 10m, got '-1s'")],
    ),
    (
        "invalid-top-level-duration",
        profile(tail="notification_ttl: soon\n"),
        [("notification_ttl", "notification_ttl: expected a duration such as 500ms, 2s or 10m, got 'soon'")],
    ),
    (
        "zero-min-reads-validator",
        profile(
            tail="""\
            presence:
              min_reads: 0
            """
        ),
        [("min_reads: 0", "presence.min_reads: must be greater than 0, got 0")],
    ),
    (
        "zero-duration-validator",
        profile(
            tail="""\
            presence:
              window: 0s
            """
        ),
        [("window: 0s", "presence.window: must be greater than 0, got 0")],
    ),
    (
        "negative-min-reads-validator",
        profile(
            tail="""\
            presence:
              min_reads: -2
            """
        ),
        [("min_reads: -2", "presence.min_reads: must be greater than 0, got -2")],
    ),
    (
        "minus-one-min-reads-validator",
        profile(
            tail="""\
            presence:
              min_reads: -1
            """
        ),
        [("min_reads: -1", "presence.min_reads: must be greater than 0, got -1")],
    ),
    (
        "unknown-reader-type-with-suggestion",
        profile(
            readers="""\
            readers:
              - id: door
                type: simulate
                visitors: []
            """
        ),
        [
            (
                "type: simulate",
                "readers[0].type: unknown reader type 'simulate'; did you mean 'simulated'? "
                f"(installed reader types: {READER_TYPES})",
            )
        ],
    ),
    (
        "unknown-reader-type-no-suggestion",
        profile(
            readers="""\
            readers:
              - id: door
                type: zebra-fx9600
            """
        ),
        [
            (
                "type: zebra-fx9600",
                "readers[0].type: unknown reader type 'zebra-fx9600' "
                f"(installed reader types: {READER_TYPES})",
            )
        ],
    ),
    (
        "unknown-store-type",
        profile(
            stores="""\
            stores:
              - id: local
                type: sqlite3
            """
        ),
        [
            (
                "type: sqlite3",
                "stores[0].type: unknown store type 'sqlite3'; did you mean 'sqlite'? "
                "(installed store types: ldap, postgresql, sqlite)",
            )
        ],
    ),
    (
        "reader-without-type",
        profile(
            readers="""\
            readers:
              - id: door
                visitors: []
            """
        ),
        [("- id: door", "readers[0]: missing required key 'type' (the reader type)")],
    ),
    (
        "reader-missing-required-setting",
        profile(
            readers="""\
            readers:
              - id: door
                type: simulated
            """
        ),
        [("- id: door", "readers[0]: missing required key 'visitors'")],
    ),
    (
        "nested-plugin-setting",
        profile(
            readers="""\
            readers:
              - id: door
                type: simulated
                visitors:
                  - {card: E2801160600002084C1A0001, at: soon}
            """
        ),
        [("at: soon", "readers[0].visitors[0].at: expected a duration such as 500ms, 2s or 10m, got 'soon'")],
    ),
    (
        "unknown-plugin-setting",
        profile(
            notifiers="""\
            notifiers:
              - id: screen
                type: console
                colour: never
            """
        ),
        [
            (
                "colour: never",
                "notifiers[0].colour: unknown key; did you mean 'color'? "
                "(known keys: id, type, retry, color, width)",
            )
        ],
    ),
    (
        "bad-plugin-literal",
        profile(
            notifiers="""\
            notifiers:
              - id: screen
                type: console
                color: sometimes
            """
        ),
        [
            (
                "color: sometimes",
                "notifiers[0].color: expected one of 'auto', 'always', 'never', got 'sometimes'",
            )
        ],
    ),
    (
        "bad-store-timeout",
        profile(
            stores="""\
            stores:
              - id: local
                type: sqlite
                timeout: forever
            """
        ),
        [
            (
                "timeout: forever",
                "stores[0].timeout: expected a duration such as 500ms, 2s or 10m, got 'forever'",
            )
        ],
    ),
    (
        "zero-store-timeout",
        profile(
            stores="""\
            stores:
              - id: local
                type: sqlite
                timeout: 0
            """
        ),
        [("timeout: 0", "stores[0].timeout: must be greater than 0")],
    ),
    (
        "non-string-id",
        profile(
            readers="""\
            readers:
              - id: 5
                type: simulated
                visitors: []
            """
        ),
        [("id: 5", "readers[0].id: expected a non-empty string, got 5")],
    ),
    (
        "bad-staff-role",
        profile(
            staff="""\
            staff:
              - {id: boss, name: The Boss, role: branch_manager}
              - {id: lobby, name: Lobby Person, role: lobby_manger}
            """
        ),
        [
            (
                "lobby_manger",
                f"staff[1].role: expected one of {ROLES}, got 'lobby_manger'; did you mean 'lobby_manager'?",
            )
        ],
    ),
    (
        "duplicate-staff-id",
        profile(
            staff="""\
            staff:
              - {id: boss, name: The Boss, role: branch_manager}
              - {id: boss, name: Lobby Person, role: lobby_manager}
            """
        ),
        [("Lobby Person", "staff[1].id: duplicate staff id 'boss' (also staff[0])")],
    ),
    (
        "routing-unknown-notifier",
        profile(
            routing="""\
            routing:
              - {event: arrival, to: lobby_manager, via: [screem]}
              - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [screen]}
              - {event: suspect, to: branch_manager, via: [screen]}
            """
        ),
        [
            (
                "[screem]",
                "routing[0].via[0]: no notifier has id 'screem'; did you mean 'screen'? "
                "(notifier ids: screen)",
            )
        ],
    ),
    (
        "routing-tier-not-in-tiers",
        profile(
            routing="""\
            routing:
              - {event: arrival, tiers: [gold, platinium], to: lobby_manager, via: [screen]}
              - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [screen]}
              - {event: suspect, to: branch_manager, via: [screen]}
            """
        ),
        [
            (
                "platinium",
                "routing[0].tiers[1]: unknown tier 'platinium'; did you mean 'platinum'? "
                "(tiers: standard, gold, platinum, diamond)",
            )
        ],
    ),
    (
        "routing-tier-not-in-custom-tiers",
        profile(
            routing="""\
                routing:
                  - {event: arrival, tiers: [diamond], to: lobby_manager, via: [screen]}
                  - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [screen]}
                  - {event: suspect, to: branch_manager, via: [screen]}
                """,
            tail="tiers: [silver, gold]\n",
        ),
        [("tiers: [diamond]", "routing[0].tiers[0]: unknown tier 'diamond' (tiers: silver, gold)")],
    ),
    (
        "reasons-on-arrival-rule",
        profile(
            routing="""\
            routing:
              - {event: arrival, reasons: [lost], to: lobby_manager, via: [screen]}
              - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [screen]}
              - {event: suspect, to: branch_manager, via: [screen]}
            """
        ),
        [("event: arrival", "routing[0].reasons: 'reasons' applies only to 'event: rejected'")],
    ),
    (
        "unknown-reject-reason",
        profile(
            routing="""\
            routing:
              - {event: arrival, to: lobby_manager, via: [screen]}
              - {event: rejected, reasons: [lost, stolen], to: branch_manager, via: [screen]}
              - {event: suspect, to: branch_manager, via: [screen]}
            """
        ),
        [("stolen", f"routing[1].reasons[1]: expected one of {REASONS}, got 'stolen'")],
    ),
    (
        "unknown-event",
        profile(
            routing="""\
            routing:
              - {event: arival, to: lobby_manager, via: [screen]}
              - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [screen]}
              - {event: suspect, to: branch_manager, via: [screen]}
            """
        ),
        [
            (
                "arival",
                "routing[0].event: expected one of 'arrival', 'rejected', 'suspect', 'unresolved', "
                "got 'arival'; did you mean 'arrival'?",
            )
        ],
    ),
    (
        "unresolved-to-client-manager",
        profile(
            routing="""\
            routing:
              - {event: unresolved, to: client_manager, via: [screen]}
              - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [screen]}
              - {event: suspect, to: branch_manager, via: [screen]}
            """
        ),
        [
            (
                "event: unresolved",
                "routing[0].to: an unresolved card's customer is not known, so there is no client manager "
                "to tell; send it to the lobby manager",
            )
        ],
    ),
    (
        "unresolved-with-tiers",
        profile(
            routing="""\
            routing:
              - {event: unresolved, tiers: [gold], to: lobby_manager, via: [screen]}
              - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [screen]}
              - {event: suspect, to: branch_manager, via: [screen]}
            """
        ),
        [("event: unresolved", "routing[0].tiers: an unresolved card has no tier yet; remove 'tiers'")],
    ),
    (
        "negative-start-grace",
        profile(
            stores="""\
            stores:
              - {id: local, type: sqlite, start_grace: -3s}
            """
        ),
        [("start_grace", "stores[0].start_grace: expected a duration such as 500ms, 2s or 10m, got '-3s'")],
    ),
    (
        "routing-to-role-nobody-has",
        profile(
            routing="""\
            routing:
              - {event: arrival, to: head_office, via: [screen]}
              - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [screen]}
              - {event: suspect, to: branch_manager, via: [screen]}
            """
        ),
        [("head_office", "routing[0].to: no one in 'staff:' has role 'head_office'")],
    ),
    (
        "rejected-to-client-manager",
        profile(
            routing="""\
            routing:
              - {event: rejected, to: client_manager, via: [screen]}
              - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [screen]}
              - {event: suspect, to: branch_manager, via: [screen]}
            """
        ),
        [("client_manager", "routing[0].to: rejected cards go to branch staff, not to a client manager")],
    ),
    (
        "via-not-a-list",
        profile(
            routing="""\
            routing:
              - {event: arrival, to: lobby_manager, via: screen}
              - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [screen]}
              - {event: suspect, to: branch_manager, via: [screen]}
            """
        ),
        [("via: screen}", "routing[0].via: expected a list, got 'screen'")],
    ),
    (
        "duplicate-id-reader-and-store",
        profile(
            stores="""\
            stores:
              - id: door
                type: sqlite
            """
        ),
        [
            (
                9,
                "stores[0].id: id 'door' is already used by readers[0]; ids must be unique across "
                "readers, stores and notifiers",
            )
        ],
    ),
    (
        "duplicate-id-store-and-notifier",
        profile(
            notifiers="""\
                notifiers:
                  - id: local
                    type: console
                """,
            routing="""\
                routing:
                  - {event: arrival, to: lobby_manager, via: [local]}
                  - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [local]}
                  - {event: suspect, to: branch_manager, via: [local]}
                """,
        ),
        [
            (
                12,
                "notifiers[0].id: id 'local' is already used by stores[0]; ids must be unique across "
                "readers, stores and notifiers",
            )
        ],
    ),
    (
        # the store has no 'id:', so its type name is its id: reported at the item, with a hint
        "duplicate-id-from-a-type-name",
        profile(
            readers="""\
                readers:
                  - id: sqlite
                    type: simulated
                    visitors: []
                """,
            stores="""\
                stores:
                  - type: sqlite
                """,
        ),
        [
            (
                "- type: sqlite",
                "stores[0]: id 'sqlite' is already used by readers[0]; ids must be unique across "
                "readers, stores and notifiers; give this one an 'id:'",
            )
        ],
    ),
    (
        "duplicate-id-within-readers",
        profile(
            readers="""\
            readers:
              - id: door
                type: simulated
                visitors: []
              - id: door
                type: simulated
                visitors: [] # second
            """
        ),
        [(8, "readers[1].id: duplicate id 'door' (also readers[0]); give each an 'id:'")],
    ),
    (
        "duplicate-default-id",
        profile(
            stores="""\
            stores:
              - type: sqlite
              - type: sqlite # second
            """
        ),
        [("# second", "stores[1]: duplicate id 'sqlite' (also stores[0]); give each an 'id:'")],
    ),
    (
        "no-reader",
        profile(readers="readers: []\n"),
        [("readers: []", "readers: a branch needs at least one reader")],
    ),
    (
        "no-store",
        profile(stores="stores: []\n"),
        [("stores: []", "stores: a branch needs at least one identity store")],
    ),
    (
        "readers-not-a-list",
        profile(readers="readers: door\n"),
        [("readers: door", "readers: expected a list, got 'door'")],
    ),
    (
        "missing-branch-manager-rule",
        profile(
            routing="""\
            routing:
              - {event: arrival, to: lobby_manager, via: [screen]}
            """
        ),
        [("routing:", f"routing: {ALERT_RULE}"), ("routing:", f"routing: {SUSPECT_RULE}")],
    ),
    (
        "branch-manager-rule-misses-revoked",
        profile(
            routing="""\
            routing:
              - {event: arrival, to: lobby_manager, via: [screen]}
              - {event: rejected, reasons: [lost], to: branch_manager, via: [screen]}
              - {event: suspect, to: branch_manager, via: [screen]}
            """
        ),
        [
            (
                "routing:",
                "routing: revoked cards must alert the branch manager; add a rule such as "
                "{event: rejected, reasons: [lost, revoked], to: branch_manager, via: [NOTIFIER-ID]}",
            )
        ],
    ),
    (
        "no-routing-at-all",
        profile(routing=None),
        [(1, f"routing: {ALERT_RULE}"), (1, f"routing: {SUSPECT_RULE}")],
    ),
    (
        "duplicate-tier",
        profile(tail="tiers: [gold, gold]\n"),
        [("tiers:", "tiers[1]: each tier may be listed once: 'gold' is also tiers[0]")],
    ),
    (
        "extends-not-a-path",
        profile(head="extends: 5\n"),
        [("extends:", "extends: expected the path of a base profile")],
    ),
    (
        "extends-missing-base",
        profile(head="extends: bank.yaml\n"),
        [("extends:", "extends: base profile bank.yaml not found")],
    ),
    (
        "extends-self",
        profile(head=f"extends: {FILE}\n"),
        [("extends:", f"extends: circular extends: {FILE} -> {FILE}")],
    ),
    (
        "non-scalar-key",
        profile(tail="? [a, b]\n: 1\n"),
        [("? [a, b]", "a key must be a plain name")],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [pytest.param(t, e, id=i) for i, t, e in _CASES])
def test_malformed_profile(host, text, expected):
    assert errors_of(write(FILE, text), host) == expect(text, *expected)


def test_there_are_enough_cases():
    assert len(_CASES) >= 18
    assert len({i for i, _, _ in _CASES}) == len(_CASES)


def test_file_name_is_relative_to_the_working_directory(host, tmp_path, monkeypatch):
    text = profile(tail="presence:\n  window: fast\n")
    path = tmp_path / write("branches/sh/branch.yaml", text)
    error = "presence.window: expected a duration such as 500ms, 2s or 10m, got 'fast'"
    monkeypatch.chdir(tmp_path / "branches")
    shown = os.path.relpath(path)
    assert shown == os.path.join("sh", "branch.yaml")
    assert errors_of(path, host) == expect(text, ("window: fast", error), file=shown)
    # a file outside the working directory is shown with '..'
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    shown = os.path.relpath(path)
    assert shown == os.path.join("..", "branches", "sh", "branch.yaml")
    assert errors_of(path, host) == expect(text, ("window: fast", error), file=shown)


def test_missing_file(host):
    assert errors_of(Path("nowhere.yaml"), host) == ["nowhere.yaml: file not found"]


# -- several errors in one pass ---------------------------------------------------------------------


def test_all_structural_errors_are_reported_in_one_pass(host):
    text = profile(
        branch="""\
            branch:
              id: t1
              name: [Test, Branch]
            """,
        readers="""\
            readers:
              - id: door
                type: simulate
                visitors: []
            """,
        notifiers="""\
            notifiers:
              - id: screen
                type: console
                colour: never
            """,
        # the bad role is on a third person, so no routing rule loses its only recipient (see the
        # 'bad-staff-role' case for that knock-on error)
        staff="""\
            staff:
              - {id: boss, name: The Boss, role: branch_manager}
              - {id: lobby, name: Lobby Person, role: lobby_manager}
              - {id: ceo, name: Head Person, role: head_ofice}
            """,
        tail="""\
            presence:
              min_reads: 0
            presense: {}
            """,
    )
    expected = expect(
        text,
        ("name: [Test, Branch]", "branch.name: expected a string, got ['Test', 'Branch']"),
        (
            "type: simulate",
            "readers[0].type: unknown reader type 'simulate'; did you mean 'simulated'? "
            f"(installed reader types: {READER_TYPES})",
        ),
        (
            "colour: never",
            "notifiers[0].colour: unknown key; did you mean 'color'? "
            "(known keys: id, type, retry, color, width)",
        ),
        (
            "head_ofice",
            f"staff[2].role: expected one of {ROLES}, got 'head_ofice'; did you mean 'head_office'?",
        ),
        ("min_reads: 0", "presence.min_reads: must be greater than 0, got 0"),
        ("presense:", f"presense: unknown key; did you mean 'presence'? (known keys: {KNOWN_TOP})"),
    )
    assert sorted(errors_of(write(FILE, text), host)) == sorted(expected)


def test_all_cross_reference_errors_are_reported_in_one_pass(host):
    text = profile(
        stores="""\
            stores:
              - id: door
                type: sqlite
            """,
        routing="""\
            routing:
              - {event: arrival, tiers: [platinium], reasons: [lost], to: lobby_manager, via: [screem]}
              - {event: rejected, to: head_office, via: [screen]}
            """,
    )
    expected = expect(
        text,
        (
            9,
            "stores[0].id: id 'door' is already used by readers[0]; ids must be unique across "
            "readers, stores and notifiers",
        ),
        (
            "[screem]",
            "routing[0].via[0]: no notifier has id 'screem'; did you mean 'screen'? (notifier ids: screen)",
        ),
        (
            "[platinium]",
            "routing[0].tiers[0]: unknown tier 'platinium'; did you mean 'platinum'? "
            "(tiers: standard, gold, platinum, diamond)",
        ),
        ("[platinium]", "routing[0].reasons: 'reasons' applies only to 'event: rejected'"),
        ("head_office", "routing[1].to: no one in 'staff:' has role 'head_office'"),
        ("routing:", f"routing: {ALERT_RULE}"),
        ("routing:", f"routing: {SUSPECT_RULE}"),
    )
    assert sorted(errors_of(write(FILE, text), host)) == sorted(expected)


def test_structural_and_cross_reference_errors_in_one_pass(host):
    text = profile(
        routing="""\
            routing:
              - {event: arrival, to: lobby_manager, via: [screem]}
              - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [screen]}
              - {event: suspect, to: branch_manager, via: [screen]}
            """,
        tail="""\
            presence:
              min_reads: three
            """,
    )
    expected = expect(
        text,
        ("min_reads: three", "presence.min_reads: expected an integer, got 'three'"),
        (
            "[screem]",
            "routing[0].via[0]: no notifier has id 'screem'; did you mean 'screen'? (notifier ids: screen)",
        ),
    )
    assert sorted(errors_of(write(FILE, text), host)) == sorted(expected)


def test_structural_errors_do_not_hide_staff_tier_and_id_checks(host):
    text = profile(
        stores="""\
            stores:
              - id: door  # as the reader
                type: sqlite
            """,
        staff="""\
            staff:
              - {id: boss, name: The Boss, role: branch_manager}
              - {id: boss, name: Lobby Person, role: lobby_manager}
            """,
        routing="""\
            routing:
              - {event: arrival, tiers: [platinium], to: lobby_manager, via: [screen]}
              - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [screen]}
              - {event: suspect, to: branch_manager, via: [screen]}
            """,
        tail="""\
            presence:
              window: fast
            notification_ttl: soon
            """,
    )
    expected = expect(
        text,
        ("window: fast", "presence.window: expected a duration such as 500ms, 2s or 10m, got 'fast'"),
        ("notification_ttl", "notification_ttl: expected a duration such as 500ms, 2s or 10m, got 'soon'"),
        (
            "# as the reader",
            "stores[0].id: id 'door' is already used by readers[0]; ids must be unique across "
            "readers, stores and notifiers",
        ),
        ("Lobby Person", "staff[1].id: duplicate staff id 'boss' (also staff[0])"),
        (
            "[platinium]",
            "routing[0].tiers[0]: unknown tier 'platinium'; did you mean 'platinum'? "
            "(tiers: standard, gold, platinum, diamond)",
        ),
    )
    assert sorted(errors_of(write(FILE, text), host)) == sorted(expected)


# -- extends: errors name the file they are in ------------------------------------------------------


def test_circular_extends(host):
    write("a.yaml", "extends: b.yaml\n")
    write("b.yaml", "# b extends a again\nextends: a.yaml\n")
    text = profile(head="extends: a.yaml\n")
    assert errors_of(write(FILE, text), host) == [
        f"b.yaml:2: extends: circular extends: {FILE} -> a.yaml -> b.yaml -> a.yaml"
    ]


def test_circular_extends_back_to_the_branch_file(host):
    write("shared/bank.yaml", "extends: ../branch.yaml\n")
    text = profile(head="extends: shared/bank.yaml\n")
    bank = os.path.join("shared", "bank.yaml")
    assert errors_of(write(FILE, text), host) == [
        f"{bank}:1: extends: circular extends: {FILE} -> {bank} -> {FILE}"
    ]


def test_missing_base_of_a_base(host):
    write("shared/bank.yaml", "tiers: [gold]\nextends: group.yaml\n")
    text = profile(head="extends: shared/bank.yaml\n")
    assert errors_of(write(FILE, text), host) == [
        f"{os.path.join('shared', 'bank.yaml')}:2: extends: base profile group.yaml not found"
    ]


def test_error_in_base_file_names_the_base_file_and_line(host):
    base = dedent("""\
        # bank-wide defaults
        tiers: [standard, gold]

        presence:
          window: 1s
          min_reads: three
          windw: 2s
        """)
    write("shared/bank.yaml", base)
    text = profile(head="extends: shared/bank.yaml\n")
    bank = os.path.join("shared", "bank.yaml")
    assert sorted(errors_of(write(FILE, text), host)) == sorted(
        expect(
            base,
            ("min_reads: three", "presence.min_reads: expected an integer, got 'three'"),
            ("windw", f"presence.windw: unknown key; did you mean 'window'? (known keys: {KNOWN_PRESENCE})"),
            file=bank,
        )
    )


def test_errors_in_base_and_branch_are_both_reported(host):
    base = "tiers: [gold]\npresence:\n  min_reads: three\n"
    write("bank.yaml", base)
    text = profile(head="extends: bank.yaml\n", tail="notification_ttl: soon\n")
    assert sorted(errors_of(write(FILE, text), host)) == sorted(
        [
            "bank.yaml:3: presence.min_reads: expected an integer, got 'three'",
            f"{FILE}:{line_of(text, 'notification_ttl')}: notification_ttl: "
            "expected a duration such as 500ms, 2s or 10m, got 'soon'",
        ]
    )


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        pytest.param(
            "presence:\n  min_reads: [3\n",
            # PyYAML finds the unclosed flow sequence at the end of the stream (line 3); the error is
            # on line 2, where the '[' opens
            "bank.yaml:2:14: YAML syntax error: while parsing a flow sequence; expected ',' or ']', "
            "but got '<stream end>'",
            id="syntax",
        ),
        pytest.param(
            "presence:\n  min_reads: 3\n  min_reads: 4\n",
            "bank.yaml:3: presence.min_reads: duplicate key: this key is already set above",
            id="duplicate-key",
        ),
        pytest.param("", "bank.yaml:1: the file is empty", id="empty"),
        pytest.param("- a\n", "bank.yaml:1: a profile must be a mapping of keys", id="list"),
    ],
)
def test_yaml_errors_in_base_file(host, base, expected):
    write("bank.yaml", base)
    assert errors_of(write(FILE, profile(head="extends: bank.yaml\n")), host) == [expected]


@pytest.mark.parametrize(
    ("head", "files", "expected"),
    [
        pytest.param(
            "extends: bank.yaml\n",
            {},
            "branch.yaml:1: extends: base profile bank.yaml not found",
            id="missing",
        ),
        pytest.param(
            "extends: bank.yaml\n",
            {"bank.yaml": "# bank\nextends: group.yaml\n"},
            "bank.yaml:2: extends: base profile group.yaml not found",
            id="missing-base-of-the-base",
        ),
        pytest.param(
            "extends: shared\n",
            {"shared/bank.yaml": "tiers: [gold]\n"},
            "branch.yaml:1: extends: base profile shared is a directory",
            id="directory",
        ),
        pytest.param(
            "extends: bank.yaml\n",
            {"bank.yaml": "tiers: [gold\n"},
            "bank.yaml:1:8: YAML syntax error: while parsing a flow sequence; expected ',' or ']', "
            "but got '<stream end>'",
            id="base-with-a-syntax-error",
        ),
        pytest.param(
            f"extends: {FILE}\n",
            {},
            f"branch.yaml:1: extends: circular extends: {FILE} -> {FILE}",
            id="circular",
        ),
        pytest.param(
            "extends: bank.yaml\n",
            {"bank.yaml": f"extends: {FILE}\n"},
            f"bank.yaml:1: extends: circular extends: {FILE} -> bank.yaml -> {FILE}",
            id="circular-through-the-base",
        ),
        pytest.param(
            "extends: ''\n", {}, "branch.yaml:1: extends: expected the path of a base profile", id="empty"
        ),
        pytest.param(
            "extends: [bank.yaml]\n",
            {},
            "branch.yaml:1: extends: expected the path of a base profile",
            id="not-a-path",
        ),
    ],
)
def test_unreadable_base_does_not_blame_the_keys_it_would_supply(host, head, files, expected):
    """The branch file has no branch, readers or stores: the base should have supplied them."""
    for name, text in files.items():
        write(name, text)
    text = profile(head=head, branch=None, readers=None, stores=None)
    assert errors_of(write(FILE, text), host) == [expected]


# -- !secret, !env and other tags -------------------------------------------------------------------


def _secrets_path(tmp_path: Path) -> str:
    return str(tmp_path.resolve() / "secrets.yaml")


def _tag_cases(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name -> (value for branch.name, the error it gives at branch.name)."""
    return {
        "secret-without-secrets-file": (
            "!secret branch_name",
            f"secret 'branch_name' not found: no secrets file at {_secrets_path(tmp_path)}; "
            "create it or set VIPSENSE_SECRETS to its path",
        ),
        "env-variable-unset": (
            "!env VIPSENSE_TEST_UNSET_VARIABLE",
            "environment variable VIPSENSE_TEST_UNSET_VARIABLE is not set; export it before starting",
        ),
        "unknown-tag": ("!vault branch_name", "unknown tag !vault; use !secret NAME or !env VARIABLE"),
        "secret-without-name": ("!secret ''", "!secret needs a name, e.g. !secret ldap_password"),
        "env-without-name": ("!env ''", "!env needs a variable name, e.g. !env LDAP_PASSWORD"),
    }


TAG_CASES = [
    "secret-without-secrets-file",
    "env-variable-unset",
    "unknown-tag",
    "secret-without-name",
    "env-without-name",
]


def _tag_profile(value: str) -> str:
    return profile(branch=f"branch:\n  id: t1\n  name: {value}\n")


@pytest.mark.parametrize("case", TAG_CASES)
def test_tag_error_is_the_only_error(host, tmp_path, monkeypatch, case):
    monkeypatch.delenv("VIPSENSE_TEST_UNSET_VARIABLE", raising=False)
    value, message = _tag_cases(tmp_path)[case]
    text = _tag_profile(value)
    assert errors_of(write(FILE, text), host) == [f"{FILE}:3: branch.name: {message}"]


def test_tag_error_in_a_staff_entry_gives_no_knock_on_routing_error(host, monkeypatch):
    monkeypatch.delenv("VIPSENSE_TEST_UNSET_VARIABLE", raising=False)
    text = profile(
        staff="""\
        staff:
          - {id: boss, name: The Boss, role: branch_manager}
          - {id: lobby, name: !env VIPSENSE_TEST_UNSET_VARIABLE, role: lobby_manager}
        """
    )
    assert errors_of(write(FILE, text), host) == expect(
        text,
        (
            "!env VIPSENSE_TEST_UNSET_VARIABLE",
            "staff[1].name: environment variable VIPSENSE_TEST_UNSET_VARIABLE is not set; "
            "export it before starting",
        ),
    )


def test_secret_name_not_in_secrets_file(host, tmp_path):
    write("secrets.yaml", "other: x\n")
    assert errors_of(write(FILE, _tag_profile("!secret branch_name")), host) == [
        f"{FILE}:3: branch.name: secret 'branch_name' is not in {_secrets_path(tmp_path)}"
    ]


def test_vipsense_secrets_pointing_nowhere(host, tmp_path, monkeypatch):
    monkeypatch.setenv("VIPSENSE_SECRETS", str(tmp_path / "missing.yaml"))
    write("secrets.yaml", "branch_name: from beside\n")
    assert errors_of(write(FILE, _tag_profile("!secret branch_name")), host) == [
        f"{FILE}:3: branch.name: secret 'branch_name' not found: no secrets file at "
        f"{tmp_path / 'missing.yaml'}; create it or set VIPSENSE_SECRETS to its path"
    ]


# A notifier type whose settings hold a Secret (no built-in has one): the only kind of setting a
# !secret value may fill.  'expires' is there for messages about dates.


@attrs.frozen
class TokenSettings:
    token: Secret
    url: str = "https://example.invalid/hook"
    expires: dt.date | None = None


class TokenPlugin:
    @staticmethod
    def vipsense_register_notifier_types(register):
        register("token-hook", TokenSettings, lambda settings, ctx: None)


def _host_with_token_plugin() -> PluginHost:
    h = load_host()
    h.add(TokenPlugin(), "test-token-plugin")
    return h


_TOKEN_NOTIFIERS = """\
    notifiers:
      - id: screen
        type: console
      - id: hook
        type: token-hook
        token: !secret hook_token
    """


def _dumped_token(path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> str:
    """``notifiers[1].settings.token`` as ``check --dump`` prints it; nothing secret is printed."""
    monkeypatch.setattr("vipsense.cli.load_host", _host_with_token_plugin)
    assert main(["check", "--dump", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "hunter2" not in out
    return yaml.safe_load(out)["notifiers"][1]["settings"]["token"]


@pytest.mark.usefixtures("restore_process_state")
def test_secret_in_a_base_file_uses_the_secrets_file_beside_the_base(tmp_path, monkeypatch, capsys):
    base = "# bank\n" + dedent(_TOKEN_NOTIFIERS)
    write("shared/bank.yaml", base)
    write("secrets.yaml", "hook_token: hunter2-beside-the-branch\n")  # beside the branch file: not used
    path = write(FILE, profile(head="extends: shared/bank.yaml\n", notifiers=None))
    beside_base = tmp_path.resolve() / "shared" / "secrets.yaml"
    assert errors_of(path, _host_with_token_plugin()) == expect(
        base,
        (
            "!secret hook_token",
            f"notifiers[1].token: secret 'hook_token' not found: no secrets file at {beside_base}; "
            "create it or set VIPSENSE_SECRETS to its path",
        ),
        file=os.path.join("shared", "bank.yaml"),
    )
    write("shared/secrets.yaml", "hook_token: hunter2-beside-the-base\n")
    token = load_profile(path, _host_with_token_plugin()).notifiers[1].settings.token
    assert token.reveal() == "hunter2-beside-the-base"
    assert _dumped_token(path, monkeypatch, capsys) == "******"


@pytest.mark.usefixtures("restore_process_state")
def test_secret_reads_secrets_yaml_beside_the_profile(tmp_path, monkeypatch, capsys):
    write("branches/sh/secrets.yaml", "hook_token: hunter2-beside-the-profile\n")
    path = tmp_path / write("branches/sh/branch.yaml", profile(notifiers=_TOKEN_NOTIFIERS))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the working directory does not matter
    token = load_profile(path, _host_with_token_plugin()).notifiers[1].settings.token
    assert isinstance(token, Secret)
    assert token.reveal() == "hunter2-beside-the-profile"
    assert _dumped_token(path, monkeypatch, capsys) == "******"


@pytest.mark.usefixtures("restore_process_state")
def test_vipsense_secrets_overrides_the_secrets_file_beside_the_profile(tmp_path, monkeypatch, capsys):
    write("secrets.yaml", "hook_token: hunter2-beside\nother_token: hunter2-only-beside\n")
    write("vault/prod-secrets.yaml", "hook_token: hunter2-from-VIPSENSE_SECRETS\n")
    path = write(FILE, profile(notifiers=_TOKEN_NOTIFIERS))
    monkeypatch.setenv("VIPSENSE_SECRETS", str(tmp_path / "vault/prod-secrets.yaml"))
    token = load_profile(path, _host_with_token_plugin()).notifiers[1].settings.token
    assert token.reveal() == "hunter2-from-VIPSENSE_SECRETS"
    assert _dumped_token(path, monkeypatch, capsys) == "******"
    # a name only in the file beside the profile is not found: that file is not read at all
    text = profile(notifiers=_TOKEN_NOTIFIERS.replace("hook_token", "other_token"))
    assert errors_of(write(FILE, text), _host_with_token_plugin()) == expect(
        text,
        (
            "!secret other_token",
            f"notifiers[1].token: secret 'other_token' is not in {tmp_path / 'vault/prod-secrets.yaml'}",
        ),
    )


def test_secret_setting_of_a_plugin_is_a_masked_secret():
    write("secrets.yaml", "hook_token: hunter2-token\n")
    p = load_profile(write(FILE, profile(notifiers=_TOKEN_NOTIFIERS)), _host_with_token_plugin())
    token = p.notifiers[1].settings.token
    assert isinstance(token, Secret)
    assert token.reveal() == "hunter2-token"
    assert repr(token) == "Secret('******', source='secret:hook_token')"
    assert "hunter2" not in repr(p)


def test_plain_value_for_a_secret_setting_is_wrapped():
    notifiers = _TOKEN_NOTIFIERS.replace("!secret hook_token", "hunter2-inline")
    p = load_profile(write(FILE, profile(notifiers=notifiers)), _host_with_token_plugin())
    assert p.notifiers[1].settings.token == Secret("hunter2-inline")
    assert "hunter2" not in repr(p)


#: one plain (not secret) setting of each type, '@VALUE@' standing for its value:
#: (id, profile, key path, the type in words)
_PLAIN_SETTINGS = [
    ("string", _tag_profile("@VALUE@"), "branch.name", "a string"),
    ("integer", profile(tail="presence:\n  min_reads: @VALUE@\n"), "presence.min_reads", "an integer"),
    ("number", profile(tail="presence:\n  min_rssi: @VALUE@\n"), "presence.min_rssi", "a number"),
    ("duration", profile(tail="notification_ttl: @VALUE@\n"), "notification_ttl", "a duration such as 2s"),
    ("list", profile(tail="tiers: @VALUE@\n"), "tiers", "a list"),
    ("mapping", profile(tail="presence: @VALUE@\n"), "presence", "a mapping of keys"),
    (
        "date",
        profile(
            notifiers="""\
            notifiers:
              - id: screen
                type: console
              - id: hook
                type: token-hook
                token: inline-token
                expires: @VALUE@
            """
        ),
        "notifiers[1].expires",
        "a date such as 2027-12-31",
    ),
]


@pytest.mark.parametrize(
    ("text", "key", "words"), [pytest.param(t, k, w, id=i) for i, t, k, w in _PLAIN_SETTINGS]
)
def test_secret_fills_only_secret_settings(text, key, words):
    write("secrets.yaml", "value: hunter2\n")
    text = text.replace("@VALUE@", "!secret value")
    assert errors_of(write(FILE, text), _host_with_token_plugin()) == expect(
        text,
        (
            "!secret value",
            f"{key}: {words} is expected here, not a secret: !secret values fill only secret settings",
        ),
    )


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [pytest.param(t, k, w, id=i) for i, t, k, w in _PLAIN_SETTINGS if i != "string"],
)
def test_env_value_of_the_wrong_type_is_named_not_shown(monkeypatch, text, key, words):
    monkeypatch.setenv("VIPSENSE_TEST_VALUE", "hunter2 [x")
    text = text.replace("@VALUE@", "!env VIPSENSE_TEST_VALUE")
    assert errors_of(write(FILE, text), _host_with_token_plugin()) == expect(
        text, ("!env VIPSENSE_TEST_VALUE", f"{key}: the value of VIPSENSE_TEST_VALUE is not {words}")
    )


def test_env_into_a_plain_string_field(host, monkeypatch):
    monkeypatch.setenv("VIPSENSE_TEST_BRANCH_NAME", "Branch From Env")
    p = load_profile(write(FILE, _tag_profile("!env VIPSENSE_TEST_BRANCH_NAME")), host)
    assert p.branch.name == "Branch From Env"
    assert type(p.branch.name) is str


def test_env_into_number_fields(host, monkeypatch):
    monkeypatch.setenv("VIPSENSE_TEST_MIN_READS", "4001")
    monkeypatch.setenv("VIPSENSE_TEST_RSSI", "-65.5")
    monkeypatch.setenv("VIPSENSE_TEST_TTL", "90s")
    text = profile(
        tail="""\
        presence:
          min_reads: !env VIPSENSE_TEST_MIN_READS
          min_rssi: !env VIPSENSE_TEST_RSSI
        notification_ttl: !env VIPSENSE_TEST_TTL
        """
    )
    p = load_profile(write(FILE, text), host)
    assert (p.presence.min_reads, p.presence.min_rssi, p.notification_ttl) == (4001, -65.5, 90)
    assert type(p.presence.min_reads) is int
    monkeypatch.setenv("VIPSENSE_TEST_MIN_READS", "0")
    assert errors_of(write(FILE, text), host) == expect(
        text, ("min_reads: !env", "presence.min_reads: must be greater than 0, got 0")
    )


def test_env_value_that_is_not_yaml_into_a_number_field(host, monkeypatch):
    monkeypatch.setenv("VIPSENSE_TEST_MIN_READS", "[x")
    text = profile(tail="presence:\n  min_reads: !env VIPSENSE_TEST_MIN_READS\n")
    assert errors_of(write(FILE, text), host) == expect(
        text,
        (
            "min_reads: !env",
            "presence.min_reads: the value of VIPSENSE_TEST_MIN_READS is not an integer",
        ),
    )


def test_secret_repr_and_str_are_masked():
    plain = Secret("hunter2")
    from_env = Secret("hunter2", "env:LDAP_PW")
    from_file = Secret("hunter2", "secret:ldap_password")
    assert repr(plain) == "Secret('******')"
    assert repr(from_env) == "Secret('******', source='env:LDAP_PW')"
    assert repr(from_file) == "Secret('******', source='secret:ldap_password')"
    assert str(plain) == str(from_env) == str(from_file) == "******"
    assert f"{from_env}" == "******"
    assert "hunter2" not in repr([plain, from_env, from_file, {"pw": from_env}])
    assert from_env.reveal() == "hunter2"
    assert plain == from_env == from_file


def test_loaded_secret_values_are_masked(tmp_path, monkeypatch):
    """The YAML layer turns every tag into a Secret (where it may go is checked later)."""
    write("secrets.yaml", "branch_name: hunter2-secret\n")
    monkeypatch.setenv("VIPSENSE_TEST_PW", "hunter2-env")
    text = profile(branch="branch:\n  id: !env VIPSENSE_TEST_PW\n  name: !secret branch_name\n")
    loaded = load_profile_yaml(write(FILE, text))
    assert loaded.errors == []
    from_secret = loaded.data["branch"]["name"]
    from_env = loaded.data["branch"]["id"]
    assert isinstance(from_secret, Secret)
    assert isinstance(from_env, Secret)
    assert repr(from_secret) == "Secret('******', source='secret:branch_name')"
    assert repr(from_env) == "Secret('******', source='env:VIPSENSE_TEST_PW')"
    assert str(from_secret) == str(from_env) == "******"
    assert "hunter2" not in repr(loaded.data)
    assert (from_secret.reveal(), from_env.reveal()) == ("hunter2-secret", "hunter2-env")


@pytest.mark.parametrize(
    ("secrets", "problem"),
    [
        pytest.param("other: 1\nhook_token: a: b\n", "is not valid YAML (line 2)", id="syntax-error"),
        pytest.param(
            "other: 1\nhook_token: [unclosed\n",
            "is not valid YAML (line 2)",
            id="unclosed-bracket",
        ),
        pytest.param("- hook_token\n", "must be a mapping of names to values", id="a-list"),
        pytest.param("hunter2\n", "must be a mapping of names to values", id="a-scalar"),
    ],
)
def test_broken_secrets_file_is_not_called_missing(tmp_path, secrets, problem):
    write("secrets.yaml", secrets)
    text = profile(notifiers=_TOKEN_NOTIFIERS)
    assert errors_of(write(FILE, text), _host_with_token_plugin()) == expect(
        text,
        (
            "!secret hook_token",
            f"notifiers[1].token: secret 'hook_token' not found: the secrets file {_secrets_path(tmp_path)} "
            f"{problem}",
        ),
    )


# -- vipsense check ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("restore_process_state")
def test_check_bad_profile_prints_every_error(capsys):
    text = profile(
        readers="""\
            readers:
              - id: door
                type: simulate
                visitors: []
            """,
        tail="""\
            presence:
              window: fast
            """,
    )
    path = write(FILE, text)
    assert main(["check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert sorted(lines[:-1]) == sorted(
        expect(
            text,
            (
                "type: simulate",
                "readers[0].type: unknown reader type 'simulate'; did you mean 'simulated'? "
                f"(installed reader types: {READER_TYPES})",
            ),
            ("window: fast", "presence.window: expected a duration such as 500ms, 2s or 10m, got 'fast'"),
        )
    )
    assert lines[-1] == f"{path}: 2 errors; nothing was started"


@pytest.mark.usefixtures("restore_process_state")
def test_check_one_error_is_singular(capsys):
    path = write(FILE, "")
    assert main(["check", str(path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{FILE}:1: the file is empty",
        f"{FILE}: 1 error; nothing was started",
    ]


@pytest.mark.usefixtures("restore_process_state")
def test_check_good_profile(capsys, tmp_path):
    path = write(FILE, profile())
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out == (
        f"{path}: OK: branch t1 (Test Branch): 1 reader, 1 store, 1 notifier, 3 routing rules; "
        f"data in {tmp_path / 'data' / 't1'}\n"
        "  store local (sqlite): answers within 500 ms or is skipped; arrivals wait up to 10 s for it"
        " while it starts\n"
        "  note: no routing rule for 'unresolved': a card that no identity store can look up is shown on"
        " the status page only; add {event: unresolved, to: lobby_manager, via: [...]}\n"
        f"  note: no privacy.data_key: ID and mobile numbers are encrypted with a key kept in the data"
        f" directory ({tmp_path / 'data' / 't1' / 'data.key'}), so whoever copies the directory has the key"
        " too; a real branch sets data_key: !secret data_key and keeps the key in its secrets file"
        " (vipsense keys new makes one)\n"
        f"  note: the audit log's key and anchors are kept in the data directory"
        f" ({tmp_path / 'data' / 't1' / 'audit.key'}, {tmp_path / 'data' / 't1' / 'audit-anchors'}), where"
        " whoever can change the log can change them too; a branch sets privacy.audit_key: !secret"
        " audit_key and privacy.audit_anchors: a directory on write-once (WORM) storage\n"
    )


@pytest.mark.usefixtures("restore_process_state")
def test_check_shows_each_stores_timeout_and_start_up_grace(capsys, tmp_path):
    slow = "    type: sqlite\n    timeout: 2s\n    start_grace: 30s\n"
    text = profile().replace("    type: sqlite\n", slow)
    assert "start_grace: 30s" in text
    assert main(["check", str(write(FILE, text))]) == 0
    out = capsys.readouterr().out
    assert "  store local (sqlite): answers within 2 s or is skipped; arrivals wait up to 30 s" in out


@pytest.mark.usefixtures("restore_process_state")
def test_check_dump_prints_the_resolved_profile(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Shanghai")  # the branch's time zone defaults to the host's
    text = profile(
        tail="""\
        presence:
          min_reads: 4
          window: 750ms
        """
    )
    path = write(FILE, text)
    assert main(["check", "--dump", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    dump = yaml.safe_load(out)
    assert dump["branch"] == {"id": "t1", "name": "Test Branch", "timezone": "Asia/Shanghai", "locale": None}
    assert "warnings" not in dump
    assert dump["presence"] == {
        "min_reads": 4,
        "window": 0.75,
        "min_rssi": None,
        "reentry_suppress": 600.0,
        "depart_after": 2.0,
    }
    assert dump["data_dir"] == str(tmp_path / "data" / "t1")
    assert dump["routing"][1]["reasons"] == ["lost", "revoked"]


@pytest.mark.usefixtures("restore_process_state")
def test_check_dump_masks_secret_settings(capsys, monkeypatch):
    write("secrets.yaml", "hook_token: hunter2-token\n")
    path = write(FILE, profile(notifiers=_TOKEN_NOTIFIERS))
    monkeypatch.setattr("vipsense.cli.load_host", _host_with_token_plugin)
    assert main(["check", "--dump", str(path)]) == 0
    out, err = capsys.readouterr()
    dump = yaml.safe_load(out)
    assert dump["notifiers"][1]["settings"] == {
        "token": "******",
        "url": "https://example.invalid/hook",
        "expires": None,
    }
    assert "hunter2" not in out + err


@pytest.mark.usefixtures("restore_process_state")
def test_check_dump_masks_env_settings(capsys, monkeypatch):
    monkeypatch.setenv("VIPSENSE_TEST_TOKEN", "hunter2-env-token")
    notifiers = _TOKEN_NOTIFIERS.replace("!secret hook_token", "!env VIPSENSE_TEST_TOKEN")
    path = write(FILE, profile(notifiers=notifiers))
    monkeypatch.setattr("vipsense.cli.load_host", _host_with_token_plugin)
    assert main(["check", "--dump", str(path)]) == 0
    out, err = capsys.readouterr()
    assert yaml.safe_load(out)["notifiers"][1]["settings"]["token"] == "******"
    assert "hunter2" not in out + err


@pytest.mark.usefixtures("restore_process_state")
def test_check_errors_do_not_show_secret_values_from_tags(capsys, monkeypatch):
    """A missing secret is named, never shown; nothing from secrets.yaml leaks into the output."""
    write("secrets.yaml", "other_secret: hunter2-other\n")
    path = write(FILE, _tag_profile("!secret branch_name"))
    assert main(["check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "secret 'branch_name' is not in" in err
    assert "hunter2" not in out + err


@pytest.mark.usefixtures("restore_process_state")
def test_check_type_error_does_not_print_a_secret_value(capsys, monkeypatch):
    monkeypatch.setenv("VIPSENSE_TEST_PW", "hunter2-leaked")
    text = profile(tail="presence:\n  min_reads: !env VIPSENSE_TEST_PW\n")
    path = write(FILE, text)
    assert main(["check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        *expect(
            text, ("min_reads: !env", "presence.min_reads: the value of VIPSENSE_TEST_PW is not an integer")
        ),
        f"{path}: 1 error; nothing was started",
    ]


@pytest.mark.usefixtures("restore_process_state")
def test_check_rejects_a_secret_in_a_plain_string_field(capsys):
    """``check --dump`` prints plain settings, so a !secret may not fill one (here branch.name)."""
    write("secrets.yaml", "branch_name: hunter2-name\n")
    path = write(FILE, _tag_profile("!secret branch_name"))
    assert main(["check", "--dump", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{FILE}:3: branch.name: a string is expected here, not a secret: "
        "!secret values fill only secret settings",
        f"{path}: 1 error; nothing was started",
    ]


@pytest.mark.usefixtures("restore_process_state")
def test_check_dump_masks_staff_mobile(capsys):
    staff = SECTIONS["staff"].replace("role: branch_manager}", "role: branch_manager, mobile: '13812345678'}")
    path = write(FILE, profile(staff=staff))
    assert main(["check", "--dump", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    dump = yaml.safe_load(out)
    assert [(s["id"], s["mobile"]) for s in dump["staff"]] == [("boss", "138****5678"), ("lobby", None)]
    assert "13812345678" not in out


# -- no tracebacks, the right line, one clear message -----------------------------------------------


def test_yaml_merge_key_is_a_clean_error(host):
    text = profile(
        tail="""\
        defaults: &defaults
          min_reads: 3
        presence:
          <<: *defaults
        """
    )
    assert sorted(errors_of(write(FILE, text), host)) == sorted(
        expect(
            text,
            ("<<: *defaults", "presence: YAML merge keys (<<) are not supported; use extends: instead"),
            ("defaults: &defaults", f"defaults: unknown key (known keys: {KNOWN_TOP})"),
        )
    )


def test_unclosed_quote_is_reported_on_its_line(host):
    text = profile(branch='branch:\n  id: t1\n  name: "Test Branch\n')
    assert len(text.splitlines()) == 20  # PyYAML finds the end of the stream on line 21
    assert errors_of(write(FILE, text), host) == expect(
        text,
        (
            ('name: "Test', 9),
            "YAML syntax error: while scanning a quoted scalar; found unexpected end of stream",
        ),
    )


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        pytest.param(
            "window: .nan",
            "presence.window: a duration must be a finite, non-negative time, got nan",
            id="window",
        ),
        pytest.param("min_rssi: .nan", "presence.min_rssi: expected a number, got nan", id="min_rssi"),
    ],
)
def test_nan_is_rejected(host, setting, message):
    text = profile(tail=f"presence:\n  {setting}\n")
    assert errors_of(write(FILE, text), host) == expect(text, (setting, message))


def test_reader_item_not_a_mapping_is_one_error(host):
    text = profile(readers="readers:\n  - door\n")
    assert errors_of(write(FILE, text), host) == expect(
        text, ("- door", "readers[0]: expected a mapping with a 'type:' key, got 'door'")
    )


def test_type_of_wrong_kind_is_not_called_missing(host):
    text = profile(readers="readers:\n  - id: door\n    type: [simulated]\n    visitors: []\n")
    assert errors_of(write(FILE, text), host) == expect(
        text,
        (
            "type: [simulated]",
            f"readers[0].type: expected a reader type name ({READER_TYPES}), got ['simulated']",
        ),
    )


def test_empty_extends_is_reported_at_extends(host):
    assert errors_of(write(FILE, profile(head="extends: ''\n")), host) == [
        f"{FILE}:1: extends: expected the path of a base profile"
    ]


def test_unsupported_yaml_tag_is_one_line(host):
    text = profile(tail="presence:\n  min_reads: !!python/object:os.system ls\n")
    assert errors_of(write(FILE, text), host) == expect(
        text,
        (
            "!!python",
            "presence.min_reads: cannot read this value: could not determine a constructor for the tag "
            "'tag:yaml.org,2002:python/object:os.system'",
        ),
    )


def test_null_list_item_is_reported_with_its_type_in_words(host):
    text = profile(
        routing="""\
        routing:
          - null
          - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [screen]}
          - {event: suspect, to: branch_manager, via: [screen]}
        """
    )
    assert errors_of(write(FILE, text), host) == expect(
        text, ("- null", "routing[0]: a value is required here (a mapping of keys)")
    )


# -- one typo, one error ----------------------------------------------------------------------------

KNOWN_SQLITE = "id, type, timeout, start_grace, path, seed"  #: a store item: core keys, then settings
KNOWN_CONSOLE = "id, type, retry, color, width"  #: a notifier item


@pytest.mark.parametrize(
    ("sections", "marker", "error"),
    [
        pytest.param(
            {"stores": "stores:\n  - id: local\n    type: sqlite\n    timout: 1s\n"},
            "timout",
            f"stores[0].timout: unknown key; did you mean 'timeout'? (known keys: {KNOWN_SQLITE})",
            id="store-timeout",
        ),
        pytest.param(
            {"stores": "stores:\n  - id: local\n    type: sqlite\n    start_grce: 5s\n"},
            "start_grce",
            f"stores[0].start_grce: unknown key; did you mean 'start_grace'? (known keys: {KNOWN_SQLITE})",
            id="store-start-grace",
        ),
        pytest.param(
            {"notifiers": "notifiers:\n  - id: screen\n    type: console\n    retyr: {first: 2s}\n"},
            "retyr",
            f"notifiers[0].retyr: unknown key; did you mean 'retry'? (known keys: {KNOWN_CONSOLE})",
            id="notifier-retry",
        ),
        pytest.param(
            {"readers": "readers:\n  - idd: door\n    type: simulated\n    visitors: []\n"},
            "idd",
            "readers[0].idd: unknown key; did you mean 'id'? (known keys: id, type, visitors, seed, loop)",
            id="reader-id",
        ),
        pytest.param(
            {"readers": "readers:\n  - id: door\n    tpye: simulated\n    visitors: []\n"},
            "tpye",
            "readers[0].tpye: unknown key; did you mean 'type'? "
            "(known keys: id, type and the reader type's settings)",
            id="reader-type",
        ),
        pytest.param(
            {"branch": "branch:\n  id: t1\n  nmae: Test Branch\n"},
            "nmae",
            "branch.nmae: unknown key; did you mean 'name'? (known keys: id, name, timezone, locale)",
            id="required-key-of-a-section",
        ),
        pytest.param(
            {"readers": "readrs:\n  - {id: door, type: simulated, visitors: []}\n"},
            "readrs",
            f"readrs: unknown key; did you mean 'readers'? (known keys: {KNOWN_TOP})",
            id="required-section",
        ),
    ],
)
def test_a_misspelt_key_is_one_error_listing_every_key_of_its_item(host, sections, marker, error):
    """Core keys (id, type, timeout, start_grace, retry) are suggested and listed with the plugin's
    settings, and a misspelt required key is not also reported as missing."""
    text = profile(**sections)
    assert errors_of(write(FILE, text), host) == expect(text, (marker, error))


FOLDED = "errors that follow from it are left out"


def test_a_misspelt_section_folds_the_errors_that_follow_from_it(host):
    text = profile(notifiers="notifers:\n  - {id: screen, type: console}\n")
    first = line_of(text, "{event: arrival")
    assert errors_of(write(FILE, text), host) == expect(
        text,
        (
            "notifers:",
            f"notifers: unknown key; did you mean 'notifiers'? (known keys: {KNOWN_TOP}); "
            f"3 {FOLDED} (the first at routing[0].via[0], line {first})",
        ),
    )


def test_a_section_that_fails_to_structure_folds_the_errors_that_follow_from_it(host):
    text = profile(notifiers="notifiers: screen\n")
    first = line_of(text, "{event: arrival")
    assert errors_of(write(FILE, text), host) == expect(
        text,
        (
            "notifiers: screen",
            f"notifiers: expected a list, got 'screen'; 3 {FOLDED} "
            f"(the first at routing[0].via[0], line {first})",
        ),
    )


def test_a_misspelt_staff_section_folds_the_missing_roles(host):
    text = profile(staff="staf:\n  - {id: boss, name: The Boss, role: branch_manager}\n")
    first = line_of(text, "{event: arrival")
    assert errors_of(write(FILE, text), host) == expect(
        text,
        (
            "staf:",
            f"staf: unknown key; did you mean 'staff'? (known keys: {KNOWN_TOP}); "
            f"3 {FOLDED} (the first at routing[0].to, line {first})",
        ),
    )


def test_a_misspelt_routing_section_folds_the_policy_errors(host):
    text = profile(routing="routng:\n  - {event: arrival, to: lobby_manager, via: [screen]}\n")
    assert errors_of(write(FILE, text), host) == expect(
        text,
        (
            "routng:",
            f"routng: unknown key; did you mean 'routing'? (known keys: {KNOWN_TOP}); "
            "2 errors about routing that follow from it are left out",
        ),
    )


def test_a_reference_to_a_sound_section_is_still_reported(host):
    """Folding is for broken sections only: a misspelt notifier id is its own error."""
    text = profile(routing=SECTIONS["routing"].replace("via: [screen]}\n", "via: [screem]}\n", 1))
    assert errors_of(write(FILE, text), host) == expect(
        text,
        (
            "[screem]",
            "routing[0].via[0]: no notifier has id 'screem'; did you mean 'screen'? (notifier ids: screen)",
        ),
    )


def test_errors_are_in_file_order(host):
    text = profile(
        readers="readers:\n  - {id: door, type: simulatd, visitors: []}\n",
        routing=SECTIONS["routing"].replace("via: [screen]}\n", "via: [screem]}\n", 1),
        tail="presence:\n  window: fast\n",
    )
    assert errors_of(write(FILE, text), host) == expect(
        text,
        (
            "type: simulatd",
            "readers[0].type: unknown reader type 'simulatd'; did you mean 'simulated'? "
            f"(installed reader types: {READER_TYPES})",
        ),
        (
            "[screem]",
            "routing[0].via[0]: no notifier has id 'screem'; did you mean 'screen'? (notifier ids: screen)",
        ),
        ("window: fast", "presence.window: expected a duration such as 500ms, 2s or 10m, got 'fast'"),
    )


# -- YAML syntax: the column and what usually causes it ---------------------------------------------

ALIGN = "check the indentation: the keys of one mapping must start in the same column"
DEEPER = (
    "check the indentation: this line is indented deeper than the line above, so it reads as part of "
    "that line's value; line it up with the keys above (or is a ':' missing above?)"
)


@pytest.mark.parametrize(
    ("branch", "where", "error"),
    [
        pytest.param(
            "branch:\n  id: t1\n name: Test Branch\n",
            (3, 2),
            "YAML syntax error: while parsing a block mapping; expected <block end>, but found "
            f"'<block mapping start>'; {ALIGN}",
            id="indented-less",
        ),
        pytest.param(
            "branch:\n  id: t1\n    name: Test Branch\n",
            ("    name:", 9),
            f"YAML syntax error: mapping values are not allowed here; {DEEPER}",
            id="indented-more",
        ),
        pytest.param(
            "branch:\n  id: t1\n  name Test Branch\n",
            ("name Test", 3),
            "YAML syntax error: while scanning a simple key; could not find expected ':'; "
            "a key needs ':' and a space after it, as in 'name: value'",
            id="missing-colon",
        ),
        pytest.param(
            "branch:\n  id:\tt1\n  name: Test Branch\n",
            (2, 6),
            "YAML syntax error: while scanning for the next token; found character '\\t' that cannot "
            "start any token; replace the tab with spaces: YAML does not allow tabs for indentation or "
            "after a 'key:'",
            id="tab-after-a-key",
        ),
        pytest.param(
            "branch:\n  id: t1\n  name: Test\x07Branch\n",
            ("name: Test", 13),
            "character U+0007 is not allowed in YAML; remove it",
            id="control-character",
        ),
    ],
)
def test_yaml_syntax_error_names_the_column_and_a_hint(host, branch, where, error):
    text = profile(branch=branch)
    assert errors_of(write(FILE, text), host) == expect(text, (where, error))


NOT_UTF8 = "save the file as UTF-8 (a file saved as GBK or GB2312 gives this error)"


def test_a_byte_that_is_not_utf8_names_its_line_and_column(host):
    """A profile saved as GBK: the column counts the characters before the bad byte."""
    text = profile(branch="branch:\n  id: t1\n  name: 上海 测试\n")
    data = text.encode("utf-8").replace("测试".encode(), "测试".encode("gbk"))
    Path(FILE).write_bytes(data)
    assert errors_of(Path(FILE), host) == [
        f"{FILE}:3:12: not UTF-8: byte 0x{'测'.encode('gbk')[0]:02x} cannot be read; {NOT_UTF8}"
    ]


# -- branch.timezone ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "error"),
    [
        pytest.param(
            "Asia/Shangai",
            "unknown time zone 'Asia/Shangai'; did you mean 'Asia/Shanghai'? "
            "(an IANA name such as Asia/Shanghai or UTC)",
            id="misspelt",
        ),
        pytest.param(
            "asia/shanghai",
            "unknown time zone 'asia/shanghai'; did you mean 'Asia/Shanghai'? "
            "(an IANA name such as Asia/Shanghai or UTC)",
            id="lower-case",
        ),
        pytest.param(
            "../../etc/passwd",
            "unknown time zone '../../etc/passwd' (an IANA name such as Asia/Shanghai or UTC)",
            id="a-path",
        ),
        pytest.param(
            "localtime",
            "unknown time zone 'localtime' (an IANA name such as Asia/Shanghai or UTC)",
            id="localtime-is-no-name",
        ),
    ],
)
def test_unknown_time_zone(host, zone, error):
    text = profile(branch=f"branch:\n  id: t1\n  name: Test Branch\n  timezone: {zone}\n")
    assert errors_of(write(FILE, text), host) == expect(text, ("timezone:", f"branch.timezone: {error}"))


def test_branch_time_zone_is_a_zoneinfo(host, monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # the profile's zone wins over the host's
    text = profile(branch="branch:\n  id: t1\n  name: Test Branch\n  timezone: Europe/Berlin\n")
    p = load_profile(write(FILE, text), host)
    assert p.branch.timezone == "Europe/Berlin"
    assert p.tz == zoneinfo.ZoneInfo("Europe/Berlin")
    assert p.tz.utcoffset(dt.datetime(2027, 1, 15)) == dt.timedelta(hours=1)
    assert p.tz.utcoffset(dt.datetime(2027, 7, 15)) == dt.timedelta(hours=2)


@pytest.mark.parametrize(
    "tz", ["America/New_York", ":America/New_York", "/usr/share/zoneinfo/America/New_York"]
)
def test_branch_time_zone_defaults_to_the_hosts_tz(host, monkeypatch, tz):
    monkeypatch.setenv("TZ", tz)
    p = load_profile(write(FILE, profile()), host)
    assert p.branch.timezone == "America/New_York"
    assert p.tz == zoneinfo.ZoneInfo("America/New_York")


def test_host_time_zone_comes_from_tz_then_localtime_then_etc_timezone(tmp_path):
    localtime = tmp_path / "localtime"
    localtime.symlink_to("../usr/share/zoneinfo/Asia/Tokyo")  # the name is read from the link
    timezone_file = tmp_path / "timezone"
    timezone_file.write_text("Europe/Paris\n", encoding="utf-8")
    nowhere = tmp_path / "nowhere"
    assert host_timezone({"TZ": "Asia/Shanghai"}, localtime, timezone_file) == "Asia/Shanghai"
    assert host_timezone({"TZ": "CST-8"}, localtime, timezone_file) == "Asia/Tokyo"  # a POSIX rule
    assert host_timezone({}, localtime, timezone_file) == "Asia/Tokyo"
    assert host_timezone({}, nowhere, timezone_file) == "Europe/Paris"
    assert host_timezone({}, nowhere, nowhere) == "UTC"


# -- serial ports: a missing device is a warning ----------------------------------------------------


def _ports_here() -> str:
    """What pyserial lists on this machine, as a missing-port warning names them."""
    from serial.tools import list_ports

    ports = sorted(p.device for p in list_ports.comports())
    return ", ".join(ports[:8]) + (" ..." if len(ports) > 8 else "") or "none"


MISSING_PORT = "/dev/ttyVIPSENSE-TEST-0"


def _serial_profile(reader_port: str, modem_port: str = "socket://127.0.0.1:4002") -> str:
    return profile(
        readers=f"readers:\n  - {{id: door, type: thingmagic, region: PRC, port: '{reader_port}'}}\n",
        notifiers=(
            "notifiers:\n  - {id: screen, type: console}\n"
            f"  - {{id: pager, type: sms-modem, port: '{modem_port}'}}\n"
        ),
    )


def test_a_serial_port_that_does_not_exist_is_a_warning_naming_the_ports_that_do(host):
    text = _serial_profile(MISSING_PORT, modem_port=MISSING_PORT + "1")
    p = load_profile(write(FILE, text), host)
    assert str(p.readers[0].settings.port) == MISSING_PORT
    advice = "plug the device in before the branch starts, or correct the port"
    assert [str(w) for w in p.warnings] == expect(
        text,
        (
            "type: thingmagic",
            f"readers[0].port: warning: serial port {MISSING_PORT} does not exist on this machine "
            f"(serial ports here: {_ports_here()}); {advice}",
        ),
        (
            "type: sms-modem",
            f"notifiers[1].port: warning: serial port {MISSING_PORT}1 does not exist on this machine "
            f"(serial ports here: {_ports_here()}); {advice}",
        ),
    )


@pytest.mark.parametrize("port", ["socket://127.0.0.1:4001", "rfc2217://10.0.0.5:2217", "loop://"])
def test_a_pyserial_url_is_not_looked_for(host, port):
    assert load_profile(write(FILE, _serial_profile(port, port)), host).warnings == ()


def test_a_serial_port_that_exists_gives_no_warning(host):
    leader, follower = os.openpty()  # a real serial device: a pseudo-terminal
    try:
        p = load_profile(write(FILE, _serial_profile(os.ttyname(follower))), host)
    finally:
        os.close(leader)
        os.close(follower)
    assert p.warnings == ()


def test_an_empty_serial_port_is_an_error(host):
    text = _serial_profile("")
    assert errors_of(write(FILE, text), host) == expect(
        text,
        (
            "type: thingmagic",
            "readers[0].port: expected a serial port such as /dev/ttyUSB0 or socket://host:port, got ''",
        ),
    )


def test_a_serial_port_from_env_is_named_by_its_variable_not_shown(host, monkeypatch):
    monkeypatch.setenv("VIPSENSE_TEST_PORT", MISSING_PORT)
    text = profile(
        readers="readers:\n  - {id: door, type: thingmagic, region: PRC, port: !env VIPSENSE_TEST_PORT}\n"
    )
    [warning] = load_profile(write(FILE, text), host).warnings
    assert MISSING_PORT not in str(warning)
    assert warning.message == (
        "the serial port that VIPSENSE_TEST_PORT names does not exist on this machine; plug the device in "
        "before the branch starts, or correct VIPSENSE_TEST_PORT"
    )


@pytest.mark.usefixtures("restore_process_state")
def test_check_with_only_warnings_passes_and_prints_them(capsys):
    text = _serial_profile(MISSING_PORT)
    path = write(FILE, text)
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"{FILE}:{line_of(text, 'type: thingmagic')}: readers[0].port: warning: serial port {MISSING_PORT} "
        f"does not exist on this machine (serial ports here: {_ports_here()}); plug the device in before "
        "the branch starts, or correct the port"
    ]
    assert out.startswith(f"{path}: OK with 1 warning: branch t1 (Test Branch): ")


@pytest.mark.usefixtures("restore_process_state")
def test_check_prints_warnings_with_the_errors_in_file_order(capsys):
    text = _serial_profile(MISSING_PORT) + "presence:\n  window: fast\n"
    path = write(FILE, text)
    assert main(["check", str(path)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[1] for line in lines[:-1]] == ["readers[0].port", "presence.window"]
    assert lines[-1] == f"{path}: 1 error, 1 warning; nothing was started"
