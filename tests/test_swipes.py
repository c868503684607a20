"""Swipes and /stop end to end: the real python-telegram-bot polling the fake Bot API (tests/fake_telegram.py),
the real engine on the RWKV-7 demo model, a real SQLite database. Exactness is proven with greedy decoding and by
comparing stored states with torch.equal."""
from __future__ import annotations

import torch

from bot.app import build_app
from bot.config import load_config
from bot.conversations import ChannelKey
from bot.store import expand_runs, split_by_lengths, tokens_from_bytes
from tests.chat_helpers import pace
from tests.test_telegram import GREEDY, RunningBot, running, server, telegram_config  # noqa: F401 (fixture)

SAMPLED = "/params set temperature 1.5 top_p 1 mirostat_tau 0 presence_penalty 0 max_tokens 12"
LONG = "/params set temperature 5 top_p 1 mirostat_tau 0 presence_penalty 0 max_tokens 2000"


async def press(bot: RunningBot, chat, user: int, message, label: str) -> dict:
    """`user` presses the button labelled `label` (or whose label starts so) under `message`; returns once the
    bot has answered the press and painted what it changed. Returns the answer."""
    buttons = [b for row in bot.server.buttons(message) for b in row]
    [button] = [b for b in buttons if b["text"] == label or (label == "n/m" and "/" in b["text"])]
    done = bot.adapter.messages_done
    query_id = bot.server.press_button(chat, user, message, button["callback_data"])
    await bot.server.wait_for(lambda: bot.adapter.messages_done > done, timeout=60)
    answer = bot.server.answer_to(query_id)
    assert answer is not None, "every press is answered"
    return answer


def label_of(bot: RunningBot, message) -> str:
    return next(text for text in bot.server.button_labels(message) if "/" in text)


async def state_at_head(app, external_id: str):
    ch = await app.store.find_channel("telegram", external_id)
    return (await app.store.nearest_state(ch.id, ch.head)).state


def same_state(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


async def test_swipes_browse_survive_a_restart_and_the_conversation_goes_on_from_the_one_shown(tmp_path, demo7,
                                                                                              server):
    config = telegram_config(tmp_path, demo7, server)
    first = await RunningBot(server, config).start()
    chat = server.private_chat(60, "Ann")
    for text in ("/start", SAMPLED):
        await first.say(chat, 60, text)
    first.app.engine.reseed(5)
    await first.say(chat, 60, "hello there")
    reply = server.messages(60)[-1]
    one = reply.text
    assert server.button_labels(reply) == ["◀", "1/1", "▶"]
    assert (await press(first, chat, 60, reply, "▶"))["text"] == ""
    assert server.messages(60)[-1] is reply, "the new alternative streams into the same message"
    two = reply.text
    assert two != one and label_of(first, reply) == "2/2"
    [turn] = await first.turns("60")
    assert turn.out_text == two
    await press(first, chat, 60, reply, "◀")
    assert reply.text == one and label_of(first, reply) == "1/2"
    await press(first, chat, 60, reply, "◀")  # already the first: nothing changes
    assert reply.text == one and label_of(first, reply) == "1/2"
    await press(first, chat, 60, reply, "n/m")
    assert reply.text == one
    await first.close()

    async with running(server, config) as bot:  # a new app over the same database
        await press(bot, chat, 60, reply, "▶")
        assert reply.text == two and label_of(bot, reply) == "2/2", "alternatives and the choice survive"
        await press(bot, chat, 60, reply, "◀")
        assert reply.text == one and label_of(bot, reply) == "1/2"
        await bot.say(chat, 60, GREEDY)
        await bot.say(chat, 60, "and then what happened?")
        after = bot.texts(60)[-1]
        state = await state_at_head(bot.app, "60")

        twin = server.private_chat(61, "Ann")  # only ever had alternative 1
        for text in ("/start", SAMPLED):
            await bot.say(twin, 61, text)
        bot.app.engine.reseed(5)
        await bot.say(twin, 61, "hello there")
        assert bot.texts(61)[-1] == one
        await bot.say(twin, 61, GREEDY)
        await bot.say(twin, 61, "and then what happened?")
        assert bot.texts(61)[-1] == after
        assert same_state(state, await state_at_head(bot.app, "61"))

        await bot.say(chat, 60, "/export")
        transcript = server.documents(60)[-1].data.decode()
        assert one in transcript and two not in transcript
        swiped = (await bot.turns("60"))[0]
        assert len(await bot.app.store.alternatives(swiped.id)) == 2
        await bot.say(chat, 60, "/undo 2")
        assert await bot.turns("60") == [] and await bot.app.store.alternatives(swiped.id) == []


async def test_regen_adds_an_alternative_and_the_oldest_beyond_max_swipes_are_dropped(tmp_path, demo7, server):
    async with running(server, telegram_config(tmp_path, demo7, server, limits__max_swipes=3)) as bot:
        chat = server.private_chat(62, "Ann")
        for text in ("/start", SAMPLED, "where does this road go?"):
            await bot.say(chat, 62, text)
        reply = server.messages(62)[-1]
        texts = [reply.text]
        await press(bot, chat, 62, reply, "▶")
        texts.append(reply.text)
        await bot.say(chat, 62, "/regen")  # the same as ▶ past the end, in a new message
        texts.append(bot.texts(62)[-1])
        assert label_of(bot, server.messages(62)[-1]) == "3/3"
        await press(bot, chat, 62, server.messages(62)[-1], "▶")
        latest = server.messages(62)[-1]
        texts.append(latest.text)
        assert label_of(bot, latest) == "3/3", "at most limits.max_swipes"
        [turn] = await bot.turns("62")
        assert [a.out_text for a in await bot.app.store.alternatives(turn.id)] == texts[1:]
        for expected in reversed(texts[1:3]):
            await press(bot, chat, 62, latest, "◀")
            assert latest.text == expected


async def test_old_replies_and_strangers_in_a_group_are_refused(tmp_path, demo7, server):
    async with running(server, telegram_config(tmp_path, demo7, server)) as bot:
        group = server.group_chat(-700, "Club")
        for user, status in ((1, "member"), (2, "member"), (3, "administrator")):
            server.user(user, f"U{user}")
            server.set_member_status(group.id, user, status)
        await bot.say(group, 1, "/params set temperature 1.5 top_p 1 max_tokens 12")
        await bot.say(group, 1, "@rwkvbot, hello")
        old = server.messages(group)[-1]
        await bot.say(group, 1, "@rwkvbot, and again")
        latest = server.messages(group)[-1]
        answer = await press(bot, group, 1, old, "▶")
        assert answer["text"] == "This reply can no longer be changed: only the latest reply can."
        assert label_of(bot, old) == "1/1" and len(old.history) <= 3
        shown = latest.text
        answer = await press(bot, group, 2, latest, "▶")
        assert answer["text"] == "These buttons are for the person this reply answers, and for admins."
        assert latest.text == shown and label_of(bot, latest) == "1/1"
        assert (await press(bot, group, 3, latest, "▶"))["text"] == ""  # an admin may
        assert label_of(bot, latest) == "2/2"
        assert (await press(bot, group, 1, latest, "◀"))["text"] == ""  # and whom it answers
        assert latest.text == shown


async def test_stop_keeps_the_text_so_far_with_exactly_its_state(tmp_path, demo7, server):
    async with running(server, telegram_config(tmp_path, demo7, server)) as bot:
        chat = server.private_chat(63, "Ann")
        for text in ("/start", LONG):
            await bot.say(chat, 63, text)
        bot.app.engine.reseed(3)
        pace(bot.app.engine, 0.02)
        server.send_text(chat, 63, "tell me a very long story")
        draft = await server.wait_for(lambda: next((m for m in server.messages(63)[1:]
                                                     if len(m.text) > 20 and "⏹" in server.button_labels(m)), None),
                                      timeout=30)
        done = bot.adapter.messages_done
        query = server.press_button(chat, 63, draft, server.button_data(draft)[0])
        await server.wait_for(lambda: bot.adapter.messages_done >= done + 2 and "⏹" not in server.button_labels(draft),
                              timeout=30)
        bot.app.engine.step_hook = None
        assert server.answer_to(query)["text"] == ""
        [turn] = await bot.turns("63")
        assert draft.text == turn.out_text and len(turn.out_text) > 20, "the text so far stays as the reply"
        assert server.button_labels(draft) == ["◀", "1/1", "▶"]
        fed = tokens_from_bytes(turn.fed)
        tokenizer = bot.app.engine.tokenizer
        assert tokenizer.decode(fed[turn.prompt_len:]).strip() == turn.out_text
        assert tokenizer.decode(fed[turn.prompt_len:]).endswith("\n\n"), "the state reads the turn's end"
        # The state is exactly that of the start plus those tokens, fed in the calls they were fed in.
        ch = await bot.app.store.find_channel("telegram", "63")
        start = await bot.app.store.nearest_state(ch.id, 0)
        replayed = await bot.app.engine.feed(start.state, split_by_lengths(fed, expand_runs(turn.feed_lengths)))
        assert same_state(replayed.state, await state_at_head(bot.app, "63"))
        await bot.say(chat, 63, GREEDY)
        await bot.say(chat, 63, "/stop")
        assert bot.texts(63)[-1] == "Nothing is being written here."


async def test_the_queue_place_shows_and_stop_before_a_word_drops_the_turn(tmp_path, demo7, server):
    config = telegram_config(tmp_path, demo7, server, model__max_batch=1)
    async with running(server, config) as bot:
        chats = [server.private_chat(64 + i, "Ann") for i in range(3)]
        for chat in chats:
            for text in ("/start", LONG):
                await bot.say(chat, chat.id, text)
        pace(bot.app.engine, 0.02)
        for chat, shown in zip(chats, (None, "(queued, 0 ahead)", "(queued, 1 ahead)")):  # one after the other
            server.send_text(chat, chat.id, "tell me a very long story")
            await server.wait_for(lambda: len(server.messages(chat)) > 2 and (
                shown is None or server.messages(chat)[2].text == shown), timeout=30)
        waiting = server.messages(66)[2]
        assert "⏹" in server.button_labels(waiting)
        await bot.say(chats[0], 64, "/stop")  # the first one ends; the second takes the slot
        await server.wait_for(lambda: waiting.text == "(queued, 0 ahead)", timeout=30)
        server.press_button(chats[2], 66, waiting, server.button_data(waiting)[0])
        await server.wait_for(lambda: waiting.text == "(stopped before it wrote anything)", timeout=30)
        assert await bot.turns("66") == [], "stopped before a word: the turn is dropped"
        await server.wait_for(lambda: len(server.messages(65)) > 2  # greeting, "Set ...", the reply: it writes
                              and not server.messages(65)[2].text.startswith("(queued"), timeout=30)
        await bot.say(chats[1], 65, "/stop")
        await server.wait_for(lambda: "◀" in server.button_labels(server.messages(65)[2]), timeout=30)
        bot.app.engine.step_hook = None
        assert len(await bot.turns("64")) == 1 and len(await bot.turns("65")) == 1
        assert server.button_labels(waiting) == []


async def test_alternatives_in_the_database_on_sqlite(tmp_path, demo7):
    await check_alternatives(tmp_path, demo7, None)


async def test_alternatives_in_the_database_on_postgres(tmp_path, demo7, postgres_url):
    await check_alternatives(tmp_path, demo7, postgres_url)


async def check_alternatives(tmp_path, demo7, db):
    """Alternatives through the conversation layer: kept, the oldest beyond max_swipes dropped, the choice on the
    turn row, all kept over a restart and removed with the turn."""
    from bot.conversations import BACK, FORWARD, Swiped
    from tests.chat_helpers import finish, send
    from tests.conftest import write_config

    config = write_config(tmp_path, demo7, **({"db": db} if db else {}),
                          settings={"sampling.temperature": 1.5, "sampling.top_p": 1, "sampling.max_tokens": 8,
                                    "limits.max_swipes": 2})
    key = ChannelKey("test", "c1")
    app = await build_app(load_config(config, env={}))
    try:
        await send(app, "/char use Mira")
        await send(app, "hello")
        turn_id, _ = await app.conversations.last_turn(key)
        texts = [(await app.conversations.transcript(key))[1][0].out_text]
        for _ in range(2):
            final = await finish(commands_stream(await app.conversations.swipe(key, turn_id, FORWARD)))
            texts.append(final.text)
        back = await app.conversations.swipe(key, turn_id, BACK)
        assert isinstance(back, Swiped) and back.text == texts[1] and back.label == (1, 2)  # the first was dropped
        assert [a.out_text for a in await app.store.alternatives(turn_id)] == texts[1:]
    finally:
        await app.close()
    app = await build_app(load_config(config, env={}))
    try:
        assert (await app.conversations.transcript(key))[1][0].out_text == texts[1]
        assert await app.store.swipe_label(turn_id) == (1, 2)
        await send(app, "/undo")
        assert await app.store.alternatives(turn_id) == []
        assert await app.store.check() == []
    finally:
        await app.close()


def commands_stream(turn):
    from bot.commands.dispatch import reply_stream

    return reply_stream(turn, "")
