"""Driving the platform-neutral command layer from tests, the way an adapter does: an Incoming in, an Answer out."""
from __future__ import annotations

import time

from bot.commands import Attachment, CharacterLine, Context, Final, Incoming, Reply, ReplyStream
from bot.conversations import ChannelKey

GREEDY = "/params set temperature 0 max_tokens 16"


def pace(engine, seconds_per_step: float) -> None:
    """Make the demo model, which writes a reply faster than a platform can show it, take this long per step, as
    a real model on a GPU does (tests of streamed edits and of stopping mid-reply need a reply still in progress)."""
    engine.step_hook = lambda rows: time.sleep(seconds_per_step)


def ctx(channel: str = "c1", user: str = "Alice", admin: bool = True, group: bool = False, lang: str = "en",
        platform: str = "test", attachment=None, bot_admin: bool | None = None) -> Context:
    """A handler's Context, as `Commands.handle` makes one (the admin page keeps them as sign-in grants).
    `admin`: a chat admin (what a private chat gives everyone); `bot_admin`: one of the bot's configured admins (the
    shared library); by default only the terminal's user is, as TerminalChat says."""
    return Context(key=ChannelKey(platform, channel), user_id=user.lower(), user_name=user, is_admin=admin,
                   lang=lang, is_group=group, attachment=attachment,
                   is_bot_admin=platform == "terminal" if bot_admin is None else bot_admin)


def incoming(text: str, channel: str = "c1", user: str = "Alice", admin: bool = True, group: bool = False,
             lang: str = "en", platform: str = "test", attachment: tuple[str, bytes] | None = None,
             addressed: bool = True, chat_title: str = "", bot_admin: bool | None = None) -> Incoming:
    return Incoming(platform=platform, channel_id=channel, user_id=user.lower(), user_name=user, text=text,
                    is_group=group, addressed=addressed, is_admin=admin, language_code=lang,
                    is_bot_admin=platform == "terminal" if bot_admin is None else bot_admin,
                    attachment=Attachment(*attachment) if attachment else None, chat_title=chat_title)


async def outputs(app, text: str, **kw) -> list:
    """The outputs of one message, streams not yet read."""
    return (await app.commands.handle(incoming(text, **kw))).outputs


async def finish(stream: ReplyStream) -> Final:
    """Read a reply stream to its end; its Final event."""
    final = None
    async for event in stream:
        final = event
    assert isinstance(final, Final), "a reply stream ends with a Final event"
    return final


async def send(app, text: str, **kw) -> list[str]:
    """Handle one message; returns what the bot says, replies read until committed."""
    out = []
    for output in await outputs(app, text, **kw):
        if isinstance(output, Reply):
            out.append(output.text)
        elif isinstance(output, CharacterLine):
            out.append(f"{output.speaker}: {output.text}")
        elif isinstance(output, ReplyStream):
            out.append(f"{output.speaker}: {(await finish(output)).text}")
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
