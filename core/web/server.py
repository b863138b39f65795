"""Serve the branch web with waitress, inside ``vipsense run``.

waitress is a pure-Python threaded WSGI server; each request (and each open live stream) holds one of
``web.threads`` threads.  waitress speaks no TLS, so with ``web.tls`` a small terminator in this
module accepts HTTPS on the configured address and pipes the decrypted bytes to waitress on a
loopback port of its own; the client's address travels with the connection (by the terminator's
local port), so the audit log still records who connected.

If the port cannot be bound the branch keeps running at the door: the ``web`` entry of the status
says why, and binding is tried again every :data:`RETRY_EVERY` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from waitress.server import create_server

from .app import WebContext, create_app
from .settings import WebSettings
from .users import UserStore, users_path

if TYPE_CHECKING:
    from ..branch import Branch

log = logging.getLogger(__name__)
RETRY_EVERY = 10.0


class TlsTerminator:
    """HTTPS on ``(host, port)``, piped to a plaintext listener on ``127.0.0.1:backend_port``."""

    def __init__(self, host: str, port: int, cert: Path, key: Path, backend_port: int) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(cert, key)
        self.backend_port = backend_port
        self.listener = socket.create_server((host, port), reuse_port=False, backlog=128)
        self.port = self.listener.getsockname()[1]
        self.peers: dict[int, str] = {}  #: our local port towards waitress -> the client's address
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="web-tls", daemon=True)

    def start(self) -> TlsTerminator:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, addr = self.listener.accept()
            except OSError:
                return
            threading.Thread(
                target=self._serve, args=(conn, addr[0]), name="web-tls-conn", daemon=True
            ).start()

    def _serve(self, raw: socket.socket, client: str) -> None:
        raw.settimeout(10)
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            log.info("TLS handshake with %s failed: %s", client, exc)
            raw.close()
            return
        tls.settimeout(None)
        try:
            backend = socket.create_connection(("127.0.0.1", self.backend_port))
        except OSError:
            tls.close()
            return
        local = backend.getsockname()[1]
        self.peers[local] = client
        done = threading.Event()

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                done.set()
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pump, args=(backend, tls), daemon=True).start()
        pump(tls, backend)
        done.wait(5)
        self.peers.pop(local, None)
        tls.close()
        backend.close()

    def client_of(self, remote_port: str | int | None) -> str | None:
        try:
            return self.peers.get(int(remote_port or 0))
        except ValueError:
            return None

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):
            self.listener.close()


class WebServer:
    """The branch web for one running branch: start with the branch, stop before it."""

    def __init__(self, branch: Branch, settings: WebSettings, port: int | None = None) -> None:
        self.branch = branch
        self.settings = settings
        self.port = settings.port if port is None else port  #: the configured port; 0 = any free one
        self.users = UserStore(users_path(branch.data_dir))
        self.ctx = WebContext(branch, self.users, settings)
        self.app = create_app(self.ctx)
        self.status = branch.status.device("web", "web", "waitress")
        self.status.details = self.health
        self.url = ""
        self._server: Any = None
        self._tls: TlsTerminator | None = None
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
        if self.status.set("failed", f"{why}; retrying every {RETRY_EVERY:g} s"):
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
        tls = s.tls
        host, port = ("127.0.0.1", 0) if tls else (s.bind, self.port)
        server = create_server(
            self.app,
            host=host,
            port=port,
            threads=s.threads,
            ident="vipsense",
            channel_timeout=300,
            connection_limit=max(100, s.threads * 2),
            clear_untrusted_proxy_headers=True,
            expose_tracebacks=False,
        )
        if tls:
            profile_dir = self.branch.profile.profile_dir
            try:
                self._tls = TlsTerminator(
                    s.bind, self.port, profile_dir / tls.cert, profile_dir / tls.key, server.effective_port
                ).start()
            except OSError:
                server.close()
                raise
            self.ctx.extensions["tls"] = self._tls
        self._server = server
        self._thread = threading.Thread(target=server.run, name="web", daemon=True)
        self._thread.start()
        scheme, port = ("https", self._tls.port) if self._tls else ("http", server.effective_port)
        self.bound_port = port
        self.url = f"{scheme}://{s.bind}:{port}/"
        self.status.set("ready")
        log.info("web: serving %s", self.url)

    def health(self) -> dict[str, Any]:
        return {"url": self.url, "threads": self.settings.threads, "accounts": len(self.users.list())}

    def stop(self) -> None:
        if self._closing.is_set():
            return  # stopped already
        self._closing.set()
        live = self.ctx.extensions.get("live")
        if live is not None:
            live.close()  # ends every open stream, so its thread is free
        if self._tls is not None:
            self._tls.close()
        if self._server is not None:
            from waitress import wasyncore

            server = self._server
            server.task_dispatcher.shutdown(cancel_pending=True, timeout=2)
            # closed from inside the loop's own thread (closing its sockets under its select() would
            # kill it with EBADF); with nothing left in its map, the loop returns
            server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        if self._thread is not None:
            self._thread.join(3)
        self.users.close()
