"""Conversations and exact states in the database: restarts, undo beyond the snapshots, model changes,
migrations (SQLite and a real PostgreSQL), and context rebases."""
from __future__ import annotations

import asyncio

import pytest
import torch

from bot.app import build_app
from bot.config import load_config
from bot.engine.backend import states_equal
from bot.conversations import ChannelKey
from bot.i18n import t
from bot.store import (Base, Store, expand_runs, pack_state, split_by_lengths, tokens_from_bytes,
                              unpack_state, upgrade_database, downgrade_database)
from bot.store.migrate import head_revision
from tests.chat_helpers import GREEDY, head_state, reply, send
from tests.conftest import run_cli, write_config


def test_state_bytes_round_trip_exactly():
    state = [torch.randn(64).half(), torch.randn(2, 64, 64), torch.randn(64).bfloat16(), torch.randn(64)]
    state[1][0, 0, 0] = float("nan")  # even NaN payloads and -0.0 survive bit for bit
    state[3][0] = -0.0
    packed = pack_state(state)
    back = unpack_state(packed.header, packed.blob)
    assert [t.dtype for t in back] == [t.dtype for t in state]
    for a, b in zip(state, back):
        assert a.shape == b.shape and torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8))


async def test_two_channels_storing_the_same_initial_state_at_once_both_succeed(tmp_path):
    """Many channels starting the same character at once (the 200-chat load test) all build its initial state; the
    first to store it wins and the others carry on."""
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'init.db'}")
    await store.open()
    try:
        state = [torch.randn(8), torch.randn(2, 4, 4), torch.randn(8)]
        await asyncio.gather(*(store.put_initial("hash", "fp", "card", state, 12) for _ in range(8)))
        stored, tokens = await store.get_initial("hash", "fp")
        assert tokens == 12 and all(torch.equal(a, b) for a, b in zip(stored, state))
    finally:
        await store.close()


async def open_app(config_file):
    return await build_app(load_config(config_file, env={}))


async def test_restart_continues_exactly(tmp_path, demo7):
    """Turns in one process, the next in a new one on the same database == one uninterrupted run."""
    config = write_config(tmp_path, demo7)
    messages = ["good morning", "where is the harbour?", "thank you"]
    first = await open_app(config)
    await send(first, "/char use Mira")
    await send(first, GREEDY)
    for m in messages[:2]:
        await reply(first, m)
    await first.close()
    second = await open_app(config)
    after_restart = await reply(second, messages[2])
    assert "* max_tokens = 16" in (await send(second, "/params"))[0]  # params persisted
    await second.close()

    other = write_config(tmp_path / "uninterrupted", demo7)
    uninterrupted = await open_app(other)
    await send(uninterrupted, "/char use Mira")
    await send(uninterrupted, GREEDY)
    for m in messages[:2]:
        await reply(uninterrupted, m)
    assert await reply(uninterrupted, messages[2]) == after_restart
    await uninterrupted.close()


def test_terminal_chat_stopped_and_restarted_gives_the_same_reply(tmp_path, demo7):
    config = write_config(tmp_path, demo7)
    run = lambda script: run_cli("chat", "--config", str(config), input=script, cwd=tmp_path)
    first = run("/char use Mira\n/params set temperature 0 max_tokens 12\nhello\nhow are you\n")
    second = run("what next\n")
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-2000:]
    restarted = [l for l in second.stdout.splitlines() if l.startswith("Mira: ")][-1]
    config2 = write_config(tmp_path / "uninterrupted", demo7)
    whole = run_cli("chat", "--config", str(config2), cwd=tmp_path,
                    input="/char use Mira\n/params set temperature 0 max_tokens 12\nhello\nhow are you\nwhat next\n")
    assert [l for l in whole.stdout.splitlines() if l.startswith("Mira: ")][-1] == restarted


async def test_undo_beyond_the_kept_snapshots_is_exact(tmp_path, demo7):
    config = write_config(tmp_path, demo7, settings={"database.snapshots": 2})
    app = await open_app(config)
    await send(app, "/char use Mira")
    await send(app, GREEDY)
    replies, states = [], []
    for i in range(6):
        states.append(await head_state(app))
        replies.append(await reply(app, f"message {i}"))
    key = ChannelKey("test", "c1")
    ch = await app.conversations.channel(key)
    kept = await app.store.nearest_state(ch.id, 1)
    assert kept.position == 0  # only the initial state and the last two turns are stored
    app.conversations._hot.clear()  # force the database path
    await send(app, "/undo 4")
    assert states_equal(await head_state(app), states[2])  # replayed from the initial state: bit-identical
    assert await reply(app, "message 2") == replies[2]
    await app.close()


async def test_model_change_rebuilds_states_instead_of_reusing_them(tmp_path, demo7, demo7_other):
    config = write_config(tmp_path, demo7)
    app = await open_app(config)
    await send(app, "/char use Mira")
    await send(app, GREEDY)
    for m in ("one", "two"):
        await reply(app, m)
    old_state = await head_state(app)
    await app.close()

    config.write_text(config.read_text().replace(str(demo7), str(demo7_other)))
    app = await open_app(config)
    key = ChannelKey("test", "c1")
    ch = await app.conversations.channel(key)
    new_state = await head_state(app)
    assert not states_equal(new_state, old_state)
    # Independently: the new model fed the character's prompt and the stored turns' tokens, call by call.
    backend, tok = app.engine.backend, app.engine.tokenizer
    from bot.cards import build_prompt
    card = app.conversations._card(ch)
    prompt = build_prompt(card, user=ch.user_label, char_label="Mira", user_label=ch.user_label,
                          count_tokens=tok.count, max_prompt_tokens=app.conversations.max_context // 2)
    backend.load(99, backend.zero_state())
    ids = tok.encode(prompt.text)
    for i in range(0, len(ids), 64):
        backend.forward([(99, ids[i:i + 64])])
    for turn in await app.store.turns(ch.id):
        for chunk in split_by_lengths(tokens_from_bytes(turn.fed), expand_runs(turn.feed_lengths)):
            backend.forward([(99, chunk)])
    assert states_equal(backend.save(99), new_state)
    stored = await app.store.nearest_state(ch.id, ch.head)
    assert stored.fingerprint == app.conversations.fingerprint and stored.pinned
    await app.close()


async def test_context_rebase_keeps_the_visible_log(tmp_path, demo7):
    config = write_config(tmp_path, demo7, settings={"model.max_context_tokens": 1000})
    app = await open_app(config)
    await send(app, "/char use Mira")
    await send(app, "/params set temperature 0 max_tokens 60")
    key = ChannelKey("test", "c1")
    for i in range(20):
        await reply(app, f"a long message number {i} about ships, weather, maps and the old lighthouse")
        view = await app.conversations.view(key)
        assert view.context_tokens <= 1000 + 200
    ch = await app.conversations.channel(key)
    assert ch.head == 20 and len(await app.store.turns(ch.id)) == 20  # every turn still in the log
    assert ch.base_position > 0  # the state was rebuilt from the card and recent turns
    assert "Context:" in (await send(app, "/params"))[0]
    await app.close()


async def test_undo_past_a_rebase_goes_back_to_the_state_before_it(tmp_path, demo7):
    """A rebase rebuilds the state from the card at some turn; undoing to before that turn gives back the state
    the channel had there, exactly, and the channel's base goes back with it (never above the head)."""
    app = await open_app(write_config(tmp_path, demo7, settings={"model.max_context_tokens": 1000}))
    try:
        await send(app, "/char use Mira")
        await send(app, "/params set temperature 0 max_tokens 30")
        key = ChannelKey("test", "c1")
        states = {}
        rebase = 0
        for i in range(40):
            await reply(app, f"message {i} about the lighthouse")
            ch = await app.conversations.channel(key)
            states[ch.head] = await head_state(app)
            if ch.base_position and not rebase:
                rebase = ch.base_position
            if rebase and ch.head >= rebase + 2:
                break
        assert rebase > 3, "no rebase happened: make the messages longer or max_context_tokens smaller"
        target = rebase - 2
        ch = await app.conversations.channel(key)
        assert await send(app, f"/undo {ch.head - target}") == [t("undo_done", count=ch.head - target)]
        ch = await app.conversations.channel(key)
        assert ch.head == target and ch.base_position == 0
        assert await app.store.check() == []
        debug = (await send(app, "/debug 4"))[0]
        assert f"({target} exchanges since the character's prompt)" in debug
        assert states_equal(await head_state(app), states[target])
        app.conversations._hot.clear()  # and from the database
        assert states_equal(await head_state(app), states[target])
        await reply(app, f"message {target} about the lighthouse")  # the same line again: the same state
        assert states_equal(await head_state(app), states[target + 1])
        ch = await app.conversations.channel(key)
        assert ch.base_position == 0 and ch.head == target + 1 and await app.store.check() == []
    finally:
        await app.close()


async def test_two_channels_written_concurrently_stay_consistent(app):
    async def talk(channel):
        await send(app, "/char use Mira", channel=channel)
        await send(app, GREEDY, channel=channel)
        return [await reply(app, f"hello {i}", channel=channel) for i in range(3)]

    a, b = await asyncio.gather(talk("A"), talk("B"))
    assert a == b
    assert await app.store.check() == []


async def check_migrations(url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy.ext.asyncio import create_async_engine

    await asyncio.to_thread(upgrade_database, url)
    engine = create_async_engine(url)

    def diff(conn):
        return compare_metadata(MigrationContext.configure(conn), Base.metadata)

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []  # the migrations build exactly the models' schema
    await asyncio.to_thread(downgrade_database, url, "0001")
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: __import__("sqlalchemy").inspect(c).get_table_names())
    assert "saves" not in tables and "turns" in tables
    await asyncio.to_thread(downgrade_database, url, "base")
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: __import__("sqlalchemy").inspect(c).get_table_names())
    assert set(tables) <= {"alembic_version"}
    await asyncio.to_thread(upgrade_database, url)
    await engine.dispose()
    store = Store(url)
    await store.open()
    ch = await store.get_or_create_channel("t", "1")
    await store.reset_channel(ch.id, [torch.zeros(4)], "fp", 1, character="h")
    assert await store.check() == []
    await store.close()


async def test_migrations_on_sqlite(tmp_path):
    await check_migrations(f"sqlite+aiosqlite:///{tmp_path}/m.db")


async def test_migrations_on_postgres(postgres_url):
    await check_migrations(postgres_url)


async def test_conversation_on_postgres(tmp_path, demo7, postgres_url):
    config = write_config(tmp_path, demo7, db=postgres_url)
    app = await open_app(config)
    await send(app, "/char use Mira")
    await send(app, GREEDY)
    first = await reply(app, "hello")
    await send(app, "/undo")
    assert await reply(app, "hello") == first
    await app.close()
    app = await open_app(config)  # restart on the same database
    assert "* max_tokens = 16" in (await send(app, "/params"))[0]
    assert await app.store.check() == []
    await app.close()


def test_db_commands(tmp_path, demo7):
    config = write_config(tmp_path, demo7)
    upgrade = run_cli("db", "upgrade", "--config", str(config))
    assert upgrade.returncode == 0 and upgrade.stdout.strip() == f"database at revision {head_revision()}", \
        upgrade.stderr
    check = run_cli("db", "check", "--config", str(config))
    assert check.returncode == 0 and check.stdout.strip() == "database consistent"
    down = run_cli("db", "downgrade", "--config", str(config), "--revision", "base", "--yes")
    assert down.returncode == 0, down.stderr
    bench = run_cli("db", "bench", "--layers", "2", "--dim", "128", "--repeat", "1")
    assert bench.returncode == 0 and '"stored_bytes"' in bench.stdout


async def test_concurrent_commits_on_sqlite_never_fail_with_database_locked(tmp_path, monkeypatch):
    """Many channels committing turns at once: each commit reads the channel, then writes. On SQLite (WAL) a
    deferred transaction that has read cannot become a writer once another connection committed meanwhile, and
    fails at once with "database is locked" whatever the busy timeout; writes must take the lock up front.
    SQLite's busy wait is for other processes: writers of this process queue in the store, so even a busy timeout
    far shorter than one commit never fails one."""
    monkeypatch.setattr("bot.store.store.SQLITE_BUSY_SECONDS", 0.001)
    store = Store(f"sqlite+aiosqlite:///{tmp_path}/busy.db")
    await store.open()
    try:
        state = [torch.zeros(4), torch.zeros(1, 2, 2), torch.zeros(4)]
        channels = [await store.get_or_create_channel("test", str(i)) for i in range(12)]
        record = {"kind": "say", "in_speaker": "A", "in_text": "hi", "out_speaker": "B", "out_text": "yo",
                  "fed": b"", "prompt_len": 0, "feed_lengths": []}

        async def talk(channel) -> None:
            for _ in range(8):
                await store.commit_turn(channel.id, dict(record), state, "fp", 1)

        await asyncio.gather(*(talk(ch) for ch in channels))
        for ch in channels:
            assert len(await store.turns(ch.id)) == 8
    finally:
        await store.close()
