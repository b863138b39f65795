"""Turn loaded YAML into frozen attrs classes, collecting every error instead of stopping at one.

Supported field types: attrs classes, ``str``, ``int``, ``float``, ``bool``, :class:`Duration`,
:class:`Secret`, :class:`SerialPort`, ``datetime.date``, enums, ``Literal``, ``X | None``, ``list[X]``,
``tuple[X, ...]`` and ``dict[str, X]``.  Unknown keys are errors with a "did you mean".  A settings class
may add checks with attrs validators; their ``ValueError`` message is reported at the class's key path.
A :class:`SerialPort` whose device does not exist here is a warning, not an error.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import enum
import math
import types
import typing
from typing import Any

import attrs
import yaml

from .errors import ConfigError, ConfigWarning
from .types import Duration, Secret, SerialPort
from .yamlload import INVALID, KeyPath, LoadedYaml

__all__ = ["INVALID", "Structurer", "closest", "suggest"]


def closest(word: str, choices: typing.Iterable[str]) -> str | None:
    """The choice ``word`` is most probably a misspelling of, if any is close enough."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def suggest(word: str, choices: typing.Iterable[str]) -> str:
    meant = closest(word, choices)
    return f"; did you mean {meant!r}?" if meant else ""


def _type_name(tp: Any) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        Duration: "a duration such as 2s",
        Secret: "a secret",
        SerialPort: "a serial port such as /dev/ttyUSB0 or socket://host:port",
        dt.date: "a date such as 2027-12-31",
    }
    if tp in names:
        return names[tp]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(m.value for m in tp)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return "a list"
    if origin is dict or attrs.has(tp):
        return "a mapping of keys"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    return getattr(tp, "__name__", str(tp))


class Structurer:
    def __init__(self, loaded: LoadedYaml) -> None:
        self.loaded = loaded
        self.errors: list[ConfigError] = []
        self.warnings: list[ConfigError] = []  #: problems that do not stop the branch

    def error(self, path: KeyPath, message: str) -> Any:
        self.errors.append(self.loaded.error(path, message))
        return INVALID

    def warn(self, path: KeyPath, message: str) -> None:
        err = self.loaded.error(path, message)
        self.warnings.append(ConfigWarning(err.file, err.line, err.path, err.message))

    def structure(self, value: Any, tp: Any, path: KeyPath) -> Any:
        if value is INVALID:  # already reported where it came from
            return INVALID
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if tp is Any:
            return value
        if origin in (typing.Union, types.UnionType):
            inner = [a for a in args if a is not type(None)]
            if value is None and len(inner) < len(args):
                return None
            return self.structure(value, inner[0], path) if len(inner) == 1 else value
        if value is None:
            return self.error(path, f"a value is required here ({_type_name(tp)})")
        if isinstance(value, Secret) and tp is not Secret:
            return self._from_secret(value, tp, path)
        if origin is typing.Literal:
            if value in args:
                return value
            allowed = ", ".join(repr(a) for a in args)
            return self.error(
                path, f"expected one of {allowed}, got {value!r}{suggest(str(value), map(str, args))}"
            )
        if origin in (list, tuple):
            if isinstance(value, str) or not isinstance(value, list):
                return self.error(path, f"expected a list, got {value!r}")
            item_tp = args[0] if args else Any
            items = [self.structure(v, item_tp, (*path, i)) for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
        if origin is dict:
            if not isinstance(value, dict):
                return self.error(path, f"expected a mapping, got {value!r}")
            return {k: self.structure(v, args[1], (*path, k)) for k, v in value.items()}
        if attrs.has(tp):
            return self.structure_attrs(value, tp, path)
        if tp is Duration:
            try:
                return Duration.parse(value)
            except ValueError as exc:
                return self.error(path, str(exc))
        if tp is Secret:
            return value if isinstance(value, Secret) else Secret(str(value))
        if tp is SerialPort:
            if not isinstance(value, str) or not value.strip():
                return self.error(path, f"expected {_type_name(SerialPort)}, got {value!r}")
            port = SerialPort(value.strip())
            problem = port.missing_device()
            if problem:  # the device may be plugged in later: a warning, not an error
                self.warn(path, problem)
            return port
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            try:
                return tp(value)
            except ValueError:
                choices = [m.value for m in tp]
                return self.error(
                    path,
                    f"expected one of {', '.join(choices)}, got {value!r}{suggest(str(value), choices)}",
                )
        if tp is bool:
            if isinstance(value, bool):
                return value
            return self.error(path, f"expected true or false, got {value!r}")
        if tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            return self.error(path, f"expected an integer, got {value!r}")
        if tp is float:
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                return float(value)
            return self.error(path, f"expected a number, got {value!r}")
        if tp is str:
            if isinstance(value, str):
                return value
            if isinstance(value, int | float) and not isinstance(value, bool):
                return str(value)
            return self.error(path, f"expected a string, got {value!r}")
        if tp is dt.date:
            if isinstance(value, dt.datetime):
                return value.date()
            if isinstance(value, dt.date):
                return value
            try:
                return dt.date.fromisoformat(str(value))
            except ValueError:
                return self.error(path, f"expected a date such as 2027-12-31, got {value!r}")
        return self.error(path, f"cannot read a value of type {tp!r} (a bug in its settings class)")

    def structure_fields(
        self, value: Any, cls: type, path: KeyPath, also_known: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """Each field of ``cls`` structured on its own: a failed or missing field is ``INVALID``,
        an absent optional one gets its default.  Lets callers go on checking the valid parts.

        ``also_known`` are keys the caller handles itself (an item's ``id``, ``type``...): they are
        not reported as unknown, and are suggested and listed with the fields."""
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping of keys, got {value!r}")
            return INVALID
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in attrs.fields(cls) if f.init}
        known = [*also_known, *(name for name in fields if name not in also_known)]
        meant: set[str] = set()  #: keys that a misspelt key probably meant: not also "missing"
        for key in value:
            if key not in fields and key not in also_known:
                close = closest(str(key), known)
                if close is not None and close not in value:
                    meant.add(close)
                listed = ", ".join(known) or "none"
                self.error((*path, key), f"unknown key{suggest(str(key), known)} (known keys: {listed})")
        out: dict[str, Any] = {}
        for name, field in fields.items():
            if name in value:
                out[name] = self.structure(value[name], hints.get(name, Any), (*path, name))
                checked = field.validator is None or out[name] is INVALID
                if not checked and not self._validate(field, out[name], (*path, name)):
                    out[name] = INVALID
            elif field.default is attrs.NOTHING:
                if name not in meant:  # else the misspelt key's error already says what to write
                    self.error(path, f"missing required key {name!r}")
                out[name] = INVALID
            elif isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
                out[name] = field.default.factory()
            else:
                out[name] = field.default
        return out

    def structure_attrs(self, value: Any, cls: type, path: KeyPath, also_known: tuple[str, ...] = ()) -> Any:
        before = len(self.errors)
        fields = self.structure_fields(value, cls, path, also_known)
        if fields is INVALID or len(self.errors) > before or any(v is INVALID for v in fields.values()):
            return INVALID
        try:
            return cls(**fields)
        except (ValueError, TypeError) as exc:
            return self.error(path, str(exc))

    def _from_secret(self, secret: Secret, tp: Any, path: KeyPath) -> Any:
        """``!env`` may fill any setting (``"4001"`` means 4001 for a number); ``!secret`` only a
        secret one, since any other setting is printed by ``check --dump`` and in messages.
        Either way the value never appears in an error message."""
        if secret.source.startswith("secret:"):
            return self.error(
                path,
                f"{_type_name(tp)} is expected here, not a secret: !secret values fill only secret settings",
            )
        value: Any = secret.reveal()
        if tp in (int, float, bool) and value.strip():
            with contextlib.suppress(yaml.YAMLError):
                value = yaml.safe_load(value)
        before, warned = len(self.errors), len(self.warnings)
        result = self.structure(value, tp, path)
        variable = secret.source.removeprefix("env:")
        for i in range(before, len(self.errors)):
            err = self.errors[i]
            message = f"the value of {variable} is not {_type_name(tp)}"
            self.errors[i] = attrs.evolve(err, message=message)
        for i in range(warned, len(self.warnings)):  # only a serial port warns: name it, not its value
            message = (
                f"the serial port that {variable} names does not exist on this machine; plug the device in "
                f"before the branch starts, or correct {variable}"
            )
            self.warnings[i] = attrs.evolve(self.warnings[i], message=message)
        return result

    def _validate(self, field: attrs.Attribute, value: Any, path: KeyPath) -> bool:
        """Run one field's attrs validator now, so every bad field is reported at its own key.

        Validators that need the whole instance cannot run here; they still run when the class is
        built, and their error is reported at the class's key path."""
        try:
            field.validator(None, field, value)
        except (ValueError, TypeError) as exc:
            self.error(path, str(exc))
            return False
        except AttributeError:
            pass
        return True
