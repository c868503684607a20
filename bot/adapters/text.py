"""Splitting a long text into messages of a platform's size, for every platform."""
from __future__ import annotations

import re

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
# A sentence ends at . ! ? before whitespace, or at a CJK full stop or … anywhere, possibly followed by closing
# quotes, brackets or markdown emphasis.
_SENTENCE_END = re.compile(r"[.!?][\"'”’」』)\]）*_]*(?=\s)|[。！？…][\"'”’」』)\]）*_]*")
_WHITESPACE = re.compile(r"\s")


def split_message(text: str, limit: int) -> list[str]:
    """`text` as pieces of at most `limit` characters, broken at paragraphs, else lines, else sentences, else
    spaces. No piece is empty or has surrounding whitespace (platforms trim it and refuse empty text).

    Each break depends only on the text before it (and one character after), so while a reply grows the pieces
    already full stay exactly as they are: a streaming reply edits its last message and adds new ones."""
    pieces = []
    rest = text.strip()
    while len(rest) > limit:
        cut = _break_point(rest, limit)
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


def _break_point(text: str, limit: int) -> int:
    window = text[: limit + 1]  # whitespace right after the limit is still a clean break
    floor = limit // 2  # a break in the first half would leave a small piece and many messages
    for find in (_last_paragraph_break, _last_line_break, _last_sentence_end, _last_space):
        cut = find(window, limit)
        if cut > floor:
            return cut
    return limit


def _last_paragraph_break(window: str, limit: int) -> int:
    starts = [m.start() for m in _PARAGRAPH_BREAK.finditer(window) if m.start() <= limit]
    return starts[-1] if starts else -1


def _last_line_break(window: str, limit: int) -> int:
    return window.rfind("\n", 0, limit + 1)


def _last_sentence_end(window: str, limit: int) -> int:
    ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() <= limit]
    return ends[-1] if ends else -1


def _last_space(window: str, limit: int) -> int:
    spaces = [m.start() for m in _WHITESPACE.finditer(window) if m.start() <= limit]
    return spaces[-1] if spaces else -1
