"""Serve the branch web with cheroot, inside ``vipsense run``.

cheroot is a maintained, pure-Python threaded WSGI server that speaks TLS itself (its builtin SSL
adapter over the standard :mod:`ssl` module); each request, and each open live stream, holds one of
``web.threads`` threads.  Without ``web.tls`` it serves plain HTTP: on loopback, or behind the bank's
TLS reverse proxy (docs/web.md).

cheroot alone can be taken down by anyone who reaches the port (pen test point 4): it does the TLS
handshake on its one accepting thread, and hands every new connection to a thread before a byte has
arrived, so idle or slow clients hold the threads.  :class:`Gate` takes the place of its connection
manager.  One thread waits on every connection with ``selectors`` and does the TLS handshake without
blocking; a connection reaches a request thread only once its whole request has arrived (headers,
and a body, of a declared length or chunked, up to :data:`BODY_LIMIT`).  It closes a connection that
sends nothing for ``web.connections.idle_timeout``, or whose request is not complete
``request_timeout`` after its first byte (slowloris, also in the body), and caps connections per
source address and in total (``web.connections``).

If the port cannot be bound the branch keeps running at the door: the ``web`` entry of the status
says why, and binding is tried again every :data:`RETRY_EVERY` seconds.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import resource
import selectors
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cheroot import server as cheroot_server
from cheroot import wsgi
from cheroot.makefile import MakeFile
from cheroot.ssl.builtin import BuiltinSSLAdapter

from .. import i18n
from ..states import DeviceState
from .app import WebContext, create_app
from .settings import Connections, WebSettings
from .users import UserStore, users_path

if TYPE_CHECKING:
    from ..branch import Branch

log = logging.getLogger(__name__)
RETRY_EVERY = 10.0
HEADER_LIMIT = 16 * 1024  #: bytes of request line and headers; more is refused by cheroot (431/413)
BODY_LIMIT = 64 * 1024  #: a body the gate waits for; the app refuses larger ones (MAX_CONTENT_LENGTH)
TICK = 0.25  #: seconds between sweeps for idle and slow connections
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d{1,12})[ \t]*\r\n", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding[ \t]*:[^\r\n]*chunked", re.IGNORECASE)
_LISTENER, _WAKE = object(), object()


def request_complete(data: bytes | bytearray, body_limit: int = BODY_LIMIT) -> bool:
    """Whether ``data`` holds a whole request a thread can serve without waiting on the client: the
    headers, and the body, of a declared length or chunked, if it is at most ``body_limit`` (a
    larger one is refused by cheroot, 413).  Too-long headers count as complete: cheroot refuses them."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return len(data) >= HEADER_LIMIT
    if _CHUNKED.search(data, 0, end + 2):
        # a chunked body dripped a byte at a time would hold a thread as long as the client liked
        return len(data) >= HEADER_LIMIT + body_limit or chunked_body_complete(data, end + 4, body_limit)
    m = _CONTENT_LENGTH.search(data, 0, end + 2)
    length = int(m.group(1)) if m else 0
    return length > body_limit or len(data) >= end + 4 + length


def chunked_body_complete(data: bytes | bytearray, at: int, body_limit: int = BODY_LIMIT) -> bool:
    """Whether a chunked body starting at ``at`` has all arrived, up to its last chunk and trailers.
    Malformed sizes count as complete: cheroot then refuses the request (400)."""
    while True:
        line_end = data.find(b"\r\n", at)
        if line_end < 0:
            return False
        size_text = bytes(data[at:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return True
        if size == 0:
            return data.find(b"\r\n\r\n", line_end) >= 0  # the trailers, ended by an empty line
        at = line_end + 2 + size + 2
        if at > len(data) or size > body_limit:
            return size > body_limit


class BufferedSocket:
    """A connection's socket whose first reads return what the gate already read for it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = bytearray()

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        if self.pending:
            n = min(nbytes or len(buffer), len(self.pending))
            buffer[:n] = self.pending[:n]
            del self.pending[:n]
            return n
        if nbytes is None and not flags:
            return self.sock.recv_into(buffer)
        return self.sock.recv_into(buffer, nbytes or 0, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self.pending:
            data = bytes(self.pending[:bufsize])
            del self.pending[:bufsize]
            return data
        return self.sock.recv(bufsize, flags)

    def __getattr__(self, name: str) -> Any:  # send, sendall, fileno, settimeout, shutdown, close...
        return getattr(self.sock, name)


class Waiting:
    """One connection between requests: accepted, or back from a request thread (keep-alive)."""

    __slots__ = ("conn", "fd", "first_byte", "handshaking", "port", "released", "since", "sock", "source",
                 "ssl_env", "wrapper")  # fmt: skip

    def __init__(self, sock: socket.socket, source: str, port: int, now: float, handshaking: bool) -> None:
        self.sock = sock
        self.wrapper = BufferedSocket(sock)
        self.source = source
        self.port = port
        self.since = now  #: when it began waiting for a request
        self.first_byte: float | None = None  #: when that request's first byte (or TLS hello) came
        self.handshaking = handshaking
        self.conn: GatedConnection | None = None
        self.ssl_env: dict[str, Any] = {}
        self.released = False
        self.fd = -1


class GatedConnection(cheroot_server.HTTPConnection):
    """cheroot's connection, counted by the :class:`Gate` until it is closed."""

    gate: Gate
    record: Waiting

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.gate.release(self.record)


class Gate:
    """Stands in for cheroot's ``ConnectionManager`` (``put``, ``run``, ``stop``, ``close``,
    ``can_add_keepalive_connection``): every connection waits here, on one thread, until its request
    is whole; see the module docstring."""

    def __init__(self, server: Server, limits: Connections, tls: ssl.SSLContext | None) -> None:
        self.server = server
        self.limits = limits
        self.tls = tls
        self.total = 0  #: connections open, waiting here or in a request thread
        self.refused = 0  #: closed at once: their source was at its cap (or everything was busy)
        self.timed_out = 0  #: closed idle, or slow to send their request
        self.evicted = 0  #: closed idle to make room for a new connection at the total cap
        self._per_source: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()  #: counts, and connections handed back by request threads
        self._waiting: dict[int, Waiting] = {}  #: by file descriptor, longest waiting first
        self._returned: list[GatedConnection] = []
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        server.socket.setblocking(False)
        self._selector.register(server.socket, selectors.EVENT_READ, _LISTENER)
        self._stop = False
        self._serving = False
        self._full_warned = 0.0

    # -- cheroot's side ---------------------------------------------------------------------------

    @property
    def can_add_keepalive_connection(self) -> bool:
        return not self._stop

    def put(self, conn: GatedConnection) -> None:
        """A request thread is done with ``conn`` and keeps it open: wait here for its next request."""
        with self._lock:
            self._returned.append(conn)
        self._wake()

    def run(self, expiration_interval: float) -> None:
        self._serving = True
        try:
            next_sweep = time.monotonic() + TICK
            while not self._stop:
                for key, _ in self._selector.select(timeout=TICK):
                    if key.data is _LISTENER:
                        self._accept()
                    elif key.data is _WAKE:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    else:
                        self._ready(key.data)
                self._take_returned()
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + TICK
        finally:
            self._serving = False

    def stop(self) -> None:
        self._stop = True
        self._wake()
        end = time.monotonic() + 2
        while self._serving and time.monotonic() < end:
            time.sleep(0.01)

    def close(self) -> None:
        for rec in list(self._waiting.values()):
            self._drop(rec)
        with contextlib.suppress(Exception):
            self._selector.close()
        for s in (self._wake_r, self._wake_w):
            s.close()

    # -- connections --------------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _accept(self) -> None:
        for _ in range(64):  # a burst at a time, so waiting connections are served in between
            try:
                raw, addr = self.server.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors: make room, or wait for some to close
                if not self._evict_idle():
                    now = time.monotonic()
                    if now - self._full_warned > 60:
                        self._full_warned = now
                        log.warning("web: cannot accept connections: %s", exc.strerror or exc)
                    time.sleep(0.05)
                return
            self._admit(raw, str(addr[0]), int(addr[1]))

    def _admit(self, raw: socket.socket, source: str, port: int) -> None:
        with self._lock:
            over = self._per_source[source] >= self.limits.max_per_source
            full = self.total >= self.limits.max_total
        if not over and full and not self._evict_idle():
            over = True
        if over:
            self.refused += 1
            with contextlib.suppress(OSError):
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            raw.close()
            return
        with self._lock:
            self.total += 1
            self._per_source[source] += 1
        raw.setblocking(False)
        sock = raw
        if self.tls is not None:
            sock = self.tls.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        rec = Waiting(sock, source, port, time.monotonic(), handshaking=self.tls is not None)
        self._wait(rec)

    def _wait(self, rec: Waiting) -> None:
        rec.fd = rec.sock.fileno()
        self._waiting[rec.fd] = rec
        self._selector.register(rec.sock, selectors.EVENT_READ, rec)

    def _evict_idle(self) -> bool:
        """Close the connection that has waited longest without sending anything, if there is one."""
        victim = next((r for r in self._waiting.values() if r.first_byte is None), None)
        if victim is None:
            return False
        self.evicted += 1
        self._drop(victim)
        return True

    def _ready(self, rec: Waiting) -> None:
        now = time.monotonic()
        if rec.handshaking:
            if rec.first_byte is None:
                rec.first_byte = now  # a slow handshake is a slow request
            try:
                rec.sock.do_handshake()  # type: ignore[attr-defined]
            except ssl.SSLWantReadError:
                self._selector.modify(rec.sock, selectors.EVENT_READ, rec)
                return
            except ssl.SSLWantWriteError:
                self._selector.modify(rec.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, rec)
                return
            except (OSError, ValueError) as exc:  # not TLS, a bad hello, or gone
                log.debug("web: TLS handshake with %s failed: %s", rec.source, exc)
                self._drop(rec)
                return
            rec.handshaking = False
            self._selector.modify(rec.sock, selectors.EVENT_READ, rec)
            rec.ssl_env = self.server.ssl_adapter.get_environ(rec.sock)
            rec.since, rec.first_byte = now, None  # a browser may open a connection before it needs it
        self._read(rec, now)

    def _read(self, rec: Waiting, now: float) -> None:
        buffer = rec.wrapper.pending
        while len(buffer) < HEADER_LIMIT + self.server.body_limit:
            try:
                chunk = rec.sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError:
                self._drop(rec)
                return
            if not chunk:  # the client went away
                self._drop(rec)
                return
            if rec.first_byte is None:
                rec.first_byte = now
            buffer += chunk
        if buffer and request_complete(buffer, self.server.body_limit):
            self._dispatch(rec)

    def _dispatch(self, rec: Waiting) -> None:
        """The request is whole: hand the connection to a request thread."""
        self._unwatch(rec)
        rec.sock.settimeout(float(self.limits.request_timeout))  # blocking again, for the thread
        conn = rec.conn
        if conn is None:
            conn = GatedConnection(self.server, rec.wrapper, self.server.makefile)
            conn.gate, conn.record = self, rec
            conn.remote_addr, conn.remote_port = rec.source, rec.port
            conn.ssl_env = rec.ssl_env
            rec.conn = conn
        self.server.process_conn(conn)

    def _take_returned(self) -> None:
        with self._lock:
            returned, self._returned = self._returned, []
        now = time.monotonic()
        for conn in returned:
            rec = conn.record
            if self._stop:
                conn.close()
                continue
            # bytes cheroot read past its last request (a pipelined one) go back in front
            rfile = conn.rfile
            left = getattr(rfile, "_read_buf", b"")[getattr(rfile, "_read_pos", 0) :]
            if left:
                rec.wrapper.pending[:0] = left
                rfile._reset_read_buf()
            try:
                rec.sock.setblocking(False)
                rec.since, rec.first_byte = now, (now if rec.wrapper.pending else None)
                self._wait(rec)
            except (OSError, ValueError):  # closed under us
                conn.close()
                continue
            self._read(rec, now)  # TLS may hold decrypted bytes that select() cannot see

    def _sweep(self, now: float) -> None:
        idle, slow = float(self.limits.idle_timeout), float(self.limits.request_timeout)
        for rec in list(self._waiting.values()):
            if rec.first_byte is None and now - rec.since > idle:
                self.timed_out += 1
                self._drop(rec)
            elif rec.first_byte is not None and now - rec.first_byte > slow:
                self.timed_out += 1
                log.debug("web: closed a connection from %s: its request was too slow", rec.source)
                self._drop(rec)

    def _unwatch(self, rec: Waiting) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(rec.sock)
        if self._waiting.get(rec.fd) is rec:
            del self._waiting[rec.fd]

    def _drop(self, rec: Waiting) -> None:
        self._unwatch(rec)
        if rec.conn is not None:
            rec.conn.linger = False
            with contextlib.suppress(Exception):
                rec.conn.close()  # releases it
            return
        with contextlib.suppress(OSError):
            rec.sock.close()
        self.release(rec)

    def release(self, rec: Waiting) -> None:
        """A connection is closed: it no longer counts against its source or the total."""
        with self._lock:
            if rec.released:
                return
            rec.released = True
            self.total -= 1
            self._per_source[rec.source] -= 1
            if self._per_source[rec.source] <= 0:
                del self._per_source[rec.source]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {
                "open": self.total,
                "sources": len(self._per_source),
                "refused": self.refused,
                "timed_out": self.timed_out,
                "evicted": self.evicted,
            }


class Server(wsgi.Server):
    """cheroot's WSGI server with the :class:`Gate` as its connection manager and our log."""

    _connections: Any  #: cheroot's connection manager (private: not in its stubs); the Gate after prepare()

    def __init__(
        self,
        settings: WebSettings,
        host: str,
        port: int,
        app: Any,
        tls: BuiltinSSLAdapter | None,
        body_limit: int = BODY_LIMIT,  #: the centre's ingest takes a branch's batch of up to 4 MiB
    ):
        threads = settings.threads
        super().__init__(
            (host, port),
            app,
            numthreads=threads,
            max=threads,
            request_queue_size=1024,  # the listen backlog: a burst of connections waits in the kernel
            # a socket timeout may be a fraction of a second; cheroot's stub says int
            timeout=float(settings.connections.request_timeout),  # type: ignore[arg-type]
            shutdown_timeout=2,
            accepted_queue_size=threads * 4,  # requests waiting for a thread; more get a 503 at once
            accepted_queue_timeout=0,  # never block the gate's thread
        )
        self.limits = settings.connections
        self.software = "vipsense"  # the Server header: no version for a scanner to match
        self.server_name = "vipsense"
        self.max_request_header_size = HEADER_LIMIT
        self.body_limit = body_limit  #: the largest body the gate waits for before a thread takes it
        self.max_request_body_size = body_limit  #: cheroot refuses a larger one (413); 0: the app does
        self.ssl_adapter = tls
        self.gate: Gate | None = None

    @property
    def makefile(self) -> Any:
        return self.ssl_adapter.makefile if self.ssl_adapter is not None else MakeFile

    def prepare(self) -> None:
        super().prepare()
        cheroot_manager = self._connections
        context = self.ssl_adapter.context if self.ssl_adapter is not None else None
        self.gate = self._connections = Gate(self, self.limits, context)
        with contextlib.suppress(Exception):
            cheroot_manager._selector.close()  # it only ever watched the listening socket

    def error_log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        # clients that time out, reset or speak nonsense are routine on a network: debug, not stderr
        log.log(logging.DEBUG if level < logging.ERROR else level, "cheroot: %s", msg, exc_info=traceback)


def tls_adapter(cert: Path, key: Path) -> BuiltinSSLAdapter:
    """cheroot's TLS over :mod:`ssl`: TLS 1.2 or newer (privacy-security.md §4 item 7)."""
    adapter = BuiltinSSLAdapter(str(cert), str(key))
    adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
    return adapter


def raise_file_limit(needed: int) -> None:
    """Each connection is a file descriptor: lift the soft limit towards ``needed`` if it is lower."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class WebServer:
    """The branch web for one running branch: start with the branch, stop before it."""

    def __init__(self, branch: Branch, settings: WebSettings, port: int | None = None) -> None:
        self.branch = branch
        self.settings = settings
        self.port = settings.port if port is None else port  #: the configured port; 0 = any free one
        self.users = UserStore(users_path(branch.data_dir))
        self.ctx = WebContext(branch, self.users, settings)
        self.app = create_app(self.ctx)
        self.status = branch.status.device("web", "web", "cheroot")
        self.status.details = self.health
        self.url = ""
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._retry: threading.Thread | None = None

    def start(self) -> None:
        try:
            self._bind()
        except OSError as exc:
            self._failed(exc)
            self._retry = threading.Thread(target=self._retry_loop, name="web-bind-retry", daemon=True)
            self._retry.start()

    def _failed(self, exc: OSError) -> None:
        why = f"cannot listen on {self.settings.bind}:{self.port}: {exc.strerror or exc}"
        shown = i18n.gettext("cannot listen on {address}: {error}; retrying every {seconds} s").format(
            address=f"{self.settings.bind}:{self.port}", error=exc.strerror or exc, seconds=f"{RETRY_EVERY:g}"
        )  # the status page's words; the log line below stays English
        if self.status.set(DeviceState.FAILED, shown):
            log.error(
                "web: %s; the branch runs on without its web page, retrying every %g s", why, RETRY_EVERY
            )

    def _retry_loop(self) -> None:
        while not self._closing.wait(RETRY_EVERY):
            try:
                self._bind()
                return
            except OSError as exc:
                self._failed(exc)

    def _bind(self) -> None:
        s = self.settings
        tls = None
        if s.tls is not None:
            profile_dir = self.branch.profile.profile_dir
            tls = tls_adapter(profile_dir / s.tls.cert, profile_dir / s.tls.key)
        raise_file_limit(s.connections.max_total + 256)
        server = Server(s, s.bind, self.port, self.app, tls)
        try:
            server.prepare()  # binds here, so a taken port raises OSError to the caller
        except OSError:
            with contextlib.suppress(Exception):
                server.stop()
            raise
        except Exception as exc:  # cheroot wraps some bind errors; keep the retry path
            with contextlib.suppress(Exception):
                server.stop()
            raise OSError(str(exc)) from exc
        self._server = server
        self._thread = threading.Thread(target=server.serve, name="web", daemon=True)
        self._thread.start()
        port = server.socket.getsockname()[1] if server.socket else self.port
        self.bound_port = port
        self.url = f"{'https' if tls else 'http'}://{s.bind}:{port}/"
        self.status.set(DeviceState.READY)
        log.info("web: serving %s", self.url)

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": self.url, "threads": self.settings.threads}
        out["accounts"] = len(self.users.list())
        if self._server is not None and self._server.gate is not None:
            out["connections"] = self._server.gate.counts()
        live = self.ctx.extensions.get("live")
        out["streams"] = live.subscribers if live is not None else 0
        return out

    def stop(self) -> None:
        if self._closing.is_set():
            return  # stopped already
        self._closing.set()
        live = self.ctx.extensions.get("live")
        if live is not None:
            live.close()  # ends every open stream, so its thread is free
        if self._server is not None:
            self._server.stop()
        if self._thread is not None:
            self._thread.join(3)
        self.users.close()
