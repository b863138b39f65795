"""A test that needs a real slapd, a headless Chromium, network namespaces or the real PostgreSQL cluster
carries the matching marker (``slapd``, ``browser``, ``netns``, ``postgres``), so that ``pytest -m "not slow
and not netns and not browser and not slapd and not postgres"`` really leaves them out.  Read from the test
modules' source: where a module uses one outside its test functions (an import, a fixture, a helper) the
module's ``pytestmark`` must carry the marker, unless that fixture's own decorator does (a parameter
``pytest.param("postgresql", marks=pytest.mark.postgres)``: only that parameter's tests use it); where
only a test function does, that function (or its module) must.

What it cannot see: a test that starts one of them in a child process (``tests/test_bench.py`` runs
``bench/stores.py``, which starts slapd: that test is marked ``slow``)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def _starts_slapd(node: ast.AST) -> bool:
    """Imports or names ``tests/slapd.py``'s ``Slapd`` (its TLS helpers start no server)."""
    if isinstance(node, ast.ImportFrom):
        return node.module == "slapd" and node.level == 1 and any(a.name == "Slapd" for a in node.names)
    return isinstance(node, ast.Name) and node.id == "Slapd"


def _call_strings(node: ast.AST) -> Iterator[str]:
    """String constants given to a call (``importorskip("playwright...")``, ``["ip", "netns", ...]``);
    docstrings and comments that only talk about a tool are not uses of it."""
    if isinstance(node, ast.Call):
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            for sub in ast.walk(arg):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    yield sub.value


def _uses_browser(node: ast.AST) -> bool:
    if isinstance(node, ast.Import | ast.ImportFrom):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
        return any(n.split(".")[0] == "playwright" for n in names)
    return any(s.startswith("playwright") for s in _call_strings(node))


def _uses_netns(node: ast.AST) -> bool:
    return any(s == "netns" or s.startswith("ip netns") for s in _call_strings(node))


def _uses_postgres(node: ast.AST) -> bool:
    """Asks for the session's cluster: the ``postgres_url`` fixture as an argument, or by name."""
    if isinstance(node, ast.arg):
        return node.arg == "postgres_url"
    return any(s == "postgres_url" for s in _call_strings(node))


USES = {"slapd": _starts_slapd, "browser": _uses_browser, "netns": _uses_netns, "postgres": _uses_postgres}


def _marks(expr: ast.AST | None) -> set[str]:
    """``X`` of every ``pytest.mark.X`` in ``expr`` (a decorator, or a ``pytestmark`` value)."""
    found = set()
    for node in ast.walk(expr) if expr is not None else ():
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "mark"
        ):
            found.add(node.attr)
    return found


def _decorator_marks(node: ast.stmt) -> set[str]:
    """The marks in a fixture's (or any function's) decorators: its parameters' ``marks=``."""
    decorators = node.decorator_list if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else []
    return set().union(*map(_marks, decorators))


def _used(tree: ast.AST) -> set[str]:
    """The markers whose tool ``tree`` uses."""
    return {marker for node in ast.walk(tree) for marker, uses in USES.items() if uses(node)}


def _is_test(node: ast.stmt) -> bool:
    return isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")


def unmarked_uses(path: Path) -> list[str]:
    """``module::test needs @pytest.mark.X`` (or ``module uses X outside its tests``) for every use of a
    marked tool that its marker does not cover."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    module_marks: set[str] = set()
    tests: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
    rest: list[ast.stmt] = []  # imports, fixtures, helpers: what every test of the module may run
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            module_marks |= _marks(node.value)
        body = node.body if isinstance(node, ast.ClassDef) and node.name.startswith("Test") else [node]
        for member in body:
            (tests if _is_test(member) else rest).append(member)
    problems = []
    in_module = set().union(*(_used(node) - _decorator_marks(node) for node in rest)) - module_marks
    for marker in sorted(in_module):
        problems.append(
            f"{path.name} uses {marker} outside its tests: needs pytestmark = pytest.mark.{marker}"
        )
    for test in tests:
        marked = module_marks | in_module | set().union(*map(_marks, test.decorator_list))
        for marker in sorted(_used(test) - marked):
            problems.append(f"{path.name}::{test.name} needs @pytest.mark.{marker}")
    return problems


def test_every_test_that_starts_slapd_chromium_a_namespace_or_postgres_carries_the_marker():
    problems = [
        p for path in sorted(TESTS.glob("test_*.py")) if path != Path(__file__) for p in unmarked_uses(path)
    ]
    assert problems == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from .slapd import Slapd\n\ndef test_a(): Slapd('x')\n", ["m.py uses slapd outside its tests"]),
        ("def test_a():\n    from .slapd import Slapd\n", ["m.py::test_a needs @pytest.mark.slapd"]),
        ("import pytest\n@pytest.mark.slapd\ndef test_a():\n    from .slapd import Slapd\n", []),
        ("import pytest\npytestmark = [pytest.mark.slapd]\nfrom .slapd import Slapd\n", []),
        ("import pytest\nsync_api = pytest.importorskip('playwright.sync_api')\n", ["m.py uses browser"]),
        ("def test_a():\n    run(['ip', 'netns', 'add', 'x'])\n", ["m.py::test_a needs @pytest.mark.netns"]),
        ('"""Not Playwright, no ip netns, no slapd: words only."""\ndef test_a(): pass\n', []),
        ("def test_a(postgres_url):\n    pass\n", ["m.py::test_a needs @pytest.mark.postgres"]),
        ("import pytest\n@pytest.mark.postgres\ndef test_a(postgres_url):\n    pass\n", []),
        ("@fixture\ndef db(request):\n    request.getfixturevalue('postgres_url')\n", ["m.py uses postgres"]),
        (
            "@fixture(params=['sqlite', param('pg', marks=pytest.mark.postgres)])\n"
            "def db(request):\n    request.getfixturevalue('postgres_url')\n",
            [],
        ),
    ],
)
def test_the_check_sees_uses_and_markers(tmp_path, source, expected):
    (tmp_path / "m.py").write_text(source, encoding="utf-8")
    found = unmarked_uses(tmp_path / "m.py")
    assert len(found) == len(expected) and all(f.startswith(e) for f, e in zip(found, expected, strict=True))
