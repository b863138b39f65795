"""Run a device emulator behind a real serial line, so a driver and its tests talk to it as to hardware.

Public API for plugin authors, the built-in ThingMagic and GSM modem emulators included.  An emulator
is a plain object that turns bytes from the host into bytes for the host; :class:`EmulatorLink` puts
it behind a fresh pseudo-terminal (:meth:`~EmulatorLink.on_pty`: open :attr:`~EmulatorLink.url` with
pyserial), an fd the caller opened (:meth:`~EmulatorLink.on_fd`, e.g. one end of a ``socat`` pair) or
a loopback TCP server (:meth:`~EmulatorLink.on_tcp`, for pyserial's ``socket://``) and runs it on a
background thread.  A subclass writes only the device's loop, :meth:`~EmulatorLink.serve`::

    class AcmeLink(EmulatorLink[AcmeEmulator]):
        thread_name = "acme-emulator"

        def serve(self) -> None:
            while not self.stopping.is_set():
                chunk = self.read(0.02)
                with self.lock:
                    if self.fresh_line():          # a new TCP client: forget a half-read command
                        self.emulator.reset_line()
                    self.write(self.emulator.feed(chunk) if chunk else b"")

    with AcmeLink.on_pty(AcmeEmulator()) as link:
        reader = serial.serial_for_url(link.url)
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
import tty
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

__all__ = ["EmulatorLink", "Transport"]

E = TypeVar("E")  #: the emulator behind a link
L = TypeVar("L", bound="EmulatorLink")
R = TypeVar("R")


class Transport(Protocol):
    """What a link reads and writes through (pty, fd or TCP); a subclass's ``__init__`` passes it on."""

    generation: int  #: changes when the line starts afresh (a new TCP client)
    dropped: int  #: bytes written while nobody was reading

    def read(self, timeout: float) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class _FdTransport:
    """A pty master or another tty-like fd.  Writes never block for long: bytes nobody reads are
    dropped and counted, as a UART would lose them."""

    generation = 0  # one continuous line: never a "new client"

    def __init__(self, fd: int, keep_open: Sequence[int] = (), close: bool = True) -> None:
        self.fd = fd
        self._others = list(keep_open)
        self._close = close
        self.dropped = 0
        os.set_blocking(fd, False)

    def read(self, timeout: float) -> bytes:
        try:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            return os.read(self.fd, 65536) if ready else b""
        except BlockingIOError:
            return b""
        except OSError:  # EIO: no process has the other end open; EBADF: closing down
            time.sleep(timeout)
            return b""

    def write(self, data: bytes, patience: float = 0.25) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + patience
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([], [self.fd], [], left)[1]:
                    break
            except OSError:
                break
        self.dropped += len(view)

    def close(self) -> None:
        for fd in ([self.fd] if self._close else []) + self._others:
            with contextlib.suppress(OSError):
                os.close(fd)


class _TcpTransport:
    """A loopback TCP server for pyserial ``socket://``: one client at a time; a new client starts with
    a fresh line (``generation`` changes) but the device keeps its state, as a real one would."""

    def __init__(self, host: str, port: int) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"the emulator listens on loopback only, not {host!r}")
        family = socket.AF_INET6 if host == "::1" else socket.AF_INET
        self.server = socket.socket(family, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind((host, port))
        self.server.listen(1)
        self.port: int = self.server.getsockname()[1]
        self.client: socket.socket | None = None
        self.generation = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def read(self, timeout: float) -> bytes:
        client = self.client
        if client is None:
            if select.select([self.server], [], [], timeout)[0]:
                try:
                    client, _ = self.server.accept()
                except OSError:
                    return b""
                client.settimeout(2.0)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with self._lock:
                    self.client = client
                    self.generation += 1
            return b""
        try:
            if not select.select([client], [], [], timeout)[0]:
                return b""
            data = client.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop_client(client)
        return data

    def write(self, data: bytes) -> None:
        with self._lock:
            client = self.client
            if client is None:
                self.dropped += len(data)
                return
            try:
                client.sendall(data)
                return
            except OSError:
                self.dropped += len(data)
        self._drop_client(client)

    def _drop_client(self, client: socket.socket) -> None:
        with self._lock:
            if self.client is client:
                self.client = None
        client.close()

    def close(self) -> None:
        with self._lock:
            client, self.client = self.client, None
        if client is not None:
            client.close()
        self.server.close()


class EmulatorLink(Generic[E]):
    """Runs an emulator behind a real pty, fd or loopback socket on a background thread.

    Subclasses implement :meth:`serve`, the device's loop, with :meth:`read`, :meth:`write` and
    :meth:`fresh_line`; they hold :attr:`lock` whenever they touch the emulator, since tests change
    it from other threads (:meth:`call`)."""

    thread_name: ClassVar[str] = "emulator"  #: names the thread in dumps and logs

    def __init__(self, emulator: E, transport: Transport, *, device_path: str | None = None) -> None:
        self.emulator = emulator
        self.device_path = device_path  #: the pty slave path to open with pyserial (pty links only)
        self.lock = threading.RLock()  #: held while the emulator is used; reentrant
        self.stopping = threading.Event()  #: set by :meth:`stop`; :meth:`serve` returns soon after
        self._transport = transport
        self._generation = transport.generation
        self._thread: threading.Thread | None = None
        self._closed = False

    @classmethod
    def on_pty(cls: type[L], emulator: object, **kwargs: Any) -> L:
        """A fresh pseudo-terminal pair, both ends raw; open :attr:`device_path` with pyserial.  The
        emulator keeps the slave open too, so the line survives the driver closing and reopening it."""
        master, slave = os.openpty()
        for fd in (master, slave):
            tty.setraw(fd)
        return cls(emulator, _FdTransport(master, keep_open=[slave]), device_path=os.ttyname(slave), **kwargs)

    @classmethod
    def on_fd(cls: type[L], emulator: object, fd: int, *, close_fd: bool = True, **kwargs: Any) -> L:
        """An fd opened by the caller, e.g. one end of a ``socat`` pty pair (closed on stop unless
        ``close_fd`` is False)."""
        if os.isatty(fd):
            tty.setraw(fd)
        return cls(emulator, _FdTransport(fd, close=close_fd), **kwargs)

    @classmethod
    def on_tcp(cls: type[L], emulator: object, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> L:
        """A loopback TCP server (port 0 = ephemeral); connect with ``socket://127.0.0.1:<port>``."""
        return cls(emulator, _TcpTransport(host, port), **kwargs)

    @property
    def port(self) -> int | None:
        """The TCP port (TCP links only)."""
        return getattr(self._transport, "port", None)

    @property
    def url(self) -> str:
        """What to hand to ``serial.serial_for_url`` (pty and TCP links; a caller's fd has no name)."""
        if self.port is not None:
            return f"socket://127.0.0.1:{self.port}"
        assert self.device_path is not None, "a link on a caller's fd has no URL"
        return self.device_path

    @property
    def dropped_output_bytes(self) -> int:
        """Bytes written while nobody was reading (pty full, no TCP client)."""
        return self._transport.dropped

    def start(self: L) -> L:
        if self._thread is None:
            self._thread = threading.Thread(target=self.serve, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and close the pty/socket.  Idempotent."""
        self.stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        with self.lock:
            if not self._closed:
                self._closed = True
                self._transport.close()

    def __enter__(self: L) -> L:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, raw: bytes) -> None:
        """Write raw bytes to the host as they are: garbage, corrupted or unsolicited output."""
        with self.lock:
            self.write(bytes(raw))

    def call(self, fn: Callable[[E], R]) -> R:
        """Change the emulator from another thread, between two chunks of input."""
        with self.lock:
            return fn(self.emulator)

    # -- for :meth:`serve` ---------------------------------------------------------------------------
    def serve(self) -> None:
        """The device's loop, on the link's thread, until :attr:`stopping` is set."""
        raise NotImplementedError

    def read(self, timeout: float) -> bytes:
        """What the host wrote, waiting at most ``timeout`` seconds; ``b""`` when nothing came."""
        return self._transport.read(timeout)

    def write(self, data: bytes) -> None:
        """Send ``data`` to the host (hold :attr:`lock`); nothing once the link is stopped."""
        if data and not self._closed:
            self._transport.write(data)

    def fresh_line(self) -> bool:
        """True once after a new TCP client connected: the line starts afresh (hold :attr:`lock`)."""
        if self._transport.generation == self._generation:
            return False
        self._generation = self._transport.generation
        return True
