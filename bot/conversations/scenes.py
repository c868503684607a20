"""Scenes: several characters in one channel (/cast), who answers a line, and who each user is (/persona).

Everything lives in the channel's `settings` (one JSON read with the channel, saved with it, no table): the cast is
a short list of card hashes after the channel's own character, and a persona is a name and a short description per
user. What has been fed is remembered as the position of the turn that fed it: a card or a description counts as
read by the state at turn `base` when it was fed at a position <= base. So undo, regen and edits, which move the
head back, make the next turn feed it again, and the state is always exactly that of its turns.

Who answers a line (when nobody was forced with /reply): a character named in it (name or nickname), else the one
whose message the user replied to, else the next in turn: the cast is shuffled with a generator seeded by the
channel's scene seed and the turn's position, and the first whose talkativeness beats its roll speaks (else the
first of the shuffle); the character who spoke last is left out when anyone else is there. The same state and line
always pick the same speaker.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from bot.cards.prompt import NOTE_SPEAKERS
from bot.cards.scene import introduction, names_of, talkativeness
from bot.cards.turns import sanitize_text, turn
from bot.conversations.errors import ConversationError
from bot.conversations.labels import label_key

CAST = "cast"  # [{"card": content hash}, ...]: the members after the channel's own character
INTRODUCED = "introduced"  # {content hash: position of the turn that fed its introduction}
PERSONAS = "personas"  # {"platform:user id": {"name", "description", "fed_at"}}
SCENE_SEED = "scene_seed"  # the turn order's seed, drawn when the first member joins
NEXT_SPEAKER = "next_speaker"  # /reply NAME: the next reply's speaker, for one reply


@dataclass(frozen=True)
class Member:
    card: object  # bot.cards.Card
    label: str  # the name the model reads before its lines

    @property
    def content_hash(self) -> str:
        return self.card.content_hash()


@dataclass
class Cue:
    """Who speaks this turn and what is fed before the user's line."""
    card: object  # the speaker's card: its lorebook and instructions, its avatar
    label: str
    notes: str = ""  # introductions and persona descriptions, as complete turns
    settings: dict = field(default_factory=dict)  # the channel's settings once this turn is committed
    named: bool = False  # several characters share the channel: show the speaker's name with the text


def cast_hashes(settings: dict) -> list[str]:
    return [m["card"] for m in settings.get(CAST) or [] if isinstance(m, dict) and m.get("card")]


def forget_fed(settings: dict) -> None:
    """The history was replaced (a reset, a loaded save): nothing of the scene has been read yet."""
    settings.pop(INTRODUCED, None)
    if settings.get(PERSONAS):
        settings[PERSONAS] = {who: dict(persona, fed_at=None) for who, persona in settings[PERSONAS].items()}


def shift_fed(settings: dict, removed: int) -> dict:
    """The settings after the turn at `removed` left the history and the turns after it moved down one place (what
    it fed went to the turn now at `removed`): what a later turn fed was fed one place earlier."""
    def moved(position):
        return position - 1 if isinstance(position, int) and position > removed else position

    settings = dict(settings)
    if settings.get(INTRODUCED):
        settings[INTRODUCED] = {card: moved(position) for card, position in settings[INTRODUCED].items()}
    if settings.get(PERSONAS):
        settings[PERSONAS] = {who: dict(persona, fed_at=moved(persona.get("fed_at")))
                              for who, persona in settings[PERSONAS].items()}
    return settings


def fed_by(position, base: int) -> bool:
    return isinstance(position, int) and 0 < position <= base


def note_speaker(labels) -> str:
    taken = {label_key(label) for label in labels}
    return next((name for name in NOTE_SPEAKERS if label_key(name) not in taken), NOTE_SPEAKERS[0])


def _mention(name: str) -> re.Pattern:
    """`name` as a whole word where words have boundaries (Latin letters); anywhere in scripts without spaces."""
    escaped = re.escape(name)
    if name.isascii():
        return re.compile(rf"(?<!\w){escaped}(?!\w)", re.IGNORECASE)
    return re.compile(escaped, re.IGNORECASE)


def named_in(text: str, members: list[Member]) -> Member | None:
    """The member the line names first (by name, nickname or label)."""
    best, where = None, len(text) + 1
    for member in members:
        for name in {*names_of(member.card), member.label}:
            found = _mention(name).search(text)
            if found and found.start() < where:
                best, where = member, found.start()
    return best


def find_member(name: str, members: list[Member]) -> Member | None:
    """The member called `name` (its name, nickname or label, compared as a reader would confuse them)."""
    wanted = label_key(name)
    return next((m for m in members if wanted in {label_key(n) for n in (*names_of(m.card), m.label)}), None)


def in_turn(members: list[Member], last_label: str | None, seed: int, position: int) -> Member:
    """The next speaker by talkativeness, never the last one when anyone else is in the scene."""
    rng = random.Random(f"{seed}:{position}")
    others = [m for m in members if last_label is None or label_key(m.label) != label_key(last_label)]
    order = list(others or members)
    rng.shuffle(order)
    for member in order:
        if rng.random() < talkativeness(member.card):
            return member
    return order[0]


class Scenes:
    """The scene side of `Conversations` (mixed in; it sets `max_cast`): the cast, personas, each turn's cue."""

    # ----- the cast ---------------------------------------------------------------------------------------
    def members(self, ch, card) -> list[Member]:
        """The channel's cast, its own character first; cards no longer in the library drop out."""
        cards = [card] + [c for c in map(self.library.get, cast_hashes(ch.settings or {})) if c is not None]
        out, seen = [], set()
        for member_card in cards:
            if member_card is None or member_card.content_hash() in seen:
                continue
            seen.add(member_card.content_hash())
            out.append(Member(member_card, self.speaker_name(member_card.display_name, fallback="Bot")))
        return out

    async def cast(self, key) -> list[Member]:
        ch = await self.channel(key)
        return self.members(ch, self._card(ch))

    async def cast_add(self, key, card) -> list[Member]:
        async with await self._locked(key):
            ch = await self.channel(key)
            members = self.members(ch, self._card(ch))
            if any(m.content_hash == card.content_hash() for m in members):
                raise ConversationError("cast_already", name=card.name[:64])
            if len(members) >= self.max_cast:
                raise ConversationError("cast_full", limit=self.max_cast)
            settings = dict(ch.settings or {})
            settings[CAST] = [{"card": m.content_hash} for m in members[1:]] + [{"card": card.content_hash()}]
            settings.setdefault(SCENE_SEED, random.SystemRandom().getrandbits(32))
            introduced = dict(settings.get(INTRODUCED) or {})
            introduced.pop(card.content_hash(), None)  # a member who left and comes back is introduced again
            settings[INTRODUCED] = introduced
            await self.store.update_channel(ch.id, settings=settings)
            ch.settings = settings
            return self.members(ch, self._card(ch))

    async def cast_remove(self, key, name: str) -> Member:
        async with await self._locked(key):
            ch = await self.channel(key)
            members = self.members(ch, self._card(ch))
            member = find_member(name, members)
            if member is None:
                raise ConversationError("cast_unknown", name=name[:64])
            if member is members[0]:
                raise ConversationError("cast_last" if len(members) == 1 else "cast_first", name=member.label)
            settings = dict(ch.settings or {})
            settings[CAST] = [{"card": m.content_hash} for m in members[1:] if m is not member]
            if label_key(settings.get(NEXT_SPEAKER) or "") == label_key(member.label):
                settings.pop(NEXT_SPEAKER)
            await self.store.update_channel(ch.id, settings=settings)
            return member

    async def next_speaker_of(self, key, name: str) -> str:
        """/reply NAME: a cast member by any of its names (its label), else the name as given."""
        ch = await self.channel(key)
        member = find_member(name, self.members(ch, self._card(ch)))
        return member.label if member else name

    # ----- personas ---------------------------------------------------------------------------------------
    async def persona(self, key, who: str) -> dict | None:
        ch = await self.store.find_channel(key.platform, key.external_id)
        return ((ch.settings or {}).get(PERSONAS) or {}).get(who) if ch is not None else None

    async def set_persona(self, key, who: str, name: str, description: str = "") -> dict:
        """Who `who` is in this channel; ConversationError when the name is nothing once sanitised."""
        label = self.speaker_name(name, fallback="")
        if not label:
            raise ConversationError("persona_empty_name")
        description, _ = self._clean_message(description) if description.strip() else ("", None)
        async with await self._locked(key):
            ch = await self.channel(key)
            settings = dict(ch.settings or {})
            personas = dict(settings.get(PERSONAS) or {})
            personas[who] = {"name": label, "description": description, "fed_at": None}
            settings[PERSONAS] = personas
            await self.store.update_channel(ch.id, settings=settings)
            return personas[who]

    async def clear_persona(self, key, who: str) -> bool:
        async with await self._locked(key):
            ch = await self.channel(key)
            settings = dict(ch.settings or {})
            personas = dict(settings.get(PERSONAS) or {})
            if personas.pop(who, None) is None:
                return False
            settings[PERSONAS] = personas
            await self.store.update_channel(ch.id, settings=settings)
            return True

    def persona_name(self, ch, who: str | None) -> str | None:
        persona = ((ch.settings or {}).get(PERSONAS) or {}).get(who) if who else None
        return persona["name"] if persona else None

    # ----- a turn's cue -----------------------------------------------------------------------------------
    async def scene_cue(self, ch, card, *, base: int, text: str | None, forced: str | None, char_label: str,
                        addressed_to: str, who: str | None, user_label: str, rebased: bool = False,
                        replace: bool = False) -> Cue:
        """Who speaks after the line `text` (said from the state at turn `base`), and the notes fed before it.
        `forced`: /reply NAME (or a regenerated reply's speaker); `char_label`: the channel's own character;
        `rebased`: the state was rebuilt from the card and the latest turns, so the scene is introduced again;
        `replace`: the turn at base + 1 is made again (/regen), with the description that turn fed."""
        settings = dict(ch.settings or {})
        settings.pop(NEXT_SPEAKER, None)  # /reply NAME applies to one reply
        if rebased:
            forget_fed(settings)
        members = self.members(ch, card) if ch.chat_format == "names" else []
        scene = len(members) > 1
        position = base + 1
        labels = [m.label for m in members] + [user_label]
        notes = []
        if scene:
            introduced = dict(settings.get(INTRODUCED) or {})
            for member in members[1:]:
                if not fed_by(introduced.get(member.content_hash), base):
                    body = introduction(member.card, char_label=member.label, user=user_label)
                    notes.append(turn(note_speaker(labels), body))
                    introduced[member.content_hash] = position
            settings[INTRODUCED] = introduced
        if settings.get(PERSONAS):
            notes += self._persona_notes(settings, who, base, user_label, labels, replace)
        if forced:
            speaker = find_member(forced, members) or Member(card, forced)
        elif not scene:
            speaker = Member(card, char_label)
        else:
            speaker = ((named_in(text, members) if text else None)
                       or (find_member(addressed_to, members) if addressed_to else None)
                       or in_turn(members, await self._last_speaker(ch, base), settings.get(SCENE_SEED, 0), position))
        return Cue(speaker.card, speaker.label, "".join(notes), settings, named=scene)

    @staticmethod
    def _persona_notes(settings: dict, who: str | None, base: int, user_label: str, labels: list[str],
                       replace: bool) -> list[str]:
        """`who`'s description when the state at `base` has not read it (and, for a turn made again, the one that
        turn fed); any other description that only a turn after `base` had read waits for its owner's next line."""
        personas, notes = {}, []
        for owner, persona in settings[PERSONAS].items():
            if not fed_by(persona.get("fed_at"), base):
                fed_by_replaced = replace and persona.get("fed_at") == base + 1
                if (owner == who or fed_by_replaced) and persona.get("description"):
                    description = sanitize_text(f"[{user_label}: {persona['description']}]")
                    notes.append(turn(note_speaker(labels), description))
                    persona = dict(persona, fed_at=base + 1)
                else:
                    persona = dict(persona, fed_at=None)
            personas[owner] = persona
        settings[PERSONAS] = personas
        return notes

    async def _last_speaker(self, ch, base: int) -> str | None:
        """Who spoke the reply of turn `base` (the channel's own character for its greeting)."""
        if base <= 0:
            return None if not ch.character else self.speaker_name(self._card(ch).display_name, fallback="Bot")
        turns = await self.store.turns(ch.id, after=base - 1, upto=base)
        return turns[-1].out_speaker if turns else None
