"""`rwkv-bot db` and a database that cannot be used, on SQLite and PostgreSQL: `db check` creates nothing, a
downgrade says what it deletes and needs --yes, a database that cannot be reached is one line for `run`, `chat`
and `db`, and tables an older `db check` made without Alembic's version no longer stop every start."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from bot.store import Base, Store, StoreError
from bot.store.migrate import head_revision
from tests.conftest import run_cli


def db(*args: str, url: str, cwd) -> subprocess.CompletedProcess:
    return run_cli("db", *args, cwd=cwd, env={"RWKV_BOT_DATABASE_URL": url})


async def table_names(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


def one_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout + result.stderr
    return lines[0]


async def test_check_on_a_new_database_creates_nothing_and_the_bot_then_starts(database_url, tmp_path):
    check = db("check", url=database_url, cwd=tmp_path)
    assert check.returncode != 0
    line = one_line(check)
    assert "rwkv-bot db upgrade" in line or "creates it" in line, line
    if database_url.startswith("sqlite"):
        assert not (tmp_path / "db").exists()  # not even the directory
    else:
        assert await table_names(database_url) == set()
    store = Store(database_url)
    await store.open()  # the start after it migrates: no "table channels already exists"
    assert await store.revision() == head_revision()
    await store.close()
    check = db("check", url=database_url, cwd=tmp_path)
    assert check.returncode == 0 and check.stdout.strip() == "database consistent", check.stdout + check.stderr


async def test_tables_an_older_db_check_made_are_adopted_when_empty_and_refused_with_rows(database_url):
    if database_url.startswith("sqlite"):
        Path(database_url.split(":///", 1)[1]).parent.mkdir(parents=True)
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:  # exactly what `db check` used to do
        await conn.run_sync(Base.metadata.create_all)
    store = Store(database_url)
    await store.open()
    assert await store.revision() == head_revision() and await store.check() == []
    await store.close()

    async with engine.begin() as conn:  # the same with data in it: never dropped
        await conn.run_sync(Base.metadata.drop_all)
        await conn.exec_driver_sql("DROP TABLE alembic_version")
        await conn.run_sync(Base.metadata.create_all)
        await conn.exec_driver_sql("INSERT INTO characters (content_hash, name, source_format, card, filename, raw, "
                                   "origin, created) VALUES ('h', 'n', 'f', '{}', 'x', '', 'dir', CURRENT_TIMESTAMP)")
    await engine.dispose()
    with pytest.raises(StoreError, match="no migration version"):
        await Store(database_url).open()
    assert "alembic_version" not in await table_names(database_url)
    assert "characters" in await table_names(database_url)


async def test_downgrade_says_what_it_deletes_and_needs_yes(database_url, tmp_path):
    store = Store(database_url)
    await store.open()
    channel = await store.get_or_create_channel("t", "1")
    for name in ("a", "b"):
        await store.put_save(channel.id, name, {"turns": []}, [torch.zeros(4)], "fp", 1, limit=10)
    await store.close()

    asked = db("downgrade", "--revision", "0001", url=database_url, cwd=tmp_path)
    assert asked.returncode == 1
    assert "saves: 2 rows (named saves" in asked.stdout and "--yes" in asked.stderr
    assert "saves" in await table_names(database_url)  # nothing changed

    done = db("downgrade", "--revision", "0001", "--yes", url=database_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "saves" not in await table_names(database_url) and "turns" in await table_names(database_url)
    everything = db("downgrade", "--revision", "base", url=database_url, cwd=tmp_path)
    assert everything.returncode == 1 and "channels: 1 rows" in everything.stdout


def test_unreachable_or_malformed_database_is_one_line_for_run_chat_and_db(tmp_path):
    no_server = "postgresql+asyncpg://postgres:secret@127.0.0.1:1/test"
    # No model is configured: the database is opened first, so this is reported before any model loads.
    for args in (("run",), ("chat",), ("db", "check"), ("db", "upgrade"), ("db", "downgrade")):
        result = run_cli(*args, cwd=tmp_path, env={"RWKV_BOT_DATABASE_URL": no_server,
                                                   "RWKV_BOT_MODEL_PATH": str(tmp_path / "none.pth")})
        assert result.returncode == 2
        line = one_line(result)
        assert "cannot connect to the database postgresql+asyncpg://postgres:***@127.0.0.1:1/test" in line, line
        assert "secret" not in line
    for url, expected in (("nonsense", "not a database URL"), ("mysqlx+nodriver://h/db", "unknown database kind")):
        result = run_cli("chat", cwd=tmp_path, env={"RWKV_BOT_DATABASE_URL": url})
        assert result.returncode == 2 and expected in one_line(result)
    assert not (tmp_path / "data").exists()


async def test_a_postgres_database_that_does_not_exist_is_one_line(postgres_url, tmp_path):
    missing = postgres_url.rsplit("/", 1)[0] + "/no_such_database_here"
    result = run_cli("db", "check", cwd=tmp_path, env={"RWKV_BOT_DATABASE_URL": missing})
    assert result.returncode == 2 and 'database "no_such_database_here" does not exist' in one_line(result)
