"""The OpenAPI 3.0.3 document of the third-party query API (:mod:`.api`), as data.

Kept beside the code it describes so the two change together; ``tests/test_web_api.py`` checks the
running API against it with schemathesis.  The patterns here are the ones :mod:`.api` enforces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
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

Ranges = tuple[tuple[int, int], ...]  #: code point ranges, both ends included

#: What a reason may never hold: control characters (C0, DEL, C1), the line and paragraph separators
#: and the bidirectional controls (which can make an audit line read as something else).  Nor lone
#: surrogates: a JSON string holding one is not Unicode text (:func:`allows`); no pattern can say so
#: in every dialect.
REASON_NEVER: Ranges = ((0x00, 0x1F), (0x7F, 0x9F), (0x200E, 0x200F), (0x2028, 0x202E), (0x2066, 0x2069))
#: What a reason may hold but not consist of: every space that ``str.strip()`` removes, and the
#: zero-width characters, so that what the audit log records is never blank.
REASON_BLANK: Ranges = (
    (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200D), (0x202F, 0x202F), (0x205F, 0x2060),
    (0x3000, 0x3000), (0xFEFF, 0xFEFF),
)  # fmt: skip


def _escaped(ranges: Ranges) -> str:
    """The inside of a regex class, in escapes that ECMA 262 and Python read alike."""

    def one(cp: int) -> str:
        return f"\\x{cp:02x}" if cp < 0x100 else f"\\u{cp:04x}"

    return "".join(one(lo) if lo == hi else f"{one(lo)}-{one(hi)}" for lo, hi in ranges)


def _listed(ranges: Ranges) -> str:
    return ", ".join(f"U+{lo:04X}" if lo == hi else f"U+{lo:04X}-U+{hi:04X}" for lo, hi in ranges)


#: Blanks, then one character neither blank nor forbidden, then anything not forbidden.  Explicit
#: classes only: ``\s``, ``\d`` and ``\w`` differ between ECMA 262, Python and Python's ``re.ASCII``
#: (the old ``\S`` let "\x1c" through the document but not through the check).
REASON_PATTERN = (
    f"^[{_escaped(REASON_BLANK)}]*"
    f"[^{_escaped(REASON_NEVER)}{_escaped(REASON_BLANK)}]"
    f"[^{_escaped(REASON_NEVER)}]*$"
)
#: The rule in words, for the 400 answer
REASON_RULE = f"1 to {REASON_MAX} characters, not all spaces, no control characters"

#: the schema of every ``reason``, in a query or a body
REASON = {
    "type": "string",
    "minLength": 1,
    "maxLength": REASON_MAX,
    "pattern": REASON_PATTERN,
    "description": (
        "Why you look (recorded in the branch's audit log), e.g. `phone appointment`: "
        f"1 to {REASON_MAX} characters; at least one of them not a space or zero-width character "
        f"({_listed(REASON_BLANK)}); none of them a control character, line or paragraph separator or "
        f"bidirectional control ({_listed(REASON_NEVER)}), nor a lone surrogate."
    ),
}


def allows(schema: Mapping[str, Any]) -> Callable[[object], bool]:
    """The check of a string ``schema`` of this document (its lengths and its ``^…$`` pattern), so that
    the code refuses exactly what the document forbids.  The pattern is read as ECMA 262 reads it:
    ``$`` is the very end (Python's also matches before a final newline, hence ``fullmatch``).  A string
    holding a lone surrogate (a JSON escape can) is not Unicode text, and no schema allows it."""
    pattern = schema.get("pattern")
    if pattern is not None and not (pattern.startswith("^") and pattern.endswith("$")):
        raise ValueError(f"not anchored at both ends: {pattern!r}")
    compiled = re.compile(pattern) if pattern is not None else None
    shortest, longest = schema.get("minLength", 0), schema.get("maxLength")

    def check(value: object) -> bool:
        if (
            not isinstance(value, str)
            or len(value) < shortest
            or (longest is not None and len(value) > longest)
        ):
            return False
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return False
        return compiled is None or compiled.fullmatch(value) is not None

    return check


ID_NUMBER = {
    "type": "string",
    "pattern": ID_NUMBER_PATTERN,
    "description": "18-character resident ID number: 17 digits and a digit or X.",
}
CUSTOMER_NO = {"type": "string", "pattern": CUSTOMER_NO_PATTERN}
CURSOR = {"type": "string", "pattern": CURSOR_PATTERN}
DATE = {"type": "string", "format": "date", "pattern": DATE_PATTERN}


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
                        "schema": CUSTOMER_NO,
                    },
                    {"name": "reason", "in": "query", "required": False, "schema": REASON},
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
                    {"name": "id_number", "in": "query", "required": True, "schema": ID_NUMBER},
                    {"name": "reason", "in": "query", "required": True, "schema": REASON},
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
                                "properties": {"id_number": ID_NUMBER, "reason": REASON},
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
            "schema": DATE,
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
                        "schema": CURSOR,
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


#: the ``code`` of each error status (``vipsense.web.auth.CODES`` gives them; a test checks they agree)
ERROR_CODES = frozenset(
    {
        "bad_request",
        "unauthorized",
        "forbidden",
        "not_found",
        "method_not_allowed",
        "conflict",
        "too_large",
        "rate_limited",
        "internal_error",
        "not_supported",
        "unavailable",
    }
)


def _schemas() -> dict[str, Any]:
    return {
        "Error": {
            "type": "object",
            "additionalProperties": False,
            "required": ["error", "code"],
            "properties": {
                "error": {
                    "type": "string",
                    "minLength": 1,
                    "description": "What to fix, for people: in the caller's language (Accept-Language),"
                    " else the branch's, else Simplified Chinese.",
                },
                "code": {
                    "type": "string",
                    "enum": sorted(ERROR_CODES),
                    "description": "The kind of error, for programs: English and stable in every language.",
                },
            },
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
