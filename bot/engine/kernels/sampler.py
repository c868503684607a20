"""The default sampler's draw in one kernel per step (GPU): `DeviceSampler.sample` without nucleus and top-k.

One program per row walks the row's adjusted logits three times: (1) the maximum, the greedy token and the
softmax sums (float32 for the distribution, float64 for Mirostat's surprise), (2) the kept tokens' weights
(Mirostat's surprise bound, min-p, temperature) and their total, (3) the inverse-CDF draw. A row whose reply ends
with "（" instead draws from its top 20 almost evenly (the original web UI's open-action rule), found by 20 passes
of "largest below the last one". In place of some thirty tensor operations (a cumulative sum, a top-k, two log-sum-
exps over the whole vocabulary), which at batch 1 are launch-bound and at batch 256 move the logits a dozen times.

`draw(...)` returns (token, surprise in bits as float64); testable on the CPU with TRITON_INTERPRET=1.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

BLOCK = 2048
OPEN_TOP = 20


@triton.jit
def _kept_weight(row, idx, V, lse32, m, mu, inv_t, min_p, arg, HAS_MIN_P: tl.constexpr):
    """A block's weights: Mirostat keeps surprise <= mu (and the top token), min-p (0 keeps all), temperature."""
    x = tl.load(row + idx, mask=idx < V, other=-float("inf"))
    keep = (-(x - lse32) / 0.6931471805599453 <= mu) | (idx == arg)
    if HAS_MIN_P:
        keep = keep & (tl.exp(x - m) >= min_p)
    return tl.where(keep & (idx < V), tl.exp((x - m) * inv_t), 0.0)


@triton.jit
def _draw_kernel(adj_ptr, temp_ptr, mu_ptr, min_p_ptr, u_ptr, open_ptr, token_ptr, surprise_ptr, V: tl.constexpr,
                 HAS_MIN_P: tl.constexpr, BLOCK: tl.constexpr, OPEN_TOP: tl.constexpr, TOPS: tl.constexpr):
    r = tl.program_id(0)
    row = adj_ptr + r.to(tl.int64) * V
    offs = tl.arange(0, BLOCK)
    # (1) max, greedy token, sums of exp(x - max) in float32 and float64 (online over blocks)
    m = -float("inf")
    arg = 0
    s32 = 0.0
    s64 = tl.zeros((), dtype=tl.float64)
    for start in range(0, V, BLOCK):
        idx = start + offs
        x = tl.load(row + idx, mask=idx < V, other=-float("inf"))
        bm = tl.max(x, axis=0)
        ba = tl.min(tl.where(x == bm, idx, V), axis=0)
        new_m = tl.maximum(m, bm)
        arg = tl.where(bm > m, ba, arg)
        safe = tl.where(new_m == -float("inf"), 0.0, new_m)
        s32 = s32 * tl.exp(m - safe) + tl.sum(tl.exp(x - safe), axis=0)
        s64 = s64 * tl.exp(m.to(tl.float64) - safe.to(tl.float64)) \
            + tl.sum(tl.exp(x.to(tl.float64) - safe.to(tl.float64)), axis=0)
        m = new_m
    lse32 = m + tl.log(s32)
    temperature = tl.load(temp_ptr + r)
    mu = tl.load(mu_ptr + r)
    u = tl.load(u_ptr + r)
    inv_t = 1.0 / tl.maximum(temperature, 1e-6)
    is_open = tl.load(open_ptr + r) != 0
    token = arg
    if temperature > 0:
        if is_open:
            # the top OPEN_TOP values, by repeated "largest value (then lowest index) below the last one"
            last_v = float("inf")
            last_i = -1
            tops_v = tl.full((TOPS,), -float("inf"), dtype=tl.float32)
            tops_i = tl.zeros((TOPS,), dtype=tl.int32)
            k = tl.arange(0, TOPS)
            for j in range(OPEN_TOP):
                best_v = -float("inf")
                best_i = V
                for start in range(0, V, BLOCK):
                    idx = start + offs
                    x = tl.load(row + idx, mask=idx < V, other=-float("inf"))
                    below = (x < last_v) | ((x == last_v) & (idx > last_i))
                    x = tl.where(below & (idx < V), x, -float("inf"))
                    bm = tl.max(x, axis=0)
                    bi = tl.min(tl.where((x == bm) & below & (idx < V), idx, V), axis=0)
                    better = (bm > best_v) | ((bm == best_v) & (bi < best_i))
                    best_i = tl.where(better, bi, best_i)
                    best_v = tl.where(better, bm, best_v)
                tops_v = tl.where(k == j, best_v, tops_v)
                tops_i = tl.where(k == j, best_i, tops_i)
                last_v = best_v
                last_i = best_i
            w = tl.where(k < OPEN_TOP, tl.exp((tops_v - tl.max(tops_v, axis=0)) / 1000.0), 0.0)
            target = u * tl.sum(w, axis=0)
            c = tl.cumsum(w, axis=0)
            pick = tl.min(tl.where((c > target) & (k < OPEN_TOP), k, OPEN_TOP - 1), axis=0)
            token = tl.sum(tl.where(k == pick, tops_i, 0), axis=0)
        else:
            # (2) the kept tokens' weights and their total
            min_p = tl.load(min_p_ptr + r)
            total = 0.0
            for start in range(0, V, BLOCK):
                idx = start + offs
                w = _kept_weight(row, idx, V, lse32, m, mu, inv_t, min_p, arg, HAS_MIN_P)
                total += tl.sum(w, axis=0)
            # (3) inverse CDF: the first token whose running total passes u * total
            target = u * total
            run = 0.0
            found = V
            for start in range(0, V, BLOCK):
                idx = start + offs
                w = _kept_weight(row, idx, V, lse32, m, mu, inv_t, min_p, arg, HAS_MIN_P)
                c = run + tl.cumsum(w, axis=0)
                hit = tl.min(tl.where((c > target) & (w > 0), idx, V), axis=0)
                found = tl.where(found == V, hit, found)
                run += tl.sum(w, axis=0)
            token = tl.where(found < V, found, arg)
    x_tok = tl.load(row + token)
    lse64 = m.to(tl.float64) + tl.log(s64)
    tl.store(token_ptr + r, token.to(tl.int64))
    tl.store(surprise_ptr + r, (lse64 - x_tok.to(tl.float64)) / 0.6931471805599453)


def draw(adj: torch.Tensor, temperature: torch.Tensor, mu: torch.Tensor, min_p: torch.Tensor, u: torch.Tensor,
         open_action: torch.Tensor, has_min_p: bool) -> tuple[torch.Tensor, torch.Tensor]:
    R, V = adj.shape
    adj = adj.contiguous()
    token = torch.empty(R, dtype=torch.int64, device=adj.device)
    surprise = torch.empty(R, dtype=torch.float64, device=adj.device)
    _draw_kernel[(R,)](adj, temperature.contiguous(), mu.float().contiguous(), min_p.contiguous(),
                       u.contiguous(), open_action.to(torch.int8).contiguous(), token, surprise, V,
                       HAS_MIN_P=has_min_p, BLOCK=BLOCK, OPEN_TOP=OPEN_TOP,
                       TOPS=triton.next_power_of_2(OPEN_TOP), num_warps=8)
    return token, surprise


LN2 = math.log(2.0)
