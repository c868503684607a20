"""The fake Discord, driven by the real discord.py client: every route the Discord adapter needs.

No mocks: a real ``commands.Bot`` with a real ``app_commands.CommandTree`` logs in over HTTP,
connects to the fake's websocket gateway and makes REST calls to it on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Optional

import aiohttp
import discord
import discord.gateway
import discord.http
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fake_discord import DEFAULT_BOT_PERMISSIONS, FakeDiscord, FakeDiscordError, Perm

GUILD = 812345678901234567
GENERAL = 812345678901234600
STORY = 812345678901234601  # a public thread under GENERAL
LOCKED = 812345678901234602  # a channel where @everyone may not send
DM = 812345678901234650
OWNER = 812345678901234700
ALICE = 812345678901234701
BOB = 812345678901234702
OTHER_BOT = 812345678901234703
ADMIN_ROLE = 812345678901234800

NAMES = [f"char{i:02d}" for i in range(40)] + ["alice", "albert"]


@pytest.fixture
async def fake():
    async with FakeDiscord(bot_name="RWKV Bot") as fake:
        fake.add_guild(GUILD, "Test server", owner_id=OWNER)
        fake.add_user(ALICE, "alice", global_name="Alice")
        fake.add_user(BOB, "bob")
        fake.add_user(OTHER_BOT, "otherbot", bot=True)
        fake.add_role(GUILD, ADMIN_ROLE, "Admins", Perm.MANAGE_GUILD)
        fake.add_member(GUILD, ALICE, roles=[ADMIN_ROLE], nick="Ali")
        fake.add_member(GUILD, BOB)
        fake.add_member(GUILD, OTHER_BOT)
        fake.add_channel(GUILD, GENERAL, "general")
        fake.add_channel(GUILD, STORY, "story", type="thread", parent_id=GENERAL)
        fake.add_channel(GUILD, LOCKED, "announcements")
        fake.set_overwrite(LOCKED, GUILD, deny=Perm.SEND_MESSAGES)
        fake.add_channel(None, DM, type="dm", recipient_id=BOB)
        with fake.patched():
            yield fake


def recorder(lst: list, pick=lambda *args: args[-1] if args else None):
    """A coroutine listener appending pick(*event_args) to lst."""

    async def listener(*args) -> None:
        lst.append(pick(*args))

    return listener


def make_bot(*, message_content: bool = True, members: bool = True) -> commands.Bot:
    intents = discord.Intents.default()
    intents.members = members
    intents.message_content = message_content
    return commands.Bot(command_prefix=commands.when_mentioned, intents=intents)


def add_commands(bot: commands.Bot, log: dict) -> None:
    """A command tree shaped like the adapter's: groups, subcommands, autocomplete, attachment,
    integer with a range, choices, a deferred command with followups."""
    char = app_commands.Group(name="char", description="Characters")

    async def complete_name(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=n, value=n) for n in NAMES if n.startswith(current)][:25]

    @char.command(name="use", description="Use a character in this channel")
    @app_commands.autocomplete(name=complete_name)
    async def use(interaction: discord.Interaction, name: str, greeting: Optional[int] = None) -> None:
        log.setdefault("use", []).append((name, greeting, interaction.locale, interaction.user.id))
        await interaction.response.send_message(f"Now playing {name} (greeting {greeting})", ephemeral=True)

    @char.command(name="import", description="Import a character card")
    async def import_(interaction: discord.Interaction, file: discord.Attachment) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        data = await file.read()
        log["import"] = (file.filename, data)
        await interaction.followup.send(f"{file.filename}: {len(data)} bytes {hashlib.sha256(data).hexdigest()}")

    @char.command(name="broken", description="Autocomplete that returns too many choices")
    async def broken(interaction: discord.Interaction, name: str) -> None:
        await interaction.response.send_message(name)

    @broken.autocomplete("name")
    async def broken_complete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=n, value=n) for n in NAMES]  # 42 > 25: Discord refuses

    bot.tree.add_command(char)

    @bot.tree.command(name="undo", description="Undo the last turns")
    async def undo(interaction: discord.Interaction, n: app_commands.Range[int, 1, 20] = 1) -> None:
        log.setdefault("undo", []).append(n)
        await interaction.response.send_message(f"undid {n}")

    @bot.tree.command(name="regen", description="Regenerate the last reply")
    async def regen(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.followup.send("first part")
        await interaction.followup.send("second part")
        await interaction.edit_original_response(content="first part, edited")
        log["regen_original"] = (await interaction.original_response()).content

    @bot.tree.command(name="slow", description="Answers too late")
    async def slow(interaction: discord.Interaction) -> None:
        await asyncio.sleep(0.4)
        await interaction.response.send_message("too late")

    params = app_commands.Group(name="params", description="Sampling parameters")

    @params.command(name="set", description="Set a parameter")
    @app_commands.choices(name=[app_commands.Choice(name=n, value=n) for n in ("temperature", "top_p")])
    async def params_set(interaction: discord.Interaction, name: app_commands.Choice[str], value: float) -> None:
        log["params_set"] = (name.value, value, interaction.permissions.manage_guild)
        await interaction.response.send_message(f"{name.value}={value}", ephemeral=True)

    bot.tree.add_command(params)

    @bot.tree.error
    async def on_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        log.setdefault("errors", []).append(error)


def bot_with_commands(log: dict, **kw) -> commands.Bot:
    bot = make_bot(**kw)
    add_commands(bot, log)
    return bot


# --------------------------------------------------------------------------- login, READY, cache


async def test_login_ready_and_guild_cache(fake: FakeDiscord):
    bot = make_bot()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with fake.running(bot):
        ready_after = loop.time() - t0
        assert ready_after < 1.0, ready_after
        assert bot.user.id == fake.bot_user_id and bot.user.bot
        assert bot.application_id == fake.application_id
        guild = bot.get_guild(GUILD)
        assert guild is not None and guild.name == "Test server" and guild.owner_id == OWNER
        assert {c.id for c in guild.text_channels} == {GENERAL, LOCKED}
        thread = guild.get_thread(STORY)
        assert thread is not None and thread.parent_id == GENERAL
        assert guild.get_role(ADMIN_ROLE).permissions.manage_guild
        alice = guild.get_member(ALICE)
        assert alice.display_name == "Ali" and alice.guild_permissions.manage_guild
        assert not guild.get_member(BOB).guild_permissions.manage_guild
        assert guild.get_member(OTHER_BOT).bot
        me = guild.me
        assert me is not None and fake.bot_role_id(GUILD) in [r.id for r in me.roles]
        assert me.guild_permissions.manage_webhooks
        assert not guild.get_channel(LOCKED).permissions_for(me).send_messages
        assert guild.get_channel(GENERAL).permissions_for(me).send_messages
        # the fake saw the real login sequence
        routes = [r.route for r in fake.requests]
        assert routes[:2] == ["GET /users/@me", "GET /oauth2/applications/@me"]
        assert fake.identify_count == 1
        identify = fake.identify_payloads[0]
        assert identify["intents"] & (1 << 15) and identify["intents"] & (1 << 1)
        conn = fake.gateway_connections[0]
        assert conn.query["v"] == "10" and conn.query["encoding"] == "json"
    assert fake.gateway_connections[0].closed.is_set()


async def test_auto_sharded_client_asks_gateway_bot(fake: FakeDiscord):
    client = discord.AutoShardedClient(intents=discord.Intents.default())
    async with fake.running(client):
        assert client.get_guild(GUILD) is not None and client.shard_count == 1
    assert "GET /gateway/bot" in [r.route for r in fake.requests]
    assert fake.identify_payloads[0]["shard"] == [0, 1]


async def test_bad_token_is_login_failure(fake: FakeDiscord):
    with pytest.raises(discord.LoginFailure):
        async with fake.running(make_bot(), token="not-the-token"):
            pass
    assert fake.requests[0].status == 401


async def test_disallowed_privileged_intent():
    async with FakeDiscord(privileged_intents=("members",)) as fake:
        with fake.patched():
            with pytest.raises(discord.PrivilegedIntentsRequired):
                async with fake.running(make_bot(message_content=True)):
                    pass


async def test_patched_restores_discord_py(fake: FakeDiscord):
    # the fixture is inside patched(); a nested one must restore the patched values, the outer the originals
    assert discord.http.Route.BASE == fake.api_base
    async with FakeDiscord() as other:
        with other.patched():
            assert discord.http.Route.BASE == other.api_base
            assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == other.gateway_url
        assert discord.http.Route.BASE == fake.api_base
    saved = discord.http.Route.BASE
    async with FakeDiscord() as third:
        with third.patched():
            pass
    assert discord.http.Route.BASE == saved


async def test_runtime_guild_changes_reach_the_cache(fake: FakeDiscord):
    bot = make_bot()
    threads: list = []
    bot.add_listener(recorder(threads), "on_thread_create")
    async with fake.running(bot):
        guild = bot.get_guild(GUILD)
        carol = 812345678901234704
        fake.add_user(carol, "carol", global_name="Carol")
        fake.add_member(GUILD, carol, roles=[ADMIN_ROLE])  # GUILD_MEMBER_ADD
        await fake.wait_for(lambda: guild.get_member(carol))
        assert guild.get_member(carol).guild_permissions.manage_guild
        fetched = await guild.fetch_member(carol)  # GET /guilds/{guild_id}/members/{user_id}
        assert fetched.display_name == "Carol" and [r.id for r in fetched.roles[1:]] == [ADMIN_ROLE]
        with pytest.raises(discord.NotFound) as exc:
            await guild.fetch_member(812345678901239999)
        assert exc.value.code == 10007
        role = fake.add_role(GUILD, 812345678901234801, "Storytellers", 0)  # GUILD_ROLE_CREATE
        await fake.wait_for(lambda: guild.get_role(role.id))
        fake.add_channel(GUILD, 812345678901234610, "side-story", type="thread", parent_id=GENERAL,
                         owner_id=carol)  # THREAD_CREATE
        thread = await fake.wait_for(lambda: guild.get_thread(812345678901234610))
        assert thread.parent_id == GENERAL and threads == [thread]
        await thread.send("posting in a new thread")
        assert [m.content for m in fake.bot_messages(812345678901234610)] == ["posting in a new thread"]
        fake.add_channel(GUILD, 812345678901234611, "new-channel")  # CHANNEL_CREATE
        await fake.wait_for(lambda: guild.get_channel(812345678901234611))


# --------------------------------------------------------------------------- commands sync


async def test_command_tree_sync_observed(fake: FakeDiscord):
    bot = bot_with_commands({})
    async with fake.running(bot):
        synced = await bot.tree.sync()
        assert {c.name for c in synced} == {"char", "undo", "regen", "slow", "params"}
        bot.tree.copy_global_to(guild=discord.Object(GUILD))
        await bot.tree.sync(guild=discord.Object(GUILD))
    assert [r.route for r in fake.requests_to("PUT *")] == [
        "PUT /applications/{application_id}/commands",
        "PUT /applications/{application_id}/guilds/{guild_id}/commands"]
    glob = {c["name"]: c for c in fake.synced_commands["global"]}
    subs = {o["name"]: o for o in glob["char"]["options"]}
    assert all(o["type"] == 1 for o in subs.values())
    use_opts = {o["name"]: o for o in subs["use"]["options"]}
    assert use_opts["name"]["type"] == 3 and use_opts["name"]["required"] and use_opts["name"]["autocomplete"]
    assert use_opts["greeting"]["type"] == 4 and not use_opts["greeting"].get("required", False)
    assert subs["import"]["options"][0]["type"] == 11
    n = glob["undo"]["options"][0]
    assert (n["type"], n["min_value"], n["max_value"]) == (4, 1, 20)
    set_opts = {o["name"]: o for o in glob["params"]["options"][0]["options"]}
    assert [c["value"] for c in set_opts["name"]["choices"]] == ["temperature", "top_p"]
    assert set_opts["value"]["type"] == 10
    guild_cmds = fake.synced_commands[GUILD]
    assert {c["name"] for c in guild_cmds} == set(glob) and all(c["guild_id"] == str(GUILD) for c in guild_cmds)
    assert all(c["id"] and c["application_id"] == str(fake.application_id) for c in guild_cmds)


async def test_invalid_command_payload_rejected(fake: FakeDiscord):
    bot = make_bot()
    async with fake.running(bot):
        with pytest.raises(discord.HTTPException) as exc:
            await bot.http.bulk_upsert_global_commands(
                fake.application_id, [{"name": "Bad Name", "description": "x", "type": 1}])
        assert exc.value.status == 400 and exc.value.code == 50035
        with pytest.raises(discord.HTTPException) as exc:
            await bot.http.bulk_upsert_global_commands(fake.application_id, [
                {"name": "x", "description": "d", "options": [
                    {"name": "o", "description": "d", "type": 3, "choices": [{"name": str(i), "value": str(i)}
                                                                             for i in range(26)]}]}])
        assert exc.value.code == 50035 and "choices" in exc.value.text
    assert "global" not in fake.synced_commands


# --------------------------------------------------------------------------- messages


async def test_message_create_reaches_bot_and_reply_appears(fake: FakeDiscord):
    bot = make_bot()
    seen: list[discord.Message] = []

    @bot.event
    async def on_message(message: discord.Message) -> None:
        seen.append(message)
        if message.author.bot or message.webhook_id:
            return
        async with message.channel.typing():
            await message.reply(f"echo: {message.content}", allowed_mentions=discord.AllowedMentions.none())

    async with fake.running(bot):
        user_msg = await fake.send_message(GENERAL, ALICE, f"hi <@{BOB}>")
        reply = (await fake.wait_for(lambda: fake.bot_messages(GENERAL)))[0]
        got = seen[0]
        assert got.content == f"hi <@{BOB}>" and got.author.id == ALICE
        assert isinstance(got.author, discord.Member) and got.author.display_name == "Ali"
        assert got.author.guild_permissions.manage_guild and [m.id for m in got.mentions] == [BOB]
        assert got.guild.id == GUILD and got.channel.id == GENERAL
        assert reply.content == f"echo: hi <@{BOB}>"
        assert reply.message_reference["message_id"] == str(user_msg.id)
        assert reply.allowed_mentions == {"parse": []}  # discord.py omits replied_user when False
        assert reply.mentions == []  # nobody pinged
        assert fake.typing_calls and fake.typing_calls[0][0] == GENERAL
        # the bot's own message comes back through the gateway, like on Discord
        await fake.wait_for(lambda: any(m.author.id == fake.bot_user_id for m in seen))

        # without allowed_mentions Discord parses mentions from the content
        await bot.get_channel(GENERAL).send(f"<@{BOB}> hello")
        assert fake.bot_messages(GENERAL)[-1].mentions == [BOB]

        # thread and DM
        await fake.send_message(STORY, BOB, "in the thread")
        await fake.wait_for(lambda: len(fake.bot_messages(STORY)) == 1)
        in_thread = next(m for m in seen if m.content == "in the thread")
        assert isinstance(in_thread.channel, discord.Thread) and in_thread.channel.parent_id == GENERAL
        await fake.send_message(DM, BOB, "in a DM")
        dm_reply = (await fake.wait_for(lambda: fake.bot_messages(DM)))[0]
        assert dm_reply.content == "echo: in a DM"
        dm_in = next(m for m in seen if m.content == "in a DM")
        assert isinstance(dm_in.channel, discord.DMChannel) and dm_in.guild is None

        # messages of other bots and webhooks arrive flagged
        await fake.send_message(GENERAL, OTHER_BOT, "beep")
        await fake.send_webhook_message(GENERAL, "from a hook", username="Hooky")
        await fake.wait_for(lambda: any(m.content == "from a hook" for m in seen))
        assert next(m for m in seen if m.content == "beep").author.bot
        assert next(m for m in seen if m.content == "from a hook").webhook_id is not None
        assert len(fake.bot_messages(GENERAL)) == 2  # no replies to them


async def test_message_content_intent(fake: FakeDiscord):
    intents = discord.Intents.default()  # no message_content
    bot = discord.Client(intents=intents)
    seen: list[discord.Message] = []
    bot.on_message = recorder(seen)
    async with fake.running(bot):
        await fake.send_message(GENERAL, ALICE, "secret words", attachments=[("a.txt", b"x")])
        await fake.send_message(GENERAL, ALICE, f"<@{fake.bot_user_id}> hello bot")
        await fake.send_message(DM, BOB, "dm words")
        await fake.wait_for(lambda: len(seen) == 3)
    assert [m.content for m in seen] == ["", f"<@{fake.bot_user_id}> hello bot", "dm words"]
    assert seen[0].attachments == []
    assert bot.user.mentioned_in(seen[1])


async def test_message_edit_history(fake: FakeDiscord):
    bot = make_bot()
    edits: list = []
    bot.add_listener(recorder(edits), "on_message_edit")
    async with fake.running(bot):
        channel = bot.get_channel(GENERAL)
        msg = await channel.send("draft", allowed_mentions=discord.AllowedMentions.none())
        await msg.edit(content="draft, more")
        await msg.edit(content="final text")
        stored = fake.messages[msg.id]
        assert [c for _, c in stored.history] == ["draft", "draft, more", "final text"]
        times = [t for t, _ in stored.history]
        assert times == sorted(times) and len(stored.edits) == 2
        assert stored.content == "final text"
        await fake.wait_for(lambda: len(edits) == 2)
        assert edits[-1].content == "final text" and edits[-1].edited_at is not None
        # only the author may edit
        user_msg = await fake.send_message(GENERAL, ALICE, "mine")
        theirs = await channel.fetch_message(user_msg.id)
        with pytest.raises(discord.Forbidden) as exc:
            await theirs.edit(content="hijack")
        assert exc.value.code == 50005
        # an edit to nothing is refused
        with pytest.raises(discord.HTTPException) as exc:
            await msg.edit(content="")
        assert exc.value.code == 50006
        assert fake.messages[msg.id].content == "final text"


MODERATOR, MODERATORS = 812345678901239001, 812345678901239002


async def test_user_edits_and_deletes_reach_the_client_as_gateway_events(fake: FakeDiscord):
    bot = make_bot()
    raw_edits, raw_deletes = [], []
    bot.add_listener(recorder(raw_edits), "on_raw_message_edit")
    bot.add_listener(recorder(raw_deletes), "on_raw_message_delete")
    async with fake.running(bot):
        said = await fake.send_message(GENERAL, BOB, "first words")
        await fake.edit_user_message(said.id, "second thoughts")
        await fake.wait_for(lambda: raw_edits)
        assert raw_edits[0].message_id == said.id and raw_edits[0].message.content == "second thoughts"
        assert fake.messages[said.id].edited_ms is not None
        with pytest.raises(FakeDiscordError):
            await fake.edit_user_message(said.id, "")  # Discord keeps no empty message
        await fake.delete_message(said.id)  # by its author
        await fake.wait_for(lambda: raw_deletes)
        assert (raw_deletes[0].message_id, raw_deletes[0].channel_id) == (said.id, GENERAL)
        # a moderator may delete the bot's message; a plain member may not delete others'
        posted = await bot.get_channel(GENERAL).send("the bot's", allowed_mentions=discord.AllowedMentions.none())
        with pytest.raises(FakeDiscordError):
            await fake.delete_message(posted.id, by=BOB)
        fake.add_user(MODERATOR, "mod")
        fake.add_role(GUILD, MODERATORS, "Moderators", Perm.MANAGE_MESSAGES)
        fake.add_member(GUILD, MODERATOR, roles=[MODERATORS])
        await fake.delete_message(posted.id, by=MODERATOR)
        await fake.wait_for(lambda: len(raw_deletes) == 2)
        assert fake.messages[posted.id].deleted
        # and the bot deletes its own messages over HTTP, which the gateway reports too
        again = await bot.get_channel(GENERAL).send("gone soon", allowed_mentions=discord.AllowedMentions.none())
        await bot.get_channel(GENERAL).get_partial_message(again.id).delete()
        await fake.wait_for(lambda: len(raw_deletes) == 3)
        with pytest.raises(FakeDiscordError):
            await fake.delete_message(again.id)  # already gone


async def test_discord_limits_and_errors(fake: FakeDiscord):
    bot = make_bot()
    async with fake.running(bot):
        channel = bot.get_channel(GENERAL)
        with pytest.raises(discord.HTTPException) as exc:
            await channel.send("x" * 2001)
        assert (exc.value.status, exc.value.code) == (400, 50035)
        assert "content" in exc.value.text and "2000" in exc.value.text
        await channel.send("x" * 2000)  # exactly at the limit is fine
        with pytest.raises(discord.HTTPException) as exc:
            await channel.send(embed=discord.Embed(title="card", description="d" * 4097))
        assert exc.value.code == 50035 and "embeds.0.description" in exc.value.text
        await channel.send(embed=discord.Embed(title="card", description="a persona"))
        assert fake.bot_messages(GENERAL)[-1].embeds[0]["description"] == "a persona"
        for empty in ("", "   \n"):
            with pytest.raises(discord.HTTPException) as exc:
                await channel.send(empty)
            assert (exc.value.status, exc.value.code) == (400, 50006)
            assert exc.value.text == "Cannot send an empty message"
        with pytest.raises(discord.NotFound) as exc:
            await bot.fetch_channel(812345678901239999)
        assert exc.value.code == 10003
        with pytest.raises(discord.NotFound) as exc:
            await channel.fetch_message(812345678901239999)
        assert exc.value.code == 10008
        with pytest.raises(discord.Forbidden) as exc:
            await bot.get_channel(LOCKED).send("not allowed here")
        assert exc.value.code == 50013
        assert len(fake.bot_messages(GENERAL)) == 2 and fake.bot_messages(LOCKED) == []
        # a role overwrite beats the @everyone deny (Discord's order: @everyone, roles, member)
        locked = bot.get_channel(LOCKED)
        fake.set_overwrite(LOCKED, fake.bot_role_id(GUILD), allow=Perm.SEND_MESSAGES)
        await fake.wait_for(lambda: locked.permissions_for(locked.guild.me).send_messages)
        await locked.send("allowed now")
        fake.set_overwrite(LOCKED, fake.bot_user_id, deny=Perm.SEND_MESSAGES, type="member")
        with pytest.raises(discord.Forbidden):
            await locked.send("denied again")
        assert [m.content for m in fake.bot_messages(LOCKED)] == ["allowed now"]


# --------------------------------------------------------------------------- rate limits and 5xx


async def test_injected_429_survived_by_discord_py(fake: FakeDiscord):
    bot = make_bot()
    loop = asyncio.get_running_loop()
    async with fake.running(bot):
        channel = bot.get_channel(GENERAL)
        fake.fail_next("POST /channels/*/messages", status=429, retry_after=0.3)
        t0 = loop.time()
        await channel.send("after a rate limit")
        assert loop.time() - t0 >= 0.3
        assert [r.status for r in fake.requests_to("POST /channels/*/messages")] == [429, 200]
        assert [m.content for m in fake.bot_messages(GENERAL)] == ["after a rate limit"]

        hook = await channel.create_webhook(name="Persona")
        fake.fail_next("POST /webhooks/*", status=429, retry_after=0.2)
        await hook.send("hook after 429", username="Alice", wait=True)
        assert [r.status for r in fake.requests_to("POST /webhooks/*")] == [429, 200]

        # an enforced bucket: discord.py reads X-RateLimit-* and waits instead of hitting 429s
        msg = await channel.send("v0")
        fake.set_rate_limit("PATCH /channels/*/messages/*", limit=2, per=0.5)
        t0 = loop.time()
        for i in range(1, 5):
            await msg.edit(content=f"v{i}")
        assert loop.time() - t0 >= 0.45
        assert [r.route for r in fake.rate_limited] == [  # only the two injected ones
            "POST /channels/{channel_id}/messages", "POST /webhooks/{webhook_id}/{webhook_token}"]
        assert fake.messages[msg.id].content == "v4"


async def test_server_errors(fake: FakeDiscord):
    bot = make_bot()
    async with fake.running(bot):
        fake.fail_next("GET /channels/*", status=503)
        with pytest.raises(discord.DiscordServerError):
            await bot.fetch_channel(GENERAL)
        fake.fail_next("POST /channels/{channel_id}/messages", status=500)
        await bot.get_channel(GENERAL).send("retried after a 500")  # discord.py retries 500 after 1 s
        assert [r.status for r in fake.requests_to("POST /channels/*/messages")] == [500, 200]


# --------------------------------------------------------------------------- webhooks and permissions


async def test_webhook_persona_create_execute_edit(fake: FakeDiscord):
    bot = make_bot()
    seen: list[discord.Message] = []
    bot.add_listener(recorder(seen), "on_message")
    async with fake.running(bot):
        channel = bot.get_channel(GENERAL)
        hook = await channel.create_webhook(name="RWKV persona")
        assert [w.id for w in await channel.webhooks()] == [hook.id]
        assert fake.webhooks[hook.id].creator_id == fake.bot_user_id
        sent = await hook.send("Hello there", username="Alice the Brave", avatar_url="https://example.invalid/a.png",
                               allowed_mentions=discord.AllowedMentions.none(), wait=True)
        await sent.edit(content="Hello there, friend")
        stored = fake.messages[sent.id]
        assert stored.webhook_id == hook.id and stored.author_name == "Alice the Brave"
        assert stored.avatar_url == "https://example.invalid/a.png"
        assert [c for _, c in stored.history] == ["Hello there", "Hello there, friend"]
        assert stored.allowed_mentions == {"parse": []}
        assert fake.bot_messages(GENERAL) == [stored]
        # the bot also receives its persona's message, marked as a webhook message
        got = await fake.wait_for(lambda: next((m for m in seen if m.id == sent.id), None))
        assert got.webhook_id == hook.id and got.author.name == "Alice the Brave"

        # threads: the webhook lives on the parent and posts with thread_id
        thread = bot.get_guild(GUILD).get_thread(STORY)
        in_thread = await hook.send("In the story", username="Alice the Brave", thread=thread, wait=True)
        await in_thread.edit(content="In the story, edited")
        assert [m.content for m in fake.channel_messages(STORY)] == ["In the story, edited"]
        with pytest.raises(discord.HTTPException) as exc:
            await bot.http.create_webhook(STORY, name="nope")
        assert exc.value.code == 50024

        # Discord's username rules
        with pytest.raises(discord.HTTPException) as exc:
            await hook.send("x", username="Discord Helper", wait=True)
        assert exc.value.code == 50035 and "username" in exc.value.text
        with pytest.raises(discord.HTTPException) as exc:
            await hook.send("", username="Alice", wait=True)
        assert exc.value.code == 50006


async def test_missing_manage_webhooks_is_forbidden(fake: FakeDiscord):
    fake.set_bot_permissions(GUILD, DEFAULT_BOT_PERMISSIONS & ~Perm.MANAGE_WEBHOOKS)
    bot = make_bot()
    async with fake.running(bot):
        guild = bot.get_guild(GUILD)
        channel = guild.get_channel(GENERAL)
        assert not channel.permissions_for(guild.me).manage_webhooks
        with pytest.raises(discord.Forbidden) as exc:
            await channel.create_webhook(name="Persona")
        assert exc.value.code == 50013 and exc.value.text == "Missing Permissions"
        with pytest.raises(discord.Forbidden):
            await channel.webhooks()
        assert fake.webhooks == {}
        # granted through a member overwrite on this channel only; the bot's cache follows
        fake.set_overwrite(GENERAL, fake.bot_user_id, allow=Perm.MANAGE_WEBHOOKS, type="member")
        await fake.wait_for(lambda: channel.permissions_for(guild.me).manage_webhooks)
        hook = await channel.create_webhook(name="Persona")
        assert fake.webhooks[hook.id].channel_id == GENERAL
        with pytest.raises(discord.Forbidden):
            await guild.get_channel(LOCKED).create_webhook(name="Persona")
        # and the role itself can be changed while connected
        fake.set_bot_permissions(GUILD, DEFAULT_BOT_PERMISSIONS)
        await fake.wait_for(lambda: guild.me.guild_permissions.manage_webhooks)
        await guild.get_channel(LOCKED).create_webhook(name="Persona")


# --------------------------------------------------------------------------- interactions


async def test_slash_command_ephemeral_and_options(fake: FakeDiscord):
    log: dict = {}
    bot = bot_with_commands(log)
    seen: list[discord.Message] = []
    bot.add_listener(recorder(seen), "on_message")
    async with fake.running(bot):
        await bot.tree.sync()
        inter = await fake.invoke_command("char use", {"name": "alice", "greeting": 2}, ALICE, GENERAL,
                                          locale="de")
        cb = await inter.wait_callback()
        assert cb["type"] == 4 and cb["flags"] == 64 and inter.ephemeral
        assert inter.texts() == ["Now playing alice (greeting 2)"]
        assert log["use"] == [("alice", 2, discord.Locale.german, ALICE)]
        # ephemeral: not in the channel for others, never dispatched to the gateway
        assert fake.channel_messages(GENERAL) == []
        assert [m.content for m in fake.channel_messages(GENERAL, include_ephemeral=True)] == [inter.texts()[0]]

        inter = await fake.invoke_command("undo", {}, user_id=BOB, channel_id=GENERAL)
        await inter.wait_callback()
        inter = await fake.invoke_command("undo", {"n": 3}, user_id=BOB, channel_id=STORY)
        await inter.wait_callback()
        assert log["undo"] == [1, 3]
        assert not inter.ephemeral and fake.channel_messages(STORY)[0].content == "undid 3"
        await fake.wait_for(lambda: any(m.content == "undid 3" for m in seen))  # public: dispatched

        inter = await fake.invoke_command("params", {"name": "top_p", "value": 0.9}, subcommand="set",
                                          user_id=ALICE, channel_id=GENERAL)
        await inter.wait_callback()
        assert log["params_set"] == ("top_p", 0.9, True)
        inter = await fake.invoke_command("params set", {"name": "top_p", "value": 1}, user_id=BOB,
                                          channel_id=GENERAL)
        await inter.wait_callback()
        assert log["params_set"] == ("top_p", 1.0, False)  # BOB lacks Manage Server

        # in a DM the interaction carries user instead of member
        inter = await fake.invoke_command("undo", {"n": 2}, user_id=BOB, channel_id=DM)
        await inter.wait_callback()
        assert "user" in inter.payload and "member" not in inter.payload

        # the fake refuses what Discord's client would not send
        with pytest.raises(FakeDiscordError):
            await fake.invoke_command("undo", {"n": 21}, user_id=BOB, channel_id=GENERAL)
        with pytest.raises(FakeDiscordError):
            await fake.invoke_command("params set", {"name": "typo", "value": 1}, user_id=BOB, channel_id=GENERAL)
        with pytest.raises(FakeDiscordError):
            await fake.invoke_command("char", {}, user_id=BOB, channel_id=GENERAL)
        assert "errors" not in log


async def test_defer_followups_and_edit_original(fake: FakeDiscord):
    log: dict = {}
    bot = bot_with_commands(log)
    async with fake.running(bot):
        await bot.tree.sync()
        inter = await fake.invoke_command("regen", {}, user_id=ALICE, channel_id=GENERAL)
        await fake.wait_for(lambda: any(r["kind"] == "edit_original" for r in inter.responses))
        kinds = [(r["kind"], r["type"]) for r in inter.responses]
        assert kinds == [("callback", 5), ("followup", None), ("followup", None), ("edit_original", None)]
        assert inter.deferred and not inter.ephemeral
        # the first followup after a defer replaces the "thinking..." message (Discord's rule)
        assert inter.responses[1]["edited_original"]
        assert inter.original.content == "first part, edited" and not inter.original.loading
        assert [m.content for m in inter.followups] == ["second part"]
        assert [m.content for m in fake.channel_messages(GENERAL)] == ["first part, edited", "second part"]
        assert all(m.interaction_id == inter.id for m in fake.channel_messages(GENERAL))
        await fake.wait_for(lambda: "regen_original" in log)
        assert log["regen_original"] == "first part, edited"  # GET .../messages/@original


async def test_interaction_expires_after_deadline(fake: FakeDiscord):
    log: dict = {}
    bot = bot_with_commands(log)
    fake.interaction_deadline = 0.2  # Discord's is 3 s; the command answers after 0.4 s
    async with fake.running(bot):
        await bot.tree.sync()
        inter = await fake.invoke_command("slow", {}, user_id=ALICE, channel_id=GENERAL)
        await fake.wait_for(lambda: inter.errors)
        assert inter.expired and inter.callback is None
        assert inter.errors[0]["code"] == 10062 and inter.errors[0]["status"] == 404
        await fake.wait_for(lambda: log.get("errors"))
        original = log["errors"][0].original
        assert isinstance(original, discord.NotFound) and original.code == 10062
        with pytest.raises(FakeDiscordError):
            await inter.wait_callback(timeout=0.1)


async def test_autocomplete_choices(fake: FakeDiscord):
    bot = bot_with_commands({})
    async with fake.running(bot):
        await bot.tree.sync()
        choices = await fake.autocomplete("char use", "name", "al", user_id=ALICE, channel_id=GENERAL)
        assert choices == [{"name": "alice", "value": "alice"}, {"name": "albert", "value": "albert"}]
        choices = await fake.autocomplete("char use", "name", "char", user_id=ALICE, channel_id=GENERAL)
        assert len(choices) == 25
        # more than 25 choices: Discord answers 400 and the user sees nothing
        with pytest.raises(FakeDiscordError):
            await fake.autocomplete("char broken", "name", "", user_id=ALICE, channel_id=GENERAL)
        broken = list(fake.interactions.values())[-1]
        assert broken.errors[0]["code"] == 50035 and broken.choices is None
        with pytest.raises(FakeDiscordError):  # no autocomplete on that option
            await fake.autocomplete("undo", "n", "1", user_id=ALICE, channel_id=GENERAL)


async def test_attachment_option_and_file_upload_bytes(fake: FakeDiscord):
    log: dict = {}
    bot = bot_with_commands(log)
    card = bytes(range(256)) * 40 + b"\x89PNG tail"
    async with fake.running(bot):
        await bot.tree.sync()
        inter = await fake.invoke_command("char import", {"file": ("my card.png", card, "image/png")},
                                          user_id=ALICE, channel_id=GENERAL)
        await fake.wait_for(lambda: inter.original is not None and not inter.original.loading)
        assert log["import"] == ("my_card.png", card)  # Discord replaces spaces in file names
        assert inter.texts() == [f"my_card.png: {len(card)} bytes {hashlib.sha256(card).hexdigest()}"]
        assert inter.ephemeral  # the defer's flag is kept by the followup
        resolved = inter.payload["data"]["resolved"]["attachments"]
        assert len(resolved) == 1 and next(iter(resolved.values()))["size"] == len(card)
        assert fake.requests_to("GET /cdn/*")[0].status == 200

        # the bot uploads a file (multipart); it downloads back identical, also by plain HTTP
        msg = await bot.get_channel(GENERAL).send("here", file=discord.File(__import__("io").BytesIO(card), "out.bin"))
        stored = fake.bot_messages(GENERAL)[-1]
        assert stored.content == "here" and stored.attachments[0].data == card
        assert await msg.attachments[0].read() == card
        async with aiohttp.ClientSession() as session:
            async with session.get(msg.attachments[0].url) as resp:
                assert resp.status == 200 and await resp.read() == card
            async with session.get(msg.attachments[0].url.replace(str(msg.attachments[0].id), "1")) as resp:
                assert resp.status == 404


# --------------------------------------------------------------------------- gateway reconnects


async def test_gateway_force_close_resume_and_reidentify(fake: FakeDiscord):
    bot = make_bot()
    seen: list[str] = []
    events: list[str] = []
    bot.add_listener(recorder(seen, lambda m: m.content), "on_message")
    bot.add_listener(recorder(events, lambda: "resumed"), "on_resumed")
    bot.add_listener(recorder(events, lambda: "ready"), "on_ready")
    async with fake.running(bot):
        await fake.send_message(GENERAL, ALICE, "before")
        await fake.wait_for(lambda: "before" in seen)

        await fake.close_gateway(code=4000)
        await fake.send_message(GENERAL, ALICE, "while away")  # buffered, replayed on RESUME
        await fake.wait_for(lambda: fake.resume_count == 1 and fake.connected)
        await fake.wait_for(lambda: "while away" in seen)
        await fake.send_message(GENERAL, ALICE, "after resume")
        await fake.wait_for(lambda: "after resume" in seen)
        assert fake.identify_count == 1 and "resumed" in events
        assert fake.gateway_connections[1].path == "/resume-gateway/"  # resume_gateway_url was used
        assert seen.count("while away") == 1

        # an invalidated session: RESUME gets INVALID_SESSION, the client identifies again.
        # discord.py's default before_identify_hook sleeps 5 s before any re-IDENTIFY; skip that here.
        async def no_identify_delay(shard_id, *, initial=False) -> None:
            events.append(f"identify initial={initial}")

        bot.before_identify_hook = no_identify_delay
        await fake.close_gateway(code=4000, invalidate=True)
        await fake.wait_for(lambda: fake.identify_count == 2 and fake.connected)
        await fake.wait_for(lambda: events.count("ready") == 2)
        assert "identify initial=False" in events
        await fake.send_message(GENERAL, BOB, "after identify")
        await fake.wait_for(lambda: "after identify" in seen)
        assert bot.get_guild(GUILD).get_member(ALICE) is not None

        # op 7 RECONNECT
        await fake.send_reconnect()
        await fake.wait_for(lambda: fake.resume_count == 2 and fake.connected)
        await fake.send_message(GENERAL, BOB, "after reconnect")
        await fake.wait_for(lambda: "after reconnect" in seen)


# --------------------------------------------------------------------------- message components


async def test_buttons_component_interactions_deferred_update_update_and_original_edits(fake: FakeDiscord):
    bot = make_bot()
    pressed: list = []

    @bot.event
    async def on_interaction(interaction: discord.Interaction) -> None:
        if interaction.type != discord.InteractionType.component:
            return
        custom_id = interaction.data["custom_id"]
        pressed.append((custom_id, interaction.user.id, interaction.message.id))
        if custom_id == "refuse":
            await interaction.response.send_message("not for you", ephemeral=True)
        elif custom_id == "update":
            await interaction.response.edit_message(content="updated", view=None)
        else:
            await interaction.response.defer()
            await interaction.edit_original_response(content="edited later", view=buttons("refuse", "update"))

    def buttons(*ids: str) -> discord.ui.View:
        view = discord.ui.View(timeout=None)
        for custom_id in ids:
            view.add_item(discord.ui.Button(label=custom_id.upper(), custom_id=custom_id))
        view.stop()  # never dispatched by discord.py: on_interaction reads every press
        return view

    async with fake.running(bot):
        channel = bot.get_channel(GENERAL)
        hook = await channel.create_webhook(name="persona")
        message = await hook.send("hello", username="Mira", wait=True, view=buttons("later"))
        stored = fake.messages[message.id]
        assert fake.button_ids(stored) == ["later"] and fake.button_labels(stored) == ["LATER"]
        with pytest.raises(FakeDiscordError):  # only a button the message shows can be pressed
            await fake.press_button(message.id, "forged", BOB)
        inter = await fake.press_button(message.id, "later", BOB)
        await fake.wait_for(lambda: stored.content == "edited later")
        assert inter.callback["type"] == 6 and fake.button_ids(stored) == ["refuse", "update"]
        assert stored.webhook_id == hook.id, "a webhook's message, edited through the press"
        inter = await fake.press_button(message.id, "refuse", BOB)
        await inter.wait_callback()
        assert inter.ephemeral and inter.texts() == ["not for you"] and stored.content == "edited later"
        inter = await fake.press_button(message.id, "update", ALICE)
        await fake.wait_for(lambda: stored.content == "updated")
        assert inter.callback["type"] == 7 and fake.button_ids(stored) == []
        assert [p[:2] for p in pressed] == [("later", BOB), ("refuse", BOB), ("update", ALICE)]
