"""Scenes on Telegram, end to end: the real python-telegram-bot polling the fake Bot API, the real engine (greedy)
and SQLite. Each character's reply starts with its name; a reply to a character's message is answered by it; each
member of a group speaks under their own persona."""
from __future__ import annotations

from bot.conversations import ChannelKey
from bot.conversations.scenes import SCENE_SEED, in_turn
from bot.i18n import t
from bot.store import tokens_from_bytes
from tests.test_scenes import CARDS
from tests.test_telegram import running, server, telegram_config  # noqa: F401  (server: a fixture)

ANN, BOB = 1, 2  # Ann is one of the bot's admins (she imports the cards) and the group's creator


async def a_scene(bot, server):
    group = server.group_chat(-900, "Harbour")
    server.set_member_status(group.id, ANN, "creator")
    server.set_member_status(group.id, BOB, "member")
    server.user(ANN, "Ann")
    server.user(BOB, "Bob")
    await bot.say(group, ANN, "/replymode all")
    for name, data in CARDS.items():
        await bot.send_document(group, ANN, f"{name}.json", data, caption="/char import")
    await bot.say(group, ANN, "/char use Mira")
    await bot.say(group, ANN, "/cast add Bramwell")
    await bot.say(group, ANN, "/cast add Cora")
    return group


async def test_each_character_speaks_under_its_name_and_a_reply_picks_who_answers(tmp_path, demo7, server):
    config = telegram_config(tmp_path, demo7, server, telegram__admin_ids=[ANN])
    async with running(server, config) as bot:
        group = await a_scene(bot, server)
        assert bot.texts(group)[-1].splitlines()[1:] == [f"- Mira ({t('cast_own')})", "- Bram", "- Cora"]
        await bot.say(group, ANN, "Cora, what is that light?")
        cora = server.messages(group)[-1]
        turn = (await bot.turns("-900"))[-1]
        assert turn.out_speaker == "Cora" and cora.text == f"Cora: {turn.out_text}".rstrip()
        # Nobody named, a reply to the one who spoke last: only the reply can pick them (the turn order never would).
        await bot.say(group, BOB, "why do you say that?", reply_to=cora)
        assert (await bot.turns("-900"))[-1].out_speaker == "Cora"
        assert server.messages(group)[-1].text.startswith("Cora: ")
        await bot.say(group, BOB, "Bram, mend the nets.")
        bram = server.messages(group)[-1]
        assert bram.text.startswith("Bram: ")
        await bot.say(group, BOB, "and you?", reply_to=bram)
        assert (await bot.turns("-900"))[-1].out_speaker == "Bram"
        await bot.say(group, ANN, "/reply mira")
        await bot.say(group, ANN, "Cora?", reply_to=bram)  # forced over the name and the reply
        assert (await bot.turns("-900"))[-1].out_speaker == "Mira"
        assert server.messages(group)[-1].text.startswith("Mira: ")
        await bot.say(group, BOB, "/cast remove Nobody")
        assert bot.texts(group)[-1] == t("cast_unknown", name="Nobody")
        await bot.say(group, ANN, "/reset")  # the cast stays; its greeting shows whose it is, like every line
        assert bot.texts(group)[-2] == t("reset_done") and bot.texts(group)[-1].startswith("Mira: *The door opens")


async def test_every_group_member_has_their_own_persona_fed_once(tmp_path, demo7, server):
    config = telegram_config(tmp_path, demo7, server, telegram__admin_ids=[ANN])
    async with running(server, config) as bot:
        group = await a_scene(bot, server)
        await bot.say(group, ANN, "/persona Galen a knight of the coast")
        assert bot.texts(group)[-1] == t("persona_set", name="Galen")
        await bot.say(group, BOB, "/persona ::")
        assert bot.texts(group)[-1] == t("persona_empty_name")
        await bot.say(group, BOB, "/persona Wren")
        await bot.say(group, ANN, "Bram, hello")
        await bot.say(group, BOB, "Cora, hi")
        await bot.say(group, ANN, "Mira, hey")
        await bot.say(group, BOB, "/persona")
        assert bot.texts(group)[-1] == t("persona_is", name="Wren", description="-")
        tokenizer = bot.app.conversations.tokenizer
        fed = [tokenizer.decode(tokens_from_bytes(turn.fed)) for turn in await bot.turns("-900")]
        assert "System: [Galen: a knight of the coast]\n\nGalen: Bram, hello\n\nBram:" in fed[0]
        assert fed[1].startswith("Wren: Cora, hi\n\nCora:")
        assert fed[2].startswith("Galen: Mira, hey\n\nMira:")  # the description only once


async def test_the_turn_order_never_repeats_a_speaker_and_the_scene_survives_a_restart(tmp_path, demo7, server):
    config = telegram_config(tmp_path, demo7, server, telegram__admin_ids=[ANN])

    async def unnamed_lines(bot, group, count: int) -> None:
        conv = bot.app.conversations
        ch = await conv.channel(ChannelKey("telegram", "-900"))
        members = conv.members(ch, conv._card(ch))
        for n in range(count):
            log = await bot.turns("-900")
            last = log[-1].out_speaker if log else "Mira"
            expected = in_turn(members, last, ch.settings[SCENE_SEED], len(log) + 1).label
            await bot.say(group, BOB, f"and then, {n}?")
            assert (await bot.turns("-900"))[-1].out_speaker == expected != last
            assert server.messages(group)[-1].text.startswith(f"{expected}: ")

    async with running(server, config) as bot:
        group = await a_scene(bot, server)
        await bot.say(group, ANN, "/cast add Dane")
        await bot.say(group, BOB, "/persona Wren a thief")
        await unnamed_lines(bot, group, 5)
        await bot.say(group, ANN, "/cast")
        cast = bot.texts(group)[-1]
    async with running(server, config) as bot:  # a restart: the cast, the seed and the personas are kept
        await bot.say(group, ANN, "/cast")
        assert bot.texts(group)[-1] == cast
        await bot.say(group, BOB, "/persona")
        assert bot.texts(group)[-1] == t("persona_is", name="Wren", description="a thief")
        await unnamed_lines(bot, group, 3)
        speakers = [turn.out_speaker for turn in await bot.turns("-900")]
        assert all(a != b for a, b in zip(speakers, speakers[1:])) and len(set(speakers)) > 2
