"""Load plugins from the ``vipsense`` entry-point group, collect the types they register, and
broadcast pipeline events to them with each plugin's failures kept to itself.

Built-in plugins are listed in this project's own ``setup.cfg`` under the same group, so they load
exactly like a vendor's package.  ``VIPSENSE_DISABLE_PLUGINS=a,b`` blocks plugins by entry-point name.

A type may declare the modules it needs and the pip extra of its distribution that installs them
(``register(..., requires=("sllurp",), extra="llrp")``).  When one is missing the type is
*unavailable*: a profile that uses it fails ``vipsense check`` with the install line, and the plugin is
listed as unavailable.  Modules are looked up with ``importlib.util.find_spec``, never imported, so a
vendor SDK is still imported only when a device is made.  (The install hint comes from the plugin, not
from a table in the core: reference/anchors-style.md §3.2 on pytest-embedded.)
"""

from __future__ import annotations

import enum
import functools
import importlib.metadata as md
import importlib.util
import inspect
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import pluggy

from . import PROJECT, hookspecs
from .commands import RESERVED_COMMANDS
from .didyoumean import suggest
from .errors import describe
from .i18n import lazy_gettext
from .texts import Text, joined

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = PROJECT
HOOK_PREFIX = "vipsense_"
_TYPE_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_EXTRA_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")  # PEP 685


class Kind(str, enum.Enum):
    READER = "reader"
    STORE = "store"
    NOTIFIER = "notifier"
    UPLINK = "uplink"  #: how the branch reaches the centre (``centre.transport``)


_REGISTER_HOOKS = {
    Kind.READER: "vipsense_register_reader_types",
    Kind.STORE: "vipsense_register_store_types",
    Kind.NOTIFIER: "vipsense_register_notifier_types",
    Kind.UPLINK: "vipsense_register_uplink_types",
}
#: Hooks that tell observers what happened; every other hook registers types or commands.
BROADCAST_HOOKS = frozenset(
    n for n in dir(hookspecs) if n.startswith(HOOK_PREFIX) and not n.startswith("vipsense_register_")
)


class PluginState(str, enum.Enum):
    LOADED = "loaded"
    FAILED = "failed"
    BLOCKED = "blocked"
    UNAVAILABLE = "unavailable"  #: loaded, but a module its types need is not installed


@attrs.frozen
class PluginType:
    """One contributed type: what a profile's ``type:`` names."""

    kind: Kind
    name: str
    settings: type
    factory: Callable[..., Any]
    plugin: str
    summary: str = ""
    requires: tuple[str, ...] = ()  #: modules the type needs, e.g. ``("sllurp",)``
    extra: str = ""  #: the pip extra of the plugin's distribution that installs them
    unavailable: str = ""  #: why the type cannot be used (a module is missing); empty when it can


def _missing_modules(modules: Iterable[str]) -> list[str]:
    """The modules that cannot be found, looked up without importing them (a parent package of a
    dotted name is imported, as ``find_spec`` must)."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package is missing, or a broken module
            found = False
        if not found:
            missing.append(name)
    return missing


@attrs.frozen
class PluginCommand:
    """A ``vipsense`` subcommand a plugin contributes."""

    name: str
    configure: Callable[[Any], None]  #: ``configure(argparse parser)``; sets ``func``
    plugin: str
    help: str = ""


@attrs.define
class PluginInfo:
    name: str
    module: str
    distribution: str = ""
    version: str = ""
    state: PluginState = PluginState.LOADED
    error: str = ""
    types: list[PluginType] = attrs.field(factory=list)
    commands: list[PluginCommand] = attrs.field(factory=list)


class PluginLoadError(Exception):
    """A plugin registered something the core refuses; its message is a :class:`Text` (logged in
    English, shown in the reader's language)."""


def _described(exc: BaseException) -> str:
    """:func:`describe`, keeping a translatable message translatable (the type's name stays)."""
    message = exc.args[0] if len(exc.args) == 1 else None
    if isinstance(message, Text) and "\n" not in message:
        return Text("{type}: {message}", type=type(exc).__name__, message=message)
    return describe(exc)


_PLUGIN_STATE_LABELS = {
    "loaded": lazy_gettext("loaded"),
    "failed": lazy_gettext("failed to load"),
    "blocked": lazy_gettext("disabled"),
    "unavailable": lazy_gettext("unavailable"),
}


def plugin_state_label(state: str) -> str:
    """A plugin's state (``"failed"`` or ``PluginState.FAILED``) as people read it."""
    found = _PLUGIN_STATE_LABELS.get(str(getattr(state, "value", state)))
    return str(found) if found is not None else str(state)


class _Manager(pluggy.PluginManager):
    """Also treat unmarked ``vipsense_*`` functions as hook implementations, so a misspelt one is
    caught by the unknown-hook check rather than silently ignored.

    Broadcast hooks are called by pluggy itself (its order: last registered first, ``tryfirst`` and
    ``trylast`` honoured, wrappers around the rest), but each plain implementation runs inside
    ``on_error``'s isolation: one that raises is reported and the others still run.  (Every hook call
    of pluggy goes through ``_hookexec``; its tracing wraps what is below it.)"""

    def __init__(self, project_name: str, on_error: Callable[[str, str, Exception], None]) -> None:
        super().__init__(project_name)
        self._on_error = on_error
        #: each implementation of a broadcast hook, and the isolated copy pluggy is given instead
        self._isolated: dict[pluggy.HookImpl, pluggy.HookImpl] = {}

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith(HOOK_PREFIX):
            method = getattr(plugin, name, None)
            if inspect.isroutine(method):
                return {}
        return opts

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        removed = super().unregister(plugin, name)
        self._isolated = {i: c for i, c in self._isolated.items() if i.plugin is not removed}
        return removed

    def _hookexec(
        self,
        hook_name: str,
        methods: Sequence[pluggy.HookImpl],
        kwargs: Mapping[str, object],
        firstresult: bool,
    ) -> Any:
        if hook_name in BROADCAST_HOOKS:
            methods = [self._isolate(hook_name, impl) for impl in methods]
        return super()._hookexec(hook_name, methods, kwargs, firstresult)

    def _isolate(self, hook_name: str, impl: pluggy.HookImpl) -> pluggy.HookImpl:
        """``impl`` with its failure kept to itself; a wrapper is returned as it is (it must see the
        others' outcome to do its job)."""
        if impl.wrapper or impl.hookwrapper:
            return impl
        isolated = self._isolated.get(impl)
        if isolated is None:
            function, on_error = impl.function, self._on_error

            @functools.wraps(function)
            def call(*args: Any) -> Any:
                try:
                    return function(*args)
                except Exception as exc:
                    on_error(impl.plugin_name, hook_name, exc)
                    return None

            isolated = self._isolated[impl] = pluggy.HookImpl(impl.plugin, impl.plugin_name, call, impl.opts)
        return isolated


class PluginHost:
    def __init__(self) -> None:
        self.pm = _Manager(PROJECT, self._hook_failed)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.types: dict[Kind, dict[str, PluginType]] = {k: {} for k in Kind}
        #: types whose required modules are missing; ``PluginType.unavailable`` says which and how
        #: to install them
        self.unavailable_types: dict[Kind, dict[str, PluginType]] = {k: {} for k in Kind}
        self.commands: dict[str, PluginCommand] = {}
        self._lock = threading.Lock()
        #: (plugin, hook) -> number of times an implementation raised, and the last message
        self.hook_errors: dict[tuple[str, str], tuple[int, str]] = {}

    # -- loading ------------------------------------------------------------------------------

    def load_entry_points(self, disabled: Iterable[str] | None = None) -> None:
        if disabled is None:
            env = os.environ.get("VIPSENSE_DISABLE_PLUGINS", "")
            disabled = [n.strip() for n in env.split(",") if n.strip()]
        disabled = set(disabled)
        seen: set[tuple[str, str]] = set()

        # A distribution's METADATA (vipsense's holds its whole README) is parsed once, not once per
        # entry point and question: every command pays for loading the plugins.
        names: dict[int, tuple[str, str]] = {}

        def name_and_version(ep: md.EntryPoint) -> tuple[str, str]:
            dist = getattr(ep, "dist", None)
            if dist is None:
                return "", ""
            if id(dist) not in names:
                meta = dist.metadata
                names[id(dist)] = (meta["Name"] or "", meta["Version"] or "")
            return names[id(dist)]

        # Built-ins first, so a vendor type that clashes with a built-in name is the one refused.
        def order(ep: md.EntryPoint) -> tuple[bool, str]:
            return (name_and_version(ep)[0] != PROJECT, ep.name)

        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=order):
            if (ep.name, ep.value) in seen:
                continue
            seen.add((ep.name, ep.value))
            distribution, version = name_and_version(ep)
            info = PluginInfo(name=ep.name, module=ep.value, distribution=distribution, version=version)
            if ep.name in disabled:
                info.state = PluginState.BLOCKED
                info.error = Text(lazy_gettext("disabled by VIPSENSE_DISABLE_PLUGINS"))
                self.plugins.append(info)
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not stop the others
                self._fail(info, Text(lazy_gettext("import failed: {error}"), error=describe(exc)))
                continue
            self._register(obj, info)
        self.pm.check_pending()

    def add(self, obj: object, name: str, distribution: str = "", version: str = "") -> PluginInfo:
        """Register a plugin object directly (tests, benchmarks, embedding applications)."""
        module = getattr(obj, "__name__", type(obj).__name__)
        info = PluginInfo(name=name, module=module, distribution=distribution, version=version)
        self._register(obj, info)
        self.pm.check_pending()
        return info

    def _fail(self, info: PluginInfo, reason: str) -> None:
        info.state, info.error = PluginState.FAILED, reason
        log.error("plugin %s failed to load: %s", info.name, reason)
        self.plugins.append(info)

    def _register(self, obj: object, info: PluginInfo) -> None:
        try:
            self.pm.register(obj, name=info.name)
        except Exception as exc:
            self._fail(info, Text(lazy_gettext("registration failed: {error}"), error=str(exc)))
            return
        unknown = [hc.name for hc in (self.pm.get_hookcallers(obj) or []) if not hc.has_spec()]
        if unknown:
            self.pm.unregister(obj)
            hooks = [n for n in dir(hookspecs) if n.startswith(HOOK_PREFIX)]
            detail = "; ".join(f"{n!r}{suggest(n, hooks)}" for n in unknown)
            self._fail(info, Text(lazy_gettext("unknown hook {hooks}"), hooks=detail))
            return
        try:
            for kind, hook in _REGISTER_HOOKS.items():
                for impl in getattr(self.pm.hook, hook).get_hookimpls():
                    if impl.plugin is obj:
                        impl.function(register=self._registrar(kind, info))
            for impl in self.pm.hook.vipsense_register_commands.get_hookimpls():
                if impl.plugin is obj:
                    impl.function(register=self._command_registrar(info))
        except Exception as exc:
            self.pm.unregister(obj)
            for t in info.types:
                self.types[t.kind].pop(t.name, None)
                self.unavailable_types[t.kind].pop(t.name, None)
            for c in info.commands:
                self.commands.pop(c.name, None)
            info.types.clear()
            info.commands.clear()
            self._fail(info, _described(exc))
            return
        unusable = [t.unavailable for t in info.types if t.unavailable]
        if unusable:
            info.error = joined(unusable, lazy_gettext("; "))
            if len(unusable) == len(info.types):  # else its other types work: it is loaded
                info.state = PluginState.UNAVAILABLE
        self.plugins.append(info)

    def _registrar(self, kind: Kind, info: PluginInfo) -> Callable[..., None]:
        def register(
            name: str,
            settings: type,
            factory: Callable[..., Any],
            *,
            summary: str = "",
            requires: Iterable[str] = (),
            extra: str = "",
        ) -> None:
            if not isinstance(name, str) or not _TYPE_NAME.match(name):
                raise PluginLoadError(
                    Text(
                        lazy_gettext("{kind} type name {name} must be lower-case letters, digits and '-'"),
                        kind=kind.value,
                        name=repr(name),
                    )
                )
            if not (attrs.has(settings) and settings.__setattr__ is not object.__setattr__):
                raise PluginLoadError(
                    Text(
                        lazy_gettext("{kind} type {name}: settings must be a frozen attrs class"),
                        kind=kind.value,
                        name=repr(name),
                    )
                )
            if not callable(factory):
                raise PluginLoadError(
                    Text(
                        lazy_gettext("{kind} type {name}: factory is not callable"),
                        kind=kind.value,
                        name=repr(name),
                    )
                )
            if isinstance(requires, str):
                requires = (requires,)
            requires = tuple(requires)
            bad = [m for m in requires if not isinstance(m, str) or not _MODULE_NAME.match(m)]
            if bad:
                raise PluginLoadError(
                    Text(
                        lazy_gettext(
                            "{kind} type {name}: requires must list module names, such as "
                            "requires=('serial',); got {got}"
                        ),
                        kind=kind.value,
                        name=repr(name),
                        got=repr(bad[0]),
                    )
                )
            if extra and (not isinstance(extra, str) or not _EXTRA_NAME.match(extra)):
                raise PluginLoadError(
                    Text(
                        lazy_gettext("{kind} type {name}: extra must be the name of a pip extra, got {got}"),
                        kind=kind.value,
                        name=repr(name),
                        got=repr(extra),
                    )
                )
            owner = self.types[kind].get(name) or self.unavailable_types[kind].get(name)
            if owner is not None:
                raise PluginLoadError(
                    Text(
                        lazy_gettext("{kind} type {name} is already provided by plugin {plugin}"),
                        kind=kind.value,
                        name=repr(name),
                        plugin=owner.plugin,
                    )
                )
            missing = _missing_modules(requires)
            unavailable = (
                _unavailable_reason(kind, name, missing, info.distribution, extra) if missing else ""
            )
            ptype = PluginType(
                kind, name, settings, factory, info.name, summary, requires, extra, unavailable
            )
            (self.unavailable_types if missing else self.types)[kind][name] = ptype
            info.types.append(ptype)

        return register

    def _command_registrar(self, info: PluginInfo) -> Callable[..., None]:
        def register(name: str, configure: Callable[[Any], None], *, help: str = "") -> None:
            if not isinstance(name, str) or not _TYPE_NAME.match(name):
                raise PluginLoadError(
                    Text(
                        lazy_gettext("command name {name} must be lower-case letters, digits and '-'"),
                        name=repr(name),
                    )
                )
            if name in RESERVED_COMMANDS:
                raise PluginLoadError(
                    Text(lazy_gettext("command {name} is a built-in vipsense command"), name=repr(name))
                )
            if not callable(configure):
                raise PluginLoadError(
                    Text(lazy_gettext("command {name}: configure is not callable"), name=repr(name))
                )
            owner = self.commands.get(name)
            if owner is not None:
                raise PluginLoadError(
                    Text(
                        lazy_gettext("command {name} is already provided by plugin {plugin}"),
                        name=repr(name),
                        plugin=owner.plugin,
                    )
                )
            cmd = PluginCommand(name, configure, info.name, help)
            self.commands[name] = cmd
            info.commands.append(cmd)

        return register

    # -- broadcasting -------------------------------------------------------------------------

    @property
    def hook(self) -> pluggy.HookRelay:
        """The hooks, called as pluggy calls them: ``host.hook.vipsense_arrival(visit=visit)``.  Every
        implementation of a broadcast hook runs even when another raises (see :class:`_Manager`)."""
        return self.pm.hook

    def _hook_failed(self, plugin: str, hook: str, exc: Exception) -> None:
        """Log and count an implementation that raised; the status page shows the count."""
        key = (plugin, hook)
        with self._lock:
            count, _ = self.hook_errors.get(key, (0, ""))
            self.hook_errors[key] = (count + 1, describe(exc))
        log.error("plugin %s raised in %s", plugin, hook, exc_info=exc)

    def failed_plugins(self) -> list[PluginInfo]:
        """Plugins that provide no types: they failed to load or were blocked (an unavailable one
        still names its types, with the install line)."""
        return [p for p in self.plugins if p.state in (PluginState.FAILED, PluginState.BLOCKED)]


def _unavailable_reason(kind: Kind, name: str, missing: list[str], distribution: str, extra: str) -> str:
    """Why a type cannot be used, with the install line of its own distribution's extra."""
    if extra and distribution:
        fix = Text(
            lazy_gettext("install it with: {command}"), command=f"pip install '{distribution}[{extra}]'"
        )
    else:
        fix = Text(lazy_gettext("install the package that provides it"))
    modules = ", ".join(missing)
    if len(missing) == 1:
        message = lazy_gettext(
            "{kind} type {name} needs the Python module {modules}, which is not installed; {fix}"
        )
    else:
        message = lazy_gettext(
            "{kind} type {name} needs the Python modules {modules}, which are not installed; {fix}"
        )
    return Text(message, kind=kind.value, name=repr(name), modules=modules, fix=fix)


def load_host() -> PluginHost:
    host = PluginHost()
    host.load_entry_points()
    return host


__all__ = [
    "ENTRY_POINT_GROUP",
    "Kind",
    "PluginCommand",
    "PluginHost",
    "PluginInfo",
    "PluginState",
    "PluginType",
    "load_host",
    "plugin_state_label",
]
