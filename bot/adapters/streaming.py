"""What every platform's reply streaming shares: reading a `TurnStream` while a painter shows the newest text.

Platforms limit how often a message may be edited, so the painter runs at its own pace and only ever sees the
newest text (intermediate versions are skipped, never queued). The stream's end waits for an edit in flight to
land, so the final text, shown by the caller after the turn is committed, is never overwritten by a stale draft.
"""
from __future__ import annotations

import asyncio
import contextlib
from typing import Awaitable, Callable

from bot.conversations import TurnStream


class Follower:
    def __init__(self) -> None:
        self.latest = ""
        self._changed = asyncio.Event()
        self._finished = asyncio.Event()

    async def run(self, stream: TurnStream, painter: Callable[[], Awaitable[None]]) -> None:
        """Read `stream` to its end while `painter()` runs; return when both are done."""
        painting = asyncio.create_task(painter())
        try:
            async for text in stream:
                self.latest = text
                self._changed.set()
        finally:
            self._finished.set()
            self._changed.set()
            await asyncio.gather(painting, return_exceptions=True)

    async def changed(self) -> bool:
        """Wait for newer text; False once the stream has ended (the final text is the caller's to show)."""
        await self._changed.wait()
        self._changed.clear()
        return not self._finished.is_set()

    async def pause(self, seconds: float) -> None:
        """Wait `seconds`, or less when the stream ends first."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._finished.wait(), seconds)
