"""Showing a character's reply while the model writes it: one painter for every chat platform.

The painter posts the first words as soon as there are any, then edits the message as the text grows, at the
pace the platform allows (intermediate versions are skipped, never queued); a reply longer than one message goes
on in new messages, split on paragraph or sentence boundaries (`split_message`). The final text is shown only
once the stream's last event says the turn is committed; a reply that was cancelled or failed keeps what was
written and says why it stopped. What differs between platforms is a small `Surface`: post, edit, delete, the
message limit, the pace, the typing indicator.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from bot.adapters.text import split_message
from bot.commands import CANCELLED, DONE, EMPTY, ENGINE_ERROR, KEPT, STOPPED, Final, Partial, Queued, ReplyStream
from bot.i18n import t

log = logging.getLogger(__name__)

NOTICES = {CANCELLED: "reply_cancelled", ENGINE_ERROR: "engine_error", STOPPED: "reply_stopped"}  # why it stopped
QUEUE_EVERY = 1.0  # seconds at least between updates of the "queued, N ahead" placeholder


class Skipped(Exception):
    """This draft could not be shown now (rate limited, a network error); a later one carries newer text."""


class Undeliverable(Exception):
    """The platform refuses for good (the bot was removed, the channel is gone): stop writing this reply."""


class Gone(Undeliverable):
    """The message to edit no longer exists (someone deleted it): post the piece again."""


class Surface:
    """Where one reply is shown: the per-platform part of painting."""

    where = "chat"  # for the log: which chat a failed reply was meant for
    typing_every = 0.0  # seconds between typing indicators while the model writes; 0 = none
    typing_until_shown = False  # stop the indicator once words show (where every request counts against a quota)

    @property
    def limit(self) -> int:
        """Characters per message (may change when the surface falls back to another way of posting)."""
        raise NotImplementedError

    async def post(self, index: int, text: str, *, final: bool, buttons=()):
        """A new message holding piece `index` of the reply (0 answers the user's message); returns a handle.
        `buttons` (bot.commands.Button): one row of buttons under it (only the reply's last message has any)."""
        raise NotImplementedError

    async def edit(self, message, index: int, text: str, *, final: bool, buttons=()):
        """Change a posted message to `text` with `buttons` under it; returns its (possibly new) handle."""
        raise NotImplementedError

    async def delete(self, message) -> None:
        raise NotImplementedError

    async def typing(self) -> None:
        """Show the typing indicator once (Undeliverable: stop trying)."""

    def pace(self, took: float) -> float:
        """Seconds to wait before the next edit, given how long the last one took."""
        return 1.0

    def streaming(self) -> contextlib.AbstractContextManager:
        """Held while a reply streams (platforms that pace by how many replies stream at once count it)."""
        return contextlib.nullcontext()


class Follower:
    """Reads a reply stream while the painter runs at its own pace and only ever sees the newest text. The
    stream's end waits for an edit in flight to land, so the final text is never overwritten by a stale draft."""

    def __init__(self) -> None:
        self.latest = ""
        self.ahead: int | None = None  # requests before this one in the GPU's queue, while it waits
        self._changed = asyncio.Event()
        self._finished = asyncio.Event()

    async def run(self, stream: ReplyStream, painter) -> Final:
        """Read `stream` to its end while `painter()` runs; returns its Final event once both are done."""
        final = None
        painting = asyncio.create_task(painter())
        try:
            async for event in stream:
                if isinstance(event, Partial):
                    self.latest = event.text
                    self._changed.set()
                elif isinstance(event, Queued):
                    self.ahead = event.ahead
                    self._changed.set()
                elif isinstance(event, Final):
                    final = event
        finally:
            self._finished.set()
            self._changed.set()
            await asyncio.gather(painting, return_exceptions=True)
        return final or Final(self.latest, ENGINE_ERROR)  # a stream that broke off is a failed reply

    async def changed(self) -> bool:
        """Wait for newer text; False once the stream has ended (the final text is the caller's to show)."""
        await self._changed.wait()
        self._changed.clear()
        return not self._finished.is_set()

    async def pause(self, seconds: float) -> None:
        """Wait `seconds`, or less when the stream ends first."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._finished.wait(), seconds)


def final_text(final: Final, lang: str) -> str:
    """What a reply shows at its end: the committed text, or what was written so far and why it stopped."""
    if final.outcome == DONE:
        return final.text
    if final.outcome == EMPTY:
        return t("empty_reply", lang)
    notice = t(NOTICES[final.outcome], lang)
    partial = final.text.strip()
    return f"{partial}\n\n{notice}" if partial else notice


@dataclass
class Shown:
    message: object  # the surface's handle
    text: str
    buttons: tuple = ()


class Painter:
    def __init__(self, surface: Surface, lang: str, into=None):
        """`into`: the handle of a message already showing this reply (a swipe repaints the pressed one)."""
        self.surface = surface
        self.lang = lang
        self.shown: list[Shown] = [Shown(into, None)] if into is not None else []  # one per message of the reply
        self.buttons: tuple = ()  # under the last message while the reply is written
        self.undeliverable = False  # the platform refused: stop writing this reply
        self.follower = Follower()

    async def say(self, text: str) -> None:
        """A line that is already complete (a greeting)."""
        await self._show(text, final=True)

    def reuse(self, handles: list) -> None:
        """Paint into messages posted before (a reply regenerated after its line was edited): each piece edits
        one of them (their text is not known, so every piece is written), extra ones are deleted at the end."""
        if handles:
            self.shown = [Shown(handle, "") for handle in handles]

    def message_handles(self) -> list:
        """The surface's handles of the messages that show the reply now."""
        return [shown.message for shown in self.shown]

    async def paint(self, stream: ReplyStream) -> Final:
        """Stream a reply and show its final text, with its buttons; returns the stream's Final event."""
        self.buttons = tuple(stream.buttons)
        with self.surface.streaming():
            typing = asyncio.create_task(self._keep_typing()) if self.surface.typing_every else None
            try:
                final = await self.follower.run(stream, self._paint_while_generating)
            finally:
                if typing is not None:
                    typing.cancel()
        if final.outcome == KEPT:  # a swipe that changed nothing: the message stays as it is
            return final
        self.buttons = tuple(final.buttons)
        await self._show(final_text(final, self.lang), final=True)
        return final

    async def _paint_while_generating(self) -> None:
        while await self.follower.changed():
            started = time.monotonic()
            follower = self.follower
            if follower.latest or follower.ahead is None:
                await self._show(follower.latest, final=False)
                pace = self.surface.pace(time.monotonic() - started)
            else:  # no words yet: where it stands in the queue
                await self._show(t("reply_queued", self.lang, ahead=follower.ahead), final=False)
                pace = max(QUEUE_EVERY, self.surface.pace(time.monotonic() - started))
            if self.shown:  # the first words go out at once; later edits wait for the pace
                await follower.pause(pace)

    async def _keep_typing(self) -> None:
        while not self.undeliverable:
            try:
                await self.surface.typing()
            except Skipped:
                pass
            except Undeliverable:
                return
            await asyncio.sleep(self.surface.typing_every)
            if self.surface.typing_until_shown and self.shown:
                return

    async def _show(self, text: str, *, final: bool) -> None:
        """Make the platform show `text`: edit the messages that changed, post the pieces that are new."""
        if self.undeliverable:
            return
        pieces = split_message(text, self.surface.limit)
        if final and not pieces:
            pieces = [t("empty_reply", self.lang)]  # platforms refuse empty messages
        try:
            for index, piece in enumerate(pieces):
                await self._show_piece(index, piece, final, self.buttons if index == len(pieces) - 1 else ())
            if final:
                await self._drop_extra(len(pieces))
        except Skipped as exc:
            log.debug("%s: a streaming update was skipped (%s); a later one follows", self.surface.where, exc)
        except Undeliverable as exc:
            self.undeliverable = True
            log.warning("%s: reply not delivered: %s (the conversation is kept)", self.surface.where, exc)

    async def _show_piece(self, index: int, piece: str, final: bool, buttons: tuple) -> None:
        if index < len(self.shown):
            shown = self.shown[index]
            if shown.text == piece and shown.buttons == buttons:
                return
            try:
                shown.message = await self.surface.edit(shown.message, index, piece, final=final, buttons=buttons)
                shown.text, shown.buttons = piece, buttons
                return
            except Gone:  # someone deleted the draft: post the piece again
                del self.shown[index:]
        self.shown.append(Shown(await self.surface.post(index, piece, final=final, buttons=buttons), piece,
                                buttons))

    async def _drop_extra(self, keep: int) -> None:
        """A final text shorter than what streamed: remove the messages beyond it."""
        for extra in self.shown[keep:]:
            try:
                await self.surface.delete(extra.message)
            except (Skipped, Undeliverable) as exc:
                log.info("%s: a leftover draft was not deleted (%s)", self.surface.where, exc)
        del self.shown[keep:]
