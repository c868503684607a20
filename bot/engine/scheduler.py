"""The GPU queue: one asyncio task owns the model and runs every active sequence in one step.

Each step takes, for every active job, either the next prefill chunk (up to `chunk_len` tokens) or the token it
sampled last, calls `backend.forward` once for all of them in a dedicated worker thread (the event loop never
blocks on the model), samples where a row needs its next token, and streams the text to the waiting callers.
Jobs join and leave between steps (continuous batching). A channel's turns are ordered by its caller (the
conversation layer holds a per-channel lock); the engine itself serves jobs first come, first served.

Every forward call a job makes is recorded (`feed_lengths`), so a replay can feed the same tokens in the same
calls and reach a bit-identical state.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Sequence

import torch

from bot.engine.backend import Backend, State
from bot.engine.sampling import FIRST_STEP_BANNED_TEXT, ReplySampler, SamplingParams
from bot.engine.tokenizer import TURN_END_BYTES, WorldTokenizer, complete_utf8_prefix

log = logging.getLogger(__name__)

END_TOKEN = 0  # the World vocabulary's end-of-text: a chat reply never emits it


class GenerationCancelled(Exception):
    pass


class EngineError(Exception):
    """The model failed on a step; the message is safe to show to users."""


@dataclass
class GenerationResult:
    text: str  # the reply as shown (stripped, without the turn end)
    generated: list[int]  # tokens sampled by the model
    fed: list[int]  # every token fed into the state by this job, in order
    feed_lengths: list[int]  # tokens per forward call, so a replay can feed identically
    state: State  # the state after everything in `fed`
    stop_reason: str  # "turn_end", "max_tokens" or "prefill"


@dataclass
class _Job:
    channel: str
    state: State
    chunks: collections.deque  # token lists still to feed, each in one forward call
    sampler: ReplySampler | None
    max_tokens: int
    slot: int = -1
    fed: list[int] = field(default_factory=list)
    feed_lengths: list[int] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    reply_bytes: bytes = b""
    text: str = ""  # shown text so far
    stop_reason: str = ""
    closing: bool = False  # the chunks left only close the turn; no more sampling
    cancelled: bool = False
    first_sample: bool = True
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Future | None = None
    enqueued_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    prompt_chunks: list = field(default_factory=list)  # what the job started with: a retry starts over
    seed: int = 0
    attempts: int = 0


class Generation:
    """A reply in progress: iterate for the text so far (coalesced: each value is the whole text, newest only),
    then `await result()`. `cancel()` stops it; the channel's state is whatever the caller keeps."""

    def __init__(self, engine: "Engine", job: _Job):
        self._engine = engine
        self._job = job

    async def __aiter__(self) -> AsyncIterator[str]:
        job = self._job
        last = None
        while True:
            if job.text != last:
                last = job.text
                yield last
            if job.done.done():
                if job.text != last:
                    yield job.text
                return
            job.changed.clear()
            await job.changed.wait()

    async def result(self) -> GenerationResult:
        return await asyncio.shield(self._job.done)

    def cancel(self) -> None:
        self._engine._cancel(self._job)

    @property
    def text(self) -> str:
        return self._job.text


class Engine:
    def __init__(self, backend: Backend, tokenizer: WorldTokenizer, *, chunk_len: int = 256, max_batch: int = 64,
                 seed: int | None = None, metrics=None):
        from bot.metrics import NO_METRICS

        self.backend = backend
        self.tokenizer = tokenizer
        self.chunk_len = chunk_len
        self.max_batch = max_batch
        self.batch_limit = max_batch  # lowered after an out-of-memory step, raised again as steps succeed
        self._good_steps = 0
        self.metrics = metrics or NO_METRICS
        self._rng = random.Random(seed)
        self._pending: collections.deque[_Job] = collections.deque()
        self._active: list[_Job] = []
        self._free_slots = list(range(max_batch - 1, -1, -1))
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rwkv-gpu")
        self._task: asyncio.Task | None = None
        self._token_times: collections.deque[float] = collections.deque()
        self.tokens_generated = 0
        self.step_hook: Callable[[Sequence[tuple[int, Sequence[int]]]], None] | None = None  # tests: fault injection

    @property
    def info(self):
        return self.backend.info

    # ----- public API -------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="rwkv-engine")

    async def close(self) -> None:
        for job in list(self._pending) + list(self._active):
            self._cancel(job)
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._executor.shutdown(wait=True)

    def generate(self, state: State, prompt: Sequence[int], params: SamplingParams, *, channel: str = "",
                 seed: int | None = None) -> Generation:
        """Feed `prompt` after `state`, then sample a reply until the turn end or `params.max_tokens`."""
        seed = seed if seed is not None else self._rng.getrandbits(63)
        job = self._new_job(channel, state, self._split(prompt), ReplySampler(params, torch.Generator().manual_seed(seed)),
                            params.max_tokens)
        job.seed = seed
        return Generation(self, job)

    async def feed(self, state: State, chunks: Sequence[Sequence[int]] | None = None, *, tokens: Sequence[int] = (),
                   channel: str = "") -> GenerationResult:
        """Feed tokens without sampling: either explicit `chunks` (one forward call each, as recorded by an
        earlier job: a replay) or `tokens`, split into chunks of `chunk_len`."""
        queue = collections.deque(list(c) for c in chunks if c) if chunks is not None else self._split(tokens)
        job = self._new_job(channel, state, queue, None, 0)
        return await Generation(self, job).result()

    def reseed(self, seed: int) -> None:
        """Draw the seeds of replies sampled from now on from `seed`: the same requests give the same replies."""
        self._rng.seed(seed)

    def queue_depth(self) -> int:
        return len(self._pending) + len(self._active)

    def batch_size(self) -> int:
        """Jobs in the current step."""
        return len(self._active)

    def tokens_per_second(self, window: float = 60.0) -> float:
        now = time.monotonic()
        while self._token_times and self._token_times[0] < now - window:
            self._token_times.popleft()
        return len(self._token_times) / window

    # ----- jobs -------------------------------------------------------------------------------------------
    def _split(self, tokens: Sequence[int]) -> collections.deque:
        tokens = list(tokens)
        return collections.deque(tokens[i : i + self.chunk_len] for i in range(0, len(tokens), self.chunk_len))

    def _new_job(self, channel, state, chunks, sampler, max_tokens) -> _Job:
        if self._task is None:
            raise RuntimeError("engine not started")
        job = _Job(channel=channel, state=state, chunks=chunks, sampler=sampler, max_tokens=max_tokens,
                   prompt_chunks=list(chunks))
        job.done = asyncio.get_running_loop().create_future()
        if not chunks:
            if sampler is not None:
                raise ValueError("a reply needs at least one prompt token")
            job.done.set_result(GenerationResult("", [], [], [], state, "prefill"))
            return job
        self._pending.append(job)
        self._wake.set()
        return job

    def _cancel(self, job: _Job) -> None:
        if job.done.done():
            return
        job.cancelled = True
        if job in self._pending:
            self._pending.remove(job)
            self._finish(job, GenerationCancelled())
        self._wake.set()

    def _finish(self, job: _Job, outcome) -> None:
        if not job.done.done():
            if isinstance(outcome, BaseException):
                job.done.set_exception(outcome)
                job.done.exception()  # mark retrieved: a cancelled reply nobody awaits is not an error
            else:
                job.done.set_result(outcome)
        job.changed.set()

    # ----- the loop ---------------------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending and not self._active:
                self._wake.clear()
                await self._wake.wait()
                continue
            admitted = []
            while self._pending and self._free_slots and len(self._active) < self.batch_limit:
                job = self._pending.popleft()
                job.slot = self._free_slots.pop()
                admitted.append(job)
                self._active.append(job)
            dropped = [j for j in self._active if j.cancelled]
            for job in dropped:
                self._active.remove(job)
            stepping = list(self._active)
            rows = [(job.slot, job.chunks.popleft()) for job in stepping]
            try:
                outcome = await loop.run_in_executor(self._executor, self._step, admitted, rows, stepping, dropped)
            except Exception as exc:  # a model failure: retry these jobs once (smaller batch after OOM)
                await self._recover(loop, exc, stepping, dropped)
                continue
            self._step_succeeded()
            for job in dropped:
                self._free_slots.append(job.slot)
                self._finish(job, GenerationCancelled())
            self._apply(outcome)
            await asyncio.sleep(0)  # let callers run between steps

    def _step(self, admitted, rows, stepping, dropped):
        """Runs in the worker thread: the only code that touches the backend."""
        for job in dropped:
            self.backend.release(job.slot)
        for job in admitted:
            self.backend.load(job.slot, job.state)
        if self.step_hook:
            self.step_hook(rows)
        logits = self.backend.forward(rows) if rows else None
        sampling = [i for i, job in enumerate(stepping) if not job.chunks and job.sampler and not job.closing]
        tokens = self._sample([stepping[i] for i in sampling], logits[sampling] if sampling else None, rows, sampling)
        finished = {}
        for job in stepping:
            if not job.chunks and (job.sampler is None or job.closing):
                finished[id(job)] = self.backend.save(job.slot)
                self.backend.release(job.slot)
        return rows, stepping, dict(zip((id(stepping[i]) for i in sampling), tokens)), finished

    def _sample(self, jobs, logits, rows, indices) -> list[int]:
        if not jobs:
            return []
        banned = []
        for job, i in zip(jobs, indices):
            ban = {END_TOKEN}
            if job.first_sample:
                last = rows[i][1][-1]
                if self.tokenizer.token_bytes(last).decode("utf-8", "replace") in FIRST_STEP_BANNED_TEXT:
                    ban.add(last)
            banned.append(ban)
        texts = [job.text for job in jobs]
        batch_sample = getattr(self.backend, "sample", None)
        if batch_sample is not None:
            return batch_sample(logits, [j.sampler for j in jobs], banned, texts)
        logits = logits.float().cpu()
        return [job.sampler.sample(logits[k], banned[k], texts[k]) for k, job in enumerate(jobs)]

    async def _recover(self, loop, exc: Exception, stepping: list[_Job], dropped: list[_Job]) -> None:
        """The step failed: every job in it starts over from its start state once; a second failure is final."""
        oom = _is_out_of_memory(exc)
        kind = "out_of_memory" if oom else "model_error"
        log.error("engine step failed for %d rows (%s): %s: %s", len(stepping), kind, exc.__class__.__name__, exc)
        self.metrics.error(kind)
        if oom:
            self.batch_limit = max(1, len(stepping) // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        failed = stepping + dropped
        await loop.run_in_executor(self._executor, self._release_all, failed)
        self._active = [j for j in self._active if j not in failed]
        for job in reversed(failed):
            self._free_slots.append(job.slot)
            if job.cancelled:
                self._finish(job, GenerationCancelled())
            elif job.attempts >= 1:
                self._finish(job, EngineError("the model failed on this reply; please try again"))
            else:
                self._restart(job)
                self._pending.appendleft(job)

    def _restart(self, job: _Job) -> None:
        """Back to the start: same prompt, same seed, so a retried reply is the reply it would have been."""
        job.attempts += 1
        job.chunks = collections.deque(job.prompt_chunks)
        job.fed, job.feed_lengths, job.generated = [], [], []
        job.reply_bytes, job.stop_reason, job.closing, job.first_sample = b"", "", False, True
        if job.sampler is not None:
            job.sampler = ReplySampler(job.sampler.params, torch.Generator().manual_seed(job.seed))

    def _step_succeeded(self) -> None:
        if self.batch_limit < self.max_batch:
            self._good_steps += 1
            if self._good_steps >= 100:  # memory pressure may have been momentary: grow back slowly
                self.batch_limit, self._good_steps = min(self.max_batch, self.batch_limit * 2), 0

    def _release_all(self, jobs) -> None:
        for job in jobs:
            try:
                self.backend.release(job.slot)
            except Exception:  # the slot may never have been loaded
                pass

    def _apply(self, outcome) -> None:
        rows, stepping, sampled, finished = outcome
        now = time.monotonic()
        for (slot, chunk), job in zip(rows, stepping):
            job.fed.extend(chunk)
            job.feed_lengths.append(len(chunk))
            if id(job) in sampled:
                self._accept_token(job, sampled[id(job)], now)
            if id(job) in finished:
                self._active.remove(job)
                self._free_slots.append(job.slot)
                if job.cancelled:
                    self._finish(job, GenerationCancelled())
                    continue
                text = job.text.strip() if job.sampler else ""
                job.text = text
                self._finish(job, GenerationResult(
                    text=text, generated=job.generated, fed=job.fed, feed_lengths=job.feed_lengths,
                    state=finished[id(job)], stop_reason=job.stop_reason or "prefill"))

    def _accept_token(self, job: _Job, token: int, now: float) -> None:
        """Record a sampled token and decide what to feed next: the token itself, or what closes the turn."""
        job.first_sample = False
        if job.first_token_at is None:
            job.first_token_at = now
            self.metrics.first_token(now - job.enqueued_at)
        job.generated.append(token)
        self.tokens_generated += 1
        self.metrics.token()
        self._token_times.append(now)
        piece = self.tokenizer.token_bytes(token)
        job.sampler.observe(token, piece.decode("utf-8", "replace"))
        before = job.reply_bytes
        combined = before + piece
        end = combined.find(TURN_END_BYTES)
        if end >= 0:
            # The state must read exactly "...reply\n\n": feed the token when it ends right there, otherwise the
            # bytes up to the turn end re-encoded (a token like "\n\nUser" must not leak its tail into the state).
            tail = combined[len(before) : end + len(TURN_END_BYTES)]
            job.chunks.append([token] if tail == piece else self.tokenizer.encode_bytes(tail))
            job.reply_bytes = combined[:end]
            job.stop_reason, job.closing = "turn_end", True
        elif len(job.generated) >= job.max_tokens:
            closing = b"\n" if combined.endswith(b"\n") else TURN_END_BYTES
            job.chunks.append([token] + self.tokenizer.encode_bytes(closing))
            job.reply_bytes = combined
            job.stop_reason, job.closing = "max_tokens", True
        else:
            job.chunks.append([token])
            job.reply_bytes = combined
        shown = job.reply_bytes[: complete_utf8_prefix(job.reply_bytes)].decode("utf-8", "replace").lstrip()
        # A retried job regrows text the caller has already seen: show nothing until it is past it.
        if shown != job.text and not job.text.startswith(shown):
            job.text = shown
            job.changed.set()


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()
