"""Executes steps on the model, in the engine's worker thread (the only code that touches the backend).

`execute(plan)` runs a `StepPlan` and returns `(plan, StepOutput)` for the step whose results are in: the sampled
token of each sampling row and the final state of jobs whose state has reached host memory.

* `ModelRunner` serves any `Backend` (the plain `rwkv` package): load, one `forward` for all rows, sampling on the
  host with each reply's `ReplySampler`, save. It returns the step it was given.
* `BatchedRunner` serves `BatchedBackend` with everything on the device: states in the slab, the sampler's state
  per slot (`DeviceSampler`), each slot's sampled token fed back without a trip to the host, and a decode step and
  its sampling captured in one CUDA graph per batch size. It runs one step ahead: `execute(plan N+1)` launches step
  N+1, then waits for step N's tokens (one small copy) and returns them, so the host's work on step N (detokenizing,
  streaming, planning) overlaps the GPU's work on step N+1.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from bot.engine.backend import to_device
from bot.engine.outputs import StepOutput
from bot.engine.sampling import DeviceSampler, ReplySampler, TokenTable, sampler_mode
from bot.engine.scheduler import DEVICE, StepPlan
from bot.engine.states import PendingSave


class ModelRunner:
    device_feeds = False

    def __init__(self, backend, hook: Callable[[], Callable | None] = lambda: None):
        self.backend = backend
        self._hook = hook  # returns the test hook to call with each step's rows, if any

    def execute(self, plan: StepPlan) -> tuple[StepPlan | None, StepOutput]:
        backend = self.backend
        for job in plan.admitted:
            backend.load(job.slot, job.state)
        for job in plan.dropped:
            backend.release(job.slot)
        rows = [(row.job.slot, row.tokens) for row in plan.rows]
        hook = self._hook()
        if hook:
            hook(rows)
        out = StepOutput()
        if not rows:
            return plan, out
        logits = backend.forward(rows)
        sampling = [i for i, row in enumerate(plan.rows) if row.sample]
        if sampling:
            jobs = [plan.rows[i].job for i in sampling]
            for job in jobs:
                if job.sampler is None:
                    job.sampler = ReplySampler(job.params, torch.Generator().manual_seed(job.seed))
            rows_logits = logits[sampling].float().cpu()
            out.tokens = {id(job): job.sampler.sample(rows_logits[k], plan.rows[i].banned, job.reply.text)
                          for k, (i, job) in enumerate(zip(sampling, jobs))}
        for row in plan.rows:
            if row.finish:
                out.states[id(row.job)] = backend.save(row.job.slot)
                backend.release(row.job.slot)
        return plan, out

    def busy(self) -> bool:
        return False

    def abort(self, jobs) -> None:
        """After a failed step: forget every slot these jobs held (some may never have been loaded)."""
        for job in jobs:
            try:
                self.backend.release(job.slot)
            except Exception:
                pass


@dataclass
class _Launched:
    plan: StepPlan
    seq: int
    order: list  # jobs of the sampling rows, in the order of `tokens`
    tokens: torch.Tensor | None = None  # host copy of the sampled tokens (pinned on CUDA)
    event: object = None


@dataclass
class _Save:
    seq: int
    jobs: list
    pending: PendingSave = field(default=None)


class BatchedRunner:
    device_feeds = True

    def __init__(self, backend, tokenizer, hook: Callable[[], Callable | None] = lambda: None):
        self.backend = backend
        self.slab = backend.slab
        self.device = backend.device
        vocab = backend.info.vocab_size
        self.scratch_slot = backend.max_batch
        self.sampler = DeviceSampler(backend.max_batch + 1, vocab, self.device,
                                     TokenTable(tokenizer, vocab, self.device), draw_kernel=draw_kernel_for(backend))
        self.cuda = self.device.type == "cuda"
        self._hook = hook
        self._row_of: dict[int, int] = {}  # slot -> slab row
        self._graphs: dict[tuple, object] = {}  # (bucket, sampler mode) -> StepGraph
        self._inflight: _Launched | None = None
        self._saves: list[_Save] = []
        self._seq = 0

    # ----- a step -------------------------------------------------------------------------------------------
    def execute(self, plan: StepPlan) -> tuple[StepPlan | None, StepOutput]:
        with torch.no_grad():
            launched = self._launch(plan) if plan.rows or plan.admitted or plan.dropped else None
            if self._inflight is None:  # nothing was in flight: this step's own results, now
                done = launched
            else:
                done, self._inflight = self._inflight, launched
            out = self._collect(done)
            return (done.plan if done is not None else None), out

    def busy(self) -> bool:
        return self._inflight is not None or bool(self._saves)

    def _launch(self, plan: StepPlan) -> _Launched:
        self._seq += 1
        slab, sampler = self.slab, self.sampler
        if plan.admitted:
            rows = [slab.acquire() for _ in plan.admitted]
            for job, row in zip(plan.admitted, rows):
                self._row_of[job.slot] = row
            slab.load(rows, [job.state for job in plan.admitted])
            sampler.begin([j.slot for j in plan.admitted], [j.params for j in plan.admitted],
                          [j.seed for j in plan.admitted], [j.ban for j in plan.admitted])
        for job in plan.dropped:
            slab.release(self._row_of.pop(job.slot))
        hook = self._hook()
        if hook:
            hook([(row.job.slot, row.tokens if row.tokens is not DEVICE else []) for row in plan.rows])
        decode = [r for r in plan.rows if r.tokens is DEVICE or len(r.tokens) == 1]
        prefill = [r for r in plan.rows if r.tokens is not DEVICE and len(r.tokens) > 1]
        mode = sampler_mode([r.job.params for r in plan.rows if r.sample])
        outputs, order = [], []
        if decode:
            outputs.append(self._decode(decode, mode))
            order += [r.job for r in decode]
        if prefill:
            logits = self.backend.prefill([r.tokens for r in prefill], [self._row_of[r.job.slot] for r in prefill])
            slots = to_device([r.job.slot for r in prefill], torch.long, self.device)
            active = to_device([r.sample for r in prefill], torch.bool, self.device)
            outputs.append(sampler.sample(logits, slots, active, mode))
            order += [r.job for r in prefill]
        launched = _Launched(plan, self._seq, order)
        if outputs:
            tokens = torch.cat(outputs) if len(outputs) > 1 else outputs[0]
            launched.tokens = torch.empty(tokens.shape, dtype=torch.long, pin_memory=self.cuda)
            launched.tokens.copy_(tokens, non_blocking=self.cuda)
            if self.cuda:
                launched.event = torch.cuda.Event()
                launched.event.record()
        finishing = [r.job for r in plan.rows if r.finish]
        if finishing:
            save = _Save(self._seq, finishing)
            save.pending = slab.save([self._row_of.pop(job.slot) for job in finishing])
            self._saves.append(save)
        return launched

    def warmup(self, rows: int) -> None:
        """Capture the decode-and-sample graphs of every batch size up to `rows` for the default sampling."""
        from bot.engine.batched import BUCKETS, bucket_of

        if not self.backend.use_graphs:
            return
        with torch.no_grad():
            for bucket in sorted({bucket_of(b, self.backend.max_batch) for b in BUCKETS if b <= rows} |
                                 {bucket_of(rows, self.backend.max_batch)}):
                self._graph(bucket, (0, 0))

    def _graph(self, bucket: int, mode):
        key = (bucket, mode)
        graph = self._graphs.get(key)
        if graph is None:
            step = lambda inputs, scratch: self._decode_and_sample(inputs, scratch, mode)
            fill = [self.scratch_slot, self.backend.scratch_row, 0, 0]
            graph = self._graphs[key] = self.backend.capture(bucket, 4, step, fill)
        return graph

    def _decode(self, rows, mode) -> torch.Tensor:
        """Decode rows: the slot's device token or the host's one token, then sampling, in one graph replay."""
        columns = [[r.job.slot for r in rows], [self._row_of[r.job.slot] for r in rows],
                   [-1 if r.tokens is DEVICE else r.tokens[0] for r in rows], [int(r.sample) for r in rows]]
        B = len(rows)
        backend = self.backend
        if backend.use_graphs and B <= backend.max_batch:
            from bot.engine.batched import bucket_of

            return self._graph(bucket_of(B, backend.max_batch), mode).run(columns)[:B]
        inputs = to_device(columns, torch.long, self.device)
        return self._decode_and_sample(inputs, {}, mode)

    def _decode_and_sample(self, inputs: torch.Tensor, scratch: dict, mode) -> torch.Tensor:
        slot, row, override, sample = inputs
        sampler = self.sampler
        held = (override < 0) & sampler.done[slot]  # the reply ended: its token waits for the host's closing
        tokens = torch.where(override >= 0, override, sampler.next_token[slot])
        rows = torch.where(held, self.backend.scratch_row, row)
        logits = self.backend.decode_fn(torch.stack([tokens, rows]), scratch)
        return sampler.sample(logits, slot, (sample > 0) & ~held, mode)

    def _collect(self, done: _Launched | None) -> StepOutput:
        out = StepOutput()
        if done is not None and done.tokens is not None:
            if done.event is not None:
                done.event.synchronize()
            values = done.tokens.tolist()
            out.tokens = {id(job): t for job, t in zip(done.order, values)}
        idle = self._inflight is None
        for save in list(self._saves):
            if done is not None and save.seq > done.seq:
                continue
            if idle:
                save.pending.wait()  # nothing else to do: wait for the copies
            if save.pending.ready():
                self._saves.remove(save)
                out.states.update({id(job): state for job, state in zip(save.jobs, save.pending.states)})
        return out

    def abort(self, jobs) -> None:
        """After a failed step: nothing in flight counts; every slot's row goes back to the slab."""
        if self.cuda:
            try:
                torch.cuda.synchronize(self.device)
            except Exception:
                pass
        self._inflight = None
        self._saves.clear()
        for row in self._row_of.values():
            self.slab.release(row)
        self._row_of.clear()


def draw_kernel_for(backend):
    """The fused draw where the model runs Triton kernels (CUDA)."""
    if getattr(backend.ops, "name", "") != "triton":
        return None
    from bot.engine.kernels import sampler

    return sampler.draw


def make_runner(backend, tokenizer, hook) -> "ModelRunner | BatchedRunner":
    return BatchedRunner(backend, tokenizer, hook) if hasattr(backend, "slab") else ModelRunner(backend, hook)
