"""Shared fixtures: demo checkpoints made by the project's own `rwkv-bot demo-model`, configs, a built app.

The `rwkv` package serves one RWKV version per process (it decides at import); in-process tests use RWKV-7 and
RWKV-6 is exercised in subprocesses.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("RWKV_TEST_POSTGRES_URL", "")
CHARACTERS = ROOT / "bot" / "cards" / "samples"


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, input: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m bot ...` in a subprocess, with a clean RWKV_BOT_* environment."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RWKV_BOT_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd or ROOT, env=full_env, input=input,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


def make_demo_model(directory: Path, name: str, version: int, seed: int) -> Path:
    """A 2-layer x 128 demo checkpoint written through the CLI."""
    path = directory / name
    result = run_cli("demo-model", str(path), "--version", str(version), "--layers", "2", "--dim", "128",
                     "--seed", str(seed))
    assert result.returncode == 0, result.stderr
    return path.with_suffix(".pth")


@pytest.fixture(scope="session")
def demo7(models_dir) -> Path:
    return make_demo_model(models_dir, "demo7", 7, seed=7)


@pytest.fixture(scope="session")
def demo7_other(models_dir) -> Path:
    """Same shape, other weights: a different model for 'model changed' tests."""
    return make_demo_model(models_dir, "demo7b", 7, seed=8)


@pytest.fixture(scope="session")
def demo6(models_dir) -> Path:
    return make_demo_model(models_dir, "demo6", 6, seed=6)


def write_config(directory: Path, model: Path, *, db: str | None = None, backend: str = "rwkv-pip",
                 settings: dict | None = None, extra: str = "") -> Path:
    """A config file for tests: the demo model on the CPU, a private SQLite database, the sample cards.
    `settings` overrides keys as {"section.key": value}."""
    directory.mkdir(parents=True, exist_ok=True)
    sections = {
        "model": {"path": str(model), "strategy": "cpu fp32", "backend": backend, "chunk_len": 64},
        "database": {"url": db or f"sqlite+aiosqlite:///{directory / 'bot.db'}"},
        "characters": {"dir": str(CHARACTERS), "default": "Mira"},
        # Tests send fast on purpose; flood control has its own tests.
        "limits": {"user_messages_per_minute": 1_000_000, "channel_messages_per_minute": 1_000_000},
    }
    for dotted, value in (settings or {}).items():
        section, key = dotted.split(".")
        sections.setdefault(section, {})[key] = value
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = directory / "rwkv-bot.toml"
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


@pytest.fixture(params=["rwkv-pip", "batched"])
def config_file(request, tmp_path, demo7) -> Path:
    """Both backends serve every conversation test: the plain package and the batched engine."""
    return write_config(tmp_path, demo7, backend=request.param)


@pytest.fixture
async def app(config_file):
    from bot.app import build_app
    from bot.config import load_config

    application = await build_app(load_config(config_file, env={}))
    yield application
    await application.close()


@pytest.fixture
async def postgres_url():
    """A fresh, empty PostgreSQL database (dropped afterwards); skipped with the reason where there is none."""
    if not POSTGRES_URL:
        pytest.skip("RWKV_TEST_POSTGRES_URL is not set (.ci/run sets it); PostgreSQL tests skipped")
    import asyncpg

    base = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
    try:
        admin = await asyncpg.connect(base, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} unreachable: {exc}")
    name = f"rwkvbot_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    """Each database kind in turn: one that does not exist yet (SQLite: no file, not even its directory) or exists
    empty (PostgreSQL)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'db' / 'bot.db'}"
    return request.getfixturevalue("postgres_url")
