"""Sampling parameters and the samplers: the `rwkv` package's PIPELINE penalties and nucleus sampling, and the
original web UI's Mirostat-v2 variant.

Each reply gets a `ReplySampler`, which holds what lives for one reply: the Mirostat mu and learning rate and the
penalty counts. The reference implementation here works on one row of logits at a time on the CPU; a batched
backend may sample on its device but must agree with it (greedy exactly).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

import torch


class ParamError(ValueError):
    """A bad parameter name or value; the message names the parameter and its valid range."""


@dataclass(frozen=True)
class ParamSpec:
    kind: type
    low: float
    high: float
    help: str

    def describe(self) -> str:
        low = int(self.low) if self.kind is int else self.low
        high = int(self.high) if self.kind is int else self.high
        return f"{'an integer' if self.kind is int else 'a number'} from {low} to {high}"


SPECS: dict[str, ParamSpec] = {
    "temperature": ParamSpec(float, 0.0, 5.0, "randomness; 0 = always the most likely token (greedy)"),
    "top_p": ParamSpec(float, 0.0, 1.0, "nucleus: keep the most likely tokens up to this total probability"),
    "top_k": ParamSpec(int, 0, 65536, "keep only the k most likely tokens; 0 = off"),
    "min_p": ParamSpec(float, 0.0, 1.0, "drop tokens less likely than min_p x the top token's probability"),
    "presence_penalty": ParamSpec(float, -2.0, 2.0, "subtracted from tokens already used in this reply"),
    "frequency_penalty": ParamSpec(float, -2.0, 2.0, "subtracted per use of a token in this reply"),
    "penalty_decay": ParamSpec(float, 0.0, 1.0, "penalty counts are multiplied by this after each token"),
    "mirostat_tau": ParamSpec(float, 0.0, 20.0, "Mirostat target surprise in bits; 0 = off"),
    "mirostat_lr": ParamSpec(float, 0.0, 1.0, "Mirostat learning rate"),
    "mirostat_lr_decay": ParamSpec(float, 0.0, 1.0, "Mirostat learning-rate decay"),
    "max_tokens": ParamSpec(int, 1, 2000, "longest reply in tokens"),
}


@dataclass(frozen=True)
class SamplingParams:
    # The original web UI's recommended set (its README): Mirostat tau 5, lr 0.1, decay 0.01, top_p 0.6, temp 2.
    temperature: float = 2.0
    top_p: float = 0.6
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.1
    frequency_penalty: float = 0.0
    penalty_decay: float = 0.996
    mirostat_tau: float = 5.0
    mirostat_lr: float = 0.1
    mirostat_lr_decay: float = 0.01
    max_tokens: int = 300

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base: "SamplingParams | None" = None) -> "SamplingParams":
        """Validated; unknown names and out-of-range values raise ParamError."""
        return (base or cls()).updated({k: v for k, v in values.items()})

    def updated(self, changes: Mapping[str, Any]) -> "SamplingParams":
        parsed = {name: parse_param(name, value) for name, value in changes.items()}
        return replace(self, **parsed)


PARAM_NAMES = tuple(f.name for f in fields(SamplingParams))


def parse_param(name: str, value: Any) -> float | int:
    spec = SPECS.get(name)
    if spec is None:
        raise ParamError(f"unknown parameter {name!r}; valid: {', '.join(PARAM_NAMES)}")
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if spec.kind is int:
            if not number.is_integer():
                raise ValueError
            number = int(number)
    except (TypeError, ValueError, OverflowError):
        raise ParamError(f"{name} must be {spec.describe()}, got {str(value)[:40]!r}") from None
    if not (spec.low <= number <= spec.high) or (isinstance(number, float) and math.isnan(number)):
        raise ParamError(f"{name} must be {spec.describe()}, got {value}")
    return number


# Tokens whose use does not count towards the frequency penalty (the package's PIPELINE rule).
_UNCOUNTED = " \t0123456789"
# The original web UI bans the punctuation it just fed (e.g. the ":" after the speaker) for the first token.
FIRST_STEP_BANNED_TEXT = set("，。：？！,.:!?")
OPEN_ACTION = "（"  # after this the original draws the next token almost uniformly from the top 20 (vary actions)


class ReplySampler:
    """Sampling state for one reply."""

    def __init__(self, params: SamplingParams, generator: torch.Generator | None = None):
        self.params = params
        self.generator = generator
        self.mu = 2.0 * params.mirostat_tau
        self.lr = params.mirostat_lr
        self.occurrence: dict[int, float] = {}

    @property
    def greedy(self) -> bool:
        return self.params.temperature == 0

    def adjust(self, logits: torch.Tensor, banned: set[int] | frozenset[int] = frozenset()) -> torch.Tensor:
        """Penalties and bans applied to one row of float32 logits (a new tensor)."""
        logits = logits.float().clone()
        p = self.params
        for token, count in self.occurrence.items():
            logits[token] -= p.presence_penalty + count * p.frequency_penalty
        for token in banned:
            logits[token] = -math.inf
        return logits

    def sample(self, logits: torch.Tensor, banned: set[int] | frozenset[int] = frozenset(),
               reply_so_far: str = "") -> int:
        adjusted = self.adjust(logits, banned)
        if self.greedy:
            return int(torch.argmax(adjusted))
        if reply_so_far.endswith(OPEN_ACTION):
            return self._sample_open_action(adjusted)
        if self.params.mirostat_tau > 0:
            return self._sample_mirostat(adjusted)
        return self._sample_nucleus(adjusted)

    def observe(self, token: int, token_text: str) -> None:
        """Penalty bookkeeping after `token` was chosen (PIPELINE: decay all, then count the new token)."""
        decay = self.params.penalty_decay
        for t in self.occurrence:
            self.occurrence[t] *= decay
        weight = 0.0 if token_text in _UNCOUNTED else 1.0
        self.occurrence[token] = self.occurrence.get(token, 0.0) + weight

    def _draw(self, probs: torch.Tensor) -> int:
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def _sample_nucleus(self, logits: torch.Tensor) -> int:
        p = self.params
        probs = torch.softmax(logits, dim=-1)
        sorted_probs, sorted_ids = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        # PIPELINE's cutoff: the probability of the first token at which the running total reaches top_p.
        cut_index = int(torch.searchsorted(cumulative, torch.tensor([p.top_p]), right=False).clamp(max=len(cumulative) - 1))
        cutoff = float(sorted_probs[cut_index])
        probs = torch.where(probs < cutoff, torch.zeros_like(probs), probs)
        if 0 < p.top_k < len(probs):
            probs[sorted_ids[p.top_k:]] = 0
        if p.min_p > 0:
            probs = torch.where(probs < float(sorted_probs[0]) * p.min_p, torch.zeros_like(probs), probs)
        if p.temperature != 1.0:
            probs = probs ** (1.0 / p.temperature)
        return self._draw(probs / probs.sum())

    def _sample_mirostat(self, logits: torch.Tensor) -> int:
        p = self.params
        sorted_logits, sorted_ids = torch.sort(logits, descending=True)
        original = torch.softmax(sorted_logits, dim=-1)
        surprise = -torch.log2(original)
        keep = max(1, int((surprise <= self.mu).sum()))  # tokens before the first one above mu
        kept = torch.softmax(sorted_logits[:keep], dim=-1)
        if p.min_p > 0:
            kept = torch.where(kept >= kept[0] * p.min_p, kept, torch.zeros_like(kept))
        if p.top_k > 0:
            kept[p.top_k:] = 0
        if p.temperature != 1.0:
            kept = kept ** (1.0 / p.temperature)
        index = self._draw(kept / kept.sum())
        self.mu, self.lr = mirostat_update(self.mu, self.lr, float(surprise[index]), p.mirostat_tau,
                                           p.mirostat_lr_decay)
        return int(sorted_ids[index])

    def _sample_open_action(self, logits: torch.Tensor) -> int:
        top = torch.topk(logits, 20)
        probs = torch.softmax(top.values / 1000.0, dim=-1)
        return int(top.indices[self._draw(probs)])


def mirostat_update(mu: float, lr: float, surprise: float, tau: float, lr_decay: float) -> tuple[float, float]:
    """The original web UI's update after a draw: mu moves towards the target surprise; lr decays while mu is
    far above it."""
    mu -= lr * (surprise - tau)
    if mu > 10 * tau:
        lr /= 1 + lr_decay
    return mu, lr
