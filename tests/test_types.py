"""The ``vipsense`` package type-checks with mypy (``tests/typecheck.py`` runs it; the strictness is
``[tool.mypy]`` in pyproject.toml)."""

from pathlib import Path

import pytest

from .typecheck import typecheck


@pytest.mark.slow
def test_mypy_is_clean(tmp_path: Path) -> None:
    result = typecheck(tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
