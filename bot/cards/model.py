"""The normalized card every format is read into."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


@dataclass
class BookEntry:
    """One lorebook entry (V2 `character_book.entries[]`)."""

    keys: list[str] = field(default_factory=list)
    secondary_keys: list[str] = field(default_factory=list)
    content: str = ""
    enabled: bool = True
    insertion_order: int = 0
    case_sensitive: bool = False
    constant: bool = False
    selective: bool = False
    position: str = "before_char"
    priority: int = 0
    name: str = ""
    comment: str = ""
    extensions: dict = field(default_factory=dict)
    # V3: keys are regular expressions. Kept so the card survives export, but never evaluated (see lorebook.py).
    use_regex: bool = False

    def to_json(self) -> dict:
        return {
            "keys": list(self.keys),
            "secondary_keys": list(self.secondary_keys),
            "content": self.content,
            "enabled": self.enabled,
            "insertion_order": self.insertion_order,
            "case_sensitive": self.case_sensitive,
            "constant": self.constant,
            "selective": self.selective,
            "position": self.position,
            "priority": self.priority,
            "name": self.name,
            "comment": self.comment,
        }

    def to_spec(self) -> dict:
        return {**self.to_json(), "extensions": self.extensions, "use_regex": self.use_regex}


@dataclass
class CharacterBook:
    """A card's embedded lorebook (V2 `character_book`)."""

    name: str = ""
    entries: list[BookEntry] = field(default_factory=list)
    scan_depth: int | None = None
    token_budget: int | None = None
    recursive_scanning: bool = False
    extensions: dict = field(default_factory=dict)
    description: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "entries": [entry.to_json() for entry in self.entries]}

    def to_spec(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "scan_depth": self.scan_depth,
            "token_budget": self.token_budget,
            "recursive_scanning": self.recursive_scanning,
            "extensions": self.extensions,
            "entries": [entry.to_spec() for entry in self.entries],
        }


@dataclass
class Card:
    """A character, whatever file it came from. Text is kept as written (macros unexpanded)."""

    name: str
    description: str = ""
    personality: str = ""
    scenario: str = ""
    first_mes: str = ""
    mes_example: str = ""
    alternate_greetings: list[str] = field(default_factory=list)
    system_prompt: str = ""
    post_history_instructions: str = ""
    creator_notes: str = ""
    tags: list[str] = field(default_factory=list)
    creator: str = ""
    character_version: str = ""
    character_book: CharacterBook | None = None
    source_format: str = ""
    nickname: str = ""
    group_only_greetings: list[str] = field(default_factory=list)
    extensions: dict = field(default_factory=dict)
    avatar: bytes | None = field(default=None, repr=False)
    # The file name without its suffix: `/char use` falls back to it when no card name matches.
    stem: str = ""
    # V3 metadata, kept so a card survives export; none of it reaches a prompt.
    assets: list[dict] = field(default_factory=list)
    creator_notes_multilingual: dict = field(default_factory=dict)
    source: list[str] = field(default_factory=list)
    creation_date: int | None = None
    modification_date: int | None = None

    @property
    def display_name(self) -> str:
        """What `{{char}}` becomes."""
        return self.nickname or self.name

    def to_json(self) -> dict:
        """The normalized card as `rwkv-bot card show --json` prints it."""
        return {
            "name": self.name,
            "description": self.description,
            "personality": self.personality,
            "scenario": self.scenario,
            "first_mes": self.first_mes,
            "mes_example": self.mes_example,
            "alternate_greetings": list(self.alternate_greetings),
            "system_prompt": self.system_prompt,
            "post_history_instructions": self.post_history_instructions,
            "creator_notes": self.creator_notes,
            "tags": list(self.tags),
            "creator": self.creator,
            "character_version": self.character_version,
            "character_book": self.character_book.to_json() if self.character_book else None,
            "source_format": self.source_format,
        }

    def to_v3(self) -> dict:
        """Everything the card holds except the avatar, as a `chara_card_v3` document that parses back to it."""
        data = self.to_json()
        del data["source_format"]
        data.update(
            character_book=self.character_book.to_spec() if self.character_book else None,
            nickname=self.nickname,
            group_only_greetings=list(self.group_only_greetings),
            extensions=self.extensions,
            assets=self.assets,
            creator_notes_multilingual=self.creator_notes_multilingual,
            source=list(self.source),
            creation_date=self.creation_date,
            modification_date=self.modification_date,
        )
        if data["character_book"] is None:
            del data["character_book"]
        return {"spec": "chara_card_v3", "spec_version": "3.0", "data": data}

    # content_hash(), remembered: a large card takes a tenth of a second to hash, and a channel asks several times per
    # /char use. Setting any field forgets it (a card is not changed in place after it is parsed otherwise).
    _hash: str | None = field(default=None, init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value) -> None:
        if name != "_hash":
            object.__setattr__(self, "_hash", None)
        object.__setattr__(self, name, value)

    def content_hash(self) -> str:
        """sha256 of everything that can change a prompt or the avatar; not of where the card came from."""
        if self._hash is None:
            digest = hashlib.sha256()
            document = json.dumps(self.to_v3(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
            digest.update(document.encode())
            digest.update(b"\0avatar\0")
            digest.update(hashlib.sha256(self.avatar).digest() if self.avatar is not None else b"none")
            self._hash = digest.hexdigest()
        return self._hash
