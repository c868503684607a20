"""Swipes and /stop: the buttons under a character's reply (◀ n/m ▶, and ⏹ while it is written) and the /stop
command. A press arrives as `Incoming.button` (plain data: what it does, the turn, whose line it answers); refusals
come back at once as a `Reply` (the adapter shows it to the presser alone), the work as a `ReplyStream` painted
into the message the button is on."""
from __future__ import annotations

from bot.commands.base import Context, Reply, command
from bot.commands.dispatch import reply_stream
from bot.commands.messages import (DONE, KEPT, STOP, SWIPE_BACK, SWIPE_LABEL, ButtonPress, Final, ReplyStream,
                                   stop_buttons, swipe_buttons)
from bot.conversations import BACK, FORWARD, ConversationError, Swiped
from bot.i18n import t


def may_press(ctx: Context, owner: str) -> bool:
    """In groups a reply's buttons (and /stop) are for whom it answers and for admins."""
    return not ctx.is_group or not owner or owner == ctx.user_id or ctx.is_admin or ctx.is_bot_admin


@command("stop")
async def stop(cmds, ctx: Context, args: str):
    return _stop(cmds, ctx)


def _stop(cmds, ctx: Context) -> list:
    writing = cmds.conversations.writing(ctx.key)
    if writing is None:
        return [Reply(t("nothing_to_stop", ctx.lang), ephemeral=True)]
    if not may_press(ctx, writing.owner.partition(":")[2]):
        return [Reply(t("stop_not_yours", ctx.lang), ephemeral=True)]
    writing.stop()
    return []


async def press(cmds, ctx: Context, button: ButtonPress) -> list:
    if button.action == SWIPE_LABEL:
        return []
    if not may_press(ctx, button.owner):
        return [Reply(t("button_not_yours", ctx.lang), ephemeral=True)]
    if button.action == STOP:
        return _stop(cmds, ctx)
    turn_id, speaker = await cmds.conversations.last_turn(ctx.key)
    if turn_id != button.turn_id:
        return [Reply(t("swipe_too_old", ctx.lang), ephemeral=True)]
    named = len(await cmds.conversations.cast(ctx.key)) > 1  # a scene: the repainted reply keeps its name
    return [_swiping(cmds, ctx, button, speaker, named)]


def _swiping(cmds, ctx: Context, button: ButtonPress, speaker: str, named: bool = False) -> ReplyStream:
    """The swipe, done in the channel's order once the adapter paints it (the press is answered before)."""
    turn = []

    async def events():
        direction = BACK if button.action == SWIPE_BACK else FORWARD
        try:
            result = await cmds.conversations.swipe(ctx.key, button.turn_id, direction)
        except ConversationError:  # the reply stopped being the latest meanwhile: nothing changes
            yield Final("", KEPT)
            return
        if isinstance(result, Swiped):
            yield Final(result.text, DONE, swipe_buttons(result.turn_id, *result.label, button.owner))
            return
        turn.append(result)
        async for event in reply_stream(result, button.owner):
            yield event

    def cancel():
        for writing in turn:
            writing.cancel()

    return ReplyStream(speaker, None, events(), cancel, stop_buttons(button.owner), named=named)
