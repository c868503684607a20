"""Showing a reply while the model writes it.

The first words are sent as soon as there are any; the message is then edited as the text grows, at the pace the
`Pacer` sets (about once a second, slower under load or after a 429). A reply longer than one message goes on in
new messages. The final edit is made only after the turn is committed to the database, so what the chat shows
as final is what the conversation holds. A typing action repeats while the model writes.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from bot.adapters.streaming import Follower
from bot.conversations import TurnStream
from bot.engine.scheduler import GenerationCancelled
from bot.i18n import t

from bot.adapters.telegram.incoming import Target
from bot.adapters.telegram.outgoing import DeliveryDeferred, DeliveryFailed, MessageGone, Sender
from bot.adapters.telegram.text import split_message

log = logging.getLogger(__name__)

TYPING_EVERY = 4.0  # Telegram shows "typing" for 5 s


@dataclass
class Shown:
    message_id: int
    text: str


class TurnRenderer:
    def __init__(self, sender: Sender, target: Target, lang: str):
        self.sender = sender
        self.target = target
        self.lang = lang
        self.shown: list[Shown] = []  # one per message the reply spans
        self.undeliverable = False  # Telegram refused: stop writing to this chat
        self.follower = Follower()

    async def render(self, stream: TurnStream) -> None:
        pacer = self.sender.pacer
        pacer.streaming += 1
        typing = asyncio.create_task(self._keep_typing())
        try:
            await self.follower.run(stream, self._paint_while_generating)
            final = await self._final_text(stream)
        finally:
            pacer.streaming -= 1
            typing.cancel()
        await self._show(final, final=True)

    async def _final_text(self, stream: TurnStream) -> str:
        """The committed reply, or what was shown so far plus why it stopped."""
        try:
            result = await stream.result()
        except GenerationCancelled:
            return self._with_notice("reply_cancelled")
        except Exception:  # EngineError, or whatever else failed the turn (the core logged it)
            return self._with_notice("engine_error")
        return result.text if result.text.strip() else t("empty_reply", self.lang)

    def _with_notice(self, key: str) -> str:
        partial = self.follower.latest.strip()
        return f"{partial}\n\n{t(key, self.lang)}" if partial else t(key, self.lang)

    async def _paint_while_generating(self) -> None:
        while await self.follower.changed():
            await self._show(self.follower.latest, final=False)
            if self.shown:  # the first words go out at once; later edits wait for the pace
                await self.follower.pause(self.sender.pacer.interval())

    async def _keep_typing(self) -> None:
        while not self.undeliverable:
            try:
                await self.sender.typing(self.target)
            except DeliveryDeferred:
                pass
            except DeliveryFailed:
                return
            await asyncio.sleep(TYPING_EVERY)
            # Every call into a group counts against its ~20 per minute: once the words are there, save them.
            if self.target.is_group and self.shown:
                return

    async def _show(self, text: str, *, final: bool) -> None:
        """Make the chat show `text`: edit the messages that changed, send the pieces that are new."""
        if self.undeliverable:
            return
        pieces = split_message(text, self.sender.message_limit)
        try:
            for index, piece in enumerate(pieces):
                await self._show_piece(index, piece, final)
            if final:
                for extra in self.shown[len(pieces):]:  # the final text came out shorter than a draft
                    await self.sender.delete(self.target, extra.message_id)
                del self.shown[len(pieces):]
        except DeliveryDeferred:
            pass  # a later edit carries newer text
        except DeliveryFailed as exc:
            self.undeliverable = True
            log.warning("telegram chat %s: reply not delivered: %s (the conversation is kept)",
                        self.target.chat_id, exc)

    async def _show_piece(self, index: int, piece: str, final: bool) -> None:
        if index < len(self.shown):
            if self.shown[index].text == piece:
                return
            try:
                await self.sender.edit_text(self.target, self.shown[index].message_id, piece, patient=final)
                self.shown[index].text = piece
                return
            except MessageGone:  # someone deleted the draft: send the piece again
                del self.shown[index:]
        message_id = await self.sender.send_text(self.target, piece, quote=index == 0)
        self.shown.append(Shown(message_id, piece))
