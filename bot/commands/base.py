"""Platform-neutral commands: the registry, what a handler is given and what it returns.

`Commands.handle` (dispatch.py) turns an `Incoming` into a `Context` and runs the command's handler, which returns
outputs: `Reply` (a command's answer), `CharacterLine` (a greeting, said by the character), a `TurnStream` (a reply
being generated; handed to the adapter as a `ReplyStream` of plain events) or `Goodbye`. Handlers are registered
declaratively with `@command(...)` in the modules beside this one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Union

from bot.commands.messages import CharacterLine, Goodbye, Reply, TERMINAL
from bot.commands.parsing import ParsedCommand, first_arg, parse_command, parse_number, split_args
from bot.conversations import ChannelKey, TurnStream
from bot.i18n import t

log = logging.getLogger(__name__)

__all__ = ["CharacterLine", "CommandSpec", "Context", "EVERYWHERE", "GROUP", "Goodbye", "Handler", "ParsedCommand",
           "PRIVATE", "REGISTRY", "Reply", "TERMINAL", "command", "first_arg", "parse_command", "parse_number",
           "place_of", "split_args", "with_notice"]

# Where a command is offered: a private chat (or DM), a group chat or server channel, the owner's terminal.
PRIVATE, GROUP = "private", "group"
EVERYWHERE = (PRIVATE, GROUP, TERMINAL)


def place_of(platform: str, is_group: bool) -> str:
    return TERMINAL if platform == TERMINAL else GROUP if is_group else PRIVATE


@dataclass
class Context:
    """What a handler knows about the message it answers."""
    key: ChannelKey
    user_id: str
    user_name: str
    is_admin: bool = True  # a chat admin (this channel's params...): DMs and the terminal are, groups ask the platform
    lang: str = "en"
    is_group: bool = False
    attachment: tuple[str, bytes] | None = None  # (filename, data) sent with the command, for /char import
    settings: dict = field(default_factory=dict)  # the channel's settings, read once for this message
    chat_title: str = ""  # the server/channel or chat title as the platform shows it ("" = unknown)
    surface: str = ""  # where the command was given when not the platform itself ("dashboard"), for the audit log
    reply_to_speaker: str = ""  # the character whose message this one answers (Incoming.reply_to_speaker)
    # A bot admin may change what every channel shares (the character library) and is held only to the global
    # quotas: the terminal's local user and the ids/roles the owner configured (telegram.admin_ids,
    # discord.admin_ids, discord.admin_role_ids). A bot admin is a chat admin everywhere.
    is_bot_admin: bool = False
    message_id: str = ""  # the platform's id of the message (a line fed with it can be edited or deleted there)

    @property
    def user_key(self) -> str:
        """Who this is across the bot's channels: owner of saves and own cards, starter of channels (quotas)."""
        return f"{self.key.platform}:{self.user_id}"

    @property
    def place(self) -> str:
        return place_of(self.key.platform, self.is_group)


Output = Union[Reply, CharacterLine, TurnStream, Goodbye]


def with_notice(stream: TurnStream, lang: str) -> list[Output]:
    """A reply being generated, after the notice its line needs (e.g. it was shortened)."""
    return ([Reply(t(stream.notice, lang, **stream.notice_args))] if stream.notice else []) + [stream]
Handler = Callable[["Commands", Context, str], Awaitable[list[Output]]]


@dataclass
class CommandSpec:
    name: str
    handler: Handler
    help_key: str
    admin: bool = False  # needs an admin in groups/servers
    usage: str = ""
    hidden: bool = False
    aliases: tuple[str, ...] = ()
    places: tuple[str, ...] = EVERYWHERE  # offered (in /help, menus, slash commands) and answered only there


REGISTRY: dict[str, CommandSpec] = {}


def offered_commands(place: str | None = None) -> list[CommandSpec]:
    """Each command once, in registration order, offered in `place` (all when None): /help, platform menus."""
    seen, out = set(), []
    for spec in REGISTRY.values():
        if spec.name not in seen and not spec.hidden and (place is None or place in spec.places):
            seen.add(spec.name)
            out.append(spec)
    return out


def command(name: str, *, help_key: str | None = None, admin: bool = False, usage: str = "", hidden: bool = False,
            aliases: tuple[str, ...] = (), places: tuple[str, ...] = EVERYWHERE):
    def register(handler: Handler) -> Handler:
        spec = CommandSpec(name, handler, help_key or f"help_{name}", admin, usage, hidden, aliases, places)
        for n in (name, *aliases):
            REGISTRY[n] = spec
        return handler
    return register
