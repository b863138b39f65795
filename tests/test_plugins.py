"""Plugin discovery, isolation of broken plugins, and the hook specification's own contract."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import pytest

import vipsense
from vipsense import hookspecs
from vipsense.config import ProfileError
from vipsense.config.profile import load_profile
from vipsense.pluginhost import Kind, PluginState, load_host

from .conftest import REPO

GOOD = """
import attrs, vipsense

@attrs.frozen
class Settings:
    speed: int = 1

class Door:
    def run(self, ctx):
        pass

@vipsense.hookimpl
def vipsense_register_reader_types(register):
    register("good-door", Settings, lambda s, ctx: Door(), summary="a door")
"""


def test_every_hook_is_documented():
    hooks = [
        (name, fn)
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("vipsense_")
    ]
    assert len(hooks) >= 10
    for name, fn in hooks:
        doc = inspect.getdoc(fn) or ""
        assert len(doc) > 40, f"hook {name} has no real docstring"
        assert "Called" in doc or "called" in doc, f"hook {name} does not say when it is called"
        for param in inspect.signature(fn).parameters:
            assert f":param {param}:" in doc, f"hook {name} does not document {param}"


def test_builtins_load_through_the_entry_point_group():
    host = load_host()
    builtin = {p.name: p for p in host.plugins if p.distribution == "vipsense"}
    assert {"simulated-reader", "sqlite-store", "console-notifier"} <= set(builtin)
    assert all(p.state is PluginState.LOADED for p in builtin.values())
    assert "simulated" in host.types[Kind.READER]
    assert "sqlite" in host.types[Kind.STORE]
    assert "console" in host.types[Kind.NOTIFIER]


def test_third_party_plugin_is_listed_with_distribution_and_version(fake_distribution):
    fake_distribution("acme-doors", {"acme": GOOD}, version="2.0.1")
    host = load_host()
    [info] = [p for p in host.plugins if p.name == "acme"]
    assert (info.distribution, info.version, info.state) == ("acme-doors", "2.0.1", PluginState.LOADED)
    assert [t.name for t in info.types] == ["good-door"]


def test_import_failure_is_isolated(fake_distribution):
    fake_distribution("broken-vendor", {"broken": "import vendor_sdk_that_is_not_installed\n", "ok": GOOD})
    host = load_host()
    states = {p.name: (p.state, p.error) for p in host.plugins}
    assert states["broken"][0] is PluginState.FAILED
    assert "ModuleNotFoundError" in states["broken"][1]
    assert "vendor_sdk_that_is_not_installed" in states["broken"][1]
    assert states["ok"][0] is PluginState.LOADED
    assert "good-door" in host.types[Kind.READER]


def test_misspelt_hook_fails_that_plugin_only(fake_distribution):
    fake_distribution(
        "typo-vendor",
        {
            "typo": """
        import vipsense

        @vipsense.hookimpl
        def vipsense_register_reader_type(register):
            pass
    """,
            "ok": GOOD,
        },
    )
    host = load_host()  # check_pending() passes: the bad plugin was unregistered
    [typo] = [p for p in host.plugins if p.name == "typo"]
    assert typo.state is PluginState.FAILED
    assert "unknown hook 'vipsense_register_reader_type'" in typo.error
    assert "did you mean 'vipsense_register_reader_types'" in typo.error
    assert "good-door" in host.types[Kind.READER]


def test_unmarked_misspelt_hook_is_caught_too(fake_distribution):
    fake_distribution("typo2", {"typo2": "def vipsense_arival(visit):\n    pass\n"})
    [typo] = [p for p in load_host().plugins if p.name == "typo2"]
    assert typo.state is PluginState.FAILED
    assert "did you mean 'vipsense_arrival'" in typo.error


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            'register("simulated", Settings, lambda s, c: None)',
            "reader type 'simulated' is already provided by plugin simulated-reader",
        ),
        ('register("Bad Name", Settings, lambda s, c: None)', "must be lower-case letters, digits and '-'"),
        ('register("x", dict, lambda s, c: None)', "settings must be a frozen attrs class"),
        ('register("x", Settings, "not callable")', "factory is not callable"),
        (
            'register("x", Settings, lambda s, c: None, requires=("no such",))',
            "requires must list module names",
        ),
        ('register("x", Settings, lambda s, c: None, requires=(1,))', "requires must list module names"),
        (
            'register("x", Settings, lambda s, c: None, extra="[usb]")',
            "extra must be the name of a pip extra",
        ),
        ('raise RuntimeError("vendor licence missing")', "RuntimeError: vendor licence missing"),
    ],
)
def test_bad_registration_fails_that_plugin_only(fake_distribution, source, message):
    fake_distribution(
        "bad-reg",
        {
            "badreg": f"""
import attrs, vipsense

@attrs.frozen
class Settings:
    pass

@vipsense.hookimpl
def vipsense_register_reader_types(register):
    register("partial", Settings, lambda s, c: None)
    {source}
"""
        },
    )
    host = load_host()
    [info] = [p for p in host.plugins if p.name == "badreg"]
    assert info.state is PluginState.FAILED
    assert message in info.error
    assert "partial" not in host.types[Kind.READER], "a failed plugin's other types are withdrawn"
    assert host.types[Kind.READER]["simulated"].plugin == "simulated-reader"


def test_disabled_plugin_is_listed_as_blocked(monkeypatch):
    monkeypatch.setenv("VIPSENSE_DISABLE_PLUGINS", "console-notifier")
    host = load_host()
    [info] = [p for p in host.plugins if p.name == "console-notifier"]
    assert info.state is PluginState.BLOCKED
    assert "console" not in host.types[Kind.NOTIFIER]


def test_profile_naming_a_type_of_a_failed_plugin_says_so(fake_distribution, write_profile):
    fake_distribution("broken-vendor", {"broken": "raise ImportError('no SDK')\n"})
    path = write_profile()
    text = path.read_text().replace("type: simulated, visitors: []", "type: simulatd")
    path.write_text(text)
    with pytest.raises(ProfileError) as excinfo:
        load_profile(path, load_host())
    [err] = excinfo.value.errors
    assert err.line == 3
    assert err.path == "readers[0].type"
    assert err.message == (
        "unknown reader type 'simulatd'; did you mean 'simulated'? "
        f"(installed reader types: {', '.join(sorted(load_host().types[Kind.READER]))}); "
        "plugins that failed to load: broken (see 'vipsense plugins')"
    )


def test_failing_broadcast_hook_is_counted_and_others_still_run():
    host = load_host()
    seen = []

    class Bad:
        @staticmethod
        def vipsense_departure(arrival, departed_at):
            raise ValueError("observer bug")

    class Good:
        @staticmethod
        def vipsense_departure(arrival, departed_at):
            seen.append(departed_at)

    host.add(Bad, "bad-observer")
    host.add(Good, "good-observer")
    host.hook.vipsense_departure(arrival=None, departed_at=1.0)
    host.hook.vipsense_departure(arrival=None, departed_at=2.0)
    assert seen == [1.0, 2.0]
    assert host.hook_errors[("bad-observer", "vipsense_departure")] == (2, "ValueError: observer bug")


def test_broadcast_hooks_run_in_pluggy_order_and_a_raising_one_stops_none():
    """Last registered first, ``tryfirst`` before and ``trylast`` after the rest, wrappers around them
    all; a raising implementation is counted and the others (and the wrapper) still run."""
    host = load_host()
    calls = []

    def observer(label: str, **order: bool) -> type:
        class Observer:
            @staticmethod
            @vipsense.hookimpl(**order)
            def vipsense_departure(arrival, departed_at):
                calls.append(label)
                if label == "first":
                    raise RuntimeError("first broke")

        return Observer

    class Around:
        @staticmethod
        @vipsense.hookimpl(wrapper=True)
        def vipsense_departure(arrival, departed_at):
            calls.append("before")
            result = yield
            calls.append("after")
            return result

    host.add(observer("last", trylast=True), "last")
    host.add(observer("first", tryfirst=True), "first")
    host.add(observer("plain"), "plain")
    host.add(Around, "around")
    host.hook.vipsense_departure(arrival=None, departed_at=1.0)
    assert calls == ["before", "first", "plain", "last", "after"]
    assert host.hook_errors[("first", "vipsense_departure")] == (1, "RuntimeError: first broke")


@pytest.mark.slow
def test_cli_lists_failed_plugin_with_reason(tmp_path, fake_distribution):
    fake_distribution("sick-vendor", {"sick": "raise OSError('cannot open /dev/acme0')\n"}, version="0.9")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}

    def cli(*args: str) -> str:
        command = [sys.executable, "-m", "vipsense.cli", "plugins", *args]
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=True
        )
        return done.stdout

    rows = {r["name"]: r for r in json.loads(cli("--json"))}
    assert rows["sick"]["state"] == "failed"
    assert rows["sick"]["distribution"] == "sick-vendor"
    assert rows["sick"]["error"] == "import failed: OSError: cannot open /dev/acme0"
    assert rows["sqlite-store"]["state"] == "loaded"
    assert rows["sqlite-store"]["types"] == ["store:sqlite"]
    text = cli()
    assert "sick-vendor 0.9" in text
    assert "↳ import failed: OSError: cannot open /dev/acme0" in text


TOOL = """
import vipsense

def configure(parser):
    parser.add_argument("--name", required=True)
    parser.set_defaults(func=lambda args: print(f"hello {args.name}") or 3)

@vipsense.hookimpl
def vipsense_register_commands(register):
    register("acme-setup", configure, help="sets up an ACME door")
"""


@pytest.mark.slow
def test_plugin_command_runs_through_the_cli(tmp_path, fake_distribution):
    fake_distribution("acme-tools", {"acme-tools": TOOL}, version="1.0")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "vipsense.cli", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=60)

    done = cli("acme-setup", "--name", "东门")
    assert (done.returncode, done.stdout) == (3, "hello 东门\n")
    assert (
        "acme-setup" in cli("--help").stdout
        and "sets up an ACME door (plugin acme-tools)" in cli("--help").stdout
    )
    rows = {r["name"]: r for r in json.loads(cli("plugins", "--json").stdout)}
    assert rows["acme-tools"]["types"] == ["command:acme-setup"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (TOOL.replace('"acme-setup"', '"run"'), "command 'run' is a built-in vipsense command"),
        (TOOL.replace('"acme-setup"', '"Acme Setup"'), "must be lower-case letters, digits and '-'"),
        (TOOL.replace("configure, help", "None, help"), "configure is not callable"),
    ],
)
def test_bad_command_registration_fails_that_plugin_only(fake_distribution, source, message):
    fake_distribution("bad-tools", {"bad-tools": source, "ok": GOOD})
    host = load_host()
    states = {p.name: (p.state, p.error) for p in host.plugins}
    assert states["bad-tools"][0] is PluginState.FAILED and message in states["bad-tools"][1]
    assert states["ok"][0] is PluginState.LOADED
    assert "run" not in host.commands


def test_two_plugins_cannot_claim_one_command(fake_distribution):
    fake_distribution("tools-a", {"tools-a": TOOL})
    fake_distribution("tools-b", {"tools-b": TOOL})
    host = load_host()
    states = {p.name: (p.state, p.error) for p in host.plugins}
    assert states["tools-a"][0] is PluginState.LOADED
    assert states["tools-b"] == (
        PluginState.FAILED,
        "PluginLoadError: command 'acme-setup' is already provided by plugin tools-a",
    )


def test_reserved_command_names_cover_the_built_in_commands():
    from vipsense.cli import BUILT_IN, COMMANDS, build_parser
    from vipsense.pluginhost import RESERVED_COMMANDS

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS) == BUILT_IN
    assert BUILT_IN <= RESERVED_COMMANDS


# -- optional dependencies: requires= and extra= ----------------------------------------------------

NEEDS_SDK = """
import attrs, vipsense

@attrs.frozen
class Settings:
    speed: int = 1

def make(settings, ctx):
    import vipsense_test_no_such_sdk  # a vendor SDK: imported only when a reader is made

@vipsense.hookimpl
def vipsense_register_reader_types(register):
    register("acme-usb", Settings, make, requires=("vipsense_test_no_such_sdk",), extra="usb")
"""

ACME_USB_UNAVAILABLE = (
    "reader type 'acme-usb' needs the Python module vipsense_test_no_such_sdk, which is not installed; "
    "install it with: pip install 'acme-doors[usb]'"
)


def test_a_type_whose_module_is_missing_is_unavailable_with_its_own_install_line(fake_distribution):
    fake_distribution("acme-doors", {"acme-usb": NEEDS_SDK, "ok": GOOD})
    host = load_host()
    [info] = [p for p in host.plugins if p.name == "acme-usb"]
    assert (info.state, info.error) == (PluginState.UNAVAILABLE, ACME_USB_UNAVAILABLE)
    assert [t.name for t in info.types] == ["acme-usb"]
    assert "acme-usb" not in host.types[Kind.READER]
    assert host.types[Kind.READER]["good-door"].plugin == "ok"


def test_a_profile_using_an_unavailable_type_fails_with_the_install_line(fake_distribution, write_profile):
    fake_distribution("acme-doors", {"acme-usb": NEEDS_SDK})
    path = write_profile()
    path.write_text(path.read_text().replace("type: simulated, visitors: []", "type: acme-usb"))
    with pytest.raises(ProfileError) as excinfo:
        load_profile(path, load_host())
    assert [(e.line, e.path, e.message) for e in excinfo.value.errors] == [
        (3, "readers[0].type", ACME_USB_UNAVAILABLE)
    ]


def test_a_required_module_is_looked_up_not_imported(fake_distribution, tmp_path):
    (tmp_path / "site" / "vipsense_test_heavy_sdk.py").write_text("raise RuntimeError('imported')\n")
    source = NEEDS_SDK.replace("vipsense_test_no_such_sdk", "vipsense_test_heavy_sdk")
    fake_distribution("acme-doors", {"acme-usb": source})
    host = load_host()
    assert host.types[Kind.READER]["acme-usb"].requires == ("vipsense_test_heavy_sdk",)
    assert "vipsense_test_heavy_sdk" not in sys.modules


def test_a_plugin_with_one_unavailable_type_of_two_stays_loaded(fake_distribution):
    both = NEEDS_SDK + '    register("acme-tcp", Settings, make)\n'
    fake_distribution("acme-doors", {"acme": both})
    host = load_host()
    [info] = [p for p in host.plugins if p.name == "acme"]
    assert (info.state, info.error) == (PluginState.LOADED, ACME_USB_UNAVAILABLE)
    assert "acme-tcp" in host.types[Kind.READER]


def test_without_an_extra_the_hint_is_general(fake_distribution):
    fake_distribution("acme-doors", {"acme-usb": NEEDS_SDK.replace(', extra="usb"', "")})
    [info] = [p for p in load_host().plugins if p.name == "acme-usb"]
    assert info.error == (
        "reader type 'acme-usb' needs the Python module vipsense_test_no_such_sdk, which is not "
        "installed; install the package that provides it"
    )


@pytest.mark.parametrize(
    ("kind", "name", "modules", "extra"),
    [
        (Kind.READER, "llrp", ("sllurp",), "llrp"),
        (Kind.STORE, "ldap", ("ldap",), "ldap"),
        (Kind.NOTIFIER, "sms-smpp", ("smpplib",), "smpp"),
        (Kind.NOTIFIER, "apprise", ("apprise",), "apprise"),
    ],
)
def test_built_in_types_declare_their_optional_dependencies(host, kind, name, modules, extra):
    ptype = host.types[kind][name]  # the test install has every extra
    assert (ptype.requires, ptype.extra, ptype.unavailable) == (modules, extra, "")


@pytest.mark.slow
def test_cli_lists_an_unavailable_plugin_with_its_reason(tmp_path, fake_distribution):
    fake_distribution("acme-doors", {"acme-usb": NEEDS_SDK}, version="0.9")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "vipsense.cli", "plugins"]
    done = subprocess.run(
        [*command, "--json"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=True
    )
    row = {r["name"]: r for r in json.loads(done.stdout)}["acme-usb"]
    assert (row["state"], row["error"], row["types"]) == (
        "unavailable",
        ACME_USB_UNAVAILABLE,
        ["reader:acme-usb"],
    )
    text = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=60).stdout
    assert f"↳ {ACME_USB_UNAVAILABLE}" in text


@pytest.mark.parametrize("args", [["plugins", "--json"], ["plugins"]])
def test_plugins_into_a_closed_pipe_prints_no_traceback(args):
    """``vipsense plugins --json | head``: the reader went away before everything was written."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read: every write fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "vipsense.cli", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 0
