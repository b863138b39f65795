"""The client-manager console: the current customer, the last six of the day, today's visits, manual
look-up, acknowledging, and a live stream (Server-Sent Events)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from ..permissions import Permission
from .auth import require

bp = Blueprint("console", __name__)


@bp.route("/console")
@require(Permission.CONSOLE_VIEW)
def page() -> Any:
    return render_template("console.html")
