"""Edits and deletes on Discord, as the adapter shows them: the bot's reply messages known only by their ids (a
reply shown earlier, to paint a regenerated reply into or to delete), reached through the channel's webhook where
a persona posted them, else as the bot's own messages."""
from __future__ import annotations

import logging

import discord

from bot.adapters.discord.render import describe

log = logging.getLogger(__name__)


class PostedMessage:
    """One of the bot's messages by id, with the two calls the painter makes on a message (`edit`, `delete`)."""

    def __init__(self, message_id: int, channel, hook: discord.Webhook | None, thread: discord.Thread | None):
        self.id = message_id
        self.channel = channel
        self.hook = hook
        self.thread = thread

    async def edit(self, *, content: str, allowed_mentions: discord.AllowedMentions, view=None) -> None:
        """`view`: the buttons under it (bot.adapters.discord.buttons.view_of; None takes them away)."""
        if self.hook is not None:
            try:
                await self.hook.edit_message(self.id, content=content, allowed_mentions=allowed_mentions,
                                             thread=self.thread or discord.utils.MISSING, view=view)
                return
            except discord.NotFound:  # not the webhook's: the persona posted it as the bot
                pass
        await self.channel.get_partial_message(self.id).edit(content=content, allowed_mentions=allowed_mentions,
                                                             view=view)

    async def delete(self) -> None:
        if self.hook is not None:
            try:
                await self.hook.delete_message(self.id, thread=self.thread or discord.utils.MISSING)
                return
            except discord.NotFound:
                pass
        await self.channel.get_partial_message(self.id).delete()


def posted(channel, message_ids: list[str], hook: discord.Webhook | None) -> list[PostedMessage]:
    thread = channel if isinstance(channel, discord.Thread) else None
    return [PostedMessage(int(message_id), channel, hook, thread) for message_id in message_ids]


async def retract(channel, message_ids: list[str], hook: discord.Webhook | None) -> None:
    """Delete the bot's messages of a reply that was undone (one already gone is no problem)."""
    for message in posted(channel, message_ids, hook):
        try:
            await message.delete()
        except discord.NotFound:
            pass
        except discord.HTTPException as exc:
            log.info("channel %s: a reply's message %s was not deleted (%s)", getattr(channel, "id", "?"),
                     message.id, describe(exc))
