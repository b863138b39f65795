"""Logins, sessions, roles and CSRF for the branch web.

* A session is a record in ``users.sqlite3`` (:mod:`.users`: user, role, created, last seen, source
  address); Flask's signed cookie (HttpOnly, SameSite=Strict, Secure under TLS) carries only its random
  id and the CSRF token.  It ends after ``web.session_timeout`` without a request, ``web.session_lifetime``
  after the login whatever the use, at logout, at a password change, when the account is disabled or
  its role changes, and at ``vipsense users logout-all``: the record is deleted, so a cookie copied
  before is refused from then on (pen test point 3).  An open live stream ends with its session.
* :func:`require` guards a view with one permission from :mod:`vipsense.permissions`: no session gives
  401 (JSON, live streams) or a redirect to the login page (pages); a session without the permission
  gives 403.  Every view of the web is guarded, or listed in :data:`PUBLIC`.
* Every POST of a session carries the CSRF token (form field ``csrf_token`` or header
  ``X-CSRF-Token``).  The query API (blueprint ``api``) takes bearer tokens only, never the session
  cookie, so it needs none.
* Logins are throttled per address and account (:meth:`.users.UserStore.login`), and every failure
  gets the same page, status and work; they are audited (``login``, success or denied, with the reason
  only the audit log sees).
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import ipaddress
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import attrs
from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from .. import i18n
from ..i18n import _
from ..model import Role, Staff
from ..permissions import DOES, Permission, allowed, roles_for
from ..storage.audit import AuditAction, AuditResult
from .users import User

bp = Blueprint("auth", __name__)

#: endpoints that need no login
PUBLIC = frozenset({"auth.login", "static", "api.openapi", "jscatalogue.catalogue"})
#: the stable, English ``code`` of each refusal's JSON beside its translated ``error`` message
CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    429: "rate_limited",
    500: "internal_error",
    501: "not_supported",
    503: "unavailable",
}


@attrs.frozen
class Viewer:
    """Who is looking: the account, its role, and the staff member it is (if a staff role)."""

    user: User
    staff: Staff | None
    session_id: str = attrs.field(default="", repr=False)  #: to check the session again (live streams)

    @property
    def username(self) -> str:
        return self.user.username

    @property
    def role(self) -> Role:
        return self.user.role

    def may(self, permission: Permission) -> bool:
        return allowed(self.role, permission)


def web() -> Any:
    """The :class:`~vipsense.web.app.WebContext` of the running app."""
    return current_app.extensions["vipsense"]


_MADE = threading.Lock()
T = TypeVar("T")


def made_once(name: str, make: Callable[[Any], T]) -> T:
    """This app's ``extensions[name]``, made by ``make(web context)`` on first use, once: the
    live feed, the look-up limits, the refusal guard and the audit page's chain check."""
    ctx = web()
    made = ctx.extensions.get(name)
    if made is None:
        with _MADE:
            made = ctx.extensions.get(name)
            if made is None:
                made = ctx.extensions[name] = make(ctx)
    return made


def address() -> str:
    """The client's address: the connection's, or behind one of ``web.trusted_proxies`` the last
    address that proxy appended to ``X-Forwarded-For`` (anything a client wrote there itself comes
    before it).  Other clients' forwarded headers are ignored: anyone can write one."""
    remote = request.remote_addr or "?"
    if remote in web().settings.trusted_proxies:
        forwarded = [a.strip() for a in request.headers.get("X-Forwarded-For", "").split(",") if a.strip()]
        if forwarded:
            with contextlib.suppress(ValueError):
                return str(ipaddress.ip_address(forwarded[-1]))
    return remote


def source() -> str:
    """The audit source of this request."""
    return f"web:{address()}"


def audit(
    action: AuditAction, object: str, result: AuditResult, reason: str = "", viewer: Viewer | None = None
) -> None:
    viewer = viewer or g.get("viewer")
    ctx = web()
    ctx.audit.append(
        viewer.username if viewer else "(none)",
        viewer.role.value if viewer else "",
        ctx.profile.branch.id,
        action,
        object,
        source(),
        result,
        reason=reason,
    )


def viewer() -> Viewer | None:
    """The logged-in viewer of this request: its session record must exist and be neither idle nor
    too old, and the account must be enabled and of the role it logged in with."""
    if "viewer" in g:
        return g.viewer
    g.viewer = None
    session_id = session.get("sid")
    if not session_id or not isinstance(session_id, str):
        return None
    ctx = web()
    found, why = ctx.users.session(
        session_id, float(ctx.settings.session_timeout), float(ctx.settings.session_lifetime), time.time()
    )
    if found is None:
        session.clear()
        g.session_expired = bool(why)
        return None
    user = ctx.users.get(found.username)
    if user is None or user.disabled or user.role.value != found.role:
        ctx.users.end_session(session_id)
        session.clear()
        return None
    g.viewer = Viewer(user, ctx.staff.get(user.username), session_id)
    return g.viewer


def still_valid(who: Viewer) -> Callable[[], bool]:
    """For work that outlives its request (a live stream): is ``who``'s session still on?"""
    ctx = web()
    idle, lifetime = float(ctx.settings.session_timeout), float(ctx.settings.session_lifetime)

    def check() -> bool:
        # an open stream is use: its keep-alives keep the session from going idle, never past its
        # lifetime, and it ends at once when the session is ended
        found, _ = ctx.users.session(who.session_id, idle, lifetime, time.time())
        user = ctx.users.get(who.username) if found is not None else None
        return user is not None and not user.disabled and user.role.value == found.role

    return check


def wants_json() -> bool:
    if request.path.startswith("/api/") or request.path.endswith("/events"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def refuse(status: int, message: str) -> Response:
    """A refusal: JSON ``{"error": message, "code": ...}`` for scripts, else the error page; ``message``
    is already in the viewer's language, ``code`` stays English for programs."""
    if wants_json():
        response = jsonify({"error": message, "code": CODES.get(status, "error")})
        response.status_code = status
        return response
    response = Response(render_template("error.html", status=status, message=message), status=status)
    return response


def require(permission: Permission, denied: AuditAction | None = None) -> Callable:
    """Guard a view: 401 or a redirect to the login page without a session, 403 without the
    permission.  With ``denied``, a refusal is audited as that action (e.g. a refused unmask)."""

    def wrap(view: Callable) -> Callable:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            who = viewer()
            if who is None:
                if wants_json():
                    return refuse(401, _("log in first"))
                expired = 1 if g.get("session_expired") else None
                return redirect(url_for("auth.login", next=request.full_path.rstrip("?"), expired=expired))
            if not who.may(permission):
                why = (
                    f"{who.username} ({who.role.value}) may not {DOES[permission]}"
                    f" (needs {' or '.join(roles_for(permission))})"
                )  # the audit log's words, in English like the rest of it
                if denied is not None:
                    target = "/".join(str(v)[:40] for v in (request.view_args or {}).values()) or request.path
                    audit(denied, target, AuditResult.DENIED, f"denied: {why}", viewer=who)
                shown = _("{staff} ({role}) may not {does} ({permission} needs {roles})").format(
                    staff=who.username,
                    role=who.role.value,
                    does=DOES[permission],
                    permission=permission.value,
                    roles=_(" or ").join(roles_for(permission)),
                )  # the command line's words for the same refusal
                return refuse(403, shown)
            return view(*args, **kwargs)

        guarded.permission = permission  # type: ignore[attr-defined]  # the route x role tests read it
        return guarded

    return wrap


# -- CSRF --------------------------------------------------------------------------------------------


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def check_csrf() -> Response | None:
    """Before every request: a POST with a session cookie must carry the session's CSRF token."""
    if request.method in ("GET", "HEAD", "OPTIONS") or request.blueprint == "api":
        return None  # the query API authenticates by bearer token only: a cookie gives it no authority
    if "sid" not in session and request.endpoint != "auth.login":
        return None  # no session to ride on: the view's guard refuses the anonymous request
    presented = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
    expected = session.get("csrf", "")
    if not expected or not hmac.compare_digest(str(presented), str(expected)):
        return refuse(
            400, _("the form has expired or did not come from this page (CSRF check); reload and try again")
        )
    return None


# -- login and logout --------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect."""
    if not target:
        return url_for("home")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("home")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    ctx = web()
    error = ""
    if request.method == "POST":
        username = request.form.get("username", "").strip()[:64]
        password = request.form.get("password", "")
        result = ctx.users.login(username, password, ctx.settings.lockout, ctx.ldap_check, source=address())
        if result.user is None:
            ctx.audit.append(
                username or "(none)", "", ctx.profile.branch.id, AuditAction.LOGIN, "web", source(),
                AuditResult.DENIED, reason=result.problem,
            )  # fmt: skip
            # one answer to every failure, whatever it was (pen test point 6): no oracle
            longest = max(1, round(float(ctx.settings.lockout.lock_for) / 60))
            error = _(
                "Wrong user name or password. After repeated failures each new try must wait longer,"
                " up to {minutes} minutes."
            ).format(minutes=longest)
            return render_template("login.html", error=error, next=request.form.get("next", "")), 401
        now = time.time()
        old = session.get("sid")
        if isinstance(old, str):
            ctx.users.end_session(old)  # a login replaces this browser's session: no fixation
        session.clear()
        session.permanent = False
        ctx.users.purge_sessions(
            float(ctx.settings.session_timeout), float(ctx.settings.session_lifetime), now
        )
        session["sid"] = ctx.users.start_session(result.user, address(), now)
        csrf_token()
        who = Viewer(result.user, ctx.staff.get(result.user.username))
        audit(AuditAction.LOGIN, "web", AuditResult.SUCCESS, viewer=who)
        return redirect(_safe_next(request.form.get("next")))
    if request.args.get("expired"):
        error = _("Your session ended (a period without use, or its longest time). Log in again.")
    return render_template("login.html", error=error, next=request.args.get("next", ""))


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    """Ends the session record, so the cookie is worthless wherever a copy of it is."""
    session_id = session.get("sid")
    if isinstance(session_id, str):
        web().users.end_session(session_id)
    session.clear()
    return redirect(url_for("auth.login"))


# -- the account's language ----------------------------------------------------------------------------


@bp.route("/account/language", methods=["POST"])
def language() -> Any:
    """The signed-in account chooses the language it reads the web in (``locale``: ``zh_CN``, ``en``,
    or empty for the branch's); audited like the other account changes.  Any role may: it is the
    account's own setting, and a signed-in session with its CSRF token is all it needs."""
    who = viewer()
    if who is None:
        return redirect(url_for("auth.login"))
    wanted = request.form.get("locale", "").strip()
    if wanted and wanted not in i18n.LOCALES:
        audit(AuditAction.PERMISSION_CHANGE, f"user {who.username}", AuditResult.DENIED,
              f"language {wanted[:20]!r}: not one vipsense speaks")  # fmt: skip
        return refuse(400, _("choose one of the languages offered"))
    web().users.set_locale(who.username, wanted or None)
    audit(AuditAction.PERMISSION_CHANGE, f"user {who.username}", AuditResult.SUCCESS,
          f"language {wanted or 'branch default'}")  # fmt: skip
    return redirect(_safe_next(request.form.get("next")))
