"""Which channels step next: admission, fairness and chunked prefill.

The scheduler owns the jobs (a reply to sample, or tokens to feed) and decides each step's rows: every active job
takes either its next prompt chunk (at most `chunk_len` tokens, so one long card never holds a step for long) or
the token it sampled last. Jobs are admitted first come, first served while slots are free and the batch is under
the current limit (`Recovery.batch_limit`); they join and leave between steps (continuous batching). It never
touches the model: `ModelRunner` executes a `StepPlan` and hands back a `StepOutput`, and `update` applies it.

A channel's turns are ordered by its caller (the conversation layer holds a per-channel lock).
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Sequence

from bot.engine.backend import State
from bot.engine.detokenizer import ReplyText
from bot.engine.outputs import GenerationCancelled, GenerationResult, StepOutput
from bot.engine.params import SamplingParams
from bot.engine.sampling import FIRST_STEP_BANNED_TEXT
from bot.engine.tokenizer import TURN_END_BYTES

END_TOKEN = 0  # the World vocabulary's end-of-text: a chat reply never emits it
END_ONLY = frozenset((END_TOKEN,))
# Prompt tokens one step feeds at most (prompt chunks beyond wait a step, oldest first), so that a burst of new
# channels does not stall the replies already streaming for the length of one huge prefill.
PREFILL_TOKENS_PER_STEP = 16384


@dataclass(eq=False)
class Job:
    channel: str
    state: State  # where the job starts
    chunks: collections.deque  # token lists still to feed, each in one forward call
    params: SamplingParams | None  # None: feed only
    seed: int = 0
    slot: int = -1
    fed: list[int] = field(default_factory=list)
    feed_lengths: list[int] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    reply: ReplyText = field(default_factory=ReplyText)
    text: str = ""  # shown text so far (a retry shows nothing new until it is past what was shown)
    stop_reason: str = ""
    closing: bool = False  # the chunks left only close the turn; no more sampling
    cancelled: bool = False
    stop_requested: bool = False  # /stop: end the reply after the tokens sampled so far and commit it
    queued: int = 0  # place in the queue for a slot (1 = next); 0 once admitted
    enqueued_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    last_token_at: float | None = None
    prompt_chunks: list = field(default_factory=list)  # what the job started with: a retry starts over
    attempts: int = 0
    sampler: object = None  # the runner's per-reply sampling state, where it keeps one on the host
    ban: int = -1  # a token the first draw must not pick besides the end of text (Scheduler.first_ban), or -1
    streaming: bool = False  # device_feeds: sampling every step from the token the device keeps
    device_next: int | None = None  # device_feeds: the sampled token the next step feeds
    device_row_in_flight: bool = False  # device_feeds: a step feeding `device_next` is launched, not yet applied
    # Set by the engine front (asyncio side):
    done: object = None
    changed: object = None

    @property
    def samples(self) -> bool:
        return self.params is not None

    @property
    def first_sample(self) -> bool:
        return not self.generated

    @property
    def max_tokens(self) -> int:
        return self.params.max_tokens if self.params is not None else 0

    def restart(self) -> None:
        """Back to the start: same prompt, same seed, so a retried reply is the reply it would have been."""
        self.attempts += 1
        self.chunks = collections.deque(self.prompt_chunks)
        self.fed, self.feed_lengths, self.generated = [], [], []
        self.reply, self.stop_reason, self.closing, self.sampler = ReplyText(), "", False, None
        self.slot, self.streaming, self.device_next, self.device_row_in_flight = -1, False, None, False


DEVICE = None  # Row.tokens of a row that feeds the token its slot sampled last, which stays on the device


@dataclass
class Row:
    """One row of a step: a job, the tokens it feeds, and whether its next token is sampled from this step."""

    job: Job
    tokens: list[int] | None  # DEVICE: the slot's last sampled token, known only to the device yet
    sample: bool
    finish: bool  # the job's last feed: its state is final after this step
    banned: frozenset = frozenset()  # sampled rows: tokens the sampler must not pick


@dataclass
class StepPlan:
    admitted: list[Job]  # jobs that take a slot in this step (their start state is loaded first)
    dropped: list[Job]  # cancelled jobs whose slots are released
    rows: list[Row]


class Scheduler:
    """`device_feeds`: the runner keeps each slot's sampled token on the device and may execute a step before the
    previous step's tokens reach the host (one step ahead). A streaming reply is then scheduled every step as a
    DEVICE row; where its reply ended, the device holds that row back and the host schedules the closing chunk
    once it has seen the token. Without it each token comes back before the next step is planned and is fed as a
    host chunk."""

    def __init__(self, tokenizer, *, chunk_len: int, max_batch: int, recovery, device_feeds: bool = False):
        self.tokenizer = tokenizer
        self.chunk_len = chunk_len
        self.max_batch = max_batch
        self.recovery = recovery
        self.device_feeds = device_feeds
        self.pending: collections.deque[Job] = collections.deque()
        self.active: list[Job] = []
        self.finishing: list[Job] = []  # fed in full; their final state is on its way to host memory
        self._free_slots = list(range(max_batch - 1, -1, -1))

    # ----- jobs ---------------------------------------------------------------------------------------------
    def split(self, tokens: Sequence[int]) -> collections.deque:
        tokens = list(tokens)
        return collections.deque(tokens[i : i + self.chunk_len] for i in range(0, len(tokens), self.chunk_len))

    def add(self, job: Job, *, first: bool = False) -> None:
        job.prompt_chunks = job.prompt_chunks or list(job.chunks)
        job.ban = self.first_ban(job)
        (self.pending.appendleft if first else self.pending.append)(job)

    def remove_pending(self, job: Job) -> bool:
        if job in self.pending:
            self.pending.remove(job)
            return True
        return False

    def has_work(self) -> bool:
        return bool(self.pending or self.active or self.finishing)

    def __len__(self) -> int:
        return len(self.pending) + len(self.active) + len(self.finishing)

    def first_ban(self, job: Job) -> int:
        """The token the reply's first draw must not pick besides the end of text, or -1: the punctuation just fed
        (the original web UI's rule: no reply starts with the ':' after the speaker's name)."""
        last = job.prompt_chunks[-1][-1] if job.prompt_chunks and job.samples else None
        if last is not None and self.tokenizer.token_bytes(last).decode("utf-8", "replace") in FIRST_STEP_BANNED_TEXT:
            return last
        return -1

    # ----- a step -------------------------------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        admitted = []
        while self.pending and self._free_slots and len(self.active) < self.recovery.batch_limit:
            job = self.pending.popleft()
            job.slot = self._free_slots.pop()
            job.queued = 0
            admitted.append(job)
            self.active.append(job)
        for job in self.active:
            if job.stop_requested and not job.closing:
                self._close_stopped(job)
        dropped = [j for j in self.active if j.cancelled]
        for job in dropped:
            self.active.remove(job)
            self._free_slots.append(job.slot)
        rows, prefill = [], 0
        for job in self.active:
            if job.chunks:
                if len(job.chunks[0]) > 1:
                    if prefill and prefill + len(job.chunks[0]) > PREFILL_TOKENS_PER_STEP:
                        continue  # next step
                    prefill += len(job.chunks[0])
                chunk = job.chunks.popleft()
                sample = not job.chunks and job.samples and not job.closing
                if sample and self.device_feeds:
                    job.streaming = True
                banned = frozenset((END_TOKEN, job.ban)) if job.first_sample and job.ban >= 0 else END_ONLY
                rows.append(Row(job, chunk, sample, finish=not job.chunks and not sample,
                                banned=banned if sample else frozenset()))
            elif job.streaming:
                job.device_row_in_flight = True
                rows.append(Row(job, DEVICE, True, False, END_ONLY))
            # else: its next feed depends on a token still on its way
        return StepPlan(admitted, dropped, rows)

    def queue_moved(self) -> list[Job]:
        """The waiting jobs whose place in the queue changed (their caller shows it)."""
        moved = []
        for place, job in enumerate(self.pending, 1):
            if job.queued != place:
                job.queued = place
                moved.append(job)
        return moved

    def _close_stopped(self, job: Job) -> None:
        """End a stopped reply after what was sampled: the state reads exactly "...reply so far\\n\\n", as a
        reply cut at its token cap does. A token sampled in a step still in flight is never fed (`closing` makes
        `update` ignore it); a token the device sampled but has not fed yet is fed from here."""
        job.stop_reason, job.closing, job.streaming = "stopped", True, False
        feed = []
        if job.device_next is not None and not job.device_row_in_flight:
            feed, job.device_next = [job.device_next], None
        closing = b"\n" if job.reply.reply_bytes.endswith(b"\n") else TURN_END_BYTES
        job.chunks.append(feed + self.tokenizer.encode_bytes(closing))

    def update(self, plan: StepPlan, output: StepOutput) -> "Update":
        """Apply a step's output to its jobs."""
        now = time.monotonic()
        update = Update()
        for row in plan.rows:
            job = row.job
            if row.tokens is DEVICE:
                job.device_row_in_flight = False
                if job.device_next is not None:  # held back (None) where the reply had ended
                    job.fed.append(job.device_next)
                    job.feed_lengths.append(1)
                    job.device_next = None
            else:
                job.fed.extend(row.tokens)
                job.feed_lengths.append(len(row.tokens))
            if row.sample and not job.closing:  # a streaming row after its reply ended drew in vain
                update.sampled.append(job)
                if self._accept(job, output.tokens[id(job)], now):
                    update.changed.append(job)
            if row.finish:
                self.release(job)
                self.finishing.append(job)
        return self.update_states(output, update)

    def update_states(self, output: StepOutput, update: "Update | None" = None) -> "Update":
        """Finish the jobs whose final state has arrived."""
        update = update or Update()
        for job in list(self.finishing):
            state = output.states.get(id(job))
            if state is None:
                continue
            self.finishing.remove(job)
            if job.cancelled:
                update.finished.append((job, GenerationCancelled()))
                continue
            text = job.text.strip() if job.samples else ""
            if job.stop_reason == "stopped":  # every byte fed is shown, an unfinished character included
                text = job.reply.reply_bytes.decode("utf-8", "replace").strip()
            job.text = text
            update.finished.append((job, GenerationResult(
                text=text, generated=job.generated, fed=job.fed, feed_lengths=job.feed_lengths, state=state,
                stop_reason=job.stop_reason or "prefill")))
        return update

    def release(self, job: Job) -> None:
        if job in self.active:
            self.active.remove(job)
        if job.slot >= 0:
            self._free_slots.append(job.slot)
            job.slot = -1

    def _accept(self, job: Job, token: int, now: float) -> bool:
        """Record a sampled token and queue what to feed next. Returns whether the shown text changed."""
        if job.first_token_at is None:
            job.first_token_at = now
        job.last_token_at = now
        job.generated.append(token)
        piece = self.tokenizer.token_bytes(token)
        if job.sampler is not None:
            job.sampler.observe(token, piece.decode("utf-8", "replace"))
        feed, reason = job.reply.accept(token, piece, len(job.generated), job.max_tokens, self.tokenizer)
        if reason:
            job.stop_reason, job.closing, job.streaming = reason, True, False
            job.chunks.append(feed)
        elif self.device_feeds:
            job.device_next = token  # the device feeds it in the next step
        else:
            job.chunks.append(feed)
        shown = job.reply.text
        if shown != job.text and not job.text.startswith(shown):
            job.text = shown
            return True
        return False


@dataclass
class Update:
    """What applying a step changed: jobs that got a token, jobs whose shown text changed, and finished jobs
    with their result (or the error they end with)."""

    sampled: list[Job] = field(default_factory=list)
    changed: list[Job] = field(default_factory=list)
    finished: list[tuple[Job, object]] = field(default_factory=list)
