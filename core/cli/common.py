"""What every command shares: loading a profile with clear errors, the acting member of staff, the
audit log, and the identity store a command works on.

A command says who is acting with ``--as STAFF_ID`` (or ``VIPSENSE_STAFF``); :mod:`vipsense.permissions`
decides what that member's role may do.  The command line trusts the operating-system account that
runs it: it is recorded as the audit source, ``cli:<user>@<host>``.  (Password logins come with the
web interface.)

Each audited action follows one order: the input is checked first (a malformed EPC or date is an error
before anything is attempted, and is not audited); then the actor is checked (unknown staff or a
missing permission is audited as ``denied``); then the action runs and is audited as ``success`` or,
when it fails, as ``error`` with the reason for the failure.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import itertools
import logging
import os
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import attrs

from .. import errors, i18n
from ..api import CardExists, CardRegistry, IdentityStore, StoreUnsupported, UnknownCard
from ..config import ProfileError
from ..config.errors import in_file_order
from ..config.profile import ItemConfig, Profile, load_profile
from ..didyoumean import suggest
from ..i18n import _, format_datetime, format_number, ngettext
from ..identity.records import FieldError, ImportResult
from ..identity.standalone import build
from ..model import Staff
from ..output import Output, display_width, pad
from ..permissions import DOES, Permission, allowed, roles_for
from ..pluginhost import PluginHost
from ..privacy import printable, shown
from ..storage.audit import AuditAction, AuditKeyError, AuditLog, AuditResult, audit_path, open_audit_log
from . import EXIT_FAILED as EXIT_FAILED  # the exit codes: one definition, re-exported for commands
from . import EXIT_OK as EXIT_OK
from . import EXIT_PROFILE as EXIT_PROFILE
from . import EXIT_USAGE as EXIT_USAGE

STAFF_ENV = "VIPSENSE_STAFF"
T = TypeVar("T")


class CliError(Exception):
    """A clear, expected failure: printed as ``vipsense: <message>``, exit 1, never a traceback."""


class Denied(CliError):
    """The actor may not do this; audited as ``denied``."""


class _OutputHandler(logging.Handler):
    """Log lines go above the live status line instead of through it."""

    def __init__(self, output: Output) -> None:
        super().__init__()
        self.output = output

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.output.write(self.format(record))
        except Exception:
            self.handleError(record)


def setup_logging(verbose: int, output: Output | None = None) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    handler: logging.Handler = _OutputHandler(output) if output and output.live else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def plugin_host() -> PluginHost:
    """The installed plugins, through ``vipsense.cli.load_host`` so a test (or a tool embedding the
    command line) can replace that one name."""
    from . import load_host

    return load_host()


def load(path: str, host: PluginHost, data_dir: str | None = None, outcome: str | None = None) -> Profile:
    """The profile, or :class:`CliError` listing every problem in it, one per line in file order,
    and then ``outcome`` (default: nothing was done).  A profile's warnings (a serial device not
    plugged in) are printed on stderr either way."""
    try:
        profile = load_profile(path, host, data_dir=data_dir)
    except ProfileError as exc:
        raise profile_failed(path, exc, outcome) from None
    for warning in profile.warnings:
        print(warning, file=sys.stderr)
    return profile


def profile_failed(path: str | Path, exc: ProfileError, outcome: str | None = None) -> ProfileFailed:
    """Every problem of a profile (a branch's or a centre's), one per line in file order, then how
    many and ``outcome`` (default: nothing was done)."""
    n, w = len(exc.errors), len(exc.warnings)
    lines = [str(e) for e in in_file_order([*exc.errors, *exc.warnings])]
    counted = ngettext("{n} error", "{n} errors", n).format(n=n)
    if w:
        warned = ngettext("{n} warning", "{n} warnings", w).format(n=w)
        counted = _("{errors}, {warnings}").format(errors=counted, warnings=warned)
    lines.append(
        _("{path}: {counted}; {outcome}").format(
            path=path, counted=counted, outcome=outcome or _("nothing was done")
        )
    )
    return ProfileFailed("\n".join(lines))


class ProfileFailed(CliError):
    """Printed as it is: every line already names the file."""


def audit_source() -> str:
    """``cli:<os user>@<host>``: the account the command line trusts (see the module docstring)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = f"uid{os.getuid()}"
    return f"cli:{user}@{socket.gethostname()}"


def join_reason(reason: str, note: str) -> str:
    """The reason given, with what happened appended: ``lost at the airport (error: ...)``."""
    return f"{reason} ({note})" if reason and note else reason or note


@attrs.define
class Act:
    """What one audited action will record; the action may refine ``object`` as it learns more
    (e.g. the customer numbers an ID-number search found)."""

    object: str
    reason: str = ""


#: Failures of the store or the file system that end an action with a clear message.
EXPECTED = (UnknownCard, CardExists, StoreUnsupported, sqlite3.Error, OSError, ValueError)


class Session:
    """One command's profile, plugins, audit log and actor.  Use as a context manager: it closes the
    stores it opened and the audit log."""

    def __init__(self, args: Any) -> None:
        self.host = plugin_host()
        self.profile = load(args.profile, self.host, getattr(args, "data_dir", None))
        self.staff_id: str = (getattr(args, "as_", None) or os.environ.get(STAFF_ENV) or "").strip()
        self.staff: Staff | None = next((s for s in self.profile.staff if s.id == self.staff_id), None)
        self.source = audit_source()
        self._audit: AuditLog | None = None
        self._stores: list[IdentityStore] = []

    @property
    def audit(self) -> AuditLog:
        if self._audit is None:
            try:
                self._audit = open_audit_log(self.profile)
            except (OSError, sqlite3.Error, AuditKeyError) as exc:
                raise CliError(
                    _("cannot open the audit log {path}: {error}").format(
                        path=audit_path(self.profile), error=exc
                    )
                ) from None
        return self._audit

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        for store in self._stores:
            with contextlib.suppress(Exception):
                store.close()
        if self._audit is not None:
            self._audit.close()

    # -- who acts ---------------------------------------------------------------------------------

    @property
    def actor(self) -> str:
        return self.staff_id or "(none)"  # the audit log's actor: stays as written

    @property
    def role(self) -> str:
        return self.staff.role.value if self.staff else ""

    def record(self, action: AuditAction, object: str, result: AuditResult, reason: str = "") -> None:
        self.audit.append(
            self.actor, self.role, self.profile.branch.id, action, object, self.source, result, reason=reason
        )

    def authorize(self, permission: Permission, action: AuditAction, act: Act) -> Staff:
        """The acting member of staff, or :class:`Denied` (audited) if they are unknown or may not."""
        problem = ""
        if not self.staff_id:
            may = [f"{s.id} ({s.role.value})" for s in self.profile.staff if allowed(s.role, permission)]
            problem = _(
                "say who is acting: --as STAFF_ID names you, a member of the profile's staff: whose role "
                "may {does} ({who}); or set {variable}"
            ).format(
                does=DOES[permission],
                who=", ".join(may) or _("nobody in this profile may"),
                variable=STAFF_ENV,
            )
        elif self.staff is None:
            ids = [s.id for s in self.profile.staff]
            problem = _("unknown staff id {staff!r}: not in the staff: of {profile}{suggestion}").format(
                staff=self.staff_id, profile=self.profile.source.name, suggestion=suggest(self.staff_id, ids)
            )
        elif not allowed(self.staff.role, permission):
            problem = _("{staff} ({role}) may not {does} ({permission} needs {roles})").format(
                staff=self.staff_id,
                role=self.staff.role.value,
                does=DOES[permission],
                permission=permission.value,
                roles=_(" or ").join(roles_for(permission)),
            )
        if problem:
            self.record(action, act.object, AuditResult.DENIED, join_reason(act.reason, f"denied: {problem}"))
            raise Denied(problem)
        assert self.staff is not None, "no staff is a problem, raised above"
        return self.staff

    @contextlib.contextmanager
    def act(
        self, permission: Permission, action: AuditAction, object: str, reason: str = ""
    ) -> Iterator[Act]:
        """Authorize, run the body, and audit the outcome: ``success``, ``denied`` (:class:`Denied`
        raised inside, e.g. no consent) or ``error`` (any failure, re-raised as :class:`CliError` when
        it is an expected one)."""
        act = Act(object, reason)
        self.authorize(permission, action, act)
        try:
            yield act
        except Denied as exc:
            self.record(action, act.object, AuditResult.DENIED, join_reason(act.reason, f"denied: {exc}"))
            raise
        except CliError as exc:
            self.record(action, act.object, AuditResult.ERROR, join_reason(act.reason, f"error: {exc}"))
            raise
        except EXPECTED as exc:
            message = describe(exc)
            self.record(action, act.object, AuditResult.ERROR, join_reason(act.reason, f"error: {message}"))
            raise CliError(message) from None
        except BaseException as exc:
            self.record(action, act.object, AuditResult.ERROR, join_reason(act.reason, f"error: {exc!r}"))
            raise
        self.record(action, act.object, AuditResult.SUCCESS, act.reason)

    # -- stores -----------------------------------------------------------------------------------

    def _build(self, cfg: ItemConfig) -> IdentityStore:
        try:
            return build(self.host, self.profile, cfg)
        except Exception as exc:
            raise CliError(
                _("store {id} ({type}) cannot start: {error}").format(
                    id=cfg.id, type=cfg.type, error=describe(exc)
                )
            ) from None

    def _first_registry(self, fallback: bool) -> tuple[ItemConfig, IdentityStore] | None:
        """The first store that is a card registry (built, not opened); with ``fallback`` the first
        store when none is."""
        first: tuple[ItemConfig, IdentityStore] | None = None
        for cfg in self.profile.stores:
            store = self._build(cfg)
            if isinstance(store, CardRegistry):
                return cfg, store
            first = first or (cfg, store)
        return first if fallback else None

    def store(self, store_id: str | None = None, registry: bool = True) -> Any:
        """The store ``--store`` names, else the profile's first card registry; opened, and closed with
        the session.  ``registry=False`` (look-ups) accepts any identity store, and defaults to the
        first store when none is a registry."""
        ids = [s.id for s in self.profile.stores]
        if store_id is not None:
            cfg = next((s for s in self.profile.stores if s.id == store_id), None)
            if cfg is None:
                raise CliError(
                    _("no store has id {store!r}{suggestion} (store ids: {ids})").format(
                        store=store_id, suggestion=suggest(store_id, ids), ids=", ".join(ids)
                    )
                )
            store = self._build(cfg)
            if registry and not isinstance(store, CardRegistry):
                raise CliError(
                    _("store {id} ({type}) is not a card registry: it cannot issue or change cards").format(
                        id=cfg.id, type=cfg.type
                    )
                )
        else:
            found = self._first_registry(fallback=not registry)
            if found is None:
                raise CliError(
                    _(
                        "no store of {profile} is a card registry (stores: {ids}); name one with --store"
                    ).format(profile=self.profile.source.name, ids=", ".join(ids))
                )
            cfg, store = found
        try:
            store.open()
        except Exception as exc:
            raise CliError(
                _("store {id} ({type}) cannot be opened: {error}").format(
                    id=cfg.id, type=cfg.type, error=describe(exc)
                )
            ) from None
        self._stores.append(store)
        return store


def describe(exc: BaseException) -> str:
    """An exception as one line for people: a system error (database, file) names its type, anything
    else is its message alone (:func:`vipsense.errors.describe`)."""
    return errors.describe(exc, typed=isinstance(exc, sqlite3.Error | OSError))


def now() -> float:
    return time.time()


def when(at: float | None, tz: ZoneInfo) -> str:
    """A time for people, on the branch's clock (``tz``) to the minute, as their language writes it
    (``2026年12月7日 10:36``), or ``-``."""
    return format_datetime(at, tz) if at is not None else "-"


def checked(parse: Callable[..., T], *args: Any) -> T:
    """``parse(*args)`` with a :class:`vipsense.identity.records.FieldError` turned into a clear CLI error."""
    try:
        return parse(*args)
    except FieldError as exc:
        raise CliError(str(exc)) from None


def table(head: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    """Rows as aligned text columns under ``head``, by the width a terminal gives each character (a
    Chinese name takes two columns per character), not by how many characters it has.  Every cell is
    printed through :func:`vipsense.privacy.printable`: data from a store or a file cannot send a
    control sequence to the terminal, nor break a row in two."""
    cells = [[printable(str(x)) for x in line] for line in (head, *rows)]
    widths = [max(display_width(x) for x in col) for col in zip(*cells, strict=False)]
    return ["  ".join(pad(x, w) for x, w in zip(line, widths, strict=True)).rstrip() for line in cells]


def labelled(fields: Iterable[tuple[str, Any]], width: int) -> list[str]:
    """``  label:    value`` lines, the values aligned at ``width`` terminal columns (a Chinese label
    takes two a character), each value printable (see :func:`table`)."""
    return [f"  {pad(name + ':', width)}{printable(str(value))}" for name, value in fields]


def add_common(parser: argparse.ArgumentParser, store: bool = True) -> None:
    """The arguments every profile command takes: the profile, who acts, the data and the store."""
    parser.add_argument("profile", help=profile_help())
    parser.add_argument(
        "--as",
        dest="as_",
        metavar="STAFF_ID",
        help=_("the member of staff acting (default: ${variable})").format(variable=STAFF_ENV),
    )
    parser.add_argument("--data-dir", help=data_dir_help())
    if store:
        parser.add_argument(
            "--store", metavar="ID", help=_("the identity store to use (default: the first card registry)")
        )


def profile_help() -> str:
    """The help of every command's PROFILE argument."""
    return _("the branch profile (YAML)")


def data_dir_help() -> str:
    """The help of every command's ``--data-dir``."""
    return _("use this data directory instead of the profile's")


#: Rows per registry call (one transaction each) in an import: a failure loses at most one batch, and
#: SQLite writes 50,000 rows at a time half again as fast as 10,000 (measured on a million customers).
BATCH = 50_000
PROGRESS_EVERY = 10_000  #: rows read between progress updates


def batches(rows: Iterable[T], size: int = BATCH) -> Iterator[list[T]]:
    it = iter(rows)
    while batch := list(itertools.islice(it, size)):
        yield batch


def import_summary(result: ImportResult, kind: str) -> str:
    """``5 cards imported (3 unchanged), 1 rejected``: unchanged rows were not written again.
    ``kind`` is ``cards`` or ``customers``."""
    n = result.upserted + result.unchanged
    if kind == "cards":
        imported = ngettext("{n} card imported", "{n} cards imported", n)
    else:
        imported = ngettext("{n} customer imported", "{n} customers imported", n)
    summary = imported.format(n=format_number(n))
    if result.unchanged:
        summary = _("{imported} ({unchanged} unchanged)").format(
            imported=summary, unchanged=format_number(result.unchanged)
        )
    return _("{imported}, {rejected} rejected").format(
        imported=summary, rejected=format_number(result.rejected)
    )


def audit_summary(result: ImportResult, kind: str) -> str:
    """The import's summary as the audit log records it: in English whoever runs it, so that the
    log reads the same to every auditor and to grep."""
    with i18n.using("en"):
        return import_summary(result, kind)


def report_import(result: ImportResult, kind: str) -> int:
    """An import's outcome for people: rejected rows by line on stderr; exit 1 if any was rejected."""
    rows = ngettext("{n} row", "{n} rows", result.rows).format(n=format_number(result.rows))
    print(_("{summary} of {rows}").format(summary=import_summary(result, kind), rows=rows))
    for r in result.reasons:  # a reason may quote a bad value: printable, and any number in it masked
        print("  " + _("line {line}: {reason}").format(line=r.line, reason=shown(r.reason)), file=sys.stderr)
    more = result.rejected - len(result.reasons)
    if more > 0:
        message = ngettext("... and {n} more rejected row", "... and {n} more rejected rows", more)
        print("  " + message.format(n=format_number(more)), file=sys.stderr)
    return EXIT_FAILED if result.rejected else EXIT_OK
