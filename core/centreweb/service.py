"""A running centre: its database brought up to date, its demo history, its audit log, accounts and
branch keys, and its web (board, search, the ingest the branches report to) served on a thread.

``vipsense centre serve`` runs one until it is stopped; ``vipsense run`` runs one beside the demo
branch when the branch profile says ``centre: {serve: ...}`` (no server to install for the demo).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..centre.database import CentreDatabaseError, Database, open_database
from ..centre.keys import BranchKeys
from ..centre.migrations import migrate
from ..centre.profile import CentreProfile, centre_key, open_centre_audit
from ..crypto import CipherError
from ..i18n import _
from ..web.server import Server, raise_file_limit, tls_adapter
from ..web.users import UserStore, users_path
from .app import MAX_BODY, CentreContext, create_app

log = logging.getLogger(__name__)


class CentreFailed(Exception):
    """The centre cannot start: one translated sentence (a database that does not answer, a port in
    use, a data directory it may not write)."""

    def __init__(self, message: str, port_in_use: bool = False) -> None:
        super().__init__(message)
        self.port_in_use = port_in_use  #: its web's port was taken (the demo then takes any free one)


class CentreService:
    """One centre, started by :meth:`start` and stopped (always, whatever happened) by :meth:`stop`."""

    def __init__(self, profile: CentreProfile, port: int | None = None) -> None:
        self.profile = profile
        self.port = profile.web.port if port is None else port
        self.url = ""
        self.ctx: CentreContext | None = None
        self.database: Database | None = None
        self.keys: BranchKeys | None = None
        self.on_demo: Callable[[Any], None] | None = None  #: told the demo history's summary, if written
        self._closing: list[Callable[[], Any]] = []
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    def open_database(self) -> Database:
        """The centre's database, migrated, with the coming months' partitions."""
        try:
            self.profile.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CentreFailed(
                _("cannot use the data directory {path}: {error}").format(
                    path=self.profile.data_dir, error=exc
                )
            ) from None
        try:
            database = open_database(self.profile.database_url)
        except CentreDatabaseError as exc:
            raise CentreFailed(str(exc)) from None
        try:
            migrate(database)
            database.ensure_partitions()
        except CentreDatabaseError as exc:
            database.close()
            raise CentreFailed(str(exc)) from None
        self._closing.append(database.close)
        self.database = database
        return database

    def start(self) -> str:
        """Open everything and serve; returns the centre web's URL.  On failure everything opened so
        far is closed again and :class:`CentreFailed` says why."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> str:
        profile, settings = self.profile, self.profile.web
        database = self.open_database()
        try:
            self._demo(database)
            self.keys = BranchKeys(database, centre_key(profile))
        except (CentreDatabaseError, CipherError) as exc:
            raise CentreFailed(str(exc)) from None
        audit = open_centre_audit(profile)
        self._closing.append(audit.close)
        users = UserStore(users_path(profile.data_dir))
        self._closing.append(users.close)
        self.ctx = CentreContext(profile, database, audit, users, settings, keys=self.keys)
        self._closing.append(self._close_extensions)
        app = create_app(self.ctx)
        tls = None
        if settings.tls is not None:
            tls = tls_adapter(profile.profile_dir / settings.tls.cert, profile.profile_dir / settings.tls.key)
        raise_file_limit(settings.connections.max_total + 256)
        server = Server(settings, settings.bind, self.port, app, tls, body_limit=MAX_BODY)
        server.max_request_body_size = 0  # the ingest refuses an oversize batch itself, with its JSON 413
        try:
            server.prepare()
        except Exception as exc:  # cheroot wraps some bind errors
            with contextlib.suppress(Exception):
                server.stop()
            error = getattr(exc, "strerror", None) or exc
            raise CentreFailed(
                _("cannot listen on {address}: {error}").format(
                    address=f"{settings.bind}:{self.port}", error=error
                ),
                port_in_use=getattr(exc, "errno", None) == errno.EADDRINUSE,
            ) from None
        self._server = server
        self._thread = threading.Thread(target=server.serve, name="centre-web", daemon=True)
        self._thread.start()
        bound = server.socket.getsockname()[1] if server.socket else self.port
        self.url = f"{'https' if tls else 'http'}://{settings.bind}:{bound}/"
        # what start-up made lives as long as the centre: out of the collector's sight, a full
        # collection no longer walks it, which put a board of 1,000 branches (some 50,000 objects)
        # from about 100 to about 400 ms at p99 (bench/centre.py, docs/centre.md part 7)
        gc.freeze()
        return self.url

    def _demo(self, database: Database) -> None:
        """The demo branches' history, written once (``demo:``)."""
        demo_settings = self.profile.demo
        if demo_settings is None or not demo_settings.branches:
            return
        from ..centre import demo

        summary = demo.generate(database, demo_settings)
        if summary.written and self.on_demo is not None:
            self.on_demo(summary)

    @property
    def serving(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _close_extensions(self) -> None:
        """Live feeds first: their open streams end, so the server's threads are free to stop."""
        if self.ctx is None:
            return
        for name, value in list(self.ctx.extensions.items()):
            stop = getattr(value, "close", None)
            if callable(stop):
                with contextlib.suppress(Exception):
                    stop()
                    del self.ctx.extensions[name]

    def stop(self) -> None:
        """Stop serving and close what was opened, last opened first; safe to call twice."""
        closing, self._closing = self._closing, []
        server, self._server = self._server, None
        if self.ctx is not None:
            self._close_extensions()
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop()
        if self._thread is not None:
            self._thread.join(3)
            self._thread = None
        for close in reversed(closing):
            try:
                close()
            except Exception:  # closing the rest matters more than this one's failure
                log.exception("centre: closing %r failed", close)


__all__ = ["CentreFailed", "CentreService"]
