"""``extends:``: the one composition rule of branch profiles (core/config/yamlload.py).

Mappings merge key by key, recursively; a list or scalar in the branch file replaces the base's
whole; ``key: null`` removes the base's value so the default applies (in any profile, with or
without a base, ``key: null`` means "not set"); a base may extend another base; a relative
``data_dir`` resolves against the file that set it; ``data_dir=`` / ``--data-dir`` override it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from textwrap import dedent

import pytest

from vipsense.cli import main
from vipsense.config.errors import ProfileError
from vipsense.config.profile import DEFAULT_TIERS, PresenceSettings, load_profile
from vipsense.config.yamlload import load_profile_yaml
from vipsense.pluginhost import PluginHost

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "profiles" / "demo.yaml"
BANK = REPO / "profiles" / "bank.yaml"

#: everything a branch needs, without presence/tiers/ttl/data_dir, which the tests set
BRANCH_BODY = """\
branch:
  id: t1
  name: Test Branch
readers:
  - id: door
    type: simulated
    visitors: []
stores:
  - id: local
    type: sqlite
notifiers:
  - id: screen
    type: console
staff:
  - {id: boss, name: The Boss, role: branch_manager}
routing:
  - {event: rejected, reasons: [lost, revoked], to: branch_manager, via: [screen]}
  - {event: suspect, to: branch_manager, via: [screen]}
"""

#: like profiles/bank.yaml
BANK_TEXT = """\
tiers: [standard, gold, platinum, diamond]
presence:
  min_reads: 3
  window: 1s
  min_rssi: -70
  reentry_suppress: 10m
  depart_after: 3s
notification_ttl: 10m
"""


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("VIPSENSE_SECRETS", "VIPSENSE_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("VIPSENSE_DATA_DIR", str(tmp_path / "default-data"))


def write(name: str | Path, text: str) -> Path:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text), encoding="utf-8")
    return path


def branch_file(name: str | Path, extends: str, extra: str = "", body: str = BRANCH_BODY) -> Path:
    """A complete branch profile that extends ``extends``, with ``extra`` keys after the body."""
    return write(name, f"extends: {extends}\n" + body + dedent(extra))


def errors_of(path: Path, host: PluginHost) -> list[str]:
    with pytest.raises(ProfileError) as excinfo:
        load_profile(path, host)
    return [str(e) for e in excinfo.value.errors]


# -- the rule on plain YAML data --------------------------------------------------------------------


def test_mappings_merge_key_by_key_recursively():
    write(
        "base.yaml",
        """\
        keep: base
        outer:
          untouched: 1
          inner:
            a: 1
            b: 2
            deeper: {x: 1, y: 2}
        """,
    )
    path = write(
        "branch.yaml",
        """\
        extends: base.yaml
        outer:
          inner:
            b: 20
            c: 30
            deeper: {y: 20}
        added: branch
        """,
    )
    loaded = load_profile_yaml(path)
    assert loaded.errors == []
    assert loaded.data == {
        "keep": "base",
        "outer": {
            "untouched": 1,
            "inner": {"a": 1, "b": 20, "c": 30, "deeper": {"x": 1, "y": 20}},
        },
        "added": "branch",
    }


def test_lists_and_scalars_replace_the_base_value_whole():
    write(
        "base.yaml",
        """\
        numbers: [1, 2, 3]
        items: [{id: a, x: 1, y: 2}, {id: b}]
        text: base
        count: 5
        was_mapping: {x: 1}
        was_list: [1, 2]
        was_scalar: 7
        """,
    )
    path = write(
        "branch.yaml",
        """\
        extends: base.yaml
        numbers: [9]
        items: [{id: a, x: 10}]
        text: branch
        was_mapping: [1]
        was_list: {x: 1}
        was_scalar: {y: 2}
        """,
    )
    loaded = load_profile_yaml(path)
    assert loaded.errors == []
    assert loaded.data == {
        "numbers": [9],
        "items": [{"id": "a", "x": 10}],  # list items are not merged with the base's items
        "text": "branch",
        "count": 5,
        "was_mapping": [1],
        "was_list": {"x": 1},  # a mapping replacing a list is not merged with anything
        "was_scalar": {"y": 2},
    }


def test_null_removes_the_base_value():
    write(
        "base.yaml",
        """\
        outer: {a: 1, b: 2}
        scalar: 3
        items: [1]
        kept: 4
        """,
    )
    path = write(
        "branch.yaml",
        """\
        extends: base.yaml
        outer: {b: null}
        scalar: null
        items: ~
        not_in_base: null
        """,
    )
    loaded = load_profile_yaml(path)
    assert loaded.errors == []
    assert loaded.data == {"outer": {"a": 1}, "kept": 4}


def test_null_means_not_set_even_without_a_base():
    path = write(
        "branch.yaml",
        """\
        outer: {a: 1, b: null}
        scalar: null
        items: [{x: 1, y: null}, 2]
        kept: 4
        """,
    )
    loaded = load_profile_yaml(path)
    assert loaded.errors == []
    assert loaded.data == {"outer": {"a": 1}, "items": [{"x": 1}, 2], "kept": 4}


def test_extends_is_not_part_of_the_data():
    write("a.yaml", "x: 1\n")
    write("b.yaml", "extends: a.yaml\ny: 2\n")
    loaded = load_profile_yaml(write("c.yaml", "extends: b.yaml\nz: 3\n"))
    assert loaded.data == {"x": 1, "y": 2, "z": 3}


def test_locations_follow_the_merge():
    write("base.yaml", "# base\nouter:\n  a: 1\n  b: 2\nlist: [1]\n")
    loaded = load_profile_yaml(write("branch.yaml", "extends: base.yaml\nouter:\n  b: 3\nlist: [2]\n"))
    assert loaded.where(("outer", "a")) == ("base.yaml", 3)
    assert loaded.where(("outer", "b")) == ("branch.yaml", 3)
    assert loaded.where(("outer",)) == ("branch.yaml", 2)
    assert loaded.where(("list",)) == ("branch.yaml", 4)
    assert loaded.where(("list", 0)) == ("branch.yaml", 4)


# -- the rule on real profiles ----------------------------------------------------------------------


def test_presence_merges_with_the_base(host):
    write("bank.yaml", BANK_TEXT)
    p = load_profile(branch_file("branch.yaml", "bank.yaml", "presence:\n  window: 2s\n"), host)
    assert p.presence == PresenceSettings(
        min_reads=3, window=2.0, min_rssi=-70.0, reentry_suppress=600.0, depart_after=3.0
    )
    assert p.tiers == ("standard", "gold", "platinum", "diamond")
    assert p.notification_ttl == 600


def test_branch_mapping_merges_with_the_base(host):
    write("bank.yaml", "branch:\n  id: from-base\n  name: Base Name\n")
    body = BRANCH_BODY.replace("branch:\n  id: t1\n  name: Test Branch\n", "branch:\n  name: Own Name\n")
    p = load_profile(branch_file("branch.yaml", "bank.yaml", body=body), host)
    assert (p.branch.id, p.branch.name) == ("from-base", "Own Name")


def test_scalars_in_the_branch_replace_the_base(host):
    write("bank.yaml", BANK_TEXT)
    extra = "notification_ttl: 90s\npresence:\n  min_rssi: -60\n"
    p = load_profile(branch_file("branch.yaml", "bank.yaml", extra), host)
    assert p.notification_ttl == 90
    assert p.presence.min_rssi == -60
    assert p.presence.min_reads == 3


def test_lists_in_the_branch_replace_the_base(host):
    write(
        "bank.yaml",
        BANK_TEXT
        + dedent("""\
        readers:
          - {id: door, type: simulated, visitors: [], seed: 7}
          - {id: side-door, type: simulated, visitors: []}
        staff:
          - {id: ceo, name: Head, role: head_office}
          - {id: other, name: Other, role: lobby_manager}
        """),
    )
    p = load_profile(branch_file("branch.yaml", "bank.yaml", "tiers: [silver, gold]\n"), host)
    assert p.tiers == ("silver", "gold")
    assert [r.id for r in p.readers] == ["door"]
    assert p.readers[0].settings.seed == 1  # the base's 'seed: 7' for the same id is not merged in
    assert [s.id for s in p.staff] == ["boss"]


def test_list_items_are_not_merged_so_required_keys_must_be_repeated(host):
    write("bank.yaml", BANK_TEXT + "readers:\n  - {id: door, type: simulated, visitors: []}\n")
    body = BRANCH_BODY.replace("    visitors: []\n", "")  # the branch's reader lacks 'visitors'
    path = branch_file("branch.yaml", "bank.yaml", body=body)
    assert errors_of(path, host) == ["branch.yaml:6: readers[0]: missing required key 'visitors'"]


@pytest.mark.parametrize(
    ("extra", "check"),
    [
        pytest.param("presence:\n  min_rssi: null\n", lambda p: p.presence.min_rssi is None, id="min_rssi"),
        pytest.param("presence:\n  window: null\n", lambda p: p.presence.window == 0.5, id="window"),
        pytest.param("notification_ttl: null\n", lambda p: p.notification_ttl == 600, id="ttl"),
        pytest.param("tiers: null\n", lambda p: p.tiers == DEFAULT_TIERS, id="tiers"),
        pytest.param("presence: null\n", lambda p: p.presence == PresenceSettings(), id="presence"),
    ],
)
def test_null_in_the_branch_restores_the_default(host, extra, check):
    write(
        "bank.yaml",
        BANK_TEXT.replace("notification_ttl: 10m", "notification_ttl: 1m").replace(
            "tiers: [standard, gold, platinum, diamond]", "tiers: [basic, premium]"
        ),
    )
    p = load_profile(branch_file("branch.yaml", "bank.yaml", extra), host)
    assert check(p)


def test_null_in_a_profile_without_a_base_gives_the_default(host, tmp_path):
    body = BRANCH_BODY.replace("    visitors: []\n", "    visitors: []\n    seed: null\n")
    extra = "presence:\n  min_rssi: null\n  window: ~\nnotification_ttl: null\ntiers: null\ndata_dir: null\n"
    p = load_profile(write("branch.yaml", body + extra), host)
    assert p.presence == PresenceSettings()
    assert p.notification_ttl == 600
    assert p.tiers == DEFAULT_TIERS
    assert p.data_dir == tmp_path / "default-data" / "t1"
    assert p.readers[0].settings.seed == 1


def test_null_removes_a_base_value_that_would_be_an_error(host):
    write("bank.yaml", BANK_TEXT + "colour_scheme: dark\n")
    assert errors_of(branch_file("plain.yaml", "bank.yaml"), host)[0].startswith(
        "bank.yaml:9: colour_scheme: unknown key"
    )
    assert load_profile(branch_file("branch.yaml", "bank.yaml", "colour_scheme: null\n"), host)


def test_the_branch_can_fix_a_base_value(host):
    write("bank.yaml", "presence:\n  min_reads: three\n  window: 1s\n")
    assert errors_of(branch_file("plain.yaml", "bank.yaml"), host) == [
        "bank.yaml:2: presence.min_reads: expected an integer, got 'three'"
    ]
    p = load_profile(branch_file("branch.yaml", "bank.yaml", "presence:\n  min_reads: 4\n"), host)
    assert (p.presence.min_reads, p.presence.window) == (4, 1.0)


def test_errors_name_the_file_that_set_the_value(host):
    write("bank.yaml", "# bank\npresence:\n  window: fast\n  min_reads: 3\n")
    extra = "presence:\n  min_reads: three\n  depart_aftr: 2s\n"
    path = branch_file("branch.yaml", "bank.yaml", extra)
    n = len(BRANCH_BODY.splitlines()) + 1  # the extends line
    assert sorted(errors_of(path, host)) == sorted(
        [
            "bank.yaml:3: presence.window: expected a duration such as 500ms, 2s or 10m, got 'fast'",
            f"branch.yaml:{n + 2}: presence.min_reads: expected an integer, got 'three'",
            f"branch.yaml:{n + 3}: presence.depart_aftr: unknown key; did you mean 'depart_after'? "
            "(known keys: min_reads, window, min_rssi, reentry_suppress, depart_after)",
        ]
    )


# -- three levels -----------------------------------------------------------------------------------


def _three_levels(extra: str = "") -> Path:
    write("bank/bank.yaml", BANK_TEXT)
    write(
        "regions/east.yaml",
        """\
        extends: ../bank/bank.yaml
        presence:
          min_rssi: -65
        notification_ttl: 5m
        tiers: [standard, gold, platinum, diamond, black]
        """,
    )
    return branch_file("branches/sh/branch.yaml", "../../regions/east.yaml", extra)


def test_a_base_may_extend_another_base(host):
    p = load_profile(_three_levels("presence:\n  depart_after: 4s\n"), host)
    assert p.presence == PresenceSettings(
        min_reads=3,  # bank
        window=1.0,  # bank
        min_rssi=-65.0,  # region over bank
        reentry_suppress=600.0,  # bank
        depart_after=4.0,  # branch over bank
    )
    assert p.notification_ttl == 300  # region over bank
    assert p.tiers[-1] == "black"  # region's list replaced the bank's
    assert p.branch.id == "t1"


def test_null_in_the_branch_removes_a_value_set_two_levels_up(host):
    p = load_profile(_three_levels("presence:\n  min_rssi: null\n  min_reads: null\n"), host)
    assert p.presence.min_rssi is None
    assert p.presence.min_reads == 2  # the default, not the bank's 3


def test_error_two_levels_up_names_that_file(host, tmp_path, monkeypatch):
    path = _three_levels()
    write("bank/bank.yaml", BANK_TEXT.replace("reentry_suppress: 10m", "reentry_suppress: ten"))
    monkeypatch.chdir(tmp_path / "branches")
    shown = os.path.relpath(tmp_path / "bank" / "bank.yaml")
    assert shown == os.path.join("..", "bank", "bank.yaml")
    assert errors_of(tmp_path / path, host) == [
        f"{shown}:6: presence.reentry_suppress: expected a duration such as 500ms, 2s or 10m, got 'ten'"
    ]


# -- data_dir ---------------------------------------------------------------------------------------


def test_relative_data_dir_in_the_branch_resolves_against_the_branch_file(host, tmp_path, monkeypatch):
    path = write("branches/sh/branch.yaml", BRANCH_BODY + "data_dir: data\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert load_profile(tmp_path / path, host).data_dir == tmp_path / "branches" / "sh" / "data"


def test_relative_data_dir_in_a_base_resolves_against_the_base_file(host, tmp_path):
    write("shared/bank.yaml", BANK_TEXT + "data_dir: ../var/vipsense\n")
    path = branch_file("branches/sh/branch.yaml", "../../shared/bank.yaml")
    assert load_profile(path, host).data_dir == tmp_path / "var" / "vipsense"


def test_relative_data_dir_in_a_middle_base_resolves_against_that_file(host, tmp_path):
    path = _three_levels()
    write("regions/east.yaml", "extends: ../bank/bank.yaml\ndata_dir: east-data\n")
    assert load_profile(path, host).data_dir == tmp_path / "regions" / "east-data"


def test_data_dir_in_the_branch_overrides_the_base(host, tmp_path):
    write("shared/bank.yaml", BANK_TEXT + "data_dir: ../var/vipsense\n")
    path = branch_file("branches/sh/branch.yaml", "../../shared/bank.yaml", "data_dir: ./local\n")
    assert load_profile(path, host).data_dir == tmp_path / "branches" / "sh" / "local"


def test_data_dir_null_in_the_branch_gives_the_default(host, tmp_path):
    write("shared/bank.yaml", BANK_TEXT + "data_dir: ../var/vipsense\n")
    path = branch_file("branches/sh/branch.yaml", "../../shared/bank.yaml", "data_dir: null\n")
    assert load_profile(path, host).data_dir == tmp_path / "default-data" / "t1"


def test_absolute_and_home_data_dir(host, tmp_path, monkeypatch):
    path = write("branch.yaml", BRANCH_BODY + f"data_dir: {tmp_path / 'abs'}\n")
    assert load_profile(path, host).data_dir == tmp_path / "abs"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write("branch.yaml", BRANCH_BODY + "data_dir: ~/vipsense-data\n")
    assert load_profile(path, host).data_dir == tmp_path / "home" / "vipsense-data"


def test_default_data_dir(host, tmp_path, monkeypatch):
    path = write("branch.yaml", BRANCH_BODY)
    assert load_profile(path, host).data_dir == tmp_path / "default-data" / "t1"
    monkeypatch.delenv("VIPSENSE_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert load_profile(path, host).data_dir == tmp_path / "xdg" / "vipsense" / "t1"


def test_data_dir_argument_overrides_the_profile(host, tmp_path):
    write("shared/bank.yaml", BANK_TEXT + "data_dir: ../var/vipsense\n")
    path = branch_file("branches/sh/branch.yaml", "../../shared/bank.yaml", "data_dir: local\n")
    p = load_profile(path, host, data_dir=tmp_path / "override")
    assert p.data_dir == tmp_path / "override"
    assert load_profile(path, host, data_dir=str(tmp_path / "o2")).data_dir == tmp_path / "o2"


@pytest.mark.slow
@pytest.mark.usefixtures("restore_process_state")
def test_run_data_dir_option_overrides_the_profile(tmp_path, capsys):
    """``vipsense run --data-dir`` puts the branch's files there, not in the profile's data_dir."""
    path = write("branch.yaml", BRANCH_BODY + "data_dir: from-profile\npresence:\n  depart_after: 50ms\n")
    assert main(["run", str(path), "--data-dir", str(tmp_path / "override"), "--no-status"]) == 0
    assert "Stopped." in capsys.readouterr().out
    assert (tmp_path / "override" / "visits.sqlite3").exists()
    assert not (tmp_path / "from-profile").exists()


# -- the shipped profiles ---------------------------------------------------------------------------


def test_demo_profile_takes_presence_from_bank_yaml(host):
    p = load_profile(DEMO, host)
    assert p.presence.min_reads == 3
    assert p.presence.min_rssi == -70
    assert p.presence.reentry_suppress == 600
    assert p.presence.depart_after == 3
    assert p.presence.window == 1
    assert p.notification_ttl == 600
    assert p.tiers == ("standard", "gold", "platinum", "diamond")
    assert p.branch.id == "sh-lujiazui"
    assert [r.id for r in p.readers] == ["door"]
    assert [(s.id, s.settings.seed) for s in p.stores] == [("local", ("demo/customers.yaml",))]
    assert [(n.id, n.type) for n in p.notifiers] == [
        ("lobby-screen", "console"),
        ("pda", "pda"),
        ("pager", "sms-modem"),
    ]
    assert p.notifiers[1].settings.interfaces == ["127.0.0.1"]  # the demo never leaves loopback
    assert len(p.routing) == 6  # bank.yaml's routing policy, with the unresolved rule
    assert [r.event for r in p.routing].count("unresolved") == 1
    assert p.source == DEMO


def test_demo_profile_really_gets_presence_from_its_base(host, tmp_path):
    """The same demo beside a different bank.yaml gets that bank's presence values."""
    write("profiles/bank.yaml", BANK.read_text("utf-8").replace("min_reads: 3 ", "min_reads: 5 "))
    write("profiles/demo/customers.yaml", (DEMO.parent / "demo" / "customers.yaml").read_text("utf-8"))
    write("profiles/demo/centre.yaml", (DEMO.parent / "demo" / "centre.yaml").read_text("utf-8"))
    write("profiles/secrets.yaml", (DEMO.parent / "secrets.yaml").read_text("utf-8"))
    copy = write("profiles/demo.yaml", DEMO.read_text("utf-8"))
    assert load_profile(copy, host).presence.min_reads == 5


@pytest.mark.usefixtures("restore_process_state")
def test_check_demo_profile(capsys):
    assert main(["check", str(DEMO)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith(f"{DEMO}: OK: branch sh-lujiazui (Lujiazui Branch, Shanghai): ")


def test_bank_yaml_alone_is_not_a_branch_profile(host):
    shown = os.path.relpath(BANK)
    first_key = next(
        n
        for n, line in enumerate(BANK.read_text("utf-8").splitlines(), 1)
        if line.strip() and not line.startswith("#")
    )
    # a key missing from the whole file is reported at the file's first key; bank.yaml's routing
    # policy names notifiers and roles that only a branch profile has, and each rule says so
    errors = errors_of(BANK, host)
    # bank.yaml sets the bank's language (branch.locale), so the branch's own id and name are missing
    assert errors[:4] == [
        f"{shown}:{first_key}: branch: missing required key 'id'",
        f"{shown}:{first_key}: branch: missing required key 'name'",
        f"{shown}:{first_key}: missing required key 'readers'",
        f"{shown}:{first_key}: missing required key 'stores'",
    ]
    pattern = rf"{re.escape(shown)}:\d+: routing\[\d\]\.(via\[\d\]: no notifier has id|to: no one in)"
    assert errors[4:] and all(re.match(pattern, e) for e in errors[4:]), errors[4:]
