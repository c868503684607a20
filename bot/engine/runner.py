"""Executes a step on the model, in the engine's worker thread (the only code that touches the backend).

`ModelRunner.execute(plan)` loads the states of admitted jobs, feeds every row its tokens in one
`backend.forward` call, samples the rows that need their next token, saves the final state of finishing rows, and
returns a plain `StepOutput`.
"""
from __future__ import annotations

from typing import Callable

import torch

from bot.engine.outputs import StepOutput
from bot.engine.sampling import ReplySampler
from bot.engine.scheduler import StepPlan


class ModelRunner:
    def __init__(self, backend, hook: Callable[[], Callable | None] = lambda: None):
        self.backend = backend
        self._hook = hook  # returns the test hook to call with each step's rows, if any

    def execute(self, plan: StepPlan) -> StepOutput:
        backend = self.backend
        for job in plan.dropped:
            backend.release(job.slot)
        for job in plan.admitted:
            backend.load(job.slot, job.state)
        rows = [(row.job.slot, row.tokens) for row in plan.rows]
        hook = self._hook()
        if hook:
            hook(rows)
        out = StepOutput()
        logits = backend.forward(rows) if rows else None
        sampling = [i for i, row in enumerate(plan.rows) if row.sample]
        if sampling:
            jobs = [plan.rows[i].job for i in sampling]
            for job in jobs:
                if job.sampler is None:
                    job.sampler = ReplySampler(job.params, torch.Generator().manual_seed(job.seed))
            tokens = self._sample(logits[sampling], jobs, [plan.rows[i].banned for i in sampling])
            out.tokens = {id(job): t for job, t in zip(jobs, tokens)}
        for row in plan.rows:
            if row.finish:
                out.states[id(row.job)] = backend.save(row.job.slot)
                backend.release(row.job.slot)
        return out

    def _sample(self, logits, jobs, banned) -> list[int]:
        texts = [job.text for job in jobs]
        samplers = [job.sampler for job in jobs]
        batch_sample = getattr(self.backend, "sample", None)
        if batch_sample is not None:
            return batch_sample(logits, samplers, [set(b) for b in banned], texts)
        logits = logits.float().cpu()
        return [s.sample(logits[k], banned[k], texts[k]) for k, s in enumerate(samplers)]

    def release_all(self, jobs) -> None:
        """After a failed step: forget every slot these jobs held (some may never have been loaded)."""
        for job in jobs:
            try:
                self.backend.release(job.slot)
            except Exception:
                pass
