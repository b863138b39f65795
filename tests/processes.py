"""Subprocesses started by tests: stopped and reaped at teardown whatever happened.

SIGTERM, then SIGKILL if it has not gone, and always a wait.  Never SIGINT: pytest started from a
background job of a non-interactive shell passes SIGINT on ignored, so a child may never see it.
"""

from __future__ import annotations

import subprocess


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """Terminate ``proc`` (SIGTERM, then SIGKILL after ``timeout``), reap it, close its pipes; its exit
    code (negative: the signal that ended it)."""
    try:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    finally:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return proc.returncode
