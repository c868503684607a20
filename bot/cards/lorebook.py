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

from typing import Callable, Iterable, Optional, Sequence

from bot.cards.model import BookEntry, CharacterBook

TokenCounter = Optional[Callable[[str], int]]
KeyRenderer = Callable[[str], str]

_RECURSION_ROUNDS = 3
_MAX_SCAN_DEPTH = 100


def scanned_texts(book: CharacterBook, message: str, recent: Sequence[str]) -> list[str]:
    """The new message plus the last `scan_depth` earlier messages (`recent` is oldest first; default none)."""
    depth = min(book.scan_depth or 0, _MAX_SCAN_DEPTH, len(recent))
    return [message, *recent[len(recent) - depth :]] if depth else [message]


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
    scan = list(texts)
    for _ in range(_RECURSION_ROUNDS if book.recursive_scanning else 1):
        new = [entry for entry in waiting if entry_fires(entry, scan, key_renderer)]
        if not new:
            break
        fired += new
        waiting = [entry for entry in waiting if not any(entry is hit for hit in new)]
        scan = [entry.content for entry in new]
    return within_budget(_in_book_order(book, fired), book.token_budget, count_tokens)


def constant_entries(book: CharacterBook, count_tokens: TokenCounter = None) -> list[BookEntry]:
    always = [entry for entry in book.entries if entry.enabled and entry.constant]
    return within_budget(_in_book_order(book, always), book.token_budget, count_tokens)


def entry_fires(entry: BookEntry, texts: Sequence[str], key_renderer: KeyRenderer = lambda key: key) -> bool:
    if not _any_key(entry.keys, texts, entry.case_sensitive, key_renderer):
        return False
    if entry.selective and any(key.strip() for key in entry.secondary_keys):
        return _any_key(entry.secondary_keys, texts, entry.case_sensitive, key_renderer)
    return True


def _any_key(keys: Iterable[str], texts: Sequence[str], case_sensitive: bool, key_renderer: KeyRenderer) -> bool:
    haystacks = texts if case_sensitive else [text.casefold() for text in texts]
    for key in keys:
        needle = key_renderer(key).strip()
        needle = needle if case_sensitive else needle.casefold()
        if needle and any(key_occurs(needle, haystack) for haystack in haystacks):
            return True
    return False


def key_occurs(needle: str, haystack: str) -> bool:
    start = haystack.find(needle)
    while start != -1:
        end = start + len(needle)
        if not (_is_ascii_word(needle[0]) and start > 0 and _is_ascii_word(haystack[start - 1])) and not (
            _is_ascii_word(needle[-1]) and end < len(haystack) and _is_ascii_word(haystack[end])
        ):
            return True
        start = haystack.find(needle, start + 1)
    return False


def _is_ascii_word(character: str) -> bool:
    return character.isascii() and (character.isalnum() or character == "_")


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
