"""Terminal chat: lines from stdin (a tty or a pipe), replies streamed to stdout, the same commands.

It runs on the owner's own machine: every command is theirs, `/char import PATH` reads a local card file, and
files the bot sends (/export, a long /debug) are written to the current directory. End of input (Ctrl-D), Ctrl-C,
/quit and /exit leave; a reply still being written is cut off (nothing half-done is kept). Bytes that are not
valid text in the terminal's encoding are read as U+FFFD.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from pathlib import Path

from bot.adapters.painter import NOTICES
from bot.commands import (EMPTY, ENGINE_ERROR, MAX_ATTACHMENT_BYTES, NOT_FOUND, TERMINAL, TOO_BIG,
                          UNREADABLE, Answer, Attachment, AttachmentProblem, CharacterLine, Final, Goodbye, Incoming,
                          Partial, Reply, ReplyStream, attachment_argument)
from bot.i18n import t

log = logging.getLogger(__name__)


class LineReader:
    """Lines of a binary stream, read by a thread of its own: a blocking read must not keep the process from
    exiting on Ctrl-C (a read in the event loop's executor would, until Enter is pressed). A real file descriptor
    is read with os.read, below Python's buffered reader, whose lock a blocked daemon thread would still hold
    when the interpreter exits."""

    CHUNK = 1 << 16

    def __init__(self, stream, encoding: str):
        self._stream = stream
        self._encoding = encoding
        self._loop = asyncio.get_running_loop()
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        threading.Thread(target=self._read, name="terminal-input", daemon=True).start()

    def _read(self) -> None:
        try:
            for raw in self._raw_lines():
                self._put(raw.decode(self._encoding, "replace"))
        except (OSError, ValueError):  # stdin closed under us
            pass
        self._put(None)

    def _raw_lines(self):
        try:
            fd = self._stream.fileno()
        except (AttributeError, OSError, ValueError):  # not a real file (tests give a BytesIO)
            yield from iter(self._stream.readline, b"")
            return
        pending = b""
        while chunk := os.read(fd, self.CHUNK):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line + b"\n"
        if pending:
            yield pending

    def _put(self, line: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: the chat has ended
            self._loop.call_soon_threadsafe(self._lines.put_nowait, line)

    async def next(self) -> str | None:
        """The next line without its line end; None at the end of input."""
        line = await self._lines.get()
        return None if line is None else line.rstrip("\r\n")


class TerminalChat:
    def __init__(self, commands, *, channel: str = "terminal", user_name: str = "User", lang: str | None = None,
                 out=None, input=None, files_dir: str | Path = "."):
        self.commands = commands
        self.channel = channel
        self.user_name = user_name
        self.lang = lang  # the language hint, as a platform's language code would be
        self.out = out or sys.stdout
        self.input = input if input is not None else sys.stdin.buffer
        self.encoding = (getattr(sys.stdin, "encoding", None) if input is None else None) or "utf-8"
        self.files_dir = Path(files_dir)
        self.leaving = False  # /quit was said, or the chat is stopping
        self._handling = False
        self._streams: set[ReplyStream] = set()

    def incoming(self, text: str) -> Incoming:
        return Incoming(platform=TERMINAL, channel_id=self.channel, user_id="terminal", user_name=self.user_name,
                        text=text, is_admin=True, is_bot_admin=True,  # the machine's own user is the bot's owner
                        language_code=self.lang)

    async def run(self, character: str | None = None, stop: asyncio.Event | None = None) -> None:
        """Chat until the input ends, /quit, or `stop` (Ctrl-C, SIGTERM): then the reply in progress is cut off."""
        stop = stop or asyncio.Event()
        session = asyncio.create_task(self._session(character, LineReader(self.input, self.encoding)))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({session, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if session.done():
            session.result()
            return
        self.leaving = True
        if self._handling:  # a message is being answered: cut its reply off, let it say so
            for stream in list(self._streams):
                stream.cancel()
            await session
        else:  # waiting for a line
            session.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await session

    async def _session(self, character: str | None, lines: LineReader) -> None:
        self._handling = True
        try:
            await self.show(await self.commands.start_session(self.incoming(""), character))
        finally:
            self._handling = False
        while not self.leaving:
            line = await lines.next()
            if line is None:  # end of input: a script's input ended, or Ctrl-D
                return
            if line.strip():
                self._handling = True
                try:
                    await self.handle(line)
                finally:
                    self._handling = False

    async def handle(self, line: str) -> None:
        incoming = self.incoming(line)
        arrival = self.commands.arrive(incoming)
        try:
            if arrival.wants_attachment:
                await self._attach_local_file(incoming)
            answer = await self.commands.handle(incoming, arrival)
        finally:
            arrival.placed()
        await self.show(answer)

    async def _attach_local_file(self, incoming: Incoming) -> None:
        """`/char import PATH`: the card file at PATH on this machine."""
        argument = attachment_argument(incoming).strip().strip("'\"")
        if not argument:
            return  # the command layer asks for a file
        path = Path(argument).expanduser()
        try:
            if not path.is_file():
                incoming.attachment_problem = AttachmentProblem(NOT_FOUND, detail=str(path))
                return
            size = path.stat().st_size
            if size > MAX_ATTACHMENT_BYTES:
                incoming.attachment_problem = AttachmentProblem(TOO_BIG, size, MAX_ATTACHMENT_BYTES)
                return
            incoming.attachment = Attachment(path.name, await asyncio.to_thread(path.read_bytes))
        except OSError as exc:
            incoming.attachment_problem = AttachmentProblem(UNREADABLE, detail=exc.strerror or type(exc).__name__)

    async def show(self, answer: Answer) -> None:
        for output in answer.outputs:
            if isinstance(output, Reply):
                self._print(output.text)
                if output.file:
                    self._print(self._write_file(*output.file, answer.lang))
            elif isinstance(output, CharacterLine):
                self._print(f"{output.speaker}: {output.text}")
            elif isinstance(output, ReplyStream):
                await self._stream(output, answer.lang)
            elif isinstance(output, Goodbye):
                self._print(output.text)
                self.leaving = True

    async def _stream(self, stream: ReplyStream, lang: str) -> None:
        self._streams.add(stream)
        if self.leaving:  # stopping: a reply that started now is cut off at once
            stream.cancel()
        self.out.write(f"{stream.speaker}: ")
        self.out.flush()
        shown, final = "", None
        try:
            async for event in stream:
                if isinstance(event, Partial):
                    text = event.text.rstrip()  # trailing space may still become the turn end: shown once more follows
                    if text.startswith(shown):
                        self.out.write(text[len(shown):])
                        self.out.flush()
                        shown = text
                elif isinstance(event, Final):
                    final = event
        finally:
            self._streams.discard(stream)
        outcome = final.outcome if final else ENGINE_ERROR
        if outcome in NOTICES:
            self._print("\n" + t(NOTICES[outcome], lang))
            return
        if outcome == EMPTY:
            self.out.write(t("empty_reply", lang))
        self._print("")

    def _write_file(self, name: str, data: bytes, lang: str) -> str:
        """A file the bot sends, written beside the user (never over an existing one); says where."""
        base = Path(Path(name).name or "file")
        path = self.files_dir / base
        number = 1
        while path.exists():
            path = self.files_dir / f"{base.stem}-{number}{base.suffix}"
            number += 1
        try:
            path.write_bytes(data)
        except OSError as exc:
            return t("file_not_written", lang, name=base, size=len(data), problem=exc.strerror or type(exc).__name__)
        return t("file_written", lang, name=base, size=len(data), path=path.resolve())

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)
