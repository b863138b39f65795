"""Real PDA agents as subprocesses on 127.0.0.1, for demos (``emulate:``): the hub talks to them
exactly as to handhelds, over zeroconf and HTTP, and their screens are copied to the branch terminal.

The key reaches them through the environment, never the command line (``ps`` shows that).
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
from .settings import EmulatedPda

MODULE = "vipsense.plugins.notifiers.pda.agent"


class EmulatedAgent:
    def __init__(self, pda: EmulatedPda, branch_id: str, key: str, data_dir: Path, output: Output) -> None:
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
        ]
        env = {**os.environ, KEY_ENV: key, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
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
        self.thread = threading.Thread(target=self._copy, name=f"pda-emulated:{pda.name}", daemon=True)
        self.thread.start()

    def _copy(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.write(f"[{self.pda.name}] {line.rstrip()}")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.thread.join(0.5)
