"""Read YAML keeping the file and line of every value, and compose profiles with ``extends:``.

The one composition rule (documented in README "Branch profiles"):

    A profile may name one base file with ``extends: PATH`` (relative to the profile).  The base is
    read first, then the profile is merged into it: mappings merge key by key, recursively; any other
    value (a list, a string, a number) in the profile replaces the base's value whole; a key set to
    ``null`` removes the base's value.  A base may itself extend another base.

Secrets never live in a profile: ``!secret NAME`` looks ``NAME`` up in ``secrets.yaml`` beside the file
that uses it (or in ``$VIPSENSE_SECRETS``), and ``!env VAR`` reads an environment variable.  Both give
:class:`~vipsense.config.types.Secret` values, which are masked wherever they are printed.

Hostile or mistaken input is refused with one line instead of exhausting the machine: a profile over
1 MB or with more than 20,000 values, aliases that expand to more than 10,000 values (a "billion
laughs" bomb), a recursive alias and nesting deeper than 50 levels.  A branch profile is a few kB
with no aliases, so these limits cost nothing in practice.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import attrs
import yaml

from ..i18n import _, lazy_gettext
from .errors import ConfigError
from .types import Secret

KeyPath = tuple[str | int, ...]
Locations = dict[KeyPath, tuple[str, int]]

#: Stands for a value whose error was already reported (a bad tag, an unknown secret), so later
#: stages skip it instead of reporting a second, confusing error.
INVALID: Any = type("Invalid", (), {"__repr__": lambda self: "<invalid>"})()


#: A branch profile is a few kB; a file over this is not a profile (or is an attack on the parser).
MAX_PROFILE_BYTES = 1024 * 1024
#: Values that aliases (``*name``) may add to a file when expanded.  A billion-laughs file expands ten
#: aliases ten times over, nine levels deep; a real profile needs none.
MAX_ALIAS_VALUES = 10_000
#: Values a profile may hold.  The demo has about 600, a branch with a long emulated morning a few
#: thousand; half a million tiny values fit in 1 MB and would take PyYAML 20 s and 500 MB to read.
MAX_PROFILE_VALUES = 20_000
MAX_DEPTH = 50  #: mappings and lists inside each other; a profile needs fewer than 10

_TAB_HINT = lazy_gettext(
    "replace the tab with spaces: YAML does not allow tabs for indentation or after a 'key:'"
)
_COLON_HINT = lazy_gettext("a value that contains ': ' must be quoted, e.g. name: 'Lujiazui: Shanghai'")
_ALIGN_HINT = lazy_gettext("check the indentation: the keys of one mapping must start in the same column")
_DEEPER_HINT = lazy_gettext(
    "check the indentation: this line is indented deeper than the line above, so it reads as part of "
    "that line's value; line it up with the keys above (or is a ':' missing above?)"
)
_KEY_HINT = lazy_gettext("a key needs ':' and a space after it, as in 'name: value'")

#: PyYAML's own wording for the syntax errors a hand-written profile makes, in the language in force;
#: wording not listed here (rarer errors, or ones naming a token) is shown as PyYAML gives it.
_PYYAML_WORDING = {
    "while scanning a simple key": lazy_gettext("while scanning a simple key"),
    "while scanning a quoted scalar": lazy_gettext("while scanning a quoted scalar"),
    "while scanning a plain scalar": lazy_gettext("while scanning a plain scalar"),
    "while scanning for the next token": lazy_gettext("while scanning for the next token"),
    "while parsing a block mapping": lazy_gettext("while parsing a block mapping"),
    "while parsing a block collection": lazy_gettext("while parsing a block collection"),
    "while parsing a flow sequence": lazy_gettext("while parsing a flow sequence"),
    "while parsing a flow mapping": lazy_gettext("while parsing a flow mapping"),
    "while parsing a block node": lazy_gettext("while parsing a block node"),
    "while parsing a flow node": lazy_gettext("while parsing a flow node"),
    "while scanning an alias": lazy_gettext("while scanning an alias"),
    "while scanning an anchor": lazy_gettext("while scanning an anchor"),
    "while composing a node": lazy_gettext("while composing a node"),
    "mapping values are not allowed here": lazy_gettext("mapping values are not allowed here"),
    "could not find expected ':'": lazy_gettext("could not find expected ':'"),
    "found unexpected end of stream": lazy_gettext("found unexpected end of stream"),
    "found character '\\t' that cannot start any token": lazy_gettext(
        "found character '\\t' that cannot start any token"
    ),
    "found unknown escape character": lazy_gettext("found unknown escape character"),
    "found unexpected ':'": lazy_gettext("found unexpected ':'"),
}


def _pyyaml_wording(text: str) -> str:
    """PyYAML's message in the language in force when it is one of the usual ones, else as written."""
    known = _PYYAML_WORDING.get(text)
    if known is not None:
        return str(known)
    if text.startswith("found undefined alias "):
        return _("found undefined alias {alias}").format(alias=text.removeprefix("found undefined alias "))
    if text.startswith("expected <block end>, but found "):
        found = text.removeprefix("expected <block end>, but found ")
        return _("expected <block end>, but found {token}").format(token=found)
    return text


def _and_then(first: str, then: str) -> str:
    """Two parts of one message, as the language in force joins them (``a; b`` / ``a；b``)."""
    return _("{message}; {note}").format(message=first, note=then)


@attrs.frozen
class _Missing(ConfigError):
    """The file does not exist (so a secrets file can say how to create it)."""


@attrs.frozen
class _Syntax(ConfigError):
    """The file is not valid YAML."""


def syntax_error_mark(exc: yaml.YAMLError, text: str) -> tuple[int | None, int | None]:
    """The line and column a person should look at for a YAML syntax error.

    For an unfinished quoted value or flow collection ("while scanning a quoted scalar ...") that is
    where it began, not where PyYAML gave up, which may be past the end of the file; otherwise it is
    where the problem is (for a bad indentation, the line that is indented wrongly)."""
    context = getattr(exc, "context", None) or ""
    unfinished = context.startswith(("while scanning", "while parsing a flow"))
    mark = getattr(exc, "context_mark", None) if unfinished else None
    mark = mark or getattr(exc, "problem_mark", None)
    if mark is None:
        return None, None
    last = max(1, len(text.splitlines()))
    if mark.line + 1 > last:  # past the end of the file: its last line
        return last, None
    return mark.line + 1, mark.column + 1


def syntax_hint(exc: yaml.YAMLError, text: str, line: int | None, column: int | None) -> str:
    """What usually causes this syntax error: a tab, an unquoted ': ' in a value, or indentation."""
    problem = getattr(exc, "problem", None) or ""
    lines = text.splitlines()
    source = lines[line - 1] if line and line <= len(lines) else ""
    if "'\\t'" in problem or "\t" in source[: len(source) - len(source.lstrip())]:
        return str(_TAB_HINT)
    if "mapping values are not allowed" in problem:
        before = source[: (column or 1) - 1]
        return str(_COLON_HINT if re.search(r"\S:(\s|$)", before) else _DEEPER_HINT)
    if "expected <block end>" in problem:
        return str(_ALIGN_HINT)
    if "could not find expected ':'" in problem:
        return str(_KEY_HINT)
    return ""


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class LoadedYaml:
    """Plain Python data plus the location of every key path in it."""

    def __init__(
        self, data: Any, locations: Locations, errors: list[ConfigError], incomplete: bool = False
    ) -> None:
        self.data = data
        self.locations = locations
        self.errors = errors
        #: a base profile could not be read, so keys it would have supplied may be missing
        self.incomplete = incomplete

    def where(self, path: KeyPath) -> tuple[str, int | None]:
        """The file and line of ``path``, or of its nearest parent that has one."""
        p = tuple(path)
        while True:
            if p in self.locations:
                return self.locations[p]
            if not p:
                return ("<profile>", None)
            p = p[:-1]

    def error(self, path: KeyPath, message: str) -> ConfigError:
        file, line = self.where(path)
        return ConfigError(file, line, format_path(path), message)


class _Refused(Exception):
    """The file would exhaust the parser: an alias bomb, a recursive alias, too deep nesting or too
    many values."""

    def __init__(self, mark: yaml.Mark, message: str) -> None:
        super().__init__(message)
        self.mark = mark
        self.message = message


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, composing with a budget: aliases may add at most ``MAX_ALIAS_VALUES``
    values, an alias may not point into its own anchor, nesting stops at ``MAX_DEPTH``, and the file
    may hold at most ``max_values`` values (``None``: no limit)."""

    def __init__(self, text: str, max_values: int | None) -> None:
        super().__init__(text)
        self.max_values = max_values
        self.values = 0
        self.alias_values = 0
        self._open_anchors: list[str] = []  #: anchors of the collections being composed
        self._sizes: dict[int, int] = {}  #: id(node) -> values it stands for, aliases expanded
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # PyYAML's stub leaves it untyped
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:  # an undefined alias is PyYAML's own error
                mark = event.start_mark
                assert isinstance(mark, yaml.Mark), "the pure-Python parser marks every event"
                if event.anchor in self._open_anchors:
                    raise _Refused(
                        mark,
                        _(
                            "recursive alias *{anchor}: it is inside its own anchor &{anchor}, so its "
                            "value would never end; remove the alias"
                        ).format(anchor=event.anchor),
                    )
                self.alias_values += _expanded_size(target, self._sizes)
                if self.alias_values > MAX_ALIAS_VALUES:
                    raise _Refused(
                        mark,
                        _(
                            "aliases (*name) expand to more than {count:,} values, the most a profile "
                            "may have; write the values out instead"
                        ).format(count=MAX_ALIAS_VALUES),
                    )
            return super().compose_node(parent, index)
        self.values += 1
        if self.max_values is not None and self.values > self.max_values:
            raise _Refused(
                event.start_mark,
                _(
                    "the file holds more than {count:,} values, the most a profile may have; is this "
                    "the right file?"
                ).format(count=self.max_values),
            )
        self._depth += 1
        if self._depth > MAX_DEPTH:
            message = _("nested more than {depth} levels deep; a profile needs few").format(depth=MAX_DEPTH)
            raise _Refused(event.start_mark, message)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open_anchors.append(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open_anchors.pop()


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values ``node`` becomes with every alias in it expanded (memoised: an alias bomb
    shares its nodes, so this stays cheap while the expansion is astronomically large)."""
    key = id(node)
    if key not in sizes:
        if isinstance(node, yaml.MappingNode):
            sizes[key] = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            sizes[key] = 1 + sum(_expanded_size(item, sizes) for item in node.value)
        else:
            sizes[key] = 1
    return sizes[key]


def _size_text(size: int) -> str:
    return f"{size / 1024 / 1024:.3g} MB" if size >= 1024 * 1024 else f"{size / 1024:.3g} kB"


def parse_file(file: Path, display: str, bounded: bool) -> tuple[yaml.Node | None, ConfigError | None]:
    """The one YAML node of ``file``, composed within the limits above, or the one error that says
    why not.  ``(None, None)`` means the file holds no document (empty, or comments only).
    ``bounded`` applies a profile's limits of size and values."""
    max_bytes = MAX_PROFILE_BYTES if bounded else None

    def error(message: str, line: int | None = None, column: int | None = None) -> ConfigError:
        return ConfigError(display, line, "", message, column)

    try:
        size = file.stat().st_size if max_bytes else 0
        if max_bytes and size > max_bytes:
            return None, error(
                _(
                    "the file is {size}; a profile may be at most {most} ({bytes:,} bytes), so this is "
                    "not a profile"
                ).format(size=_size_text(size), most=_size_text(max_bytes), bytes=max_bytes)
            )
        with file.open("rb") as stream:  # bounded again: a pipe or a growing file has no fixed size
            data = stream.read(max_bytes + 1) if max_bytes else stream.read()
    except FileNotFoundError:
        return None, _Missing(display, None, "", _("file not found"))
    except OSError as exc:
        return None, error(_("cannot read the file: {reason}").format(reason=exc.strerror or exc))
    if max_bytes and len(data) > max_bytes:
        message = _("the file is larger than {most}, the most a profile may be")
        return None, error(message.format(most=_size_text(max_bytes)))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8", errors="replace")) + 1
        return None, error(
            _(
                "not UTF-8: byte 0x{byte:02x} cannot be read; save the file as UTF-8 (a file saved as "
                "GBK or GB2312 gives this error)"
            ).format(byte=data[exc.start]),
            line,
            column,
        )
    try:
        loader = _BoundedLoader(text, MAX_PROFILE_VALUES if bounded else None)  # checks characters first
    except yaml.reader.ReaderError as exc:  # a control character: PyYAML gives its offset only
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        message = _("character U+{code:04X} is not allowed in YAML; remove it").format(code=exc.character)
        return None, error(message, line, column)
    try:
        return loader.get_single_node(), None
    except _Refused as exc:
        return None, error(exc.message, exc.mark.line + 1, exc.mark.column + 1)
    except yaml.MarkedYAMLError as exc:
        mark_line, mark_column = syntax_error_mark(exc, text)
        hint = syntax_hint(exc, text, mark_line, mark_column)
        parts = [_pyyaml_wording(exc.context or ""), _pyyaml_wording(exc.problem or ""), hint]
        what = functools.reduce(_and_then, [p for p in parts if p] or [str(exc)])
        return None, _Syntax(
            display, mark_line, "", _("YAML syntax error: {what}").format(what=what), mark_column
        )
    finally:
        loader.dispose()


class _Reader:
    def __init__(self, file: Path, display: str, bounded: bool) -> None:
        self.file = file
        self.display = display
        self.bounded = bounded
        self._too_deep = False
        self.locations: Locations = {}
        self.errors: list[ConfigError] = []
        self._secrets: dict[str, Any] | None = None
        self._secrets_file: Path | None = None

    def err(self, node: yaml.Node, path: KeyPath, message: str) -> None:
        self.errors.append(ConfigError(self.display, node.start_mark.line + 1, format_path(path), message))

    def read(self) -> Any:
        node, error = parse_file(self.file, self.display, self.bounded)
        if error is not None:  # as a plain error: the subclasses only tell the secrets file why
            self.errors.append(ConfigError(error.file, error.line, error.path, error.message, error.column))
            return None
        if node is None:
            self.errors.append(ConfigError(self.display, 1, "", _("the file is empty")))
            return None
        self._loader = yaml.SafeLoader("")
        return self.walk(node, ())

    def walk(self, node: yaml.Node, path: KeyPath) -> Any:
        if len(path) > MAX_DEPTH:  # aliases inside aliases can nest deeper than the text does
            if not self._too_deep:
                self._too_deep = True
                message = _("aliases here nest values more than {depth} levels deep; a profile needs few")
                message = message.format(depth=MAX_DEPTH)
                self.errors.append(ConfigError(self.display, node.start_mark.line + 1, "", message))
            return INVALID
        self.locations[path] = (self.display, node.start_mark.line + 1)
        if node.tag == "!secret":
            return self.secret(node, path)
        if node.tag == "!env":
            return self.env(node, path)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self.err(key_node, path, _("a key must be a plain name"))
                    continue
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.err(
                        key_node, path, _("YAML merge keys (<<) are not supported; use extends: instead")
                    )
                    continue
                key = key_node.value
                key_path = (*path, key)
                if key in out:
                    self.err(key_node, key_path, _("duplicate key: this key is already set above"))
                    continue
                out[key] = self.walk(value_node, key_path)
                self.locations[key_path] = (self.display, key_node.start_mark.line + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, (*path, i)) for i, item in enumerate(node.value)]
        if node.tag.startswith("!") or not node.tag.startswith("tag:yaml.org,2002:"):
            self.err(
                node, path, _("unknown tag {tag}; use !secret NAME or !env VARIABLE").format(tag=node.tag)
            )
            return INVALID
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            self.err(node, path, _("cannot read this value: {problem}").format(problem=problem))
            return INVALID

    def env(self, node: yaml.Node, path: KeyPath) -> Secret:
        name = node.value if isinstance(node, yaml.ScalarNode) else ""
        if not name:
            self.err(node, path, _("!env needs a variable name, e.g. !env LDAP_PASSWORD"))
            return INVALID
        if name not in os.environ:
            message = _("environment variable {name} is not set; export it before starting")
            self.err(node, path, message.format(name=name))
            return INVALID
        return Secret(os.environ[name], f"env:{name}")

    def secret(self, node: yaml.Node, path: KeyPath) -> Secret:
        name = node.value if isinstance(node, yaml.ScalarNode) else ""
        if not name:
            self.err(node, path, _("!secret needs a name, e.g. !secret ldap_password"))
            return INVALID
        secrets, problem = self.load_secrets()
        if secrets is None:
            self.err(node, path, _("secret {name!r} not found: {problem}").format(name=name, problem=problem))
            return INVALID
        if name not in secrets:
            message = _("secret {name!r} is not in {file}").format(name=name, file=self._secrets_file)
            self.err(node, path, message)
            return INVALID
        return Secret(str(secrets[name]), f"secret:{name}")

    def load_secrets(self) -> tuple[dict[str, Any] | None, str]:
        """The secrets mapping, or ``None`` and why it could not be read."""
        if self._secrets is None:
            env = os.environ.get("VIPSENSE_SECRETS")
            self._secrets_file = Path(env) if env else self.file.parent / "secrets.yaml"
            where = self._secrets_file
            node, error = parse_file(where, str(where), bounded=True)
            if isinstance(error, _Missing):
                message = _("no secrets file at {file}; create it or set VIPSENSE_SECRETS to its path")
                return None, message.format(file=where)
            if isinstance(error, _Syntax):
                message = _("the secrets file {file} is not valid YAML (line {line})")
                return None, message.format(file=where, line=error.line)
            if error is not None and error.line:
                message = _("cannot read the secrets file {file} (line {line}): {problem}")
                return None, message.format(file=where, line=error.line, problem=error.message)
            if error is not None:
                message = _("cannot read the secrets file {file}: {problem}")
                return None, message.format(file=where, problem=error.message)
            data = yaml.SafeLoader("").construct_document(node) if node is not None else None
            if data is None:
                data = {}
            if not isinstance(data, dict):
                return None, _("the secrets file {file} must be a mapping of names to values").format(
                    file=where
                )
            self._secrets = data
        return self._secrets, ""


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _merge(base: Any, over: Any, path: KeyPath, locs: Locations, over_locs: Locations) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            sub = (*path, key)
            if value is None:
                out.pop(key, None)
                _drop(locs, sub)
            elif key in out:
                out[key] = _merge(out[key], value, sub, locs, over_locs)
            else:
                out[key] = value
                _take(locs, over_locs, sub)
        _take_one(locs, over_locs, path)
        return out
    _drop(locs, path)
    _take(locs, over_locs, path)
    return over


def _drop(locs: Locations, prefix: KeyPath) -> None:
    n = len(prefix)
    for key in [k for k in locs if k[:n] == prefix]:
        del locs[key]


def _take(locs: Locations, src: Locations, prefix: KeyPath) -> None:
    n = len(prefix)
    locs.update({k: v for k, v in src.items() if k[:n] == prefix})


def _take_one(locs: Locations, src: Locations, path: KeyPath) -> None:
    if path in src:
        locs[path] = src[path]


def without_nulls(value: Any) -> Any:
    """``key: null`` means "not set": drop such keys so defaults apply."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def load_profile_yaml(path: Path, bounded: bool = False, _chain: tuple[Path, ...] = ()) -> LoadedYaml:
    """Read ``path`` and everything it ``extends:``, merged, with locations and all errors.

    Keys set to ``null`` are dropped from the result (after merging), so they mean "not set".
    ``bounded`` refuses a file (each of the chain on its own) over ``MAX_PROFILE_BYTES`` or
    ``MAX_PROFILE_VALUES``: a profile is read bounded; a seed file of customers may be larger."""
    loaded = _load(path, _chain, bounded)
    if not _chain and loaded.data is not None:
        loaded.data = without_nulls(loaded.data)
    return loaded


def _load(path: Path, _chain: tuple[Path, ...], bounded: bool) -> LoadedYaml:
    path = path.resolve() if path.exists() else path
    reader = _Reader(path, _display(path), bounded)
    data = reader.read()
    errors = reader.errors
    locs = reader.locations
    if data is not None and not isinstance(data, dict):
        errors.append(ConfigError(reader.display, 1, "", _("a profile must be a mapping of keys")))
        return LoadedYaml(None, locs, errors)
    if not isinstance(data, dict) or "extends" not in data:
        return LoadedYaml(data, locs, errors)

    base_name = data.pop("extends")
    line = locs.get(("extends",), (reader.display, None))[1]
    _drop(locs, ("extends",))
    if base_name is None:  # "extends: null" means no base, like any other null
        return LoadedYaml(data, locs, errors)
    if not isinstance(base_name, str) or not base_name.strip():
        errors.append(ConfigError(reader.display, line, "extends", _("expected the path of a base profile")))
        return LoadedYaml(data, locs, errors, incomplete=True)
    base_path = (path.parent / base_name).resolve()
    if base_path in (*_chain, path):
        chain = " -> ".join(_display(p) for p in (*_chain, path, base_path))
        errors.append(
            ConfigError(reader.display, line, "extends", _("circular extends: {chain}").format(chain=chain))
        )
        return LoadedYaml(data, locs, errors, incomplete=True)
    if not base_path.is_file():
        if base_path.is_dir():
            message = _("base profile {name} is a directory").format(name=base_name)
        else:
            message = _("base profile {name} not found").format(name=base_name)
        errors.append(ConfigError(reader.display, line, "extends", message))
        return LoadedYaml(data, locs, errors, incomplete=True)
    base = _load(base_path, (*_chain, path), bounded)
    if base.data is None:
        return LoadedYaml(data, locs, base.errors + errors, incomplete=True)
    merged_locs = dict(base.locations)
    merged = _merge(base.data, data, (), merged_locs, locs)
    return LoadedYaml(merged, merged_locs, base.errors + errors, base.incomplete)
