"""The last hour of the live numbers, sampled in-process from what /status reports (a ring; nothing stored)."""
from __future__ import annotations

import asyncio
import collections
import logging
import time

from bot.commands import admin

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 5.0
KEPT_SECONDS = 3600.0
SERIES = ("tps", "active", "queue", "batch", "gpu_mb")


class History:
    def __init__(self, commands, every: float = SAMPLE_SECONDS, kept: float = KEPT_SECONDS, clock=time.time):
        self.commands = commands
        self.every = every
        self.clock = clock
        self._samples: collections.deque[tuple[float, dict]] = collections.deque(maxlen=max(2, int(kept / every)))

    def sample(self) -> dict:
        numbers = admin.now(self.commands)
        self._samples.append((self.clock(), numbers))
        return numbers

    def latest(self) -> dict:
        return self._samples[-1][1] if self._samples else self.sample()

    def columns(self) -> dict[str, list]:
        """{"time": [unix seconds...], "tps": [...], ...}: the layout the chart library draws."""
        out: dict[str, list] = {"time": [round(t, 3) for t, _ in self._samples]}
        for name in SERIES:
            out[name] = [numbers.get(name) for _, numbers in self._samples]
        return out

    async def run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # a failing source must not stop the page; one line each time
                log.warning("dashboard: could not read the live numbers", exc_info=True)
            await asyncio.sleep(self.every)
