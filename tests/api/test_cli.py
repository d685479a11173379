"""The ``roomactors`` console script: --help, version, and settings errors."""

from __future__ import annotations

import io
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from api.cli import main, package_version


def test_version_prints_the_distribution_version() -> None:
    out = io.StringIO()
    assert main(["version"], stdout=out) == 0
    assert out.getvalue() == f"roomactors {package_version()}\n"
    assert package_version() == version("roomactors")


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: roomactors")
    assert "serve" in out and "version" in out


def test_serve_help_documents_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "--config PATH" in capsys.readouterr().out


def test_no_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "required: COMMAND" in capsys.readouterr().err


def test_serve_with_a_bad_settings_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text("[server]\nserver_name = 'no spaces allowed'\n", encoding="utf-8")
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("roomactors: error: ") and "server_name" in err
    assert err.count("\n") == 1


def test_console_script_entry_point_runs() -> None:
    script = Path(sys.executable).with_name("roomactors")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: roomactors")
