"""Commands start fast because they import only what they use: ``--version`` nothing of the branch,
``check`` nothing of the web, and no password hash is computed before a password is checked.  The
figures are measured by bench/cli.py; these tests pin the imports that made them slow."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import REPO

HEAVY = ("flask", "werkzeug", "jinja2", "cheroot", "zeroconf", "vipsense.web.auth", "vipsense.branch")


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_version_imports_nothing_of_the_branch():
    code = "import contextlib\nfrom vipsense.cli import main\n"
    modules = modules_after(code + "with contextlib.suppress(SystemExit):\n    main(['--version'])")
    assert loaded(modules, (*HEAVY, "vipsense.pluginhost", "vipsense.config", "yaml")) == []


def test_check_imports_nothing_of_the_web():
    modules = modules_after(
        "from vipsense.cli import main\nassert main(['check', 'profiles/demo.yaml']) == 0"
    )
    assert loaded(modules, ("flask", "werkzeug", "jinja2", "cheroot", "vipsense.web.auth")) == []


def test_the_account_store_computes_no_hash_until_a_password_is_checked():
    modules = modules_after("import vipsense.web.users as u\nassert u._dummy_hash.cache_info().currsize == 0")
    assert loaded(modules, ("werkzeug",)) == []


def test_the_help_still_lists_every_built_in_command(capsys):
    from vipsense.cli import COMMANDS, main

    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for name, (_, help_text) in COMMANDS.items():
        assert name in out and help_text in " ".join(out.split())
