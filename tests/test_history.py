"""Edits and deletes on the platform rewrite the history exactly (bot.conversations.history), through the command
layer the adapters call, the real engine (greedy) and real SQLite.

Exactness: the channel after an edit or delete is compared with a fresh channel that had the new history from
the start. Replies written with /edit (the same text fed the same way in both channels) make the later replies
of both channels the same whatever the model would say, so the states must be equal bit for bit."""
from __future__ import annotations

import asyncio
import dataclasses

from bot.cards.turns import turn
from bot.commands import MessageGone, ReplyShown, ReplyStream, Retract
from bot.conversations import ChannelKey
from bot.conversations.history import UNANSWERED
from bot.engine.backend import states_equal
from bot.store import tokens_from_bytes
from tests.chat_helpers import GREEDY, finish, head_state, incoming, send
from tests.test_persistence import open_app
from tests.conftest import write_config


async def start(app, channel: str) -> None:
    await send(app, "/char use Mira", channel=channel)
    await send(app, GREEDY, channel=channel)


async def say(app, channel: str, text: str, message_id: str, fixed_reply: str | None = None) -> str:
    """A user's message with its platform id; the reply's text (set with /edit when `fixed_reply`)."""
    answer = await app.commands.handle(dataclasses.replace(incoming(text, channel=channel), message_id=message_id))
    streams = [o for o in answer.outputs if isinstance(o, ReplyStream)]
    assert streams, answer.outputs
    final = await finish(streams[0])
    if fixed_reply is not None:
        await send(app, f"/edit {fixed_reply}", channel=channel)
        return fixed_reply
    return final.text


async def edit(app, channel: str, message_id: str, text: str):
    return await app.commands.edited(dataclasses.replace(incoming(text, channel=channel), message_id=message_id))


async def delete(app, channel: str, message_id: str):
    return await app.commands.deleted(MessageGone("test", channel, message_id))


async def transcript(app, channel: str) -> list[tuple]:
    _, turns = await app.conversations.transcript(ChannelKey("test", channel))
    return [(t.kind, t.in_text, t.out_text) for t in turns]


async def replayed_from_start(app, channel: str):
    """The head state replayed from the initial state over every stored turn (what a restart could rebuild)."""
    conv = app.conversations
    ch = await conv.channel(ChannelKey("test", channel))
    start_state = await conv.store.nearest_state(ch.id, 0)
    from bot.conversations.conversations import HotState

    hot = await conv._replay(ch, HotState(0, start_state.fingerprint, start_state.tokens, start_state.state), ch.head)
    return hot.state


LINES = [("m1", "good morning", "Morning to you."), ("m2", "where is the harbour?", "Down the hill."),
         ("m3", "thank you", "Any time.")]


async def fixed_channel(app, channel: str, lines) -> None:
    await start(app, channel)
    for message_id, text, fixed in lines:
        await say(app, channel, text, message_id, fixed)


async def test_edit_of_the_latest_message_regenerates_the_reply_into_the_same_messages(app):
    await start(app, "a")
    await say(app, "a", "good morning", "m1")
    await say(app, "a", "where is the harbour?", "m2")
    await app.commands.shown(ReplyShown("test", "a", 2, ["b2"]))
    answer = await edit(app, "a", "m2", "where is the lighthouse?")
    [stream] = answer.outputs
    assert isinstance(stream, ReplyStream) and stream.into == ["b2"]
    regenerated = (await finish(stream)).text

    await start(app, "fresh")
    await say(app, "fresh", "good morning", "x1")
    assert regenerated == await say(app, "fresh", "where is the lighthouse?", "x2")
    assert states_equal(await head_state(app, "a"), await head_state(app, "fresh"))
    assert [t[1] for t in await transcript(app, "a")] == ["good morning", "where is the lighthouse?"]
    # the regenerated turn still answers to its message: a second edit regenerates again
    again = await edit(app, "a", "m2", "where is the harbour?")
    assert isinstance(again.outputs[0], ReplyStream)
    await finish(again.outputs[0])


async def test_edit_of_an_older_message_replays_the_later_turns_keeping_their_replies(app):
    await fixed_channel(app, "a", LINES)
    answer = await edit(app, "a", "m1", "good evening")
    assert answer.outputs == []  # the bot says nothing
    await fixed_channel(app, "fresh", [("x1", "good evening", "Morning to you.")] + LINES[1:])
    assert await transcript(app, "a") == await transcript(app, "fresh")
    assert states_equal(await head_state(app, "a"), await head_state(app, "fresh"))
    assert states_equal(await replayed_from_start(app, "a"), await head_state(app, "fresh"))


async def test_edit_of_an_older_message_keeps_generated_replies_and_their_tokens(app):
    await start(app, "g")
    replies = [await say(app, "g", text, message_id) for message_id, text, _ in LINES]
    conv = app.conversations
    ch = await conv.channel(ChannelKey("test", "g"))
    before = await conv.store.turns(ch.id)
    await edit(app, "g", "m2", "where is the market?")
    after = await conv.store.turns(ch.id)
    assert [t.out_text for t in after] == [t.out_text for t in before] and after[1].in_text == "where is the market?"
    for old, new in zip(before, after):  # the replies feed the same tokens as before
        assert tokens_from_bytes(new.fed)[new.prompt_len:] == tokens_from_bytes(old.fed)[old.prompt_len:]
    assert tokens_from_bytes(after[0].fed) == tokens_from_bytes(before[0].fed)
    assert states_equal(await replayed_from_start(app, "g"), await head_state(app, "g"))
    assert replies[-1]  # (the model said something)


async def test_delete_of_an_older_message_takes_it_out_of_the_history(app):
    await fixed_channel(app, "d", LINES)
    answer = await delete(app, "d", "m2")
    assert answer.outputs == []
    await fixed_channel(app, "fresh", [LINES[0], LINES[2]])
    assert await transcript(app, "d") == await transcript(app, "fresh")
    assert states_equal(await head_state(app, "d"), await head_state(app, "fresh"))


async def test_delete_of_the_latest_message_undoes_the_exchange_and_retracts_its_reply(app):
    await fixed_channel(app, "d", LINES[:2])
    await app.commands.shown(ReplyShown("test", "d", 2, ["b2a", "b2b"]))
    answer = await delete(app, "d", "m2")
    assert [o.message_ids for o in answer.outputs if isinstance(o, Retract)] == [["b2a", "b2b"]]
    await fixed_channel(app, "fresh", LINES[:1])
    assert states_equal(await head_state(app, "d"), await head_state(app, "fresh"))


async def test_a_deleted_reply_is_undone_and_its_line_stays_fed_alone(app):
    await fixed_channel(app, "r", LINES[:2])
    await app.commands.shown(ReplyShown("test", "r", 2, ["b2a", "b2b"]))
    answer = await delete(app, "r", "b2a")  # a moderator deletes the first piece of the reply
    assert [o.message_ids for o in answer.outputs if isinstance(o, Retract)] == [["b2b"]]
    assert (await transcript(app, "r"))[-1] == (UNANSWERED, "where is the harbour?", "")
    # the state: the first exchange, then the line alone (`Alice: text` and the turn end), no reply cue
    await fixed_channel(app, "fresh", LINES[:1])
    conv = app.conversations
    line = conv.tokenizer.encode(turn("Alice", "where is the harbour?"))
    expected = await conv.engine.feed(await head_state(app, "fresh"), [line])
    assert states_equal(await head_state(app, "r"), expected.state)
    # the next message continues after it
    await say(app, "r", "thank you", "m3")
    assert [t[0] for t in await transcript(app, "r")] == ["edit", UNANSWERED, "say"]


async def test_a_deleted_older_reply_replays_the_later_turns(app):
    await fixed_channel(app, "r", LINES)
    await app.commands.shown(ReplyShown("test", "r", 1, ["b1"]))
    await delete(app, "r", "b1")
    assert [t[0] for t in await transcript(app, "r")] == [UNANSWERED, "edit", "edit"]
    assert states_equal(await replayed_from_start(app, "r"), await head_state(app, "r"))


async def test_messages_the_bot_never_fed_change_nothing(app):
    await fixed_channel(app, "n", LINES[:2])
    before, history = await head_state(app, "n"), await transcript(app, "n")
    assert (await edit(app, "n", "other", "hello")).outputs == []
    assert (await delete(app, "n", "other")).outputs == []
    assert (await edit(app, "n", "m1", "/reset")).outputs == []  # an edit into a command is not a line
    assert (await edit(app, "n", "m1", "good morning")).outputs == []  # the same text
    assert await transcript(app, "n") == history and states_equal(await head_state(app, "n"), before)
    await send(app, "/reset", channel="n")
    after_reset = await head_state(app, "n")
    assert (await edit(app, "n", "m2", "changed")).outputs == []
    assert (await delete(app, "n", "m1")).outputs == []
    assert await transcript(app, "n") == [] and states_equal(await head_state(app, "n"), after_reset)


async def test_a_rewrite_cut_off_before_its_commit_leaves_the_old_history_whole(tmp_path, demo7):
    config = write_config(tmp_path, demo7)
    first = await open_app(config)
    await fixed_channel(first, "c", LINES)
    history = await transcript(first, "c")
    state = await head_state(first, "c")

    def crash(*args, **kwargs):
        raise RuntimeError("killed in the middle of the transaction")

    first.conversations.store._prune = crash  # fails inside rewrite_turns' transaction, after its writes
    answer = await edit(first, "c", "m1", "good evening")
    assert "could not be stored" in answer.outputs[0].text
    assert await transcript(first, "c") == history
    await first.close()

    second = await open_app(config)  # a restart: the database has the old history, whole and exact
    try:
        assert await transcript(second, "c") == history
        assert states_equal(await head_state(second, "c"), state)
        await edit(second, "c", "m1", "good evening")
        await fixed_channel(second, "fresh", [("x1", "good evening", "Morning to you.")] + LINES[1:])
        assert states_equal(await head_state(second, "c"), await head_state(second, "fresh"))
    finally:
        await second.close()


def test_the_boundary_types_of_edits_and_deletes_round_trip_through_json():
    import json

    from bot.commands import DONE, Answer, Final, event_from_dict, output_from_dict

    def through_json(data):
        return json.loads(json.dumps(data))

    gone, report = MessageGone("discord", "5", "7"), ReplyShown("telegram", "1:2", 3, ["9", "10"])
    assert MessageGone.from_dict(through_json(gone.to_dict())) == gone
    assert ReplyShown.from_dict(through_json(report.to_dict())) == report
    assert output_from_dict(through_json(Retract(["11", "12"]).to_dict())) == Retract(["11", "12"])
    final = Final("Hello.", DONE, position=4)
    assert event_from_dict(through_json(final.to_dict())) == final

    async def no_events():
        return
        yield

    answer = Answer([ReplyStream("Mira", None, no_events(), into=["20", "21"])], "en")
    rebuilt = Answer.from_dict(through_json(answer.to_dict()), streams=[no_events()])
    assert rebuilt.outputs[0].into == ["20", "21"]


async def test_edits_and_deletes_on_postgres_and_the_migration_both_ways(tmp_path, demo7, postgres_url):
    from bot.store.migrate import downgrade_database, upgrade_database

    config = write_config(tmp_path, demo7, db=postgres_url)
    app = await open_app(config)
    try:
        await fixed_channel(app, "p", LINES)
        await app.commands.shown(ReplyShown("test", "p", 3, ["b3"]))
        await edit(app, "p", "m1", "good evening")
        await delete(app, "p", "m2")
        assert [o.message_ids for o in (await delete(app, "p", "m3")).outputs] == [["b3"]]
        await fixed_channel(app, "fresh", [("x1", "good evening", "Morning to you.")])
        assert states_equal(await head_state(app, "p"), await head_state(app, "fresh"))
    finally:
        await app.close()
    await asyncio.to_thread(downgrade_database, postgres_url, "0003")  # the columns go; the turns stay
    assert await turn_columns(postgres_url) == (False, 1)
    await asyncio.to_thread(upgrade_database, postgres_url, "head")
    assert await turn_columns(postgres_url) == (True, 1)


async def turn_columns(url: str) -> tuple[bool, int]:
    """(whether the turns table has the message columns, how many turns channel "p" has)."""
    from sqlalchemy import inspect, text

    from bot.store import Store

    store = Store(url)
    await store.open(migrate=False)
    try:
        async with store.engine.connect() as conn:
            names = await conn.run_sync(lambda sync: {c["name"] for c in inspect(sync).get_columns("turns")})
            count = (await conn.execute(text("SELECT count(*) FROM turns JOIN channels ON channels.id = "
                                             "turns.channel_id WHERE channels.external_id = 'p'"))).scalar_one()
        return {"in_message_id", "out_message_ids"} <= names, count
    finally:
        await store.close()


# ----- swipes (bot.conversations.swipes) across rewrites ---------------------------------------------------------
async def swipe_back(app, channel: str):
    """Swipe the channel's latest reply back one alternative, by the id its buttons name; its label."""
    from bot.conversations.swipes import BACK

    conv = app.conversations
    ch = await conv.channel(ChannelKey("test", channel))
    last = await conv.store.last_turn(ch.id)
    return (await conv.swipe(ChannelKey("test", channel), last.id, BACK)).label


async def test_an_older_delete_keeps_the_latest_replys_swipes_exactly(app):
    await start(app, "s")
    await say(app, "s", "good morning", "m1", "Morning to you.")
    await say(app, "s", "where is the harbour?", "m2", "Down the hill.")
    await send(app, "/regen", channel="s")  # a second alternative; the first is the /edit's, fed the same way below
    conv = app.conversations
    ch = await conv.channel(ChannelKey("test", "s"))
    swiped_turn = (await conv.store.last_turn(ch.id)).id
    await delete(app, "s", "m1")  # the swiped turn moves down one place
    assert (await conv.store.last_turn(ch.id)).id == swiped_turn  # its buttons still name it
    assert await swipe_back(app, "s") == (1, 2)

    await start(app, "fresh")
    await say(app, "fresh", "where is the harbour?", "x2", "Down the hill.")
    assert await transcript(app, "s") == await transcript(app, "fresh")
    assert states_equal(await head_state(app, "s"), await head_state(app, "fresh"))


async def test_an_edited_lines_swipes_take_its_new_line_exactly(app):
    """The edited turn's alternatives are kept with its new cue: once it is the latest again (/undo), swiping to
    one gives the state of a channel that had the new line from the start."""
    await start(app, "s")
    await say(app, "s", "good morning", "m1", "Morning to you.")
    await send(app, "/regen", channel="s")
    await say(app, "s", "where is the harbour?", "m2", "Down the hill.")
    await edit(app, "s", "m1", "good evening")
    conv = app.conversations
    ch = await conv.channel(ChannelKey("test", "s"))
    [edited] = [t for t in await conv.store.turns(ch.id) if t.in_message_id == "m1"]
    for alternative in await conv.store.alternatives(edited.id):
        assert tokens_from_bytes(alternative.fed)[:alternative.prompt_len] == \
            tokens_from_bytes(edited.fed)[:edited.prompt_len]  # the new line's cue
    await send(app, "/undo", channel="s")
    assert await swipe_back(app, "s") == (1, 2)

    await start(app, "fresh")
    await say(app, "fresh", "good evening", "x1", "Morning to you.")
    assert await transcript(app, "s") == await transcript(app, "fresh")
    assert states_equal(await head_state(app, "s"), await head_state(app, "fresh"))


async def test_a_deleted_reply_takes_its_swipes_with_it(app):
    await start(app, "s")
    await say(app, "s", "good morning", "m1")
    await send(app, "/regen", channel="s")
    await app.commands.shown(ReplyShown("test", "s", 1, ["b1"]))
    await say(app, "s", "where is the harbour?", "m2", "Down the hill.")
    await delete(app, "s", "b1")  # a moderator deletes the first reply: its line stays, unanswered
    conv = app.conversations
    ch = await conv.channel(ChannelKey("test", "s"))
    first = (await conv.store.turns(ch.id))[0]
    assert first.kind == UNANSWERED and await conv.store.alternatives(first.id) == []
    await send(app, "/undo", channel="s")
    await send(app, "/regen", channel="s")  # a reply to the unanswered line is a plain turn again, not a swipe
    first = (await conv.store.turns(ch.id))[0]
    assert first.kind == "say" and first.out_text and await conv.store.alternatives(first.id) == []
