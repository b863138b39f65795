"""The status page and ``/api/status``: readers, stores, notifiers, PDAs, plugins, today's counts."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, render_template

from ..permissions import Permission
from .auth import require, web

bp = Blueprint("status", __name__)


@bp.route("/status")
@require(Permission.STATUS_VIEW)
def page() -> Any:
    return render_template("status.html", status=web().branch.status.snapshot())


@bp.route("/api/status")
@require(Permission.STATUS_VIEW)
def api() -> Any:
    return jsonify(web().branch.status.snapshot())
