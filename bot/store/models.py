"""The database tables: channels, their turns, exact state snapshots, saves, and the character library.

A channel's history is a list of turns; a turn is one exchange: an optional line spoken to the character
(`in_speaker`/`in_text`) and the character's reply. Each turn stores the exact tokens it fed and how they were
split into forward calls, so any state can be rebuilt bit for bit by replaying turns from an older snapshot.
"""
from __future__ import annotations

import datetime as dt

import re

from sqlalchemy import (JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text,
                        TypeDecorator, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAME_CHARS = 128  # a speaker label or a channel's user label (limits.max_name_chars can be at most this)
CARD_NAME_CHARS = 256  # a card's name and its file name
MESSAGE_ID_CHARS = 64  # a platform's message id (Telegram, Discord snowflakes, and room to spare)
WHO_CHARS = 160  # "platform:user_id": who owns a save or a personal card, who started a channel

# NUL and lone surrogates cannot be stored in a PostgreSQL text column (and a surrogate is not even UTF-8).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str, max_chars: int | None = None) -> str:
    """Text every database can store: no NUL, no lone surrogates, at most `max_chars` characters."""
    text = _UNSTORABLE.sub("", text)
    return text[:max_chars] if max_chars else text


class Clean(TypeDecorator):
    """A text column that never fails a commit: what is written is `storable` and fits the column (the code
    above makes its input fit already; this is the last guard, so one odd string cannot lose a turn)."""
    impl = String
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return storable(value, self.impl.length) if isinstance(value, str) else value


class CleanText(Clean):
    impl = Text
    cache_ok = True


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class Channel(Base):
    __tablename__ = "channels"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(128))
    character: Mapped[str | None] = mapped_column(String(64))  # content hash of the card in `characters`
    greeting_index: Mapped[int] = mapped_column(Integer, default=0)
    user_label: Mapped[str] = mapped_column(Clean(NAME_CHARS), default="User")  # {{user}} in the character's prompt
    params: Mapped[dict] = mapped_column(JSON, default=dict)  # sampling overrides; defaults come from config
    chat_format: Mapped[str] = mapped_column(String(32), default="names")
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    head: Mapped[int] = mapped_column(Integer, default=0)  # position of the last committed turn
    base_position: Mapped[int] = mapped_column(Integer, default=0)  # turns after this are in the state (rebase)
    started_by: Mapped[str | None] = mapped_column(String(WHO_CHARS), index=True)  # quota: conversations per user
    title: Mapped[str | None] = mapped_column(String(256))  # server/channel or chat title, for the admin page
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    __table_args__ = (UniqueConstraint("platform", "external_id", name="uq_channel_platform_external"),)


class Character(Base):
    __tablename__ = "characters"
    content_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(Clean(CARD_NAME_CHARS))
    source_format: Mapped[str] = mapped_column(String(32))
    card: Mapped[dict] = mapped_column(JSON)  # the normalized card (bot.cards Card.to_json()), for inspection
    filename: Mapped[str] = mapped_column(Clean(CARD_NAME_CHARS))
    raw: Mapped[bytes] = mapped_column(LargeBinary)  # the file as imported: parsed again at start
    avatar: Mapped[bytes | None] = mapped_column(LargeBinary)
    origin: Mapped[str] = mapped_column(String(16), default="import")  # "sample", "dir" (characters/), "import"
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LibraryEntry(Base):
    """A name in the character library and the card it stands for. One name, one card (case-insensitively,
    whoever owns it), so no import can shadow another card. A card row without an entry is no longer listed but
    stays while a channel or a save uses it."""
    __tablename__ = "library"
    name_key: Mapped[str] = mapped_column(String(CARD_NAME_CHARS), primary_key=True)  # the name, casefolded
    name: Mapped[str] = mapped_column(Clean(CARD_NAME_CHARS))
    content_hash: Mapped[str] = mapped_column(ForeignKey("characters.content_hash", ondelete="CASCADE"), index=True)
    owner: Mapped[str | None] = mapped_column(String(WHO_CHARS), index=True)  # None: the shared library
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Turn(Base):
    __tablename__ = "turns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # 1, 2, ... (0 is the character's prompt and greeting)
    kind: Mapped[str] = mapped_column(String(16))  # say | continue | as | edit ...
    in_speaker: Mapped[str | None] = mapped_column(Clean(NAME_CHARS))
    in_text: Mapped[str | None] = mapped_column(CleanText)
    out_speaker: Mapped[str] = mapped_column(Clean(NAME_CHARS))
    out_text: Mapped[str] = mapped_column(CleanText)
    fed: Mapped[bytes] = mapped_column(LargeBinary)  # int32 token ids fed by this turn
    prompt_len: Mapped[int] = mapped_column(Integer)  # the first tokens of `fed` are the cue, the rest the reply
    feed_lengths: Mapped[list] = mapped_column(JSON)  # run-length [[length, count], ...] of forward calls
    # The platform's message that fed this turn, and the bot's messages showing its reply (None: not known, e.g.
    # a slash command or a reply still painting): an edit or delete on the platform finds its turn by them.
    in_message_id: Mapped[str | None] = mapped_column(String(MESSAGE_ID_CHARS))
    out_message_ids: Mapped[list | None] = mapped_column(JSON)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (UniqueConstraint("channel_id", "position", name="uq_turn_position"),
                      Index("ix_turns_channel_in_message", "channel_id", "in_message_id"))


class Alternative(Base):
    """One of the replies a turn's line got (swipes). The turn row holds the chosen one's text and tokens; the
    others wait here with the tokens they fed, so choosing one rebuilds its exact state by feeding them."""
    __tablename__ = "alternatives"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, ... in the order they were written (gaps: dropped)
    chosen: Mapped[bool] = mapped_column(Boolean, default=False)
    out_text: Mapped[str] = mapped_column(CleanText)
    fed: Mapped[bytes] = mapped_column(LargeBinary)  # as Turn.fed
    prompt_len: Mapped[int] = mapped_column(Integer)
    feed_lengths: Mapped[list] = mapped_column(JSON)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (UniqueConstraint("turn_id", "number", name="uq_alternative_number"),)


class StateRow(Base):
    __tablename__ = "states"
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)  # the initial state and rebase points stay
    tokens: Mapped[int] = mapped_column(Integer)  # tokens in this state since its base (context fill)
    header: Mapped[list] = mapped_column(JSON)  # [[dtype, shape], ...]
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class InitialState(Base):
    """A character's prefilled prompt, shared by every channel using it with the same model and prompt."""
    __tablename__ = "initial_states"
    prompt_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), primary_key=True)
    character: Mapped[str] = mapped_column(String(64), index=True)
    tokens: Mapped[int] = mapped_column(Integer)
    header: Mapped[list] = mapped_column(JSON)
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Save(Base):
    """A named checkpoint of a channel: its turns, character and the state at its head."""
    __tablename__ = "saves"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel_id: Mapped[int] = mapped_column(ForeignKey("channels.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(Clean(64))
    owner: Mapped[str | None] = mapped_column(String(WHO_CHARS), index=True)  # quota: saves per user
    snapshot: Mapped[dict] = mapped_column(JSON)  # channel fields and turns
    fingerprint: Mapped[str] = mapped_column(String(64))
    tokens: Mapped[int] = mapped_column(Integer)
    header: Mapped[list] = mapped_column(JSON)
    blob: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    __table_args__ = (UniqueConstraint("channel_id", "name", name="uq_save_name"),)


class AuditEntry(Base):
    """An admin change, from any surface (a platform command or the admin web page): who, when, what."""
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    surface: Mapped[str] = mapped_column(String(32))  # telegram | discord | terminal | dashboard ...
    user_id: Mapped[str] = mapped_column(String(128))
    user_name: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(192), index=True)  # "platform:external_id"
    action: Mapped[str] = mapped_column(String(64))  # e.g. "params set"
    detail: Mapped[str] = mapped_column(Text, default="")


class ClusterFence(Base):
    """Which lease may write a partition's channels (cluster mode, bot/cluster/fences.py): the JetStream
    key-value revision of the lease a worker took. A write of a worker whose revision is no longer here is
    refused inside the same transaction, so a worker that lost its lease never commits."""
    __tablename__ = "cluster_fences"
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger)
    worker: Mapped[str] = mapped_column(String(128))
    taken: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ClusterHandled(Base):
    """Incoming events a cluster worker has fully handled (its key: the platform message and what happened to
    it), with the answer it gave, so a redelivery after a crash answers again instead of acting twice."""
    __tablename__ = "cluster_handled"
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    answer: Mapped[dict] = mapped_column(JSON)
    handled: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
