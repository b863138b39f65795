"""Every benchmark in bench/ finishes: each runs here with tiny sizes under a deadline, in a process
group of its own that is killed (helpers included) if it overruns.  A bench that waits for something
that never comes must say what it waited for and exit non-zero, never hang (bench/load.py
``wait_until``).  The figures themselves are measured by running the benches by hand (README)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

#: script, tiny arguments, deadline in seconds, a line its output must have
RUNS = [
    # a durable PostgreSQL cluster of its own (tests/install.sh installs the binaries), 40 branches
    ("centre.py", ["--quick"], 240, "visits/s"),
    ("cli.py", ["--runs", "2"], 120, "vipsense --version"),
    ("fuzz.py", ["--frames", "2000"], 120, "escaped"),
    # phase 2's seed as large as a 420 s run's, which once made the store open behind the first
    # look-ups and the warm-up wait for ever
    (
        "notify.py",
        ["--notifications", "500", "--seconds", "1", "--seed-cards", "8610"],
        120,
        "arrivals on the PDA",
    ),
    ("pipeline.py", ["--hot-reads", "20000", "--arrivals", "400", "--latency-seconds", "1"], 180, "arrivals"),
    ("readers.py", ["--frames", "2000", "--latency-frames", "50"], 60, "frames"),
    ("sms.py", ["--seconds", "0.1", "--sends", "5"], 60, "send() over a pty"),
    (
        "stores.py",
        [
            "--customers",
            "2000",
            "--lookups",
            "200",
            "--ldap-entries",
            "100",
            "--ldap-lookups",
            "50",
            "--no-ldap-online",
        ],
        240,
        "lookup",
    ),
    ("web.py", ["--seconds", "1"], 120, "/status"),
]


def run(script: str, args: list[str], deadline: float) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / script), *args],
        cwd=BENCH.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its PDA agent, slapd or emulators die with it
    )
    try:
        out, err = proc.communicate(timeout=deadline)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"bench/{script} did not finish within {deadline} s\n{out[-2000:]}\n{err[-2000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
@pytest.mark.parametrize(("script", "args", "deadline", "expect"), RUNS, ids=[r[0] for r in RUNS])
def test_bench_finishes_with_tiny_sizes(script, args, deadline, expect):
    done = run(script, args, deadline)
    assert done.returncode == 0, f"bench/{script} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert expect in done.stdout, done.stdout


def test_every_bench_script_is_run_here():
    scripts = {p.name for p in BENCH.glob("*.py")} - {"load.py", "machine.py"}  # helpers, not benches
    assert scripts == {script for script, *_ in RUNS}


def test_a_bench_that_waits_in_vain_says_for_what_and_exits_1():
    code = (
        f"import sys; sys.path.insert(0, {str(BENCH)!r})\n"
        "from load import wait_until\n"
        "wait_until(lambda: False, 0.2, 'the store to open', lambda: 'still opening')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "gave up after 0.2 s waiting for the store to open; got still opening" in done.stderr
