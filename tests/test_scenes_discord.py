"""Scenes on Discord, end to end: the real discord.py client against the fake Discord, the real engine (greedy)
and SQLite. Each character speaks through the channel's webhook under its own name and avatar; a reply to a
character's message is answered by it."""
from __future__ import annotations

import hashlib
import json

import discord

from bot.adapters.discord.personas import bold_speaker
from bot.cards.png import embed_card
from bot.i18n import t
from tests.cards.builders import tiny_png
from tests.fake_discord import DEFAULT_BOT_PERMISSIONS, Perm
from tests.test_discord import app, fake  # noqa: F401  (fixtures)
from tests.test_discord import (ALICE, BOB, GENERAL, GUILD, eventually, greedy, persona_messages, serving, slash,
                                turns, use_mira)

CAST = {"Bramwell": ("Bram", (200, 40, 40), 0.9), "Cora": ("", (40, 200, 40), 0.2)}


def png_card(name: str, nickname: str, colour: tuple[int, int, int], talkativeness: float) -> bytes:
    spec = ("chara_card_v3", "3.0") if nickname else ("chara_card_v2", "2.0")
    data = {"name": name, "nickname": nickname, "description": f"{name} lives by the harbour.",
            "first_mes": f"I am {name}.", "extensions": {"talkativeness": talkativeness}}
    return embed_card(tiny_png(colour), json.dumps({"spec": spec[0], "spec_version": spec[1], "data": data}))


def avatar_hash(avatar: bytes) -> str:
    """How the fake stores a webhook avatar: the md5 of the data URI discord.py sends."""
    return hashlib.md5(discord.utils._bytes_to_base64_data(avatar).encode()).hexdigest()


async def line(fake, app, user: int, text: str, *, reply_to: int | None = None):
    """`user` posts `text` in GENERAL; returns (the committed turn, the persona message that shows it)."""
    before = len(await turns(app, GENERAL))
    posted_before = len(persona_messages(fake, GENERAL))
    await fake.send_message(GENERAL, user, text, reply_to=reply_to)

    async def committed():
        log = await turns(app, GENERAL)
        return log[before] if len(log) > before else None

    turn = await eventually(committed)
    message = await eventually(lambda: _shown(fake, turn.out_text, posted_before))
    return turn, message


async def _shown(fake, text: str, posted_before: int):
    """The newest persona message, once it is one posted after the line and shows `text` (a random model may say
    the same thing twice, so an older message with the same text does not count)."""
    posted = persona_messages(fake, GENERAL)
    fresh = len(posted) > posted_before
    return posted[-1] if fresh and posted[-1].content == (text.strip() or t("empty_reply")) else None


async def test_each_character_speaks_through_the_webhook_with_its_name_and_avatar(app, fake):
    for name, (nickname, colour, talkativeness) in CAST.items():
        await app.library.import_card(f"{name}.png", png_card(name, nickname, colour, talkativeness))
    async with serving(app, fake):
        await use_mira(fake)
        await greedy(fake, max_tokens=8)
        for name in CAST:
            inter = await slash(fake, "cast", {"args": f"add {name}"})
            assert inter.texts()[0] == t("cast_added", name=CAST[name][0] or name)
        cora_turn, cora = await line(fake, app, BOB, "Cora, what do you see?")
        assert cora_turn.out_speaker == "Cora" and cora.author_name == "Cora" and cora.webhook_id is not None
        assert cora.author["avatar"] == avatar_hash(app.library.find("Cora").avatar)
        # A reply to the one who spoke last: only the reply can pick them (the turn order never would).
        replied, shown = await line(fake, app, ALICE, "why do you say so?", reply_to=cora.id)
        assert replied.out_speaker == "Cora" and shown.author_name == "Cora"
        bram_turn, bram = await line(fake, app, BOB, "Bram, the nets?")
        assert bram.author_name == "Bram" and bram.author["avatar"] == avatar_hash(app.library.find("Bramwell").avatar)
        assert bram.webhook_id == cora.webhook_id  # one webhook per channel, renamed per line
        replied, shown = await line(fake, app, ALICE, "and then?", reply_to=bram.id)
        assert replied.out_speaker == "Bram" and shown.author_name == "Bram"
        mira_turn, mira = await line(fake, app, BOB, "Mira, your turn.")
        assert mira.author_name == "Mira" and mira.author["avatar"] is None  # the sample card has no picture
        inter = await slash(fake, "reply", {"args": "cora"})
        assert inter.texts() == [t("reply_next", name="Cora")]
        forced, shown = await line(fake, app, BOB, "Bram?")
        assert forced.out_speaker == "Cora" and shown.author_name == "Cora"
        inter = await slash(fake, "cast", {"args": "remove Mira"})
        assert inter.texts() == [t("cast_first", name="Mira")]


async def test_without_webhooks_a_reply_to_the_bots_named_line_picks_that_character(app, fake):
    fake.set_bot_permissions(GUILD, DEFAULT_BOT_PERMISSIONS & ~Perm.MANAGE_WEBHOOKS)
    for name, (nickname, colour, talkativeness) in CAST.items():
        await app.library.import_card(f"{name}.png", png_card(name, nickname, colour, talkativeness))
    async with serving(app, fake):
        await use_mira(fake)
        await greedy(fake, max_tokens=8)
        for name in CAST:
            await slash(fake, "cast", {"args": f"add {name}"})
        await fake.send_message(GENERAL, BOB, "Cora, look!")
        cora = await fake.wait_for(lambda: [m for m in persona_messages(fake, GENERAL)
                                            if m.content.startswith("**Cora**: ")])
        assert cora[0].webhook_id is None
        before = len(await turns(app, GENERAL))
        await fake.send_message(GENERAL, ALICE, "why?", reply_to=cora[0].id)  # Cora spoke last: only the reply
        turn = await eventually(lambda: _turn_after(app, before))
        assert turn.out_speaker == "Cora"


async def _turn_after(app, count: int):
    log = await turns(app, GENERAL)
    return log[count] if len(log) > count else None


def test_the_bots_own_line_tells_its_speaker():
    for name in ("Cora", "A*b_c", "x\\y", "林小满"):
        assert bold_speaker(f"**{discord.utils.escape_markdown(name)}**: hello **there**") == name
    assert bold_speaker("plain text") == "" and bold_speaker("**bold** text") == ""
