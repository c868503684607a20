"""The character library: the sample cards shipped with the package, cards from the `characters/` directory and
cards imported on the platforms.

Every card is kept in the database by content hash, so a channel's character survives restarts even when its
file is renamed or removed. Cards are parsed again from their stored bytes at start (one parser, one truth).

Who sees what: the shared library (the samples, the directory's cards and those bot admins import) is everyone's;
where the owner allows it (`characters.user_imports`), anyone may import cards of their own, seen only by them (and
by bot admins). A name stands for one card in the whole library, so an import never shadows another card: an
import whose name is taken is refused. The owner's files are the exceptions: a directory card takes its name from
whatever held it (an edited file keeps its name), and a sample takes a name only from an older sample.
A deleted card leaves the library at once; its bytes stay while a channel or a save still uses it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

from bot.cards import Card, CardError, find_card, parse_card, scan_directory
from bot.conversations.conversations import ConversationError
from bot.store import CARD_NAME_CHARS, Character, NameTaken, Store, storable

log = logging.getLogger(__name__)

MAX_IMPORT_BYTES = 20 << 20  # one card file
MAX_FILENAME_CHARS = Character.__table__.c.filename.type.length
OWNERS_FILES = ("sample", "dir")  # origins of the cards that come back at every start


def too_big(size: int) -> str:
    """Why a card file of `size` bytes is refused."""
    return f"file is {size >> 20} MiB; the limit is {MAX_IMPORT_BYTES >> 20} MiB"


def name_key(name: str) -> str:
    """What makes two card names the same name."""
    return storable(name).casefold()[:CARD_NAME_CHARS]


@dataclasses.dataclass(frozen=True)
class Listed:
    """A card as the library lists it."""
    card: Card
    owner: str | None  # None: the shared library; else "platform:user_id"
    from_files: bool  # a sample or a characters/ card: removed there, not with /char delete


class Library:
    def __init__(self, store: Store, cards_dir: str | Path | None, default_name: str = "",
                 samples_dir: str | Path | None = None, *, user_imports: bool = False,
                 max_user_cards: int | None = None, max_bytes: int | None = None):
        self.store = store
        self.cards_dir = Path(cards_dir) if cards_dir else None
        self.samples_dir = Path(samples_dir) if samples_dir else None  # None: samples off
        self.default_name = default_name
        self.user_imports = user_imports  # anyone may import cards of their own
        self.max_user_cards = max_user_cards  # a user's own cards (bot admins import into the shared library)
        self.max_bytes = max_bytes  # all imported card files stored, listed or still in use
        self._by_hash: dict[str, Card] = {}  # every stored card: channels and saves find theirs by hash
        self._from_files: set[str] = set()
        self._listed: dict[str, tuple[str, str | None]] = {}  # name_key -> (content hash, owner)

    async def load(self) -> None:
        """Scan the samples, then the directory (bad files are logged and skipped; of two cards with one name the
        directory's wins), then read every stored card."""
        named = {e.name_key: e.content_hash for e in await self.store.library()}
        origins = await self.store.character_origins()
        if self.samples_dir is None:  # samples off: not offered, even when an earlier start listed them
            for key, content_hash in list(named.items()):
                if origins.get(content_hash) == "sample":
                    await self.store.unlist_character(key, purge=False)
                    del named[key]
        for directory, origin in ((self.samples_dir, "sample"), (self.cards_dir, "dir")):
            if directory and directory.is_dir():
                # Parsing is CPU work that a hostile file can make long: never on the event loop.
                cards, errors = await asyncio.to_thread(_scan_with_bytes, directory)
                for path, problem in errors:
                    log.warning("skipping character file %s: %s", path, problem)
                for card, path, raw in cards:
                    content_hash, normalized = await asyncio.to_thread(lambda: (card.content_hash(), card.to_json()))
                    key = name_key(card.name)
                    held = named.get(key, content_hash)
                    if held != content_hash and origin == "sample" and origins.get(held) != "sample":
                        continue  # the owner's card of that name (or an import) wins over a sample
                    if held != content_hash:
                        log.info("%s: the name %s now stands for this file's card (the card it named before stays "
                                 "while channels or saves use it)", path.name, card.name)
                    await self.store.put_character(content_hash, card.name, card.source_format, normalized,
                                                   path.name, raw, card.avatar, origin, name_key=key,
                                                   replace_name=True)
                    named[key] = content_hash
                    origins.setdefault(content_hash, origin)
        await self.store.purge_characters()  # what nothing lists or uses any more
        rows = await self.store.characters()
        for row, parsed in zip(rows, await asyncio.to_thread(lambda: [_parse_stored(row) for row in rows])):
            if isinstance(parsed, CardError):  # a parser change refusing an old import: keep running without it
                log.warning("stored character %s no longer parses: %s", row.name, parsed)
                continue
            if row.avatar and not parsed.avatar:
                parsed = dataclasses.replace(parsed, avatar=row.avatar)
            self._by_hash[row.content_hash] = parsed
            if row.origin in OWNERS_FILES:
                self._from_files.add(row.content_hash)
        self._listed = {e.name_key: (e.content_hash, e.owner) for e in await self.store.library()
                        if e.content_hash in self._by_hash}

    # ----- changes ------------------------------------------------------------------------------------------
    async def import_card(self, filename: str, data: bytes, owner: str | None = None) -> tuple[Card, bool]:
        """Parse and add a card to the shared library (owner None) or to `owner`'s own cards; returns (card,
        is_new). Raises CardError (the file) or ConversationError (its name is taken, a quota is full)."""
        if len(data) > MAX_IMPORT_BYTES:
            raise CardError(too_big(len(data)))
        if len(filename) > MAX_FILENAME_CHARS:  # the platform's file name, kept to parse the card again at start
            raise CardError(f"the file name is {len(filename)} characters long; the limit is {MAX_FILENAME_CHARS}")
        if owner is not None and self.max_user_cards is not None \
                and await self.store.owned_cards(owner) >= self.max_user_cards:
            raise ConversationError("too_many_cards", limit=self.max_user_cards)
        card = await asyncio.to_thread(parse_card, data, filename)
        content_hash, normalized = await asyncio.to_thread(lambda: (card.content_hash(), card.to_json()))
        key = name_key(card.name)
        listed = self._listed.get(key)
        if listed is not None and listed[0] == content_hash and listed[1] in (None, owner):
            return card, False
        if listed is not None:
            raise ConversationError("card_name_taken", name=card.name[:64])
        if content_hash not in self._by_hash and self.max_bytes is not None \
                and await self.store.imported_bytes() + len(data) > self.max_bytes:
            raise ConversationError("library_full", limit=self.max_bytes >> 20)
        try:
            await self.store.put_character(content_hash, card.name, card.source_format, normalized, filename, data,
                                           card.avatar, "import", name_key=key, owner=owner)
        except NameTaken:
            raise ConversationError("card_name_taken", name=card.name[:64]) from None
        # Only now that the database holds it: a card the database refused must not stay listed (a ghost).
        self._by_hash.setdefault(content_hash, card)
        self._listed[key] = (content_hash, owner)
        return card, True

    async def delete(self, name: str, who: str | None, bot_admin: bool) -> Listed:
        """Take a card out of the library: a user's own card (by them or a bot admin), a shared one (bot admins;
        not a sample's or the directory's: its file would bring it back at the next start)."""
        listed = self._find(name, who, bot_admin)
        if listed is None:
            raise ConversationError("unknown_character", name=name[:64])
        if listed.owner is None and not bot_admin:
            raise ConversationError("not_bot_admin")
        if listed.from_files:
            raise ConversationError("card_in_dir", name=listed.card.name[:64])
        key = name_key(listed.card.name)
        purged = await self.store.unlist_character(key)
        self._listed.pop(key, None)
        self._forget(purged)
        return listed

    def _forget(self, content_hashes: list[str]) -> None:
        for content_hash in content_hashes:
            self._by_hash.pop(content_hash, None)
            self._from_files.discard(content_hash)

    # ----- lookups ------------------------------------------------------------------------------------------
    def get(self, content_hash: str | None) -> Card | None:
        return self._by_hash.get(content_hash) if content_hash else None

    def visible(self, who: str | None = None, everything: bool = False) -> list[Listed]:
        """The shared library and `who`'s own cards (`everything`: every user's too, for bot admins), by name."""
        out = [Listed(self._by_hash[h], owner, h in self._from_files) for h, owner in self._listed.values()
               if owner is None or owner == who or everything]
        return sorted(out, key=lambda listed: listed.card.name.casefold())

    def _find(self, name: str, who: str | None, everything: bool) -> Listed | None:
        visible = self.visible(who, everything)
        card = find_card([listed.card for listed in visible], name)
        return next((listed for listed in visible if listed.card is card), None)

    def find(self, name: str, who: str | None = None, everything: bool = False) -> Card | None:
        listed = self._find(name, who, everything)
        return listed.card if listed else None

    def cards(self, who: str | None = None) -> list[Card]:
        return [listed.card for listed in self.visible(who)]

    def names(self, who: str | None = None) -> list[str]:
        return [card.name for card in self.cards(who)]

    def default(self) -> Card | None:
        if self.default_name:
            card = self.find(self.default_name)
            if card:
                return card
        shared = self.cards()
        return shared[0] if shared else None


def _scan_with_bytes(directory: Path) -> tuple[list[tuple[Card, Path, bytes]], list[tuple[Path, str]]]:
    cards, errors = scan_directory(directory)
    return [(card, path, path.read_bytes()) for card, path in cards], errors


def _parse_stored(row) -> Card | CardError:
    try:
        return parse_card(row.raw, row.filename)
    except CardError as exc:
        return exc
