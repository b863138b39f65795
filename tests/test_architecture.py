"""The import rules that keep the plan of the code visible: every plugin stands alone, and the core never
names a plugin.  What two plugins share belongs in the core (``vipsense.sms``, ``vipsense.testing``,
``vipsense.identity.seed``, ``vipsense.replay``), so disabling or breaking one plugin never breaks another.

Imports are read with :mod:`ast`, not by importing: absolute and relative ones, and those inside
functions (where optional libraries and lazy parts are imported) too.  :func:`imports_of` is the walk,
for any further rule about who may import whom.

The core is built in layers (:data:`LAYERS`, bottom first, the one table of them), and a module imports
only from its own layer or the layers below; a core module the table does not place fails too, so a
new module is placed when it is written.  docs/architecture.md draws the same table.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
#: Source folder -> the import package it installs as (``package_dir`` in setup.cfg).
PACKAGES = {REPO / "core": "vipsense", REPO / "plugins": "vipsense.plugins"}
PLUGINS = "vipsense.plugins"


class Import(NamedTuple):
    module: str  #: the module imported, resolved: ``from . import protocol`` names ``...thingmagic.protocol``
    line: int
    typing_only: bool = False  #: under ``if TYPE_CHECKING:``, never executed


def source_files() -> Iterator[Path]:
    """Every module of the core and the plugins; the core's own ``plugins`` folder is the plugins'."""
    for folder in PACKAGES:
        yield from sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    """``core/web/query_api.py`` -> ``vipsense.web.query_api``; ``plugins/notifiers/sms_modem/__init__.py`` ->
    ``vipsense.plugins.notifiers.sms_modem``."""
    folder = next(f for f in PACKAGES if path.is_relative_to(f))
    parts = list(path.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGES[folder], *parts])


MODULES = frozenset(module_name(p) for p in source_files())


def _package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _from_import(path: Path, node: ast.ImportFrom) -> Iterator[str]:
    """The modules a ``from ... import`` reaches: ``from pkg import sub`` is the module ``pkg.sub``
    when there is one, else ``pkg``."""
    base = node.module or ""
    if node.level:
        package = _package_of(path).split(".")
        anchor = ".".join(package[: len(package) - node.level + 1])
        base = f"{anchor}.{base}" if base else anchor
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        yield submodule if submodule in MODULES else base


def imports_of(path: Path) -> list[Import]:
    """Every import in the file, wherever it is (module level, a function, ``if TYPE_CHECKING``), once
    per statement and module, in file order."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, node.lineno, id(node) in typing_only) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found += [Import(m, node.lineno, id(node) in typing_only) for m in _from_import(path, node)]
    return sorted(set(found), key=lambda i: (i.line, i.module))


def plugin_of(module: str) -> str | None:
    """The plugin a module belongs to (``vipsense.plugins.notifiers.sms_modem.at`` ->
    ``vipsense.plugins.notifiers.sms_modem``), or None outside the plugins or for a kind's own package."""
    parts = module.split(".")
    if module.startswith(PLUGINS + ".") and len(parts) >= 4:
        return ".".join(parts[:4])
    return None


def _where(path: Path, imp: Import) -> str:
    return f"{path.relative_to(REPO)}:{imp.line}: imports {imp.module}"


def test_the_walk_sees_relative_imports_and_imports_inside_functions():
    gsm = REPO / "plugins" / "notifiers" / "sms_modem"
    assert module_name(gsm / "__init__.py") == "vipsense.plugins.notifiers.sms_modem"
    found = {i.module for i in imports_of(gsm / "__init__.py")}
    # ``from .notifier import GsmNotifier`` inside make_notifier, ``from vipsense.api import ...`` on top
    assert {"vipsense.plugins.notifiers.sms_modem.notifier", "vipsense.api", "vipsense.sms"} <= found
    tm = REPO / "plugins" / "readers" / "thingmagic" / "emulator.py"
    found = {i.module for i in imports_of(tm)}
    # ``from . import protocol as tm`` and ``from vipsense import testing`` name the modules
    assert {"vipsense.plugins.readers.thingmagic.protocol", "vipsense.testing"} <= found


def test_the_core_imports_no_plugin():
    """A vendor adds a reader without touching the core, so the core knows no plugin by name."""
    wrong = [
        _where(path, imp)
        for path in source_files()
        if not module_name(path).startswith(PLUGINS)
        for imp in imports_of(path)
        if imp.module == PLUGINS or imp.module.startswith(PLUGINS + ".")
    ]
    assert not wrong, "the core imports a plugin:\n" + "\n".join(wrong)


def test_no_plugin_imports_another():
    """What two plugins share is core; a plugin that imports another depends on it undeclared."""
    wrong = [
        f"{_where(path, imp)} (plugin {plugin_of(imp.module)})"
        for path in source_files()
        if (own := plugin_of(module_name(path))) is not None
        for imp in imports_of(path)
        if plugin_of(imp.module) not in (None, own)
    ]
    assert not wrong, "a plugin imports another plugin:\n" + "\n".join(wrong)


# -- the core's layers ---------------------------------------------------------------------------

#: The layers of the core, bottom first.  An entry names one module, or with ``.*`` a package and
#: everything in it.  Within a layer, modules import each other freely.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "model and small utilities",
        (
            "vipsense",  # the hookimpl marker and the version
            # the folders' packages: docstrings only, so importing one of their modules costs nothing
            "vipsense.pipeline",
            "vipsense.storage",
            "vipsense.identity",
            "vipsense.model",
            "vipsense.pipeline.policy",  # which cards must never be greeted: pure rules over the model
            "vipsense.identity.lifecycle",
            "vipsense.permissions",
            "vipsense.identity.records",
            "vipsense.privacy",
            "vipsense.crypto",
            "vipsense.identity.idnumber",
            "vipsense.clock",
            "vipsense.timezone",
            "vipsense.files",
            "vipsense.output",
            "vipsense.progress",
            "vipsense.signing",
            "vipsense.avatar",
            "vipsense.sms",
            "vipsense.stats",
            "vipsense.status",  # counters every layer writes to and the web and CLI read
            "vipsense.states",  # the one enum of device states: readers, stores, notifiers, the web
            "vipsense.backoff",
            "vipsense.errors",
            "vipsense.commands",
            "vipsense.didyoumean",
            "vipsense.i18n",  # the catalogue every layer marks its messages with
            "vipsense.texts",  # texts kept for later: English for logs, translated when shown
            # the profile's value types (Duration, Secret, SerialPort) and its error records: the
            # plugin API hands them to plugins, so they sit below it
            "vipsense.config",
            "vipsense.config.types",
            "vipsense.config.errors",
        ),
    ),
    (
        # below config: a profile is read against the settings classes the plugins registered
        "plugin host and the plugin API",
        (
            "vipsense.pluginhost",
            "vipsense.hookspecs",
            "vipsense.api",
            "vipsense.devices",
            "vipsense.replay",  # scenarios and emulator links plugins build on
            "vipsense.testing",
        ),
    ),
    (
        "config",
        (
            "vipsense.config.yamlload",
            "vipsense.config.structure",
            "vipsense.config.sections",
            "vipsense.config.profile",
            "vipsense.identity.seed",
        ),
    ),
    (
        "stores of the branch's own files",
        (
            "vipsense.storage.walfile",
            "vipsense.storage.migrations",
            "vipsense.storage.changefeed",  # the change feed the uplink reads (triggers, counter)
            "vipsense.storage.visitlog",
            "vipsense.storage.outbox",
            "vipsense.storage.audit",
            "vipsense.storage.auditanchors",
            "vipsense.storage.auditwriter",
            "vipsense.storage.retention",
        ),
    ),
    (
        "the pipeline",
        (
            "vipsense.pipeline.presence",
            "vipsense.pipeline.lookup",
            "vipsense.pipeline.routing",
            "vipsense.pipeline.escalation",
            "vipsense.pipeline.response_times",
            "vipsense.pipeline.arrivals",
        ),
    ),
    (
        "the branch",
        (
            "vipsense.branch",
            "vipsense.identity.standalone",
            "vipsense.identity.sync",
            "vipsense.identity.issuing",
            "vipsense.shutdown",
            "vipsense.uplink.*",  # the branch reports to the centre: the change feeds, the shipper
        ),
    ),
    ("the centre", ("vipsense.centre.*",)),
    ("the web", ("vipsense.web.*",)),
    # the centre's web reuses the branch web's logins, roles and pages: a layer above it
    ("the centre's web", ("vipsense.centreweb.*",)),
    # above the web: a command may use the web's account store; the web never uses the CLI
    ("the command line", ("vipsense.cli.*",)),
)

#: Modules whose ``if TYPE_CHECKING:`` imports may point up: the hook contract names the objects its
#: hooks receive (the running Branch, an audit Anchor), whichever layer makes them.  Such imports are
#: never executed; everywhere else they point down like the rest.
TYPING_MAY_POINT_UP = frozenset({"vipsense.hookspecs"})


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of the most specific entry naming ``module``."""
    best: tuple[int, int] | None = None  #: (length of the entry, layer)
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            package = entry.removesuffix(".*")
            covers = module == package or (entry.endswith(".*") and module.startswith(package + "."))
            if covers and (best is None or len(package) > best[0]):
                best = (len(package), index)
    return None if best is None else best[1]


def core_modules() -> dict[str, Path]:
    return {module_name(p): p for p in source_files() if p.is_relative_to(REPO / "core")}


def test_every_core_module_has_a_layer():
    unplaced = [m for m in core_modules() if layer_of(m) is None]
    assert unplaced == [], f"add these modules to LAYERS in {Path(__file__).name}: {unplaced}"


def test_the_core_imports_only_downward():
    upward = []
    for module, path in core_modules().items():
        own = layer_of(module)
        if own is None:
            continue  # reported by test_every_core_module_has_a_layer
        for imp in imports_of(path):
            target = layer_of(imp.module) if imp.module.startswith("vipsense.") else None
            if target is None or target <= own:
                continue
            if imp.typing_only and module in TYPING_MAY_POINT_UP:
                continue
            upward.append(
                f"{path.relative_to(REPO)}:{imp.line}: {module} ({LAYERS[own][0]}) imports {imp.module}"
                f" ({LAYERS[target][0]})"
            )
    assert upward == [], "imports that point up a layer:\n" + "\n".join(upward)


def test_the_web_never_imports_the_command_line():
    found = [
        f"{path.relative_to(REPO)}:{imp.line}: {imp.module}"
        for module, path in core_modules().items()
        if module.startswith("vipsense.web")
        for imp in imports_of(path)
        if imp.module.startswith("vipsense.cli")
    ]
    assert found == []
