"""Driving the platform-neutral command layer from tests, the way an adapter does."""
from __future__ import annotations

import time

from bot.commands import CharacterLine, Context, Reply
from bot.conversations import ChannelKey, TurnStream

GREEDY = "/params set temperature 0 max_tokens 16"


def pace(engine, seconds_per_step: float) -> None:
    """Make the demo model, which writes a reply faster than a platform can show it, take this long per step, as
    a real model on a GPU does (tests of streamed edits and of stopping mid-reply need a reply still in progress)."""
    engine.step_hook = lambda rows: time.sleep(seconds_per_step)


def ctx(channel: str = "c1", user: str = "Alice", admin: bool = True, group: bool = False, lang: str = "en",
        platform: str = "test", attachment=None, bot_admin: bool | None = None) -> Context:
    """A message's Context. `admin`: a chat admin (what a private chat gives everyone); `bot_admin`: one of the
    bot's configured admins (the shared library); by default only the terminal's user is, as TerminalChat says."""
    return Context(key=ChannelKey(platform, channel), user_id=user.lower(), user_name=user, is_admin=admin,
                   lang=lang, is_group=group, attachment=attachment,
                   is_bot_admin=platform == "terminal" if bot_admin is None else bot_admin)


async def send(app, text: str, **kw) -> list[str]:
    """Handle one message; returns what the bot says, replies awaited until committed."""
    out = []
    for output in await app.commands.handle(ctx(**kw), text):
        if isinstance(output, Reply):
            out.append(output.text)
        elif isinstance(output, CharacterLine):
            out.append(f"{output.speaker}: {output.text}")
        elif isinstance(output, TurnStream):
            async for _ in output:
                pass
            result = await output.result()
            out.append(f"{result.speaker}: {result.text}")
    return out


async def reply(app, text: str, **kw) -> str:
    """The character's reply to `text` (the last line the bot says)."""
    lines = await send(app, text, **kw)
    assert lines, f"no answer to {text!r}"
    return lines[-1]


async def head_state(app, channel: str = "c1", platform: str = "test"):
    conv = app.conversations
    ch = await conv.channel(ChannelKey(platform, channel))
    return (await conv._state_at(ch, conv._card(ch), ch.head)).state
