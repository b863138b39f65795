"""A real, throwaway PostgreSQL cluster for the tests: ``initdb`` into a temporary directory, ``pg_ctl``
start on 127.0.0.1 and a Unix socket in that directory, with fsync off (the data is thrown away), and
always stopped (``pg_ctl stop -m immediate``) and removed after the session, whatever happened.

    def test_x(postgres_url): ...            # the session's cluster (tests/conftest.py imports it)
    url = new_database(postgres_url)         # a database of its own, for a test that needs one empty

initdb refuses to run as root, so as root the cluster runs as the ``postgres`` user (``runuser``).
Tests skip, saying why, only when there are no PostgreSQL binaries (``tests/install.sh`` installs
them); a cluster that fails to start is an error, with its log.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

#: how long the last session's cluster took to initdb and start, for the curious (``pytest -s``)
TIMINGS: dict[str, float] = {}


def binaries() -> Path | None:
    """The folder with ``initdb`` and ``pg_ctl``: PATH first, then Debian's /usr/lib/postgresql/*/bin
    (newest version first)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        if os.access(f"{folder}/initdb", os.X_OK) and os.access(f"{folder}/pg_ctl", os.X_OK):
            return Path(folder)
    return None


def _version_key(folder: str) -> tuple[int, ...]:
    part = Path(folder).parent.name
    return tuple(int(p) for p in part.split(".") if p.isdigit())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """One throwaway cluster; :meth:`start` and :meth:`stop` (always called, see the fixture)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="vipsense-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log = self.root / "postgres.log"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        self.started = False

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        # the C locale exists everywhere; the tests' en_US.UTF-8 may not (initdb refuses an unknown one)
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        return subprocess.run(
            [*prefix, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            check=False,
            env=env,
        )

    def start(self) -> str:
        self.socket_dir.mkdir()
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        began = time.monotonic()
        done = self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        TIMINGS["initdb"] = time.monotonic() - began
        options = (
            f"-k {self.socket_dir} -c listen_addresses=127.0.0.1 -p {self.port} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        began = time.monotonic()
        self.started = True  # from here on stop() must run, even if start reports failure
        done = self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-o", options, "start",
        )  # fmt: skip
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n{log}")
        TIMINGS["start"] = time.monotonic() - began
        return f"postgresql+psycopg://postgres@/postgres?host={self.socket_dir}&port={self.port}"

    def restart(self) -> float:
        """``pg_ctl restart -m fast`` (open connections are cut, as a real restart does); returns the
        seconds it took."""
        began = time.monotonic()
        done = self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
            "-m", "fast", "restart",
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed:\n{done.stdout}\n{done.stderr}")
        return time.monotonic() - began

    def stop(self) -> None:
        try:
            if self.started and (self.data / "postmaster.pid").exists():
                done = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
                if done.returncode != 0:
                    self._kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill(self) -> None:
        """pg_ctl could not stop it: SIGKILL the postmaster named in its pid file."""
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 9)
        except (OSError, ValueError, IndexError):
            pass


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a PostgreSQL cluster started for this session (the ``postgres`` database)."""
    bin_dir = binaries()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl): run tests/install.sh as root")
    cluster = Cluster(bin_dir)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def new_database(url: str) -> str:
    """Create an empty database in the cluster at ``url``; returns its URL (dropped with the cluster)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    base, _, query = url.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&") if p)
    with psycopg.connect(host=params["host"], port=params["port"], user="postgres", dbname="postgres") as c:
        c.autocommit = True
        c.execute(f"CREATE DATABASE {name}")
    return f"{base.rpartition('/')[0]}/{name}?{query}"
