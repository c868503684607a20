"""The character library: the sample cards shipped with the package, cards from the `characters/` directory and
cards imported on the platforms.

Every card is kept in the database by content hash, so a channel's character survives restarts even when its
file is renamed or removed. Cards are parsed again from their stored bytes at start (one parser, one truth).
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

from bot.cards import Card, CardError, find_card, parse_card, scan_directory
from bot.store import Character, Store

log = logging.getLogger(__name__)

MAX_IMPORT_BYTES = 20 << 20
MAX_FILENAME_CHARS = Character.__table__.c.filename.type.length


def too_big(size: int) -> str:
    """Why a card file of `size` bytes is refused."""
    return f"file is {size >> 20} MiB; the limit is {MAX_IMPORT_BYTES >> 20} MiB"


class Library:
    def __init__(self, store: Store, cards_dir: str | Path | None, default_name: str = "",
                 samples_dir: str | Path | None = None):
        self.store = store
        self.cards_dir = Path(cards_dir) if cards_dir else None
        self.samples_dir = Path(samples_dir) if samples_dir else None  # None: samples off
        self.default_name = default_name
        self._by_hash: dict[str, Card] = {}
        self._listed: list[Card] = []  # what /char list and name lookup see: one card per name, newest wins

    async def load(self) -> None:
        """Scan the samples, then the directory (bad files are logged and skipped; of two cards with one name the
        directory's wins), then read every stored card."""
        for directory, origin in ((self.samples_dir, "sample"), (self.cards_dir, "dir")):
            if directory and directory.is_dir():
                # Parsing is CPU work that a hostile file can make long: never on the event loop.
                cards, errors = await asyncio.to_thread(_scan_with_bytes, directory)
                for path, problem in errors:
                    log.warning("skipping character file %s: %s", path, problem)
                for card, path, raw in cards:
                    await self._store(card, path.name, raw, origin=origin)
        rows = [row for row in await self.store.characters() if row.content_hash not in self._by_hash
                and not (row.origin == "sample" and self.samples_dir is None)]
        for row, parsed in zip(rows, await asyncio.to_thread(lambda: [_parse_stored(row) for row in rows])):
            if isinstance(parsed, CardError):  # a parser change refusing an old import: keep running without it
                log.warning("stored character %s no longer parses: %s", row.name, parsed)
                continue
            if row.avatar and not parsed.avatar:
                parsed = dataclasses.replace(parsed, avatar=row.avatar)
            self._by_hash[row.content_hash] = parsed
        self._reindex()

    async def import_card(self, filename: str, data: bytes) -> tuple[Card, bool]:
        """Parse and add a card; returns (card, is_new). Raises CardError with one clear line."""
        if len(data) > MAX_IMPORT_BYTES:
            raise CardError(too_big(len(data)))
        if len(filename) > MAX_FILENAME_CHARS:  # the platform's file name, kept to parse the card again at start
            raise CardError(f"the file name is {len(filename)} characters long; the limit is {MAX_FILENAME_CHARS}")
        card = await asyncio.to_thread(parse_card, data, filename)
        is_new = await self._store(card, filename, data, origin="import")
        self._reindex()
        return card, is_new

    async def delete(self, card: Card) -> None:
        """Out of the library and the database (a card of the same name imported earlier shows again)."""
        key = card.content_hash()
        self._by_hash.pop(key, None)
        await self.store.delete_character(key)
        self._reindex()

    async def _store(self, card: Card, filename: str, raw: bytes, origin: str) -> bool:
        """Into the database, then into memory: a card the database refused must not stay listed (a ghost)."""
        key, normalized = await asyncio.to_thread(lambda: (card.content_hash(), card.to_json()))  # large cards: slow
        is_new = await self.store.put_character(key, card.name, card.source_format, normalized, filename, raw,
                                                card.avatar, origin)
        self._by_hash[key] = card
        return is_new

    def _reindex(self) -> None:
        by_name: dict[str, Card] = {}
        for card in self._by_hash.values():
            by_name[card.name.casefold()] = card
        self._listed = sorted(by_name.values(), key=lambda c: c.name.casefold())

    def get(self, content_hash: str | None) -> Card | None:
        return self._by_hash.get(content_hash) if content_hash else None

    def find(self, name: str) -> Card | None:
        return find_card(self._listed, name)

    def cards(self) -> list[Card]:
        return list(self._listed)

    def names(self) -> list[str]:
        return [c.name for c in self._listed]

    def default(self) -> Card | None:
        if self.default_name:
            card = self.find(self.default_name)
            if card:
                return card
        return self._listed[0] if self._listed else None


def _scan_with_bytes(directory: Path) -> tuple[list[tuple[Card, Path, bytes]], list[tuple[Path, str]]]:
    cards, errors = scan_directory(directory)
    return [(card, path, path.read_bytes()) for card, path in cards], errors


def _parse_stored(row) -> Card | CardError:
    try:
        return parse_card(row.raw, row.filename)
    except CardError as exc:
        return exc
