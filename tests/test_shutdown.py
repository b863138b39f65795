"""SIGINT and SIGTERM stop a program without deadlocking, however many arrive at once (a PDA agent
orphaned by ``kill -9`` of its demo once got two SIGTERMs and hung, its handler waiting for a lock its
own interrupted frame held)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from .conftest import REPO

PROGRAM = """
import sys, threading
from vipsense.shutdown import Shutdown
stop = Shutdown()
with stop.handle_signals():
    print("ready", flush=True)
    while not stop.wait(0.2):
        pass
print("stopped", stop.event.is_set(), flush=True)
"""


def test_a_burst_of_signals_stops_the_program_once_and_cleanly():
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        for _ in range(200):  # many, back to back: each lands wherever the main thread happens to be
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        out, _ = proc.communicate(timeout=10)
        assert time.monotonic() - t0 < 5
        assert proc.returncode == 0 and out.strip() == "stopped True"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_command_line_program_keeps_an_inherited_ignored_sigint_ignored():
    program = (
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "from vipsense.shutdown import Shutdown\nstop = Shutdown.on_signals()\n"
        "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN,"
        " signal.getsignal(signal.SIGTERM) == stop.request)"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert done.stdout.strip() == "True True", done.stderr
