"""The OpenAPI 3.0.3 document of the third-party query API (:mod:`.api`), as data.

Kept beside the code it describes so the two change together; ``tests/test_web_api.py`` checks the
running API against it with schemathesis.  The patterns here are the ones :mod:`.api` enforces.
"""

from __future__ import annotations

from typing import Any

from ..model import VisitKind

CUSTOMER_NO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ID_NUMBER_PATTERN = r"^[0-9]{17}[0-9Xx]$"
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,200}$"
DATE_PATTERN = r"^(19[7-9][0-9]|[2-9][0-9]{3})-[0-9]{2}-[0-9]{2}$"  #: from 1970: no pre-epoch times
REASON_MAX = 200
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_DAYS = 31  #: the longest date range of one visits query, both ends included

_NULLABLE_TEXT = {"type": "string", "nullable": True}

#: each customer field a token may be granted, and how it goes out
CUSTOMER_FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "customer_no": {"type": "string", "minLength": 1, "description": "The bank's customer number."},
    "name": {"type": "string", "description": "Display name."},
    "tier": {**_NULLABLE_TEXT, "description": "VIP tier, e.g. diamond, platinum, gold."},
    "company": _NULLABLE_TEXT,
    "usual_business": _NULLABLE_TEXT,
    "client_manager": {**_NULLABLE_TEXT, "description": "Staff id of the assigned client manager."},
    "id_number": {
        **_NULLABLE_TEXT,
        "pattern": r"^\*+[^*]{0,4}$",
        "description": "Always masked: only the last 4 characters are shown (JR/T 0171-2020 C2).",
    },
    "mobile": {
        **_NULLABLE_TEXT,
        "pattern": r"^[^*]{0,3}\*+[^*]{0,4}$",
        "description": "Always masked: first 3 and last 4 digits (JR/T 0171-2020 C2).",
    },
}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


_UNAUTHORIZED = _error(
    "No bearer token, or one that is unknown or revoked (the same answer for all three).",
    {
        "WWW-Authenticate": {
            "required": True,
            "description": 'RFC 6750, e.g. `Bearer realm="vipsense", error="invalid_token"`.',
            "schema": {"type": "string", "pattern": "^Bearer"},
        }
    },
)
_RATE_LIMITED = _error(
    "More calls in the last 60 seconds than the token's per-minute limit.",
    {
        "Retry-After": {
            "required": True,
            "description": "Seconds until the next call will be accepted.",
            "schema": {"type": "integer", "minimum": 1, "maximum": 60},
        }
    },
)
_COMMON = {
    "400": _error("Malformed input (the message says which parameter)."),
    "401": _UNAUTHORIZED,
    "429": _RATE_LIMITED,
    "503": _error("No identity store answered, or the audit log could not be written; try again later."),
}
_ID_SEARCH = {
    **_COMMON,
    "403": _error("The token's fields do not include id_number, so it may not search by one."),
    "404": _error("No customer has this ID number."),
    "501": _error("None of the branch's identity stores can search by ID number."),
}

_REASON = {
    "type": "string",
    "minLength": 1,
    "maxLength": REASON_MAX,
    "pattern": r"^[^\x00-\x1f\x7f]*\S[^\x00-\x1f\x7f]*$",
    "description": "Why you look (recorded in the branch's audit log), e.g. `phone appointment`.",
}
_ID_NUMBER = {
    "type": "string",
    "pattern": ID_NUMBER_PATTERN,
    "description": "18-character resident ID number: 17 digits and a digit or X.",
}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _customer_paths() -> dict[str, Any]:
    many = _ok(
        "Every customer with this ID number (usually one).",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["customers"],
            "properties": {
                "customers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"$ref": "#/components/schemas/Customer"},
                }
            },
        },
    )
    return {
        "/api/v1/customers/{customer_no}": {
            "get": {
                "operationId": "getCustomer",
                "summary": "One customer by customer number",
                "parameters": [
                    {
                        "name": "customer_no",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": CUSTOMER_NO_PATTERN},
                    },
                    {"name": "reason", "in": "query", "required": False, "schema": _REASON},
                ],
                "responses": {
                    "200": _ok(
                        "The customer: only the token's fields.",
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["customer"],
                            "properties": {"customer": {"$ref": "#/components/schemas/Customer"}},
                        },
                    ),
                    **_COMMON,
                    "404": _error("No customer has this customer number."),
                },
            }
        },
        "/api/v1/customers": {
            "get": {
                "operationId": "findCustomersByIdNumber",
                "summary": "Customers by ID number, in the query string (prefer POST .../search)",
                "description": (
                    "The ID number ends up in access logs and proxies along the way: prefer "
                    "`POST /api/v1/customers/search`."
                ),
                "parameters": [
                    {"name": "id_number", "in": "query", "required": True, "schema": _ID_NUMBER},
                    {"name": "reason", "in": "query", "required": True, "schema": _REASON},
                ],
                "responses": {"200": many, **_ID_SEARCH},
            }
        },
        "/api/v1/customers/search": {
            "post": {
                "operationId": "searchCustomers",
                "summary": "Customers by ID number, in the request body (recommended)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["id_number", "reason"],
                                "properties": {"id_number": _ID_NUMBER, "reason": _REASON},
                            }
                        }
                    },
                },
                "responses": {"200": many, **_ID_SEARCH},
            }
        },
    }


def _visits_path() -> dict[str, Any]:
    def date(name: str, what: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": True,
            "description": f"{what} day (the branch's local date), included.",
            "schema": {"type": "string", "format": "date", "pattern": DATE_PATTERN},
        }

    return {
        "/api/v1/visits": {
            "get": {
                "operationId": "listVisits",
                "summary": f"Arrivals at the door between two dates (at most {MAX_DAYS} days)",
                "parameters": [
                    date("from", "First"),
                    date("to", "Last"),
                    {
                        "name": "kind",
                        "in": "query",
                        "required": False,
                        "description": "Only this kind; default every kind but `suppressed` (re-entries).",
                        "schema": {"type": "string", "enum": [k.value for k in VisitKind]},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_LIMIT,
                            "default": DEFAULT_LIMIT,
                        },
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "description": "The previous page's `next_cursor`, with the same other parameters.",
                        "schema": {"type": "string", "pattern": CURSOR_PATTERN},
                    },
                ],
                "responses": {
                    "200": _ok(
                        "One page of visits, oldest first.",
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["visits", "next_cursor"],
                            "properties": {
                                "visits": {"type": "array", "items": {"$ref": "#/components/schemas/Visit"}},
                                "next_cursor": {
                                    "type": "string",
                                    "nullable": True,
                                    "pattern": CURSOR_PATTERN,
                                    "description": "null on the last page.",
                                },
                            },
                        },
                    ),
                    **_COMMON,
                },
            }
        }
    }


def _openapi_path() -> dict[str, Any]:
    return {
        "/api/v1/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document (no token needed)",
                "security": [],
                "responses": {"200": _ok("The OpenAPI document.", {"type": "object"})},
            }
        }
    }


def _schemas() -> dict[str, Any]:
    return {
        "Error": {
            "type": "object",
            "additionalProperties": False,
            "required": ["error"],
            "properties": {"error": {"type": "string", "minLength": 1}},
        },
        "Customer": {
            "type": "object",
            "additionalProperties": False,
            "description": (
                "Only the fields the token was granted (`vipsense tokens add --fields`); a field not "
                "granted is absent. id_number and mobile are masked even when granted."
            ),
            "properties": CUSTOMER_FIELD_SCHEMAS,
        },
        "Visit": {
            "type": "object",
            "additionalProperties": False,
            "required": ["visit_id", "arrived_at", "kind", "reason", "acknowledged_at", "acknowledged_by"],
            "properties": {
                "visit_id": {"type": "string", "minLength": 1},
                "arrived_at": {
                    "type": "string",
                    "format": "date-time",
                    "description": "ISO 8601, with offset.",
                },
                "kind": {"type": "string", "enum": [k.value for k in VisitKind]},
                "reason": {**_NULLABLE_TEXT, "description": "Why a card was rejected or suspect."},
                "customer_no": {
                    **_NULLABLE_TEXT,
                    "description": "Present only when the token was granted customer_no.",
                },
                "tier": {**_NULLABLE_TEXT, "description": "Present only when the token was granted tier."},
                "acknowledged_at": {"type": "string", "format": "date-time", "nullable": True},
                "acknowledged_by": {
                    **_NULLABLE_TEXT,
                    "description": "Staff id of whoever acknowledged first.",
                },
            },
        },
    }


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "vipsense branch query API",
            "version": "1",
            "description": (
                "Token-authenticated read access for the bank's own systems: customers by customer "
                "number or ID number, and visits by date. Every call is recorded in the branch's "
                "audit log. See docs/web-api.md."
            ),
        },
        "security": [{"bearer": []}],
        "paths": {**_customer_paths(), **_visits_path(), **_openapi_path()},
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `vipsense tokens add PROFILE NAME`.",
                }
            },
            "schemas": _schemas(),
        },
    }
