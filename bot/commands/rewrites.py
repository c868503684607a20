"""Edits and deletes on the platform, for every adapter: an edited message (an `Incoming` with its new text) or a
deleted one (`MessageGone`) becomes a rewrite of the channel's history (bot.conversations.history says exactly
what each does), and the adapter is told what to show: the regenerated reply to paint into the bot's messages
that showed the old one, or the bot's messages to delete (`Retract`). The adapter reports which messages show
each reply (`ReplyShown`) once it has painted them.

Edits and deletes take their place in the channel's order like messages: an edit never overtakes the message
sent before it.
"""
from __future__ import annotations

import asyncio

from bot.commands.base import Context
from bot.commands.messages import Answer, Incoming, MessageGone, ReplyShown, ReplyStream, Retract
from bot.conversations import ChannelKey, acting_for
from bot.conversations.history import REGENERATED, UNCHANGED
from bot.i18n import normalize_lang


async def edited(cmds, incoming: Incoming, arrival=None) -> Answer:
    arrival = arrival or cmds.arrive(incoming)  # before any await: the edit's place in the channel's order
    key = ChannelKey(incoming.platform, incoming.channel_id)
    try:
        settings = await cmds.conversations.settings(key)
        await arrival.wait_turn()
        lang = settings.get("lang") or normalize_lang(incoming.language_code, cmds.lang)
        if incoming.command is not None or arrival.admitted is False or not incoming.message_id:
            return Answer([], lang, answered=False)  # a command is not a line; a flood is refused as messages are
        ctx = Context(key=key, user_id=incoming.user_id, user_name=incoming.user_name, lang=lang,
                      is_group=incoming.is_group, is_bot_admin=incoming.is_bot_admin, settings=settings)
        acting = acting_for.set((ctx.user_key, ctx.is_bot_admin))  # a regenerated reply's ⏹ and swipes are theirs
        try:
            working = asyncio.ensure_future(cmds._guarded(ctx, "edit", _edit(cmds, key, incoming)))
        finally:
            acting_for.reset(acting)
        await asyncio.sleep(0)  # the rewrite takes its place in the conversation's queue first
        arrival.placed()
        outputs = await working
        return Answer(outputs, lang, answered=bool(outputs))
    finally:
        arrival.placed()


async def _edit(cmds, key: ChannelKey, incoming: Incoming) -> list:
    rewrite = await cmds.conversations.message_edited(key, incoming.message_id, incoming.user_name, incoming.text,
                                                      who=f"{incoming.platform}:{incoming.user_id}")
    if rewrite.action != REGENERATED:
        return []
    stream: ReplyStream = cmds._boundary(rewrite.stream)
    stream.into = rewrite.into
    return [stream]


async def deleted(cmds, gone: MessageGone) -> Answer:
    key = ChannelKey(gone.platform, gone.channel_id)
    before, placed = cmds.order.take(key)  # before any await
    try:
        settings = await cmds.conversations.settings(key)
        if before is not None and not before.done():
            await asyncio.wait([before])
        lang = settings.get("lang") or cmds.lang
        ctx = Context(key=key, user_id="", user_name="", lang=lang, settings=settings)
        working = asyncio.ensure_future(cmds._guarded(ctx, "delete", _delete(cmds, key, gone)))
        await asyncio.sleep(0)
        _place(cmds, key, placed)
        outputs = await working
        return Answer(outputs, lang, answered=bool(outputs))
    finally:
        _place(cmds, key, placed)


async def _delete(cmds, key: ChannelKey, gone: MessageGone) -> list:
    rewrite = await cmds.conversations.message_deleted(key, gone.message_id)
    if rewrite.action == UNCHANGED or not rewrite.retract:
        return []
    return [Retract(rewrite.retract)]


def _place(cmds, key: ChannelKey, placed: asyncio.Future) -> None:
    if not placed.done():
        placed.set_result(None)
    cmds.order.forget(key, placed)


async def shown(cmds, report: ReplyShown) -> None:
    if report.position > 0 and report.message_ids:
        await cmds.conversations.note_shown(ChannelKey(report.platform, report.channel_id), report.position,
                                            report.message_ids)
