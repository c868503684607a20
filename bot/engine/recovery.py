"""What happens when a step fails: the one place that decides retries and the batch limit.

A failed step (an out-of-memory error, a CUDA or model error) leaves the states of its rows undefined, so every job
in it starts over from its start state, with the same prompt and seed: a retried reply is the reply it would have
been. A job gets one retry; a second failure is final and the caller gets `EngineError`. After an out-of-memory
error the batch limit halves (down to one job); it doubles again after `GROW_BACK_STEPS` good steps, since memory
pressure may have been momentary.
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

RETRIES = 1  # per job
GROW_BACK_STEPS = 100
FAILED_MESSAGE = "the model failed on this reply; please try again"


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


class Recovery:
    def __init__(self, max_batch: int, metrics):
        self.max_batch = max_batch
        self.batch_limit = max_batch  # lowered after an out-of-memory step, raised again as steps succeed
        self.metrics = metrics
        self._good_steps = 0

    def step_failed(self, exc: BaseException, jobs: list, rows: int) -> tuple[list, list]:
        """Split the jobs of a failed step of `rows` rows into (retry, give up); adjust the batch limit."""
        oom = is_out_of_memory(exc)
        kind = "out_of_memory" if oom else "model_error"
        log.error("engine step failed for %d rows (%s): %s: %s", rows, kind, exc.__class__.__name__, exc,
                  exc_info=exc if log.isEnabledFor(logging.DEBUG) else None)
        self.metrics.error(kind)
        if oom:
            self.batch_limit = max(1, rows // 2)
            self._good_steps = 0
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        retry = [j for j in jobs if not j.cancelled and j.attempts < RETRIES]
        give_up = [j for j in jobs if j not in retry]
        return retry, give_up

    def step_succeeded(self) -> None:
        if self.batch_limit < self.max_batch:
            self._good_steps += 1
            if self._good_steps >= GROW_BACK_STEPS:
                self.batch_limit, self._good_steps = min(self.max_batch, self.batch_limit * 2), 0
