"""Async access to the database (SQLite by default, PostgreSQL by URL) through SQLAlchemy: small transactions,
atomic turn commits. States are stored with the fingerprint of the model that made them; a state from another
model is never fed.
"""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import column, delete, event, exists, func, inspect, select, table, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bot.store.codec import State, pack_state, unpack_state
from bot.store.errors import StoreError, shown_url
from bot.store.migrate import ensure_sqlite_dir, head_revision, import_driver, sqlite_path, upgrade_database
from bot.store.models import Alternative, AuditEntry, Channel, Character, InitialState, LibraryEntry, Save, StateRow, Turn, utcnow


class NameTaken(Exception):
    """The library already has a card of that name (it may have been added a moment ago by someone else)."""


class _Refused(Exception):
    def __init__(self, quota: str):
        self.quota = quota


@dataclass(frozen=True)
class SaveLimits:
    per_channel: int
    per_user: int  # 0: no per-user limit (a bot admin)
    total: int


@dataclass
class StoredState:
    position: int
    fingerprint: str
    tokens: int
    state: State
    pinned: bool


SQLITE_BUSY_SECONDS = 30.0  # how long a connection waits for SQLite's one write lock held by another process


class Store:
    """Async access to the database. Methods are small transactions; turn commits are atomic."""

    def __init__(self, url: str, snapshots: int = 10):
        self.url = url
        self.snapshots = snapshots
        self.engine: AsyncEngine | None = None
        self.sessions: _Sessions | None = None

    async def open(self, migrate: bool = True, revision: str = "head") -> None:
        """Connect (a URL that cannot be served is one StoreError line) and, unless `migrate` is False, migrate to
        `revision`. Without migrating nothing is created: `db check` must not make tables Alembic does not know."""
        import_driver(self.url)
        if migrate:
            ensure_sqlite_dir(self.url)
        elif (path := sqlite_path(self.url)) is not None and not path.is_file():
            raise StoreError(f"no database at {path} (the bot's first start or `rwkv-bot db upgrade` creates it)")
        kwargs: dict[str, Any] = {}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_SECONDS}
        self.engine = create_async_engine(self.url, **kwargs)
        if self.url.startswith("sqlite"):
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = _Sessions(async_sessionmaker(self.engine, expire_on_commit=False),
                                  one_writer=self.url.startswith("sqlite"))
        try:
            async with self.engine.connect():
                pass
        except (OSError, DBAPIError) as error:
            await self.close()
            reason = str(getattr(error, "orig", None) or error).splitlines()[0]
            raise StoreError(f"cannot connect to the database {shown_url(self.url)}: {reason}") from None
        if migrate:
            await asyncio.to_thread(upgrade_database, self.url, revision)

    async def close(self) -> None:
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None

    # -- channels
    async def get_or_create_channel(self, platform: str, external_id: str, defaults: dict | None = None) -> Channel:
        where = (Channel.platform == platform, Channel.external_id == external_id)
        async with self.sessions() as s:
            row = (await s.execute(select(Channel).where(*where))).scalar_one_or_none()
        if row is not None:
            return row
        row = Channel(platform=platform, external_id=external_id, params={}, settings={}, **(defaults or {}))
        try:
            async with self.sessions.begin() as s:
                s.add(row)
        except IntegrityError:  # created concurrently by another task: read theirs
            async with self.sessions() as s:
                return (await s.execute(select(Channel).where(*where))).scalar_one()
        return row

    async def find_channel(self, platform: str, external_id: str) -> Channel | None:
        async with self.sessions() as s:
            return (await s.execute(select(Channel).where(Channel.platform == platform,
                                                          Channel.external_id == external_id))).scalar_one_or_none()

    async def get_channel(self, channel_id: int) -> Channel:
        async with self.sessions() as s:
            return await s.get(Channel, channel_id)

    async def update_channel(self, channel_id: int, **fields) -> None:
        async with self.sessions.begin() as s:
            await s.execute(update(Channel).where(Channel.id == channel_id).values(**fields, updated=utcnow()))

    async def channels_count(self, started_by: str | None = None) -> int:
        """All channels, or those `started_by` one user."""
        q = select(func.count()).select_from(Channel)
        if started_by is not None:
            q = q.where(Channel.started_by == started_by)
        async with self.sessions() as s:
            return (await s.execute(q)).scalar_one()

    async def set_title(self, platform: str, external_id: str, title: str) -> bool:
        """Only the title: no lock needed, and the channel's last activity stays as it was. False: no channel."""
        async with self.sessions.begin() as s:
            result = await s.execute(update(Channel).where(Channel.platform == platform,
                                                           Channel.external_id == external_id)
                                     .values(title=title, updated=Channel.updated))
            return result.rowcount > 0

    async def channels_with_tokens(self, platform: str | None = None,
                                   external_id: str | None = None) -> list[tuple[Channel, int | None]]:
        """Channels (every one, or the one named) with the token count of their head state (None when that state
        is not stored), the most recently active first. Reading them creates nothing."""
        head_state = (StateRow.channel_id == Channel.id) & (StateRow.position == Channel.head)
        q = select(Channel, StateRow.tokens).outerjoin(StateRow, head_state).order_by(Channel.updated.desc())
        if platform is not None:
            q = q.where(Channel.platform == platform, Channel.external_id == external_id)
        async with self.sessions() as s:
            return [(channel, tokens) for channel, tokens in await s.execute(q)]

    # -- characters
    async def put_character(self, content_hash: str, name: str, source_format: str, card: dict, filename: str,
                            raw: bytes, avatar: bytes | None, origin: str, *, name_key: str,
                            owner: str | None = None, replace_name: bool = False) -> bool:
        """Store the card (unless its bytes are stored already) and list it under `name_key`, in one transaction;
        returns True when the card was not listed there before. A name listed for another card raises NameTaken,
        unless `replace_name` (the owner's characters/ directory: an edited file keeps its name)."""
        try:
            async with self.sessions.begin() as s:
                if await s.get(Character, content_hash) is None:
                    s.add(Character(content_hash=content_hash, name=name, source_format=source_format, card=card,
                                    filename=filename, raw=raw, avatar=avatar, origin=origin))
                entry = await s.get(LibraryEntry, name_key)
                if entry is not None and entry.content_hash == content_hash and entry.owner == owner:
                    return False
                if entry is not None and not replace_name:
                    raise NameTaken(name)
                if entry is not None:
                    await s.delete(entry)
                    await s.flush()
                s.add(LibraryEntry(name_key=name_key, name=name, content_hash=content_hash, owner=owner))
                return True
        except IntegrityError:
            async with self.sessions() as s:
                entry = await s.get(LibraryEntry, name_key)
                if entry is not None and entry.content_hash == content_hash and entry.owner == owner:
                    return False  # another process listed the same card at once (cluster workers starting)
                if entry is not None:  # the same name listed concurrently for another card
                    raise NameTaken(name) from None
                if await s.get(Character, content_hash) is not None:  # only the card's row raced: list it now
                    return await self.put_character(content_hash, name, source_format, card, filename, raw, avatar,
                                                    origin, name_key=name_key, owner=owner,
                                                    replace_name=replace_name)
            raise

    async def characters(self) -> list[Character]:
        async with self.sessions() as s:
            return list((await s.execute(select(Character).order_by(Character.name))).scalars())

    async def library(self) -> list[LibraryEntry]:
        async with self.sessions() as s:
            return list((await s.execute(select(LibraryEntry).order_by(LibraryEntry.name_key))).scalars())

    async def character_origins(self) -> dict[str, str]:
        """content hash -> origin ("sample", "dir", "import") of every stored card."""
        async with self.sessions() as s:
            return dict((await s.execute(select(Character.content_hash, Character.origin))).all())

    async def unlist_character(self, name_key: str, purge: bool = True) -> list[str]:
        """Take a name out of the library; returns the content hashes deleted because nothing uses them now."""
        async with self.sessions.begin() as s:
            await s.execute(delete(LibraryEntry).where(LibraryEntry.name_key == name_key))
        return await self.purge_characters() if purge else []

    async def purge_characters(self) -> list[str]:
        """Delete cards that are neither listed nor used by a channel or a save (and their prefilled prompts)."""
        saved = Save.snapshot["channel"]["character"].as_string()
        async with self.sessions.begin() as s:
            unused = list((await s.execute(
                select(Character.content_hash)
                .where(~exists().where(LibraryEntry.content_hash == Character.content_hash),
                       ~exists().where(Channel.character == Character.content_hash),
                       ~exists().where(saved == Character.content_hash)))).scalars())
            if unused:
                await s.execute(delete(InitialState).where(InitialState.character.in_(unused)))
                await s.execute(delete(Character).where(Character.content_hash.in_(unused)))
        return unused

    async def imported_bytes(self) -> int:
        """The size of every imported card file stored (listed or still in use), for the library's quota."""
        async with self.sessions() as s:
            return (await s.execute(select(func.coalesce(func.sum(func.length(Character.raw)), 0))
                                    .where(Character.origin == "import"))).scalar_one()

    async def owned_cards(self, owner: str) -> int:
        async with self.sessions() as s:
            return (await s.execute(select(func.count()).select_from(LibraryEntry)
                                    .where(LibraryEntry.owner == owner))).scalar_one()

    async def get_character(self, content_hash: str) -> Character | None:
        async with self.sessions() as s:
            return await s.get(Character, content_hash)

    # -- turns and states
    async def turns(self, channel_id: int, after: int = 0, upto: int | None = None) -> list[Turn]:
        q = select(Turn).where(Turn.channel_id == channel_id, Turn.position > after)
        if upto is not None:
            q = q.where(Turn.position <= upto)
        async with self.sessions() as s:
            return list((await s.execute(q.order_by(Turn.position))).scalars())

    async def last_turn(self, channel_id: int) -> Turn | None:
        async with self.sessions() as s:
            return (await s.execute(select(Turn).where(Turn.channel_id == channel_id)
                                    .order_by(Turn.position.desc()).limit(1))).scalar_one_or_none()

    async def head_turn_id(self, channel_id: int) -> int:
        """The id of the channel's last turn (0: none)."""
        async with self.sessions() as s:
            return (await s.execute(select(Turn.id).where(Turn.channel_id == channel_id)
                                    .order_by(Turn.position.desc()).limit(1))).scalar_one_or_none() or 0

    async def commit_turn(self, channel_id: int, turn: dict, state: State, fingerprint: str, tokens: int, *,
                          replace: bool = False, rebase: tuple[int, State, int] | None = None) -> int:
        """Atomically: the turn, its resulting state, the channel's head; prunes old snapshots.

        `replace`: the turn takes the place of the last one (regenerate, edit), whose turn and state stay until
        this commits. `rebase` = (position, state, tokens): the turn was built on a state rebuilt from the card at
        `position` (context full); that state is pinned there and becomes the channel's base, in the same
        transaction, so a turn that never commits leaves no rebase behind."""
        packed = await asyncio.to_thread(pack_state, state)
        packed_base = await asyncio.to_thread(pack_state, rebase[1]) if rebase else None
        async with self.sessions.begin() as s:
            channel = await s.get(Channel, channel_id, with_for_update=True)
            position = channel.head if replace else channel.head + 1
            if replace:
                await s.execute(delete(Turn).where(Turn.channel_id == channel_id, Turn.position >= position))
                await s.execute(delete(StateRow).where(StateRow.channel_id == channel_id,
                                                       StateRow.position >= position))
            if rebase is not None:
                base, _, base_tokens = rebase
                await s.execute(delete(StateRow).where(StateRow.channel_id == channel_id, StateRow.position == base))
                s.add(StateRow(channel_id=channel_id, position=base, fingerprint=fingerprint, pinned=True,
                               tokens=base_tokens, header=packed_base.header, blob=packed_base.blob))
                channel.base_position = base
            await s.flush()  # the replaced turn's row goes before its successor takes the position
            s.add(Turn(channel_id=channel_id, position=position, **turn))
            s.add(StateRow(channel_id=channel_id, position=position, fingerprint=fingerprint, pinned=False,
                           tokens=tokens, header=packed.header, blob=packed.blob))
            channel.head = position
            channel.updated = utcnow()
            await self._prune(s, channel_id, position)
        return position

    async def put_state(self, channel_id: int, position: int, state: State, fingerprint: str, tokens: int,
                        pinned: bool = False) -> None:
        packed = await asyncio.to_thread(pack_state, state)
        async with self.sessions.begin() as s:
            await s.execute(delete(StateRow).where(StateRow.channel_id == channel_id, StateRow.position == position))
            s.add(StateRow(channel_id=channel_id, position=position, fingerprint=fingerprint, pinned=pinned,
                           tokens=tokens, header=packed.header, blob=packed.blob))

    async def _prune(self, s: AsyncSession, channel_id: int, head: int) -> None:
        await s.execute(delete(StateRow).where(StateRow.channel_id == channel_id, StateRow.pinned.is_(False),
                                               StateRow.position <= head - self.snapshots))

    async def nearest_state(self, channel_id: int, position: int) -> StoredState | None:
        """The newest stored state at or before `position`."""
        async with self.sessions() as s:
            row = (await s.execute(select(StateRow).where(StateRow.channel_id == channel_id,
                                                          StateRow.position <= position)
                                   .order_by(StateRow.position.desc()).limit(1))).scalar_one_or_none()
        if row is None:
            return None
        state = await asyncio.to_thread(unpack_state, row.header, row.blob)
        return StoredState(row.position, row.fingerprint, row.tokens, state, row.pinned)

    async def truncate(self, channel_id: int, position: int) -> int:
        """Forget turns and states after `position` (undo) and move the head there; returns the channel's base
        now. Undoing past the base (the turn where the state was last rebuilt from the card) goes back to the
        state line before it: the base becomes the newest pinned state at or before `position` (0: the start)."""
        async with self.sessions.begin() as s:
            channel = await s.get(Channel, channel_id, with_for_update=True)
            await s.execute(delete(Turn).where(Turn.channel_id == channel_id, Turn.position > position))
            await s.execute(delete(StateRow).where(StateRow.channel_id == channel_id, StateRow.position > position))
            if channel.base_position > position:
                channel.base_position = (await s.execute(
                    select(func.coalesce(func.max(StateRow.position), 0))
                    .where(StateRow.channel_id == channel_id, StateRow.pinned.is_(True),
                           StateRow.position <= position))).scalar_one()
            channel.head = position
            channel.updated = utcnow()
            return channel.base_position

    async def turn_by_message(self, channel_id: int, message_id: str, after: int = 0) -> Turn | None:
        """The turn after `after` that the platform message `message_id` fed, or whose reply it shows."""
        where = (Turn.channel_id == channel_id, Turn.position > after)
        async with self.sessions() as s:
            fed = (await s.execute(select(Turn).where(*where, Turn.in_message_id == message_id)
                                   .limit(1))).scalar_one_or_none()
            if fed is not None:
                return fed
            for position, shown in (await s.execute(select(Turn.position, Turn.out_message_ids).where(*where))):
                if message_id in (shown or ()):
                    return (await s.execute(select(Turn).where(*where, Turn.position == position))).scalar_one()
        return None

    async def set_out_messages(self, channel_id: int, position: int, message_ids: list[str]) -> None:
        """The bot's messages that show the reply of the turn at `position` (an edit or delete finds it by them)."""
        async with self.sessions.begin() as s:
            await s.execute(update(Turn).where(Turn.channel_id == channel_id, Turn.position == position)
                            .values(out_message_ids=list(message_ids)))

    async def rewrite_turns(self, channel_id: int, start: int, turns: list[dict], state: State, fingerprint: str,
                            tokens: int, settings: dict | None = None) -> int:
        """Atomically: the turns from `start` on become `turns` (at start, start+1, ...), `state` is the state
        after the last of them, and the head moves there; returns the new head. Until this commits the old
        history stays whole (a crash in the middle of an edit loses nothing).

        A turn dict with an `id` is that existing turn, rewritten in place (moved to its new position), so its
        alternatives and the swipe buttons naming it stay; its `alternatives` (`number` -> the fields of
        `REWRITTEN_ALTERNATIVE`) replace what those alternatives fed, and alternatives not named there are
        dropped. Turns from `start` on that `turns` does not name are deleted (with their alternatives).
        `settings`: the channel's settings afterwards (None: unchanged)."""
        packed = await asyncio.to_thread(pack_state, state)
        head = start - 1 + len(turns)
        kept = [turn["id"] for turn in turns if turn.get("id")]
        async with self.sessions.begin() as s:
            channel = await s.get(Channel, channel_id, with_for_update=True)
            await s.execute(delete(Turn).where(Turn.channel_id == channel_id, Turn.position >= start,
                                               Turn.id.not_in(kept)))
            await s.execute(delete(StateRow).where(StateRow.channel_id == channel_id,
                                                   StateRow.position >= min(start, head)))
            await s.flush()
            # Positions only ever move down (a deleted turn's successors close the gap), so moving the kept turns
            # in order never puts two on one position.
            for offset, turn in enumerate(turns):
                fields = dict(turn)
                turn_id, alternatives = fields.pop("id", None), fields.pop("alternatives", None)
                if turn_id is None:
                    s.add(Turn(channel_id=channel_id, position=start + offset, **fields))
                    continue
                await s.execute(update(Turn).where(Turn.id == turn_id, Turn.channel_id == channel_id)
                                .values(position=start + offset, **fields))
                if alternatives is not None:
                    await self._rewrite_alternatives(s, turn_id, alternatives)
            await s.flush()
            pinned = head <= channel.base_position  # the base's own state (here: the start) stays
            s.add(StateRow(channel_id=channel_id, position=head, fingerprint=fingerprint, pinned=pinned,
                           tokens=tokens, header=packed.header, blob=packed.blob))
            channel.head = head
            if settings is not None:
                channel.settings = settings
            channel.updated = utcnow()
            await self._prune(s, channel_id, head)
        return head

    @staticmethod
    async def _rewrite_alternatives(s: AsyncSession, turn_id: int, alternatives: dict[int, dict]) -> None:
        await s.execute(delete(Alternative).where(Alternative.turn_id == turn_id,
                                                  Alternative.number.not_in(list(alternatives))))
        for number, fields in alternatives.items():
            await s.execute(update(Alternative).where(Alternative.turn_id == turn_id, Alternative.number == number)
                            .values(**{name: fields[name] for name in REWRITTEN_ALTERNATIVE}))

    async def reset_channel(self, channel_id: int, initial: State, fingerprint: str, tokens: int,
                            **channel_fields) -> None:
        """Start over: no turns; the initial state pinned at position 0."""
        packed = await asyncio.to_thread(pack_state, initial)
        async with self.sessions.begin() as s:
            await s.execute(delete(Turn).where(Turn.channel_id == channel_id))
            await s.execute(delete(StateRow).where(StateRow.channel_id == channel_id))
            s.add(StateRow(channel_id=channel_id, position=0, fingerprint=fingerprint, pinned=True, tokens=tokens,
                           header=packed.header, blob=packed.blob))
            await s.execute(update(Channel).where(Channel.id == channel_id)
                            .values(head=0, base_position=0, updated=utcnow(), **channel_fields))

    # -- alternatives (swipes)
    async def swipe_label(self, turn_id: int) -> tuple[int, int]:
        """(the chosen alternative's place, how many) of a turn; (1, 1) for a turn never swiped."""
        alternatives = await self.alternatives(turn_id)
        return _label(alternatives)

    async def alternatives(self, turn_id: int) -> list[Alternative]:
        async with self.sessions() as s:
            return list((await s.execute(select(Alternative).where(Alternative.turn_id == turn_id)
                                         .order_by(Alternative.number))).scalars())

    async def add_alternative(self, channel_id: int, turn_id: int, reply: dict, state: State, fingerprint: str,
                              tokens: int, max_alternatives: int,
                              rebase: tuple[int, State, int] | None = None) -> tuple[int, int] | None:
        """Atomically: a new reply (`reply`: out_text, fed, prompt_len, feed_lengths) for the channel's head turn
        `turn_id`, chosen and on the turn row, with its state; the turn's first reply becomes alternative 1, and the
        oldest beyond `max_alternatives` are dropped. None (nothing changes) when `turn_id` is no longer the head
        turn. `rebase` as in commit_turn."""
        packed = await asyncio.to_thread(pack_state, state)
        packed_base = await asyncio.to_thread(pack_state, rebase[1]) if rebase else None
        async with self.sessions.begin() as s:
            channel, turn = await self._head_turn(s, channel_id, turn_id)
            if turn is None:
                return None
            alternatives = list((await s.execute(select(Alternative).where(Alternative.turn_id == turn_id)
                                                 .order_by(Alternative.number))).scalars())
            if not alternatives:
                first = Alternative(turn_id=turn_id, number=1, chosen=False, **_reply_of(turn))
                s.add(first)
                alternatives.append(first)
            for alternative in alternatives:
                alternative.chosen = False
            new = Alternative(turn_id=turn_id, number=alternatives[-1].number + 1, chosen=True, **reply)
            s.add(new)
            alternatives.append(new)
            while len(alternatives) > max_alternatives:
                await s.delete(alternatives.pop(0))
            if rebase is not None:
                base, _, base_tokens = rebase
                await s.execute(delete(StateRow).where(StateRow.channel_id == channel_id, StateRow.position == base))
                s.add(StateRow(channel_id=channel_id, position=base, fingerprint=fingerprint, pinned=True,
                               tokens=base_tokens, header=packed_base.header, blob=packed_base.blob))
                channel.base_position = base
            self._show_reply(channel, turn, reply)
            await s.execute(delete(StateRow).where(StateRow.channel_id == channel_id,
                                                   StateRow.position == turn.position))
            await s.flush()
            self._put_head_state(s, channel, packed, fingerprint, tokens)
            return _label(alternatives)

    async def choose_alternative(self, channel_id: int, turn_id: int, number: int, state: State, fingerprint: str,
                                 tokens: int) -> tuple[int, int] | None:
        """Atomically: alternative `number` goes on the head turn `turn_id`, with its state. None when the turn is
        no longer the head turn or the alternative is gone."""
        packed = await asyncio.to_thread(pack_state, state)
        async with self.sessions.begin() as s:
            channel, turn = await self._head_turn(s, channel_id, turn_id)
            if turn is None:
                return None
            alternatives = list((await s.execute(select(Alternative).where(Alternative.turn_id == turn_id)
                                                 .order_by(Alternative.number))).scalars())
            chosen = next((a for a in alternatives if a.number == number), None)
            if chosen is None:
                return None
            for alternative in alternatives:
                alternative.chosen = alternative is chosen
            self._show_reply(channel, turn, _reply_of(chosen))
            await s.execute(delete(StateRow).where(StateRow.channel_id == channel_id,
                                                   StateRow.position == turn.position))
            await s.flush()
            self._put_head_state(s, channel, packed, fingerprint, tokens)
            return _label(alternatives)

    @staticmethod
    async def _head_turn(s: AsyncSession, channel_id: int, turn_id: int):
        channel = await s.get(Channel, channel_id, with_for_update=True)
        turn = await s.get(Turn, turn_id, with_for_update=True)
        if turn is None or turn.channel_id != channel_id or turn.position != channel.head:
            return channel, None
        return channel, turn

    @staticmethod
    def _show_reply(channel: Channel, turn: Turn, reply: dict) -> None:
        for name, value in reply.items():
            setattr(turn, name, value)
        channel.updated = utcnow()

    @staticmethod
    def _put_head_state(s, channel: Channel, packed, fingerprint: str, tokens: int) -> None:
        s.add(StateRow(channel_id=channel.id, position=channel.head, fingerprint=fingerprint, pinned=False,
                       tokens=tokens, header=packed.header, blob=packed.blob))

    # -- initial states
    async def get_initial(self, prompt_hash: str, fingerprint: str) -> tuple[State, int] | None:
        async with self.sessions() as s:
            row = await s.get(InitialState, (prompt_hash, fingerprint))
        if row is None:
            return None
        return await asyncio.to_thread(unpack_state, row.header, row.blob), row.tokens

    async def put_initial(self, prompt_hash: str, fingerprint: str, character: str, state: State, tokens: int) -> None:
        packed = await asyncio.to_thread(pack_state, state)
        try:
            async with self.sessions.begin() as s:
                if await s.get(InitialState, (prompt_hash, fingerprint)) is None:
                    s.add(InitialState(prompt_hash=prompt_hash, fingerprint=fingerprint, character=character,
                                       tokens=tokens, header=packed.header, blob=packed.blob))
        except IntegrityError:  # two channels started the same character at once: the other one stored it first
            pass

    # -- named saves
    async def saves(self, channel_id: int) -> list[Save]:
        async with self.sessions() as s:
            return list((await s.execute(select(Save).where(Save.channel_id == channel_id)
                                         .order_by(Save.created))).scalars())

    async def get_save(self, channel_id: int, name: str) -> Save | None:
        async with self.sessions() as s:
            return (await s.execute(select(Save).where(Save.channel_id == channel_id, Save.name == name))
                    ).scalar_one_or_none()

    async def put_save(self, channel_id: int, name: str, snapshot: dict, state: State, fingerprint: str,
                       tokens: int, *, owner: str | None, limits: "SaveLimits") -> str | None:
        """Create or overwrite a save; returns None, or which quota refused it ("channel", "user", "total")."""
        packed = await asyncio.to_thread(pack_state, state)
        try:
            async with self.sessions.begin() as s:
                await s.execute(delete(Save).where(Save.channel_id == channel_id, Save.name == name))

                async def count(*where) -> int:
                    return (await s.execute(select(func.count()).select_from(Save).where(*where))).scalar_one()

                if await count(Save.channel_id == channel_id) >= limits.per_channel:
                    raise _Refused("channel")  # rolls back: an overwritten save stays
                if owner is not None and limits.per_user and await count(Save.owner == owner) >= limits.per_user:
                    raise _Refused("user")
                if await count() >= limits.total:
                    raise _Refused("total")
                s.add(Save(channel_id=channel_id, name=name, owner=owner, snapshot=snapshot, fingerprint=fingerprint,
                           tokens=tokens, header=packed.header, blob=packed.blob))
        except _Refused as refused:
            return refused.quota
        return None

    async def delete_save(self, channel_id: int, name: str) -> bool:
        async with self.sessions.begin() as s:
            result = await s.execute(delete(Save).where(Save.channel_id == channel_id, Save.name == name))
            return result.rowcount > 0

    async def restore(self, channel_id: int, fields: dict, turns: list[dict], head_state: State | None,
                      fingerprint: str, tokens: int, initial: tuple[State, int] | None) -> None:
        """Replace a channel's turns and states with a save's, atomically."""
        packed = await asyncio.to_thread(pack_state, head_state) if head_state is not None else None
        packed_initial = await asyncio.to_thread(pack_state, initial[0]) if initial else None
        async with self.sessions.begin() as s:
            await s.execute(delete(Turn).where(Turn.channel_id == channel_id))
            await s.execute(delete(StateRow).where(StateRow.channel_id == channel_id))
            for t in turns:
                s.add(Turn(channel_id=channel_id, **t))
            if packed_initial is not None:
                s.add(StateRow(channel_id=channel_id, position=0, fingerprint=fingerprint, pinned=True,
                               tokens=initial[1], header=packed_initial.header, blob=packed_initial.blob))
            if packed is not None and not (packed_initial is not None and fields["head"] == 0):
                s.add(StateRow(channel_id=channel_id, position=fields["head"], fingerprint=fingerprint,
                               pinned=True, tokens=tokens, header=packed.header, blob=packed.blob))
            await s.execute(update(Channel).where(Channel.id == channel_id).values(updated=utcnow(), **fields))

    # -- the audit log
    async def add_audit(self, *, surface: str, user_id: str, user_name: str, channel: str, action: str,
                        detail: str) -> None:
        async with self.sessions.begin() as s:
            s.add(AuditEntry(surface=surface, user_id=user_id, user_name=user_name, channel=channel, action=action,
                             detail=detail))

    async def audit_entries(self, channels: list[str] | None = None, limit: int = 200) -> list[AuditEntry]:
        """The newest first; only those of `channels` when given."""
        q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if channels is not None:
            q = q.where(AuditEntry.channel.in_(channels))
        async with self.sessions() as s:
            return list((await s.execute(q)).scalars())

    # -- integrity
    async def revision(self) -> str | None:
        """The Alembic revision the database is at; None when it was never migrated."""
        async with self.engine.connect() as conn:
            if not await conn.run_sync(lambda sync: inspect(sync).has_table("alembic_version")):
                return None
            return (await conn.execute(select(table("alembic_version", column("version_num"))
                                              .c.version_num))).scalar_one_or_none()

    async def row_counts(self, tables: list[str]) -> dict[str, int]:
        """Rows in each of `tables` that exists."""
        async with self.engine.connect() as conn:
            present = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
            return {name: (await conn.execute(select(func.count()).select_from(table(name)))).scalar_one()
                    for name in tables if name in present}

    async def check(self) -> list[str]:
        """Problems found (empty = consistent): the migration revision, SQLite's own check, then our invariants."""
        revision, head = await self.revision(), head_revision()
        if revision is None:
            return ["the database was never migrated (no alembic_version table): run `rwkv-bot db upgrade`"]
        if revision != head:
            return [f"the database is at revision {revision}, this rwkv-bot expects {head}: run `rwkv-bot db upgrade`"]
        problems: list[str] = []
        async with self.sessions() as s:
            if self.url.startswith("sqlite"):
                result = (await s.execute(text_sql("PRAGMA integrity_check"))).scalar_one()
                if result != "ok":
                    problems.append(f"sqlite integrity_check: {result}")
            channels = list((await s.execute(select(Channel))).scalars())
            for ch in channels:
                positions = list((await s.execute(select(Turn.position).where(Turn.channel_id == ch.id)
                                                  .order_by(Turn.position))).scalars())
                if positions != list(range(1, ch.head + 1)):
                    problems.append(f"channel {ch.id}: turns {positions[:5]}... do not run 1..{ch.head}")
                states = list((await s.execute(select(StateRow.position).where(StateRow.channel_id == ch.id)))
                              .scalars())
                if ch.character and 0 not in states and ch.base_position == 0:
                    problems.append(f"channel {ch.id}: no initial state")
                if any(p > ch.head for p in states):
                    problems.append(f"channel {ch.id}: a state beyond the head {ch.head}")
                if ch.base_position > ch.head:
                    problems.append(f"channel {ch.id}: its base {ch.base_position} is beyond the head {ch.head}")
        return problems


REPLY_FIELDS = ("out_text", "fed", "prompt_len", "feed_lengths")  # what differs between a turn's alternatives
REWRITTEN_ALTERNATIVE = ("fed", "prompt_len", "feed_lengths")  # what a history rewrite changes (the cue): its text stays


def _reply_of(row) -> dict:
    return {name: getattr(row, name) for name in REPLY_FIELDS}


def _label(alternatives: list[Alternative]) -> tuple[int, int]:
    """(the chosen one's place, 1-based; how many); a turn without alternatives shows its one reply: (1, 1)."""
    for place, alternative in enumerate(alternatives, 1):
        if alternative.chosen:
            return place, len(alternatives)
    return 1, max(1, len(alternatives))


def text_sql(sql: str):
    from sqlalchemy import text

    return text(sql)


class _Sessions:
    """`sessions()` for reads, `sessions.begin()` for a write transaction. SQLite has one write lock, and its busy
    wait is a timeout: under load many writers of this process waiting there would time out ("database is
    locked"). So on SQLite this process's writers queue here, in arrival order, and SQLite's own wait only ever
    covers other processes."""

    def __init__(self, maker: async_sessionmaker[AsyncSession], one_writer: bool):
        self._maker = maker
        self._writer = asyncio.Lock() if one_writer else None

    def __call__(self) -> AsyncSession:
        return self._maker()

    @contextlib.asynccontextmanager
    async def begin(self):
        if self._writer is None:
            async with self._maker.begin() as session:
                yield session
            return
        async with self._writer:
            async with self._maker.begin() as session:
                yield session


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed turn survives a process kill
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
