"""Type-check the ``vipsense`` package with mypy (configuration in pyproject.toml, ``[tool.mypy]``).

setup.cfg installs ``core/`` as ``vipsense`` and ``plugins/`` as ``vipsense.plugins`` (``package_dir``),
which mypy cannot follow, so :func:`typecheck` first lays out the package as it is installed: a
``vipsense/`` folder of symlinks to every entry of ``core/``, plus ``vipsense/plugins`` -> ``plugins/``.
``tests/test_types.py`` runs it in the suite; a developer runs it as ``python -m tests.typecheck``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def build_package_tree(root: Path) -> Path:
    """``root/vipsense`` as setup.cfg installs it, made of symlinks into the work tree (so mypy reports
    the real files' lines; its paths read ``vipsense/...`` instead of ``core/...``)."""
    package = root / "vipsense"
    package.mkdir()
    for entry in (REPO / "core").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    (package / "plugins").symlink_to(REPO / "plugins")
    return package


def typecheck(workdir: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run mypy on the ``vipsense`` package laid out under ``workdir``; its cache stays there too."""
    build_package_tree(workdir)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(REPO / "pyproject.toml"),
            "--cache-dir",
            str(workdir / ".mypy_cache"),
            "-p",
            "vipsense",
        ],
        env={**os.environ, "MYPYPATH": str(workdir)},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="vipsense-typecheck-") as workdir:
        result = typecheck(Path(workdir))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
