"""The engine's front: what the conversation layer calls (`generate`, `feed`), and the loop that runs the steps.

The loop runs in one dedicated thread, the only one that touches the model: the `Scheduler` plans a step, the
runner executes it, the scheduler applies the output, and one callback per step hands the event loop what changed
(streaming callers are woken once per step, finished replies are answered). The event loop never blocks on the
model and the step loop never waits for the event loop: with the batched runner one step ahead, the host's work on
a step (detokenizing, planning the next) runs while the GPU computes. Requests from the event loop (new jobs,
cancellations, warm-up) reach the thread through one inbox. A failed step goes to `Recovery`.

Every forward call a job makes is recorded (`feed_lengths`), so a replay can feed the same tokens in the same calls
and reach a bit-identical state.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import random
import threading
import time
from typing import AsyncIterator, Callable, Sequence

from bot.config import SCHEMA
from bot.engine.backend import Backend, State
from bot.engine.outputs import EngineError, GenerationCancelled, GenerationResult
from bot.engine.params import SamplingParams
from bot.engine.recovery import FAILED_MESSAGE, Recovery
from bot.engine.runner import make_runner
from bot.engine.scheduler import Job, Scheduler
from bot.engine.tokenizer import WorldTokenizer

CHUNK_LEN = SCHEMA["model"]["chunk_len"].default
MAX_BATCH = SCHEMA["model"]["max_batch"].default

log = logging.getLogger(__name__)

__all__ = ["Engine", "Generation", "GenerationResult", "GenerationCancelled", "EngineError"]


class Generation:
    """A reply in progress: iterate for the text so far (coalesced: each value is the whole text, newest only),
    then `await result()`. `cancel()` stops it; the channel's state is whatever the caller keeps."""

    def __init__(self, engine: "Engine", job: Job):
        self._engine = engine
        self._job = job

    async def __aiter__(self) -> AsyncIterator[str]:
        """The text so far; while the job waits for a slot, `queued` may change with the text unchanged (the
        same text is yielded again)."""
        job = self._job
        last, place = None, None
        while True:
            if job.text != last or job.queued != place:
                last, place = job.text, job.queued
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

    def stop(self) -> None:
        """End the reply after the tokens sampled so far: it finishes (stop_reason "stopped") with its state
        exactly that of what it fed. One that sampled nothing yet is cancelled."""
        self._engine._stop(self._job)

    @property
    def queued(self) -> int:
        """Its place in the queue for a slot on the GPU (1 = next), 0 once it runs."""
        return self._job.queued

    @property
    def text(self) -> str:
        return self._job.text

    @property
    def first_token_at(self) -> float | None:
        """time.monotonic() when the first token reached the host (benchmarks)."""
        return self._job.first_token_at

    @property
    def last_token_at(self) -> float | None:
        """time.monotonic() when the latest token reached the host (benchmarks)."""
        return self._job.last_token_at


class Engine:
    def __init__(self, backend: Backend, tokenizer: WorldTokenizer, *, chunk_len: int = CHUNK_LEN,
                 max_batch: int = MAX_BATCH, seed: int | None = None, metrics=None):
        from bot.metrics import NO_METRICS

        self.backend = backend
        self.tokenizer = tokenizer
        self.chunk_len = chunk_len
        max_batch = min(max_batch, getattr(backend, "max_batch", max_batch))  # slots the backend has room for
        self.max_batch = max_batch
        self.metrics = metrics or NO_METRICS
        self.recovery = Recovery(max_batch, self.metrics)
        self.runner = make_runner(backend, tokenizer, hook=lambda: self.step_hook)
        self.scheduler = Scheduler(tokenizer, chunk_len=chunk_len, max_batch=max_batch, recovery=self.recovery,
                                   device_feeds=self.runner.device_feeds)
        self._rng = random.Random(seed)
        self._inbox: collections.deque = collections.deque()  # ("job" | "cancel" | "call", payload)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._live: set[Job] = set()  # jobs whose caller has no answer yet
        self._token_times: collections.deque[float] = collections.deque()
        self.tokens_generated = 0
        self.step_hook: Callable[[Sequence[tuple[int, Sequence[int]]]], None] | None = None  # tests: fault injection

    @property
    def info(self):
        return self.backend.info

    @property
    def batch_limit(self) -> int:
        return self.recovery.batch_limit

    # ----- public API -------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._closing = False
            self._thread = threading.Thread(target=self._core, name="rwkv-engine", daemon=True)
            self._thread.start()

    async def close(self) -> None:
        for job in list(self._live):
            job.cancelled = True
        if self._thread is not None:
            with self._cond:
                self._closing = True
                self._cond.notify()
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        for job in list(self._live):
            self._finish(job, GenerationCancelled())

    def generate(self, state: State, prompt: Sequence[int], params: SamplingParams, *, channel: str = "",
                 seed: int | None = None) -> Generation:
        """Feed `prompt` after `state`, then sample a reply until the turn end or `params.max_tokens`."""
        seed = seed if seed is not None else self._rng.getrandbits(63)
        return Generation(self, self._new_job(channel, state, self.scheduler.split(prompt), params, seed))

    async def feed(self, state: State, chunks: Sequence[Sequence[int]] | None = None, *, tokens: Sequence[int] = (),
                   channel: str = "") -> GenerationResult:
        """Feed tokens without sampling: either explicit `chunks` (one forward call each, as recorded by an
        earlier job: a replay) or `tokens`, split into chunks of `chunk_len`."""
        queue = (collections.deque(list(c) for c in chunks if c) if chunks is not None
                 else self.scheduler.split(tokens))
        return await Generation(self, self._new_job(channel, state, queue, None, 0)).result()

    async def warmup(self, rows: int) -> None:
        """Prepare the steps of up to `rows` rows now (kernel compilation, CUDA graph capture); otherwise the first
        step at each new batch size pays for it."""
        warm = getattr(self.runner, "warmup", None)
        if warm is not None:
            done: concurrent.futures.Future = concurrent.futures.Future()
            self._post("call", (lambda: warm(min(rows, self.max_batch)), done))
            await asyncio.wrap_future(done)

    def reseed(self, seed: int) -> None:
        """Draw the seeds of replies sampled from now on from `seed`: the same requests give the same replies."""
        self._rng.seed(seed)

    def queue_depth(self) -> int:
        return len(self._live)

    def batch_size(self) -> int:
        """Rows in the current step (the admin page's plot; read across threads, so a moment old at worst)."""
        return len(self.scheduler.active)

    def tokens_per_second(self, window: float = 60.0) -> float:
        now = time.monotonic()
        while self._token_times and self._token_times[0] < now - window:
            self._token_times.popleft()
        return len(self._token_times) / window

    # ----- jobs -------------------------------------------------------------------------------------------
    def _new_job(self, channel, state, chunks, params, seed) -> Job:
        if self._thread is None:
            raise RuntimeError("engine not started")
        job = Job(channel=channel, state=state, chunks=chunks, params=params, seed=seed)
        job.done = asyncio.get_running_loop().create_future()
        job.changed = asyncio.Event()
        if not chunks:
            if params is not None:
                raise ValueError("a reply needs at least one prompt token")
            job.done.set_result(GenerationResult("", [], [], [], state, "prefill"))
            return job
        self._live.add(job)
        self._post("job", job)
        return job

    def _cancel(self, job: Job) -> None:
        if job.done.done():
            return
        job.cancelled = True
        self._post("cancel", job)

    def _stop(self, job: Job) -> None:
        if not job.done.done():
            self._post("stop", job)

    def _post(self, kind: str, payload) -> None:
        with self._cond:
            self._inbox.append((kind, payload))
            self._cond.notify()

    def _deliver(self, changed: list[Job], finished: list) -> None:
        """On the event loop, once per step: wake the callers whose text changed, answer the finished ones."""
        for job in changed:
            job.changed.set()
        for job, outcome in finished:
            self._finish(job, outcome)

    def _finish(self, job: Job, outcome) -> None:
        self._live.discard(job)
        if not job.done.done():
            if isinstance(outcome, BaseException):
                job.done.set_exception(outcome)
                job.done.exception()  # mark retrieved: a cancelled reply nobody awaits is not an error
            else:
                job.done.set_result(outcome)
        job.changed.set()

    # ----- the loop (the engine's thread) ------------------------------------------------------------------
    def _core(self) -> None:
        scheduler, runner = self.scheduler, self.runner
        while True:
            with self._cond:
                while not self._inbox and not self._closing and not (scheduler.has_work() or runner.busy()):
                    self._cond.wait()
                if self._closing:
                    return
                inbox, self._inbox = list(self._inbox), collections.deque()
            finished: list = []
            for kind, payload in inbox:
                if kind == "job":
                    scheduler.add(payload)
                elif kind == "cancel":
                    if scheduler.remove_pending(payload):
                        finished.append((payload, GenerationCancelled()))
                elif kind == "stop":
                    if not payload.generated:  # nothing written yet: the reply is dropped
                        payload.cancelled = True
                        if scheduler.remove_pending(payload):
                            finished.append((payload, GenerationCancelled()))
                    else:
                        payload.stop_requested = True
                else:  # a call to run in this thread
                    fn, done = payload
                    try:
                        done.set_result(fn())
                    except Exception as exc:
                        done.set_exception(exc)
            changed: list = []
            if scheduler.has_work() or runner.busy():
                plan = scheduler.schedule()
                changed = scheduler.queue_moved()  # after admission: only jobs that really wait
                try:
                    done_plan, output = runner.execute(plan)
                    self.recovery.step_succeeded()
                    finished += [(job, GenerationCancelled()) for job in plan.dropped]
                    update = scheduler.update(done_plan, output) if done_plan is not None \
                        else scheduler.update_states(output)
                except Exception as exc:  # a model failure: Recovery decides who retries
                    finished += self._recover(exc, plan)
                else:
                    self._count(update.sampled)
                    changed, finished = changed + update.changed, finished + update.finished
            if changed or finished:
                self._loop.call_soon_threadsafe(self._deliver, changed, finished)

    def _count(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        now = time.monotonic()
        for job in jobs:
            if len(job.generated) == 1:
                self.metrics.first_token(job.first_token_at - job.enqueued_at)
        self.tokens_generated += len(jobs)
        self.metrics.token(len(jobs))
        self._token_times.extend([now] * len(jobs))

    def _recover(self, exc: Exception, plan) -> list:
        """A step failed: every job not yet answered starts over from its start state once (the states of the
        step's rows, and of the step in flight before it, are undefined); a second failure is final. Returns the
        (job, error) of jobs that end here."""
        scheduler = self.scheduler
        jobs = list(dict.fromkeys(scheduler.active + scheduler.finishing + plan.dropped))
        self.runner.abort(jobs)
        finished = [(job, GenerationCancelled()) for job in plan.dropped]
        stepping = [j for j in jobs if j not in plan.dropped]
        retry, give_up = self.recovery.step_failed(exc, stepping, len(plan.rows))
        for job in stepping:
            scheduler.release(job)
            if job in scheduler.finishing:
                scheduler.finishing.remove(job)
        finished += [(job, GenerationCancelled() if job.cancelled else EngineError(FAILED_MESSAGE))
                     for job in give_up]
        for job in reversed(retry):
            job.restart()
            scheduler.add(job, first=True)
        return finished
