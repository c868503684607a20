"""Edits and deletes on Discord rewrite the history: the real discord.py client against the fake Discord (user
edits as MESSAGE_UPDATE, deletes as MESSAGE_DELETE, the bot's deletes over HTTP), the real engine (greedy) and
SQLite. Exactness: the channel is compared with a fresh one that had the new history from the start."""
from __future__ import annotations

import asyncio

from bot.conversations.history import UNANSWERED
from bot.engine.backend import states_equal
from bot.i18n import t
from tests.chat_helpers import head_state
from tests.fake_discord import Perm
from tests.test_discord import (ALICE, BOB, GENERAL, GUILD, LOBBY, SIDE, app, chat, eventually, fake,  # noqa: F401
                                greedy, persona_messages, serving, turns, use_mira)

MODERATOR, MODERATORS = 912345678901239001, 912345678901239002


async def state(app, channel: int):
    return await head_state(app, str(channel), "discord")


async def shown(app, channel: int) -> list:
    """The turns once every reply's messages are known to the conversation."""
    async def known():
        log = await turns(app, channel)
        return log if all(x.out_message_ids or x.kind == UNANSWERED for x in log) else None
    return await eventually(known)


def last_said(fake, channel: int, user: int):
    return [m for m in fake.channel_messages(channel) if m.author_id == user and not m.deleted][-1]


async def roleplay(fake, app, channel: int, lines: list[str], *, fixed: list[str] | None = None) -> None:
    await use_mira(fake, channel)
    await greedy(fake, channel)
    for number, line in enumerate(lines):
        await chat(fake, app, channel, ALICE, line)
        if fixed:  # the same reply in both channels, whatever the model would say
            await fake.send_message(channel, ALICE, f"/edit {fixed[number]}")
            await fake.wait_for(lambda: fake.bot_messages(channel)[-1].content == t("edit_done", "en"))
    await shown(app, channel)


async def test_an_edit_of_the_latest_message_regenerates_the_reply_in_the_same_persona_message(app, fake):
    async with serving(app, fake):
        await roleplay(fake, app, GENERAL, ["good morning", "where is the harbour?"])
        before = [(m.id, m.webhook_id) for m in persona_messages(fake, GENERAL)]
        await fake.edit_user_message(last_said(fake, GENERAL, ALICE).id, "where is the lighthouse?")

        async def regenerated():
            log = await turns(app, GENERAL)
            return log if log[-1].in_text == "where is the lighthouse?" and log[-1].out_message_ids else None
        log = await eventually(regenerated)
        await fake.wait_for(lambda: persona_messages(fake, GENERAL)[-1].content == log[-1].out_text.strip())
        assert [(m.id, m.webhook_id) for m in persona_messages(fake, GENERAL)] == before  # the same message
        assert before[-1][1] is not None  # the persona's, through the webhook

        await roleplay(fake, app, SIDE, ["good morning", "where is the lighthouse?"])
        assert [x.out_text for x in await turns(app, SIDE)] == [x.out_text for x in log]
        assert states_equal(await state(app, GENERAL), await state(app, SIDE))


async def test_an_older_edit_and_an_older_delete_rewrite_quietly_and_exactly(app, fake):
    lines = ["good morning", "where is the harbour?", "thank you"]
    async with serving(app, fake):
        await roleplay(fake, app, GENERAL, lines, fixed=["Reply 0.", "Reply 1.", "Reply 2."])
        said = [m for m in fake.channel_messages(GENERAL) if m.author_id == ALICE and m.content in lines]
        posts = len(fake.bot_messages(GENERAL))
        await fake.edit_user_message(said[0].id, "good evening")
        await fake.delete_message(said[1].id)

        async def rewritten():
            log = await turns(app, GENERAL)
            return log if [x.in_text for x in log] == ["good evening", "thank you"] else None
        await eventually(rewritten)
        await asyncio.sleep(0.2)
        assert len(fake.bot_messages(GENERAL)) == posts  # the bot said nothing, deleted nothing

        assert [x.out_text for x in await turns(app, GENERAL)] == ["Reply 0.", "Reply 2."]  # replies kept
        await roleplay(fake, app, SIDE, ["good evening", "thank you"], fixed=["Reply 0.", "Reply 2."])
        assert states_equal(await state(app, GENERAL), await state(app, SIDE))


async def test_deleting_the_latest_message_undoes_the_exchange_and_deletes_the_reply(app, fake):
    async with serving(app, fake):
        await roleplay(fake, app, GENERAL, ["good morning", "where is the harbour?"])
        reply = persona_messages(fake, GENERAL)[-1]
        await fake.delete_message(last_said(fake, GENERAL, ALICE).id)
        await fake.wait_for(lambda: fake.messages[reply.id].deleted)
        assert [x.in_text for x in await turns(app, GENERAL)] == ["good morning"]
        await roleplay(fake, app, SIDE, ["good morning"])
        assert states_equal(await state(app, GENERAL), await state(app, SIDE))


async def test_a_moderator_deleting_the_reply_undoes_it_and_the_line_stays(app, fake):
    fake.add_user(MODERATOR, "mod")
    fake.add_role(GUILD, MODERATORS, "Moderators", Perm.MANAGE_MESSAGES)
    fake.add_member(GUILD, MODERATOR, roles=[MODERATORS])
    async with serving(app, fake):
        await roleplay(fake, app, GENERAL, ["good morning", "where is the harbour?"])
        await fake.delete_message(persona_messages(fake, GENERAL)[-1].id, by=MODERATOR)

        async def undone():
            log = await turns(app, GENERAL)
            return log if log[-1].kind == UNANSWERED else None
        log = await eventually(undone)
        assert (log[-1].in_text, log[-1].out_text) == ("where is the harbour?", "")
        await chat(fake, app, GENERAL, ALICE, "hello?")  # the next message continues after the line
        assert [x.kind for x in await turns(app, GENERAL)] == ["say", UNANSWERED, "say"]


async def test_edits_and_deletes_of_messages_the_bot_never_fed_change_nothing(app, fake):
    async with serving(app, fake):
        await roleplay(fake, app, GENERAL, ["good morning"])
        before, log = await state(app, GENERAL), [(x.in_text, x.out_text) for x in await turns(app, GENERAL)]
        posts = [(m.id, m.content) for m in fake.bot_messages(GENERAL)]
        chatter = await fake.send_message(LOBBY, BOB, "just talking")  # not addressed to the bot
        await fake.edit_user_message(chatter.id, "still just talking")
        await fake.delete_message(chatter.id)
        await fake.send_message(GENERAL, ALICE, "/reset")
        await fake.wait_for(lambda: len(fake.bot_messages(GENERAL)) > len(posts))
        after_reset = await state(app, GENERAL)
        old = [m for m in fake.channel_messages(GENERAL) if m.content == "good morning"][0]
        await fake.edit_user_message(old.id, "good evening")  # fed before the /reset
        await fake.delete_message(old.id)
        await asyncio.sleep(0.3)
        assert await turns(app, LOBBY) == [] and await turns(app, GENERAL) == []
        assert states_equal(await state(app, GENERAL), after_reset)
        assert [x for x in log] and before is not None
        assert not any(m.deleted for m in fake.bot_messages(GENERAL))
