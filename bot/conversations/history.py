"""Edits and deletes on the platform rewrite a channel's history, exactly.

A turn remembers the platform message that fed it (`in_message_id`) and the bot's messages that show its reply
(`out_message_ids`). When one of them is edited or deleted:

- the user's latest message edited: the reply is generated again, in place of the old one, from the state
  before it (the same path as /regen, with the new text); the adapter paints it into the same bot messages.
- an older message edited or deleted: the turns from it on are fed again after the state before it, each
  turn's cue (its line, lorebook notes and reply cue) built again from the new history and its reply the same
  tokens in the same forward calls as before, so every later reply keeps its text and the state is exactly the
  state of a conversation that had the new history from the start. The bot says nothing.
- the user's latest message deleted: that exchange is undone (as /undo) and the bot deletes its reply.
- one of the bot's replies deleted (a moderator): that reply is undone and the user's line stays, as a line
  said to nobody: fed alone (`Name: text` and the turn end), with no reply cue and no reply. That is the state
  of a conversation where the user said it and the next line came before any answer; "the line and the
  character's cue with no reply" would be a state no conversation has. A reply with no line (a /continue)
  leaves the history with it.

Swipes: a rewritten turn keeps its row (and so its id, which the swipe buttons name) and its alternatives, each
fed again with the turn's new cue before its own reply tokens, so choosing one later is exact too. A latest line
edited gets a new reply and none of the old alternatives (they answered another line); a line left unanswered
loses its alternatives with its reply, and /regen on it writes a plain reply, not a swipe.

Messages the bot never fed (not addressed to it, commands, before a /reset) and turns inside a rebased state
(at or before the channel's base: their tokens are no longer replayed one by one) change nothing. Every rewrite
is committed in one transaction: a crash before it leaves the old history whole.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.cards.turns import TURN_END, reply_cue, turn
from bot.conversations.scenes import find_member, shift_fed
from bot.engine.outputs import EngineError
from bot.store import (expand_runs, run_length, split_by_lengths, storable, tokens_from_bytes,
                       tokens_to_bytes)

if TYPE_CHECKING:
    from bot.conversations.conversations import ChannelKey, TurnStream

log = logging.getLogger(__name__)

UNANSWERED = "unanswered"  # a turn's kind: a user's line whose reply was deleted; fed alone

# What an edit or delete did (`Rewrite.action`).
UNCHANGED = "unchanged"  # not a message the bot fed, or the same text: nothing happened
REGENERATED = "regenerated"  # the latest line edited: `stream` is its new reply, to show in `into`
REWRITTEN = "rewritten"  # an older turn changed: the history was fed again; the bot says nothing
UNDONE = "undone"  # the latest exchange (or a reply) was taken back; delete `retract`


@dataclass
class Rewrite:
    action: str
    stream: "TurnStream | None" = None
    into: list[str] = field(default_factory=list)  # the bot messages that showed the old reply
    retract: list[str] = field(default_factory=list)  # the bot messages to delete


@dataclass
class _Said:
    """What the lorebook scan reads of a turn."""
    in_text: str | None
    out_text: str | None


class HistoryRewrites:
    """The part of `Conversations` that follows edits and deletes on the platform."""

    async def note_shown(self, key: "ChannelKey", position: int, message_ids: list[str]) -> None:
        """The bot's messages that show the reply of the turn at `position` (from the adapter, once painted)."""
        ch = await self.store.find_channel(key.platform, key.external_id)
        if ch is not None and 0 < position <= ch.head and message_ids:
            await self.store.set_out_messages(ch.id, position, [str(m) for m in message_ids])

    async def message_edited(self, key: "ChannelKey", message_id: str, speaker: str, text: str,
                             who: str | None = None) -> Rewrite:
        """The platform message `message_id` now says `text` (said by `speaker`; `who`, "platform:user id",
        speaks under their /persona as in `say`)."""
        lock = await self._acquire(key)
        handed_over = False
        try:
            ch, found = await self._fed_turn(key, message_id)
            if found is None or found.in_message_id != message_id or found.in_text is None:
                return Rewrite(UNCHANGED)
            cleaned, _ = self._clean_message(text)
            if not cleaned or cleaned == found.in_text:
                return Rewrite(UNCHANGED)
            card = self._card(ch)
            if found.position == ch.head and found.kind != UNANSWERED:
                kind = "say" if found.kind == "edit" else found.kind
                handed_over = True  # the turn releases the lock once its reply is committed (or not)
                stream = await self._turn(key, kind=kind, speaker=speaker if kind == "say" else found.in_speaker,
                                          text=cleaned, reply_speaker=found.out_speaker, seed=None, lock=lock,
                                          replace=True, message_id=message_id, who=who if kind == "say" else None)
                return Rewrite(REGENERATED, stream, into=list(found.out_message_ids or []))
            later = await self.store.turns(ch.id, after=found.position)
            await self._rewrite(ch, card, found.position, [found] + later, new_line=(found.id, cleaned))
            log.info("channel %s: message %s edited; turns from %d fed again", ch.id, message_id, found.position)
            return Rewrite(REWRITTEN)
        finally:
            if not handed_over:
                lock.release()

    async def message_deleted(self, key: "ChannelKey", message_id: str) -> Rewrite:
        """The platform message `message_id` is gone: a user's line or one of the bot's replies."""
        async with await self._locked(key):
            ch, found = await self._fed_turn(key, message_id)
            if found is None:
                return Rewrite(UNCHANGED)
            card = self._card(ch)
            shown = list(found.out_message_ids or [])
            later = await self.store.turns(ch.id, after=found.position)
            if message_id == found.in_message_id:
                if found.position == ch.head:
                    await self._truncate(ch, ch.head - 1)
                    log.info("channel %s: message %s deleted; its exchange undone", ch.id, message_id)
                    return Rewrite(UNDONE, retract=shown)
                # What the scene fed before the deleted line (introductions, persona descriptions) stays in the
                # history, before the next line, as a conversation without the deleted line would have fed it.
                await self._rewrite(ch, card, found.position, later, carried=self._notes_of(found),
                                    settings=shift_fed(ch.settings or {}, found.position))
                log.info("channel %s: message %s deleted; turns from %d fed again", ch.id, message_id,
                         found.position)
                return Rewrite(REWRITTEN)
            kept = [_unanswered(found)] if found.in_text is not None else []
            if kept or later:
                await self._rewrite(ch, card, found.position, kept + later)
            else:
                await self._truncate(ch, found.position - 1)
            log.info("channel %s: reply message %s deleted; the reply of turn %d undone", ch.id, message_id,
                     found.position)
            return Rewrite(UNDONE, retract=[m for m in shown if m != message_id])

    async def _fed_turn(self, key: "ChannelKey", message_id: str):
        """(channel, the turn fed by or showing `message_id`), the turn None when there is none the state can
        replay (never fed, before a /reset, at or before the channel's base)."""
        ch = await self.store.find_channel(key.platform, key.external_id)
        if ch is None or not message_id:
            return ch, None
        return ch, await self.store.turn_by_message(ch.id, message_id, after=ch.base_position)

    async def _rewrite(self, ch, card, start: int, turns: list, *, new_line: tuple[int, str] | None = None,
                       carried: str = "", settings: dict | None = None) -> None:
        """The turns from `start` on become `turns`, each fed again after the state before `start` (the state is
        found as any state is: memory, a snapshot, a replay). `new_line`: (turn id, its new text); `carried`:
        scene notes fed before the first of `turns`' own; `settings`: the channel's settings afterwards (what the
        scene has read moved with its turns). One transaction; ConversationError when the model or the database
        fails (the old history stays)."""
        from bot.conversations.conversations import RECENT_TURNS, ConversationError, HotState

        before = await self._state_at(ch, card, start - 1)
        char_label, _ = self._labels(ch, card)
        recent = [_Said(t.in_text, t.out_text)
                  for t in await self.store.turns(ch.id, after=max(0, start - 1 - RECENT_TURNS), upto=start - 1)]
        records, chunks = [], []
        for index, t in enumerate(turns):
            line = new_line[1] if new_line and new_line[0] == t.id else t.in_text
            record, turn_chunks = await self._fed_again(ch, card, t, line, recent, char_label,
                                                        carried if index == 0 else "")
            records.append(record)
            chunks += turn_chunks
            recent = (recent + [_Said(record["in_text"], record["out_text"])])[-RECENT_TURNS:]
        if not records:
            await self._truncate(ch, start - 1)
            return
        try:
            result = await self.engine.feed(before.state, chunks, channel=str(ch.id))
        except EngineError:
            raise ConversationError("engine_error") from None
        tokens = before.tokens + sum(len(c) for c in chunks)
        try:
            head = await self.store.rewrite_turns(ch.id, start, records, result.state, self.fingerprint, tokens,
                                                  settings=settings)
        except Exception as exc:  # the old history stays
            log.error("channel %s: rewrite not stored: %s", ch.id, exc.__class__.__name__)
            raise ConversationError("not_stored") from None
        ch.head = head
        if settings is not None:
            ch.settings = settings
        self._hot.pop(ch.id, None)
        self._remember(ch.id, HotState(head, self.fingerprint, tokens, result.state))

    async def _fed_again(self, ch, card, t, line: str | None, recent: list[_Said], char_label: str,
                         carried: str = "") -> tuple[dict, list[list[int]]]:
        """A turn's record and forward calls after a rewrite: its cue built again from its line (`line`) and the
        history before it (as `_turn` builds it, the scene notes it fed first kept as they were), its reply the
        tokens it had, in the forward calls it had."""
        fed = tokens_from_bytes(t.fed)
        old_chunks = split_by_lengths(fed, expand_runs(t.feed_lengths))
        old_cue, reply_chunks = _split_at(old_chunks, t.prompt_len)
        notes = carried + self._notes_of(t)
        if t.kind == UNANSWERED:
            cue_text, reply_chunks = notes + turn(t.in_speaker, line), []
        elif line is None:
            cue_text = notes + reply_cue(t.out_speaker)
        else:
            members = self.members(ch, card) if ch.chat_format == "names" else []
            speaker = find_member(t.out_speaker, members) if len(members) > 1 else None
            speaker_card = speaker.card if speaker is not None else card
            user_label = (t.in_speaker if t.kind in ("say", "edit")
                          else self._labels(ch, card, t.in_speaker, t.out_speaker,
                                            cast=tuple(m.label for m in members[1:]))[1])
            preamble = await self._preamble_after(speaker_card, recent, line, user_label,
                                                  char_label if speaker_card is card else t.out_speaker)
            cue_text = notes + turn(t.in_speaker, line) + preamble + reply_cue(t.out_speaker)
        cue = self.tokenizer.encode(cue_text)
        cue_chunks = old_cue if cue == fed[: t.prompt_len] else list(self.engine.scheduler.split(cue))
        chunks = cue_chunks + reply_chunks
        record = {"id": t.id, "kind": t.kind, "in_speaker": t.in_speaker, "in_text": line,
                  "out_speaker": t.out_speaker, "out_text": storable(t.out_text or ""),
                  **_fed_fields(chunks, len(cue)), "in_message_id": t.in_message_id,
                  "out_message_ids": t.out_message_ids,
                  "alternatives": await self._alternatives_again(t, cue_chunks, len(cue))}
        return record, chunks

    def _notes_of(self, t) -> str:
        """The scene notes (introductions, persona descriptions: whole turns) that turn `t` fed before its line, or
        before its reply cue when it has no line: the start of its cue."""
        cue = self.tokenizer.decode_bytes(tokens_from_bytes(t.fed)[: t.prompt_len])
        after = (turn(t.in_speaker, t.in_text) if t.in_text is not None else reply_cue(t.out_speaker)).encode()
        at = cue.find(after)
        while at > 0 and not cue[:at].endswith(TURN_END.encode()):  # the line starts a turn
            at = cue.find(after, at + 1)
        return cue[:at].decode() if at > 0 else ""

    async def _alternatives_again(self, t, cue_chunks: list[list[int]], cue_len: int) -> dict[int, dict]:
        """A turn's swipes after a rewrite: each keeps its reply tokens and forward calls after the turn's new cue,
        so choosing one later gives exactly the state of a conversation that had the new history. A line whose
        reply was deleted (UNANSWERED) keeps none: it has no reply to swipe."""
        if t.kind == UNANSWERED:
            return {}
        again = {}
        for alternative in await self.store.alternatives(t.id):
            old = split_by_lengths(tokens_from_bytes(alternative.fed), expand_runs(alternative.feed_lengths))
            _, reply_chunks = _split_at(old, alternative.prompt_len)
            again[alternative.number] = _fed_fields(cue_chunks + reply_chunks, cue_len)
        return again


def _fed_fields(chunks: list[list[int]], cue_len: int) -> dict:
    """How a turn or an alternative stores what it fed: the tokens, the cue's length, the forward calls."""
    return {"fed": tokens_to_bytes([token for chunk in chunks for token in chunk]), "prompt_len": cue_len,
            "feed_lengths": run_length([len(c) for c in chunks])}


def _split_at(chunks: list[list[int]], count: int) -> tuple[list[list[int]], list[list[int]]]:
    """The forward calls of the first `count` tokens (the cue) and of the rest (the reply). A reply's first
    forward call starts after the cue's last one (the engine feeds the cue, then each sampled token)."""
    used = 0
    for index, chunk in enumerate(chunks):
        if used >= count:
            return chunks[:index], chunks[index:]
        used += len(chunk)
    return chunks, []


def _unanswered(t):
    """The turn of a line whose reply was deleted (the row is not written: `_fed_again` reads it)."""
    return _Row(id=t.id, kind=UNANSWERED, in_speaker=t.in_speaker, in_text=t.in_text, out_speaker=t.out_speaker,
                out_text="", fed=t.fed, prompt_len=t.prompt_len, feed_lengths=t.feed_lengths,
                in_message_id=t.in_message_id, out_message_ids=None)


@dataclass
class _Row:
    id: int
    kind: str
    in_speaker: str | None
    in_text: str | None
    out_speaker: str
    out_text: str
    fed: bytes
    prompt_len: int
    feed_lengths: list
    in_message_id: str | None
    out_message_ids: list | None
