"""How long a ``vipsense`` command takes to start, beside Python starting and doing nothing.

    python bench/cli.py            # measure and print; always exits 0
    python bench/cli.py --check    # exit 1 when a target is missed

Each command runs ``--runs`` times as a fresh process (the ``vipsense`` console script, as a user types
it); each sample is the wall time from fork to exit and the process's own peak RSS (``wait4``).  The
peer, ``python -c pass`` with the same interpreter, is the floor no command can beat: the ratio
between the two says what vipsense itself costs, whatever the machine is doing.

Targets (a user notices a slow command; ``vipsense check`` runs in editors and CI): ``vipsense
--version`` at most 0.12 s and 30 MB, ``vipsense check profiles/demo.yaml`` at most 0.35 s.

The commands run with Python's bytecode cache on, as an installed package has it (pip compiles on
install), even where ``PYTHONDONTWRITEBYTECODE`` is set: compiling every module on every run would
measure the compiler, not vipsense (~0.12 s of ``check`` here).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_model  # bench/machine.py, beside this script

from vipsense.stats import percentile

REPO = Path(__file__).resolve().parent.parent
VERSION_TARGET = (0.12, 30.0)  #: seconds, MB
CHECK_TARGET = 0.35  #: seconds
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def sample(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS in MB of one run of ``cmd`` (its output discarded)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} exited {proc.returncode}: {err.strip()[:300]}")
    return took, usage.ru_maxrss / 1024


def measure(cmd: list[str], runs: int) -> dict[str, float]:
    sample(cmd)  # warm the page cache and the .pyc files
    times, rss = zip(*(sample(cmd) for _ in range(runs)), strict=True)
    return {
        "p50": percentile(times, 0.5),
        "p90": percentile(times, 0.9),
        "rss": max(rss),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--runs", type=int, default=20, help="runs of each command (default 20)")
    args = ap.parse_args(argv)
    vipsense = shutil.which("vipsense") or sys.exit("bench: no vipsense command on PATH (pip install -e .)")
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    floor = measure([sys.executable, "-c", "pass"], args.runs)
    rows = [
        ("python -c pass (the floor)", floor, None),
        ("vipsense --version", measure([vipsense, "--version"], args.runs), VERSION_TARGET),
        (
            "vipsense check profiles/demo.yaml",
            measure([vipsense, "check", "profiles/demo.yaml"], args.runs),
            (CHECK_TARGET, None),
        ),
    ]
    ok = True
    for name, r, target in rows:
        line = (
            f"{name:<36} p50 {r['p50'] * 1000:6.0f} ms  p90 {r['p90'] * 1000:6.0f} ms"
            f"  peak RSS {r['rss']:5.1f} MB  ({r['p50'] / floor['p50']:.1f}x the floor)"
        )
        if target is not None:
            seconds, mb = target
            good = r["p50"] <= seconds and (mb is None or r["rss"] <= mb)
            ok &= good
            limit = f"<= {seconds * 1000:.0f} ms" + (f", <= {mb:.0f} MB" if mb else "")
            line += f"  target {limit}: {'ok' if good else 'MISSED'}"
        print(line)
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
