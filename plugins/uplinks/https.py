"""The ``https`` uplink: the branch's batches posted to the centre's ingest API over HTTPS.

One persistent connection (keep-alive), opened again after any failure.  The centre's certificate is
verified against the system's CAs or the profile's ``centre.ca``; plain ``http://`` is for a centre on
loopback only (the demo, tests), which the profile check already insists on.  Redirects are not
followed: a signed POST goes to the address the profile names, or nowhere.
"""

from __future__ import annotations

import http.client
import ssl
import urllib.parse

import attrs

import vipsense
from vipsense.api import RegisterType, UplinkContext, UplinkUnavailable

INGEST_PATH = "/api/v1/ingest"
MAX_ANSWER = 1 << 20  #: bytes of the centre's answer read at most


@attrs.frozen
class HttpsSettings:
    """No options yet: the address, timeout and CA come from the profile's ``centre:``."""


class HttpsUplink:
    """Posts each batch to ``{url}/api/v1/ingest``; one request at a time (the shipper's thread)."""

    def __init__(self, context: UplinkContext) -> None:
        parts = urllib.parse.urlsplit(context.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._path = parts.path.rstrip("/") + INGEST_PATH
        self._timeout = context.timeout
        self._ssl = ssl.create_default_context(cafile=str(context.ca) if context.ca else None)
        self._conn: http.client.HTTPConnection | None = None
        self.where = f"{parts.scheme}://{parts.netloc}"

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._ssl
                )
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        return self._conn

    def send(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST the batch; ``(status, answer)``.  Raises :class:`UplinkUnavailable` when the centre
        cannot be reached or the connection broke mid-answer.  A kept-alive connection the centre
        closed meanwhile is tried once more on a new one (the centre applies a batch once in effect,
        so a resend is harmless)."""
        reused = self._conn is not None
        try:
            return self._post(body, headers)
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            self.close()
            if not reused:
                raise UplinkUnavailable(f"{self.where}: connection closed by the centre") from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise UplinkUnavailable(f"{self.where}: {_reason(exc)}") from None
        try:
            return self._post(body, headers)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise UplinkUnavailable(f"{self.where}: {_reason(exc)}") from None

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        conn = self._connection()
        conn.request("POST", self._path, body, {"Content-Type": "application/json", **headers})
        answer = conn.getresponse()
        data = answer.read(MAX_ANSWER)
        if answer.will_close:
            self.close()
        return answer.status, data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _reason(exc: BaseException) -> str:
    """One line: ``connection refused``, ``timed out``, a TLS verification failure..."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not trusted: {exc.verify_message}"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text)


def make(settings: HttpsSettings, context: UplinkContext) -> HttpsUplink:
    return HttpsUplink(context)


@vipsense.hookimpl
def vipsense_register_uplink_types(register: RegisterType) -> None:
    register("https", HttpsSettings, make, summary="signed batches to the centre's ingest API over HTTPS")


__all__ = ["HttpsSettings", "HttpsUplink", "make"]
