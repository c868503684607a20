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
from bot.engine.outputs import EngineError, GenerationCancelled, GenerationResult, StepOutput  # noqa: F401
from bot.engine.params import SamplingParams
from bot.engine.sampling import FIRST_STEP_BANNED_TEXT

END_TOKEN = 0  # the World vocabulary's end-of-text: a chat reply never emits it


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
    enqueued_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    prompt_chunks: list = field(default_factory=list)  # what the job started with: a retry starts over
    attempts: int = 0
    sampler: object = None  # the runner's per-reply sampling state, where it keeps one on the host
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
        self.slot = -1


@dataclass
class Row:
    """One row of a step: a job, the tokens it feeds, and whether its next token is sampled from this step."""

    job: Job
    tokens: list[int]
    sample: bool
    finish: bool  # the job's last feed: its state is final after this step
    banned: frozenset = frozenset()  # sampled rows: tokens the sampler must not pick


@dataclass
class StepPlan:
    admitted: list[Job]  # jobs that take a slot in this step (their start state is loaded first)
    dropped: list[Job]  # cancelled jobs whose slots are released
    rows: list[Row]


class Scheduler:
    def __init__(self, tokenizer, *, chunk_len: int, max_batch: int, recovery):
        self.tokenizer = tokenizer
        self.chunk_len = chunk_len
        self.max_batch = max_batch
        self.recovery = recovery
        self.pending: collections.deque[Job] = collections.deque()
        self.active: list[Job] = []
        self._free_slots = list(range(max_batch - 1, -1, -1))

    # ----- jobs ---------------------------------------------------------------------------------------------
    def split(self, tokens: Sequence[int]) -> collections.deque:
        tokens = list(tokens)
        return collections.deque(tokens[i : i + self.chunk_len] for i in range(0, len(tokens), self.chunk_len))

    def add(self, job: Job, *, first: bool = False) -> None:
        job.prompt_chunks = job.prompt_chunks or list(job.chunks)
        (self.pending.appendleft if first else self.pending.append)(job)

    def remove_pending(self, job: Job) -> bool:
        if job in self.pending:
            self.pending.remove(job)
            return True
        return False

    def has_work(self) -> bool:
        return bool(self.pending or self.active)

    def __len__(self) -> int:
        return len(self.pending) + len(self.active)

    # ----- a step -------------------------------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        admitted = []
        while self.pending and self._free_slots and len(self.active) < self.recovery.batch_limit:
            job = self.pending.popleft()
            job.slot = self._free_slots.pop()
            admitted.append(job)
            self.active.append(job)
        dropped = [j for j in self.active if j.cancelled]
        for job in dropped:
            self.active.remove(job)
            self._free_slots.append(job.slot)
        rows = []
        for job in self.active:
            chunk = job.chunks.popleft()
            sample = not job.chunks and job.samples and not job.closing
            rows.append(Row(job, chunk, sample, finish=not job.chunks and not sample,
                            banned=self._banned(job, chunk) if sample else frozenset()))
        return StepPlan(admitted, dropped, rows)

    def _banned(self, job: Job, chunk: list[int]) -> frozenset:
        """The end-of-text token always; on the first token also the punctuation just fed (the original web UI's
        rule: no reply starts with the ':' after the speaker's name)."""
        if job.first_sample:
            last = chunk[-1]
            if self.tokenizer.token_bytes(last).decode("utf-8", "replace") in FIRST_STEP_BANNED_TEXT:
                return frozenset((END_TOKEN, last))
        return frozenset((END_TOKEN,))

    def update(self, plan: StepPlan, output: StepOutput) -> "Update":
        """Apply a step's output to its jobs."""
        now = time.monotonic()
        update = Update()
        for row in plan.rows:
            job = row.job
            job.fed.extend(row.tokens)
            job.feed_lengths.append(len(row.tokens))
            if row.sample:
                update.sampled.append(job)
                if self._accept(job, output.tokens[id(job)], now):
                    update.changed.append(job)
            if row.finish:
                self.release(job)
                if job.cancelled:
                    update.finished.append((job, GenerationCancelled()))
                    continue
                text = job.text.strip() if job.samples else ""
                job.text = text
                update.finished.append((job, GenerationResult(
                    text=text, generated=job.generated, fed=job.fed, feed_lengths=job.feed_lengths,
                    state=output.states[id(job)], stop_reason=job.stop_reason or "prefill")))
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
        job.generated.append(token)
        piece = self.tokenizer.token_bytes(token)
        if job.sampler is not None:
            job.sampler.observe(token, piece.decode("utf-8", "replace"))
        feed, reason = job.reply.accept(token, piece, len(job.generated), job.max_tokens, self.tokenizer)
        job.chunks.append(feed)
        if reason:
            job.stop_reason, job.closing = reason, True
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


def __getattr__(name: str):
    # The engine's front moved to bot.engine.engine; older imports of it from here keep working.
    if name in ("Engine", "Generation"):
        from bot.engine import engine

        return getattr(engine, name)
    raise AttributeError(name)
