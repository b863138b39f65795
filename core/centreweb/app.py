"""The centre's Flask application, built on the branch web's own pieces.

:func:`vipsense.web.app.prepare_app` gives it what every vipsense web shares (session key and cookie,
the request's language, templates' gettext and filters, CSRF, security headers, error pages), and
the branch web's blueprints :mod:`vipsense.web.auth` (login, logout, the account's language) and
:mod:`vipsense.web.audit_page` (the auditor's view, here of the centre's log) serve it unchanged.
They reach the running site through ``current_app.extensions["vipsense"]``, which is a
:class:`CentreContext` here: it answers what they ask of a branch's
:class:`~vipsense.web.app.WebContext` (``profile.branch`` is the ``centre:`` section, with its id,
name, time zone and language; ``branch.profile.tz``; ``staff`` is empty: centre accounts are no
member of a branch profile's staff), and no more.

Blueprints: ``auth`` and ``audit_page`` (the branch web's), ``ingest_api`` (signed by each branch's
key: no login, no CSRF), ``board`` and ``search``.  Templates: the centre's own folder first (its
``base.html`` with the centre's menu), then the branch web's (``login.html``, ``error.html``,
``audit.html`` extend whichever ``base.html`` comes first).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import attrs
from flask import Flask, redirect, url_for
from jinja2 import ChoiceLoader, FileSystemLoader

from ..centre import accounts
from ..centre.database import Database
from ..centre.profile import CentreProfile
from ..i18n import _
from ..model import Role, Staff
from ..permissions import Permission
from ..storage.audit import AuditLog
from ..web import auth
from ..web.app import prepare_app
from ..web.settings import WebSettings
from ..web.users import UserStore

WEB = Path(__file__).resolve().parent.parent / "web"  #: the branch web's folder: templates, static
#: the largest request body: a branch's batch (the ingest answers 413 to more, without reading it)
MAX_BODY = 4 * 1024 * 1024
#: the centre's own blueprints, each added once its module exists (``vipsense.centreweb.<name>``)
BLUEPRINTS = ("ingest_api", "board", "search")


@attrs.frozen
class _Site:
    """``web().branch`` as the branch web's audit page reads it (``branch.profile.tz``)."""

    profile: CentreProfile


@attrs.define
class CentreContext:
    """What the centre's views need: its profile, database, audit log, branch keys and accounts."""

    profile: CentreProfile
    database: Database
    audit: AuditLog
    users: UserStore
    settings: WebSettings
    keys: Any = None  #: the branches' keys (:mod:`vipsense.centre.keys`), for the ingest
    extensions: dict[str, Any] = attrs.Factory(dict)  #: per-blueprint state (live feed, rate limits)

    @property
    def branch(self) -> _Site:
        return _Site(self.profile)

    @property
    def staff(self) -> dict[str, Staff]:
        """No centre account is a member of a branch profile's staff."""
        return {}

    def branch_of(self, username: str) -> str | None:
        """The branch ``username`` may see (a ``branch_manager``'s own), or None: every branch for
        ``head_office``, none for other roles (the views check the role first)."""
        return accounts.branch_of(self.database, username)

    def ldap_check(self, username: str, password: str) -> bool | None:
        """The directory's answer to ``username``/``password`` (see :mod:`vipsense.web.ldap_login`)."""
        if self.settings.ldap is None:
            return None
        from ..web.ldap_login import ldap_bind

        return ldap_bind(self.settings.ldap, self.profile.profile_dir, username, password)


def _centre_blueprints() -> list[Any]:
    """The centre's own blueprints that exist in this install, in :data:`BLUEPRINTS` order."""
    found = []
    for name in BLUEPRINTS:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise  # the module exists and is broken: say so, never serve without it quietly
            continue
        found.append(module.bp)
    return found


def create_app(ctx: CentreContext) -> Flask:
    app = Flask(__name__, static_folder=str(WEB / "static"), template_folder="templates")
    # the centre's templates first, then the branch web's (login, error, audit pages)
    app.jinja_options = {
        **app.jinja_options,
        "loader": ChoiceLoader([app.create_global_jinja_loader(), FileSystemLoader(str(WEB / "templates"))]),
    }
    prepare_app(app, ctx, max_content_length=MAX_BODY)
    # cookies are per host, not per port: beside a branch web on the same host (the demo's
    # 127.0.0.1), a cookie of the same name would log each out of the other
    app.config["SESSION_COOKIE_NAME"] = "vipsense_centre_session"
    app.jinja_env.globals.update(has_page=lambda endpoint: endpoint in app.view_functions)

    from ..web import audit_page, jscatalogue

    for bp in (auth.bp, audit_page.bp, jscatalogue.bp, *_centre_blueprints()):
        app.register_blueprint(bp)

    @app.route("/")
    def home() -> Any:
        who = auth.viewer()
        if who is None:
            return redirect(url_for("auth.login"))
        if who.role in (Role.HEAD_OFFICE, Role.BRANCH_MANAGER) and "board.page" in app.view_functions:
            return redirect(url_for("board.page"))
        if who.may(Permission.AUDIT_VIEW):
            return redirect(url_for("audit_page.page"))
        return auth.refuse(403, _("the centre has no page for the role {role}").format(role=who.role.value))

    @app.errorhandler(500)
    def broken(exc: Exception) -> Any:
        return auth.refuse(500, _("internal error; the centre's log has the details"))

    return app


__all__ = ["BLUEPRINTS", "MAX_BODY", "CentreContext", "create_app"]
