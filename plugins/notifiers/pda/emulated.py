"""Real PDA agents as subprocesses on 127.0.0.1, for demos (``emulate:``): the hub talks to them
exactly as to handhelds, over zeroconf and HTTP, and their screens are copied to the branch terminal.

Each one is pinned to the hub instance that started it (``--hub-instance``), so two demos on one
machine never take each other's pushes, and it stops when that hub's process is gone, even after
``kill -9`` (``--parent-pid``).  The key reaches it through the environment, never the command line
(``ps`` shows that).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from vipsense.output import Output

from .agent import KEY_ENV
from .display import printable
from .settings import EmulatedPda

MODULE = "vipsense.plugins.notifiers.pda.agent"


class EmulatedAgent:
    def __init__(
        self, pda: EmulatedPda, branch_id: str, key: str, hub_instance: str, data_dir: Path, output: Output
    ) -> None:
        self.pda = pda
        self.output = output
        cmd = [
            sys.executable,
            "-m",
            MODULE,
            "--name",
            pda.name,
            "--role",
            pda.role,
            "--staff-id",
            pda.staff_id,
            "--branch",
            branch_id,
            "--interface",
            "127.0.0.1",
            "--data-dir",
            str(data_dir),
            "--auto-ack",
            f"{float(pda.auto_ack):g}",
            "--hub-instance",
            hub_instance,
            "--parent-pid",
            str(os.getpid()),
        ]
        env = {**os.environ, KEY_ENV: key, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
        self.proc: subprocess.Popen[str] | None = None
        self._started = threading.Event()
        self._failed: BaseException | None = None
        # The agent asks Linux for SIGTERM when its parent goes (PR_SET_PDEATHSIG), and Linux counts the
        # *thread* that started it as the parent.  So this thread starts it and then copies its screen
        # until it exits: it lives exactly as long as the agent does.
        self.thread = threading.Thread(
            target=self._run, args=(cmd, env), name=f"pda-emulated:{pda.name}", daemon=True
        )
        self.thread.start()
        self._started.wait()
        if self._failed is not None:
            raise self._failed

    def _run(self, cmd: list[str], env: dict[str, str]) -> None:
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                text=True,
                encoding="utf-8",
                errors="replace",
                start_new_session=True,  # a Ctrl-C at the branch terminal reaches the hub, which stops us
            )
        except BaseException as exc:
            self._failed = exc
            return
        finally:
            self._started.set()
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # stderr too: a log line may quote what a zeroconf record said
            self.output.write(f"[{self.pda.name}] {printable(line.rstrip())}")

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.thread.join(0.5)
