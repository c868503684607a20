"""Edits on Telegram rewrite the history: the real python-telegram-bot polling the fake Bot API (which sends
`edited_message` updates), the real engine (greedy) and SQLite. Telegram does not tell bots about deletes."""
from __future__ import annotations

from bot.engine.backend import states_equal
from tests.chat_helpers import head_state
from tests.test_telegram import running, server, telegram_config  # noqa: F401  (the fixture)


async def edit(bot, chat, message: dict, text: str) -> None:
    """A user edits `message`; returns once the adapter is done with the edit."""
    done = bot.adapter.messages_done
    bot.server.edit_user_message(chat, message["message_id"], text)
    await bot.server.wait_for(lambda: bot.adapter.messages_done > done, timeout=60)


async def test_an_edit_of_the_latest_message_regenerates_the_reply_in_the_same_message(tmp_path, demo7, server):
    async with running(server, telegram_config(tmp_path, demo7, server)) as bot:
        chat = server.private_chat(42, "Ann")
        await bot.say(chat, 42, "good morning")
        asked = await bot.say(chat, 42, "where is the harbour?")
        shown = server.messages(42)
        versions = len(shown[-1].history)
        assert await bot.turns_shown(42)
        await edit(bot, chat, asked, "where is the lighthouse?")
        assert [m.message_id for m in server.messages(42)] == [m.message_id for m in shown]  # no new message
        assert len(server.messages(42)[-1].history) > versions  # the reply was written again into it
        assert server.messages(42)[-1].text == (await bot.turns("42"))[-1].out_text.strip()

        fresh = server.private_chat(43, "Ann")
        await bot.say(fresh, 43, "good morning")
        await bot.say(fresh, 43, "where is the lighthouse?")
        assert server.messages(42)[-1].text == server.messages(43)[-1].text
        assert states_equal(await head_state(bot.app, "42", "telegram"), await head_state(bot.app, "43", "telegram"))
        assert [t.in_text for t in await bot.turns("42")] == ["good morning", "where is the lighthouse?"]


async def test_an_edit_of_an_older_message_rewrites_it_quietly_and_exactly(tmp_path, demo7, server):
    lines = ["good morning", "where is the harbour?", "thank you"]
    async with running(server, telegram_config(tmp_path, demo7, server)) as bot:
        chat = server.private_chat(42, "Ann")
        sent = []
        for number, line in enumerate(lines):
            sent.append(await bot.say(chat, 42, line))
            await bot.say(chat, 42, f"/edit Reply {number}.")  # fixed replies: the same in the fresh chat
        before = [(m.message_id, m.text) for m in server.messages(42)]
        await edit(bot, chat, sent[0], "good evening")
        assert [(m.message_id, m.text) for m in server.messages(42)] == before  # the bot says nothing

        fresh = server.private_chat(43, "Ann")
        for number, line in enumerate(["good evening"] + lines[1:]):
            await bot.say(fresh, 43, line)
            await bot.say(fresh, 43, f"/edit Reply {number}.")
        assert [(t.in_text, t.out_text) for t in await bot.turns("42")] == \
            [(t.in_text, t.out_text) for t in await bot.turns("43")]
        assert states_equal(await head_state(bot.app, "42", "telegram"), await head_state(bot.app, "43", "telegram"))


async def test_edits_of_messages_the_bot_never_fed_change_nothing(tmp_path, demo7, server):
    async with running(server, telegram_config(tmp_path, demo7, server)) as bot:
        group = server.group_chat(-100, "Harbour")
        server.user(7, "Ann")
        chatter = await bot.say(group, 7, "nothing for the bot here")  # not addressed: never fed
        await edit(bot, group, chatter, "@rwkvbot now it names you")
        assert server.messages(-100) == [] and await bot.turns("-100") == []

        chat = server.private_chat(42, "Ann")
        old = await bot.say(chat, 42, "good morning")
        await bot.say(chat, 42, "/reset")
        state, count = await head_state(bot.app, "42", "telegram"), len(server.messages(42))
        await edit(bot, chat, old, "good evening")  # fed before the /reset: gone from the history
        assert await bot.turns("42") == [] and len(server.messages(42)) == count
        assert states_equal(await head_state(bot.app, "42", "telegram"), state)
