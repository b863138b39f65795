"""Shared fixtures: real entry-point distributions written on disk, small valid profiles (built by
``tests/profiles.py``), and a running branch.

CI runs everything (``python -m pytest -q``).  While you work, the fast core runs in under a minute:

    python -m pytest -q -m "not slow and not netns and not browser and not slapd and not postgres"

``slow``: takes more than about half a second; ``netns``: needs root and network namespaces;
``browser``: a headless Chromium through Playwright; ``slapd``: a real OpenLDAP server;
``postgres``: a real PostgreSQL cluster, started once per session (``tests/postgres.py``)
(``tests/test_markers.py`` checks that the last four are marked where they are used).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vipsense import i18n
from vipsense.pluginhost import PluginHost, load_host

from .postgres import postgres_url  # noqa: F401  (the session's PostgreSQL cluster, a fixture)
from .profiles import branch_profile

REPO = Path(__file__).resolve().parent.parent

# The tests read messages as they are written, in English, whatever the machine's locale; the
# Chinese catalogue has tests of its own that ask for it (i18n.using("zh_CN"), LANG=zh_CN.UTF-8).
# Set here, before any test starts a command, so subprocesses inherit it too.
for _variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
    os.environ.pop(_variable, None)
os.environ["LANG"] = "en_US.UTF-8"

#: a valid small branch: one door, the SQLite store, a console screen, three staff, the usual routes
BASE_PROFILE = branch_profile()

SEED = """\
customers:
  - {customer_no: C1, name: Ada Wong, tier: gold, id_number: "110101199003071234",
     mobile: "13812345678", client_manager: cm1}
  - {customer_no: C2, name: Bo Li, tier: platinum}
cards:
  - {epc: E20000000000000000000001, customer_no: C1}
  - {epc: E20000000000000000000002, customer_no: C2, status: lost}
"""


@pytest.fixture
def write_profile(tmp_path):
    """Write a profile (default: a valid small branch) and its seed file; return the path."""

    def write(text: str = BASE_PROFILE, name: str = "branch.yaml", seed: str = SEED) -> Path:
        (tmp_path / "seed.yaml").write_text(seed, encoding="utf-8")
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """Install a plugin the way pip would: a module plus a ``*.dist-info`` with entry points, on a
    directory put at the front of ``sys.path``.  Returns ``make(dist, {ep_name: source})``."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    made: list[str] = []

    def make(dist: str, plugins: dict[str, str], version: str = "1.2.3") -> None:
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = ["[vipsense]"]
        for ep_name, source in plugins.items():
            module = f"{dist.replace('-', '_')}_{ep_name.replace('-', '_')}"
            (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
            lines.append(f"{ep_name} = {module}")
            made.append(module)
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")

    yield make
    for module in made:
        sys.modules.pop(module, None)


@pytest.fixture(scope="module")
def host() -> PluginHost:
    """The installed plugins (built-ins included), whatever VIPSENSE_DISABLE_PLUGINS says."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("VIPSENSE_DISABLE_PLUGINS", raising=False)
        return load_host()


@pytest.fixture(autouse=True)
def restore_process_state():
    """``vipsense.cli.main`` replaces the root logger's handlers and a running branch sets the process's
    language; put them (and signals) back."""
    i18n.set_default("en")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    sigint, sigterm = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    signal.signal(signal.SIGINT, sigint)
    signal.signal(signal.SIGTERM, sigterm)
    i18n.set_default("en")


def wait_for(condition, timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; tests assert on the result."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def running_branch(write_profile, tmp_path):
    """Start a real :class:`~vipsense.branch.Branch` from profile text; every one made is stopped at
    teardown.  ``make(text, seed=SEED, plugins={name: obj}, data_dir=None, output=None,
    wait_open=True)`` returns the started branch, by default once its stores are open.  ``plugins``
    are added to a freshly loaded host before the profile is read (test notifier types, hook
    observers)."""
    import io

    from vipsense.branch import Branch
    from vipsense.config.profile import load_profile
    from vipsense.output import Output

    made = []

    def make(
        text: str,
        seed: str = SEED,
        plugins: dict | None = None,
        data_dir: Path | None = None,
        output=None,
        wait_open: bool = True,
        clock=None,
    ):
        host = load_host()
        for name, obj in (plugins or {}).items():
            host.add(obj, name)
        profile = load_profile(write_profile(text, seed=seed), host, data_dir=data_dir or tmp_path / "data")
        branch = Branch(profile, host, clock=clock, output=output or Output(io.StringIO(), live=False))
        branch.start()
        made.append(branch)
        if wait_open:  # arrivals before this are held for the stores (tests/test_slow_stores.py)
            assert branch.wait_stores_open(10.0), "the stores did not open"
        return branch

    yield make
    for branch in made:
        if not branch.stopping:
            branch.stop()


@pytest.fixture
def web_branch(running_branch):
    """A running Branch with its web on 127.0.0.1 (any free port) and one account per role
    (``tests/web_support.py``).  ``make(text=WEB_PROFILE, seed=WEB_SEED, accounts=ACCOUNTS, **kw)``;
    the server is stopped before its branch at teardown."""
    from vipsense.web.server import WebServer

    from .web_support import ACCOUNTS, PASSWORD, WEB_PROFILE, WEB_SEED, WebBranch

    made = []

    def make(text: str = WEB_PROFILE, seed: str = WEB_SEED, accounts=ACCOUNTS, **kw) -> WebBranch:
        branch = running_branch(text, seed=seed, **kw)
        server = WebServer(branch, branch.profile.web)
        for name, role in accounts.items():
            server.users.add(name, role, PASSWORD)
        server.start()
        made.append(server)
        return WebBranch(branch, server)

    yield make
    for server in made:
        server.stop()


# -- hypothesis profiles ---------------------------------------------------------------------------------
# Kept last, its imports with it, so that it never gets in the way of the fixtures above.
import os  # noqa: E402

from hypothesis import HealthCheck, settings  # noqa: E402

# CI (CI=true, as .ci/run sets): derandomized, so an outcome depends on the code alone and not on a random
# seed or on examples an earlier run saved; no deadline and no too-slow health check, so it does not depend
# on the machine's load either; a failure prints the blob that replays it.  Every failing example ever
# found stays in its test as an @example.  Locally: hypothesis's default profile, which explores.
settings.register_profile(
    "vipsense-ci",
    settings.get_profile("default"),
    derandomize=True,
    database=None,
    print_blob=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
_IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
settings.load_profile("vipsense-ci" if _IN_CI else "default")
