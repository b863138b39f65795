"""The Flask application of the branch web, built around one running branch.

Blueprints, one module each: :mod:`.auth` (login, sessions, CSRF), :mod:`.status` (status page and
``/api/status``), :mod:`.console` (the client-manager console and its live stream), :mod:`.audit_page`
(the auditor's view) and :mod:`.api` (the token-authenticated query API with its OpenAPI document).
Server-rendered HTML and a little plain JavaScript: no front-end build step.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from flask import Flask, Response, redirect, url_for

from ..config.profile import Profile
from ..model import Staff
from ..permissions import Permission
from ..storage.audit import AuditLog
from . import auth
from .settings import WebSettings
from .users import UserStore

if TYPE_CHECKING:
    from ..branch import Branch


@attrs.define
class WebContext:
    """What the views need: the branch, its profile, the accounts and the audit log."""

    branch: Branch
    users: UserStore
    settings: WebSettings
    extensions: dict[str, Any] = attrs.Factory(dict)  #: per-blueprint state (live feed, rate limits)

    @property
    def profile(self) -> Profile:
        return self.branch.profile

    @property
    def audit(self) -> AuditLog:
        return self.branch.audit

    @property
    def staff(self) -> dict[str, Staff]:
        return {s.id: s for s in self.profile.staff}

    def ldap_check(self, username: str, password: str) -> bool | None:
        """The directory's answer to ``username``/``password`` (see :mod:`.ldap_login`)."""
        if self.settings.ldap is None:
            return None
        from .ldap_login import ldap_bind

        return ldap_bind(self.settings.ldap, self.profile.profile_dir, username, password)


def secret_key(data_dir: Path) -> bytes:
    """The session-signing key: random, made once per data directory, readable by its owner only."""
    path = data_dir / "web-session.key"
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        key = secrets.token_bytes(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(key.hex())
        return key


SECURITY_HEADERS = {
    # scripts and styles from this site only: an injected <script> in a customer field cannot run
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # personal data stays out of browser and proxy caches
}


def create_app(ctx: WebContext) -> Flask:
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.secret_key = secret_key(ctx.profile.data_dir)
    app.config.update(
        SESSION_COOKIE_NAME="vipsense_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=ctx.settings.tls is not None,
        MAX_CONTENT_LENGTH=64 * 1024,
        JSON_SORT_KEYS=False,
    )
    app.extensions["vipsense"] = ctx
    app.jinja_env.globals.update(csrf_token=auth.csrf_token, viewer=auth.viewer, Permission=Permission)
    app.before_request(auth.check_csrf)
    app.context_processor(lambda: {"branch_name": ctx.profile.branch.name})

    from . import audit_page, console, query_api, status

    for module in (auth, status, console, audit_page, query_api):
        app.register_blueprint(module.bp)

    @app.route("/")
    def home() -> Any:
        who = auth.viewer()
        if who is None:
            return redirect(url_for("auth.login"))
        if who.may(Permission.CONSOLE_VIEW):
            return redirect(url_for("console.page"))
        if who.may(Permission.AUDIT_VIEW):
            return redirect(url_for("audit_page.page"))
        return redirect(url_for("status.page"))

    @app.after_request
    def headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if ctx.settings.tls is not None:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    @app.errorhandler(404)
    def not_found(exc: Exception) -> Any:
        return auth.refuse(404, "no such page")

    @app.errorhandler(405)
    def not_allowed(exc: Any) -> Any:
        response = auth.refuse(405, "method not allowed")
        allow = exc.get_response().headers.get("Allow") if hasattr(exc, "get_response") else None
        if allow:
            response.headers["Allow"] = allow  # RFC 9110: a 405 says which methods would do
        return response

    @app.errorhandler(413)
    def too_large(exc: Exception) -> Any:
        return auth.refuse(413, "request too large")

    @app.errorhandler(500)
    def broken(exc: Exception) -> Any:
        return auth.refuse(500, "internal error; the branch log has the details")

    return app
