"""Speaker labels that cannot be mistaken for one another.

The model knows who speaks only from the label before each turn. A member whose display name is the
character's, or a label the bot itself feeds ("System" notes, "Assistant"), would otherwise be read as that
speaker. Such a name gets a suffix; names are compared the way a reader (or the model) would confuse them:
compatibility-normalized, case-folded, letters and digits only ("ＭＩＲＡ", "mira!" and "M i r a" are Mira).
"""
from __future__ import annotations

import unicodedata
from typing import Iterable

from bot.cards.prompt import NOTE_SPEAKERS

RESERVED_LABELS = ("Assistant", *NOTE_SPEAKERS)  # labels the bot feeds on its own behalf
USER_SUFFIX = " (user)"


def label_key(name: str) -> str:
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(c for c in folded if c.isalnum()) or folded.strip()


def distinct_label(name: str, cast: Iterable[str], max_chars: int) -> str:
    """`name`, or `name (user)` when it would read as a cast member or a reserved label."""
    taken = {label_key(n) for n in (*cast, *RESERVED_LABELS)}
    label = name
    for _ in range(len(taken) + 1):
        if label_key(label) not in taken:
            return label
        label = label[: max(1, max_chars - len(USER_SUFFIX))].rstrip() + USER_SUFFIX
    return "User" + USER_SUFFIX  # unreachable unless every candidate is taken; still nobody else's label
