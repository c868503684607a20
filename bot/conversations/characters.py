"""The character library: cards from the `characters/` directory and cards imported on the platforms.

Every card is kept in the database by content hash, so a channel's character survives restarts even when its
file is renamed or removed. Cards are parsed again from their stored bytes at start (one parser, one truth).

Who sees what: the shared library (the directory's cards and those bot admins import) is everyone's; where the
owner allows it (`characters.user_imports`), anyone may import cards of their own, seen only by them (and by bot
admins). A name stands for one card in the whole library, so an import never shadows another card: an import
whose name is taken is refused (the directory's own files are the exception: an edited file keeps its name).
A deleted card leaves the library at once; its bytes stay while a channel or a save still uses it.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from bot.cards import Card, CardError, find_card, parse_card, scan_directory
from bot.conversations.conversations import ConversationError
from bot.store import CARD_NAME_CHARS, NameTaken, Store, storable

log = logging.getLogger(__name__)

MAX_IMPORT_BYTES = 20 << 20  # one card file


def name_key(name: str) -> str:
    """What makes two card names the same name."""
    return storable(name).casefold()[:CARD_NAME_CHARS]


@dataclasses.dataclass(frozen=True)
class Listed:
    """A card as the library lists it."""
    card: Card
    owner: str | None  # None: the shared library; else "platform:user_id"
    from_dir: bool


def too_big(size: int) -> str:
    """Why a card file of `size` bytes is refused."""
    return f"file is {size >> 20} MiB; the limit is {MAX_IMPORT_BYTES >> 20} MiB"


class Library:
    def __init__(self, store: Store, cards_dir: str | Path | None, default_name: str = "", *,
                 user_imports: bool = False, max_user_cards: int | None = None, max_bytes: int | None = None):
        self.store = store
        self.cards_dir = Path(cards_dir) if cards_dir else None
        self.default_name = default_name
        self.user_imports = user_imports  # anyone may import cards of their own
        self.max_user_cards = max_user_cards  # a user's own cards (bot admins import into the shared library)
        self.max_bytes = max_bytes  # all imported card files stored, listed or still in use
        self._by_hash: dict[str, Card] = {}  # every stored card: channels and saves find theirs by hash
        self._from_dir: set[str] = set()
        self._listed: dict[str, tuple[str, str | None]] = {}  # name_key -> (content hash, owner)

    async def load(self) -> None:
        """Scan the directory (bad files are logged and skipped), then read every stored card."""
        if self.cards_dir and self.cards_dir.is_dir():
            cards, errors = scan_directory(self.cards_dir)
            for path, problem in errors:
                log.warning("skipping character file %s: %s", path, problem)
            named = {e.name_key: e.content_hash for e in await self.store.library()}
            for card, path in cards:
                if named.get(name_key(card.name), card.content_hash()) != card.content_hash():
                    log.info("characters/%s: the name %s now stands for this file's card (the card it named "
                             "before stays while channels or saves use it)", path.name, card.name)
                await self.store.put_character(card.content_hash(), card.name, card.source_format, card.to_json(),
                                               path.name, path.read_bytes(), card.avatar, "dir",
                                               name_key=name_key(card.name), replace_name=True)
        for row in await self.store.characters():
            try:
                card = parse_card(row.raw, row.filename)
            except CardError as exc:  # a parser change refusing an old import: keep running without it
                log.warning("stored character %s no longer parses: %s", row.name, exc)
                continue
            if row.avatar and not card.avatar:
                card = dataclasses.replace(card, avatar=row.avatar)
            self._by_hash[row.content_hash] = card
            if row.origin == "dir":
                self._from_dir.add(row.content_hash)
        self._listed = {e.name_key: (e.content_hash, e.owner) for e in await self.store.library()
                        if e.content_hash in self._by_hash}
        self._forget(await self.store.purge_characters())

    # ----- changes ------------------------------------------------------------------------------------------
    async def import_card(self, filename: str, data: bytes, owner: str | None = None) -> tuple[Card, bool]:
        """Parse and add a card to the shared library (owner None) or to `owner`'s own cards; returns (card,
        is_new). Raises CardError (the file) or ConversationError (its name is taken, a quota is full)."""
        if len(data) > MAX_IMPORT_BYTES:
            raise CardError(too_big(len(data)))
        if owner is not None and self.max_user_cards is not None \
                and await self.store.owned_cards(owner) >= self.max_user_cards:
            raise ConversationError("too_many_cards", limit=self.max_user_cards)
        card = parse_card(data, filename)
        content_hash, key = card.content_hash(), name_key(card.name)
        listed = self._listed.get(key)
        if listed is not None and listed[0] == content_hash and listed[1] in (None, owner):
            return card, False
        if listed is not None:
            raise ConversationError("card_name_taken", name=card.name[:64])
        if content_hash not in self._by_hash and self.max_bytes is not None \
                and await self.store.imported_bytes() + len(data) > self.max_bytes:
            raise ConversationError("library_full", limit=self.max_bytes >> 20)
        try:
            await self.store.put_character(content_hash, card.name, card.source_format, card.to_json(),
                                           storable(filename, CARD_NAME_CHARS), data, card.avatar, "import",
                                           name_key=key, owner=owner)
        except NameTaken:
            raise ConversationError("card_name_taken", name=card.name[:64]) from None
        # Only now that the database holds it: a card that failed to store is never listed.
        self._by_hash.setdefault(content_hash, card)
        self._listed[key] = (content_hash, owner)
        return card, True

    async def delete(self, name: str, who: str | None, bot_admin: bool) -> Listed:
        """Take a card out of the library: a user's own card (by them or a bot admin), a shared one (bot admins;
        not the directory's: its file would bring it back at the next start)."""
        listed = self._find(name, who, bot_admin)
        if listed is None:
            raise ConversationError("unknown_character", name=name[:64])
        if listed.owner is None and not bot_admin:
            raise ConversationError("not_bot_admin")
        if listed.from_dir:
            raise ConversationError("card_in_dir", name=listed.card.name[:64])
        key = name_key(listed.card.name)
        purged = await self.store.unlist_character(key)
        self._listed.pop(key, None)
        self._forget(purged)
        return listed

    def _forget(self, content_hashes: list[str]) -> None:
        for content_hash in content_hashes:
            self._by_hash.pop(content_hash, None)
            self._from_dir.discard(content_hash)

    # ----- lookups ------------------------------------------------------------------------------------------
    def get(self, content_hash: str | None) -> Card | None:
        return self._by_hash.get(content_hash) if content_hash else None

    def visible(self, who: str | None = None, everything: bool = False) -> list[Listed]:
        """The shared library and `who`'s own cards (`everything`: every user's too, for bot admins), by name."""
        out = [Listed(self._by_hash[h], owner, h in self._from_dir) for h, owner in self._listed.values()
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
