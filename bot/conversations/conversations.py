"""Per-channel conversations: the character, its params, the turn log and the exact RNN state at every turn.

Every operation on a channel runs under that channel's lock, in arrival order. A turn is committed (its text,
its fed tokens and the resulting state, in one transaction) before its reply is final; a turn that is cut off
(crash, shutdown, cancel) leaves the channel exactly where it was. States live in a small in-memory LRU and in the
database; anything missing is rebuilt by replaying the stored turns from the nearest older snapshot, feeding the
same tokens in the same forward calls, so the rebuilt state is the same state.
"""
from __future__ import annotations

import asyncio
import base64
import collections
import contextvars
import hashlib
import logging
from dataclasses import dataclass, field
from typing import AsyncIterator

from bot.cards.turns import reply_cue, sanitize_name, sanitize_text, turn
from bot.conversations.errors import ConversationError
from bot.conversations.history import UNANSWERED, HistoryRewrites
from bot.conversations.labels import distinct_label
from bot.conversations.scenes import Scenes, forget_fed
from bot.conversations.swipes import Swipes, TurnStopped
from bot.engine.backend import State, clone_state
from bot.engine.params import SamplingParams
from bot.engine.engine import Engine
from bot.engine.outputs import EngineError, GenerationCancelled, GenerationResult
from bot.store import (NAME_CHARS, Channel, SaveLimits, Store, Turn, expand_runs, run_length, split_by_lengths,
                       storable, tokens_from_bytes, tokens_to_bytes)

log = logging.getLogger(__name__)

CHAT_FORMATS = ("names", "user-assistant")
DEFAULT_MAX_CONTEXT = 8192
RECENT_TURNS = 4  # turns scanned for lorebook keys besides the new message


class Busy(ConversationError):
    pass


@dataclass(frozen=True)
class Quotas:
    """What one user, and everyone together, may keep in the database (the `limits` section of the config).
    A bot admin is held only to the totals."""
    saves_per_channel: int
    saves_per_user: int
    saves_total: int
    channels_per_user: int  # conversations a user starts (each keeps its own stored states)
    channels_total: int

    @classmethod
    def from_config(cls, limits) -> "Quotas":
        return cls(limits.max_saves, limits.max_user_saves, limits.max_saves_total, limits.max_user_channels,
                   limits.max_channels)


NO_QUOTAS = Quotas(*(10**9,) * 5)

# Who the work in this task is for: ("platform:user_id", is a bot admin). The command layer sets it for each
# message; a channel created on their behalf counts against their quota. A context variable, not an argument,
# because every operation can be a channel's first and none may wait for anything before taking its place in
# the channel's queue (arrival order).
acting_for: contextvars.ContextVar[tuple[str, bool] | None] = contextvars.ContextVar("acting_for", default=None)


@dataclass(frozen=True)
class ChannelKey:
    platform: str
    external_id: str

    def __str__(self) -> str:
        return f"{self.platform}:{self.external_id}"


@dataclass
class HotState:
    position: int
    fingerprint: str
    tokens: int
    state: State


@dataclass
class TurnResult:
    text: str
    speaker: str
    position: int
    stop_reason: str
    turn_id: int = 0  # the turn's row: what a swipe button names
    label: tuple[int, int] = (1, 1)  # (which alternative is shown, how many there are)


class TurnStream:
    """A reply being generated: iterate for the text so far; `await result()` returns once it is committed."""

    def __init__(self, speaker: str, avatar: bytes | None, generation, committed: asyncio.Future, notice: str = "",
                 notice_args: dict | None = None, owner: str = "", named: bool = False):
        self.speaker = speaker
        self.avatar = avatar
        self.named = named  # several characters share the channel: the speaker's name is shown with the text
        self.notice = notice  # a bot.i18n key, e.g. "message_truncated", filled in with notice_args
        self.notice_args = notice_args or {}
        self.owner = owner  # "platform:user_id" of whom it answers ("" where nobody asked): /stop is theirs
        self.stopped = False  # /stop was asked for
        self._generation = generation
        self._committed = committed

    def __aiter__(self) -> AsyncIterator[str]:
        return self._generation.__aiter__()

    async def result(self) -> TurnResult:
        return await asyncio.shield(self._committed)

    def cancel(self) -> None:
        self._generation.cancel()

    def stop(self) -> None:
        """End the reply here and keep what it wrote (nothing written: the turn is dropped)."""
        self.stopped = True
        self._generation.stop()

    @property
    def queued(self) -> int:
        """Its place in the queue for the GPU (1 = next), 0 once it is being written."""
        return self._generation.queued


@dataclass
class ChannelView:
    """What commands show about a channel."""
    id: int
    character: object | None  # bot.cards.Card
    params: SamplingParams
    overrides: dict
    chat_format: str
    head: int
    context_tokens: int
    max_context: int
    settings: dict


class Conversations(Swipes, HistoryRewrites, Scenes):
    def __init__(self, engine: Engine, store: Store, library, *, sampling_defaults: SamplingParams | None = None,
                 max_context_tokens: int = 0, hot_states: int = 256, max_message_chars: int = 4000,
                 max_name_chars: int = 32, max_message_tokens: int = 2048, channel_queue: int = 3,
                 global_queue: int = 1000, state_id: str = "", quotas: Quotas = NO_QUOTAS, max_swipes: int = 20,
                 max_cast: int = 8):
        self.engine = engine
        self.max_cast = max_cast  # characters in one channel's scene
        self.store = store
        self.library = library
        self.tokenizer = engine.tokenizer
        self.sampling_defaults = sampling_defaults or SamplingParams()
        self.max_context = max_context_tokens or DEFAULT_MAX_CONTEXT
        self.max_message_chars = max_message_chars
        self.max_name_chars = min(max_name_chars, NAME_CHARS)
        self.max_message_tokens = max_message_tokens
        self.quotas = quotas
        self.max_swipes = max_swipes
        self._writing: dict[ChannelKey, TurnStream] = {}  # the reply being written in each channel (/stop)
        self._admitted: set[ChannelKey] = set()  # channels known to exist (they are never deleted)
        self.channel_queue = channel_queue
        self.global_queue = global_queue
        # A state is valid for one model, numeric format and initial state (state-tuning file).
        self.fingerprint = hashlib.sha256(f"{engine.info.fingerprint}|{state_id}".encode()).hexdigest()[:32]
        self._hot: collections.OrderedDict[int, HotState] = collections.OrderedDict()
        self._hot_limit = hot_states
        self._locks: dict[ChannelKey, asyncio.Lock] = {}
        self._waiting: collections.Counter[ChannelKey] = collections.Counter()
        self._tasks: set[asyncio.Task] = set()
        self.accepting = True

    # ----- channels ---------------------------------------------------------------------------------------
    async def channel(self, key: ChannelKey, user_label: str = "User") -> Channel:
        """The channel's row; a new channel counts against the quota of the user it is created for (see
        `acting_for`), and against everyone's (ConversationError when either is full)."""
        if key not in self._admitted:
            row = await self.store.find_channel(key.platform, key.external_id)
            if row is not None:
                self._admitted.add(key)
                return row
            await self._check_channel_quotas()
        row = await self.store.get_or_create_channel(key.platform, key.external_id, {
            "user_label": self.speaker_name(user_label), "greeting_index": 0, "chat_format": "names", "head": 0,
            "base_position": 0, "started_by": (acting_for.get() or (None,))[0]})
        self._admitted.add(key)
        return row

    async def _check_channel_quotas(self) -> None:
        acting = acting_for.get()
        if acting is None:  # not for a user (the terminal opening its own channel): the owner's doing
            return
        who, bot_admin = acting
        if not bot_admin and await self.store.channels_count(started_by=who) >= self.quotas.channels_per_user:
            raise ConversationError("too_many_channels", limit=self.quotas.channels_per_user)
        if await self.store.channels_count() >= self.quotas.channels_total:
            raise ConversationError("channels_full")

    def speaker_name(self, name: str, fallback: str = "User") -> str:
        """A name as it is fed and stored: one line, no ':', no NUL, at most max_name_chars."""
        return sanitize_name(storable(name), fallback=fallback, max_chars=self.max_name_chars)

    async def view(self, key: ChannelKey) -> ChannelView:
        ch = await self.channel(key)
        card = self._card(ch)
        hot = await self._head_state_info(ch)
        return ChannelView(id=ch.id, character=card, params=self.params_of(ch), overrides=dict(ch.params or {}),
                           chat_format=ch.chat_format, head=ch.head, context_tokens=hot,
                           max_context=self.max_context, settings=dict(ch.settings or {}))

    def params_of(self, ch: Channel) -> SamplingParams:
        return SamplingParams.from_dict(ch.params or {}, base=self.sampling_defaults)

    def _card(self, ch: Channel):
        card = self.library.get(ch.character) if ch.character else None
        return card or self.library.default()

    def _labels(self, ch: Channel, card, speaker: str | None = None, replier: str | None = None,
                cast: tuple[str, ...] = ()) -> tuple[str, str]:
        """(character label, user label) as the model reads them. A user whose name is the character's (or the
        one who replies this time, or a label the bot feeds itself, like "System") is told apart by a suffix:
        nobody's line can pass for the character's or for a note."""
        if ch.chat_format == "user-assistant":
            return "Assistant", "User"
        char = self.speaker_name(card.display_name, fallback="Bot")
        user = self.speaker_name(speaker or ch.user_label)
        return char, distinct_label(user, cast=(char, replier or char, *cast), max_chars=self.max_name_chars)

    # ----- turns ------------------------------------------------------------------------------------------
    async def say(self, key: ChannelKey, speaker: str, text: str, *, kind: str = "say",
                  reply_speaker: str | None = None, seed: int | None = None, message_id: str = "",
                  who: str | None = None, addressed_to: str = "") -> TurnStream:
        """A line spoken to the character (by the user, or by NAME with /as); the character replies.
        `message_id`: the platform's message that said it (its edits and deletes rewrite this turn). `who`
        ("platform:user id") speaks under their /persona; `addressed_to`: the character whose message the line
        answers (a scene's speaker when nobody is named)."""
        cleaned, notice = self._clean_message(text)
        if not cleaned:
            raise ConversationError("empty_message")
        return await self._turn(key, kind=kind, speaker=speaker, text=cleaned, reply_speaker=reply_speaker,
                                seed=seed, notice=notice, message_id=message_id, who=who,
                                addressed_to=addressed_to)

    async def continue_(self, key: ChannelKey, reply_speaker: str | None = None, seed: int | None = None) -> TurnStream:
        """The character (or `reply_speaker`) goes on speaking without a new line from the user."""
        return await self._turn(key, kind="continue", speaker=None, text=None, reply_speaker=reply_speaker, seed=seed)

    async def regen(self, key: ChannelKey, seed: int | None = None, turn_id: int | None = None,
                    lock: asyncio.Lock | None = None) -> TurnStream:
        """A new reply to the last line, asked again from the state before it: a new alternative of the last
        turn (swipe past the end), which keeps the others. The turn shows its old reply until the new one is
        committed: a cancel, a failure or a crash leaves it as it was. `turn_id`: only if that is the last turn.
        `lock`: the channel's lock, already held (a swipe hands it over)."""
        lock = lock or await self._acquire(key)
        try:
            ch = await self.channel(key)
            last = await self.store.last_turn(ch.id)
            if last is None:
                raise ConversationError("nothing_to_regen")
            if turn_id is not None and last.id != turn_id:
                raise ConversationError("swipe_too_old")
        except BaseException:
            lock.release()
            raise
        kind = "say" if last.kind in ("edit", UNANSWERED) else last.kind
        return await self._turn(key, kind=kind, speaker=last.in_speaker, text=last.in_text,
                                reply_speaker=last.out_speaker, seed=seed, lock=lock, replace=True,
                                alternative_of=None if last.kind == UNANSWERED else last.id,
                                message_id=last.in_message_id or "")

    def _clean_message(self, text: str) -> tuple[str, tuple[str, dict] | None]:
        """The text as fed (one turn, storable), and the notice to give when it had to be shortened: at most
        `max_message_chars` characters and `max_message_tokens` tokens (invisible characters can cost four
        tokens each; one message must never fill the context and make the state forget everything)."""
        limit = None
        if len(text) > self.max_message_chars:
            text = text[: self.max_message_chars]
            limit = self.max_message_chars
        text = sanitize_text(storable(text))
        if self.tokenizer.count(text) > self.max_message_tokens:
            low, high = 0, len(text)  # the longest prefix within the token limit
            while low < high:
                mid = (low + high + 1) // 2
                if self.tokenizer.count(text[:mid]) <= self.max_message_tokens:
                    low = mid
                else:
                    high = mid - 1
            text = sanitize_text(text[:low])
            limit = len(text)
        return text, (("message_truncated", {"limit": limit}) if limit is not None else None)

    async def _turn(self, key: ChannelKey, *, kind: str, speaker: str | None, text: str | None,
                    reply_speaker: str | None, seed: int | None, notice: tuple[str, dict] | None = None,
                    lock: asyncio.Lock | None = None, replace: bool = False,
                    alternative_of: int | None = None, message_id: str = "", who: str | None = None,
                    addressed_to: str = "") -> TurnStream:
        """Generate a turn after the head, or (`replace`) in place of the last turn, from the state before it."""
        lock = lock or await self._acquire(key)
        try:
            ch = await self.channel(key, speaker or "User")
            card = self._card(ch)
            if card is None:
                raise ConversationError("no_character")
            reply_speaker = reply_speaker or (ch.settings or {}).get("next_speaker")
            replier = self.speaker_name(reply_speaker) if reply_speaker and ch.chat_format == "names" else None
            if kind == "say":
                speaker = self.persona_name(ch, who) or speaker
            scene = tuple(m.label for m in self.members(ch, card)[1:]) if ch.chat_format == "names" else ()
            char_label, user_label = self._labels(ch, card, speaker, replier, cast=scene)
            base = ch.head - 1 if replace else ch.head
            hot = await self._state_at(ch, card, base)
            rebase = None
            if hot.tokens > self.max_context:  # committed with the turn, so a turn cut off leaves no rebase
                log.info("channel %s: context over %d tokens; rebasing", ch.id, self.max_context)
                hot = await self._rebased_state(ch, card, base)
                rebase = (base, hot.state, hot.tokens)
            cue = await self.scene_cue(ch, card, base=base, text=text, forced=replier, char_label=char_label,
                                       addressed_to=addressed_to, who=who if kind == "say" else None,
                                       user_label=user_label, rebased=rebase is not None, replace=replace)
            out_speaker = cue.label
            prompt = cue.notes  # a scene's introductions and persona descriptions, before the line
            if text is not None:
                in_speaker = user_label if kind == "say" else self.speaker_name(speaker)
                prompt += turn(in_speaker, text) + await self._preamble(
                    cue.card, ch, base, text, user_label, char_label if cue.card is card else out_speaker)
            else:
                in_speaker = None
            prompt += reply_cue(out_speaker)
            prompt_tokens = self.tokenizer.encode(prompt)
            generation = self.engine.generate(hot.state, prompt_tokens, self.params_of(ch), channel=str(key),
                                              seed=seed)
        except BaseException:
            lock.release()
            raise
        committed = asyncio.get_running_loop().create_future()
        record = {"kind": kind, "in_speaker": in_speaker, "in_text": text, "out_speaker": out_speaker,
                  "in_message_id": message_id or None}
        finish = _Finish(ch, hot, generation, len(prompt_tokens), record, committed, lock, replace, rebase,
                         cue.settings, alternative_of)
        stream = TurnStream(out_speaker, getattr(cue.card, "avatar", None), generation, committed,
                            *(notice or ("",)), owner=(acting_for.get() or ("",))[0], named=cue.named)
        self._writing[key] = finish.stream = stream
        finish.channel_key = key
        task = asyncio.create_task(self._finish_turn(finish))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return stream

    async def _finish_turn(self, f: "_Finish") -> None:
        ch = f.channel
        try:
            result: GenerationResult = await f.generation.result()
            if result.stop_reason == "stopped" and not result.text:
                raise TurnStopped()  # /stop before a word: the turn is dropped
            tokens = f.hot.tokens + len(result.fed)
            reply = dict(out_text=storable(result.text), fed=tokens_to_bytes(result.fed), prompt_len=f.prompt_len,
                         feed_lengths=run_length(result.feed_lengths))
            try:
                if f.alternative_of is not None:
                    position, turn_id, label = await self._commit_alternative(ch, f.alternative_of, reply,
                                                                              result.state, tokens, f.rebase)
                else:
                    position = await self.store.commit_turn(ch.id, dict(f.record, **reply), result.state,
                                                            self.fingerprint, tokens, replace=f.replace,
                                                            rebase=f.rebase)
                    turn_id, label = await self.store.head_turn_id(ch.id), (1, 1)
            except ConversationError:
                raise
            except Exception as exc:  # the database refused: the channel is as it was; say so like a failed step
                log.error("channel %s: turn not stored: %s", ch.id, exc.__class__.__name__)  # (its text holds ours)
                raise _NotStored("the reply could not be stored") from None
            self._remember(ch.id, HotState(position, self.fingerprint, tokens, result.state))
            if f.settings != (ch.settings or {}):  # /reply NAME used up, what the scene has now read
                await self.store.update_channel(ch.id, settings=f.settings)
            f.committed.set_result(TurnResult(storable(result.text), f.record["out_speaker"], position,
                                              result.stop_reason, turn_id, label))
        except BaseException as exc:  # cancelled or failed: nothing was committed; the channel is unchanged
            if isinstance(exc, GenerationCancelled) and f.stream is not None and f.stream.stopped:
                exc = TurnStopped()  # /stop before a word (the engine dropped it as a cancel)
            if not isinstance(exc, (GenerationCancelled, asyncio.CancelledError, _NotStored, ConversationError)):
                log.error("channel %s: turn failed: %s: %s", ch.id, exc.__class__.__name__, exc)
            if not f.committed.done():
                f.committed.set_exception(exc if isinstance(exc, Exception) else GenerationCancelled())
                f.committed.exception()
        finally:
            if self._writing.get(f.channel_key) is f.stream:
                del self._writing[f.channel_key]
            f.lock.release()

    async def _preamble(self, card, ch: Channel, base: int, text: str, user_label: str, char_label: str) -> str:
        """Lorebook notes and post-history instructions for this reply (bot.cards decides what applies)."""
        recent = await self.store.turns(ch.id, after=max(0, base - RECENT_TURNS), upto=base)
        return await self._preamble_after(card, recent, text, user_label, char_label)

    async def _preamble_after(self, card, recent_turns: list, text: str, user_label: str, char_label: str) -> str:
        """The preamble of a reply to `text` after `recent_turns` (the last RECENT_TURNS turns before it)."""
        from bot.cards import reply_preamble

        recent = []
        for t in recent_turns[-RECENT_TURNS:]:
            recent += [x for x in (t.in_text, t.out_text) if x]
        # Card work (lorebook scan, macros) runs in a thread: a large or hostile card must not stall other channels.
        return await asyncio.to_thread(reply_preamble, card, message=text, recent=recent, user=user_label,
                                       char_label=char_label, count_tokens=self.tokenizer.count)

    async def suggest(self, key: ChannelKey) -> str:
        """What the user might say next, generated from a copy of the state (the channel is not changed)."""
        async with await self._locked(key):
            ch = await self.channel(key)
            card = self._card(ch)
            if card is None:
                raise ConversationError("no_character")
            _, user_label = self._labels(ch, card)
            hot = await self._head_state(ch, card)
            generation = self.engine.generate(clone_state(hot.state), self.tokenizer.encode(reply_cue(user_label)),
                                              self.params_of(ch), channel=str(key))
            return (await generation.result()).text

    async def edit_last(self, key: ChannelKey, text: str) -> TurnResult:
        """Replace the character's last reply; the state becomes exactly what it would be had it said this. The
        old turn stays until the edited one is committed in its place."""
        cleaned, _ = self._clean_message(text)
        if not cleaned:
            raise ConversationError("empty_message")
        async with await self._locked(key):
            ch = await self.channel(key)
            card = self._card(ch)
            last = await self.store.last_turn(ch.id)
            if last is None:
                raise ConversationError("nothing_to_edit")
            before = await self._state_at(ch, card, ch.head - 1)
            fed = tokens_from_bytes(last.fed)
            lengths = expand_runs(last.feed_lengths)
            cue_chunks, used = [], 0
            for chunk in split_by_lengths(fed, lengths):  # keep the cue's recorded forward calls
                if used >= last.prompt_len:
                    break
                cue_chunks.append(chunk)
                used += len(chunk)
            reply_tokens = self.tokenizer.encode(" " + cleaned + "\n\n")
            try:
                result = await self.engine.feed(before.state, cue_chunks + [reply_tokens], channel=str(key))
            except EngineError:
                raise ConversationError("engine_error") from None
            tokens = before.tokens + len(result.fed)
            record = dict(kind="edit", in_speaker=last.in_speaker, in_text=last.in_text,
                          out_speaker=last.out_speaker, out_text=cleaned, fed=tokens_to_bytes(result.fed),
                          prompt_len=last.prompt_len, feed_lengths=run_length(result.feed_lengths),
                          in_message_id=last.in_message_id, out_message_ids=last.out_message_ids)
            try:
                position = await self.store.commit_turn(ch.id, record, result.state, self.fingerprint, tokens,
                                                        replace=True)
            except Exception as exc:  # the old reply stays
                log.error("channel %s: edit not stored: %s", ch.id, exc.__class__.__name__)
                raise ConversationError("not_stored") from None
            self._remember(ch.id, HotState(position, self.fingerprint, tokens, result.state))
            return TurnResult(cleaned, last.out_speaker, position, "edit")

    # ----- channel operations ------------------------------------------------------------------------------
    async def undo(self, key: ChannelKey, n: int = 1) -> int:
        """Take back the last `n` turns; returns how many were removed. The state is rolled back exactly."""
        if n < 1:
            raise ConversationError("bad_count", low=1)
        async with await self._locked(key):
            ch = await self.channel(key)
            removed = min(n, ch.head)
            if removed:
                await self._truncate(ch, ch.head - removed)
            return removed

    async def reset(self, key: ChannelKey) -> str:
        """Start the conversation over with the same character and params; returns the greeting."""
        async with await self._locked(key):
            ch = await self.channel(key)
            card = self._card(ch)
            if card is None:
                raise ConversationError("no_character")
            return await self._start(ch, card, ch.greeting_index)

    async def use_character(self, key: ChannelKey, card, greeting_index: int = 0, user_label: str | None = None) -> str:
        """Switch the channel to `card` (resetting it) and return the greeting."""
        async with await self._locked(key):
            ch = await self.channel(key)
            if user_label:
                ch.user_label = self.speaker_name(user_label)
            return await self._start(ch, card, greeting_index)

    async def set_chat_format(self, key: ChannelKey, chat_format: str) -> str:
        if chat_format not in CHAT_FORMATS:
            raise ConversationError("bad_chat_format", valid=", ".join(CHAT_FORMATS))
        async with await self._locked(key):
            ch = await self.channel(key)
            card = self._card(ch)
            ch.chat_format = chat_format
            return await self._start(ch, card, ch.greeting_index) if card else ""

    async def set_params(self, key: ChannelKey, changes: dict) -> SamplingParams:
        """Validate all changes first (ParamError names the bad one); then store them together."""
        async with await self._locked(key):
            ch = await self.channel(key)
            merged = dict(ch.params or {})
            merged.update(changes)
            params = SamplingParams.from_dict(merged, base=self.sampling_defaults)
            stored = {k: getattr(params, k) for k in merged}
            await self.store.update_channel(ch.id, params=stored)
            return params

    async def reset_params(self, key: ChannelKey) -> SamplingParams:
        async with await self._locked(key):
            ch = await self.channel(key)
            await self.store.update_channel(ch.id, params={})
            return self.sampling_defaults

    async def set_setting(self, key: ChannelKey, name: str, value) -> None:
        async with await self._locked(key):
            ch = await self.channel(key)
            settings = dict(ch.settings or {})
            settings[name] = value
            await self.store.update_channel(ch.id, settings=settings)

    async def settings(self, key: ChannelKey) -> dict:
        """All of a channel's settings in one read (the command layer's per-message decisions), without creating
        the channel: a message the bot does not answer must not start a conversation (or count against a quota)."""
        ch = await self.store.find_channel(key.platform, key.external_id)
        return dict(ch.settings or {}) if ch is not None else {}

    async def setting(self, key: ChannelKey, name: str, default=None):
        """A per-channel setting (e.g. "lang", "reply_mode"), read without creating the channel."""
        ch = await self.store.find_channel(key.platform, key.external_id)
        return (ch.settings or {}).get(name, default) if ch is not None else default

    async def save(self, key: ChannelKey, name: str, who: str | None = None, exempt: bool = False) -> None:
        """Store the conversation, character and exact head state under `name`, within the quotas of the
        channel, of `who` (unless `exempt`: a bot admin) and of everyone (ConversationError names the full one)."""
        async with await self._locked(key):
            ch = await self.channel(key)
            card = self._card(ch)
            if card is None or not ch.character:
                raise ConversationError("nothing_to_save")
            hot = await self._head_state(ch, card)
            snapshot = {"channel": {k: getattr(ch, k) for k in SAVED_FIELDS},
                        "greeting": (ch.settings or {}).get("greeting"),
                        "turns": [_turn_dict(t) for t in await self.store.turns(ch.id)]}
            q = self.quotas
            refused = await self.store.put_save(
                ch.id, name, snapshot, hot.state, self.fingerprint, hot.tokens, owner=who,
                limits=SaveLimits(q.saves_per_channel, 0 if exempt else q.saves_per_user, q.saves_total))
            if refused == "channel":
                raise ConversationError("too_many_saves", limit=q.saves_per_channel)
            if refused == "user":
                raise ConversationError("too_many_user_saves", limit=q.saves_per_user)
            if refused == "total":
                raise ConversationError("saves_full")

    async def load(self, key: ChannelKey, name: str) -> str:
        """Restore a save exactly; returns the character's name."""
        async with await self._locked(key):
            ch = await self.channel(key)
            save = await self.store.get_save(ch.id, name)
            if save is None:
                raise ConversationError("unknown_save", name=name)
            fields = dict(save.snapshot["channel"])
            card = self.library.get(fields["character"])
            if card is None:
                raise ConversationError("save_character_missing", name=name)
            turns = [_turn_from_dict(t) for t in save.snapshot["turns"]]
            settings = dict(ch.settings or {})
            settings["greeting"] = save.snapshot.get("greeting")
            settings.pop("next_speaker", None)
            forget_fed(settings)
            fields["settings"] = settings
            for k, v in fields.items():
                setattr(ch, k, v)
            same_model = save.fingerprint == self.fingerprint
            initial = None
            if fields["base_position"] == 0:  # keep /undo exact below the loaded head
                initial = await self._initial_state(card, (await self._prompt(ch, card, ch.greeting_index)).text)
            head_state = (await asyncio.to_thread(_unpack, save.header, save.blob)) if same_model else None
            await self.store.restore(ch.id, fields, turns, head_state, self.fingerprint, save.tokens, initial)
            self._hot.pop(ch.id, None)
            if head_state is not None:
                self._remember(ch.id, HotState(ch.head, self.fingerprint, save.tokens, head_state))
            return card.name

    async def saves(self, key: ChannelKey) -> list[tuple[str, int, str]]:
        """(name, turns, created) of each save."""
        ch = await self.channel(key)
        return [(s.name, len(s.snapshot["turns"]), s.created.strftime("%Y-%m-%d %H:%M"))
                for s in await self.store.saves(ch.id)]

    async def delete_save(self, key: ChannelKey, name: str) -> None:
        ch = await self.channel(key)
        if not await self.store.delete_save(ch.id, name):
            raise ConversationError("unknown_save", name=name)

    async def debug(self, key: ChannelKey, last: int) -> dict:
        """What the state has read: its token count, the last `last` fed tokens, the last turn as fed."""
        async with await self._locked(key):
            ch = await self.channel(key)
            card = self._card(ch)
            if card is None:
                raise ConversationError("no_character")
            hot = await self._head_state(ch, card)
            turns = await self.store.turns(ch.id, after=max(ch.base_position, ch.head - 64))
            fed: list[int] = []
            for t in turns:
                fed += tokens_from_bytes(t.fed)
            if len(fed) < last:  # reach back into the character's prompt
                prompt = await self._prompt(ch, card, ch.greeting_index)
                prompt_tokens = await asyncio.to_thread(self.tokenizer.encode, prompt.text)
                if ch.base_position == 0 and len(turns) == ch.head:
                    fed = prompt_tokens + fed
            return {"tokens": hot.tokens, "turns": ch.head - ch.base_position, "tail": fed[-last:] if last else [],
                    "last_fed": self.tokenizer.decode(tokens_from_bytes(turns[-1].fed)) if turns else None}

    async def transcript(self, key: ChannelKey) -> tuple[Channel, list[Turn]]:
        ch = await self.channel(key)
        return ch, await self.store.turns(ch.id)

    # ----- states -----------------------------------------------------------------------------------------
    async def _prompt(self, ch: Channel, card, greeting_index: int):
        """The character's prompt for this channel: its labels, its user's name, the chosen greeting. Built in a
        thread (tokenizing a large card takes a while; other channels must not wait)."""
        from bot.cards import build_prompt

        char_label, user_label = self._labels(ch, card)
        return await asyncio.to_thread(build_prompt, card, user=ch.user_label, char_label=char_label,
                                       user_label=user_label, greeting_index=greeting_index,
                                       count_tokens=self.tokenizer.count, max_prompt_tokens=self.max_context // 2)

    async def _start(self, ch: Channel, card, greeting_index: int) -> str:
        prompt = await self._prompt(ch, card, greeting_index)
        state, tokens = await self._initial_state(card, prompt.text)
        settings = dict(ch.settings or {})
        settings["greeting"] = prompt.greeting
        settings["prompt_hash"] = _hash(prompt.text)
        forget_fed(settings)
        await self.store.reset_channel(ch.id, state, self.fingerprint, tokens, character=card.content_hash(),
                                       greeting_index=greeting_index, chat_format=ch.chat_format,
                                       user_label=ch.user_label, settings=settings)
        ch.character, ch.greeting_index, ch.head, ch.base_position, ch.settings = (
            card.content_hash(), greeting_index, 0, 0, settings)
        self._remember(ch.id, HotState(0, self.fingerprint, tokens, state))
        return prompt.greeting

    async def _initial_state(self, card, prompt_text: str) -> tuple[State, int]:
        prompt_hash = _hash(prompt_text)
        cached = await self.store.get_initial(prompt_hash, self.fingerprint)
        if cached is not None:
            return cached
        tokens = await asyncio.to_thread(self.tokenizer.encode, prompt_text)
        result = await self.engine.feed(self.engine.backend.zero_state(), tokens=tokens, channel="prompt")
        await self.store.put_initial(prompt_hash, self.fingerprint, card.content_hash(), result.state, len(tokens))
        return result.state, len(tokens)

    async def _head_state(self, ch: Channel, card) -> HotState:
        return await self._state_at(ch, card, ch.head)

    async def _head_state_info(self, ch: Channel) -> int:
        hot = self._hot.get(ch.id)
        if hot and hot.position == ch.head:
            return hot.tokens
        card = self._card(ch)
        if card is None or not ch.character:
            return 0
        return (await self._head_state(ch, card)).tokens

    async def _state_at(self, ch: Channel, card, position: int) -> HotState:
        """The exact state after turn `position`: memory, else the database, else replayed from a snapshot."""
        hot = self._hot.get(ch.id)
        if hot and hot.position == position and hot.fingerprint == self.fingerprint:
            self._hot.move_to_end(ch.id)
            return hot
        if not ch.character and card is not None and position == 0:
            await self._start(ch, card, 0)  # a new channel gets the default character on first use
            return self._hot[ch.id]
        stored = await self.store.nearest_state(ch.id, position)
        if stored is None or stored.fingerprint != self.fingerprint:
            log.info("channel %s: no usable state at turn %d (model changed?); rebuilding", ch.id, position)
            return await self._rebuild(ch, card, position)
        hot = HotState(stored.position, stored.fingerprint, stored.tokens, stored.state)
        if stored.position < position:
            hot = await self._replay(ch, hot, position)
            await self.store.put_state(ch.id, position, hot.state, self.fingerprint, hot.tokens)
        if position == ch.head:
            self._remember(ch.id, hot)
        return hot

    async def _replay(self, ch: Channel, start: HotState, position: int) -> HotState:
        turns = await self.store.turns(ch.id, after=start.position, upto=position)
        chunks, count = [], 0
        for t in turns:
            fed = tokens_from_bytes(t.fed)
            chunks += split_by_lengths(fed, expand_runs(t.feed_lengths))
            count += len(fed)
        result = await self.engine.feed(start.state, chunks, channel=str(ch.id))
        return HotState(position, self.fingerprint, start.tokens + count, result.state)

    async def _rebuild(self, ch: Channel, card, position: int) -> HotState:
        """No usable snapshot (another model made them): the character's prompt plus the latest turns that fit."""
        if card is None:
            raise ConversationError("no_character")
        hot = await self._rebased_state(ch, card, position)
        await self.store.put_state(ch.id, position, hot.state, self.fingerprint, hot.tokens, pinned=True)
        await self.store.update_channel(ch.id, base_position=position)
        ch.base_position = position
        self._remember(ch.id, hot)
        return hot

    async def _rebased_state(self, ch: Channel, card, position: int) -> HotState:
        """Context full (or no usable snapshot): the state rebuilt from the card and the most recent turns up to
        `position` that fit; the visible log is kept."""
        prompt = await self._prompt(ch, card, ch.greeting_index)
        state, tokens = await self._initial_state(card, prompt.text)
        turns = await self.store.turns(ch.id, upto=position)
        budget = self.max_context // 2 - tokens
        keep: list[Turn] = []
        for t in reversed(turns):
            size = len(t.fed) // 4
            if size > budget:
                break
            keep.append(t)
            budget -= size
        chunks = []
        for t in reversed(keep):
            chunks += split_by_lengths(tokens_from_bytes(t.fed), expand_runs(t.feed_lengths))
        result = await self.engine.feed(state, chunks, channel=str(ch.id))
        return HotState(position, self.fingerprint, tokens + len(result.fed), result.state)

    async def _truncate(self, ch: Channel, position: int) -> None:
        ch.base_position = await self.store.truncate(ch.id, position)
        ch.head = position
        hot = self._hot.get(ch.id)
        if hot and hot.position > position:
            del self._hot[ch.id]

    def forget_hot_states(self) -> None:
        """Drop every state kept in memory: another process may have changed any channel since (a cluster worker
        that lost a partition); each is read from the database again when next used."""
        self._hot.clear()

    def _remember(self, channel_id: int, hot: HotState) -> None:
        self._hot[channel_id] = hot
        self._hot.move_to_end(channel_id)
        while len(self._hot) > self._hot_limit:
            self._hot.popitem(last=False)

    # ----- ordering ---------------------------------------------------------------------------------------
    async def _acquire(self, key: ChannelKey) -> asyncio.Lock:
        """The channel's lock, taken in arrival order (nothing awaits before the queueing, so the order is the
        order of the calls); refuses when too many turns already wait."""
        if not self.accepting:
            raise ConversationError("shutting_down")
        lock = self._locks.setdefault(key, asyncio.Lock())
        if lock.locked() and self._waiting[key] >= self.channel_queue:
            raise Busy("busy")
        if self._waiting.total() + len(self._tasks) >= self.global_queue:
            raise Busy("busy")
        self._waiting[key] += 1
        try:
            await lock.acquire()
        finally:
            self._waiting[key] -= 1
        return lock

    async def _locked(self, key: ChannelKey):
        lock = await self._acquire(key)
        return _Held(lock)

    def active_channels(self) -> int:
        """Channels with a turn generating or waiting."""
        return sum(1 for lock in self._locks.values() if lock.locked())

    async def drain(self, timeout: float) -> bool:
        """Stop taking turns and wait for the ones in flight; True when all finished in time."""
        self.accepting = False
        if not self._tasks:
            return True
        done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return not pending


class _NotStored(EngineError):
    """A finished reply the database would not take; users hear what a failed model step says."""


@dataclass
class _Finish:
    """What finishing a turn needs once its reply is generated."""
    channel: Channel
    hot: HotState
    generation: object
    prompt_len: int
    record: dict
    committed: asyncio.Future
    lock: asyncio.Lock
    replace: bool
    rebase: tuple | None
    settings: dict  # the channel's settings once the turn is committed
    alternative_of: int | None = None  # the turn whose new alternative this is (a swipe past the end, /regen)
    stream: object = None  # its TurnStream (what /stop finds in Conversations._writing)
    channel_key: ChannelKey | None = None


class _Held:
    """`async with await self._locked(key):` releases a lock acquired by _acquire."""

    def __init__(self, lock: asyncio.Lock):
        self.lock = lock

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.lock.release()


SAVED_FIELDS = ("character", "greeting_index", "user_label", "params", "chat_format", "head", "base_position")


def _turn_dict(t: Turn) -> dict:
    return {"position": t.position, "kind": t.kind, "in_speaker": t.in_speaker, "in_text": t.in_text,
            "out_speaker": t.out_speaker, "out_text": t.out_text, "fed": base64.b64encode(t.fed).decode(),
            "prompt_len": t.prompt_len, "feed_lengths": t.feed_lengths}


def _turn_from_dict(d: dict) -> dict:
    return dict(d, fed=base64.b64decode(d["fed"]))


def _unpack(header, blob):
    from bot.store import unpack_state

    return unpack_state(header, blob)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
