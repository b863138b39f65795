"""The Flask application of the branch web, built around one running branch.

Blueprints, one module each: :mod:`.auth` (login, sessions, CSRF), :mod:`.status` (status page and
``/api/status``), :mod:`.console` (the client-manager console and its live stream), :mod:`.audit_page`
(the auditor's view) and :mod:`.api` (the token-authenticated query API with its OpenAPI document).
Server-rendered HTML and a little plain JavaScript: no front-end build step.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from flask import Flask, Response, g, redirect, request, url_for
from flask_babel import Babel  # type: ignore[import-untyped]  # no stubs, no py.typed

from .. import i18n
from ..config.profile import Profile
from ..i18n import _
from ..model import Staff
from ..permissions import Permission
from ..storage.audit import AuditLog
from . import auth, words
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


def request_locale() -> str:
    """The language of this request's page and messages: the signed-in account's own choice, else
    the branch's (``branch.locale``), else the best the browser asks for that vipsense speaks, else
    Simplified Chinese."""
    who = auth.viewer()
    if who is not None and who.user.locale in i18n.LOCALES:
        return who.user.locale
    branch = auth.web().profile.branch.locale
    if branch in i18n.LOCALES:
        return branch
    for name, _quality in request.accept_languages:  # best first
        found = i18n.normalise(name)
        if found:
            return found
    return i18n.DEFAULT_LOCALE


def _enter_locale() -> None:
    """Core messages made during the request (``vipsense.i18n._``) in the page's language."""
    using = i18n.using(request_locale())
    using.__enter__()
    g.i18n_using = using


def _leave_locale(exc: BaseException | None) -> None:
    using = g.pop("i18n_using", None)
    if using is not None:
        with contextlib.suppress(ValueError):  # a context var reset in another context: nothing to undo
            using.__exit__(None, None, None)


def _filters(app: Flask, ctx: Any) -> None:
    """Dates, times and numbers as the viewer's language writes them, in the branch's zone."""
    zone = ctx.profile.tz

    def when(ts: float | None) -> str:
        return i18n.format_datetime(ts, zone) if ts else ""

    def day(ts: float | None) -> str:
        return i18n.format_date(ts, zone) if ts else ""

    def clock(ts: float | None) -> str:
        return i18n.format_time(ts, zone) if ts else ""

    def number(value: float | None) -> str:
        return i18n.format_number(value) if value is not None else ""

    def by_name(items: Any, attribute: str | None = None) -> list[Any]:
        """People as a Chinese list orders them: by pinyin (李 before 王), Latin names among them."""

        def key(item: Any) -> tuple[str, str]:
            value = item.get(attribute) if attribute and isinstance(item, dict) else item
            return i18n.name_key(str(value or ""))

        return sorted(items or (), key=key)

    app.jinja_env.filters.update(
        datetime=when, date=day, time=clock, number=number, tier=words.tier_name, by_name=by_name
    )


def prepare_app(app: Flask, ctx: Any, max_content_length: int = 64 * 1024) -> None:
    """What every vipsense web app shares, the branch's and the centre's (:mod:`vipsense.centreweb`):
    the session cookie and its key, the request's language, the templates' gettext, filters and
    globals, the CSRF check, the security headers and the error pages.

    ``ctx`` is a :class:`WebContext` or one that answers the same: ``profile.branch`` (``id``,
    ``name``, ``timezone``, ``locale``), ``profile.data_dir``, ``profile.tz``, ``settings``,
    ``users``, ``audit``, ``staff`` and ``extensions``.  The caller registers its blueprints and
    its home page ``home``."""
    app.secret_key = secret_key(ctx.profile.data_dir)
    app.config.update(
        SESSION_COOKIE_NAME="vipsense_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=ctx.settings.tls is not None,
        MAX_CONTENT_LENGTH=max_content_length,
        JSON_SORT_KEYS=False,
        BABEL_TRANSLATION_DIRECTORIES=str(i18n.CATALOGUES),
        BABEL_DEFAULT_DOMAIN=i18n.DOMAIN,
        BABEL_DOMAIN=i18n.DOMAIN,  # the key Flask-Babel 4 reads (BABEL_DEFAULT_DOMAIN is the older name)
        BABEL_DEFAULT_LOCALE=i18n.DEFAULT_LOCALE,
        BABEL_DEFAULT_TIMEZONE=ctx.profile.branch.timezone,
    )
    app.extensions["vipsense"] = ctx
    Babel(app, locale_selector=i18n.current, timezone_selector=lambda: ctx.profile.branch.timezone)
    # The templates' _, gettext and ngettext are vipsense's own, over the same catalogue in the
    # request's language (set by _enter_locale): Flask-Babel looks the catalogue up under the name
    # Babel gives the locale (zh_Hans_CN), not under the zh_CN the catalogue is kept as, and would
    # show English.  Newstyle: the values a message is formatted with are escaped.
    app.jinja_env.install_gettext_callables(  # type: ignore[attr-defined]  # the i18n extension's
        i18n.gettext, i18n.ngettext, newstyle=True
    )
    app.jinja_env.globals.update(csrf_token=auth.csrf_token, viewer=auth.viewer, Permission=Permission)
    app.jinja_env.globals.update(words.GLOBALS)
    app.before_request(_enter_locale)  # first: a refusal by the CSRF check is in the viewer's language
    app.before_request(auth.check_csrf)
    app.teardown_request(_leave_locale)
    app.context_processor(
        lambda: {
            "branch_name": ctx.profile.branch.name,
            "branch_zone": ctx.profile.branch.timezone,
            "html_lang": i18n.HTML_LANG[i18n.current()],
            "locale": i18n.current(),
            "language_names": i18n.LANGUAGE_NAMES,
        }
    )
    _filters(app, ctx)

    @app.after_request
    def headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if ctx.settings.tls is not None:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    @app.errorhandler(404)
    def not_found(exc: Exception) -> Any:
        return auth.refuse(404, _("no such page"))

    @app.errorhandler(405)
    def not_allowed(exc: Any) -> Any:
        response = auth.refuse(405, _("method not allowed"))
        allow = exc.get_response().headers.get("Allow") if hasattr(exc, "get_response") else None
        if allow:
            response.headers["Allow"] = allow  # RFC 9110: a 405 says which methods would do
        return response

    @app.errorhandler(413)
    def too_large(exc: Exception) -> Any:
        return auth.refuse(413, _("request too large"))

    @app.errorhandler(500)
    def broken(exc: Exception) -> Any:
        return auth.refuse(500, _("internal error; the branch log has the details"))


def create_app(ctx: WebContext) -> Flask:
    app = Flask(__name__, static_folder="static", template_folder="templates")
    prepare_app(app, ctx)

    from . import audit_page, console, jscatalogue, query_api, status

    for module in (auth, status, console, audit_page, query_api, jscatalogue):
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

    return app
