"""Signed JSON over plain HTTP on the branch LAN, both ways: one client call and one server base.

The standard library only (``http.client``, ``http.server``): a handheld needs nothing else.  No proxy
is ever consulted (the peers are on the LAN), bodies are capped at :data:`protocol.MAX_BODY`, and the
key is used for signing only: it is never logged or put in an error.

Every request has one deadline, connect to last byte.  A socket timeout alone bounds each read, not
the whole answer: a peer that sends one byte a second would hold the caller for as long as it liked.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import attrs

from vipsense.signing import signed_headers

from .protocol import HUB_HEADER, MAX_BODY


@attrs.frozen
class Reply:
    status: int
    doc: dict[str, Any] | None  #: the JSON answer, if it was one
    local_address: str  #: our end of the connection (which of our addresses reached the peer)
    elapsed: float  #: seconds, connect to last byte


class Unreachable(OSError):
    """The peer did not answer: refused, timed out, reset.  The text says which; ``timed_out`` is
    true when the deadline passed without an answer (the peer may be listening and silent)."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class _Deadline:
    """Cuts a connection's socket when its deadline passes, so whatever reads or writes it fails
    at once (``expired`` then says why).  A timer thread, not a per-read timeout (see above)."""

    def __init__(self, conn: http.client.HTTPConnection, left: float) -> None:
        self.expired = threading.Event()
        self._conn = conn
        self._timer = threading.Timer(max(0.0, left), self._cut)
        self._timer.daemon = True
        self._timer.start()

    def _cut(self) -> None:
        self.expired.set()
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def post_signed(
    url: str,
    key: bytes,
    body: bytes | Callable[[str], bytes],
    timeout: float,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """POST ``body`` signed with ``key``.  ``body`` may be a function of our local address, called
    once connected, so a push can tell the PDA the hub address that reaches it.  ``timeout`` is the
    deadline for all of it, connect to last byte.  Raises :class:`Unreachable`."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"expected an http:// URL, got {url!r}")
    start = time.monotonic()
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    deadline: _Deadline | None = None
    try:
        try:
            conn.connect()
            deadline = _Deadline(conn, timeout - (time.monotonic() - start))
            local = conn.sock.getsockname()[0]
            data = body(local) if callable(body) else body
            all_headers = {"Content-Type": "application/json", **(headers or {})}
            all_headers.update(signed_headers(key, data))
            conn.request("POST", parts.path or "/", body=data, headers=all_headers)
            response = conn.getresponse()
            raw = response.read(MAX_BODY)
        except TimeoutError:
            raise Unreachable(f"no answer within {timeout:g} s", timed_out=True) from None
        except ConnectionRefusedError:
            raise Unreachable("connection refused") from None
        except (OSError, http.client.HTTPException) as exc:
            if deadline is not None and deadline.expired.is_set():
                raise Unreachable(f"no answer within {timeout:g} s", timed_out=True) from None
            raise Unreachable(f"{type(exc).__name__}: {exc}") from None
        if deadline.expired.is_set():  # cut just as the last byte came: too late all the same
            raise Unreachable(f"no answer within {timeout:g} s", timed_out=True)
    finally:
        if deadline is not None:
            deadline.cancel()
        conn.close()
    try:
        doc = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError):
        doc = None
    return Reply(response.status, doc if isinstance(doc, dict) else None, local, time.monotonic() - start)


def hub_instance_at(url: str, timeout: float) -> str:
    """The instance id the hub's acknowledgement server at ``url`` names in ``X-Vipsense-Hub`` (empty
    if none): one unsigned GET, which that server answers with 405.  Raises :class:`Unreachable`."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"expected an http:// URL, got {url!r}")
    start = time.monotonic()
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    deadline: _Deadline | None = None
    try:
        conn.connect()
        deadline = _Deadline(conn, timeout - (time.monotonic() - start))
        conn.request("GET", parts.path or "/")
        response = conn.getresponse()
        response.read(MAX_BODY)
        if deadline.expired.is_set():
            raise Unreachable(f"no answer within {timeout:g} s", timed_out=True)
        return response.getheader(HUB_HEADER) or ""
    except TimeoutError:
        raise Unreachable(f"no answer within {timeout:g} s", timed_out=True) from None
    except (OSError, http.client.HTTPException) as exc:
        if isinstance(exc, Unreachable):
            raise
        if deadline is not None and deadline.expired.is_set():
            raise Unreachable(f"no answer within {timeout:g} s", timed_out=True) from None
        raise Unreachable(f"{type(exc).__name__}: {exc}") from None
    finally:
        if deadline is not None:
            deadline.cancel()
        conn.close()


class JsonHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that reads a capped body and answers JSON; quiet (no access log)."""

    server_version = "vipsense-pda/2"
    protocol_version = "HTTP/1.1"
    identity: ClassVar[Mapping[str, str]] = {}  #: headers sent with every answer (the hub names its instance)

    def read_body(self) -> bytes | None:
        """The raw body, or ``None`` after answering 411/413 itself."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.reply(411, {"error": "Content-Length required"})
            return None
        if length < 0 or length > MAX_BODY:
            self.reply(413, {"error": f"body larger than {MAX_BODY} bytes"})
            return None
        return self.rfile.read(length)

    def reply(self, status: int, doc: Mapping[str, Any]) -> None:
        data = json.dumps(doc, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            for name, value in self.identity.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client went away: nothing to tell it
            pass
        self.close_connection = True

    def do_GET(self) -> None:
        self.reply(405, {"error": "POST only"})

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Server:
    """A ``ThreadingHTTPServer`` on one address, serving on a daemon thread."""

    def __init__(self, address: str, port: int, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.httpd = http.server.ThreadingHTTPServer((address, port), handler)
        self.httpd.daemon_threads = True
        self.httpd.timeout = 1.0
        host, self.port = self.httpd.server_address[:2]
        assert isinstance(host, str), "a bound socket's getsockname() gives its host as text"
        self.address = host
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self.thread.name = f"http:{self.address}:{self.port}"

    def start(self) -> Server:
        self.thread.start()
        return self

    def close(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()
