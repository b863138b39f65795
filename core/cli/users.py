"""``vipsense users`` and ``vipsense tokens``: the branch web's accounts and the third-party API's tokens.

There is no default account; the first administrator is made here.  ``users logout-all`` ends
sessions of the running web at once (they are records in the same file); so do ``passwd`` and
``disable`` for their account.  These commands act on the data
directory's ``users.sqlite3`` directly, so whoever may run them is whoever the operating system lets
write that file (it is created mode 0600).  Every change is audited as ``permission_change`` with the
OS account as its source.  Passwords are read without echo (twice), or from standard input with
``--password-stdin``, never from the command line.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

from ..config.types import Duration
from ..i18n import _
from ..model import Role
from ..output import pad
from ..permissions import STAFF_ROLES
from ..storage.audit import AuditAction, AuditLog, AuditResult, open_audit_log
from ..timezone import local
from ..web.users import DEFAULT_TOKEN_FIELDS, MIN_PASSWORD, TOKEN_FIELDS, AccountError, UserStore, users_path
from . import help_of
from .common import EXIT_OK, CliError, audit_source, data_dir_help, load, plugin_host, profile_help, when

_A = TypeVar("_A", bound="Accounts")


class Accounts:
    """An account store, the audit log its changes are recorded in, and the site both belong to:
    a branch (:class:`_Accounts`, from its profile) or the centre (``vipsense centre users``)."""

    command = "users"  #: the command that reaches these accounts, for hints ("vipsense users add ...")

    def __init__(self, data_dir: Path, audit: AuditLog, site_id: str, tz: ZoneInfo) -> None:
        self.store = UserStore(users_path(data_dir))
        self.audit = audit
        self.site_id = site_id
        self.tz = tz
        self.source = audit_source()

    def __enter__(self: _A) -> _A:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close()
        self.audit.close()

    def record(self, what: str, result: AuditResult = AuditResult.SUCCESS, reason: str = "") -> None:
        actor = self.source.split(":", 1)[1].split("@", 1)[0]
        self.audit.append(
            actor,
            "",
            self.site_id,
            AuditAction.PERMISSION_CHANGE,
            what,
            self.source,
            result,
            reason=reason,
        )


class _Accounts(Accounts):
    """A branch's accounts, from its profile."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.profile = load(args.profile, plugin_host(), getattr(args, "data_dir", None))
        super().__init__(
            self.profile.data_dir, open_audit_log(self.profile), self.profile.branch.id, self.profile.tz
        )


#: how a command opens the accounts it acts on: a branch's by default
Opener = Callable[[argparse.Namespace], Accounts]


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CliError(_("no terminal to ask for the password on: pipe it in with --password-stdin"))
    print(_("A password needs at least {n} characters.").format(n=MIN_PASSWORD), file=sys.stderr)
    first = getpass.getpass(_("New password: "))
    if len(first) < MIN_PASSWORD:  # said before the second prompt, not after it
        raise CliError(
            _("a password needs at least {n} characters; nothing was changed").format(n=MIN_PASSWORD)
        )
    if first != getpass.getpass(_("Again: ")):
        raise CliError(_("the two passwords differ; nothing was changed"))
    return first


def _again(args: argparse.Namespace, command: str, group: str = "users") -> str:
    """The profile and --data-dir as the user gave them, for hints that name a next command."""
    where = f" --data-dir {args.data_dir}" if getattr(args, "data_dir", None) else ""
    command = command.replace("users", group, 1) if command.startswith("users") else command
    return f"vipsense {command} {args.profile}{where}"


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            _("one of {roles}").format(roles=", ".join(r.value for r in Role))
        ) from None


def cmd_add(args: argparse.Namespace) -> int:
    with _Accounts(args) as a:
        role: Role = args.role
        staff = {s.id: s for s in a.profile.staff}
        if role in STAFF_ROLES:
            member = staff.get(args.name)
            if member is None:
                raise CliError(
                    _(
                        "a {role} account is named after its member of staff: {name!r} is not in the"
                        " staff: of {profile} (add them there first)"
                    ).format(role=role.value, name=args.name, profile=a.profile.source.name)
                )
            if member.role is not role:
                raise CliError(
                    _("{name} is a {role} in the profile, not a {wanted}").format(
                        name=args.name, role=member.role.value, wanted=role.value
                    )
                )
        elif args.name in staff:
            raise CliError(
                _("{name!r} is a member of staff; give the {role} account another name").format(
                    name=args.name, role=role.value
                )
            )
        add_account(a, args, role)
    return EXIT_OK


def add_account(a: Accounts, args: argparse.Namespace, role: Role, note: str = "") -> None:
    """Make the account ``args.name`` with ``role`` (its password asked for, or checked by LDAP),
    audited; ``note`` is appended to the audit entry (e.g. the account's branch)."""
    try:
        user = a.store.add(args.name, role, None if args.ldap else _password(args), ldap=args.ldap)
    except AccountError as exc:
        a.record(f"user {args.name}: add as {role.value}", AuditResult.ERROR, str(exc))
        raise CliError(str(exc)) from None
    a.record(f"user {user.username}: added as {role.value}" + (" (LDAP login)" if args.ldap else "") + note)
    if args.ldap:
        message = _("added {name} ({role}), password checked by the directory")
    else:
        message = _("added {name} ({role})")
    print(message.format(name=user.username, role=role.value))


def _change(args: argparse.Namespace, what: str, opener: Opener = _Accounts) -> int:
    with opener(args) as a:
        ended = 0
        try:
            if what == "passwd":
                ended = a.store.set_password(args.name, _password(args))
            elif what in ("disable", "enable"):
                ended = a.store.set_disabled(args.name, what == "disable")
            else:
                a.store.unlock(args.name)
        except AccountError as exc:
            raise CliError(str(exc)) from None
        done = {
            "passwd": "password changed",
            "disable": "disabled",
            "enable": "enabled",
            "unlock": "unlocked",
        }
        a.record(f"user {args.name}: {done[what]}" + (f", {ended} sessions ended" if ended else ""))
        said = {
            "passwd": _("password changed"),
            "disable": _("disabled"),
            "enable": _("enabled"),
            "unlock": _("unlocked"),
        }[what]
        if ended:
            print(_("{name}: {done}; {n} sessions ended").format(name=args.name, done=said, n=ended))
        else:
            print(_("{name}: {done}").format(name=args.name, done=said))
    return EXIT_OK


def cmd_logout_all(args: argparse.Namespace, opener: Opener = _Accounts) -> int:
    """End every session (of one account, or of all): for a stolen laptop, or a suspected breach."""
    with opener(args) as a:
        if args.name is not None and a.store.get(args.name) is None:
            raise CliError(_("no account {name!r}").format(name=args.name))
        ended = a.store.end_sessions(args.name)
        whose = f"user {args.name}" if args.name else "every account"
        a.record(f"{whose}: all sessions ended ({ended})")  # the audit log's object: stays English
        if args.name:
            print(_("user {name}: {n} sessions ended").format(name=args.name, n=ended))
        else:
            print(_("every account: {n} sessions ended").format(n=ended))
    return EXIT_OK


def cmd_list(args: argparse.Namespace, opener: Opener = _Accounts) -> int:
    with opener(args) as a:
        now = time.time()
        users = a.store.list()
        if not users:
            print(
                _("no accounts yet: {command}").format(
                    command=f"{_again(args, 'users add', a.command)} NAME --role admin"
                )
            )
        sessions: dict[str, int] = {}
        for session in a.store.sessions():
            sessions[session.username] = sessions.get(session.username, 0) + 1
        for u in users:
            state = _("disabled") if u.disabled else _("waiting") if u.locked_until > now else _("active")
            last = when(u.last_login, a.tz) if u.last_login else _("never")
            how = "ldap" if u.ldap else _("password")
            print(
                f"{pad(u.username, 20)} {pad(u.role.value, 15)} {pad(state, 9)} {pad(how, 9)} "
                + _("last login {time}  sessions {n}").format(time=last, n=sessions.get(u.username, 0))
            )
    return EXIT_OK


def cmd_token_add(args: argparse.Namespace) -> int:
    fields = tuple(f.strip() for f in args.fields.split(",") if f.strip())
    unknown = [f for f in fields if f not in TOKEN_FIELDS]
    if unknown:
        raise CliError(
            _("unknown field {field!r}; the fields are {fields}").format(
                field=unknown[0], fields=", ".join(TOKEN_FIELDS)
            )
        )
    expires = None
    if args.expires is not None:
        try:
            expires = float(Duration.parse(args.expires))
        except ValueError:
            raise CliError(
                _("--expires {value!r}: give a time such as 90d, 12h or 30m").format(value=args.expires)
            ) from None
        if expires <= 0:
            raise CliError(_("--expires must be longer than 0s, e.g. 90d"))
    with _Accounts(args) as a:
        try:
            token = a.store.add_token(args.name, fields, args.per_minute, expires_in=expires)
        except AccountError as exc:
            raise CliError(str(exc)) from None
        ends = time.time() + expires if expires else None
        until = f", expires {local(ends, a.tz):%Y-%m-%d %H:%M}" if ends else ""  # the audit log's
        a.record(f"token {args.name}: added, fields {','.join(fields)}, {args.per_minute}/min{until}")
        if ends:
            message = _(
                "token for {name} (shown once; store it in that system's secret store), expires {time}:"
            )
        else:
            message = _("token for {name} (shown once; store it in that system's secret store):")
        print(message.format(name=args.name, time=when(ends, a.tz)))
        print(token)
    return EXIT_OK


def cmd_token_list(args: argparse.Namespace) -> int:
    with _Accounts(args) as a:
        tokens = a.store.tokens()
        if not tokens:
            print(f"no tokens yet: {_again(args, 'tokens add')} NAME --fields customer_no,name,tier")
        now = time.time()
        for t in tokens:
            state = _("revoked") if t.revoked_at else _("expired") if t.expired(now) else _("active")
            expires = when(t.expires_at, a.tz) if t.expires_at else _("never")
            used = when(t.last_used_at, a.tz) if t.last_used_at else _("never")
            print(
                f"{pad(t.name, 24)} {pad(state, 8)} "
                + _("{n}/min  expires {expires}  last used {used}  fields {fields}").format(
                    n=f"{t.per_minute:>5}", expires=expires, used=used, fields=",".join(t.fields)
                )
            )
    return EXIT_OK


def cmd_token_revoke(args: argparse.Namespace) -> int:
    with _Accounts(args) as a:
        try:
            a.store.revoke_token(args.name)
        except AccountError as exc:
            raise CliError(str(exc)) from None
        a.record(f"token {args.name}: revoked")
        print(_("token {name}: revoked").format(name=args.name))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser("users", help=help_of("users"))
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help)
        p.add_argument("profile", help=profile_help())
        p.add_argument("--data-dir", help=data_dir_help())
        return p

    account = _("the account's name")
    password_stdin = _("read the password from standard input")
    p = action("add", _("add an account (staff roles: named after the member of staff)"))
    p.add_argument("name", help=account)
    p.add_argument("--role", type=_role, required=True, help=", ".join(r.value for r in Role))
    p.add_argument("--ldap", action="store_true", help=_("check the password with the profile's web.ldap"))
    p.add_argument("--password-stdin", action="store_true", help=password_stdin)
    p.set_defaults(func=cmd_add)
    p = action("list", _("list the accounts"))
    p.set_defaults(func=cmd_list)
    for name, help in (
        ("passwd", _("set a new password")),
        ("disable", _("stop an account logging in (its sessions end at once)")),
        ("enable", _("let a disabled account log in again")),
        ("unlock", _("let an account log in at once after wrong passwords (clears its waits)")),
    ):
        p = action(name, help)
        p.add_argument("name", help=account)
        if name == "passwd":
            p.add_argument("--password-stdin", action="store_true", help=password_stdin)
        p.set_defaults(func=lambda args, what=name: _change(args, what))
    p = action("logout-all", _("end every session of the web at once: of NAME, or of everyone"))
    p.add_argument("name", nargs="?", help=_("only this account's sessions (default: everyone's)"))
    p.set_defaults(func=cmd_logout_all)

    tokens = sub.add_parser("tokens", help=help_of("tokens"))
    tactions = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = tactions.add_parser("add", help=_("make a token for one system (printed once)"))
    p.add_argument("profile", help=profile_help())
    p.add_argument("name", help=_("the system that uses it, e.g. crm"))
    p.add_argument(
        "--fields",
        default=",".join(DEFAULT_TOKEN_FIELDS),
        help=_("customer fields it may read (default {default}; of {fields})").format(
            default=",".join(DEFAULT_TOKEN_FIELDS), fields=", ".join(TOKEN_FIELDS)
        ),
    )
    p.add_argument("--per-minute", type=int, default=60, help=_("calls a minute (default 60)"))
    p.add_argument(
        "--expires", metavar="TIME", help=_("refuse it after this long, e.g. 90d (default: never)")
    )
    p.add_argument("--data-dir", help=data_dir_help())
    p.set_defaults(func=cmd_token_add)
    p = tactions.add_parser("list", help=_("list the tokens"))
    p.add_argument("profile", help=profile_help())
    p.add_argument("--data-dir", help=data_dir_help())
    p.set_defaults(func=cmd_token_list)
    p = tactions.add_parser("revoke", help=_("revoke a token"))
    p.add_argument("profile", help=profile_help())
    p.add_argument("name", help=_("the system whose token is revoked"))
    p.add_argument("--data-dir", help=data_dir_help())
    p.set_defaults(func=cmd_token_revoke)
