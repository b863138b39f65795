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
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import attrs

from .. import errors
from ..api import CardExists, CardRegistry, IdentityStore, StoreUnsupported, UnknownCard
from ..config import ProfileError
from ..config.errors import in_file_order
from ..config.profile import ItemConfig, Profile, load_profile
from ..didyoumean import suggest
from ..identity.records import FieldError, ImportResult
from ..identity.standalone import build
from ..model import Staff
from ..output import Output, display_width, pad
from ..permissions import DOES, Permission, allowed, roles_for
from ..pluginhost import PluginHost
from ..privacy import printable, shown
from ..storage.audit import AuditAction, AuditKeyError, AuditLog, AuditResult, audit_path, open_audit_log
from ..timezone import local
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


def load(
    path: str, host: PluginHost, data_dir: str | None = None, outcome: str = "nothing was done"
) -> Profile:
    """The profile, or :class:`CliError` listing every problem in it, one per line in file order.
    A profile's warnings (a serial device not plugged in) are printed on stderr either way."""
    try:
        profile = load_profile(path, host, data_dir=data_dir)
    except ProfileError as exc:
        n, w = len(exc.errors), len(exc.warnings)
        lines = [str(e) for e in in_file_order([*exc.errors, *exc.warnings])]
        counted = f"{n} error{'s' if n != 1 else ''}" + (f", {w} warning{'s' if w != 1 else ''}" if w else "")
        lines.append(f"{path}: {counted}; {outcome}")
        raise ProfileFailed("\n".join(lines)) from None
    for warning in profile.warnings:
        print(warning, file=sys.stderr)
    return profile


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
                raise CliError(f"cannot open the audit log {audit_path(self.profile)}: {exc}") from None
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
        return self.staff_id or "(none)"

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
            problem = (
                f"say who is acting: --as STAFF_ID names you, a member of the profile's staff: whose role "
                f"may {DOES[permission]} ({', '.join(may) or 'nobody in this profile may'}); "
                f"or set {STAFF_ENV}"
            )
        elif self.staff is None:
            ids = [s.id for s in self.profile.staff]
            problem = (
                f"unknown staff id {self.staff_id!r}: not in the staff: of {self.profile.source.name}"
                f"{suggest(self.staff_id, ids)}"
            )
        elif not allowed(self.staff.role, permission):
            problem = (
                f"{self.staff_id} ({self.staff.role.value}) may not {DOES[permission]}"
                f" ({permission.value} needs {' or '.join(roles_for(permission))})"
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
            raise CliError(f"store {cfg.id} ({cfg.type}) cannot start: {describe(exc)}") from None

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
                    f"no store has id {store_id!r}{suggest(store_id, ids)} (store ids: {', '.join(ids)})"
                )
            store = self._build(cfg)
            if registry and not isinstance(store, CardRegistry):
                raise CliError(
                    f"store {cfg.id} ({cfg.type}) is not a card registry: it cannot issue or change cards"
                )
        else:
            found = self._first_registry(fallback=not registry)
            if found is None:
                raise CliError(
                    f"no store of {self.profile.source.name} is a card registry (stores: {', '.join(ids)});"
                    " name one with --store"
                )
            cfg, store = found
        try:
            store.open()
        except Exception as exc:
            raise CliError(f"store {cfg.id} ({cfg.type}) cannot be opened: {describe(exc)}") from None
        self._stores.append(store)
        return store


def describe(exc: BaseException) -> str:
    """An exception as one line for people: a system error (database, file) names its type, anything
    else is its message alone (:func:`vipsense.errors.describe`)."""
    return errors.describe(exc, typed=isinstance(exc, sqlite3.Error | OSError))


def now() -> float:
    return time.time()


def when(at: float | None, tz: ZoneInfo) -> str:
    """A time for people, on the branch's clock (``tz``) to the minute, or ``-``."""
    return local(at, tz).strftime("%Y-%m-%d %H:%M") if at is not None else "-"


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


def add_common(parser: argparse.ArgumentParser, store: bool = True) -> None:
    """The arguments every profile command takes: the profile, who acts, the data and the store."""
    parser.add_argument("profile", help="the branch profile (YAML)")
    parser.add_argument(
        "--as", dest="as_", metavar="STAFF_ID", help=f"the member of staff acting (default: ${STAFF_ENV})"
    )
    parser.add_argument("--data-dir", help="use this data directory instead of the profile's")
    if store:
        parser.add_argument(
            "--store", metavar="ID", help="the identity store to use (default: the first card registry)"
        )


#: Rows per registry call (one transaction each) in an import: a failure loses at most one batch, and
#: SQLite writes 50,000 rows at a time half again as fast as 10,000 (measured on a million customers).
BATCH = 50_000
PROGRESS_EVERY = 10_000  #: rows read between progress updates


def batches(rows: Iterable[T], size: int = BATCH) -> Iterator[list[T]]:
    it = iter(rows)
    while batch := list(itertools.islice(it, size)):
        yield batch


def plural(n: int, noun: str) -> str:
    """``1 card``, ``2 cards``: ``noun`` is given in the plural."""
    return f"{n:,} {noun[:-1] if n == 1 else noun}"


def import_summary(result: ImportResult, kind: str) -> str:
    """``5 cards imported (3 unchanged), 1 rejected``: unchanged rows were not written again."""
    unchanged = f" ({result.unchanged:,} unchanged)" if result.unchanged else ""
    imported = plural(result.upserted + result.unchanged, kind)
    return f"{imported} imported{unchanged}, {result.rejected:,} rejected"


def report_import(result: ImportResult, kind: str) -> int:
    """An import's outcome for people: rejected rows by line on stderr; exit 1 if any was rejected."""
    print(f"{import_summary(result, kind)} of {plural(result.rows, 'rows')}")
    for r in result.reasons:  # a reason may quote a bad value: printable, and any number in it masked
        print(f"  line {r.line}: {shown(r.reason)}", file=sys.stderr)
    if result.rejected > len(result.reasons):
        print(f"  ... and {result.rejected - len(result.reasons):,} more rejected rows", file=sys.stderr)
    return EXIT_FAILED if result.rejected else EXIT_OK
