"""Signed messages between the hub and what it talks to (webhooks, PDAs): HMAC-SHA256 with a shared
key over ``<timestamp>.<body>``, and a freshness window so a captured message cannot be replayed
later (``privacy-security.md``: never trust the LAN; authenticate every push).

Headers: ``X-Vipsense-Timestamp: <unix seconds>`` and ``X-Vipsense-Signature: sha256=<hex>``.
A receiver calls :func:`verify` on the raw body *before* parsing it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from .i18n import lazy_gettext
from .texts import Text

TIMESTAMP_HEADER = "X-Vipsense-Timestamp"
SIGNATURE_HEADER = "X-Vipsense-Signature"
MAX_SKEW = 300.0  #: seconds a message may be old (or early: clocks differ) and still be accepted


class BadSignature(Exception):
    """A message that is unsigned, wrongly signed or stale.  The text says which, never the key: in
    English as ``str`` (the HTTP answer, the log), in the reader's language through
    :func:`vipsense.texts.error_text` (a screen)."""


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(key, timestamp + "." + body)>``."""
    return "sha256=" + hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def signed_headers(key: bytes, body: bytes, now: float | None = None) -> dict[str, str]:
    """The two headers for ``body``, signed now."""
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(key, timestamp, body)}


def verify(
    key: bytes, headers: Mapping[str, str], body: bytes, now: float | None = None, max_skew: float = MAX_SKEW
) -> float:
    """Check ``body`` against its headers; returns the signed timestamp.  Raises :class:`BadSignature`.

    ``headers`` is looked up case-insensitively if it is an ``email.message.Message`` (what
    ``http.server`` gives) or a case-insensitive mapping; plain dicts need the exact names above."""
    timestamp = headers.get(TIMESTAMP_HEADER)
    signature = headers.get(SIGNATURE_HEADER)
    if not timestamp or not signature:
        raise BadSignature(
            Text(lazy_gettext("unsigned message (no X-Vipsense-Timestamp / X-Vipsense-Signature header)"))
        )
    try:
        at = float(int(timestamp))
    except ValueError:
        raise BadSignature(
            Text(lazy_gettext("malformed X-Vipsense-Timestamp (expected unix seconds)"))
        ) from None
    if not hmac.compare_digest(sign(key, timestamp, body).encode(), signature.encode()):
        raise BadSignature(Text(lazy_gettext("bad signature (wrong branch key, or the message was altered)")))
    skew = (time.time() if now is None else now) - at
    if abs(skew) > max_skew:
        raise BadSignature(
            Text(
                lazy_gettext("stale message: signed {skew} s from now (limit ±{limit} s)"),
                skew=f"{skew:+.0f}",
                limit=f"{max_skew:.0f}",
            )
        )
    return at
