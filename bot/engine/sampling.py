"""Sampling parameters and the samplers: the `rwkv` package's PIPELINE penalties and nucleus sampling, and the
original web UI's Mirostat-v2 variant.

Each reply gets a `ReplySampler`, which holds what lives for one reply: the Mirostat mu and learning rate and the
penalty counts. The reference implementation here works on one row of logits at a time on the CPU; a batched
backend may sample on its device but must agree with it (greedy exactly).
"""
from __future__ import annotations

import math

import torch

# Re-exported: the samplers' callers build them from these parameters.
from bot.engine.params import PARAM_NAMES, SPECS, ParamError, ParamSpec, SamplingParams, parse_param  # noqa: F401

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
