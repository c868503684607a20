"""Swipes: the alternatives of the last character reply, browsable, and /stop.

A turn's alternatives live in the database with the tokens each fed (`bot.store` keeps the chosen one on the turn
row, so replay, export and saves read the reply on screen). Choosing one feeds its recorded tokens, in its recorded
forward calls, after the state before the turn: the state is exactly the one it had when it was written (never
re-sampled). A new alternative is a regeneration (`Conversations.regen`) committed beside the others.
"""
from __future__ import annotations

from dataclasses import dataclass

from bot.engine.outputs import EngineError, GenerationCancelled
from bot.store import expand_runs, split_by_lengths, tokens_from_bytes

BACK, FORWARD = "back", "forward"


class TurnStopped(GenerationCancelled):
    """/stop before the reply wrote anything: the turn is dropped."""


@dataclass
class Swiped:
    """The alternative now on screen."""
    text: str
    speaker: str
    turn_id: int
    label: tuple[int, int]  # (its place, how many)


def _defs():
    """conversations.py (which mixes this class in) defines the error and the state record."""
    from bot.conversations import conversations

    return conversations


class Swipes:
    """The swipe operations of `Conversations` (mixed into it; uses its locks, states and store)."""

    async def swipe(self, key, turn_id: int, direction: str):
        """Show the previous or next alternative of the channel's last turn `turn_id`: a `Swiped`, or, forward
        past the last one, the `TurnStream` of a new alternative. ConversationError("swipe_too_old") when the turn
        is no longer the last one (nothing changes)."""
        defs = _defs()
        lock = await self._acquire(key)
        try:
            ch = await self.channel(key)
            last = await self.store.last_turn(ch.id)
            if last is None or last.id != turn_id:
                raise defs.ConversationError("swipe_too_old")
            alternatives = await self.store.alternatives(turn_id)
        except BaseException:
            lock.release()
            raise
        place = next((i for i, a in enumerate(alternatives) if a.chosen), 0)
        count = max(1, len(alternatives))
        target = place - 1 if direction == BACK else place + 1
        if target >= count:  # past the last: a new one (the regeneration takes the lock over)
            return await self.regen(key, turn_id=turn_id, lock=lock)
        try:
            if target < 0:  # already the first: nothing changes
                return Swiped(last.out_text, last.out_speaker, turn_id, (place + 1, count))
            return await self._choose(key, ch, last, alternatives[target])
        finally:
            lock.release()

    async def _choose(self, key, ch, last, chosen) -> Swiped:
        """Put alternative `chosen` on the last turn, with the exact state it had."""
        defs = _defs()
        before = await self._state_at(ch, self._card(ch), ch.head - 1)
        chunks = split_by_lengths(tokens_from_bytes(chosen.fed), expand_runs(chosen.feed_lengths))
        try:
            result = await self.engine.feed(before.state, chunks, channel=str(key))
        except EngineError:
            raise defs.ConversationError("engine_error") from None
        tokens = before.tokens + len(result.fed)
        label = await self.store.choose_alternative(ch.id, last.id, chosen.number, result.state, self.fingerprint,
                                                    tokens)
        if label is None:
            raise defs.ConversationError("swipe_too_old")
        self._remember(ch.id, defs.HotState(ch.head, self.fingerprint, tokens, result.state))
        return Swiped(chosen.out_text, last.out_speaker, last.id, label)

    async def _commit_alternative(self, ch, turn_id: int, reply: dict, state, tokens: int, rebase):
        """Store a new alternative of turn `turn_id` (the finish of a regeneration): (position, turn id, label)."""
        label = await self.store.add_alternative(ch.id, turn_id, reply, state, self.fingerprint, tokens,
                                                 self.max_swipes, rebase)
        if label is None:  # the turn went away meanwhile (it cannot while the channel's lock is held)
            raise _defs().ConversationError("swipe_too_old")
        return ch.head, turn_id, label

    async def last_turn(self, key) -> tuple[int, str]:
        """(the id of the channel's last turn, who spoke its reply); (0, "") when none. Read without waiting for
        the channel: the quick answer to a swipe button (the swipe itself checks again in the channel's order)."""
        ch = await self.store.find_channel(key.platform, key.external_id)
        last = await self.store.last_turn(ch.id) if ch is not None else None
        return (last.id, last.out_speaker) if last is not None else (0, "")

    def writing(self, key):
        """The reply being written in this channel now (a TurnStream), or None."""
        return self._writing.get(key)
