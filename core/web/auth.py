"""Logins, sessions, roles and CSRF for the branch web.

* A session is Flask's signed cookie (HttpOnly, SameSite=Strict, Secure under TLS) holding the user
  name, a CSRF token and the time of the last request.  It ends after ``web.session_timeout`` without
  a request, at logout, and at once when the account is disabled or its role changes.
* :func:`require` guards a view with one permission from :mod:`vipsense.permissions`: no session gives
  401 (JSON, live streams) or a redirect to the login page (pages); a session without the permission
  gives 403.  Every view of the web is guarded, or listed in :data:`PUBLIC`.
* Every POST of a session carries the CSRF token (form field ``csrf_token`` or header
  ``X-CSRF-Token``).  The query API (blueprint ``api``) takes bearer tokens only, never the session
  cookie, so it needs none.
* Logins are audited (``login``, success or denied, with the reason only the audit log sees).
"""

from __future__ import annotations

import functools
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any
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

from ..audit import AuditAction, AuditResult
from ..model import Role, Staff
from ..permissions import DOES, Permission, allowed, roles_for
from .users import User

bp = Blueprint("auth", __name__)

#: endpoints that need no login
PUBLIC = frozenset({"auth.login", "static", "api.openapi"})


@attrs.frozen
class Viewer:
    """Who is looking: the account, its role, and the staff member it is (if a staff role)."""

    user: User
    staff: Staff | None

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


def source() -> str:
    """The audit source of this request."""
    address = request.remote_addr
    tls = web().extensions.get("tls")  # behind the TLS terminator: the client it piped for us
    if tls is not None:
        address = tls.client_of(request.environ.get("REMOTE_PORT")) or address
    return f"web:{address or '?'}"


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
    """The logged-in viewer of this request, checking the session's age and the account's state."""
    if "viewer" in g:
        return g.viewer
    g.viewer = None
    name = session.get("user")
    if not name:
        return None
    ctx = web()
    now = time.time()
    if now - float(session.get("seen", 0)) > float(ctx.settings.session_timeout):
        session.clear()
        g.session_expired = True
        return None
    user = ctx.users.get(name)
    if user is None or user.disabled or user.role.value != session.get("role"):
        session.clear()
        return None
    session["seen"] = now
    g.viewer = Viewer(user, ctx.staff.get(user.username))
    return g.viewer


def wants_json() -> bool:
    if request.path.startswith("/api/") or request.path.endswith("/events"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def refuse(status: int, message: str) -> Response:
    if wants_json():
        response = jsonify({"error": message})
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
                    return refuse(401, "log in first")
                return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
            if not who.may(permission):
                why = (
                    f"{who.username} ({who.role.value}) may not {DOES[permission]}"
                    f" (needs {' or '.join(roles_for(permission))})"
                )
                if denied is not None:
                    target = "/".join(str(v)[:40] for v in (request.view_args or {}).values()) or request.path
                    audit(denied, target, AuditResult.DENIED, f"denied: {why}", viewer=who)
                return refuse(403, why)
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
    if "user" not in session and request.endpoint != "auth.login":
        return None  # no session to ride on: the view's guard refuses the anonymous request
    presented = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
    expected = session.get("csrf", "")
    if not expected or not hmac.compare_digest(str(presented), str(expected)):
        return refuse(
            400, "the form has expired or did not come from this page (CSRF check); reload and try again"
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
        result = ctx.users.login(username, password, ctx.settings.lockout, ctx.ldap_check)
        if result.user is None:
            ctx.audit.append(
                username or "(none)", "", ctx.profile.branch.id, AuditAction.LOGIN, "web", source(),
                AuditResult.DENIED, reason=result.problem,
            )  # fmt: skip
            error = "Wrong user name or password."
            if result.locked:
                error = "Too many wrong passwords: this account is locked for a while. Ask an administrator."
            return render_template("login.html", error=error, next=request.form.get("next", "")), 401
        session.clear()  # a fresh session (and CSRF token) at every login: no fixation
        session.permanent = False
        session["user"] = result.user.username
        session["role"] = result.user.role.value
        session["seen"] = time.time()
        csrf_token()
        who = Viewer(result.user, ctx.staff.get(result.user.username))
        audit(AuditAction.LOGIN, "web", AuditResult.SUCCESS, viewer=who)
        return redirect(_safe_next(request.form.get("next")))
    if request.args.get("expired"):
        error = "Your session ended after a period without use. Log in again."
    return render_template("login.html", error=error, next=request.args.get("next", ""))


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    session.clear()
    return redirect(url_for("auth.login"))
