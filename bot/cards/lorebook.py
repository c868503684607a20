"""Which lorebook entries apply to a new message.

Rules (V2 character_book): disabled entries never apply; a keyed entry applies when one of its keys occurs in the
scanned text and, when `selective` and it has secondary keys, one of those too. Keys match case-insensitively
unless `case_sensitive`; a key that begins or ends with a letter or digit must not touch another ASCII letter or
digit there ("cat" does not fire on "concatenate"), while CJK keys match anywhere. With `recursive_scanning`, the
content of applied entries is scanned too (a few rounds). Entries come back ordered by `insertion_order`; over
`token_budget`, the lowest `priority` entries are left out first. V3 regex keys are never evaluated: Python's `re`
has no timeout, and a card must not be able to stall the bot.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, Optional, Sequence

from bot.cards.model import BookEntry, CharacterBook

TokenCounter = Optional[Callable[[str], int]]
KeyRenderer = Callable[[str], str]

_RECURSION_ROUNDS = 3
_MAX_SCAN_DEPTH = 100


def scanned_texts(book: CharacterBook, message: str, recent: Sequence[str]) -> list[str]:
    """The new message plus the last `scan_depth` earlier messages, newest first (`recent` is oldest first; default
    none)."""
    depth = min(book.scan_depth or 0, _MAX_SCAN_DEPTH, len(recent))
    return [message, *reversed(recent[len(recent) - depth :])] if depth else [message]


def triggered_entries(
    book: CharacterBook,
    texts: Sequence[str],
    *,
    key_renderer: KeyRenderer = lambda key: key,
    count_tokens: TokenCounter = None,
) -> list[BookEntry]:
    """Keyed (non-constant) entries that fire on `texts`, ordered and within the book's token budget."""
    waiting = [entry for entry in book.entries if entry.enabled and not entry.constant and not entry.use_regex]
    fired: list[BookEntry] = []
    needles = _Needles(key_renderer)
    scan = _Haystack(texts)
    for _ in range(_RECURSION_ROUNDS if book.recursive_scanning else 1):
        new = [entry for entry in waiting if _fires(entry, scan, needles)]
        if not new:
            break
        fired += new
        waiting = [entry for entry in waiting if not any(entry is hit for hit in new)]
        scan = _Haystack([entry.content for entry in new])
    return within_budget(_in_book_order(book, fired), book.token_budget, count_tokens)


def constant_entries(book: CharacterBook, count_tokens: TokenCounter = None) -> list[BookEntry]:
    always = [entry for entry in book.entries if entry.enabled and entry.constant]
    return within_budget(_in_book_order(book, always), book.token_budget, count_tokens)


def entry_fires(entry: BookEntry, texts: Sequence[str], key_renderer: KeyRenderer = lambda key: key) -> bool:
    return _fires(entry, _Haystack(texts), _Needles(key_renderer))


def _fires(entry: BookEntry, scan: "_Haystack", needles: "_Needles") -> bool:
    if not scan.any_key(entry.keys, entry.case_sensitive, needles):
        return False
    if entry.selective and any(key.strip() for key in entry.secondary_keys):
        return scan.any_key(entry.secondary_keys, entry.case_sensitive, needles)
    return True


def key_occurs(needle: str, haystack: str) -> bool:
    """`needle` occurs in `haystack` without an ASCII letter or digit glued to an end that is one."""
    return _encoded(needle) in _encoded(haystack)


# The scan is linear, whatever a card holds: each text is rewritten once as its runs (a run of ASCII letters,
# digits and "_", or any one other character), each run followed by a separator; a key, rewritten the same way,
# occurs with the boundary rule above exactly where its rewriting is a substring: one C-speed `in` per key, never
# a loop over occurrences that the rule rejects; before it, a set lookup per ASCII word of the key.
_SEPARATOR = "\x00"
_RUNS = re.compile(r"[A-Za-z0-9_]+|[^A-Za-z0-9_]")
_WORD = re.compile(r"[A-Za-z0-9_]+")
# The texts a message is scanned against are bounded (the message first, then the most recent ones): a long chat
# history must not make every message cost more. Above what a message and a few turns hold.
MAX_SCAN_CHARS = 32 * 1024


def _encoded(text: str) -> str:
    text = text.replace(_SEPARATOR, " ")  # NUL is the separator; as text it is one more non-word character
    return _SEPARATOR + _RUNS.sub(lambda run: run[0] + _SEPARATOR, text)


class _Haystack:
    def __init__(self, texts: Sequence[str]):
        kept, left = [], MAX_SCAN_CHARS
        for text in texts:
            if left <= 0:
                break
            kept.append(text[:left])
            left -= len(kept[-1])
        self._texts = {True: kept}
        self._encoded: dict[bool, str] = {}
        self._words: dict[bool, set[str]] = {}
        self._found: dict[tuple[str, bool], bool] = {}

    def any_key(self, keys: Iterable[str], case_sensitive: bool, needles: "_Needles") -> bool:
        return any(self._contains(needle, case_sensitive) for needle in map(needles.get, keys) if needle)

    def _contains(self, needle: str, case_sensitive: bool) -> bool:
        if not case_sensitive:
            needle = needle.casefold()
        found = self._found.get((needle, case_sensitive))
        if found is None:
            words = self._words_of(case_sensitive)
            # Every ASCII word of a key occurs as a whole word where the key occurs: most keys stop at a set lookup.
            found = all(word in words for word in _WORD.findall(needle))
            if found and not _WORD.fullmatch(needle):
                found = _encoded(needle) in self._encoded_of(case_sensitive)
            self._found[(needle, case_sensitive)] = found
        return found

    def _texts_of(self, case_sensitive: bool) -> list[str]:
        if case_sensitive not in self._texts:
            self._texts[case_sensitive] = [text.casefold() for text in self._texts[True]]
        return self._texts[case_sensitive]

    def _words_of(self, case_sensitive: bool) -> set[str]:
        if case_sensitive not in self._words:
            self._words[case_sensitive] = {w for text in self._texts_of(case_sensitive) for w in _WORD.findall(text)}
        return self._words[case_sensitive]

    def _encoded_of(self, case_sensitive: bool) -> str:
        if case_sensitive not in self._encoded:  # texts joined by a double separator, which no key's rewriting has
            self._encoded[case_sensitive] = _SEPARATOR.join(map(_encoded, self._texts_of(case_sensitive)))
        return self._encoded[case_sensitive]


class _Needles:
    """Each distinct key rendered (macros) and stripped once per scan."""

    def __init__(self, key_renderer: KeyRenderer):
        self._render = key_renderer
        self._done: dict[str, str] = {}

    def get(self, key: str) -> str:
        needle = self._done.get(key)
        if needle is None:
            needle = self._done[key] = self._render(key).strip()
        return needle


def _in_book_order(book: CharacterBook, entries: list[BookEntry]) -> list[BookEntry]:
    position = {id(entry): index for index, entry in enumerate(book.entries)}
    return sorted(entries, key=lambda entry: (entry.insertion_order, position[id(entry)]))


def within_budget(
    entries: list[BookEntry], budget: int | None, count_tokens: TokenCounter
) -> list[BookEntry]:
    """Highest priority first while they fit; the result keeps the input order. Without a tokenizer, characters
    are counted, a generous estimate for English (about four characters a token) and close for Chinese."""
    if not budget:
        return entries
    count = count_tokens or len
    kept, used = set(), 0
    for index in sorted(range(len(entries)), key=lambda i: (-entries[i].priority, i)):
        cost = count(entries[index].content)
        if used + cost <= budget:
            kept.add(index)
            used += cost
    return [entry for index, entry in enumerate(entries) if index in kept]
