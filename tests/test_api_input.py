"""Pen test point 11: input the query API must answer with a 400 that is audited, never a 500."""

from __future__ import annotations

from .test_web_api import api_entries, call, token_for, w  # noqa: F401  (w is a fixture)

DEEP = b"[" * 30_000 + b"]" * 30_000


def test_a_deeply_nested_json_body_is_a_400_and_is_audited(w):  # noqa: F811
    """A 30,000-deep array made the JSON parser recurse past Python's limit: 500, and no audit entry."""
    token = token_for(w)
    for body in (DEEP, b'{"id_number": ' + DEEP + b', "reason": "x"}'):
        status, _, doc = call(w, "/api/v1/customers/search", token, "POST", body)
        assert status == 400, doc
        assert doc["error"].startswith("a JSON object")
    refused = [e for e in api_entries(w) if e.result.value == "denied"]
    assert len(refused) == 2 and all(e.object.startswith("id_number") for e in refused)


def test_a_number_with_a_line_break_is_a_400(w):  # noqa: F811
    token = token_for(w)
    status, _, _ = call(
        w, "/api/v1/customers/search", token, "POST", {"id_number": "110101199003079999\n", "reason": "x"}
    )
    assert status == 400
    assert call(w, "/api/v1/customers/C1%0A", token)[0] == 400
