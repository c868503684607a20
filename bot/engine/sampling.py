"""Sampling parameters and the samplers: the `rwkv` package's PIPELINE penalties and nucleus sampling, and the
original web UI's Mirostat-v2 variant.

Each reply gets a `ReplySampler`, which holds what lives for one reply: the Mirostat mu and learning rate and the
penalty counts. It is the reference: one row of logits at a time on the CPU. `BatchSampler` samples every row of a
step on the device and must agree with it (greedy exactly; otherwise the same distribution).
"""
from __future__ import annotations

import math

import torch

from bot.engine.backend import to_device

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
        # The update reads the drawn token's surprise in float64, so that a batched sampler, whose float32 sums
        # run in another order, computes the same mu.
        drawn = float(sorted_logits[index]) - float(torch.logsumexp(sorted_logits.double(), dim=-1))
        self.mu, self.lr = mirostat_update(self.mu, self.lr, -drawn / math.log(2.0), p.mirostat_tau,
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


# --------------------------------------------------------------------------------------------------------------
# Every row of a step at once, on the device


class TokenTable:
    """Per-token facts the device needs, read once from the tokenizer: the penalty weight (0 for tokens the
    PIPELINE does not count) and the bytes that decide where a reply ends (see bot.engine.detokenizer)."""

    def __init__(self, tokenizer, vocab: int, device):
        weight, starts, ends, has_nn, nn_at_end, single_nl, tail_len, tail_val = ([] for _ in range(8))
        for t in range(vocab):
            piece = tokenizer.token_bytes(t)
            weight.append(0.0 if piece.decode("utf-8", "replace") in _UNCOUNTED else 1.0)
            starts.append(piece.startswith(b"\n"))
            ends.append(piece.endswith(b"\n"))
            at = piece.find(b"\n\n")
            has_nn.append(at >= 0)
            nn_at_end.append(at >= 0 and at + 2 == len(piece))
            single_nl.append(piece == b"\n")
            tail = piece[-3:]
            tail_len.append(len(tail))
            tail_val.append(int.from_bytes(tail, "big") if tail else 0)
        dev = torch.device(device)
        self.weight = torch.tensor(weight, dtype=torch.float64, device=dev)
        flags = torch.tensor([starts, ends, has_nn, nn_at_end, single_nl], dtype=torch.bool)
        self.starts_nl, self.ends_nl, self.has_nn, self.nn_at_end, self.single_nl = flags.to(dev)
        self.tail_len = torch.tensor(tail_len, dtype=torch.int64, device=dev)
        self.tail_val = torch.tensor(tail_val, dtype=torch.int64, device=dev)


OPEN_ACTION_TAIL = int.from_bytes(OPEN_ACTION.encode(), "big")  # the reply's last 3 bytes, as TokenTable packs them
OPEN_ACTION_TOP = 20
PENALTY_SLOTS = SPECS["max_tokens"].high  # distinct tokens a reply can count: at most one per sampled token
NUCLEUS = 1  # SamplerMode bits: which optional stages a step's rows need (each a variant of the step)
TOP_K = 2
MIN_P = 4
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # splitmix64's constants as signed 64-bit integers
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)


def _shr(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch shifts signed integers arithmetically)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def uniform(seed: torch.Tensor, counter: torch.Tensor) -> torch.Tensor:
    """splitmix64 of (seed, counter) -> float32 in [0, 1): each reply's own random stream, whatever else shares the
    step, so the same seed gives the same reply in any batch and after a retry."""
    x = seed + (counter + 1) * _GOLDEN
    x = (x ^ _shr(x, 30)) * _MIX1
    x = (x ^ _shr(x, 27)) * _MIX2
    x = x ^ _shr(x, 31)
    return _shr(x, 40).to(torch.float32) * (1.0 / (1 << 24))


def sampler_mode(params: list[SamplingParams]) -> tuple[int, int]:
    """(mode bits, top_k candidates) for rows with these parameters: the stages their step must run."""
    bits, k = 0, 0
    for p in params:
        if p.temperature == 0:
            continue
        if p.mirostat_tau <= 0:
            bits |= NUCLEUS
        if p.top_k > 0:
            bits |= TOP_K
            k = max(k, p.top_k)
        if p.min_p > 0:
            bits |= MIN_P
    return bits, (1 << (k - 1).bit_length()) if k else 0


class DeviceSampler:
    """The sampling state of every slot, kept on the device, and the sampling of any rows of a step.

    Per slot: the parameters, the Mirostat mu and learning rate (float64, as the reference), the penalty counts as
    a list of (token, count) pairs (float64: the reference's arithmetic, so greedy rows agree exactly), the
    seed and draw counter of the slot's random stream, and what the reply's bytes say so far (whether they end in a
    newline; their last three bytes), so the device knows, without asking the host, which rows just reached their
    turn end or token cap: those rows' next feed is held back (`stop_feed`) until the host closes their turn.

    `sample` has no host synchronisation and no shapes that depend on data, so it can run inside a CUDA graph. It
    agrees with ReplySampler: greedy rows exactly; sampled rows in distribution (its draws come from a counter-based
    stream, not torch.multinomial); Mirostat's mu and lr to float64 rounding.
    """

    def __init__(self, slots: int, vocab: int, device, table: TokenTable, draw_kernel=None):
        """`draw_kernel`: the fused draw (bot.engine.kernels.sampler.draw) for steps without nucleus or top-k."""
        dev = self.device = torch.device(device)
        self.draw_kernel = draw_kernel
        self.vocab, self.table = vocab, table
        f32 = lambda: torch.zeros(slots, dtype=torch.float32, device=dev)
        f64 = lambda: torch.zeros(slots, dtype=torch.float64, device=dev)
        i64 = lambda: torch.zeros(slots, dtype=torch.int64, device=dev)
        flag = lambda: torch.zeros(slots, dtype=torch.bool, device=dev)
        self.temperature, self.top_p, self.min_p = f32(), f32(), f32()
        self.top_k, self.seed, self.draws, self.remaining, self.ban, self.tail = (i64() for _ in range(6))
        self.presence, self.frequency, self.decay = f64(), f64(), f64()
        self.tau, self.mu, self.lr, self.lr_decay = f64(), f64(), f64(), f64()
        self.mirostat, self.prev_nl, self.done, self.stop_feed = flag(), flag(), flag(), flag()
        self.pen_tok = torch.full((slots, PENALTY_SLOTS), -1, dtype=torch.int64, device=dev)
        self.pen_cnt = torch.zeros(slots, PENALTY_SLOTS, dtype=torch.float64, device=dev)
        self.pen_len = i64()
        self.next_token = i64()  # what each slot feeds next when the host does not say

    # ----- a reply starts ---------------------------------------------------------------------------------------
    def begin(self, slots: list[int], params: list[SamplingParams | None], seeds: list[int],
              bans: list[int]) -> None:
        """Reset these slots for new replies (None: a feed, which never samples). `bans`: a token the first draw
        must not pick (the punctuation just fed), or -1. One host-to-device copy for all of them."""
        if not slots:
            return
        idx = to_device(slots, torch.int64, self.device)
        rows = []
        for p, seed, ban in zip(params, seeds, bans):
            p = p or SamplingParams(temperature=0.0, max_tokens=1)
            rows.append([p.temperature, p.top_p, p.min_p, p.top_k, seed, p.max_tokens, ban, p.presence_penalty,
                         p.frequency_penalty, p.penalty_decay, p.mirostat_tau, 2.0 * p.mirostat_tau, p.mirostat_lr,
                         p.mirostat_lr_decay, 1.0 if p.mirostat_tau > 0 else 0.0])
        floats = to_device([r[:3] for r in rows], torch.float32, self.device)
        ints = to_device([r[3:7] for r in rows], torch.int64, self.device)
        doubles = to_device([r[7:] for r in rows], torch.float64, self.device)
        for i, t in enumerate((self.temperature, self.top_p, self.min_p)):
            t[idx] = floats[:, i]
        for i, t in enumerate((self.top_k, self.seed, self.remaining, self.ban)):
            t[idx] = ints[:, i]
        for i, t in enumerate((self.presence, self.frequency, self.decay, self.tau, self.mu, self.lr,
                               self.lr_decay)):
            t[idx] = doubles[:, i]
        self.mirostat[idx] = doubles[:, 7] > 0
        for t in (self.draws, self.pen_len, self.tail):
            t[idx] = 0
        for t in (self.prev_nl, self.done, self.stop_feed):
            t[idx] = False
        self.pen_tok[idx] = -1
        self.pen_cnt[idx] = 0.0

    # ----- a step -----------------------------------------------------------------------------------------------
    def weights(self, logits: torch.Tensor, slots: torch.Tensor, mode: tuple[int, int] = (0, 0)):
        """The adjusted logits, the greedy token and the unnormalised weights a sampled row draws from (zero for
        every token its stages cut), for rows (R, V) of `slots`."""
        adj = self._adjust(logits.float(), slots)
        weight, greedy_tok = self._weights(adj, slots, mode)
        return adj, weight, greedy_tok

    def _weights(self, adj: torch.Tensor, slots: torch.Tensor, mode: tuple[int, int]):
        bits, top_k_candidates = mode
        V = adj.shape[1]
        greedy_tok = adj.argmax(dim=1)
        temperature = self.temperature[slots]
        p = torch.exp(adj - torch.logsumexp(adj, dim=1, keepdim=True))  # the reference's softmax
        pmax = p.gather(1, greedy_tok.unsqueeze(1))
        keep = -torch.log2(p) <= self.mu[slots].unsqueeze(1)  # Mirostat: surprise within mu (at least the top)
        if bits & NUCLEUS:
            keep = torch.where(self.mirostat[slots].unsqueeze(1), keep, self._nucleus(p, self.top_p[slots]))
        keep |= torch.arange(V, device=adj.device).unsqueeze(0) == greedy_tok.unsqueeze(1)
        if bits & MIN_P:
            min_p = self.min_p[slots].unsqueeze(1)
            keep &= (min_p <= 0) | (p >= pmax * min_p)
        if bits & TOP_K:
            k = self.top_k[slots].unsqueeze(1)
            values = torch.topk(p, min(top_k_candidates, V), dim=1).values
            kth = values.gather(1, (k - 1).clamp(0, values.shape[1] - 1))
            keep &= (k <= 0) | (p >= kth)
        # Temperature as a power of the probabilities scaled to the top one (which cannot underflow).
        inv_t = torch.where(temperature > 0, 1.0 / temperature.clamp(min=1e-6), 1.0).unsqueeze(1)
        return torch.where(keep, (p / pmax) ** inv_t, 0.0), greedy_tok

    def sample(self, logits: torch.Tensor, slots: torch.Tensor, active: torch.Tensor,
               mode: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """Tokens for rows (R, V) float32 of `slots` (R,); only `active` rows (R,) bool sample for real and update
        their slot's state (padding and held rows are computed and discarded). Returns (R,) int64."""
        live = active & ~self.done[slots]
        adj = self._adjust(logits.float(), slots)
        temperature = self.temperature[slots]
        u = uniform(self.seed[slots], self.draws[slots])
        open_action = self.tail[slots] == OPEN_ACTION_TAIL
        if self.draw_kernel is not None and not mode[0] & (NUCLEUS | TOP_K):
            token, surprise = self.draw_kernel(adj, temperature, self.mu[slots], self.min_p[slots], u, open_action,
                                               bool(mode[0] & MIN_P))
        else:
            token, surprise = self._draw_torch(adj, slots, mode, u, open_action, temperature)
        miro = live & (temperature > 0) & ~open_action & self.mirostat[slots]
        mu = self.mu[slots] - self.lr[slots] * (surprise - self.tau[slots])
        lr = torch.where(mu > 10 * self.tau[slots], self.lr[slots] / (1 + self.lr_decay[slots]), self.lr[slots])
        self.mu[slots] = torch.where(miro, mu, self.mu[slots])
        self.lr[slots] = torch.where(miro, lr, self.lr[slots])
        self.draws[slots] = self.draws[slots] + live.long()
        self.ban[slots] = torch.where(live, -1, self.ban[slots])  # the first-draw ban is spent
        self._observe(slots, token, live)
        self._reply_bytes(slots, token, live)
        self.next_token[slots] = torch.where(live, token, self.next_token[slots])
        return token

    def _draw_torch(self, adj, slots, mode, u, open_action, temperature):
        weight, greedy_tok = self._weights(adj, slots, mode)
        drawn = self._draw(weight, u, greedy_tok)
        # The original web UI's open-action rule: after "（" the next token is drawn from the top 20 almost evenly.
        top = torch.topk(adj, OPEN_ACTION_TOP, dim=1)
        top_drawn = top.indices.gather(1, self._draw(torch.softmax(top.values / 1000.0, dim=1), u,
                                                     torch.zeros_like(greedy_tok)).unsqueeze(1)).squeeze(1)
        token = torch.where(temperature <= 0, greedy_tok, torch.where(open_action, top_drawn, drawn))
        # Mirostat's update reads the drawn token's surprise in float64 (as the reference).
        lse64 = torch.logsumexp(adj.double(), dim=1)
        return token, (lse64 - adj.gather(1, token.unsqueeze(1)).squeeze(1).double()) / math.log(2.0)

    def _adjust(self, logits: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """Penalties and bans, as ReplySampler.adjust: each counted token's amount (float64, then float32) off its
        logit; the end-of-text token and the slot's first-draw ban to -inf."""
        tok = self.pen_tok[slots]
        amount = self.presence[slots].unsqueeze(1) + self.pen_cnt[slots] * self.frequency[slots].unsqueeze(1)
        amount = torch.where(tok >= 0, amount, 0.0).to(torch.float32)
        adj = logits.scatter_add(1, tok.clamp(min=0), -amount)  # (row, token) pairs are unique: one subtraction
        ban = self.ban[slots].unsqueeze(1)
        adj[:, 0] = -math.inf  # END_TOKEN
        return adj.scatter(1, ban.clamp(min=0), torch.where(ban >= 0, -math.inf, adj.gather(1, ban.clamp(min=0))))

    @staticmethod
    def _nucleus(p: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
        """PIPELINE's cut: keep tokens at least as likely as the one where the running total reaches top_p."""
        sorted_p = torch.sort(p, dim=1, descending=True).values
        cut = torch.searchsorted(torch.cumsum(sorted_p, dim=1), top_p.unsqueeze(1), right=False)
        return p >= sorted_p.gather(1, cut.clamp(max=p.shape[1] - 1))

    @staticmethod
    def _draw(weight: torch.Tensor, u: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
        """Inverse CDF: the first index whose running total of `weight` passes u * total."""
        total = torch.cumsum(weight, dim=1)
        index = torch.searchsorted(total, (u.unsqueeze(1) * total[:, -1:]).contiguous(), right=True)
        index = index.squeeze(1).clamp(max=weight.shape[1] - 1)
        ok = weight.gather(1, index.unsqueeze(1)).squeeze(1) > 0  # rounding at the very top end
        return torch.where(ok, index, fallback)

    def observe(self, slots: list[int], tokens: list[int], reply_bytes: bool = True) -> None:
        """Count tokens as if these slots had sampled them (tests; a running reply counts its draws itself);
        `reply_bytes=False` counts penalties only."""
        idx = torch.tensor(slots, device=self.device)
        token = torch.tensor(tokens, device=self.device)
        live = torch.ones(len(slots), dtype=torch.bool, device=self.device)
        self._observe(idx, token, live)
        if reply_bytes:
            self._reply_bytes(idx, token, live)

    def _observe(self, slots: torch.Tensor, token: torch.Tensor, live: torch.Tensor) -> None:
        """PIPELINE's penalty bookkeeping (ReplySampler.observe): every count decays, then the token's count grows
        by its weight; a token seen for the first time takes the next free pair."""
        tok, cnt, n = self.pen_tok[slots], self.pen_cnt[slots], self.pen_len[slots]
        cnt = cnt * self.decay[slots].unsqueeze(1)
        match = tok == token.unsqueeze(1)
        found = match.any(dim=1)
        pos = torch.where(found, match.to(torch.int8).argmax(dim=1), n).clamp(max=PENALTY_SLOTS - 1).unsqueeze(1)
        w = self.table.weight[token].unsqueeze(1)
        cnt = cnt.scatter(1, pos, torch.where(found.unsqueeze(1), cnt.gather(1, pos) + w, w))
        tok = tok.scatter(1, pos, token.unsqueeze(1))
        keep = live.unsqueeze(1)
        self.pen_cnt[slots] = torch.where(keep, cnt, self.pen_cnt[slots])
        self.pen_tok[slots] = torch.where(keep, tok, self.pen_tok[slots])
        self.pen_len[slots] = n + (live & ~found).long()

    def _reply_bytes(self, slots: torch.Tensor, token: torch.Tensor, live: torch.Tensor) -> None:
        """Where the reply stands after `token` (the rules of bot.engine.detokenizer): a turn end or the token cap
        ends it; the next feed is held back unless the token itself is what closes the turn."""
        tb = self.table
        prev_nl = self.prev_nl[slots]
        straddle = prev_nl & tb.starts_nl[token]
        turn_end = straddle | tb.has_nn[token]
        exact = torch.where(straddle, tb.single_nl[token], tb.nn_at_end[token])
        remaining = self.remaining[slots] - live.long()
        capped = ~turn_end & (remaining <= 0)
        ended = live & (turn_end | capped)
        self.remaining[slots] = remaining
        self.done[slots] = self.done[slots] | ended
        self.stop_feed[slots] = self.stop_feed[slots] | (ended & ~(turn_end & exact))
        n = tb.tail_len[token]
        grown = torch.where(n >= 3, tb.tail_val[token],
                            ((self.tail[slots] << (8 * n)) | tb.tail_val[token]) & 0xFFFFFF)
        self.tail[slots] = torch.where(live, grown, self.tail[slots])
        self.prev_nl[slots] = torch.where(live & (n > 0), tb.ends_nl[token], prev_nl)
