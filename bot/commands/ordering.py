"""Arrival order per channel while messages are prepared concurrently.

Before a message reaches the command layer the adapter may wait on Telegram (an admin check, a file download) or
the database (the chat's language and reply mode). Two messages of one chat must still reach the core in the order
they arrived, because the core queues a channel's turns in the order it is called. Each message takes a ticket
when it arrives (synchronously, so tickets follow arrival) and calls the core only after the message before it
has taken its place in the core's queue. Messages of different channels never wait on each other.
"""
from __future__ import annotations

import asyncio

from bot.conversations import ChannelKey


class ArrivalOrder:
    def __init__(self) -> None:
        self._last: dict[ChannelKey, asyncio.Future] = {}

    def ticket(self, key: ChannelKey) -> "Ticket":
        """Call when the message arrives, before any await."""
        placed = asyncio.get_running_loop().create_future()
        ticket = Ticket(self, key, self._last.get(key), placed)
        self._last[key] = placed
        return ticket

    def _forget(self, key: ChannelKey, placed: asyncio.Future) -> None:
        if self._last.get(key) is placed:
            del self._last[key]


class Ticket:
    def __init__(self, order: ArrivalOrder, key: ChannelKey, before: asyncio.Future | None, placed: asyncio.Future):
        self._order = order
        self._key = key
        self._before = before
        self._placed = placed

    async def wait_turn(self) -> None:
        """Until the channel's previous message has been placed (or dropped)."""
        if self._before is not None and not self._before.done():
            await asyncio.wait([self._before])  # not `await future`: cancelling us must not cancel it

    def placed(self) -> None:
        """This message has its place in the core's queue (or will never get one): the next one may go."""
        if not self._placed.done():
            self._placed.set_result(None)
        self._order._forget(self._key, self._placed)
