"""Where a Telegram reply is painted: plain-text messages sent and edited through the `Sender`, at the `Pacer`'s
pace, with a typing action every few seconds (in groups only until the first words show: every call into a group
counts against its ~20 per minute)."""
from __future__ import annotations

import contextlib

from bot.adapters.painter import Surface
from bot.adapters.telegram.incoming import Target
from bot.adapters.telegram.outgoing import Sender
from bot.adapters.telegram.text import speaker_prefix

TYPING_EVERY = 4.0  # Telegram shows "typing" for 5 s


class TelegramSurface(Surface):
    typing_every = TYPING_EVERY

    def __init__(self, sender: Sender, target: Target, speaker: str = ""):
        self.sender = sender
        self.target = target
        # In a scene every piece starts with the speaker's name, so a reply to any of them tells who spoke it.
        self.prefix = speaker_prefix(speaker) if speaker else ""
        self.where = f"telegram chat {target.chat_id}"
        self.typing_until_shown = target.is_group

    @property
    def limit(self) -> int:
        return self.sender.message_limit - len(self.prefix)

    async def post(self, index: int, text: str, *, final: bool, buttons=()) -> int:
        return await self.sender.send_text(self.target, self.prefix + text, quote=index == 0, buttons=buttons)

    async def edit(self, message: int, index: int, text: str, *, final: bool, buttons=()) -> int:
        await self.sender.edit_text(self.target, message, self.prefix + text, patient=final, buttons=buttons)
        return message

    async def delete(self, message: int) -> None:
        await self.sender.delete(self.target, message)

    async def typing(self) -> None:
        await self.sender.typing(self.target)

    def pace(self, took: float) -> float:
        return self.sender.pacer.interval()

    @contextlib.contextmanager
    def streaming(self):
        self.sender.pacer.streaming += 1
        try:
            yield
        finally:
            self.sender.pacer.streaming -= 1
