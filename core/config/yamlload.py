"""Read YAML keeping the file and line of every value, and compose profiles with ``extends:``.

The one composition rule (documented in README "Branch profiles"):

    A profile may name one base file with ``extends: PATH`` (relative to the profile).  The base is
    read first, then the profile is merged into it: mappings merge key by key, recursively; any other
    value (a list, a string, a number) in the profile replaces the base's value whole; a key set to
    ``null`` removes the base's value.  A base may itself extend another base.

Secrets never live in a profile: ``!secret NAME`` looks ``NAME`` up in ``secrets.yaml`` beside the file
that uses it (or in ``$VIPSENSE_SECRETS``), and ``!env VAR`` reads an environment variable.  Both give
:class:`~vipsense.config.types.Secret` values, which are masked wherever they are printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .types import Secret

KeyPath = tuple[str | int, ...]
Locations = dict[KeyPath, tuple[str, int]]

#: Stands for a value whose error was already reported (a bad tag, an unknown secret), so later
#: stages skip it instead of reporting a second, confusing error.
INVALID: Any = type("Invalid", (), {"__repr__": lambda self: "<invalid>"})()


def syntax_error_line(exc: yaml.YAMLError, text: str) -> int | None:
    """The line a person should look at for a YAML syntax error.

    For an unfinished construct ("while scanning a quoted scalar ...") that is where it began, not
    where PyYAML gave up, which may be past the end of the file; otherwise where the problem is."""
    context = getattr(exc, "context", None) or ""
    mark = getattr(exc, "context_mark", None) if context.startswith("while") else None
    mark = mark or getattr(exc, "problem_mark", None)
    if mark is None:
        return None
    return min(mark.line + 1, max(1, len(text.splitlines())))


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


class _Reader:
    def __init__(self, file: Path, display: str) -> None:
        self.file = file
        self.display = display
        self.locations: Locations = {}
        self.errors: list[ConfigError] = []
        self._secrets: dict[str, Any] | None = None
        self._secrets_file: Path | None = None

    def err(self, node: yaml.Node, path: KeyPath, message: str) -> None:
        self.errors.append(ConfigError(self.display, node.start_mark.line + 1, format_path(path), message))

    def read(self) -> Any:
        try:
            text = self.file.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.errors.append(ConfigError(self.display, None, "", "file not found"))
            return None
        except (OSError, UnicodeDecodeError) as exc:
            self.errors.append(ConfigError(self.display, None, "", f"cannot read the file: {exc}"))
            return None
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            line = syntax_error_line(exc, text)
            what = "; ".join(x for x in (exc.context, exc.problem) if x)
            self.errors.append(ConfigError(self.display, line, "", f"YAML syntax error: {what}"))
            return None
        finally:
            loader.dispose()
        if node is None:
            self.errors.append(ConfigError(self.display, 1, "", "the file is empty"))
            return None
        self._loader = yaml.SafeLoader("")
        return self.walk(node, ())

    def walk(self, node: yaml.Node, path: KeyPath) -> Any:
        self.locations[path] = (self.display, node.start_mark.line + 1)
        if node.tag == "!secret":
            return self.secret(node, path)
        if node.tag == "!env":
            return self.env(node, path)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self.err(key_node, path, "a key must be a plain name")
                    continue
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.err(key_node, path, "YAML merge keys (<<) are not supported; use extends: instead")
                    continue
                key = key_node.value
                if key in out:
                    self.err(key_node, (*path, key), "duplicate key: this key is already set above")
                    continue
                out[key] = self.walk(value_node, (*path, key))
                self.locations[(*path, key)] = (self.display, key_node.start_mark.line + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, (*path, i)) for i, item in enumerate(node.value)]
        if node.tag.startswith("!") or not node.tag.startswith("tag:yaml.org,2002:"):
            self.err(node, path, f"unknown tag {node.tag}; use !secret NAME or !env VARIABLE")
            return INVALID
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            self.err(node, path, f"cannot read this value: {problem}")
            return INVALID

    def env(self, node: yaml.Node, path: KeyPath) -> Secret:
        name = node.value if isinstance(node, yaml.ScalarNode) else ""
        if not name:
            self.err(node, path, "!env needs a variable name, e.g. !env LDAP_PASSWORD")
            return INVALID
        if name not in os.environ:
            self.err(node, path, f"environment variable {name} is not set; export it before starting")
            return INVALID
        return Secret(os.environ[name], f"env:{name}")

    def secret(self, node: yaml.Node, path: KeyPath) -> Secret:
        name = node.value if isinstance(node, yaml.ScalarNode) else ""
        if not name:
            self.err(node, path, "!secret needs a name, e.g. !secret ldap_password")
            return INVALID
        secrets, problem = self.load_secrets()
        if secrets is None:
            self.err(node, path, f"secret {name!r} not found: {problem}")
            return INVALID
        if name not in secrets:
            self.err(node, path, f"secret {name!r} is not in {self._secrets_file}")
            return INVALID
        return Secret(str(secrets[name]), f"secret:{name}")

    def load_secrets(self) -> tuple[dict[str, Any] | None, str]:
        """The secrets mapping, or ``None`` and why it could not be read."""
        if self._secrets is None:
            env = os.environ.get("VIPSENSE_SECRETS")
            self._secrets_file = Path(env) if env else self.file.parent / "secrets.yaml"
            where = self._secrets_file
            try:
                data = yaml.safe_load(where.read_text(encoding="utf-8"))
            except FileNotFoundError:
                return None, f"no secrets file at {where}; create it or set VIPSENSE_SECRETS to its path"
            except (OSError, UnicodeDecodeError) as exc:
                return None, f"cannot read the secrets file {where}: {exc}"
            except yaml.YAMLError as exc:
                line = syntax_error_line(exc, where.read_text(encoding="utf-8", errors="replace"))
                at = f"line {line}" if line else "syntax error"
                return None, f"the secrets file {where} is not valid YAML ({at})"
            if data is None:
                data = {}
            if not isinstance(data, dict):
                return None, f"the secrets file {where} must be a mapping of names to values"
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


def load_profile_yaml(path: Path, _chain: tuple[Path, ...] = ()) -> LoadedYaml:
    """Read ``path`` and everything it ``extends:``, merged, with locations and all errors.

    Keys set to ``null`` are dropped from the result (after merging), so they mean "not set"."""
    loaded = _load(path, _chain)
    if not _chain and loaded.data is not None:
        loaded.data = without_nulls(loaded.data)
    return loaded


def _load(path: Path, _chain: tuple[Path, ...]) -> LoadedYaml:
    path = path.resolve() if path.exists() else path
    reader = _Reader(path, _display(path))
    data = reader.read()
    errors = reader.errors
    locs = reader.locations
    if data is not None and not isinstance(data, dict):
        errors.append(ConfigError(reader.display, 1, "", "a profile must be a mapping of keys"))
        return LoadedYaml(None, locs, errors)
    if not isinstance(data, dict) or "extends" not in data:
        return LoadedYaml(data, locs, errors)

    base_name = data.pop("extends")
    line = locs.get(("extends",), (reader.display, None))[1]
    _drop(locs, ("extends",))
    if base_name is None:  # "extends: null" means no base, like any other null
        return LoadedYaml(data, locs, errors)
    if not isinstance(base_name, str) or not base_name.strip():
        errors.append(ConfigError(reader.display, line, "extends", "expected the path of a base profile"))
        return LoadedYaml(data, locs, errors, incomplete=True)
    base_path = (path.parent / base_name).resolve()
    if base_path in (*_chain, path):
        chain = " -> ".join(_display(p) for p in (*_chain, path, base_path))
        errors.append(ConfigError(reader.display, line, "extends", f"circular extends: {chain}"))
        return LoadedYaml(data, locs, errors, incomplete=True)
    if not base_path.is_file():
        what = "is a directory" if base_path.is_dir() else "not found"
        errors.append(ConfigError(reader.display, line, "extends", f"base profile {base_name} {what}"))
        return LoadedYaml(data, locs, errors, incomplete=True)
    base = _load(base_path, (*_chain, path))
    if base.data is None:
        return LoadedYaml(data, locs, base.errors + errors, incomplete=True)
    merged_locs = dict(base.locations)
    merged = _merge(base.data, data, (), merged_locs, locs)
    return LoadedYaml(merged, merged_locs, base.errors + errors, base.incomplete)
