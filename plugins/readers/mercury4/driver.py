"""The Mercury4 reader driver: one TCP connection, one timed SELECT after another, each answer's rows
handed to the pipeline.  The reader only answers when asked, so a poll that gets no complete answer
within ``silence_timeout`` means the link is gone; ``run`` then raises and the core reconnects.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

from vipsense.api import Reader, ReaderContext

from .protocol import Response, ResponseParser, select_statement

#: At most one log line per kind of trouble per this many seconds.
LOG_INTERVAL = 1.0


class _Throttled:
    """Logs a recurring warning at most once per interval, saying how many were held back."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, log: Any, key: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, float("-inf")) < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return
        held = self._held.pop(key, 0)
        if held:
            message += " (%d more like this not logged)"
            args = (*args, held)
        self._last[key] = now
        log.warning(message, *args)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


class Mercury4Reader(Reader):
    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.address = f"{settings.host}:{settings.port}"
        time_out_ms = max(1, round(settings.poll_timeout * 1000))
        self.statement = select_statement(settings.antennas, time_out_ms, settings.protocol).encode("ascii")
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._throttled = _Throttled()

    # -- the core's entry points -------------------------------------------------------------

    def run(self, ctx: ReaderContext) -> None:
        try:
            sock = self._connect(ctx)
            if sock is not None:
                self._poll(ctx, sock)
        except OSError:
            if ctx.stop.is_set():
                return  # interrupt() cut the socket: a stop, not a lost link
            raise
        finally:
            with self._lock:
                sock, self._sock = self._sock, None
            if sock is not None:
                sock.close()

    def interrupt(self) -> None:
        """Wake a ``connect`` or ``recv`` blocked in ``run`` (close alone would not, on Linux)."""
        with self._lock:
            if self._sock is not None:
                with contextlib.suppress(OSError):  # not connected yet, or already gone
                    self._sock.shutdown(socket.SHUT_RDWR)

    # -- the link ---------------------------------------------------------------------------

    def _connect(self, ctx: ReaderContext) -> socket.socket | None:
        s = self.settings
        try:
            family, kind, proto, _, address = socket.getaddrinfo(s.host, s.port, type=socket.SOCK_STREAM)[0]
        except OSError as exc:
            raise ConnectionError(f"cannot resolve {s.host}: {_reason(exc)}") from exc
        sock = socket.socket(family, kind, proto)
        with self._lock:
            self._sock = sock
        if ctx.stop.is_set():  # interrupt() came before there was a socket to cut
            return None
        sock.settimeout(s.connect_timeout)
        try:
            sock.connect(address)
        except TimeoutError as exc:
            raise TimeoutError(f"no answer from {self.address} within {s.connect_timeout:g} s") from exc
        except ConnectionRefusedError as exc:
            refused = f"{self.address} refused the connection (reader off, or RQL not on this port?)"
            raise ConnectionError(refused) from exc
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {self.address}: {_reason(exc)}") from exc
        return sock

    def _poll(self, ctx: ReaderContext, sock: socket.socket) -> None:
        parser = ResponseParser()
        connected = False
        while not ctx.stop.is_set():
            try:
                sock.sendall(self.statement)
            except OSError as exc:
                raise ConnectionError(f"lost the link to {self.address}: {_reason(exc)}") from exc
            responses = self._receive(ctx, sock, parser)
            if responses is None:
                return
            if not connected:  # the reader answered: the link works, whatever the answer says
                ctx.connected(self.address)
                connected = True
            for response in responses:
                self._deliver(ctx, response)

    def _receive(
        self, ctx: ReaderContext, sock: socket.socket, parser: ResponseParser
    ) -> list[Response] | None:
        """The next complete answer(s), or None when the branch is stopping."""
        silence = self.settings.silence_timeout
        deadline = time.monotonic() + silence
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer from {self.address} for {silence:g} s")
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                if ctx.stop.is_set():
                    return None
                raise ConnectionError(f"lost the link to {self.address}: {_reason(exc)}") from exc
            if not data:
                if ctx.stop.is_set():
                    return None
                raise ConnectionError(f"{self.address} closed the connection")
            responses = parser.feed(data)
            if responses:
                return responses

    def _deliver(self, ctx: ReaderContext, response: Response) -> None:
        for row in response.rows:
            ctx.read(row.epc, antenna=row.antenna, rssi=None, read_count=row.read_count)
        if response.errors:
            ctx.count("rql_errors", len(response.errors))
            first = response.errors[0]
            self._throttled.warning(ctx.log, "rql", "reader %s answered: %s", self.address, first)
        if response.malformed:
            ctx.count("malformed_rows", response.malformed)
            self._throttled.warning(
                ctx.log,
                "rows",
                "dropped %d malformed line(s) from %s, e.g. %r",
                response.malformed,
                self.address,
                response.sample,
            )
