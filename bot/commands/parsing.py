"""Reading a command out of a message's text: `/name[@bot] args`, and its arguments."""
from __future__ import annotations

import shlex
from dataclasses import dataclass


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
