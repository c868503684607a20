"""The line between the platforms and the bot (bot/commands/messages.py, intake.py, dispatch.py): plain data that
survives JSON, one call that decides everything, arrival order and flood control before any platform lookup."""
from __future__ import annotations

import asyncio
import json

import pytest

from bot.app import build_app
from bot.commands import (CANCELLED, DONE, DOWNLOAD_FAILED, EMPTY, ENGINE_ERROR, TOO_BIG, Answer, Attachment,
                          AttachmentProblem, CharacterLine, Final, Goodbye, Incoming, Partial, Reply, ReplyStream,
                          event_from_dict, needs_admin, output_from_dict, wants_attachment)
from bot.commands import messages
from bot.config import ConfigError, load_config
from bot.conversations import ChannelKey
from bot.store import tokens_from_bytes
from tests.chat_helpers import finish, incoming, outputs, send
from tests.conftest import write_config


@pytest.fixture
async def app(tmp_path, demo7):
    application = await build_app(load_config(write_config(tmp_path, demo7, settings={
        "sampling.temperature": 0, "sampling.max_tokens": 6}), env={}))
    yield application
    await application.close()


def through_json(data: dict) -> dict:
    return json.loads(json.dumps(data))


async def events_of(items):
    for item in items:
        yield item


# --------------------------------------------------------------------------- plain, serialisable data


def test_every_boundary_type_round_trips_through_json():
    full = Incoming(platform="telegram", channel_id="-100:7", user_id="42", user_name="Ann Lee", text="/char import",
                    message_id="9001", is_group=True, addressed=True, is_admin=True, language_code="zh-hans",
                    attachment=Attachment("mira.png", bytes(range(256)) * 3), reply_to="9000",
                    chat_title="Night Owls", surface="dashboard")
    problem = Incoming(platform="discord", channel_id="1", user_id="2", user_name="Bo", text="/char import",
                       attachment_problem=AttachmentProblem(TOO_BIG, size=30 << 20, limit=20 << 20))
    plain = Incoming(platform="terminal", channel_id="terminal", user_id="terminal", user_name="User", text="hi")
    for original in (full, problem, plain):
        assert Incoming.from_dict(through_json(original.to_dict())) == original
    assert through_json(full.to_dict())["attachment"]["data"] != ""  # bytes travel as base64 text

    outputs_ = [Reply("Saved.", ephemeral=True, file=("transcript.txt", "Mira: 你好\n".encode())),
                Reply("Your sign-in link", ephemeral=True, private=True),
                Reply("plain"), CharacterLine("Mira", "Hello.", avatar=b"\x89PNG\r\n\x1a\n..."),
                CharacterLine("林小满", "你好。"), Goodbye("Bye.")]
    for original in outputs_:
        assert output_from_dict(through_json(original.to_dict())) == original
    events = [Partial("Hel"), Partial("Hello"), Final("Hello there", DONE), Final("", EMPTY),
              Final("Half a", CANCELLED), Final("", ENGINE_ERROR)]
    for original in events:
        assert event_from_dict(through_json(original.to_dict())) == original
    with pytest.raises(ValueError):
        event_from_dict({"type": "final", "text": "", "outcome": "exploded"})

    stream = ReplyStream("Mira", b"avatar-bytes", events_of(events[:3]))
    answer = Answer([outputs_[0], stream, outputs_[2]], "zh", answered=True)
    wire = through_json(answer.to_dict())
    rebuilt = Answer.from_dict(wire, streams=[events_of([event_from_dict(through_json(e.to_dict()))
                                                         for e in events[:3]])])
    assert rebuilt.lang == "zh" and rebuilt.outputs[0] == outputs_[0] and rebuilt.outputs[2] == outputs_[2]
    assert (rebuilt.outputs[1].speaker, rebuilt.outputs[1].avatar) == ("Mira", b"avatar-bytes")

    async def read():
        return [event async for event in rebuilt.outputs[1]]

    assert asyncio.run(read()) == events[:3]


async def test_a_live_answer_crosses_json_and_reads_the_same(app):
    """What a broker would carry: the Incoming, then the Answer's header and each stream event as JSON."""
    wire_in = through_json(incoming("good evening", channel="wire").to_dict())
    answer = await app.commands.handle(Incoming.from_dict(wire_in))
    [stream] = [o for o in answer.outputs if isinstance(o, ReplyStream)]
    sent = [through_json(event.to_dict()) async for event in stream]
    received = Answer.from_dict(through_json(answer.to_dict()), streams=[events_of(map(event_from_dict, sent))])
    final = await finish(received.outputs[-1])
    _, turns = await app.conversations.transcript(ChannelKey("test", "wire"))
    assert final.outcome in (DONE, EMPTY) and final.text == turns[-1].out_text
    assert sent[-1]["type"] == "final" and all(e["type"] == "partial" for e in sent[:-1])


# --------------------------------------------------------------------------- what the adapter must find out


def test_admin_status_and_attachments_are_asked_for_only_when_they_matter():
    def msg(text, admin=None, bot_admin=False):
        return Incoming(platform="telegram", channel_id="1", user_id="2", user_name="Bo", text=text, is_admin=admin,
                        is_bot_admin=bot_admin)

    assert not needs_admin(msg("hello there"))  # plain chat never costs an admin lookup
    assert not needs_admin(msg("/frobnicate"))  # not one of ours
    assert needs_admin(msg("/params")) and needs_admin(msg("/char import")) and needs_admin(msg("/undo 2"))
    # The shared library takes files from the bot's admins only: a chat admin's or a stranger's is never downloaded
    assert not wants_attachment(msg("/char import", admin=False))
    assert not wants_attachment(msg("/char import", admin=True))
    assert wants_attachment(msg("/char import", bot_admin=True)) and wants_attachment(msg('/char "Import"', bot_admin=True))
    assert not wants_attachment(msg("/char use Mira", bot_admin=True)) and not wants_attachment(msg("import", bot_admin=True))
    # ... unless the owner lets everyone keep cards of their own
    assert wants_attachment(msg("/char import", admin=False), user_imports=True)


async def test_a_flood_is_refused_before_any_platform_lookup(tmp_path, demo7):
    app = await build_app(load_config(write_config(tmp_path, demo7, settings={
        "limits.user_messages_per_minute": 6}), env={}))
    try:
        arrivals = [app.commands.arrive(incoming("/char import", user="spammer", group=True, admin=None))
                    for _ in range(5)]
        for arrival in arrivals:
            arrival.placed()
        let_in = [a for a in arrivals if a.admitted]
        refused = [a for a in arrivals if a.admitted is False]
        assert len(let_in) == 3 and len(refused) == 2  # the burst, then the flood
        assert all(a.needs_admin for a in let_in) and not any(a.needs_admin for a in refused)
        for a in refused:
            a.incoming.is_admin = a.incoming.is_bot_admin = True
            assert not a.wants_attachment  # not even an admin's file, once they flood
        assert [a.notice for a in refused] == [True, False]  # told once per cooldown
        # an unaddressed message counts only once the channel's mode says the bot answers it
        quiet = app.commands.arrive(incoming("chatter", user="spammer", group=True, addressed=False))
        assert quiet.admitted is None
        answer = await app.commands.handle(quiet.incoming, quiet)
        assert not answer.answered and answer.outputs == [] and quiet.admitted is None
    finally:
        await app.close()


# --------------------------------------------------------------------------- one call decides


async def test_handle_decides_whether_to_answer_and_in_which_language(app):
    answer = await app.commands.handle(incoming("among ourselves", channel="g", group=True, addressed=False))
    assert not answer.answered and answer.outputs == []
    assert (await app.commands.handle(incoming("/replymode all", channel="g", group=True))).answered
    answer = await app.commands.handle(incoming("now heard", channel="g", group=True, addressed=False))
    assert answer.answered and isinstance(answer.outputs[-1], ReplyStream)
    await finish(answer.outputs[-1])
    # the language: the chat's /lang, else the user's platform language, else ui.lang
    assert (await app.commands.handle(incoming("/params", channel="l", lang="zh-hans"))).lang == "zh"
    assert (await app.commands.handle(incoming("/params", channel="l", lang=None))).lang == "en"
    await send(app, "/lang zh", channel="l")
    assert (await app.commands.handle(incoming("/params", channel="l", lang="en-US"))).lang == "zh"


async def test_text_is_parsed_once_and_the_channel_read_once_at_the_boundary(app, monkeypatch):
    await send(app, "/replymode all", channel="once", group=True)
    parses, reads = [], []
    real_parse = messages.parse_command
    monkeypatch.setattr(messages, "parse_command", lambda text: parses.append(text) or real_parse(text))

    def counted(real):
        async def read(*args, **kwargs):
            reads.append(args[:2])
            return await real(*args, **kwargs)
        return read

    for reader in ("get_or_create_channel", "find_channel"):  # finding (never creating) and the turn's own
        monkeypatch.setattr(app.store, reader, counted(getattr(app.store, reader)))
    answer = await app.commands.handle(incoming("a line for everyone", channel="once", group=True, addressed=False))
    await finish(answer.outputs[-1])
    assert parses == ["a line for everyone"]
    # one read for the boundary's decisions (answer? language? mode?) and the turn's own, under the channel's lock
    assert reads == [("test", "once"), ("test", "once")]


async def test_messages_reach_the_conversation_in_arrival_order_whatever_their_lookups_cost(app):
    """A command whose admin lookup is slow, then chat lines: the chat waits its turn, so the new params apply."""
    command = app.commands.arrive(incoming("/params set max_tokens 2", channel="ord", group=True, admin=None))
    lines = [app.commands.arrive(incoming(f"line {i}", channel="ord", group=True)) for i in range(2)]
    chatting = [asyncio.create_task(app.commands.handle(a.incoming, a)) for a in lines]
    await asyncio.sleep(0.3)  # the platform is slow to say who is an admin
    command.incoming.is_admin = True
    assert (await app.commands.handle(command.incoming, command)).outputs[0].text == "Set max_tokens = 2."
    for answer in await asyncio.gather(*chatting):
        await finish(answer.outputs[-1])
    _, turns = await app.conversations.transcript(ChannelKey("test", "ord"))
    assert [t.in_text for t in turns] == ["line 0", "line 1"]
    generated = [len(tokens_from_bytes(t.fed)) - t.prompt_len for t in turns]
    assert all(n <= 3 for n in generated), generated  # 2 tokens and the turn's end: the new params applied


async def test_a_card_that_did_not_arrive_gets_one_clear_answer(app):
    for problem, expected in (
            (AttachmentProblem(TOO_BIG, size=25 << 20, limit=20 << 20), "the file is 25.0 MiB; the limit is 20.0 MiB"),
            (AttachmentProblem(DOWNLOAD_FAILED), "the file could not be downloaded from Test; send it again")):
        message = incoming("/char import", channel="imp")
        message.attachment_problem = problem
        [reply] = (await app.commands.handle(message)).outputs
        assert reply.text == f"Cannot import that card: {expected}" and reply.ephemeral


# --------------------------------------------------------------------------- where commands are offered


async def test_replymode_and_quit_are_offered_only_where_they_apply(app):
    private = (await send(app, "/help", channel="p"))[0]
    group = (await send(app, "/help", channel="g2", group=True))[0]
    terminal = (await send(app, "/help", channel="terminal", platform="terminal"))[0]
    assert "/replymode - " in group and "/replymode - " not in private and "/replymode - " not in terminal
    assert "/quit - " in terminal and "Ctrl-D" in terminal and "/char import PATH" in terminal
    assert "/quit" not in private and "/quit" not in group
    assert await send(app, "/replymode all", channel="p") == ["Unknown command /replymode, see /help."]
    assert await send(app, "/quit", channel="g2", group=True) == ["Unknown command /quit, see /help."]
    [bye] = await outputs(app, "/exit", channel="terminal", platform="terminal")
    assert bye == Goodbye("Bye.")


async def test_who_makes_a_discord_channel_a_roleplay_channel(app):
    def discord(text, channel, admin, addressed=True):
        return incoming(text, channel=channel, group=True, admin=admin, platform="discord", addressed=addressed)

    async def answered(channel):
        answer = await app.commands.handle(discord("hello all", channel, admin=None, addressed=False))
        for out in answer.outputs:
            if isinstance(out, ReplyStream):
                await finish(out)
        return answer.answered

    await app.commands.handle(discord("/char use Mira", "by-member", admin=False))
    assert not await answered("by-member")  # a member picks the character, not the channel's mode
    await app.commands.handle(discord("/char use Mira", "by-admin", admin=True))
    assert await answered("by-admin")  # an admin's /char use makes a role-play channel
    await app.commands.handle(discord("/replymode mention", "by-admin", admin=True))
    assert not await answered("by-admin")  # and /replymode is the way back,
    await app.commands.handle(discord("/char use Mira", "by-admin", admin=True))
    assert not await answered("by-admin")  # which a later /char use does not overturn
    await app.commands.handle(discord("/char use Nobody", "failed", admin=True))
    assert not await answered("failed")  # a refused /char use changes nothing
    await app.commands.handle(incoming("/char use Mira", channel="tg", group=True, admin=True, platform="telegram"))
    assert not await answered_on(app, "telegram", "tg")  # Telegram groups keep asking for /replymode all
    await app.conversations.set_setting(ChannelKey("discord", "legacy"), "roleplay", True)
    assert await answered("legacy")  # channels marked by older versions stay role-play channels


async def answered_on(app, platform, channel):
    answer = await app.commands.handle(incoming("hello all", channel=channel, group=True, platform=platform,
                                                addressed=False))
    return answer.answered


# --------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("platform", ["discord", "telegram"])
@pytest.mark.parametrize("token", ["abc\x01def", "abc\ndef", "abc def", "abc\x7f"])
def test_a_token_with_a_control_character_is_refused_at_config_load(platform, token):
    with pytest.raises(ConfigError) as refused:
        load_config(env={f"RWKV_BOT_{platform.upper()}_TOKEN": token})
    assert f"RWKV_BOT_{platform.upper()}_TOKEN" in str(refused.value) and token not in str(refused.value)
    assert "whitespace or a control character" in str(refused.value)
    assert load_config(env={f"RWKV_BOT_{platform.upper()}_TOKEN": "MTIz.abc-_DEF"}).get(platform, "token")


def test_button_presses_buttons_and_queue_events_round_trip_through_json():
    from bot.commands import KEPT, STOPPED, ButtonPress, Queued
    from bot.commands.messages import STOP, SWIPE_FORWARD, stop_buttons, swipe_buttons

    press = Incoming(platform="telegram", channel_id="-100", user_id="7", user_name="Ann", text="", is_group=True,
                     button=ButtonPress(SWIPE_FORWARD, 12, "42"))
    assert Incoming.from_dict(through_json(press.to_dict())) == press
    for event in (Queued(3), Final("so far", DONE, swipe_buttons(12, 2, 3, "42")), Final("", STOPPED),
                  Final("", KEPT)):
        assert event_from_dict(through_json(event.to_dict())) == event
    stream = ReplyStream.from_dict(through_json(ReplyStream("Mira", None, events_of([]), None,
                                                            stop_buttons("42")).to_dict()), events_of([]))
    assert [b.label for b in stream.buttons] == ["⏹"]
    # a button's data is the press, within Telegram's 64 bytes for the longest ids; anything else is no press
    for button in swipe_buttons(2**31, 20, 20, "9" * 40) + stop_buttons("9" * 40):
        assert len(button.data.encode()) <= 64 and ButtonPress.decode(button.data) is not None
    assert ButtonPress.decode(swipe_buttons(12, 1, 1, "42")[2].data) == ButtonPress(SWIPE_FORWARD, 12, "42")
    assert ButtonPress.decode(stop_buttons("")[0].data) == ButtonPress(STOP, 0, "")
    for foreign in (None, "", "vote:yes", "rp:x:1:2", "rp:f:abc:2", "rp:f:1"):
        assert ButtonPress.decode(foreign) is None
    # only a press on someone else's reply in a group costs an admin lookup
    assert needs_admin(press) and not needs_admin(Incoming("telegram", "-100", "42", "Bo", "", is_group=True,
                                                           button=ButtonPress(SWIPE_FORWARD, 12, "42")))
