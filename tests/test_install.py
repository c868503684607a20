"""A non-editable `pip install .` (what a pip user gets) brings its migrations and sample characters: in an empty
directory `rwkv-bot chat` creates and migrates its database and the default sample character answers.

The fresh venv borrows this venv's installed dependencies through a path file (torch is not installed again, so
the test takes seconds) and gets the project itself from a wheel built from a copy of the sources, so nothing can
come from the repository's working tree.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("RWKV_BOT_") and k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, str]:
    """(the fresh venv's bin directory, pip's output)."""
    base = tmp_path_factory.mktemp("pip-install")
    source = base / "src"
    shutil.copytree(ROOT / "bot", source / "bot", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # A plain path line: this venv's packages become importable, its own .pth files (our editable install's
    # finder among them) are not run. Its setuptools builds the wheel (the Makefile keeps it recent enough).
    Path(purelib, "dependencies-from-the-dev-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    result = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                             str(source)], capture_output=True, text=True, cwd=base, env=_clean_env(), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return venv / "bin", result.stdout + result.stderr


def test_install_gives_no_setuptools_deprecation_warning(installed):
    _, output = installed
    assert "deprecated" not in output.lower() and "project.license" not in output, output


def test_installed_package_is_not_the_working_tree(installed, tmp_path):
    bin_dir, _ = installed
    where = subprocess.run([str(bin_dir / "python"), "-c", "import bot; print(bot.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, env=_clean_env(), check=True).stdout.strip()
    assert Path(where).is_relative_to(bin_dir.parent) and not Path(where).is_relative_to(ROOT), where


def test_chat_in_an_empty_directory_migrates_its_database_and_answers(installed, tmp_path):
    bin_dir, _ = installed
    result = subprocess.run([str(bin_dir / "rwkv-bot"), "chat"], cwd=tmp_path, env=_clean_env(), timeout=300,
                            input="/char list\n/params set temperature 0 max_tokens 4\nhello\n",
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "林小满" in result.stdout and "Mira" in result.stdout  # the samples, from package data
    assert any(line.startswith("Mira: ") for line in result.stdout.splitlines()), result.stdout
    with sqlite3.connect(tmp_path / "data" / "rwkv-bot.db") as db:
        (version,) = db.execute("select version_num from alembic_version").fetchone()
        assert db.execute("select count(*) from turns").fetchone()[0] == 1
    from alembic.script import ScriptDirectory

    from bot.store.migrate import alembic_config

    assert version == ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
