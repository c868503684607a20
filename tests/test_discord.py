"""The Discord adapter, driven end to end: the real discord.py client against the fake Discord in tests/,
the real engine (a tiny RWKV-7 demo checkpoint on the CPU) and a real SQLite database."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys

import discord
import logging
import pytest

from bot.adapters.discord import DiscordAdapter
from bot.adapters.discord.text import LIMIT
from bot.adapters.text import split_message as split_to
from bot.app import build_app
from bot.cards.png import embed_card
from bot.commands.base import REGISTRY, Reply, command
from bot.config import load_config
from bot.conversations import ChannelKey
from bot.engine.params import PARAM_NAMES
from bot.i18n import t
from tests.cards.builders import tiny_png
from tests.chat_helpers import pace
from tests.conftest import write_config
from tests.fake_discord import DEFAULT_BOT_PERMISSIONS, FakeDiscord, FakeDiscordError, Perm

GUILD = 912345678901234567
GENERAL = 912345678901234600
STORY = 912345678901234601  # a public thread under GENERAL
LOBBY = 912345678901234602
LOCKED = 912345678901234603  # the bot may not post here
SIDE = 912345678901234604
DM = 912345678901234650
OWNER = 912345678901234700
ALICE = 912345678901234701  # Admins role: Manage Server
BOB = 912345678901234702  # a plain member
CAROL = 912345678901234703  # only a role listed in discord.admin_role_ids
OTHER_BOT = 912345678901234704
ADMINS = 912345678901234800
STORYTELLERS = 912345678901234801  # no permissions; configured as an admin role


def channel_key(channel_id: int) -> ChannelKey:
    return ChannelKey("discord", str(channel_id))


def split_message(text: str, limit: int = LIMIT) -> list[str]:
    """The one split of every platform, at Discord's limit."""
    return split_to(text, limit)


@pytest.fixture
async def fake():
    async with FakeDiscord(bot_name="RWKV Bot") as fake:
        fake.add_guild(GUILD, "Test server", owner_id=OWNER, locale="en-US")
        fake.add_user(ALICE, "alice", global_name="Alice")
        fake.add_user(BOB, "bob", global_name="Bobby")
        fake.add_user(CAROL, "carol")
        fake.add_user(OTHER_BOT, "otherbot", bot=True)
        fake.add_role(GUILD, ADMINS, "Admins", Perm.MANAGE_GUILD)
        fake.add_role(GUILD, STORYTELLERS, "Storytellers", 0)
        fake.add_member(GUILD, ALICE, roles=[ADMINS], nick="Ali")
        fake.add_member(GUILD, BOB)
        fake.add_member(GUILD, CAROL, roles=[STORYTELLERS])
        fake.add_member(GUILD, OTHER_BOT)
        for channel, name in ((GENERAL, "general"), (LOBBY, "lobby"), (LOCKED, "announcements"), (SIDE, "side")):
            fake.add_channel(GUILD, channel, name)
        fake.add_channel(GUILD, STORY, "story", type="thread", parent_id=GENERAL)
        fake.set_overwrite(LOCKED, fake.bot_role_id(GUILD), deny=Perm.SEND_MESSAGES)
        fake.add_channel(None, DM, type="dm", recipient_id=BOB)
        with fake.patched():
            yield fake


def config_for(directory, demo7, fake, **settings):
    return write_config(directory, demo7, settings={"discord.token": fake.token,
                                                    "discord.admin_role_ids": [STORYTELLERS], **settings})


@pytest.fixture
async def app(tmp_path, demo7, fake):
    application = await build_app(load_config(config_for(tmp_path, demo7, fake), env={}))
    yield application
    await application.close()


@contextlib.asynccontextmanager
async def serving(app, fake, timeout: float = 10.0):
    """The adapter's own `run(stop)`, as `rwkv-bot run` starts it; stopped like SIGTERM does."""
    adapter = DiscordAdapter(app)
    stop = asyncio.Event()
    task = asyncio.create_task(adapter.run(stop))
    await fake.wait_for(lambda: task.done() or (adapter.client.is_ready() and fake.commands.get(None)), timeout)
    if task.done():
        task.result()
        raise AssertionError("the adapter stopped before it was ready")
    try:
        yield adapter
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def eventually(check, timeout: float = 15.0):
    """The first truthy value of the coroutine function `check`, polled."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


async def turns(app, channel: int) -> list:
    return (await app.conversations.transcript(channel_key(channel)))[1]


def persona_messages(fake, channel: int) -> list:
    """What the bot posted in the channel, command answers (interaction responses) excluded."""
    return [m for m in fake.bot_messages(channel) if m.interaction_id is None]


async def committed_turn(fake, app, channel: int, user: int, text: str):
    """`user` posts `text`; the turn `app` commits for it."""
    before = len(await turns(app, channel))
    await fake.send_message(channel, user, text)

    async def committed():
        log = await turns(app, channel)
        return log[before] if len(log) > before else None

    return await eventually(committed)


async def chat(fake, app, channel: int, user: int, text: str, *, prefix: str = "") -> str:
    """`user` posts `text`; returns the committed reply once its final text is on Discord."""
    turn = await committed_turn(fake, app, channel, user, text)
    expected = split_message(turn.out_text, LIMIT - len(prefix)) or [t("empty_reply")]
    expected[0] = prefix + expected[0]
    await fake.wait_for(lambda: [m.content for m in persona_messages(fake, channel)[-len(expected):]] == expected,
                        timeout=10)
    return turn.out_text


async def slash(fake, name: str, options: dict | None = None, *, user: int = ALICE, channel: int = GENERAL):
    """Run a slash command; returns the interaction once its "thinking..." state is resolved."""
    inter = await fake.invoke_command(name, options or {}, user, channel)
    await inter.wait_callback()
    await fake.wait_for(lambda: inter.callback["type"] == 4 or (
        inter.original is not None and (not inter.original.loading or inter.original.deleted)), timeout=10)
    return inter


RANDOM_LONG = {"temperature": 5, "top_p": 1, "mirostat_tau": 0, "presence_penalty": 0}  # rarely an early turn end
SEED_LONG = 1


async def greedy(fake, channel: int = GENERAL, max_tokens: int = 16) -> None:
    await slash(fake, "params set", {"name": "temperature", "value": 0}, channel=channel)
    await slash(fake, "params set", {"name": "max_tokens", "value": max_tokens}, channel=channel)


async def use_mira(fake, channel: int = GENERAL) -> FakeDiscord:
    inter = await slash(fake, "char use", {"name": "Mira"}, channel=channel)
    assert inter.texts() == ["Now talking with Mira."] and not inter.ephemeral
    await fake.wait_for(lambda: persona_messages(fake, channel))  # the greeting
    return inter


# --------------------------------------------------------------------------- pure parts


def test_split_message_prefers_paragraphs_then_sentences_and_is_stable_while_growing():
    paragraph = "word " * 300  # 1500 characters
    text = paragraph.strip() + "\n\n" + "Second one. " * 100
    chunks = split_message(text)
    assert chunks[0] == paragraph.strip() and all(len(c) <= LIMIT for c in chunks)
    sentences = "This is a sentence. " * 150
    chunks = split_message(sentences)
    assert all(c.endswith(".") and len(c) <= LIMIT for c in chunks)
    assert " ".join(chunks) == sentences.strip()
    assert split_message("x" * 4500) == ["x" * 2000, "x" * 2000, "x" * 500]  # no boundary: hard cut
    assert split_message("  \n ") == []
    chinese = "她笑了。" * 700
    assert all(c.endswith("。") and len(c) <= LIMIT for c in split_message(chinese))
    # streaming: once more text follows a chunk, that chunk never changes again
    final = split_message(sentences)
    for end in range(2100, len(sentences), 97):
        assert split_message(sentences[:end])[:-1] == final[: len(split_message(sentences[:end])) - 1]


# --------------------------------------------------------------------------- commands


async def test_command_tree_synced_with_choices_translations_and_generic_commands(app, fake, caplog):
    @command("testecho", usage="TEXT")
    async def testecho(cmds, ctx, args):  # registered after the adapter was written: appears by itself
        return [Reply(f"echo {args}", ephemeral=True)]

    try:
        async with serving(app, fake):
            synced = {c["name"]: c for c in fake.synced_commands["global"]}
            assert {"char", "params", "reset", "undo", "regen", "help", "lang", "format", "start",
                    "testecho"} <= set(synced)
            char = {o["name"]: o for o in synced["char"]["options"]}
            assert set(char) == {"use", "list", "show", "import"}
            use = {o["name"]: o for o in char["use"]["options"]}
            assert use["name"]["autocomplete"] and use["name"]["required"] and use["greeting"]["type"] == 4
            assert char["import"]["options"][0]["type"] == 11  # attachment
            set_ = {o["name"]: o for o in {o["name"]: o for o in synced["params"]["options"]}["set"]["options"]}
            assert [c["value"] for c in set_["name"]["choices"]] == list(PARAM_NAMES)
            undo = synced["undo"]["options"][0]
            assert (undo["name"], undo["type"], undo["min_value"], undo.get("required", False)) == ("n", 4, 1, False)
            assert synced["testecho"]["options"] == [{"name": "args", "description": "TEXT", "type": 3,
                                                      "required": False}]
            assert synced["reset"]["description_localizations"]["zh-CN"] == t("help_reset", "zh")
            assert use["name"]["description_localizations"]["zh-CN"] == "角色"

            inter = await slash(fake, "testecho", {"args": "hi there"}, user=BOB)
            assert inter.texts() == ["echo hi there"] and inter.ephemeral

            # a command Discord still lists but this bot no longer has: answered, one log line, no traceback
            stale = {"name": "oldcmd", "description": "gone", "type": 1}
            await fake_upsert(fake, stale)
            caplog.clear()
            inter = await fake.invoke_command("oldcmd", {}, BOB, GENERAL)
            await inter.wait_callback()
            assert inter.ephemeral and inter.texts() == [t("unknown_command", "en", name="oldcmd")]
            assert not any(r.exc_info for r in caplog.records)
    finally:
        del REGISTRY["testecho"]


async def fake_upsert(fake, payload: dict) -> None:
    """Register a command on the fake's side only (as if an older version of the bot had synced it)."""
    fake.commands[None] = fake.commands[None] + [fake._store_command(None, payload, [])]


async def test_admin_checks_for_params_and_import(app, fake):
    async with serving(app, fake):
        key = channel_key(GENERAL)
        inter = await fake.invoke_command("params set", {"name": "temperature", "value": 0.5}, BOB, GENERAL)
        callback = await inter.wait_callback()
        assert callback["type"] == 4 and inter.ephemeral and inter.texts() == [t("not_admin", "en")]
        assert (await app.conversations.view(key)).overrides == {}
        inter = await slash(fake, "char import", {"file": ("x.json", b"{}")}, user=BOB)
        assert inter.ephemeral and inter.texts() == [t("not_bot_admin", "en")]  # the shared library's own rule
        inter = await fake.invoke_command("params reset", {}, BOB, GENERAL)
        await inter.wait_callback()
        assert inter.ephemeral and inter.texts() == [t("not_admin", "en")]

        inter = await slash(fake, "params set", {"name": "temperature", "value": 0.5}, user=ALICE)  # Manage Server
        assert inter.texts() == ["Set temperature = 0.5."] and inter.callback["type"] == 5  # deferred at once
        inter = await slash(fake, "params set", {"name": "top_k", "value": 7}, user=CAROL)  # admin role id
        assert inter.texts() == ["Set top_k = 7."]
        assert (await app.conversations.view(key)).overrides == {"temperature": 0.5, "top_k": 7}
        inter = await slash(fake, "params set", {"name": "max_tokens", "value": 0.5}, user=ALICE)  # bad value
        assert "max_tokens must be an integer" in inter.texts()[0]
        inter = await slash(fake, "params set", {"name": "top_p", "value": 0.9}, user=BOB, channel=DM)  # DM: admin
        assert inter.texts() == ["Set top_p = 0.9."]


async def test_char_import_refuses_a_corrupt_file_imports_a_good_one_and_autocomplete_stays_under_25(app, fake):
    async with serving(app, fake):
        # CAROL has a role in discord.admin_role_ids: one of the bot's admins, who own the shared library.
        inter = await slash(fake, "char import", {"file": ("card.png", b"\x89PNG\r\n\x1a\nnot really")}, user=CAROL)
        assert inter.ephemeral and inter.texts()[0].startswith("Cannot import that card:")
        assert fake.channel_messages(GENERAL) == []  # nothing public
        assert app.library.find("Wren") is None
        card = {"name": "Wren", "description": "A lighthouse keeper.", "first_mes": "The lamp is lit."}
        png = embed_card(tiny_png((10, 120, 200)), json.dumps(card))
        # A server admin (Manage Server) may change this server's channels, not what every channel shares;
        # neither may anyone in their DM.
        inter = await slash(fake, "char import", {"file": ("wren.png", png, "image/png")}, user=ALICE)
        assert inter.texts() == [t("not_bot_admin", "en")]
        inter = await slash(fake, "char import", {"file": ("wren.png", png, "image/png")}, user=BOB, channel=DM)
        assert inter.texts() == [t("not_bot_admin", "en")]
        assert app.library.find("Wren") is None
        inter = await slash(fake, "char import", {"file": ("wren.png", png, "image/png")}, user=CAROL)
        assert inter.texts() == [t("char_imported", "en", name="Wren", format=app.library.find("Wren").source_format)]

        for i in range(30):
            await app.library.import_card(f"c{i}.json", json.dumps({"name": f"Extra {i:02d}", "first_mes": "Hi."}).encode())
        choices = await fake.autocomplete("char use", "name", "", user_id=BOB, channel_id=GENERAL)
        assert len(choices) == 25
        choices = await fake.autocomplete("char use", "name", "extra 1", user_id=BOB, channel_id=GENERAL)
        assert [c["value"] for c in choices] == [f"Extra {i}" for i in range(10, 20)]
        choices = await fake.autocomplete("char show", "name", "wr", user_id=BOB, channel_id=GENERAL)
        assert choices == [{"name": "Wren", "value": "Wren"}]

        # the imported card's picture becomes the persona's avatar (set on the channel webhook)
        await slash(fake, "char use", {"name": "Wren"}, channel=LOBBY)
        greeting = (await fake.wait_for(lambda: persona_messages(fake, LOBBY)))[0]
        hook = fake.webhooks[greeting.webhook_id]
        expected = hashlib.md5(discord.utils._bytes_to_base64_data(app.library.find("Wren").avatar).encode())
        assert greeting.author_name == "Wren" and hook.avatar == expected.hexdigest()
        assert greeting.author["avatar"] == hook.avatar


# --------------------------------------------------------------------------- chat routing


async def test_roleplay_channel_mentions_threads_dms_and_who_never_speaks(app, fake):
    async with serving(app, fake):
        await use_mira(fake, GENERAL)
        greeting = persona_messages(fake, GENERAL)[0]
        assert greeting.webhook_id and greeting.author_name == "Mira"  # the persona, through the webhook
        assert greeting.content == app.library.find("Mira").first_mes.strip()[:LIMIT] or greeting.content
        await greedy(fake)

        reply = await chat(fake, app, GENERAL, BOB, "Good evening, is the archive open?")
        log = await turns(app, GENERAL)
        assert (log[-1].in_speaker, log[-1].in_text) == ("Bobby", "Good evening, is the archive open?")
        last = persona_messages(fake, GENERAL)[-1]
        assert last.author_name == "Mira" and last.webhook_id == greeting.webhook_id
        assert last.allowed_mentions == {"parse": []} and all(a == {"parse": []} for a in last.edit_allowed_mentions)
        assert fake.typing_calls and fake.typing_calls[0][0] == GENERAL
        await chat(fake, app, GENERAL, ALICE, "And the lamp?")
        assert (await turns(app, GENERAL))[-1].in_speaker == "Ali"  # the server nickname

        # other bots, webhooks and our own persona messages are never turns
        count = len(await turns(app, GENERAL))
        await fake.send_message(GENERAL, OTHER_BOT, "beep boop")
        await fake.send_webhook_message(GENERAL, "news from a feed", username="Feed")
        await chat(fake, app, GENERAL, BOB, "Anyone there?")
        log = await turns(app, GENERAL)
        assert len(log) == count + 1 and log[-1].in_text == "Anyone there?"

        # elsewhere: only when mentioned, with the default character, the mention removed
        await fake.send_message(LOBBY, BOB, "talking among ourselves")
        await chat(fake, app, LOBBY, BOB, f"<@{fake.bot_user_id}> hello <@{ALICE}>, who are you?")
        log = await turns(app, LOBBY)
        assert [x.in_text for x in log] == ["hello @Ali, who are you?"]
        assert persona_messages(fake, LOBBY)[-1].author_name == "Mira"

        # a thread is its own conversation, answered through its parent's webhook
        await fake.send_message(STORY, BOB, "not for the bot")
        await chat(fake, app, STORY, BOB, f"<@{fake.bot_user_id}> in the thread")
        assert [x.in_text for x in await turns(app, STORY)] == ["in the thread"]
        in_thread = persona_messages(fake, STORY)[-1]
        assert in_thread.webhook_id == greeting.webhook_id and in_thread.channel_id == STORY
        assert len(await turns(app, GENERAL)) == count + 1

        # a DM: every message, as the bot with the name shown
        reply = await chat(fake, app, DM, BOB, "a private word", prefix="**Mira**: ")
        assert persona_messages(fake, DM)[-1].message_reference["message_id"]
        assert [x.in_text for x in await turns(app, DM)] == ["a private word"]
        assert len(await turns(app, LOBBY)) == 1  # the unmentioned lobby message was never a turn
        del reply


async def test_without_manage_webhooks_the_bot_speaks_with_the_name_shown(app, fake):
    fake.set_bot_permissions(GUILD, DEFAULT_BOT_PERMISSIONS & ~Perm.MANAGE_WEBHOOKS)
    async with serving(app, fake):
        await use_mira(fake, GENERAL)
        greeting = persona_messages(fake, GENERAL)[0]
        assert greeting.webhook_id is None and greeting.content.startswith("**Mira**: ")
        await greedy(fake)
        user_message = await fake.send_message(GENERAL, BOB, "hello")
        await eventually(lambda: _committed(app, GENERAL, 1))
        answer = await fake.wait_for(lambda: [m for m in persona_messages(fake, GENERAL)
                                              if m.message_reference and m.content.startswith("**Mira**: ")])
        assert answer[0].message_reference["message_id"] == str(user_message.id)
        assert answer[0].mentions == [] and fake.webhooks == {}

        # where it may not post at all, a slash command still gets the character's line, as a followup
        inter = await slash(fake, "reset", channel=LOCKED)
        await fake.wait_for(lambda: len(inter.texts()) == 2)
        assert inter.texts()[0] == t("reset_done", "en") and inter.texts()[1].startswith("**Mira**: ")
        assert fake.bot_messages(LOCKED) == [m for m in fake.bot_messages(LOCKED) if m.interaction_id]
        # and a mention there is not answered (nothing could be posted), without wasting a turn
        await fake.send_message(LOCKED, BOB, f"<@{fake.bot_user_id}> hi")
        await asyncio.sleep(0.3)
        assert await turns(app, LOCKED) == []


async def _committed(app, channel: int, count: int):
    return len(await turns(app, channel)) >= count


async def test_allowed_mentions_none_on_everything_the_model_writes(app, fake):
    card = {"name": "Pinger", "first_mes": f"Hello <@{ALICE}> and @everyone and <@&{ADMINS}>!"}
    await app.library.import_card("pinger.json", json.dumps(card).encode())
    async with serving(app, fake):
        await slash(fake, "char use", {"name": "Pinger"})
        greeting = (await fake.wait_for(lambda: persona_messages(fake, GENERAL)))[0]
        assert f"<@{ALICE}>" in greeting.content and "@everyone" in greeting.content
        assert greeting.allowed_mentions == {"parse": []}
        assert greeting.mentions == [] and greeting.mention_roles == [] and not greeting.mention_everyone


async def test_role_play_channels_are_made_by_admins_and_undone_with_replymode(app, fake):
    async with serving(app, fake):
        synced = {c["name"]: c for c in fake.synced_commands["global"]}
        assert synced["replymode"]["contexts"] == [0]  # offered in servers only, not in DMs
        assert synced["save"].get("contexts") in (None, [0, 1, 2]) and "quit" not in synced  # the rest everywhere
        inter = await slash(fake, "saves", user=BOB, channel=DM)  # a generic command in a DM
        assert inter.texts() == [t("saves_none", "en")]
        with pytest.raises(FakeDiscordError, match="not available in DMs"):
            await fake.invoke_command("replymode", {"args": "all"}, BOB, DM)
        dm_help = (await slash(fake, "help", user=BOB, channel=DM)).texts()[0]
        assert "/replymode - " not in dm_help and "/reset - " in dm_help
        assert "/replymode - " in (await slash(fake, "help", user=BOB)).texts()[0]

        # a member's /char use picks the character; the channel still answers only mentions
        inter = await slash(fake, "char use", {"name": "Mira"}, user=BOB, channel=LOBBY)
        assert inter.texts() == ["Now talking with Mira."]
        await fake.wait_for(lambda: persona_messages(fake, LOBBY))
        await fake.send_message(LOBBY, BOB, "just us here")
        await asyncio.sleep(0.3)
        assert await turns(app, LOBBY) == []

        await use_mira(fake, GENERAL)  # an admin's: a role-play channel
        await greedy(fake)
        await chat(fake, app, GENERAL, BOB, "Is anyone in?")
        inter = await slash(fake, "replymode", {"args": "mention"})
        assert inter.texts() == [t("replymode_set", "en", mode=t("replymode_mention", "en"))]
        await fake.send_message(GENERAL, BOB, "quiet now?")
        await asyncio.sleep(0.3)
        assert [x.in_text for x in await turns(app, GENERAL)] == ["Is anyone in?"]
        inter = await fake.invoke_command("replymode", {"args": "all"}, BOB, GENERAL)  # members may not
        await inter.wait_callback()
        assert inter.texts() == [t("not_admin", "en")] and inter.ephemeral
        await slash(fake, "replymode", {"args": "all"})
        await chat(fake, app, GENERAL, BOB, "and now?")
        settings = await app.conversations.settings(channel_key(GENERAL))
        assert settings.get("reply_mode") == "all" and "roleplay" not in settings  # written by the command layer


async def test_a_strangers_typed_card_import_is_never_downloaded(app, fake):
    card = json.dumps({"name": "Quill", "description": "A scribe.", "first_mes": "Ink's dry."}).encode()
    async with serving(app, fake):
        def downloads():
            return [r for r in fake.requests if r.path.startswith("/cdn/")]

        def said(text):
            return [m for m in fake.bot_messages(GENERAL) if m.content == text]

        await use_mira(fake, GENERAL)  # a role-play channel: every message there is read
        await fake.send_message(GENERAL, BOB, "/char import", attachments=[("quill.json", card)])
        await fake.wait_for(lambda: said(t("not_bot_admin", "en")))
        assert downloads() == [] and app.library.find("Quill") is None
        # a bot admin (a role in discord.admin_role_ids); typed anywhere, a command is addressed
        await fake.send_message(LOBBY, CAROL, "/char import", attachments=[("quill.json", card)])
        await fake.wait_for(lambda: [m for m in fake.bot_messages(LOBBY)
                                     if m.content == t("char_imported", "en", name="Quill", format="v1")])
        assert len(downloads()) == 1


async def test_a_reply_whose_commit_fails_says_so_as_on_every_platform(app, fake, monkeypatch):
    async with serving(app, fake):
        await use_mira(fake, GENERAL)
        await greedy(fake)

        async def broken_commit(*args, **kwargs):
            raise RuntimeError("disk full (simulated)")

        monkeypatch.setattr(app.store, "commit_turn", broken_commit)
        await fake.send_message(GENERAL, BOB, "Anyone?")
        await fake.wait_for(lambda: persona_messages(fake, GENERAL)[-1].content.endswith(t("engine_error", "en")))
        assert await turns(app, GENERAL) == []  # nothing half-stored


async def test_a_control_character_in_the_token_stops_the_process_with_one_line(app, fake, caplog):
    caplog.set_level(logging.INFO)
    app.config.discord.token = fake.token[:8] + "\x01" + fake.token[8:]  # as if read past the config's own check
    stop = asyncio.Event()
    await asyncio.wait_for(DiscordAdapter(app).run(stop), 15)
    assert stop.is_set()  # the process stops instead of running on without Discord
    [line] = [r for r in caplog.records if r.name.startswith("bot.adapters.discord") and r.levelno >= logging.ERROR]
    assert "control character" in line.getMessage() and "stopping" in line.getMessage() and not line.exc_info
    assert fake.token not in line.getMessage()


# --------------------------------------------------------------------------- exactness, long replies, 429s


async def test_undo_and_reset_are_exact_with_greedy_params(app, fake):
    async with serving(app, fake):
        await use_mira(fake)
        await greedy(fake)
        first = await chat(fake, app, GENERAL, BOB, "Is the coast road really shut?")
        inter = await slash(fake, "undo", {"n": 1})
        assert inter.texts() == [t("undo_done", "en", count=1)] and not inter.ephemeral
        assert await chat(fake, app, GENERAL, BOB, "Is the coast road really shut?") == first
        second = await chat(fake, app, GENERAL, BOB, "Then I will stay.")
        await chat(fake, app, GENERAL, BOB, "Thank you.")
        await slash(fake, "undo", {"n": 2})
        assert await chat(fake, app, GENERAL, BOB, "Then I will stay.") == second
        inter = await slash(fake, "reset")
        assert inter.texts() == [t("reset_done", "en")]
        assert await chat(fake, app, GENERAL, BOB, "Is the coast road really shut?") == first
        shown = len(persona_messages(fake, GENERAL))
        inter = await slash(fake, "regen")
        assert inter.original.deleted  # the character's new message replaces "thinking..."
        regenerated = await fake.wait_for(lambda: persona_messages(fake, GENERAL)[shown:])
        await fake.wait_for(lambda: regenerated[0].content == (first or t("empty_reply")))  # greedy: the same reply
        assert [x.in_text for x in await turns(app, GENERAL)] == ["Is the coast road really shut?"]


async def test_long_reply_streams_into_several_messages_under_2000(app, fake):
    long_card = {"name": "Archivist", "description": "Very long description. " * 300, "first_mes": "Welcome."}
    await app.library.import_card("archivist.json", json.dumps(long_card).encode())
    async with serving(app, fake):
        inter = await slash(fake, "char show", {"name": "Archivist"})
        await fake.wait_for(lambda: len(inter.texts()) == 4)  # 6976 characters
        assert inter.ephemeral and all(m.ephemeral for m in inter.visible_messages())
        assert all(len(x) <= LIMIT for x in inter.texts())
        assert "".join(inter.texts()).count("Very long description.") == 300

        await use_mira(fake)
        for name, value in {**RANDOM_LONG, "max_tokens": 520}.items():
            await slash(fake, "params set", {"name": name, "value": value})
        # Near-uniform sampling ends a turn early about one time in three (tokens holding "\n\n"): a fixed seed
        # makes this reply one that runs past 2,000 characters.
        app.engine.reseed(SEED_LONG)
        reply = await chat(fake, app, GENERAL, BOB, "Tell me everything.", prefix="")
    streamed = persona_messages(fake, GENERAL)[1:]
    assert len(reply) > LIMIT, "the random model stopped early; the test needs a reply over 2000 characters"
    assert len(streamed) >= 2 and all(0 < len(m.content) <= LIMIT for m in streamed)
    assert [m.content for m in streamed] == split_message(reply)
    for message in streamed:  # at most about one edit a second per message while streaming
        times = [at for at, _ in message.history][:-1]  # the final edit follows the commit at once
        assert all(b - a >= 0.9 for a, b in zip(times, times[1:])), times


async def test_a_429_on_edits_is_waited_out(app, fake):
    async with serving(app, fake):
        await use_mira(fake)
        # a reply long enough to be posted early and edited
        for name, value in {**RANDOM_LONG, "max_tokens": 80}.items():
            await slash(fake, "params set", {"name": name, "value": value})
        fake.fail_next("PATCH /webhooks/*/*/messages/*", status=429, retry_after=0.4, count=2)
        # The demo model writes 80 tokens faster than one post; pace it like a real model (~50 tokens/s) so the
        # reply is posted early and then edited.
        pace(app.engine, 0.02)
        reply = await chat(fake, app, GENERAL, BOB, "Tell me about the harbour, the boats and the storm.")
        app.engine.step_hook = None
        assert [r.status for r in fake.rate_limited] == [429, 429], "no edit happened: the reply was posted whole"
        assert persona_messages(fake, GENERAL)[-1].content == (reply or t("empty_reply"))

        # an admin deletes the persona webhook: that reply comes from the bot, the next one from a new webhook
        old_hook = persona_messages(fake, GENERAL)[-1].webhook_id
        fake.webhooks.clear()
        await greedy(fake)
        await chat(fake, app, GENERAL, BOB, "Still there?", prefix="**Mira**: ")
        await chat(fake, app, GENERAL, BOB, "Good.")
        assert persona_messages(fake, GENERAL)[-1].webhook_id not in (None, old_hook)


async def test_stop_mid_reply_cancels_it_in_time_and_leaves_the_channel_unchanged(tmp_path, demo7, fake):
    app = await build_app(load_config(config_for(tmp_path, demo7, fake, **{"limits.shutdown_seconds": 2}), env={}))
    try:
        async with serving(app, fake):
            await use_mira(fake)
            for name, value in {**RANDOM_LONG, "max_tokens": 2000}.items():
                await slash(fake, "params set", {"name": name, "value": value})
            app.engine.reseed(SEED_LONG)  # a reply that does not end by itself before the stop
            pace(app.engine, 0.01)  # nor reaches max_tokens in the grace time
            await fake.send_message(GENERAL, BOB, "Tell me a very long story.")
            await fake.wait_for(lambda: len(persona_messages(fake, GENERAL)) == 2)  # streaming has begun
            loop = asyncio.get_running_loop()
            stopping = loop.time()
        assert loop.time() - stopping < 5 and not fake.connected
        # what was written so far stays, and says why it stopped (as on Telegram)
        reply = [m.content for m in persona_messages(fake, GENERAL)[1:]]
        assert reply[-1].endswith(t("reply_cancelled", "en")) and len("".join(reply)) > len(t("reply_cancelled"))
        assert await turns(app, GENERAL) == []  # nothing half-done was committed
    finally:
        await app.close()


# --------------------------------------------------------------------------- robustness


async def test_gateway_reconnects_are_survived_and_commands_synced_once(app, fake):
    async with serving(app, fake) as adapter:
        await use_mira(fake)
        await greedy(fake)
        await fake.close_gateway(code=4000)  # RESUME
        await fake.wait_for(lambda: fake.resume_count == 1 and fake.connected)
        await chat(fake, app, GENERAL, BOB, "still there?")

        async def no_identify_delay(shard_id, *, initial=False):  # discord.py waits 5 s before re-IDENTIFY
            return None

        adapter.client.before_identify_hook = no_identify_delay
        await fake.close_gateway(code=4000, invalidate=True)  # a new session: on_ready fires again
        await fake.wait_for(lambda: fake.identify_count == 2 and fake.connected and adapter.client.is_ready())
        await chat(fake, app, GENERAL, BOB, "and now?")
        assert len(fake.sync_calls) == 1  # setup_hook syncs once, not on every READY
        assert len(await turns(app, GENERAL)) == 2


async def test_stop_and_restart_continue_exactly(tmp_path, demo7, fake):
    messages = ["Good evening.", "Where does the road go?", "Thank you."]
    config = config_for(tmp_path, demo7, fake)
    first = await build_app(load_config(config, env={}))
    async with serving(first, fake):
        await use_mira(fake)
        await greedy(fake)
        for text in messages[:2]:
            await chat(fake, first, GENERAL, BOB, text)
    assert not fake.connected
    await first.close()

    second = await build_app(load_config(config, env={}))
    try:
        async with serving(second, fake):
            after_restart = await chat(fake, second, GENERAL, BOB, messages[2])
            shown = (await slash(fake, "params show")).texts()[0]
            assert "* temperature = 0.0" in shown and "* max_tokens = 16" in shown
            # the same conversation without the restart, in another channel
            await use_mira(fake, SIDE)
            await greedy(fake, SIDE)
            replies = [await chat(fake, second, SIDE, BOB, text) for text in messages]
            assert replies[-1] == after_restart
    finally:
        await second.close()


async def test_rwkv_bot_run_with_discord_exits_cleanly_on_sigterm(tmp_path, demo7, fake):
    config = config_for(tmp_path, demo7, fake)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RWKV_BOT_")}
    env.update(RWKV_BOT_DISCORD_TOKEN=fake.token, RWKV_BOT_DISCORD_API_BASE=fake.api_base,
               RWKV_BOT_DISCORD_GATEWAY_URL=fake.gateway_url)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", "--config", str(config), cwd=str(tmp_path), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await fake.wait_for(lambda: fake.connected and fake.commands.get(None) or process.returncode is not None,
                            timeout=60)
        assert process.returncode is None
        await fake.send_message(DM, BOB, "hello from the test")
        await fake.wait_for(lambda: persona_messages(fake, DM), timeout=20)
        loop = asyncio.get_running_loop()
        started = loop.time()
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=15)
        assert process.returncode == 0 and loop.time() - started < 15
        assert "Traceback" not in stderr.decode(), stderr.decode()[-3000:]
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_dashboard_link_is_ephemeral_and_slash_changes_are_audited_with_the_channel_title(app, fake):
    from bot.commands import admin
    from bot.commands.signin import SignInLinks

    app.commands.signins = SignInLinks("http://127.0.0.1:9")  # as bot.dashboard sets it when the page is on
    async with serving(app, fake):
        inter = await slash(fake, "dashboard", user=BOB)  # a plain member: refused, no link
        assert inter.ephemeral and inter.texts() == [t("not_admin", "en")]
        inter = await slash(fake, "dashboard", user=ALICE)
        assert inter.ephemeral and "http://127.0.0.1:9/signin/" in inter.texts()[0]
        assert fake.channel_messages(GENERAL) == []  # nothing public
        await fake.send_message(GENERAL, ALICE, "/dashboard")  # typed in the channel: the link goes by DM

        def links_in_dms():
            dms = [c.id for c in fake.channels.values() if c.type == 1 and c.recipient_ids == [ALICE]]
            return [m for dm in dms for m in fake.bot_messages(dm) if "/signin/" in m.content]

        await fake.wait_for(links_in_dms)
        assert not [m for m in fake.channel_messages(GENERAL) if "/signin/" in m.content]
        await slash(fake, "params set", {"name": "temperature", "value": 0.5}, user=ALICE)
    latest = (await admin.audit_log(app.commands))[0]
    assert (latest.surface, latest.channel, latest.action, latest.detail) == (
        "discord", f"discord:{GENERAL}", "params set", "temperature 0.5")
    assert latest.user == f"Ali ({ALICE})"
    assert [r.title for r in await admin.channels(app.commands)] == ["Test server #general"]
