"""Flood control: token buckets per user and per channel, and quiet refusals.

A refused sender hears about it once per cooldown; the rest of a flood is dropped silently, so a spammer cannot
make the bot spam the channel back.
"""
from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float
    last_notice: float = -1e9


class RateLimiter:
    def __init__(self, per_minute: float, burst: int | None = None, notice_every: float = 30.0,
                 clock=time.monotonic, max_keys: int = 100_000):
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(3, int(per_minute // 6)))
        self.notice_every = notice_every
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[object, _Bucket] = {}

    def allow(self, key) -> bool:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_idle(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True
        return False

    def should_notice(self, key) -> bool:
        """True at most once per `notice_every` seconds per key: whether to tell the sender they were refused."""
        now = self.clock()
        bucket = self._buckets.setdefault(key, _Bucket(0.0, now))
        if now - bucket.last_notice >= self.notice_every:
            bucket.last_notice = now
            return True
        return False

    def _forget_idle(self, now: float) -> None:
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]


class FloodControl:
    """Flood control for messages: a per-user and a per-channel bucket; a refused sender is told once per cooldown."""

    def __init__(self, user_per_minute: float, channel_per_minute: float):
        self.users = RateLimiter(user_per_minute)
        self.channels = RateLimiter(channel_per_minute)

    def admit(self, user: tuple[str, str], channel) -> tuple[bool, bool]:
        """(let in, tell the sender they were refused) for one message of `user` (platform, id) in `channel`."""
        if self.users.allow(user) and self.channels.allow(channel):
            return True, False
        return False, self.users.should_notice(user)
