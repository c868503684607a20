"""Sampling parameters and the samplers: the `rwkv` package's PIPELINE penalties and nucleus sampling, and the
original web UI's Mirostat-v2 variant.

Each reply gets a `ReplySampler`, which holds what lives for one reply: the Mirostat mu and learning rate and the
penalty counts. It is the reference: one row of logits at a time on the CPU. `BatchSampler` samples every row of a
step on the device and must agree with it (greedy exactly; otherwise the same distribution).
"""
from __future__ import annotations

import math
import os

import numpy as np
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


class BatchSampler:
    """All rows of a step sampled on the device, each with its own ReplySampler's parameters; agrees with
    ReplySampler.sample (greedy exactly; otherwise the same distribution) and updates Mirostat mu/lr like it."""

    def __init__(self, device: torch.device, seed: int | None = None):
        self.device = device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(7), "little"))

    def sample(self, logits: torch.Tensor, samplers: list[ReplySampler], banned: list[set[int]],
               texts: list[str]) -> list[int]:
        R = len(samplers)
        if R == 0:
            return []
        dev = self.device
        logits = logits.to(dev).float()
        V = logits.shape[1]
        adjusted = self._adjust(logits, samplers, banned)
        greedy = [s.greedy for s in samplers]
        if all(greedy):
            return torch.argmax(adjusted, dim=-1).tolist()
        action = [i for i, s in enumerate(samplers) if not greedy[i] and texts[i].endswith(OPEN_ACTION)]
        sub = [i for i, s in enumerate(samplers) if not greedy[i] and not texts[i].endswith(OPEN_ACTION)]
        miro = [i for i in sub if samplers[i].params.mirostat_tau > 0]

        tokens = torch.argmax(adjusted, dim=-1)  # greedy rows keep this
        surprise = torch.zeros(R, device=dev)
        if action:
            rows = torch.tensor(action, device=dev)
            top = torch.topk(adjusted[rows], 20, dim=-1)
            pick = torch.multinomial(torch.softmax(top.values / 1000.0, dim=-1), 1, generator=self.generator)
            tokens[rows] = top.indices.gather(1, pick).squeeze(1)
        if sub:
            # Per-row parameters in one transfer: temperature, top_p, top_k, min_p, mirostat?, mu.
            table = torch.tensor([[samplers[i].params.temperature, samplers[i].params.top_p,
                                   samplers[i].params.top_k, samplers[i].params.min_p,
                                   1.0 if samplers[i].params.mirostat_tau > 0 else 0.0, samplers[i].mu]
                                  for i in sub], dtype=torch.float32).to(dev, non_blocking=True)
            temperature, top_p, top_k, min_p, is_miro, mu = table.t().contiguous().unsqueeze(-1)
            rows = torch.tensor(sub, device=dev) if len(sub) < R else None
            sorted_logits, sorted_ids = torch.sort(adjusted if rows is None else adjusted[rows], dim=-1,
                                                   descending=True)
            pos = torch.arange(V, device=dev).unsqueeze(0)
            probs = torch.softmax(sorted_logits, dim=-1)  # descending
            zero = torch.zeros((), device=dev)
            any_miro, all_miro = bool(miro), len(miro) == len(sub)
            if any_miro:
                # Mirostat: keep the tokens before the first one whose surprise -log2(p) exceeds mu (at least one);
                # renormalising the kept probabilities equals the reference's softmax over the kept logits.
                keep = (probs >= torch.exp2(-mu)).sum(dim=1, keepdim=True).clamp(min=1)
                miro_probs = torch.where(pos < keep, probs, zero)
            if not all_miro:
                # Nucleus (PIPELINE): drop tokens less likely than the one where the running total reaches top_p.
                cut = torch.searchsorted(torch.cumsum(probs, dim=-1), top_p, right=False).clamp(max=V - 1)
                nuc_probs = torch.where(probs < probs.gather(1, cut), zero, probs)
            kept = miro_probs if all_miro else nuc_probs if not any_miro else torch.where(is_miro > 0, miro_probs,
                                                                                          nuc_probs)
            if any(samplers[i].params.top_k > 0 for i in sub):
                kept = torch.where((top_k > 0) & (pos >= top_k), zero, kept)
            if any(samplers[i].params.min_p > 0 for i in sub):
                kept = torch.where((min_p > 0) & (kept < kept[:, :1] * min_p), zero, kept)
            if any(samplers[i].params.temperature != 1.0 for i in sub):
                kept = kept / kept[:, :1]  # the top token is always kept: scale it to 1 so the power can't underflow
                kept = torch.where(temperature != 1.0, kept ** (1.0 / temperature), kept)
            pick = torch.multinomial(kept, 1, generator=self.generator)  # multinomial normalises itself
            chosen = sorted_ids.gather(1, pick).squeeze(1)
            chosen_surprise = -torch.log2(probs.gather(1, pick).squeeze(1))
            if rows is None:
                tokens, surprise = chosen, chosen_surprise
            else:
                tokens[rows] = chosen
                surprise[rows] = chosen_surprise
        # One transfer back: tokens and the surprise of each drawn token (for Mirostat's update).
        both = torch.stack([tokens.double(), surprise.double()]).cpu()
        out = [int(t) for t in both[0].tolist()]
        if miro:
            surprises = both[1].tolist()
            for i in miro:
                s = samplers[i]
                s.mu, s.lr = mirostat_update(s.mu, s.lr, surprises[i], s.params.mirostat_tau,
                                             s.params.mirostat_lr_decay)
        return out

    def _adjust(self, logits: torch.Tensor, samplers: list[ReplySampler], banned: list[set[int]]) -> torch.Tensor:
        """Penalties and bans (ReplySampler.adjust for every row) as two scatters built with numpy on the host."""
        V = logits.shape[1]
        rows, tokens, amounts = [], [], []
        for i, s in enumerate(samplers):
            occ = s.occurrence
            if occ:
                counts = np.fromiter(occ.values(), dtype=np.float64, count=len(occ))
                rows.append(np.full(len(occ), i, dtype=np.int64))
                tokens.append(np.fromiter(occ.keys(), dtype=np.int64, count=len(occ)))
                # As ReplySampler: the amount in float64, subtracted from the float32 logit.
                amounts.append(s.params.presence_penalty + counts * s.params.frequency_penalty)
        ban_rows = [i for i, b in enumerate(banned) for _ in b]
        if not rows and not ban_rows:
            return logits
        adjusted = logits.clone()
        flat = adjusted.view(-1)
        if rows:
            idx = torch.from_numpy(np.concatenate(rows) * V + np.concatenate(tokens))
            amount = torch.from_numpy(-np.concatenate(amounts).astype(np.float32))
            # The (row, token) pairs are unique, so one scatter-add equals the reference's per-token subtraction.
            flat.index_add_(0, idx.to(flat.device, non_blocking=True), amount.to(flat.device, non_blocking=True))
        if ban_rows:
            idx = torch.tensor([i * V + t for i, b in enumerate(banned) for t in b], dtype=torch.long)
            flat.index_fill_(0, idx.to(flat.device, non_blocking=True), -float("inf"))
        return adjusted
