"""The auditor's view of the audit log: entries by date and action, and the chain's verification."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from ..permissions import Permission
from .auth import require, web

bp = Blueprint("audit_page", __name__)


@bp.route("/audit")
@require(Permission.AUDIT_VIEW)
def page() -> Any:
    entries = list(web().audit.entries())[-200:]
    return render_template("audit.html", entries=entries)
