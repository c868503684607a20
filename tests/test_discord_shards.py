"""Discord shards: two bot processes (here two adapters, each with its own app and database) connect one shard each
of the fake Discord (tests/fake_discord.py), which routes a server's events to shard (id >> 22) % count and DMs to
shard 0, as Discord does; the real discord.py AutoShardedClient, the real engine (demo model), real SQLite."""
from __future__ import annotations

import asyncio
import contextlib

import pytest

from bot.adapters.discord import DiscordAdapter
from bot.app import build_app
from bot.config import ConfigError, load_config
from tests.fake_discord import FakeDiscord
from tests.test_discord import committed_turn, config_for, persona_messages, turns

SHARDS = 2
GUILD_1 = 912345678901234567  # (id >> 22) % 2 == 1
GUILD_0 = GUILD_1 + (1 << 22)  # the next shard down: 0
LOBBY_0, LOBBY_1 = GUILD_0 + 100, GUILD_1 + 100
DM = 912345678901234650
OWNER, BOB = 912345678901234700, 912345678901234702


def shard_of(guild_id: int) -> int:
    return (guild_id >> 22) % SHARDS


def test_the_two_servers_are_on_different_shards():
    assert (shard_of(GUILD_0), shard_of(GUILD_1)) == (0, 1)


@pytest.fixture
async def fake():
    async with FakeDiscord(bot_name="RWKV Bot") as fake:
        fake.add_user(BOB, "bob", global_name="Bobby")
        for guild, lobby in ((GUILD_0, LOBBY_0), (GUILD_1, LOBBY_1)):
            fake.add_guild(guild, f"Server {shard_of(guild)}", owner_id=OWNER, locale="en-US")
            fake.add_member(guild, BOB)
            fake.add_channel(guild, lobby, "lobby")
        fake.add_channel(None, DM, type="dm", recipient_id=BOB)
        with fake.patched():
            yield fake


@contextlib.asynccontextmanager
async def shard_fronts(tmp_path, demo7, fake):
    """Two processes' worth: an app and its adapter for shard 0, another for shard 1, run as `rwkv-bot run` does."""
    apps, adapters, tasks, stop = [], [], [], asyncio.Event()
    try:
        for shard in range(SHARDS):
            config = config_for(tmp_path / f"shard{shard}", demo7, fake, **{
                "discord.shard_count": SHARDS, "discord.shard_ids": [shard],
                "sampling.temperature": 0, "sampling.max_tokens": 8})
            apps.append(await build_app(load_config(config, env={})))
            adapters.append(DiscordAdapter(apps[-1]))
            tasks.append(asyncio.create_task(adapters[-1].run(stop)))
        await fake.wait_for(lambda: any(t.done() for t in tasks) or all(a.client.is_ready() for a in adapters), 20)
        for task in tasks:
            if task.done():
                task.result()
                raise AssertionError("an adapter stopped before it was ready")
        yield apps, adapters
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
        for app in apps:
            await app.close()


async def answered(fake, app, channel: int, text: str):
    """BOB writes `text` in `channel`; the turn `app` committed for it, once the reply is on Discord."""
    turn = await committed_turn(fake, app, channel, BOB, text)
    await fake.wait_for(lambda: persona_messages(fake, channel), timeout=10)
    return turn


async def test_each_process_identifies_with_its_shard_and_answers_only_its_servers(tmp_path, demo7, fake):
    async with shard_fronts(tmp_path, demo7, fake) as ((app0, app1), (front0, front1)):
        assert sorted(p["shard"] for p in fake.identify_payloads) == [[0, SHARDS], [1, SHARDS]]
        assert front0.client.get_guild(GUILD_0) and front0.client.get_guild(GUILD_1) is None
        assert front1.client.get_guild(GUILD_1) and front1.client.get_guild(GUILD_0) is None
        mention = f"<@{fake.bot_user_id}>"
        turn0 = await answered(fake, app0, LOBBY_0, f"{mention} hello from server 0")
        turn1 = await answered(fake, app1, LOBBY_1, f"{mention} hello from server 1")
        dm = await answered(fake, app0, DM, "hello in private")  # DMs come on shard 0
        assert (turn0.in_text, turn1.in_text, dm.in_text) == ("hello from server 0", "hello from server 1",
                                                               "hello in private")
        assert await turns(app1, LOBBY_0) == [] and await turns(app0, LOBBY_1) == [] and await turns(app1, DM) == []
        # what each shard's session was sent: only its own servers' messages (and the DM only to shard 0)
        for conn in fake.gateway_connections:
            shard = conn.session.shard[0]
            created = [e["d"] for e in conn.session.events if e["t"] == "MESSAGE_CREATE"]
            channels = {int(m["channel_id"]) for m in created}
            assert channels == ({LOBBY_0, DM} if shard == 0 else {LOBBY_1})
    # the slash commands are the bot's: synced once, by the process with shard 0
    assert len(fake.requests_to("PUT /applications/*/commands")) == 1


async def test_shard_count_alone_connects_every_shard(tmp_path, demo7, fake):
    config = config_for(tmp_path, demo7, fake, **{"discord.shard_count": SHARDS})
    app = await build_app(load_config(config, env={}))
    adapter, stop = DiscordAdapter(app), asyncio.Event()
    task = asyncio.create_task(adapter.run(stop))
    try:
        await fake.wait_for(lambda: task.done() or adapter.client.is_ready(), 20)
        assert sorted(p["shard"] for p in fake.identify_payloads) == [[0, SHARDS], [1, SHARDS]]
        assert adapter.client.get_guild(GUILD_0) and adapter.client.get_guild(GUILD_1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await app.close()


@pytest.mark.parametrize("env, message", [
    ({"RWKV_BOT_DISCORD_SHARD_IDS": "0,1"}, "discord.shard_ids: needs discord.shard_count"),
    ({"RWKV_BOT_DISCORD_SHARD_IDS": "0,2", "RWKV_BOT_DISCORD_SHARD_COUNT": "2"},
     "discord.shard_ids: 2 is not a shard of shard_count 2 (0 to 1)"),
    ({"RWKV_BOT_DISCORD_SHARD_IDS": "-1", "RWKV_BOT_DISCORD_SHARD_COUNT": "2"},
     "discord.shard_ids: -1 is not a shard of shard_count 2"),
    ({"RWKV_BOT_DISCORD_SHARD_IDS": "1,1", "RWKV_BOT_DISCORD_SHARD_COUNT": "2"}, "listed twice"),
])
def test_shard_settings_that_cannot_work_are_one_line(tmp_path, monkeypatch, env, message):
    monkeypatch.chdir(tmp_path)  # no rwkv-bot.toml
    with pytest.raises(ConfigError) as refused:
        load_config(None, env=env)
    assert message in str(refused.value) and "\n" not in str(refused.value)
