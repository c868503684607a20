"""Showing the command layer's outputs on Discord: a character's lines (streamed replies and greetings) painted on a
persona target, and command answers as replies to a message or as interaction responses."""
from __future__ import annotations

import io
import logging

import discord

from bot.adapters.discord.buttons import view_of
from bot.adapters.discord.personas import NONE, Target
from bot.adapters.discord.text import LIMIT
from bot.adapters.painter import Gone, Skipped, Surface, Undeliverable
from bot.adapters.text import split_message
from bot.commands import Reply

log = logging.getLogger(__name__)

EDIT_INTERVAL = 1.0  # seconds between edits of a streaming message (Discord allows ~5 edits per 5 s)
MAX_EDIT_INTERVAL = 8.0  # the slowest we back off to when edits are rate limited
TYPING_EVERY = 8.0  # a typing indicator lasts 10 s or until the bot posts


def describe(exc: BaseException) -> str:
    """One short line for the log."""
    if isinstance(exc, discord.HTTPException):
        return f"{exc.status} {exc.code} {exc.text or exc.__class__.__name__}"[:200]
    return f"{exc.__class__.__name__}: {exc}"[:200]


def refused_here(exc: BaseException) -> bool:
    """Discord will not take a post at this place (permissions, deleted webhook or channel)."""
    return isinstance(exc, (discord.Forbidden, discord.NotFound))


def failed(exc: discord.HTTPException, final: bool) -> Exception:
    """A refused draft is skipped (the next one carries newer text); a refused final text ends the reply."""
    return (Undeliverable if final else Skipped)(describe(exc))


class DiscordSurface(Surface):
    """A character's lines in messages under 2000 characters, posted through a persona target (falling back, where
    Discord refuses it, to the next way of posting), edited about once a second (less often after slow or
    rate-limited edits: discord.py waits out 429s inside the call); a message handle is (message, target)."""

    def __init__(self, target: Target, where: str, typing_in=None):
        self.target = target
        self.where = where
        self.typing_in = typing_in
        self.typing_every = TYPING_EVERY if typing_in is not None else 0.0
        self.interval = EDIT_INTERVAL

    @property
    def limit(self) -> int:
        return self.target.limit

    async def post(self, index: int, text: str, *, final: bool, buttons=()):
        while True:
            target = self.target
            try:
                return await target.post(target.render(index, text), view_of(buttons)), target
            except discord.HTTPException as exc:
                if target.fallback is None or not refused_here(exc):
                    raise failed(exc, final) from None
                log.info("cannot post here (%s); falling back", describe(exc))
                target.refused(exc)
                self.target = target.fallback

    async def edit(self, handle, index: int, text: str, *, final: bool, buttons=()):
        message, target = handle
        try:
            await message.edit(content=target.render(index, text), allowed_mentions=NONE,
                               view=view_of(buttons) or None)
        except discord.NotFound:  # deleted meanwhile (a moderator, a removed webhook)
            raise Gone("the message was deleted") from None
        except discord.HTTPException as exc:
            raise failed(exc, final) from None
        return handle

    async def delete(self, handle) -> None:
        try:
            await handle[0].delete()
        except discord.HTTPException as exc:
            raise Skipped(describe(exc)) from None

    async def typing(self) -> None:
        try:
            await self.typing_in.typing()
        except (discord.HTTPException, AttributeError) as exc:  # quietly nothing where the bot may not type
            raise Undeliverable(str(exc)) from None

    def pace(self, took: float) -> float:
        if took > self.interval:
            self.interval = min(MAX_EDIT_INTERVAL, self.interval * 2)
        else:
            self.interval = max(EDIT_INTERVAL, self.interval / 2)
        return self.interval


def as_file(reply: Reply) -> discord.File | None:
    if reply.file is None:
        return None
    name, data = reply.file
    return discord.File(io.BytesIO(data), filename=name)


async def reply_to_message(message: discord.Message, reply: Reply) -> None:
    """A command's answer to a typed command: a reply to it, split under the limit, the file with the last."""
    await send_to(message.channel, reply, answering=message)


async def send_to(where, reply: Reply, *, answering: discord.Message | None = None) -> None:
    """A command's answer in a channel (or a member's DMs), split under the limit, the file with the last piece;
    the first piece answers `answering` as a reply."""
    chunks = split_message(reply.text, LIMIT) or ([""] if reply.file else [])
    for index, chunk in enumerate(chunks):
        file = as_file(reply) if index == len(chunks) - 1 else None
        reference = answering.to_reference(fail_if_not_exists=False) if answering and index == 0 else None
        await where.send(chunk or None, file=file or discord.utils.MISSING, reference=reference,
                         allowed_mentions=NONE, mention_author=False)


class InteractionAnswer:
    """The answers to one slash command. Answered at once, the first answer is the interaction response; deferred,
    the first answer replaces the "thinking..." message and keeps the visibility chosen at the defer (Discord's
    rule); later answers are followups with their own visibility."""

    def __init__(self, interaction: discord.Interaction):
        self.interaction = interaction
        self.ephemeral = False  # the deferred response's visibility
        self.pending = False  # a deferred "thinking..." message still shows

    async def defer(self, ephemeral: bool) -> None:
        await self.interaction.response.defer(ephemeral=ephemeral, thinking=True)
        self.ephemeral, self.pending = ephemeral, True

    async def reply(self, reply: Reply) -> None:
        chunks = split_message(reply.text, LIMIT) or ([""] if reply.file else [])
        for index, chunk in enumerate(chunks):
            file = as_file(reply) if index == len(chunks) - 1 else None
            await self.send(chunk, ephemeral=reply.ephemeral, file=file)

    async def send(self, content: str, *, ephemeral: bool = True, file: discord.File | None = None) -> None:
        missing = discord.utils.MISSING
        if not self.interaction.response.is_done():
            await self.interaction.response.send_message(content or None, ephemeral=ephemeral,
                                                         file=file or missing, allowed_mentions=NONE)
            return
        private = self.ephemeral if self.pending else (ephemeral or self.ephemeral)
        await self.interaction.followup.send(content or missing, ephemeral=private, wait=True,
                                             allowed_mentions=NONE, file=file or missing)
        self.pending = False

    async def release(self) -> None:
        """Nothing to say as the bot (the character speaks instead): no "thinking..." message may stay."""
        if not self.interaction.response.is_done():
            await self.defer(ephemeral=True)  # a slash command must be acknowledged somehow
        if self.pending:
            self.pending = False
            try:
                await self.interaction.delete_original_response()
            except discord.HTTPException as exc:
                log.info("could not remove the deferred response (%s)", describe(exc))
