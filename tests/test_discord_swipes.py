"""Swipes and ⏹ on Discord, end to end: the real discord.py client against tests/fake_discord.py (message
components, component interactions), the real engine on the RWKV-7 demo model, a real SQLite database."""
from __future__ import annotations

from bot.i18n import t
from tests.test_discord import (ALICE, BOB, GENERAL, GUILD, app, chat, eventually, fake, persona_messages,  # noqa: F401
                                serving, slash, turns, use_mira)


DAN = 912345678901234709  # a plain member


async def sampled(fake, max_tokens: int = 12) -> None:
    for name, value in (("temperature", 1.5), ("top_p", 1), ("max_tokens", max_tokens)):
        await slash(fake, "params set", {"name": name, "value": value})


async def press(fake, message, label: str, user: int):
    """`user` presses the button labelled `label` under `message`; returns the interaction once it is
    acknowledged and what it changed is shown."""
    [custom_id] = [i for i, text in zip(fake.button_ids(message), fake.button_labels(message))
                   if text == label or (label == "n/m" and "/" in text)]
    inter = await fake.press_button(message.id, custom_id, user)
    await inter.wait_callback(timeout=10)
    return inter


def label_of(fake, message) -> str:
    return next((text for text in fake.button_labels(message) if "/" in text), "")


async def test_swipes_on_discord_stay_in_the_message_and_are_for_whom_the_reply_answers(app, fake):
    async with serving(app, fake):
        await use_mira(fake, GENERAL)
        await sampled(fake)
        one = await chat(fake, app, GENERAL, BOB, "Good evening, is the archive open?")
        reply = persona_messages(fake, GENERAL)[-1]
        assert reply.webhook_id and fake.button_labels(reply) == ["◀", "1/1", "▶"]

        inter = await press(fake, reply, "▶", BOB)
        assert inter.callback["type"] == 6  # acknowledged at once, as a deferred update
        await fake.wait_for(lambda: label_of(fake, reply) == "2/2", timeout=30)
        [turn] = await turns(app, GENERAL)
        two = turn.out_text
        assert reply.content == two != one and persona_messages(fake, GENERAL)[-1] is reply
        await press(fake, reply, "◀", BOB)
        await fake.wait_for(lambda: label_of(fake, reply) == "1/2", timeout=30)
        assert reply.content == one and (await turns(app, GENERAL))[0].out_text == one

        fake.add_user(DAN, "dan")
        fake.add_member(GUILD, DAN)
        inter = await press(fake, reply, "▶", DAN)  # not his, and he is no admin of this server
        assert inter.ephemeral and inter.texts() == [t("button_not_yours", "en")]
        inter = await press(fake, reply, "▶", ALICE)  # an admin may
        assert inter.callback["type"] == 6
        await fake.wait_for(lambda: label_of(fake, reply) == "2/2", timeout=30)
        assert reply.content == two

        await chat(fake, app, GENERAL, BOB, "And the lamp?")
        inter = await press(fake, reply, "◀", BOB)  # no longer the latest reply
        assert inter.ephemeral and inter.texts() == [t("swipe_too_old", "en")]
        assert reply.content == two and label_of(fake, reply) == "2/2"


async def test_stop_on_discord_keeps_what_was_written(app, fake):
    from tests.chat_helpers import pace

    async with serving(app, fake):
        await use_mira(fake, GENERAL)
        for name, value in (("temperature", 5), ("top_p", 1), ("mirostat_tau", 0), ("max_tokens", 2000)):
            await slash(fake, "params set", {"name": name, "value": value})
        app.engine.reseed(1)
        pace(app.engine, 0.02)
        await fake.send_message(GENERAL, BOB, "tell me a very long story")
        draft = await fake.wait_for(lambda: next((m for m in persona_messages(fake, GENERAL)[1:]
                                                  if len(m.content) > 20 and "⏹" in fake.button_labels(m)), None),
                                    timeout=30)
        inter = await press(fake, draft, "⏹", BOB)
        assert inter.callback["type"] == 6
        await eventually(lambda: turns(app, GENERAL), timeout=30)
        app.engine.step_hook = None
        [turn] = await turns(app, GENERAL)
        await fake.wait_for(lambda: fake.button_labels(draft) == ["◀", "1/1", "▶"], timeout=30)
        assert draft.content == turn.out_text and len(turn.out_text) > 20
