"""What happens to a message between its arrival and its command: its place in the channel's order, flood
control, and which platform facts (admin status, the attached file) the adapter must fetch. The same for every
platform.

Order: before a message reaches its command the adapter may wait on the platform (an admin check, a download) and
`Commands.handle` reads the channel's settings, so two messages of one channel could overtake each other. Each
message takes its place synchronously when it arrives (`Commands.arrive`, before any await) and is handed to the
conversation only after the message before it has taken its place in the conversation's queue. Messages of
different channels never wait on each other.

Flood control counts a message once: at arrival when it is addressed to the bot (so a flood is refused before any
admin check or download), else once the channel's reply mode says the bot answers it (so chatter the bot ignores
never counts against anyone).
"""
from __future__ import annotations

import asyncio

from bot.commands.base import REGISTRY
from bot.commands.messages import Incoming
from bot.commands.parsing import ParsedCommand, first_arg
from bot.conversations import ChannelKey


def imports_card(command: ParsedCommand | None) -> bool:
    """`/char import ...`, read as the command itself reads it."""
    return command is not None and command.name == "char" and first_arg(command.args)[0].lower() == "import"


def names_a_command(incoming: Incoming) -> bool:
    """The text is one of this bot's commands (addressed to the bot, where a platform has no other sign)."""
    command = incoming.command
    return command is not None and command.name in REGISTRY


def needs_admin(incoming: Incoming) -> bool:
    """Whether the answer can depend on the sender being an admin: any command of this bot, and a press of a
    button under someone else's reply in a group. Plain chat never, so it never costs the platform an admin
    lookup."""
    button = incoming.button
    if button is not None:
        return incoming.is_group and button.owner not in ("", incoming.user_id)
    return names_a_command(incoming)


def wants_attachment(incoming: Incoming, user_imports: bool = False) -> bool:
    """Whether to fetch the message's file: `/char import` from someone who may import (a bot admin; anyone where
    the owner allows cards of one's own: `characters.user_imports`), so a stranger's upload is never downloaded."""
    return imports_card(incoming.command) and (incoming.is_bot_admin or user_imports)


def attachment_argument(incoming: Incoming) -> str:
    """What follows `/char import` (the terminal reads it as the path of a local file)."""
    return first_arg(incoming.command.args)[1] if imports_card(incoming.command) else ""


class Arrival:
    """One message's place in its channel's order and flood control's verdict on it.

    `admitted`: True (counted and let in), False (refused: a flood), None (not counted yet: not addressed)."""

    def __init__(self, incoming: Incoming, key: ChannelKey, before: asyncio.Future | None, placed: asyncio.Future,
                 order: "ArrivalOrder", admitted: bool | None, notice: bool, user_imports: bool = False):
        self.incoming = incoming
        self.user_imports = user_imports
        self.admitted = admitted
        self.notice = notice  # a refused sender is told (once per cooldown)
        self._key = key
        self._before = before
        self._placed = placed
        self._order = order

    @property
    def needs_admin(self) -> bool:
        """Ask the platform whether the sender is an admin (only for a message let in)."""
        return self.admitted is not False and needs_admin(self.incoming)

    @property
    def wants_attachment(self) -> bool:
        """Fetch the attached file."""
        return self.admitted is not False and wants_attachment(self.incoming, self.user_imports)

    async def wait_turn(self) -> None:
        """Until the channel's previous message has been placed (or dropped)."""
        if self._before is not None and not self._before.done():
            await asyncio.wait([self._before])  # not `await future`: cancelling us must not cancel it

    def placed(self) -> None:
        """This message has its place in the conversation's queue (or will never get one): the next one may go."""
        if not self._placed.done():
            self._placed.set_result(None)
        self._order.forget(self._key, self._placed)


class ArrivalOrder:
    def __init__(self) -> None:
        self._last: dict[ChannelKey, asyncio.Future] = {}

    def take(self, key: ChannelKey) -> tuple[asyncio.Future | None, asyncio.Future]:
        """(the previous message's placement, this one's); call when the message arrives, before any await."""
        placed = asyncio.get_running_loop().create_future()
        before = self._last.get(key)
        self._last[key] = placed
        return before, placed

    def forget(self, key: ChannelKey, placed: asyncio.Future) -> None:
        if self._last.get(key) is placed:
            del self._last[key]
