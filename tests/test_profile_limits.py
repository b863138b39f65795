"""Hostile or mistaken YAML is refused with one clear line, within bounded time and memory
(core/config/yamlload.py): an alias bomb, a recursive alias, a huge file, deep nesting, too many values.

The command-line cases run ``vipsense check`` in a subprocess under an address-space cap, with a
generous deadline; the child reports its own peak resident memory (``VmHWM``) as it exits.  (The
``ru_maxrss`` of ``wait4`` would not do: a child forked from pytest starts with pytest's memory, and
that peak survives ``exec``.)
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vipsense.config.profile import load_profile
from vipsense.config.yamlload import load_profile_yaml

from .conftest import BASE_PROFILE

MEMORY_CAP = 512 * 1024 * 1024  #: address space of the child: a regression fails fast, not the machine
PEAK_RSS_LIMIT_KB = 200 * 1024
DEADLINE = 60.0  #: seconds; the refusals take well under 2 s, this only stops a runaway child
#: ``python -c CHILD check PATH`` is ``vipsense check PATH`` that writes its /proc status when it exits
CHILD = (
    "import atexit, runpy; "
    "atexit.register(lambda: open('status.txt', 'w').write(open('/proc/self/status').read())); "
    "runpy.run_module('vipsense.cli', run_name='__main__')"
)


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def alias_column(line: str, alias: str, n: int) -> int:
    """The column of the ``n``-th (1-based) ``alias`` on ``line``."""
    at = -1
    for _ in range(n):
        at = line.index(alias, at + 1)
    return at + 1


def billion_laughs(levels: int = 9) -> str:
    """The classic alias bomb: each level is ten aliases of the one before (10**9 values)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    return "\n".join(lines) + "\n"


BOMB_ERROR = (
    "aliases (*name) expand to more than 10,000 values, the most a profile may have; "
    "write the values out instead"
)
RECURSIVE_ERROR = (
    "recursive alias *a: it is inside its own anchor &a, so its value would never end; remove the alias"
)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIPSENSE_SECRETS", raising=False)


def yaml_errors(text: str, bounded: bool = True) -> list[str]:
    path = Path("branch.yaml")
    path.write_text(text, encoding="utf-8")
    return [str(e) for e in load_profile_yaml(path, bounded=bounded).errors]


# -- in process: the exact messages (an alias bomb is tried only in a capped subprocess, below) -----


#: where the billion laughs crosses the limit: a1 adds 10 x 11 values, a2 10 x 111; each *a2 in a3
#: adds 1,111, so the 8th brings the total to 10,108
BOMB_AT = (4, alias_column(billion_laughs().splitlines()[3], "*a2", 8))


@pytest.mark.parametrize(
    ("text", "column"),
    [
        pytest.param("a: &a [1, *a]\n", 11, id="in-a-list"),
        pytest.param("a: &a\n  b: *a\n", None, id="in-a-mapping"),
    ],
)
def test_recursive_alias_is_one_line(text, column):
    line = len(text.splitlines())
    column = column or text.splitlines()[-1].index("*a") + 1
    assert yaml_errors(text) == [f"branch.yaml:{line}:{column}: {RECURSIVE_ERROR}"]


def test_a_few_aliases_still_work(write_profile):
    """Aliases are allowed within the limit: one visitor list shared by two readers."""
    text = BASE_PROFILE.replace(
        "  - {id: door, type: simulated, visitors: []}\n",
        "  - {id: door, type: simulated, visitors: &people [{card: E20000000000000000000001, at: 1s}]}\n"
        "  - {id: side, type: simulated, visitors: *people}\n",
    )
    from vipsense.pluginhost import load_host

    p = load_profile(write_profile(text), load_host())
    assert p.readers[0].settings.visitors == p.readers[1].settings.visitors
    assert len(p.readers[1].settings.visitors) == 1


def test_nesting_deeper_than_the_limit_is_one_line():
    text = "a: " + "[" * 60 + "]" * 60 + "\n"
    assert yaml_errors(text) == ["branch.yaml:1:53: nested more than 50 levels deep; a profile needs few"]


def test_aliases_that_nest_deeper_than_the_limit_are_one_line():
    """Each anchor is 30 levels deep, and holds the one before it: 60 levels once expanded."""
    text = "a0: &a0 " + "[" * 30 + "1" + "]" * 30 + "\n" + "a1: &a1 " + "[" * 30 + "*a0" + "]" * 30 + "\n"
    # the value found too deep is inside a0's text, reached through a1
    assert yaml_errors(text) == [
        "branch.yaml:1: aliases here nest values more than 50 levels deep; a profile needs few"
    ]


def test_a_profile_over_1_mb_is_refused_before_it_is_read():
    Path("branch.yaml").write_bytes(b"# padding\n" * 110_000)  # 1.05 MB
    errors = [str(e) for e in load_profile_yaml(Path("branch.yaml"), bounded=True).errors]
    assert errors == [
        "branch.yaml: the file is 1.05 MB; a profile may be at most 1 MB (1,048,576 bytes), so this is "
        "not a profile"
    ]


@pytest.mark.slow
def test_a_profile_with_too_many_values_is_refused():
    text = "tiers: [" + "a," * 20_001 + "a]\n"
    # values: the mapping, the key 'tiers', the list, then its items: item 19,997 is value 20,001
    column = len("tiers: [") + 2 * 19_997 + 1
    assert yaml_errors(text) == [
        f"branch.yaml:1:{column}: the file holds more than 20,000 values, the most a profile may have; "
        "is this the right file?"
    ]


@pytest.mark.slow
def test_a_seed_file_is_not_held_to_a_profiles_size():
    """Seed files of customers share the loader; they may be larger than a profile."""
    text = "customers:\n" + "".join(f"  - {{customer_no: C{i}, name: N{i}}}\n" for i in range(8_000))
    assert yaml_errors(text, bounded=False) == []


# -- vipsense check in a subprocess: one line, bounded time and memory ------------------------------


def run_check(path: Path) -> tuple[int, list[str], float, int]:
    """``vipsense check PATH`` under ``MEMORY_CAP``: exit status, stderr lines, seconds, and peak
    resident memory in kB.  ``subprocess.run`` kills and reaps the child if the deadline passes."""
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "check", str(path)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        preexec_fn=_cap_memory,
    )
    elapsed = time.monotonic() - start
    status = Path("status.txt").read_text()
    peak_kb = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    return done.returncode, done.stderr.splitlines(), elapsed, peak_kb


def _write_50_mb(path: Path) -> None:
    chunk = "".join(f"key{i}: value {i}\n" for i in range(50_000)).encode()
    with path.open("wb") as f:
        while f.tell() < 50 * 1024 * 1024:
            f.write(chunk)
        f.truncate(50 * 1024 * 1024)


def _secrets_bomb(path: Path) -> None:
    """A valid profile whose secrets file is the bomb."""
    Path("secrets.yaml").write_text(billion_laughs(), encoding="utf-8")
    path.write_text(BASE_PROFILE.replace("name: Test Branch", "name: !secret a9"), encoding="utf-8")
    Path("seed.yaml").write_text("customers: []\ncards: []\n", encoding="utf-8")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "error"),
    [
        pytest.param(
            lambda p: p.write_text(billion_laughs()),
            f"hostile.yaml:{BOMB_AT[0]}:{BOMB_AT[1]}: {BOMB_ERROR}",
            id="bomb",
        ),
        pytest.param(
            lambda p: p.write_text("a: &a [1, *a]\n"), f"hostile.yaml:1:11: {RECURSIVE_ERROR}", id="recursive"
        ),
        pytest.param(
            _write_50_mb,
            "hostile.yaml: the file is 50 MB; a profile may be at most 1 MB (1,048,576 bytes), so this is "
            "not a profile",
            id="50-mb",
        ),
        pytest.param(
            _secrets_bomb,
            "hostile.yaml:1: branch.name: secret 'a9' not found: cannot read the secrets file "
            f"{{secrets}} (line {BOMB_AT[0]}): {BOMB_ERROR}",
            id="bomb-in-the-secrets-file",
        ),
    ],
)
def test_check_refuses_hostile_yaml_in_one_line_with_bounded_memory(make, error):
    path = Path("hostile.yaml")
    make(path)
    error = error.replace("{secrets}", str(Path("secrets.yaml").resolve()))
    status, lines, seconds, peak_kb = run_check(path)
    print(f"{path.stat().st_size:,} bytes: {seconds:.2f} s, peak RSS {peak_kb / 1024:.0f} MB")
    assert lines == [error, "hostile.yaml: 1 error; nothing was started"]
    assert status == 1
    assert peak_kb < PEAK_RSS_LIMIT_KB
