"""The Telegram adapter: the real python-telegram-bot Application polling the fake Bot API server
(tests/fake_telegram.py), on the real engine (RWKV-7 demo model) and a real SQLite database."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bot.adapters.telegram import TelegramAdapter
from bot.adapters.telegram.text import MAX_MESSAGE_CHARS, strip_mention
from bot.adapters.text import split_message as split_to
from bot.app import build_app
from bot.config import load_config
from bot.conversations import ChannelKey
from bot.i18n import t
from tests.chat_helpers import pace
from tests.conftest import ROOT, write_config
from tests.fake_telegram import FakeTelegram

TOKEN = "123:ABC"
GREEDY = "/params set temperature 0 max_tokens 16"
# Sampling at temperature 5 on the demo model rarely ends a turn early: a reply that really runs for a while.
LONG_SAMPLED = "/params set temperature 5 top_p 1 mirostat_tau 0 presence_penalty 0 max_tokens {n}"


@pytest.fixture
async def server():
    async with FakeTelegram(bot_token=TOKEN, bot_username="rwkvbot") as srv:
        yield srv


def telegram_config(directory: Path, model: Path, server: FakeTelegram, **settings) -> Path:
    values = {
        "model.backend": "auto",
        "telegram.token": TOKEN, "telegram.base_url": server.base_url, "telegram.base_file_url": server.base_file_url,
        "telegram.requests_per_second": 0, "telegram.group_requests_per_minute": 0, "telegram.edit_interval": 0.2,
        "sampling.temperature": 0, "sampling.max_tokens": 12, "limits.user_messages_per_minute": 100_000,
    }
    values.update({key.replace("__", "."): value for key, value in settings.items()})
    return write_config(directory, model, settings=values)


class RunningBot:
    """The app and its Telegram adapter polling the fake server, as `rwkv-bot run` runs them."""

    def __init__(self, server: FakeTelegram, config: Path, **adapter_options):
        self.server = server
        self.config = config
        self.adapter_options = adapter_options

    async def start(self) -> "RunningBot":
        self.app = await build_app(load_config(self.config, env={}))
        self.adapter = TelegramAdapter(self.app, **self.adapter_options)
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.adapter.run(self.stop))
        await asyncio.wait({self.task, asyncio.create_task(self.adapter.ready.wait())}, timeout=20,
                           return_when=asyncio.FIRST_COMPLETED)
        assert self.adapter.ready.is_set(), "the adapter did not start polling"
        return self

    async def close(self) -> float:
        """Stop as SIGTERM does (the stop event); returns how long run() took to return."""
        t0 = time.monotonic()
        self.stop.set()
        await asyncio.wait_for(self.task, 30)
        took = time.monotonic() - t0
        await self.app.conversations.drain(5)
        await self.app.close()
        return took

    async def say(self, chat, user, text: str, **kw) -> dict:
        """A user writes; returns once the adapter is done with it (reply final, refused or ignored)."""
        done = self.adapter.messages_done
        message = self.server.send_text(chat, user, text, **kw)
        await self.server.wait_for(lambda: self.adapter.messages_done > done, timeout=60)
        return message

    async def send_document(self, chat, user, filename: str, data: bytes, caption: str | None = None, **kw) -> dict:
        done = self.adapter.messages_done
        message = self.server.send_document(chat, user, filename, data, caption, **kw)
        if caption:
            await self.server.wait_for(lambda: self.adapter.messages_done > done, timeout=60)
        return message

    def texts(self, chat, **kw) -> list[str]:
        return [m.text for m in self.server.messages(chat, **kw)]

    async def turns(self, external_id: str):
        _, turns = await self.app.conversations.transcript(ChannelKey("telegram", external_id))
        return turns

    async def turns_shown(self, external_id) -> bool:
        """Every reply's messages are known to the conversation (the adapter reports them once painted)."""
        return all(t.out_message_ids for t in await self.turns(str(external_id)))


@asynccontextmanager
async def running(server: FakeTelegram, config: Path, **adapter_options):
    bot = await RunningBot(server, config, **adapter_options).start()
    try:
        yield bot
    finally:
        if not bot.task.done():
            await bot.close()


def squash(text: str) -> str:
    """Text without whitespace: pieces of a split message lose the whitespace at their cut."""
    return "".join(text.split())


# ----------------------------------------------------------------------------- text rules (no network)


def split_message(text: str, limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """The one split of every platform, at Telegram's limit."""
    return split_to(text, limit)


def test_split_prefers_paragraphs_then_lines_then_sentences_then_spaces():
    para = "First paragraph. " * 10 + "\n\n" + "Second paragraph. " * 10
    assert split_message(para, 250) == [("First paragraph. " * 10).strip(), ("Second paragraph. " * 10).strip()]
    lines = "a line of text\n" * 30
    assert all(p.endswith("a line of text") for p in split_message(lines, 100))
    sentences = "One sentence here. Another one! A question? " * 20
    pieces = split_message(sentences, 200)
    assert all(p[-1] in ".!?" for p in pieces) and all(len(p) <= 200 for p in pieces)
    chinese = "这是一个句子。" * 100
    assert all(p.endswith("。") and len(p) <= 150 for p in split_message(chinese, 150))
    words = "word " * 300
    assert all(p.endswith("word") for p in split_message(words, 97))
    unbroken = "x" * 10_000
    assert [len(p) for p in split_message(unbroken)] == [4096, 4096, 1808]
    assert split_message("   \n\t ") == [] and split_message("  short  ") == ["short"]


def test_split_pieces_fit_keep_the_text_and_stay_stable_while_it_grows():
    text = ("Mira looks up. \"Storm's coming,\" she says.\n" * 40 + "\n" + "稿纸。" * 400 + " ") * 6
    pieces = split_message(text)
    assert len(pieces) > 2
    assert all(0 < len(p) <= 4096 and p == p.strip() for p in pieces)
    assert squash("".join(pieces)) == squash(text)
    # While a streamed reply grows, every piece already full stays exactly the same.
    for end in range(4000, len(text), 997):
        grown = split_message(text[:end])
        assert grown[:-1] == pieces[:len(grown) - 1]


def test_bot_mention_is_removed_from_the_text():
    assert strip_mention("@RwkvBot, hello there", "rwkvbot") == "hello there"
    assert strip_mention("so @rwkvbot what now", "rwkvbot") == "so what now"
    assert strip_mention("write to x@rwkvbot or @rwkvbot2", "rwkvbot") == "write to x@rwkvbot or @rwkvbot2"


# ----------------------------------------------------------------------------- private chats


async def test_private_chat_streams_by_editing_and_ends_with_the_committed_text(tmp_path, demo7, server):
    config = telegram_config(tmp_path, demo7, server, telegram__edit_interval=1.0)
    async with running(server, config) as bot:
        chat = server.private_chat(42, "Ann", language_code="en")
        await bot.say(chat, 42, "/start")
        greeting = (await bot.app.conversations.view(ChannelKey("telegram", "42"))).settings["greeting"]
        assert bot.texts(42) == [greeting.strip()]
        await bot.say(chat, 42, LONG_SAMPLED.format(n=150))
        bot.app.engine.reseed(1)  # a sampled reply that runs its 150 tokens,
        pace(bot.app.engine, 0.02)  # at about a real model's pace
        await bot.say(chat, 42, "tell me about the harbour")
        reply = server.messages(42)[-1]
        [turn] = await bot.turns("42")
        assert turn.in_speaker == "Ann" and turn.in_text == "tell me about the harbour"
        assert reply.text == turn.out_text.strip() and len(reply.text) > 100
        versions = reply.history
        assert len(versions) >= 3, "first words, at least one edit while generating, the final text"
        assert len(versions[0].text) < len(reply.text)
        paced = [b.t - a.t for a, b in zip(versions[:-2], versions[1:-1])]
        assert all(gap >= 0.9 for gap in paced), f"edits closer than the 1 s pace: {paced}"
        assert reply.reply_to_message_id is None  # private chats are not quoted
    assert "typing" in [a.action for a in server.chat_actions(42)]
    assert all("parse_mode" not in c.params for c in server.calls_to("sendMessage") + server.calls_to("editMessageText"))
    menu = {c["command"]: c["description"] for c in server.commands_for("")}
    menu_zh = {c["command"]: c["description"] for c in server.commands_for("zh")}
    for name in ("start", "help", "char", "undo", "params"):
        assert name in menu and name in menu_zh
    assert menu["undo"] != menu_zh["undo"] and "撤回" in menu_zh["undo"]
    # /replymode is offered where it applies: in groups, not in private chats; terminal commands nowhere here
    groups = {c["command"] for c in server.commands_for("", "all_group_chats")}
    groups_zh = {c["command"] for c in server.commands_for("zh", "all_group_chats")}
    assert "replymode" not in menu and "replymode" not in menu_zh
    assert "replymode" in groups and "replymode" in groups_zh and set(menu) <= groups
    assert "quit" not in groups | set(menu)


async def test_undo_and_reset_give_the_same_greedy_replies(tmp_path, demo7, server):
    async with running(server, telegram_config(tmp_path, demo7, server)) as bot:
        chat = server.private_chat(7, "Ann")
        await bot.say(chat, 7, "/start")
        await bot.say(chat, 7, GREEDY)
        assert bot.texts(7)[-1] == "Set temperature = 0.0, max_tokens = 16."
        await bot.say(chat, 7, "good evening")
        opening = bot.texts(7)[-1]
        await bot.say(chat, 7, "what is that light on the hill?")
        first = bot.texts(7)[-1]
        await bot.say(chat, 7, "/undo")
        assert bot.texts(7)[-1] == "Took back 1 exchange."
        await bot.say(chat, 7, "what is that light on the hill?")
        assert bot.texts(7)[-1] == first
        await bot.say(chat, 7, "/reset")
        await bot.say(chat, 7, "good evening")
        assert bot.texts(7)[-1] == opening
        assert [t.out_text.strip() or "(the character said nothing)" for t in await bot.turns("7")] == [opening]
        assert opening != first


async def test_a_20000_character_message_gets_a_clear_answer(tmp_path, demo7, server):
    async with running(server, telegram_config(tmp_path, demo7, server)) as bot:
        chat = server.private_chat(8, "Ann")
        await bot.say(chat, 8, "harbour " * 2500)
        texts = bot.texts(8)
        assert texts[0] == "(Your message was too long; only the first 4000 characters were read.)"
        assert len(texts) == 2  # and the character still answers
        [turn] = await bot.turns("8")
        assert len(turn.in_text) <= 4000


async def test_unknown_commands_and_commands_for_other_bots(tmp_path, demo7, server):
    async with running(server, telegram_config(tmp_path, demo7, server)) as bot:
        chat = server.private_chat(9, "Ann")
        await bot.say(chat, 9, "/frobnicate now")
        assert bot.texts(9) == ["Unknown command /frobnicate, see /help."]
        await bot.say(chat, 9, "/help@otherbot")
        await bot.say(chat, 9, "/help@RWKVbot")
        assert len(bot.texts(9)) == 2 and bot.texts(9)[1].startswith("Commands:")
        assert "/replymode - " not in bot.texts(9)[1] and "/quit" not in bot.texts(9)[1]  # offered where it applies
        await bot.say(chat, 9, "/quit")  # the terminal's
        assert bot.texts(9)[-1] == "Unknown command /quit, see /help."
        group = server.group_chat(-90, "Club")
        await bot.say(group, 5, "/frobnicate")  # may be another bot's command: not ours to refuse
        await bot.say(group, 5, "/frobnicate@rwkvbot")
        assert bot.texts(group) == ["Unknown command /frobnicate, see /help."]
        await bot.say(group, 5, "/help")
        assert "/replymode - " in bot.texts(group)[-1]


# ----------------------------------------------------------------------------- groups


async def test_group_answers_mentions_and_replies_and_every_message_once_an_admin_says_so(tmp_path, demo7, server):
    async with running(server, telegram_config(tmp_path, demo7, server)) as bot:
        group = server.group_chat(-500, "Harbour club")
        server.user(1, "Ada", last_name="King")
        server.set_member_status(group.id, 1, "administrator")
        server.user(2, "Bob")
        server.set_member_status(group.id, 2, "member")
        await bot.say(group, 2, "just chatting among ourselves")
        assert bot.texts(group) == []
        asked = await bot.say(group, 2, "@rwkvbot, where is the ferry?")
        [answer] = server.messages(group)
        assert answer.reply_to_message_id == asked["message_id"]
        [turn] = await bot.turns("-500")
        assert (turn.in_speaker, turn.in_text) == ("Bob", "where is the ferry?")
        await bot.say(group, 1, "and when does it leave?", reply_to=answer)
        assert len(server.messages(group)) == 2
        assert (await bot.turns("-500"))[-1].in_speaker == "Ada King"
        await bot.say(group, 2, "ignored again")
        assert len(server.messages(group)) == 2

        await bot.say(group, 2, "/replymode all")
        assert bot.texts(group)[-1] == "Only admins can do that here."
        await bot.say(group, 1, "/replymode all")
        assert bot.texts(group)[-1] == "Reply mode: answer every message."
        await bot.say(group, 2, "now everyone is heard")
        assert (await bot.turns("-500"))[-1].in_text == "now everyone is heard"
        await bot.say(group, 1, "/replymode@rwkvbot mention")
        await bot.say(group, 2, "quiet again")
        assert (await bot.turns("-500"))[-1].in_text == "now everyone is heard"


async def test_params_set_needs_a_group_admin(tmp_path, demo7, server):
    config = telegram_config(tmp_path, demo7, server, telegram__admin_ids=[33])
    async with running(server, config) as bot:
        group = server.group_chat(-600, "Club")
        for user, status in ((31, "creator"), (32, "member"), (33, "member")):
            server.set_member_status(group.id, user, status)
        await bot.say(group, 32, "/params set max_tokens 5")
        assert bot.texts(group)[-1] == "Only admins can do that here."
        await bot.say(group, 31, "/params set max_tokens 5")
        assert bot.texts(group)[-1] == "Set max_tokens = 5."
        await bot.say(group, 33, "/params set max_tokens 6")  # telegram.admin_ids
        assert bot.texts(group)[-1] == "Set max_tokens = 6."
        await bot.say(group, 32, "/params reset")
        assert bot.texts(group)[-1] == "Only admins can do that here."
        await bot.say(group, 32, "/params")
        assert "* max_tokens = 6" in bot.texts(group)[-1]
        dm = server.private_chat(32, "Bob")
        await bot.say(dm, 32, "/params set max_tokens 7")  # everyone is admin of their own private chat
        assert bot.texts(dm)[-1] == "Set max_tokens = 7."
    assert [c.params["user_id"] for c in server.calls_to("getChatMember")] == ["32", "31"]  # remembered a while


async def test_forum_topics_are_separate_channels_answered_in_their_topic(tmp_path, demo7, server):
    async with running(server, telegram_config(tmp_path, demo7, server)) as bot:
        forum = server.group_chat(-1001, "Forum", is_forum=True)
        stories = server.create_topic(forum.id, "Stories", creator=77)
        other = server.create_topic(forum.id, "Other", creator=77)
        server.set_member_status(forum.id, 77, "creator")
        await bot.say(forum, 77, "/replymode all", message_thread_id=stories)  # per topic
        await bot.say(forum, 77, "once upon a time", message_thread_id=stories)
        await bot.say(forum, 77, "not for the bot", message_thread_id=other)
        await bot.say(forum, 77, "@rwkvbot hello", message_thread_id=other)
        in_stories = server.messages(forum, thread_id=stories)
        in_other = server.messages(forum, thread_id=other)
        assert len(in_stories) == 2 and len(in_other) == 1
        assert len(server.messages(forum)) == 3
        assert [t.in_text for t in await bot.turns(f"-1001:{stories}")] == ["once upon a time"]
        assert [t.in_text for t in await bot.turns(f"-1001:{other}")] == ["hello"]
        assert {a.message_thread_id for a in server.chat_actions(forum)} == {stories, other}


async def test_a_channel_keeps_arrival_order_while_an_admin_check_is_slow(tmp_path, demo7, server):
    async with running(server, telegram_config(tmp_path, demo7, server)) as bot:
        group = server.group_chat(-700, "Club")
        server.set_member_status(group.id, 1, "administrator")
        server.fail_next("getChatMember", None, delay=0.8)  # the command waits on Telegram; the chat line does not
        done = bot.adapter.messages_done
        server.send_text(group, 1, "/params set max_tokens 3")
        server.send_text(group, 1, "@rwkvbot first")
        server.send_text(group, 1, "@rwkvbot second")
        await server.wait_for(lambda: bot.adapter.messages_done == done + 3, timeout=30)
        assert bot.texts(group)[0] == "Set max_tokens = 3."
        assert [t.in_text for t in await bot.turns("-700")] == ["first", "second"]
        assert all(len(t.out_text) < 40 for t in await bot.turns("-700"))  # 3 tokens: the new params applied


# ----------------------------------------------------------------------------- long replies


async def test_long_answers_are_split_into_several_messages(tmp_path, demo7, server):
    async with running(server, telegram_config(tmp_path, demo7, server)) as bot:
        card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {
            "name": "Verbose", "description": ("She talks a lot. " * 30 + "\n\n") * 15, "personality": "",
            "scenario": "", "first_mes": "Hello.", "mes_example": ""}}
        await bot.app.library.import_card("verbose.json", json.dumps(card).encode())
        chat = server.private_chat(12, "Ann")
        await bot.say(chat, 12, "/char show Verbose")
        texts = bot.texts(12)
        assert len(texts) == 3 and all(len(t) <= 4096 for t in texts)
        assert texts[0].startswith("Verbose") and texts[1].startswith("She talks a lot.")

    # A streamed reply goes on in new messages as it grows (a small limit makes the demo model's reply long).
    async with running(server, telegram_config(tmp_path / "small", demo7, server), message_limit=200) as bot:
        chat = server.private_chat(13, "Ann")
        await bot.say(chat, 13, LONG_SAMPLED.format(n=120))
        bot.app.engine.reseed(1)  # a sampled reply that runs its 120 tokens, at about a real model's pace
        pace(bot.app.engine, 0.01)
        await bot.say(chat, 13, "tell me everything")
        pieces = server.messages(13)[1:]
        [turn] = await bot.turns("13")
        assert len(pieces) >= 2 and all(len(m.text) <= 200 for m in pieces)
        assert squash("".join(m.text for m in pieces)) == squash(turn.out_text)
        assert pieces[0].sent_t < pieces[-1].sent_t and len(pieces[0].history) >= 2


async def test_markup_characters_arrive_intact(tmp_path, demo7, server):
    async with running(server, telegram_config(tmp_path, demo7, server)) as bot:
        nasty = "<b>not bold</b> *star* _under_ a<b & c>d `tick` [x](y) 1.5 \\ &amp;"
        card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {
            "name": "Marka", "description": "d", "personality": "", "scenario": "", "first_mes": nasty,
            "mes_example": ""}}
        await bot.app.library.import_card("marka.json", json.dumps(card).encode())
        chat = server.private_chat(14, "Ann")
        await bot.say(chat, 14, "/char use Marka")
        assert bot.texts(14) == ["Now talking with Marka.", nasty]


# ----------------------------------------------------------------------------- cards by document


def card_json(name: str) -> bytes:
    return json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": {
        "name": name, "description": f"{name} keeps bees.", "personality": "", "scenario": "",
        "first_mes": f"{name} waves.", "mes_example": ""}}).encode()


async def test_card_import_by_document_and_bad_or_huge_files_refused(tmp_path, demo7, server):
    # Ann (20) is one of the bot's admins (telegram.admin_ids); the shared library is theirs.
    config = telegram_config(tmp_path, demo7, server, telegram__max_card_bytes=50_000, telegram__admin_ids=[20])
    async with running(server, config) as bot:
        stranger = server.private_chat(22, "Mallory")  # her private chat makes her its admin, not the bot's
        await bot.send_document(stranger, 22, "mira.json", card_json("Mira"), caption="/char import")
        assert bot.texts(22)[-1] == t("not_bot_admin", "en") and server.calls_to("download") == []
        chat = server.private_chat(20, "Ann")
        await bot.send_document(chat, 20, "nova.json", card_json("Nova"), caption="/char import")
        assert bot.texts(20)[-1] == "Imported Nova (v2)."
        await bot.send_document(chat, 20, "mira.json", card_json("Mira"), caption="/char import")
        assert bot.texts(20)[-1] == t("card_name_taken", "en", name="Mira")
        doc = await bot.send_document(chat, 20, "orla.json", card_json("Orla"))
        await bot.say(chat, 20, "/char import", reply_to=doc)
        assert bot.texts(20)[-1] == "Imported Orla (v2)."
        await bot.say(chat, 20, "/char use Orla")
        assert bot.texts(20)[-1] == "Orla waves."

        await bot.send_document(chat, 20, "broken.json", b"{not json at all", caption="/char import")
        assert bot.texts(20)[-1].startswith("Cannot import that card:")
        downloads = len(server.calls_to("download"))
        await bot.send_document(chat, 20, "huge.png", b"\x89PNG" + bytes(60_000), caption="/char import")
        assert bot.texts(20)[-1] == "Cannot import that card: the file is 60004 bytes; the limit is 50000 bytes"
        assert len(server.calls_to("download")) == downloads  # refused before downloading
        await bot.say(chat, 20, "/char import")
        assert bot.texts(20)[-1].startswith("Attach a card file")

        group = server.group_chat(-800, "Club")
        server.set_member_status(group.id, 21, "member")
        await bot.send_document(group, 21, "pia.json", card_json("Pia"), caption="/char import")
        assert bot.texts(group)[-1] == t("not_bot_admin", "en")
        assert len(server.calls_to("download")) == downloads
        assert bot.app.library.find("Pia") is None


async def test_a_flood_of_card_imports_is_refused_before_any_lookup_or_download(tmp_path, demo7, server):
    config = telegram_config(tmp_path, demo7, server, limits__user_messages_per_minute=6,  # a burst of 3
                             telegram__admin_ids=[22])  # one of the bot's admins, who own the shared library
    async with running(server, config) as bot:
        group = server.group_chat(-810, "Club")
        server.set_member_status(group.id, 22, "creator")
        server.set_member_status(group.id, 23, "member")
        for i in range(5):
            await bot.send_document(group, 22, f"c{i}.json", card_json(f"Card{i}"), caption="/char import")
        assert len(server.calls_to("download")) == 3  # the admin's burst; the flood is refused before downloading
        assert bot.texts(group)[:3] == [f"Imported Card{i} (v2)." for i in range(3)]
        assert bot.texts(group)[3:] == [t("rate_limited", "en")]  # told once, then quiet
        for i in range(3):
            await bot.send_document(group, 23, f"d{i}.json", card_json(f"Dup{i}"), caption="/char import")
        assert bot.texts(group)[4:] == [t("not_bot_admin", "en")] * 3
        assert len(server.calls_to("download")) == 3  # a member's files are never downloaded


# ----------------------------------------------------------------------------- platform errors


async def test_rate_limits_and_server_errors_are_survived(tmp_path, demo7, server, caplog):
    caplog.set_level(logging.INFO)
    async with running(server, telegram_config(tmp_path, demo7, server)) as bot:
        chat = server.private_chat(30, "Ann")
        server.fail_next("sendMessage", 429, retry_after=1)
        server.fail_next("sendMessage", 502)
        t0 = time.monotonic()
        await bot.say(chat, 30, "hello?")
        [turn] = await bot.turns("30")
        assert bot.texts(30) == [turn.out_text.strip() or "(the character said nothing)"]
        assert time.monotonic() - t0 >= 1.0  # waited as Telegram asked
        statuses = [c.status for c in server.calls_to("sendMessage")]
        assert statuses[:3] == [429, 502, 200]
        server.fail_next("getUpdates", 500)
        await bot.say(chat, 30, "still there?")  # polling recovers by itself
        assert len(bot.texts(30)) == 2
    assert not [r for r in caplog.records if r.exc_info], "handled errors are logged without a traceback"


async def test_bot_removed_from_a_group_keeps_its_conversation_and_serves_others(tmp_path, demo7, server, caplog):
    caplog.set_level(logging.INFO)
    async with running(server, telegram_config(tmp_path, demo7, server)) as bot:
        group = server.group_chat(-900, "Club")
        await bot.say(group, 5, "@rwkvbot hello")
        server.kick_bot(group.id)
        await bot.say(group, 5, "@rwkvbot are you there?")
        assert len(server.messages(group)) == 1
        assert [t.in_text for t in await bot.turns("-900")] == ["hello", "are you there?"]  # committed, kept
        chat = server.private_chat(31, "Ann")
        await bot.say(chat, 31, "hi")
        assert len(bot.texts(31)) == 1
    refusals = [r for r in caplog.records if "Forbidden" in r.getMessage() or "kicked" in r.getMessage()]
    assert refusals and not [r for r in caplog.records if r.exc_info]


# ----------------------------------------------------------------------------- stopping


async def test_stop_cuts_off_a_long_reply_promptly_and_leaves_the_channel_unchanged(tmp_path, demo7, server):
    config = telegram_config(tmp_path, demo7, server, limits__shutdown_seconds=0.5)
    bot = await RunningBot(server, config).start()
    chat = server.private_chat(40, "Ann")
    await bot.say(chat, 40, LONG_SAMPLED.format(n=2000))
    bot.app.engine.reseed(1)  # a sampled reply that does not end by itself before the stop,
    pace(bot.app.engine, 0.01)  # nor reaches max_tokens within the shutdown time
    server.send_text(chat, 40, "tell me a very long story")
    await server.wait_for(lambda: len(server.messages(40)) == 2, timeout=20)  # streaming has begun
    took = await bot.close()
    assert took < 8
    assert server.messages(40)[-1].text.endswith("(reply cancelled)")
    restarted = await build_app(load_config(config, env={}))
    try:
        _, turns = await restarted.conversations.transcript(ChannelKey("telegram", "40"))
        assert turns == []
    finally:
        await restarted.close()


async def test_stop_and_start_again_on_the_same_database_continues_exactly(tmp_path, demo7, server):
    config = telegram_config(tmp_path, demo7, server)
    lines = ["good morning", "is the ferry running?", "then I will walk"]
    first = await RunningBot(server, config).start()
    chat = server.private_chat(50, "Ann")
    for text in ["/start", GREEDY, *lines[:2]]:
        await first.say(chat, 50, text)
    assert await first.close() < 5
    async with running(server, config) as second:
        await second.say(chat, 50, lines[2])
        after_restart = second.texts(50)[-1]
        await second.say(chat, 50, "/params")
        assert "* max_tokens = 16" in second.texts(50)[-1]
        twin = server.private_chat(51, "Ann")  # the same conversation, never interrupted
        for text in ["/start", GREEDY, *lines]:
            await second.say(twin, 51, text)
        assert second.texts(51)[-1] == after_restart
        restarted_turns = [t.out_text for t in await second.turns("50")]
        assert restarted_turns == [t.out_text for t in await second.turns("51")]
        assert any(text.strip() for text in restarted_turns), "the demo model said nothing: the test proves little"


async def test_rwkv_bot_run_serves_telegram_and_exits_cleanly_on_sigterm(tmp_path, demo7, server):
    config = write_config(tmp_path, demo7, settings={"sampling.temperature": 0, "sampling.max_tokens": 8})
    env = {k: v for k, v in os.environ.items() if not k.startswith("RWKV_BOT_")}
    env.update(RWKV_BOT_TELEGRAM_TOKEN=TOKEN, RWKV_BOT_TELEGRAM_BASE_URL=server.base_url)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", "--config", str(config), cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        await server.wait_for(lambda: server.in_flight.get("getUpdates"), timeout=60)
        chat = server.private_chat(60, "Ann")
        server.send_text(chat, 60, "/start")
        server.send_text(chat, 60, "hello")
        await server.wait_for(lambda: len(server.messages(60)) == 2, timeout=30)
        t0 = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 15)
        assert process.returncode == 0, stderr.decode()[-3000:]
        assert time.monotonic() - t0 < 15
        assert TOKEN not in stderr.decode() and "Traceback" not in stderr.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_power_commands_work_on_telegram_and_stay_exact(tmp_path, demo7, server):
    async with running(server, telegram_config(tmp_path, demo7, server)) as bot:
        chat = server.private_chat(70, "Ann")
        for text in ("/start", GREEDY, "good evening"):
            await bot.say(chat, 70, text)
        await bot.say(chat, 70, "/save s1")
        assert bot.texts(70)[-1] == "Saved as 's1'."
        await bot.say(chat, 70, "what is in the drawer?")
        direct = bot.texts(70)[-1]
        await bot.say(chat, 70, "/as Narrator The wind rises.")
        assert (await bot.turns("70"))[-1].in_speaker == "Narrator"
        await bot.say(chat, 70, "/edit It was quiet.")
        assert bot.texts(70)[-1] == "Replaced the last reply."
        assert (await bot.turns("70"))[-1].out_text.strip() == "It was quiet."
        await bot.say(chat, 70, "/continue")
        assert len(await bot.turns("70")) == 4
        await bot.say(chat, 70, "/suggest")
        assert bot.texts(70)[-1].startswith("Suggestion: ") and len(await bot.turns("70")) == 4
        await bot.say(chat, 70, "/load s1")
        assert bot.texts(70)[-1] == "Restored 's1'." and len(await bot.turns("70")) == 1
        await bot.say(chat, 70, "what is in the drawer?")
        assert bot.texts(70)[-1] == direct  # the loaded state is exactly the saved one
        await bot.say(chat, 70, "/saves")
        assert "- s1: 1 turn(s)" in bot.texts(70)[-1]
        await bot.say(chat, 70, "/delsave s1")
        await bot.say(chat, 70, "/load s1")
        assert bot.texts(70)[-1] == "No save named 's1'. See /saves."

        await bot.say(chat, 70, "/debug 4000 ids")
        await bot.say(chat, 70, "/export json")
        debug, export = server.documents(70)[-2:]
        assert debug.document.file_name == "debug.txt" and b"State has read" in debug.document.data
        exported = json.loads(export.document.data)
        assert [t["text"] for t in exported["turns"]] == ["good evening", "what is in the drawer?"]
        await bot.say(chat, 70, "/lang zh")
        await bot.say(chat, 70, "/help")
        assert "/continue - 让角色继续说" in bot.texts(70)[-1]

        group = server.group_chat(-700, "Club")
        server.set_member_status(group.id, 71, "member")
        for text in ("/save g1", "/debug", "/load s1"):
            await bot.say(group, 71, text)
            assert bot.texts(group)[-1] == "Only admins can do that here.", text


async def test_group_changes_are_audited_and_the_chat_title_is_listed(tmp_path, demo7, server):
    from bot.commands import admin

    async with running(server, telegram_config(tmp_path, demo7, server)) as bot:
        group = server.group_chat(-700, "Night Owls")
        server.set_member_status(group.id, 41, "administrator")
        server.set_member_status(group.id, 42, "member")
        await bot.say(group, 42, "/replymode all")  # refused: not audited
        await bot.say(group, 41, "/replymode all")
        rows = await admin.audit_log(bot.app.commands)
        assert [(r.surface, r.channel, r.action, r.detail) for r in rows] == [
            ("telegram", "telegram:-700", "replymode", "all")]
        assert [r.title for r in await admin.channels(bot.app.commands)] == ["Night Owls"]


async def test_an_answer_for_the_sender_only_goes_to_their_private_chat_never_to_the_group(tmp_path, demo7, server):
    from bot.commands.signin import SignInLinks

    async with running(server, telegram_config(tmp_path, demo7, server)) as bot:
        bot.app.commands.signins = SignInLinks("http://127.0.0.1:9")  # as bot.dashboard sets it when the page is on
        group = server.group_chat(-720, "Night Owls")
        server.set_member_status(group.id, 44, "administrator")
        server.set_member_status(group.id, 45, "administrator")
        server.private_chat(44, "Ada")  # 44 has talked to the bot privately; 45 never has
        await bot.say(group, 44, "/dashboard")
        assert "http://127.0.0.1:9/signin/" in bot.texts(44)[-1]
        await bot.say(group, 45, "/dashboard")
        assert bot.texts(group) == [t("private_undeliverable", "en")]  # the group never sees a link
