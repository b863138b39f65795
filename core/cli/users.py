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

from ..config.types import Duration
from ..model import Role
from ..permissions import STAFF_ROLES
from ..storage.audit import AuditAction, AuditResult, open_audit_log
from ..web.users import DEFAULT_TOKEN_FIELDS, MIN_PASSWORD, TOKEN_FIELDS, AccountError, UserStore, users_path
from . import help_of
from .common import EXIT_OK, CliError, audit_source, load, plugin_host, when


class _Accounts:
    def __init__(self, args: argparse.Namespace) -> None:
        self.profile = load(args.profile, plugin_host(), getattr(args, "data_dir", None))
        self.store = UserStore(users_path(self.profile.data_dir))
        self.audit = open_audit_log(self.profile)
        self.source = audit_source()

    def __enter__(self) -> _Accounts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close()
        self.audit.close()

    def record(self, what: str, result: AuditResult = AuditResult.SUCCESS, reason: str = "") -> None:
        actor = self.source.split(":", 1)[1].split("@", 1)[0]
        self.audit.append(
            actor,
            "",
            self.profile.branch.id,
            AuditAction.PERMISSION_CHANGE,
            what,
            self.source,
            result,
            reason=reason,
        )


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CliError("no terminal to ask for the password on: pipe it in with --password-stdin")
    print(f"A password needs at least {MIN_PASSWORD} characters.", file=sys.stderr)
    first = getpass.getpass("New password: ")
    if len(first) < MIN_PASSWORD:  # said before the second prompt, not after it
        raise CliError(f"a password needs at least {MIN_PASSWORD} characters; nothing was changed")
    if first != getpass.getpass("Again: "):
        raise CliError("the two passwords differ; nothing was changed")
    return first


def _again(args: argparse.Namespace, command: str) -> str:
    """The profile and --data-dir as the user gave them, for hints that name a next command."""
    where = f" --data-dir {args.data_dir}" if getattr(args, "data_dir", None) else ""
    return f"vipsense {command} {args.profile}{where}"


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"one of {', '.join(r.value for r in Role)}") from None


def cmd_add(args: argparse.Namespace) -> int:
    with _Accounts(args) as a:
        role: Role = args.role
        staff = {s.id: s for s in a.profile.staff}
        if role in STAFF_ROLES:
            member = staff.get(args.name)
            if member is None:
                raise CliError(
                    f"a {role.value} account is named after its member of staff: {args.name!r} is not in the"
                    f" staff: of {a.profile.source.name} (add them there first)"
                )
            if member.role is not role:
                raise CliError(f"{args.name} is a {member.role.value} in the profile, not a {role.value}")
        elif args.name in staff:
            raise CliError(f"{args.name!r} is a member of staff; give the {role.value} account another name")
        try:
            user = a.store.add(args.name, role, None if args.ldap else _password(args), ldap=args.ldap)
        except AccountError as exc:
            a.record(f"user {args.name}: add as {role.value}", AuditResult.ERROR, str(exc))
            raise CliError(str(exc)) from None
        a.record(f"user {user.username}: added as {role.value}" + (" (LDAP login)" if args.ldap else ""))
        how = ", password checked by the directory" if args.ldap else ""
        print(f"added {user.username} ({role.value}){how}")
    return EXIT_OK


def _change(args: argparse.Namespace, what: str) -> int:
    with _Accounts(args) as a:
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
        print(f"{args.name}: {done[what]}" + (f"; {ended} sessions ended" if ended else ""))
    return EXIT_OK


def cmd_logout_all(args: argparse.Namespace) -> int:
    """End every session (of one account, or of all): for a stolen laptop, or a suspected breach."""
    with _Accounts(args) as a:
        if args.name is not None and a.store.get(args.name) is None:
            raise CliError(f"no account {args.name!r}")
        ended = a.store.end_sessions(args.name)
        whose = f"user {args.name}" if args.name else "every account"
        a.record(f"{whose}: all sessions ended ({ended})")
        print(f"{whose}: {ended} sessions ended")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    with _Accounts(args) as a:
        now = time.time()
        users = a.store.list()
        if not users:
            print(f"no accounts yet: {_again(args, 'users add')} NAME --role admin")
        sessions: dict[str, int] = {}
        for session in a.store.sessions():
            sessions[session.username] = sessions.get(session.username, 0) + 1
        for u in users:
            state = "disabled" if u.disabled else "waiting" if u.locked_until > now else "active"
            last = when(u.last_login, a.profile.tz) if u.last_login else "never"
            how = "ldap" if u.ldap else "password"
            print(
                f"{u.username:<20} {u.role.value:<15} {state:<9} {how:<9} last login {last}"
                f"  sessions {sessions.get(u.username, 0)}"
            )
    return EXIT_OK


def cmd_token_add(args: argparse.Namespace) -> int:
    fields = tuple(f.strip() for f in args.fields.split(",") if f.strip())
    unknown = [f for f in fields if f not in TOKEN_FIELDS]
    if unknown:
        raise CliError(f"unknown field {unknown[0]!r}; the fields are {', '.join(TOKEN_FIELDS)}")
    expires = None
    if args.expires is not None:
        try:
            expires = float(Duration.parse(args.expires))
        except ValueError:
            raise CliError(f"--expires {args.expires!r}: give a time such as 90d, 12h or 30m") from None
        if expires <= 0:
            raise CliError("--expires must be longer than 0s, e.g. 90d")
    with _Accounts(args) as a:
        try:
            token = a.store.add_token(args.name, fields, args.per_minute, expires_in=expires)
        except AccountError as exc:
            raise CliError(str(exc)) from None
        until = f", expires {when(time.time() + expires, a.profile.tz)}" if expires else ""
        a.record(f"token {args.name}: added, fields {','.join(fields)}, {args.per_minute}/min{until}")
        print(f"token for {args.name} (shown once; store it in that system's secret store){until}:")
        print(token)
    return EXIT_OK


def cmd_token_list(args: argparse.Namespace) -> int:
    with _Accounts(args) as a:
        tokens = a.store.tokens()
        if not tokens:
            print(f"no tokens yet: {_again(args, 'tokens add')} NAME --fields customer_no,name,tier")
        now = time.time()
        for t in tokens:
            state = "revoked" if t.revoked_at else "expired" if t.expired(now) else "active"
            expires = when(t.expires_at, a.profile.tz) if t.expires_at else "never"
            used = when(t.last_used_at, a.profile.tz) if t.last_used_at else "never"
            print(
                f"{t.name:<24} {state:<8} {t.per_minute:>5}/min  expires {expires}  last used {used}"
                f"  fields {','.join(t.fields)}"
            )
    return EXIT_OK


def cmd_token_revoke(args: argparse.Namespace) -> int:
    with _Accounts(args) as a:
        try:
            a.store.revoke_token(args.name)
        except AccountError as exc:
            raise CliError(str(exc)) from None
        a.record(f"token {args.name}: revoked")
        print(f"token {args.name}: revoked")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser("users", help=help_of("users"))
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help)
        p.add_argument("profile", help="the branch profile (YAML)")
        p.add_argument("--data-dir", help="use this data directory instead of the profile's")
        return p

    p = action("add", "add an account (staff roles: named after the member of staff)")
    p.add_argument("name")
    p.add_argument("--role", type=_role, required=True, help=", ".join(r.value for r in Role))
    p.add_argument("--ldap", action="store_true", help="check the password with the profile's web.ldap")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(func=cmd_add)
    p = action("list", "list the accounts")
    p.set_defaults(func=cmd_list)
    for name, help in (
        ("passwd", "set a new password"),
        ("disable", "stop an account logging in (its sessions end at once)"),
        ("enable", "let a disabled account log in again"),
        ("unlock", "let an account log in at once after wrong passwords (clears its waits)"),
    ):
        p = action(name, help)
        p.add_argument("name")
        if name == "passwd":
            p.add_argument(
                "--password-stdin", action="store_true", help="read the password from standard input"
            )
        p.set_defaults(func=lambda args, what=name: _change(args, what))
    p = action("logout-all", "end every session of the web at once: of NAME, or of everyone")
    p.add_argument("name", nargs="?", help="only this account's sessions (default: everyone's)")
    p.set_defaults(func=cmd_logout_all)

    tokens = sub.add_parser("tokens", help=help_of("tokens"))
    tactions = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = tactions.add_parser("add", help="make a token for one system (printed once)")
    p.add_argument("profile")
    p.add_argument("name", help="the system that uses it, e.g. crm")
    p.add_argument(
        "--fields",
        default=",".join(DEFAULT_TOKEN_FIELDS),
        help=f"customer fields it may read (default {','.join(DEFAULT_TOKEN_FIELDS)}; "
        f"of {', '.join(TOKEN_FIELDS)})",
    )
    p.add_argument("--per-minute", type=int, default=60, help="calls a minute (default 60)")
    p.add_argument("--expires", metavar="TIME", help="refuse it after this long, e.g. 90d (default: never)")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_token_add)
    p = tactions.add_parser("list", help="list the tokens")
    p.add_argument("profile")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_token_list)
    p = tactions.add_parser("revoke", help="revoke a token")
    p.add_argument("profile")
    p.add_argument("name")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_token_revoke)
