"""Terminal chat: lines from stdin (a tty or a pipe), replies streamed to stdout, the same commands."""
from __future__ import annotations

import asyncio
import logging
import sys

from bot.commands import CharacterLine, Context, Reply
from bot.conversations import ChannelKey, TurnStream
from bot.engine.scheduler import EngineError, GenerationCancelled
from bot.i18n import t

log = logging.getLogger(__name__)


class TerminalChat:
    def __init__(self, commands, *, channel: str = "terminal", user_name: str = "User", lang: str = "en",
                 out=None):
        self.commands = commands
        self.key = ChannelKey("terminal", channel)
        self.user_name = user_name
        self.lang = lang
        self.out = out or sys.stdout

    async def context(self) -> Context:
        lang = await self.commands.lang_for(self.key, None, self.lang)
        return Context(key=self.key, user_id="terminal", user_name=self.user_name, is_admin=True, lang=lang,
                       flood_control=False, is_bot_admin=True)  # the machine's own user is the bot's owner

    async def run(self, character: str | None = None) -> None:
        await self._open(character)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:  # EOF: a script's input ended
                return
            line = line.rstrip("\r\n")
            if line.strip():
                await self.handle(line)

    async def _open(self, character: str | None) -> None:
        """Start with --character when the channel uses another one, else greet a new channel."""
        view = await self.commands.conversations.view(self.key)
        if character and (view.character is None or view.character.name.casefold() != character.casefold()):
            await self.handle(f"/char use {character}")
        elif view.settings.get("greeting") is None:
            await self.handle("/start")

    async def handle(self, line: str) -> None:
        ctx = await self.context()
        for output in await self.commands.handle(ctx, line):
            await self.render(output, ctx.lang)

    async def render(self, output, lang: str) -> None:
        if isinstance(output, Reply):
            self._print(output.text)
            if output.file:
                name, data = output.file
                self._print(f"[file {name}, {len(data)} bytes]\n{data.decode('utf-8', 'replace')}")
        elif isinstance(output, CharacterLine):
            self._print(f"{output.speaker}: {output.text}")
        elif isinstance(output, TurnStream):
            await self._stream(output, lang)

    async def _stream(self, stream: TurnStream, lang: str) -> None:
        self.out.write(f"{stream.speaker}: ")
        self.out.flush()
        shown = ""
        async for text in stream:
            text = text.rstrip()  # trailing space may still become the turn end: print it when more follows
            if text.startswith(shown):
                self.out.write(text[len(shown):])
                self.out.flush()
                shown = text
        try:
            result = await stream.result()
        except GenerationCancelled:
            self._print("\n" + t("reply_cancelled", lang))
            return
        except EngineError:
            self._print("\n" + t("engine_error", lang))
            return
        if not result.text:
            self.out.write(t("empty_reply", lang))
        self._print("")

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)
