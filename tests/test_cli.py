"""The command line's own behaviour: version, clear errors instead of tracebacks."""

from __future__ import annotations

import pytest

from vipsense import __version__
from vipsense.cli import main

from .conftest import REPO

DEMO = str(REPO / "profiles" / "demo.yaml")


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"vipsense {__version__}"


def test_run_with_unusable_data_dir_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main(["run", DEMO, "--data-dir", str(blocker / "sub"), "--no-status"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot use the data directory {blocker / 'sub'}: [Errno 20] Not a directory" in err
    assert "Traceback" not in err


def test_run_with_missing_profile(tmp_path, capsys):
    code = main(["run", str(tmp_path / "nope.yaml"), "--no-status"])
    err = capsys.readouterr().err
    assert code == 1
    assert "nope.yaml: file not found" in err
    assert "nothing was started" in err


def test_speed_must_be_positive(capsys):
    assert main(["run", DEMO, "--speed", "0"]) == 2
    assert "--speed must be greater than 0" in capsys.readouterr().err
