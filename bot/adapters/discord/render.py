"""Showing the command layer's outputs on Discord: a character's lines (streamed replies and greetings) through
a persona target, and command answers as replies to a message or as interaction responses."""
from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time

import discord

from bot.adapters.discord.personas import NONE, Target
from bot.adapters.streaming import Follower
from bot.adapters.discord.text import split_message, t
from bot.commands import Reply
from bot.conversations import TurnStream
from bot.engine.scheduler import EngineError, GenerationCancelled

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


class PersonaWriter:
    """A character's lines in one or more messages, each under 2000 characters.

    While a reply streams it posts as soon as there is text, then edits at most every EDIT_INTERVAL seconds per
    message (longer after slow or rate-limited edits); text past the limit continues in a new message. The final
    edit comes only after the turn is committed."""

    def __init__(self, target: Target, lang: str):
        self.target = target
        self.lang = lang
        self.posted: list[tuple[object, Target, str]] = []  # (message, where it went, chunk shown)
        self.interval = EDIT_INTERVAL
        self.follower = Follower()

    async def say(self, text: str) -> None:
        """A line that is already complete (a greeting)."""
        await self._show(text, final=True)

    async def stream(self, stream: TurnStream, typing_in=None) -> None:
        typing = asyncio.create_task(keep_typing(typing_in)) if typing_in is not None else None
        try:
            await self.follower.run(stream, self._flush_while_streaming)
            final = await self._final_text(stream)
        finally:
            if typing:
                typing.cancel()
        await self._show(final, final=True)

    async def _final_text(self, stream: TurnStream) -> str:
        try:
            result = await stream.result()
        except GenerationCancelled:
            return t("reply_cancelled", self.lang)
        except EngineError:
            return t("engine_error", self.lang)
        return result.text

    async def _flush_while_streaming(self) -> None:
        while await self.follower.changed():
            started = time.monotonic()
            try:
                await self._show(self.follower.latest, final=False)
            except discord.HTTPException as exc:
                log.info("streaming edit failed (%s); trying again later", describe(exc))
            self._adapt_interval(time.monotonic() - started)
            await self.follower.pause(self.interval)

    def _adapt_interval(self, elapsed: float) -> None:
        """discord.py waits out 429s inside the call: a slow edit means Discord wants fewer of them."""
        if elapsed > self.interval:
            self.interval = min(MAX_EDIT_INTERVAL, self.interval * 2)
        else:
            self.interval = max(EDIT_INTERVAL, self.interval / 2)

    async def _show(self, text: str, *, final: bool) -> None:
        chunks = split_message(text, self.target.limit)
        if final and not chunks:
            chunks = [t("empty_reply", self.lang)]  # Discord refuses empty messages
        for index, chunk in enumerate(chunks):
            if index < len(self.posted):
                await self._edit(index, chunk, final)
            else:
                await self._post(index, chunk)
        if final:
            await self._drop_extra(len(chunks))

    async def _post(self, index: int, chunk: str) -> None:
        while True:
            target = self.target
            try:
                message = await target.post(target.render(index, chunk))
                break
            except discord.HTTPException as exc:
                if target.fallback is None or not refused_here(exc):
                    raise
                log.info("cannot post here (%s); falling back", describe(exc))
                target.refused(exc)
                self.target = target.fallback
        self.posted.append((message, target, chunk))

    async def _edit(self, index: int, chunk: str, final: bool) -> None:
        message, target, shown = self.posted[index]
        if shown == chunk:
            return
        try:
            await message.edit(content=target.render(index, chunk), allowed_mentions=NONE)
        except discord.NotFound:
            if not final:
                raise
            # deleted meanwhile (a moderator, a removed webhook): the final text still has to appear
            message = await self.target.post(self.target.render(index, chunk))
            target = self.target
        self.posted[index] = (message, target, chunk)

    async def _drop_extra(self, keep: int) -> None:
        """A final text shorter than what streamed (e.g. cancelled): remove the messages beyond it."""
        for message, _, _ in self.posted[keep:]:
            with contextlib.suppress(discord.HTTPException):
                await message.delete()
        del self.posted[keep:]


async def keep_typing(channel) -> None:
    """The typing indicator until cancelled; quietly nothing where the bot may not type."""
    while True:
        try:
            await channel.typing()
        except (discord.HTTPException, AttributeError):
            return
        await asyncio.sleep(TYPING_EVERY)


def as_file(reply: Reply) -> discord.File | None:
    if reply.file is None:
        return None
    name, data = reply.file
    return discord.File(io.BytesIO(data), filename=name)


async def reply_to_message(message: discord.Message, reply: Reply) -> None:
    """A command's answer to a typed command: a reply to it, split under the limit, the file with the last."""
    chunks = split_message(reply.text) or ([""] if reply.file else [])
    for index, chunk in enumerate(chunks):
        file = as_file(reply) if index == len(chunks) - 1 else None
        reference = message.to_reference(fail_if_not_exists=False) if index == 0 else None
        await message.channel.send(chunk or None, file=file or discord.utils.MISSING, reference=reference,
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
        chunks = split_message(reply.text) or ([""] if reply.file else [])
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
