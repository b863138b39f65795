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
import enum
import math
import types
import typing
from collections.abc import Callable
from typing import Any

import attrs
import yaml

from ..didyoumean import closest, suggest
from ..i18n import _, lazy_gettext
from .errors import ConfigError, ConfigWarning
from .types import Duration, Secret, SerialPort
from .yamlload import INVALID, KeyPath, LoadedYaml

__all__ = ["INVALID", "Structurer", "closest", "suggest"]


#: What a value of each type is called in a message, in the language in force when it is shown.
_TYPE_NAMES = {
    str: lazy_gettext("a string"),
    int: lazy_gettext("an integer"),
    float: lazy_gettext("a number"),
    bool: lazy_gettext("true or false"),
    Duration: lazy_gettext("a duration such as 2s"),
    Secret: lazy_gettext("a secret"),
    SerialPort: lazy_gettext("a serial port such as /dev/ttyUSB0 or socket://host:port"),
    dt.date: lazy_gettext("a date such as 2027-12-31"),
}


def _type_name(tp: Any) -> str:
    if tp in _TYPE_NAMES:
        return str(_TYPE_NAMES[tp])
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _("one of {choices}").format(choices=", ".join(m.value for m in tp))
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return _("a list")
    if origin is dict or attrs.has(tp):
        return _("a mapping of keys")
    if origin is typing.Literal:
        return _("one of {choices}").format(choices=", ".join(map(str, typing.get_args(tp))))
    return getattr(tp, "__name__", str(tp))


class Structurer:
    def __init__(self, loaded: LoadedYaml) -> None:
        self.loaded = loaded
        self.errors: list[ConfigError] = []
        self.warnings: list[ConfigError] = []  #: problems that do not stop the branch
        #: the "missing required key" errors among ``errors``: a profile whose base could not be read
        #: leaves out those of the top level, since the base would have supplied the keys
        self.missing_keys: list[ConfigError] = []

    def error(self, path: KeyPath, message: str) -> Any:
        self.errors.append(self.loaded.error(path, message))
        return INVALID

    def warn(self, path: KeyPath, message: str) -> None:
        err = self.loaded.error(path, message)
        self.warnings.append(ConfigWarning(err.file, err.line, err.path, err.message))

    def structure(self, value: Any, tp: Any, path: KeyPath) -> Any:
        """``value`` read as ``tp``, or ``INVALID`` after reporting why not at ``path``."""
        if value is INVALID:  # already reported where it came from
            return INVALID
        if tp is Any:
            return value
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            return _structure_optional(self, value, tp, path)
        if value is None:
            return self.error(
                path, _("a value is required here ({expected})").format(expected=_type_name(tp))
            )
        if isinstance(value, Secret) and tp is not Secret:
            return self._from_secret(value, tp, path)
        return _handler_for(tp, origin)(self, value, tp, path)

    def structure_fields(
        self, value: Any, cls: type, path: KeyPath, also_known: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """Each field of ``cls`` structured on its own: a failed or missing field is ``INVALID``,
        an absent optional one gets its default.  Lets callers go on checking the valid parts.

        ``also_known`` are keys the caller handles itself (an item's ``id``, ``type``...): they are
        not reported as unknown, and are suggested and listed with the fields."""
        if not isinstance(value, dict):
            self.error(path, _("expected a mapping of keys, got {value!r}").format(value=value))
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
                listed = ", ".join(known) or _("none")
                message = _("unknown key{suggestion} (known keys: {keys})")
                self.error((*path, key), message.format(suggestion=suggest(str(key), known), keys=listed))
        out: dict[str, Any] = {}
        for name, field in fields.items():
            if name in value:
                out[name] = self.structure(value[name], hints.get(name, Any), (*path, name))
                checked = field.validator is None or out[name] is INVALID
                if not checked and not self._validate(field, out[name], (*path, name)):
                    out[name] = INVALID
            elif field.default is attrs.NOTHING:
                if name not in meant:  # else the misspelt key's error already says what to write
                    self.error(path, _("missing required key {key!r}").format(key=name))
                    self.missing_keys.append(self.errors[-1])
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
            message = _("{expected} is expected here, not a secret: !secret values fill only secret settings")
            return self.error(path, message.format(expected=_type_name(tp)))
        value: Any = secret.reveal()
        if tp in (int, float, bool) and value.strip():
            with contextlib.suppress(yaml.YAMLError):
                value = yaml.safe_load(value)
        before, warned = len(self.errors), len(self.warnings)
        result = self.structure(value, tp, path)
        variable = secret.source.removeprefix("env:")
        for i in range(before, len(self.errors)):
            err = self.errors[i]
            message = _("the value of {variable} is not {expected}").format(
                variable=variable, expected=_type_name(tp)
            )
            self.errors[i] = attrs.evolve(err, message=message)
        for i in range(warned, len(self.warnings)):  # only a serial port warns: name it, not its value
            message = _(
                "the serial port that {variable} names does not exist on this machine; plug the device "
                "in before the branch starts, or correct {variable}"
            ).format(variable=variable)
            self.warnings[i] = attrs.evolve(self.warnings[i], message=message)
        return result

    def _validate(self, field: attrs.Attribute, value: Any, path: KeyPath) -> bool:
        """Run one field's attrs validator now, so every bad field is reported at its own key.

        Validators that need the whole instance cannot run here; they still run when the class is
        built, and their error is reported at the class's key path."""
        if field.validator is None:
            return True
        try:
            field.validator(None, field, value)
        except (ValueError, TypeError) as exc:
            self.error(path, str(exc))
            return False
        except AttributeError:
            pass
        return True


#: How one value becomes one type: ``handler(structurer, value, tp, path)`` returns the value read,
#: or reports the problem at ``path`` and returns ``INVALID``.  Looked up by the type's origin
#: (``list[X]``...), then attrs classes, then the exact type, then enums (cattrs' dispatch).
Handler = Callable[["Structurer", Any, Any, KeyPath], Any]


def _structure_optional(st: Structurer, value: Any, tp: Any, path: KeyPath) -> Any:
    """``X | None``: None when allowed, else the value read as ``X``; a wider union is taken as is."""
    args = typing.get_args(tp)
    inner = [a for a in args if a is not type(None)]
    if value is None and len(inner) < len(args):
        return None
    return st.structure(value, inner[0], path) if len(inner) == 1 else value


def _structure_literal(st: Structurer, value: Any, tp: Any, path: KeyPath) -> Any:
    args = typing.get_args(tp)
    if value in args:
        return value
    allowed = ", ".join(repr(a) for a in args)
    message = _("expected one of {choices}, got {value!r}{suggestion}")
    return st.error(
        path, message.format(choices=allowed, value=value, suggestion=suggest(str(value), map(str, args)))
    )


def _structure_sequence(st: Structurer, value: Any, tp: Any, path: KeyPath) -> Any:
    """``list[X]`` and ``tuple[X, ...]``: YAML writes both as a list."""
    if isinstance(value, str) or not isinstance(value, list):
        return st.error(path, _("expected a list, got {value!r}").format(value=value))
    args = typing.get_args(tp)
    item_tp = args[0] if args else Any
    items = [st.structure(v, item_tp, (*path, i)) for i, v in enumerate(value)]
    return tuple(items) if typing.get_origin(tp) is tuple else items


def _structure_dict(st: Structurer, value: Any, tp: Any, path: KeyPath) -> Any:
    if not isinstance(value, dict):
        return st.error(path, _("expected a mapping, got {value!r}").format(value=value))
    value_tp = typing.get_args(tp)[1]
    return {k: st.structure(v, value_tp, (*path, k)) for k, v in value.items()}


def _structure_attrs(st: Structurer, value: Any, tp: Any, path: KeyPath) -> Any:
    return st.structure_attrs(value, tp, path)


def _structure_duration(st: Structurer, value: Any, tp: Any, path: KeyPath) -> Any:
    try:
        return Duration.parse(value)
    except ValueError as exc:
        return st.error(path, str(exc))


def _structure_secret(st: Structurer, value: Any, tp: Any, path: KeyPath) -> Any:
    return value if isinstance(value, Secret) else Secret(str(value))


def _structure_serial_port(st: Structurer, value: Any, tp: Any, path: KeyPath) -> Any:
    if not isinstance(value, str) or not value.strip():
        message = _("expected {expected}, got {value!r}")
        return st.error(path, message.format(expected=_type_name(SerialPort), value=value))
    port = SerialPort(value.strip())
    problem = port.missing_device()
    if problem:  # the device may be plugged in later: a warning, not an error
        st.warn(path, problem)
    return port


def _structure_enum(st: Structurer, value: Any, tp: Any, path: KeyPath) -> Any:
    try:
        return tp(value)
    except ValueError:
        choices = [m.value for m in tp]
        message = _("expected one of {choices}, got {value!r}{suggestion}")
        return st.error(
            path,
            message.format(choices=", ".join(choices), value=value, suggestion=suggest(str(value), choices)),
        )


def _structure_bool(st: Structurer, value: Any, tp: Any, path: KeyPath) -> Any:
    if isinstance(value, bool):
        return value
    return st.error(path, _("expected true or false, got {value!r}").format(value=value))


def _structure_int(st: Structurer, value: Any, tp: Any, path: KeyPath) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return st.error(path, _("expected an integer, got {value!r}").format(value=value))


def _structure_float(st: Structurer, value: Any, tp: Any, path: KeyPath) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return st.error(path, _("expected a number, got {value!r}").format(value=value))


def _structure_str(st: Structurer, value: Any, tp: Any, path: KeyPath) -> Any:
    """A string; a number is taken as its text (``pin: 1234``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return st.error(path, _("expected a string, got {value!r}").format(value=value))


def _structure_date(st: Structurer, value: Any, tp: Any, path: KeyPath) -> Any:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        return st.error(path, _("expected a date such as 2027-12-31, got {value!r}").format(value=value))


def _structure_unknown(st: Structurer, value: Any, tp: Any, path: KeyPath) -> Any:
    message = _("cannot read a value of type {type!r} (a bug in its settings class)")
    return st.error(path, message.format(type=tp))


_BY_ORIGIN: dict[Any, Handler] = {
    typing.Literal: _structure_literal,
    list: _structure_sequence,
    tuple: _structure_sequence,
    dict: _structure_dict,
}
_BY_TYPE: dict[Any, Handler] = {
    Duration: _structure_duration,
    Secret: _structure_secret,
    SerialPort: _structure_serial_port,
    bool: _structure_bool,
    int: _structure_int,
    float: _structure_float,
    str: _structure_str,
    dt.date: _structure_date,
}


def _handler_for(tp: Any, origin: Any) -> Handler:
    if origin is not None:
        return _BY_ORIGIN.get(origin, _structure_unknown)
    if attrs.has(tp):
        return _structure_attrs
    if tp in _BY_TYPE:
        return _BY_TYPE[tp]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _structure_enum
    return _structure_unknown
