"""``vipsense centre``: the VIP service centre (客服中心) from its profile.

* ``centre serve PROFILE`` (or ``centre PROFILE``) opens the centre's database, brings it up to
  date (migrations, the coming months' partitions), writes the demo branches' history when the
  profile has ``demo:`` (once), and serves the centre's web (the board, search, the ingest API the
  branches report to, the audit page) with the branch web's server, until SIGTERM or Ctrl-C.
* ``centre check PROFILE`` validates the profile, opening nothing.
* ``centre branches add|list|revoke PROFILE``: each branch's key (printed once, when made).
* ``centre anchors PROFILE BRANCH_ID [--out FILE]``: the audit chain heads the centre holds for a
  branch, one JSON line each, for ``vipsense audit verify PROFILE --centre-heads FILE`` at the branch.
* ``centre users add|list|passwd|disable|enable|unlock|logout-all PROFILE``: the centre web's
  accounts, the same commands as ``vipsense users`` over the centre's data directory; an account's
  role is ``head_office``, ``branch_manager`` (with ``--branch``: they see that branch only),
  ``auditor`` or ``admin``.

Every change is recorded in the centre's own audit log, with the OS account as its source.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import __version__
from ..centre import accounts
from ..centre.database import Database
from ..centre.profile import CentreProfile, centre_key, load_centre_profile, open_centre_audit
from ..config.errors import ProfileError
from ..crypto import CipherError
from ..i18n import _
from ..model import Role
from ..output import pad
from ..shutdown import Shutdown
from ..storage.audit import AuditAction, AuditResult
from . import help_of
from .common import EXIT_FAILED, EXIT_OK, CliError, audit_source, profile_failed, when
from .users import Accounts, _change, add_account, cmd_list, cmd_logout_all


def _profile_help() -> str:
    return _("the centre profile (YAML)")


def _data_dir_help() -> str:
    return _("use this data directory instead of the profile's")


def load(args: argparse.Namespace, outcome: str | None = None) -> CentreProfile:
    """The centre profile, or :class:`ProfileFailed` listing every problem, one a line, in file order."""
    return load_centre(args.profile, getattr(args, "data_dir", None), outcome)


def load_centre(path: str | Path, data_dir: str | Path | None, outcome: str | None = None) -> CentreProfile:
    try:
        return load_centre_profile(path, data_dir)
    except ProfileError as exc:
        raise profile_failed(path, exc, outcome) from None


def open_centre(profile: CentreProfile) -> Database:
    """The centre's database, migrated and with the coming months' partitions; a clear error else."""
    from ..centreweb.service import CentreFailed, CentreService

    try:
        return CentreService(profile).open_database()
    except CentreFailed as exc:
        raise CliError(str(exc)) from None


@contextlib.contextmanager
def _centre(args: argparse.Namespace) -> Iterator[tuple[CentreProfile, Database]]:
    profile = load(args)
    database = open_centre(profile)
    try:
        yield profile, database
    finally:
        database.close()


def _record(
    profile: CentreProfile, action: AuditAction, what: str, result: AuditResult, reason: str = ""
) -> None:
    """One entry in the centre's audit log, by the OS account running the command."""
    source = audit_source()
    actor = source.split(":", 1)[1].split("@", 1)[0]
    audit = open_centre_audit(profile)
    try:
        audit.append(actor, "", profile.centre.id, action, what, source, result, reason=reason)
    finally:
        audit.close()


# -- serve ---------------------------------------------------------------------------------------------


def _print_demo(profile: CentreProfile) -> Callable[[Any], None]:
    def show(summary: Any) -> None:
        visits = sum(counts.get("visits", 0) for counts in summary.written.values())
        print(
            _("demo history: {visits} visits of {branches} branches over {days} days, in {seconds} s").format(
                visits=visits,
                branches=len(summary.written),
                days=profile.demo.days if profile.demo else 0,
                seconds=f"{summary.seconds:.1f}",
            )
        )

    return show


def cmd_serve(args: argparse.Namespace) -> int:
    from ..centreweb.service import CentreFailed, CentreService

    profile = load(args, outcome=_("nothing was started"))
    service = CentreService(profile, port=args.port)
    service.on_demo = _print_demo(profile)
    try:
        try:
            url = service.start()
        except CentreFailed as exc:
            raise CliError(str(exc)) from None
        assert service.ctx is not None and service.database is not None
        hint = ""
        if not service.ctx.users.list():
            where = f" --data-dir {args.data_dir}" if args.data_dir else ""
            command = f"vipsense centre users add {args.profile}{where} NAME --role head_office"
            hint = _(" (no accounts yet: {command})").format(command=command)
        print(
            _("vipsense {version}: centre {name} ({id}), database {database}").format(
                version=__version__,
                name=profile.centre.name,
                id=profile.centre.id,
                database=service.database.url,
            )
        )
        print(_("Centre web: {url}").format(url=url) + hint, flush=True)
        shutdown = Shutdown()
        with shutdown.handle_signals():
            while not shutdown.wait(0.5):
                if not service.serving:
                    print("vipsense: " + _("the centre's web server stopped"), file=sys.stderr)
                    return EXIT_FAILED
        service.stop()
        print(_("Stopped."))
        return EXIT_OK
    finally:
        service.stop()


# -- check ---------------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from ..centre.database import mask_url

    profile = load(args)
    web = profile.web
    print(
        _("{file}: centre profile OK: {name} ({id}), time zone {zone}").format(
            file=args.profile, name=profile.centre.name, id=profile.centre.id, zone=profile.centre.timezone
        )
    )
    print(_("  database: {url}").format(url=mask_url(profile.database_url)))
    print(_("  data directory: {path}").format(path=profile.data_dir))
    scheme = "https" if web.tls is not None else "http"
    print(_("  web: {url}").format(url=f"{scheme}://{web.bind}:{web.port}/"))
    if profile.centre.key is None:
        print(
            _(
                "  note: no centre.key: the branches' keys are sealed with a key kept in the data directory"
                " ({file}); a real centre sets key: !secret centre_key (vipsense keys new makes one)"
            ).format(file=profile.data_dir / "data.key")
        )
    if profile.demo is not None and profile.demo.branches:
        names = ", ".join(b.id for b in profile.demo.branches)
        print(
            _("  demo: {days} days of history for {branches}").format(days=profile.demo.days, branches=names)
        )
    return EXIT_OK


# -- branches ------------------------------------------------------------------------------------------


def _keys(profile: CentreProfile, database: Database) -> Any:
    from ..centre.keys import BranchKeys

    try:
        return BranchKeys(database, centre_key(profile))
    except CipherError as exc:
        raise CliError(str(exc)) from None


def cmd_branches_add(args: argparse.Namespace) -> int:
    from ..centre.keys import BranchKeyError

    with _centre(args) as (profile, database):
        try:
            key = _keys(profile, database).add(args.branch, args.name, args.timezone)
        except BranchKeyError as exc:
            _record(
                profile,
                AuditAction.CONFIG_CHANGE,
                f"branch {args.branch[:64]}: add",
                AuditResult.ERROR,
                str(exc),
            )
            raise CliError(str(exc)) from None
        _record(profile, AuditAction.CONFIG_CHANGE, f"branch {args.branch}: key issued", AuditResult.SUCCESS)
        print(
            _(
                "branch {branch} ({name}): its key, shown this once; put it in the branch's secrets file"
                " as centre_key and name it in the branch profile (centre: key: !secret centre_key):"
            ).format(branch=args.branch, name=args.name)
        )
        print(key)
    return EXIT_OK


def cmd_branches_list(args: argparse.Namespace) -> int:
    with _centre(args) as (profile, database):
        branches = _keys(profile, database).list()
        if not branches:
            print(
                _("no branches yet: {command}").format(
                    command=f"vipsense centre branches add {args.profile} BRANCH_ID --name NAME"
                )
            )
        for b in branches:
            if b.revoked_at is not None:
                state = _("revoked {time}").format(time=when(b.revoked_at.timestamp(), profile.tz))
            elif not b.has_key:
                state = _("no key")
            else:
                state = _("active")
            heard = when(b.last_heartbeat_at.timestamp(), profile.tz) if b.last_heartbeat_at else _("never")
            print(
                f"{pad(b.branch_id, 22)} {pad(b.name, 20)} {pad(b.timezone, 16)} {pad(state, 12)} "
                + _("last report {time}").format(time=heard)
            )
    return EXIT_OK


def cmd_branches_revoke(args: argparse.Namespace) -> int:
    from ..centre.keys import BranchKeyError

    with _centre(args) as (profile, database):
        try:
            changed = _keys(profile, database).revoke(args.branch)
        except BranchKeyError as exc:
            raise CliError(str(exc)) from None
        if changed:
            _record(
                profile, AuditAction.CONFIG_CHANGE, f"branch {args.branch}: key revoked", AuditResult.SUCCESS
            )
            print(
                _("branch {branch}: revoked; its reports are refused from now on").format(branch=args.branch)
            )
        else:
            print(_("branch {branch}: revoked already").format(branch=args.branch))
    return EXIT_OK


def cmd_anchors(args: argparse.Namespace) -> int:
    """The heads the centre holds for a branch (:mod:`vipsense.centre.anchors`), audited as an export."""
    from sqlalchemy import select

    from ..centre import anchors, schema

    with _centre(args) as (profile, database):
        b = schema.branches.c
        with database.begin() as conn:
            found = conn.execute(
                select(b.audit_alarm, b.audit_alarm_at).where(b.branch_id == args.branch)
            ).first()
        if found is None:
            raise CliError(_("no branch {branch} at this centre").format(branch=args.branch[:64]))
        heads = list(anchors.heads(database, args.branch))
        try:
            if args.out:
                with open(args.out, "w", encoding="utf-8") as out:
                    anchors.write(out, iter(heads))
            else:
                anchors.write(sys.stdout, iter(heads))
        except OSError as exc:
            raise CliError(_("cannot write {file}: {error}").format(file=args.out, error=exc)) from None
        _record(
            profile,
            AuditAction.EXPORT,
            f"branch {args.branch}: audit chain heads",
            AuditResult.SUCCESS,
            f"{len(heads)} heads",
        )
        if args.out:
            print(
                _("{file}: {n} audit chain heads of branch {branch}").format(
                    file=args.out, n=len(heads), branch=args.branch
                ),
                file=sys.stderr,
            )
        if found.audit_alarm:
            print(
                _("branch {branch}: audit alarm since {time}: {alarm}").format(
                    branch=args.branch,
                    time=when(found.audit_alarm_at.timestamp(), profile.tz),
                    alarm=found.audit_alarm,
                ),
                file=sys.stderr,
            )
    return EXIT_OK


# -- users ---------------------------------------------------------------------------------------------


class CentreAccounts(Accounts):
    """The centre web's accounts: the account store and audit log of the centre's data directory."""

    command = "centre users"

    def __init__(self, args: argparse.Namespace) -> None:
        self.profile = load(args)
        try:
            self.profile.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(
                _("cannot use the data directory {path}: {error}").format(
                    path=self.profile.data_dir, error=exc
                )
            ) from None
        super().__init__(
            self.profile.data_dir, open_centre_audit(self.profile), self.profile.centre.id, self.profile.tz
        )


def _centre_role(value: str) -> Role:
    try:
        role = Role(value)
    except ValueError:
        role = None
    if role not in CENTRE_ROLES:
        raise argparse.ArgumentTypeError(
            _("one of {roles}").format(roles=", ".join(r.value for r in CENTRE_ROLES))
        )
    return role


#: the roles of the centre's accounts (see :mod:`vipsense.centreweb.app`)
CENTRE_ROLES = (Role.HEAD_OFFICE, Role.BRANCH_MANAGER, Role.AUDITOR, Role.ADMIN)


def cmd_users_add(args: argparse.Namespace) -> int:
    role: Role = args.role
    if role is Role.BRANCH_MANAGER and not args.branch:
        raise CliError(_("a branch_manager account needs --branch BRANCH_ID: the branch they see"))
    if role is not Role.BRANCH_MANAGER and args.branch:
        raise CliError(
            _("--branch is for branch_manager accounts; a {role} account belongs to no branch").format(
                role=role.value
            )
        )
    with _centre(args) as (_profile, database), CentreAccounts(args) as a:
        if args.branch and not accounts.branch_exists(database, args.branch):
            raise CliError(
                _("no branch {branch} at this centre (vipsense centre branches list shows them)").format(
                    branch=args.branch
                )
            )
        if a.store.get(args.name) is None and role in (Role.HEAD_OFFICE, Role.BRANCH_MANAGER):
            accounts.set_account(database, args.name, args.full_name or args.name, role.value, args.branch)
            try:
                add_account(a, args, role, f", branch {args.branch}" if args.branch else "")
            except BaseException:
                accounts.remove(database, args.name)
                raise
        else:
            add_account(a, args, role)
    return EXIT_OK


#: the actions of ``vipsense centre``; anything else first is a profile: ``centre PROFILE`` serves it
ACTIONS = ("serve", "check", "branches", "anchors", "users")


class _CentreParser(argparse.ArgumentParser):
    """``vipsense centre PROFILE`` is ``vipsense centre serve PROFILE`` (the issue's spelling)."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if args and not args[0].startswith("-") and args[0] not in ACTIONS:
            args = ["serve", *args]
        return super().parse_known_args(args, namespace)


def register(sub: argparse._SubParsersAction) -> None:
    centre = sub.add_parser(
        "centre",
        help=help_of("centre"),
        description=_("vipsense centre PROFILE is short for vipsense centre serve PROFILE."),
    )
    centre.__class__ = _CentreParser  # the subparsers action made it; only its parsing differs
    actions = centre.add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=argparse.ArgumentParser
    )

    def with_profile(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("profile", help=_profile_help())
        p.add_argument("--data-dir", help=_data_dir_help())
        return p

    p = with_profile(
        actions.add_parser("serve", help=_("serve the centre: its board, search, ingest and audit"))
    )
    p.add_argument(
        "--port", type=int, metavar="PORT", help=_("serve the centre's web on this port (0: any free one)")
    )
    p.set_defaults(func=cmd_serve)
    p = with_profile(
        actions.add_parser("check", help=_("validate a centre profile without opening anything"))
    )
    p.set_defaults(func=cmd_check)

    branches = actions.add_parser("branches", help=_("the branches and their keys: add, list, revoke"))
    bactions = branches.add_subparsers(dest="branches_action", required=True, metavar="ACTION")
    p = with_profile(bactions.add_parser("add", help=_("add a branch and make its key (printed once)")))
    p.add_argument("branch", metavar="BRANCH_ID", help=_("the branch's id, as its profile's branch.id"))
    p.add_argument("--name", required=True, help=_("the branch's name, e.g. 上海陆家嘴支行"))
    p.add_argument(
        "--timezone",
        default="Asia/Shanghai",
        metavar="ZONE",
        help=_("the branch's time zone (default Asia/Shanghai)"),
    )
    p.set_defaults(func=cmd_branches_add)
    p = with_profile(bactions.add_parser("list", help=_("list the branches (never their keys)")))
    p.set_defaults(func=cmd_branches_list)
    p = with_profile(bactions.add_parser("revoke", help=_("refuse a branch's reports from now on")))
    p.add_argument("branch", metavar="BRANCH_ID", help=_("the branch whose key is revoked"))
    p.set_defaults(func=cmd_branches_revoke)

    p = with_profile(
        actions.add_parser(
            "anchors", help=_("write the audit chain heads the centre holds for a branch, one JSON line each")
        )
    )
    p.add_argument("branch", metavar="BRANCH_ID", help=_("the branch whose heads are written"))
    p.add_argument("--out", metavar="FILE", help=_("write them to this file (default: standard output)"))
    p.set_defaults(func=cmd_anchors)

    users = actions.add_parser(
        "users", help=_("the centre web's accounts: add, list, passwd, disable, enable")
    )
    uactions = users.add_subparsers(dest="users_action", required=True, metavar="ACTION")
    account = _("the account's name")
    password_stdin = _("read the password from standard input")
    p = with_profile(uactions.add_parser("add", help=_("add an account")))
    p.add_argument("name", help=account)
    p.add_argument("--role", type=_centre_role, required=True, help=", ".join(r.value for r in CENTRE_ROLES))
    p.add_argument("--branch", metavar="BRANCH_ID", help=_("a branch_manager's branch: the one they see"))
    p.add_argument("--full-name", metavar="NAME", help=_("the person's name (default: the account's)"))
    p.add_argument("--ldap", action="store_true", help=_("check the password with the profile's web.ldap"))
    p.add_argument("--password-stdin", action="store_true", help=password_stdin)
    p.set_defaults(func=cmd_users_add)
    p = with_profile(uactions.add_parser("list", help=_("list the accounts")))
    p.set_defaults(func=lambda args: cmd_list(args, CentreAccounts))
    for name, help in (
        ("passwd", _("set a new password")),
        ("disable", _("stop an account logging in (its sessions end at once)")),
        ("enable", _("let a disabled account log in again")),
        ("unlock", _("let an account log in at once after wrong passwords (clears its waits)")),
    ):
        p = with_profile(uactions.add_parser(name, help=help))
        p.add_argument("name", help=account)
        if name == "passwd":
            p.add_argument("--password-stdin", action="store_true", help=password_stdin)
        p.set_defaults(func=lambda args, what=name: _change(args, what, CentreAccounts))
    p = with_profile(
        uactions.add_parser(
            "logout-all", help=_("end every session of the web at once: of NAME, or of everyone")
        )
    )
    p.add_argument("name", nargs="?", help=_("only this account's sessions (default: everyone's)"))
    p.set_defaults(func=lambda args: cmd_logout_all(args, CentreAccounts))


__all__ = ["CENTRE_ROLES", "CentreAccounts", "cmd_serve", "load", "open_centre", "register"]
