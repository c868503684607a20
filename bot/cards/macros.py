"""Card macros: {{char}} <BOT> {{user}} <USER> {{original}} {{random:..}} {{pick:..}} {{roll:dN}} {{// ..}}.

One left-to-right pass with braces paired up front, so the work is linear in the text and a replacement (a user's
name, say) is never scanned again for macros. Unknown or malformed macros are left as written.
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

_TOKENS = re.compile(r"\{\{|\}\}|<bot>|<user>", re.IGNORECASE)
# Matched on the stripped argument, so no two runs of blanks touch (a run split many ways is cubic work on "  ...  x").
_ROLL = re.compile(r"^(?:(\d{1,3})?\s*d)?\s*(\d{1,9})\s*(?:([+-])\s*(\d{1,9}))?$", re.IGNORECASE)
_MAX_ROLL_CHARS = 64  # "100d999999999+999999999" and some blanks; anything longer is no roll
_MAX_NESTING = 8
_MAX_DICE = 100


def render_macros(text: str, *, char: str, user: str, original: str = "", rng: random.Random | None = None) -> str:
    """`text` with its macros expanded. {{random}} and {{roll}} draw from `rng`; {{pick}} is stable for a text."""
    if not has_macros(text):
        return text
    return _Renderer(char, user, original, rng or random.Random()).render(text, 0)


def has_macros(text: str) -> bool:
    """False for most text and most lorebook keys (rendered for every message): nothing to expand, no work."""
    return "{{" in text or "<" in text


@dataclass
class _Renderer:
    char: str
    user: str
    original: str
    rng: random.Random

    def render(self, text: str, nesting: int) -> str:
        tokens = list(_TOKENS.finditer(text))
        closers = _pair_braces(tokens)
        out, position = [], 0
        for index, token in enumerate(tokens):
            if token.start() < position:
                continue  # inside a macro already expanded
            word = token.group().lower()
            if word in ("<bot>", "<user>"):
                replacement, end = (self.char if word == "<bot>" else self.user), token.end()
            elif index in closers:
                closer = closers[index]
                raw = text[token.start() : closer.end()]
                replacement = self._expand(text[token.end() : closer.start()], raw, token.start(), nesting)
                end = closer.end()
            else:
                continue
            out += [text[position : token.start()], replacement]
            position = end
        out.append(text[position:])
        return "".join(out)

    def _expand(self, body: str, raw: str, offset: int, nesting: int) -> str:
        key = body.strip()
        if key.startswith("//"):
            return ""
        simple = {"char": self.char, "user": self.user, "original": self.original}.get(key.lower())
        if simple is not None:
            return simple
        name, colon, argument = key.partition(":")
        name = name.strip().lower()
        if not colon or nesting >= _MAX_NESTING:
            return raw
        if name in ("random", "pick"):
            options = _split_options(argument)
            if not options:
                return raw
            choice = self.rng.randrange(len(options)) if name == "random" else _stable_index(raw, offset, len(options))
            return self.render(options[choice], nesting + 1)
        if name == "roll":
            rolled = _roll(argument, self.rng)
            return raw if rolled is None else str(rolled)
        return raw


def _pair_braces(tokens: list[re.Match]) -> dict[int, re.Match]:
    """token index of each '{{' -> the '}}' closing it; unmatched braces stay literal text."""
    open_indexes, closers = [], {}
    for index, token in enumerate(tokens):
        if token.group() == "{{":
            open_indexes.append(index)
        elif token.group() == "}}" and open_indexes:
            closers[open_indexes.pop()] = token
    return closers


def _split_options(argument: str) -> list[str]:
    """`a,b` or `:a::b` (so options may hold commas); `\\,` is a literal comma; nested {{..}} are not split."""
    separator = ","
    if argument.startswith(":"):
        argument, separator = argument[1:], "::"
    options, current, depth, i = [], [], 0, 0
    while i < len(argument):
        if separator == "," and argument.startswith("\\,", i):
            current.append(",")
            i += 2
            continue
        if argument.startswith("{{", i) or argument.startswith("}}", i):
            depth += 1 if argument[i] == "{" else -1
            current.append(argument[i : i + 2])
            i += 2
            continue
        if depth <= 0 and argument.startswith(separator, i):
            options.append("".join(current))
            current, i = [], i + len(separator)
            continue
        current.append(argument[i])
        i += 1
    options.append("".join(current))
    return [option.strip() for option in options if option.strip()]


def _stable_index(raw: str, offset: int, count: int) -> int:
    """{{pick}} must give the same answer every time the same text is rendered, so it hashes instead of drawing."""
    digest = hashlib.sha256(f"{offset}\0{raw}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def _roll(argument: str, rng: random.Random) -> int | None:
    """`dN`, `N` or `XdN`, optionally `+M`/`-M`: the sum of X rolls of an N-sided die."""
    argument = argument.strip()
    match = _ROLL.match(argument) if len(argument) <= _MAX_ROLL_CHARS else None
    if not match:
        return None
    count, sides = int(match[1] or 1), int(match[2])
    if sides < 1 or not 1 <= count <= _MAX_DICE:
        return None
    modifier = int(match[4] or 0) * (-1 if match[3] == "-" else 1)
    return sum(rng.randint(1, sides) for _ in range(count)) + modifier
