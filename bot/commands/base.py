"""Platform-neutral commands: parsing, the registry, and what a handler returns.

Adapters turn a platform message into a `Context` and text, call `Commands.handle`, and render the outputs:
`Reply` (a command's answer), `CharacterLine` (a greeting, said by the character) and `TurnStream` (a reply being
generated, to stream). Handlers are registered declaratively with `@command(...)` in the modules beside this one.
"""
from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Union

from bot.conversations import ChannelKey, TurnStream
from bot.i18n import t

log = logging.getLogger(__name__)


@dataclass
class Context:
    key: ChannelKey
    user_id: str
    user_name: str
    is_admin: bool = True  # a chat admin (this channel's params...): DMs and the terminal are, groups ask the platform
    lang: str = "en"
    is_group: bool = False
    attachment: tuple[str, bytes] | None = None  # (filename, data) sent with the command, for /char import
    flood_control: bool = True  # off for the local terminal: its owner is not a spammer
    chat_title: str = ""  # the server/channel or chat title as the platform shows it ("" = unknown)
    surface: str = ""  # where the command was given when not the platform itself ("dashboard"), for the audit log
    # A bot admin may change what every channel shares (the character library) and is held only to the global
    # quotas: the terminal's local user and the ids/roles the owner configured (telegram.admin_ids,
    # discord.admin_ids, discord.admin_role_ids). A bot admin is a chat admin everywhere.
    is_bot_admin: bool = False

    @property
    def user_key(self) -> str:
        """Who this is across the bot's channels: owner of saves and own cards, starter of channels (quotas)."""
        return f"{self.key.platform}:{self.user_id}"


@dataclass
class Reply:
    text: str
    ephemeral: bool = False  # only the caller needs it (Discord)
    file: tuple[str, bytes] | None = None  # (filename, data) to attach
    private: bool = False  # for the caller's eyes only, even in a group: ephemeral on Discord, a DM on Telegram


@dataclass
class CharacterLine:
    """Something the character says that is not generated now (its greeting)."""
    speaker: str
    text: str
    avatar: bytes | None = None


Output = Union[Reply, CharacterLine, TurnStream]


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


REGISTRY: dict[str, CommandSpec] = {}


def command(name: str, *, help_key: str | None = None, admin: bool = False, usage: str = "", hidden: bool = False,
            aliases: tuple[str, ...] = ()):
    def register(handler: Handler) -> Handler:
        spec = CommandSpec(name, handler, help_key or f"help_{name}", admin, usage, hidden, aliases)
        for n in (name, *aliases):
            REGISTRY[n] = spec
        return handler
    return register


@dataclass
class ParsedCommand:
    name: str
    args: str
    target: str | None = None  # the @botname in /cmd@botname


def parse_command(text: str) -> ParsedCommand | None:
    """`/name[@bot] args...` -> ParsedCommand; plain text -> None."""
    stripped = text.lstrip()
    if not stripped.startswith("/") or len(stripped) < 2 or stripped[1].isspace():
        return None
    head, _, rest = stripped[1:].partition(" ")
    head, _, rest2 = head.partition("\n")
    rest = (rest2 + " " + rest).strip() if rest2 else rest.strip()
    name, _, target = head.partition("@")
    return ParsedCommand(name.lower(), rest, target or None)


def split_args(args: str) -> list[str]:
    """Whitespace-separated, with quotes for values that contain spaces; unbalanced quotes are kept literally."""
    try:
        return shlex.split(args)
    except ValueError:
        return args.split()


def first_arg(args: str) -> tuple[str, str]:
    """The first argument (quotes allowed: /as "Old Man" hello) and the rest of the text as written."""
    args = args.strip()
    if args[:1] in ('"', "'"):
        end = args.find(args[0], 1)
        if end > 0:
            return args[1:end], args[end + 1 :].strip()
    name, _, rest = args.partition(" ")
    return name, rest.strip()


NUMBER_DIGITS = 9  # the longest number a command takes


def parse_number(word: str) -> int | None:
    """A whole number as commands take them: 1 to NUMBER_DIGITS ASCII digits. Anything else ("²", "①", "-1",
    a 5,000-digit number) is None, for the command to refuse."""
    if 0 < len(word) <= NUMBER_DIGITS and word.isascii() and word.isdigit():
        return int(word)
    return None
