"""A configured feature whose library is missing stops the start with one line naming what to install, before
the model loads; `make run` / `pip install` bring both platforms."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Runs the CLI with some modules unimportable, as if they were not installed.
_HIDDEN_MAIN = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
from bot.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_hidden(hidden: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RWKV_BOT_")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-c", _HIDDEN_MAIN, hidden, *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=120)


def assert_one_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# A model that does not exist: the library check must come first (a missing library must not wait minutes for a
# real model to load before it is reported).
_NO_MODEL = {"RWKV_BOT_MODEL_PATH": "/nonexistent/model.pth"}


@pytest.mark.parametrize("hidden, env, fragments", [
    ("telegram", {"RWKV_BOT_TELEGRAM_TOKEN": "123:abc"}, ("telegram.token", "python-telegram-bot", "pip install")),
    ("aiolimiter", {"RWKV_BOT_TELEGRAM_TOKEN": "123:abc"}, ("telegram.token", "aiolimiter", "pip install")),
    ("tornado", {"RWKV_BOT_TELEGRAM_TOKEN": "123:abc", "RWKV_BOT_TELEGRAM_WEBHOOK_URL": "https://bot.example.org/tg",
                 "RWKV_BOT_TELEGRAM_WEBHOOK_SECRET": "abc"}, ("telegram.webhook_url", "tornado", "pip install")),
    ("discord", {"RWKV_BOT_DISCORD_TOKEN": "x" * 30}, ("discord.token", "discord.py", "pip install")),
    ("aiohttp", {"RWKV_BOT_DISCORD_TOKEN": "x" * 30}, ("discord.token", "aiohttp", "pip install")),
    ("prometheus_client", {"RWKV_BOT_METRICS_PORT": "9"}, ("metrics.port", "prometheus-client>=", "pip install")),
    ("asyncpg", {"RWKV_BOT_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:5432/test"},
     ("database.url", "asyncpg>=", "pip install")),
])
def test_run_names_the_missing_library_in_one_line(tmp_path, hidden, env, fragments):
    assert_one_line(run_hidden(hidden, "run", cwd=tmp_path, env={**_NO_MODEL, **env}), *fragments)


def test_chat_and_db_name_a_missing_database_driver(tmp_path):
    env = {"RWKV_BOT_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:5432/test", **_NO_MODEL}
    assert_one_line(run_hidden("asyncpg", "chat", cwd=tmp_path, env=env), "asyncpg", "pip install")
    for action in ("upgrade", "check"):
        assert_one_line(run_hidden("asyncpg", "db", action, cwd=tmp_path, env=env), "asyncpg", "pip install")


def test_chat_needs_no_platform_library(tmp_path):
    """The terminal chat ignores platform tokens, so their libraries are not required there."""
    result = run_hidden("telegram,discord", "chat", cwd=tmp_path, env={**_NO_MODEL, "RWKV_BOT_TELEGRAM_TOKEN": "1:a"})
    assert "telegram" not in result.stderr.lower()
    assert "/nonexistent/model.pth" in result.stderr  # got as far as the model


def test_both_platform_libraries_are_installed_by_default():
    """`make run` installs the project without extras (and so does a plain `pip install`): the platforms must be
    ordinary dependencies, not extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {dep.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
             for dep in project["dependencies"]}
    assert {"discord.py", "python-telegram-bot"} <= names
