"""Scenes through the command layer, the real engine (RWKV-7 demo model, greedy) and real SQLite: /cast, who
answers a line, /reply, /persona, and exactness across undo and restarts."""
from __future__ import annotations

import json

import pytest

from bot.app import build_app
from bot.commands import MessageGone, ReplyStream
from bot.config import load_config
from bot.conversations import ChannelKey
from bot.conversations.scenes import SCENE_SEED, in_turn
from bot.engine.backend import states_equal
from bot.i18n import t
from bot.store import tokens_from_bytes
from tests.chat_helpers import finish, head_state, incoming, send
from tests.conftest import write_config

GREEDY = "/params set temperature 0 max_tokens 8"


def card(name: str, *, nickname: str = "", talkativeness=None, description: str = "") -> bytes:
    extensions = {} if talkativeness is None else {"talkativeness": talkativeness}
    spec = ("chara_card_v3", "3.0") if nickname else ("chara_card_v2", "2.0")  # nicknames came with V3
    return json.dumps({"spec": spec[0], "spec_version": spec[1], "data": {
        "name": name, "nickname": nickname, "description": description or f"{name} lives by the harbour.",
        "personality": "curious", "scenario": "", "first_mes": f"Hello, I am {name}.", "mes_example": "",
        "extensions": extensions}}).encode()


CARDS = {
    "Bramwell": card("Bramwell", nickname="Bram", talkativeness=0.9, description="Bram mends nets."),
    "Cora": card("Cora", talkativeness=0.2),
    "Dane": card("Dane", talkativeness="0.6"),
}


def config(tmp_path, demo7, **settings):
    return write_config(tmp_path, demo7, settings={"sampling.temperature": 0, "sampling.max_tokens": 8, **settings})


@pytest.fixture
async def scene_app(tmp_path, demo7):
    application = await build_app(load_config(config(tmp_path, demo7), env={}))
    for name, data in CARDS.items():
        await send(application, "/char import", attachment=(f"{name}.json", data), bot_admin=True)
    yield application
    await application.close()


async def said(app, text: str, **kw) -> tuple[str, str]:
    """(speaker, text) of the reply to `text`."""
    outputs = (await app.commands.handle(incoming(text, **kw))).outputs
    streams = [o for o in outputs if isinstance(o, ReplyStream)]
    assert streams, [getattr(o, "text", o) for o in outputs]
    return streams[-1].speaker, (await finish(streams[-1])).text


async def scene(app, channel: str, *names: str) -> None:
    await send(app, "/char use Mira", channel=channel)
    for name in names:
        await send(app, f"/cast add {name}", channel=channel)


async def turns(app, channel: str, platform: str = "test"):
    return (await app.conversations.transcript(ChannelKey(platform, channel)))[1]


def fed_text(app, turn) -> str:
    return app.conversations.tokenizer.decode(tokens_from_bytes(turn.fed))


async def test_cast_add_list_remove_and_every_refusal_is_clear(scene_app, tmp_path, demo7):
    app = scene_app
    await send(app, "/char use Mira", channel="k")
    assert await send(app, "/cast remove Mira", channel="k") == [t("cast_last", name="Mira")]
    added = await send(app, "/cast add Bramwell", channel="k")
    assert added[0] == t("cast_added", name="Bram") and added[1].splitlines()[1:] == [
        f"- Mira ({t('cast_own')})", "- Bram"]
    assert await send(app, "/cast add bramwell", channel="k") == [t("cast_already", name="Bramwell")]
    assert await send(app, "/cast add Nobody", channel="k") == [t("unknown_character", name="Nobody")]
    assert await send(app, "/cast remove Zed", channel="k") == [t("cast_unknown", name="Zed")]
    assert await send(app, "/cast remove Mira", channel="k") == [t("cast_first", name="Mira")]
    assert await send(app, "/cast remove bramwell", channel="k") == [t("cast_removed", name="Bram")]
    assert (await send(app, "/cast", channel="k"))[0].splitlines()[1:] == [f"- Mira ({t('cast_own')})"]
    assert await send(app, "/cast add", channel="k") == [t("bad_usage", name="cast", usage="add NAME")]
    assert await send(app, "/lang zh", channel="k") == [t("lang_set", "zh")]
    assert await send(app, "/cast remove Zed", channel="k") == [t("cast_unknown", "zh", name="Zed")]


async def test_a_full_cast_is_refused(tmp_path, demo7):
    app = await build_app(load_config(config(tmp_path, demo7, **{"limits.max_cast": 2}), env={}))
    try:
        for name, data in CARDS.items():
            await send(app, "/char import", attachment=(f"{name}.json", data), bot_admin=True)
        await scene(app, "f", "Bramwell")
        assert await send(app, "/cast add Cora", channel="f") == [t("cast_full", limit=2)]
    finally:
        await app.close()


async def test_who_answers_named_then_replied_to_then_in_turn_and_reply_forces(scene_app):
    app = scene_app
    await scene(app, "w", "Bramwell", "Cora", "Dane")
    assert (await said(app, "Cora, what do you see?", channel="w"))[0] == "Cora"
    assert (await said(app, "bram?", channel="w"))[0] == "Bram"  # its nickname
    assert (await said(app, "and you, BRAMWELL?", channel="w"))[0] == "Bram"  # its card name, any case
    assert (await said(app, "Cora! Bram! Anyone?", channel="w"))[0] == "Cora"  # the first one named
    line = incoming("what do you think?", channel="w")
    line.reply_to_speaker = "Dane"
    outputs = (await app.commands.handle(line)).outputs
    assert outputs[-1].speaker == "Dane" and outputs[-1].named
    await finish(outputs[-1])
    assert await send(app, "/reply cora", channel="w") == [t("reply_next", name="Cora")]
    assert (await said(app, "Bram, tell me.", channel="w"))[0] == "Cora"  # forced over the name
    assert (await said(app, "Bram, tell me.", channel="w"))[0] == "Bram"  # for one reply only


async def test_talkativeness_turn_order_is_predictable_and_never_repeats_a_speaker(scene_app):
    app = scene_app
    await scene(app, "o", "Bramwell", "Cora", "Dane")
    conv = app.conversations
    ch = await conv.channel(ChannelKey("test", "o"))
    members = conv.members(ch, conv._card(ch))
    seed = ch.settings[SCENE_SEED]
    last, speakers = "Mira", []
    for n in range(8):
        expected = in_turn(members, last, seed, n + 1).label
        speaker, _ = await said(app, f"and then {n}?", channel="o")
        assert speaker == expected and speaker != last
        speakers.append(speaker)
        last = speaker
    assert len(set(speakers)) > 1
    log = await turns(app, "o")
    assert [turn.out_speaker for turn in log] == speakers  # what was said is what the state read


async def test_introductions_and_the_persona_are_fed_once_and_names_sanitised(scene_app):
    app = scene_app
    await scene(app, "p", "Bramwell")
    assert await send(app, "/persona :\n:", channel="p") == [t("persona_empty_name")]
    assert await send(app, '/persona "Sir: Galen\nthe Bold" a knight\n\nwho lost his horse', channel="p") == [
        t("persona_set", name="Sir Galen the Bold")]
    assert await send(app, "/persona", channel="p") == [
        t("persona_is", name="Sir Galen the Bold", description="a knight\nwho lost his horse")]
    first_reply = await said(app, "Bram, hello.", channel="p")
    first_fed = fed_text(app, (await turns(app, "p"))[-1])
    assert await said(app, "/regen", channel="p") == first_reply  # made again from the same text (greedy)
    assert fed_text(app, (await turns(app, "p"))[-1]) == first_fed
    await said(app, "Mira, hello.", channel="p")
    first, second = [fed_text(app, turn) for turn in await turns(app, "p")]
    assert first.startswith("System: [Bram joins the scene.]\n[Bram mends nets.]\n[Bram's personality: curious]\n\n"
                            "System: [Sir Galen the Bold: a knight\nwho lost his horse]\n\n"
                            "Sir Galen the Bold: Bram, hello.\n\nBram:")
    assert second.startswith("Sir Galen the Bold: Mira, hello.\n\nMira:")  # nothing fed twice
    assert "joins the scene" not in second and "knight" not in second
    assert await send(app, "/persona clear", channel="p") == [t("persona_cleared", name="Alice")]
    await said(app, "Bram?", channel="p")
    assert fed_text(app, (await turns(app, "p"))[-1]).startswith("Alice: Bram?\n\n")


async def test_each_group_user_has_their_own_persona(scene_app):
    app = scene_app
    group = {"channel": "g", "group": True}
    await scene(app, "g", "Bramwell")
    await send(app, "/persona Galen a knight", **group, user="Alice")
    await send(app, "/persona Wren a thief", **group, user="Bob")
    assert await send(app, "/persona", **group, user="Carol") == [t("persona_none", name="Carol")]
    await said(app, "hello", **group, user="Alice")
    await said(app, "hi", **group, user="Bob")
    await said(app, "hey", **group, user="Alice")
    await said(app, "yo", **group, user="Carol")
    fed = [fed_text(app, turn) for turn in await turns(app, "g")]
    assert "System: [Galen: a knight]\n\nGalen: hello\n\n" in fed[0]
    assert fed[1].startswith("System: [Wren: a thief]\n\nWren: hi\n\n")
    assert fed[2].startswith("Galen: hey\n\n") and fed[3].startswith("Carol: yo\n\n")


async def test_after_a_scene_undo_and_restart_give_the_exact_state(tmp_path, demo7, database_url):
    path = config(tmp_path, demo7, **{"database.url": database_url})
    app = await build_app(load_config(path, env={}))
    try:
        for name, data in CARDS.items():
            await send(app, "/char import", attachment=(f"{name}.json", data), bot_admin=True)
        for channel in ("x", "fresh"):
            await scene(app, channel, "Bramwell", "Cora")
            await send(app, "/persona Galen a knight", channel=channel)
        seed = await app.conversations.setting(ChannelKey("test", "x"), SCENE_SEED)
        await app.conversations.set_setting(ChannelKey("test", "fresh"), SCENE_SEED, seed)  # the same turn order
        lines = ["Bram, the nets?", "Cora, the boats?", "what now?"]
        for line in lines:
            await said(app, line, channel="x")
        await send(app, "/undo 2", channel="x")  # back to before the persona's second line
        for line in lines[:1]:
            await said(app, line, channel="fresh")
        assert states_equal(await head_state(app, "x"), await head_state(app, "fresh"))
        # The next lines feed the same text (nothing the undone turns fed counts as read) and get the same reply.
        after_undo = [await said(app, line, channel="x") for line in lines[1:]]
        assert after_undo == [await said(app, line, channel="fresh") for line in lines[1:]]
        assert [fed_text(app, t_) for t_ in await turns(app, "x")] == [
            fed_text(app, t_) for t_ in await turns(app, "fresh")]
        before = await head_state(app, "x")
        cast = await send(app, "/cast", channel="x")
    finally:
        await app.close()
    app = await build_app(load_config(path, env={}))  # a restart: the cast, the personas and the state survive
    try:
        assert await send(app, "/cast", channel="x") == cast
        assert states_equal(await head_state(app, "x"), before)
        assert await said(app, "Bram, again?", channel="x") == await said(app, "Bram, again?", channel="fresh")
        assert fed_text(app, (await turns(app, "x"))[-1]).startswith("Galen: Bram, again?\n\nBram:")
    finally:
        await app.close()


async def test_without_a_cast_nothing_changes_and_a_removed_member_is_introduced_again(scene_app):
    app = scene_app
    await send(app, "/char use Mira", channel="n")
    speaker, _ = await said(app, "Bram, hello", channel="n")
    assert speaker == "Mira"
    outputs = (await app.commands.handle(incoming("hello", channel="n"))).outputs
    assert not outputs[-1].named
    await finish(outputs[-1])
    assert fed_text(app, (await turns(app, "n"))[-1]).startswith("Alice: hello\n\nMira:")
    await send(app, "/cast add Bramwell", channel="n")
    await said(app, "hi", channel="n")
    await send(app, "/cast remove Bram", channel="n")
    assert (await said(app, "Bram?", channel="n"))[0] == "Mira"  # not in the scene any more
    await send(app, "/cast add Bramwell", channel="n")
    await said(app, "back?", channel="n")
    assert fed_text(app, (await turns(app, "n"))[-1]).startswith("System: [Bram joins the scene.]")


async def test_a_persona_named_like_a_cast_member_is_told_apart(scene_app):
    app = scene_app
    await scene(app, "l", "Bramwell")
    await send(app, "/persona Bram", channel="l")
    speaker, _ = await said(app, "Mira, hello", channel="l")
    assert speaker == "Mira"
    assert "]\n\nBram (user): Mira, hello\n\nMira:" in fed_text(app, (await turns(app, "l"))[-1])


def test_the_speaker_crosses_the_boundary_as_plain_data():
    from bot.commands import CharacterLine, Incoming
    from bot.commands.messages import output_from_dict

    line = Incoming(platform="discord", channel_id="1", user_id="2", user_name="Ann", text="and then?",
                    reply_to="99", reply_to_speaker="Cora")
    assert Incoming.from_dict(json.loads(json.dumps(line.to_dict()))).reply_to_speaker == "Cora"
    stream = ReplyStream("Cora", b"png", iter(()), named=True)
    assert output_from_dict(json.loads(json.dumps(stream.to_dict())), events=iter(())).named
    greeting = CharacterLine("Cora", "Hi.", None, named=True)
    assert output_from_dict(json.loads(json.dumps(greeting.to_dict()))) == greeting


def test_the_terminal_shows_each_speakers_name(tmp_path, demo7):
    from tests.conftest import run_cli

    path = config(tmp_path, demo7)
    cards = tmp_path / "cast"
    cards.mkdir()
    for name, data in CARDS.items():
        (cards / f"{name}.json").write_bytes(data)
    script = "\n".join([*(f"/char import {cards / name}.json" for name in CARDS), "/cast add Cora",
                        "/cast add Bramwell", "Cora, hello", "Bram, hello", "/quit"]) + "\n"
    result = run_cli("chat", "--config", str(path), cwd=tmp_path, input=script, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("Cora: ") for line in lines) and any(line.startswith("Bram: ") for line in lines)
    assert lines.index(next(x for x in lines if x.startswith("Cora: "))) < lines.index(
        next(x for x in lines if x.startswith("Bram: ")))


# ----- edits and deletes on the platform in a scene (bot.conversations.history) ----------------------------------
SCENE_LINES = [("m1", "Bram, the nets?", "Torn again."), ("m2", "Mira, the boats?", "All in."),
               ("m3", "Bram, again?", "Still torn.")]


async def scene_line(app, channel: str, message_id: str, text: str, fixed_reply: str) -> None:
    """A line with its platform message id; its reply set with /edit, so two channels can hold the same replies."""
    import dataclasses

    outputs = (await app.commands.handle(dataclasses.replace(incoming(text, channel=channel),
                                                             message_id=message_id))).outputs
    await finish([o for o in outputs if isinstance(o, ReplyStream)][-1])
    await send(app, f"/edit {fixed_reply}", channel=channel)


async def scene_pair(app, lines_x, lines_fresh) -> None:
    for channel in ("x", "fresh"):
        await scene(app, channel, "Bramwell")
        await send(app, "/persona Galen a knight", channel=channel)
    for message_id, text, reply in lines_x:
        await scene_line(app, "x", message_id, text, reply)
    for _, text, reply in lines_fresh:
        await scene_line(app, "fresh", "", text, reply)


async def assert_same_channels(app) -> None:
    x, fresh = await turns(app, "x"), await turns(app, "fresh")
    assert [(t_.kind, t_.in_text, t_.out_speaker, t_.out_text) for t_ in x] == [
        (t_.kind, t_.in_text, t_.out_speaker, t_.out_text) for t_ in fresh]
    assert [fed_text(app, t_) for t_ in x] == [fed_text(app, t_) for t_ in fresh]
    assert states_equal(await head_state(app, "x"), await head_state(app, "fresh"))


async def test_an_edit_of_an_older_scene_line_keeps_its_introductions_exactly(scene_app):
    """The edited line was the one the introduction and the persona description were fed before: they stay, and
    the channel equals one that had the new line from the start."""
    import dataclasses

    app = scene_app
    edited = ("m1", "Bram, the sails?", "Torn again.")
    await scene_pair(app, SCENE_LINES, [edited] + SCENE_LINES[1:])
    answer = await app.commands.edited(dataclasses.replace(incoming("Bram, the sails?", channel="x"),
                                                           message_id="m1"))
    assert answer.outputs == []  # an older line: the bot says nothing
    first = fed_text(app, (await turns(app, "x"))[0])
    assert first.startswith("System: [Bram joins the scene.]\n[Bram mends nets.]\n[Bram's personality: curious]\n\n"
                            "System: [Galen: a knight]\n\nGalen: Bram, the sails?\n\nBram:")
    await assert_same_channels(app)
    for channel in ("x", "fresh"):  # what the scene has read is the same: nothing is fed twice
        await scene_line(app, channel, "", "Mira, and now?", "Now we sail.")
    await assert_same_channels(app)


async def test_a_deleted_scene_line_leaves_its_introductions_before_the_next_line(scene_app):
    """The deleted line's introduction and persona description move to the next line, where a conversation
    without the deleted line would have fed them; what each turn fed moves with it."""
    app = scene_app
    await scene_pair(app, SCENE_LINES, SCENE_LINES[1:])
    await app.commands.deleted(MessageGone("test", "x", "m1"))
    first = fed_text(app, (await turns(app, "x"))[0])
    assert first.startswith("System: [Bram joins the scene.]") and "Galen: Mira, the boats?\n\nMira:" in first
    await assert_same_channels(app)
    for channel in ("x", "fresh"):
        await scene_line(app, channel, "", "Bram, and now?", "Now we mend.")
    await assert_same_channels(app)


async def test_after_a_deleted_scene_line_what_later_turns_fed_counts_one_place_earlier(scene_app):
    """Cora joins after the deleted line: her introduction (fed by the next line) moves down with that line, so
    after an /undo back to it she is not introduced twice."""
    app = scene_app
    await scene(app, "x", "Bramwell")
    await scene_line(app, "x", "m1", "Bram, the nets?", "Torn again.")
    await send(app, "/cast add Cora", channel="x")
    await scene_line(app, "x", "m2", "Cora, the boats?", "All in.")
    await scene_line(app, "x", "m3", "Bram, again?", "Still torn.")
    await app.commands.deleted(MessageGone("test", "x", "m1"))
    await send(app, "/undo", channel="x")  # back to the line that introduced Cora, now the first
    await scene_line(app, "x", "m4", "Cora, and now?", "Now we sail.")
    fed = [fed_text(app, t_) for t_ in await turns(app, "x")]
    assert "[Cora joins the scene.]" in fed[0] and "[Bram joins the scene.]" in fed[0]
    assert fed[1].startswith("Alice: Cora, and now?\n\nCora:")  # nothing fed twice
