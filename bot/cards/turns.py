"""Turns as the model reads them: `Name: text\n\n`.

A reply ends at the first "\n\n", so no text we feed on someone's behalf may contain one: that is what keeps a
user from ending a turn early or forging another speaker's line.
"""
from __future__ import annotations

import re

TURN_END = "\n\n"
MAX_NAME_CHARS = 64

_SPACES = re.compile(r"[ \t\u00a0\u3000]+")


def sanitize_text(text: str) -> str:
    """One turn's text: every run of line breaks (any Unicode kind, blank lines included) becomes one "\n"."""
    lines = [line.rstrip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line.strip()).strip()


def sanitize_name(name: str, fallback: str = "User", max_chars: int = MAX_NAME_CHARS) -> str:
    """A speaker label: one line, no ':' (it would end the label), spaces collapsed, bounded length."""
    cleaned = " ".join(name.splitlines()).replace(":", " ").replace("：", " ")
    cleaned = _SPACES.sub(" ", cleaned).strip()[:max_chars].strip()
    return cleaned or fallback


def turn(speaker: str, text: str) -> str:
    """A complete turn, ready to feed."""
    return f"{speaker}: {text}{TURN_END}"


def reply_cue(speaker: str) -> str:
    """What is fed before the model speaks as `speaker`; the model generates the leading space itself."""
    return f"{speaker}:"
