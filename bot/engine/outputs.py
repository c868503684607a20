"""What the engine hands back: a finished reply or feed, and the errors a caller can meet."""
from __future__ import annotations

from dataclasses import dataclass, field

from bot.engine.backend import State


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
    state: State  # the state after everything in `fed` (CPU tensors; read-only)
    stop_reason: str  # "turn_end", "max_tokens" or "prefill"


@dataclass
class StepOutput:
    """What a step produced: the sampled token of each sampling row and the final state of each finishing row,
    keyed by id(job)."""

    tokens: dict[int, int] = field(default_factory=dict)
    states: dict[int, State] = field(default_factory=dict)
