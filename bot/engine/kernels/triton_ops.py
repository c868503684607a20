"""Triton kernels for the batched RWKV engine: drop-in replacements for `rwkv7.TorchOps` / `rwkv6.TorchOps`.

* `add_ln_shift_mix`: residual add + layer norm + token shift against the state pool + all token-shift mixes in
  one pass (one program per row).
* `wkv7_decode`: everything of RWKV-7's time mix between the matrix products, for one token per row: decay,
  in-context rate, key normalisation, value residual, the state update on the pool row, the output, per-head group
  norm, the r.k bonus and the gate (one program per (row, head), the 64x64 fp32 state in registers).
* `wkv7_seq` / `wkv6_seq`: the recurrences over packed sequences (prefill), one program per (sequence, head,
  block of value rows): state rows are independent, so a single long sequence still spreads over the GPU.
* `wkv6_decode`, `lora_act`, `relu_sq`, `add_ln`: small fusions.

States are float32; inputs may be fp16/bf16/fp32; all arithmetic in float32. Sizes that change from step to step
(rows, packed tokens) are not specialised on, so a new size never stops a step to compile a kernel variant.
Testable on the CPU with TRITON_INTERPRET=1.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from bot.engine.rwkv7 import DECAY_SCALE, GN_EPS, Packed

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# Launch shapes of the prefill recurrence (value rows per program, warps); bot.tools.tune measures them.
PREFILL_BV = int(os.environ.get("RWKV_BOT_PREFILL_BV", "16"))
PREFILL_WARPS = int(os.environ.get("RWKV_BOT_PREFILL_WARPS", "2"))


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0


@triton.jit(do_not_specialize=["B"])
def _add_ln_shift_mix_kernel(x_ptr, delta_ptr, w_ptr, b_ptr, pool_ptr, rows_ptr, maa_ptr, out_ptr, B, C, eps,
                             HAS_DELTA: tl.constexpr, HAS_POOL: tl.constexpr, M: tl.constexpr,
                             BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    offs = tl.arange(0, BLOCK_C)
    mask = offs < C
    x = tl.load(x_ptr + pid * C + offs, mask=mask, other=0.0)
    if HAS_DELTA:
        x += tl.load(delta_ptr + pid * C + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(x_ptr + pid * C + offs, x, mask=mask)
    mean = tl.sum(x, axis=0) / C
    xc = tl.where(mask, x - mean, 0.0)
    var = tl.sum(xc * xc, axis=0) / C
    xx = xc * (1.0 / tl.sqrt(var + eps)) * tl.load(w_ptr + offs, mask=mask, other=0.0) \
        + tl.load(b_ptr + offs, mask=mask, other=0.0)
    if HAS_POOL:
        row = tl.load(rows_ptr + pid)
        prev = tl.load(pool_ptr + row * C + offs, mask=mask, other=0.0).to(tl.float32)
        xq = xx.to(pool_ptr.dtype.element_ty)
        tl.store(pool_ptr + row * C + offs, xq, mask=mask)
        xx = xq.to(tl.float32)
        d = prev - xx
        for m in tl.static_range(M):
            mix = xx + d * tl.load(maa_ptr + m * C + offs, mask=mask, other=0.0)
            tl.store(out_ptr + (m * B + pid) * C + offs, mix.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(out_ptr + pid * C + offs, xx.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["n_per", "total"])
def _lora_act_kernel(h_ptr, out_ptr, n_per, total, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    h = tl.load(h_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    part = offs // n_per
    h = tl.where(part == 1, _tanh(h), tl.where(part == 3, _sigmoid(h), h))
    tl.store(out_ptr + offs, h.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["total"])
def _relu_sq_kernel(x_ptr, out_ptr, total, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x = tl.maximum(x, 0.0)
    tl.store(out_ptr + offs, (x * x).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["B"])
def _wkv7_decode_kernel(rkv_ptr, lora_ptr, vf_ptr, state_ptr, rows_ptr, out_ptr,
                        w0_ptr, a0_ptr, v0_ptr, kk_ptr, ka_ptr, rk_ptr, lnw_ptr, lnb_ptr,
                        B, C, decay_scale, eps, LAYER0: tl.constexpr, N: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
    n = tl.arange(0, N)
    c = h * N + n
    BC = B * C
    r = tl.load(rkv_ptr + b * C + c).to(tl.float32)
    k = tl.load(rkv_ptr + BC + b * C + c).to(tl.float32)
    v = tl.load(rkv_ptr + 2 * BC + b * C + c).to(tl.float32)
    v_l = tl.load(lora_ptr + b * C + c).to(tl.float32)
    w_l = tl.load(lora_ptr + BC + b * C + c).to(tl.float32)
    a_l = tl.load(lora_ptr + 2 * BC + b * C + c).to(tl.float32)
    g = tl.load(lora_ptr + 3 * BC + b * C + c).to(tl.float32)
    w = tl.exp(-decay_scale * _sigmoid(tl.load(w0_ptr + c) + w_l))
    a = _sigmoid(tl.load(a0_ptr + c) + a_l)
    kk = k * tl.load(kk_ptr + c)
    kk = kk / tl.maximum(tl.sqrt(tl.sum(kk * kk, axis=0)), 1e-12)
    k = k * (1.0 + (a - 1.0) * tl.load(ka_ptr + c))
    if LAYER0:
        tl.store(vf_ptr + b * C + c, v)
    else:
        vf = tl.load(vf_ptr + b * C + c)
        v = v + (vf - v) * _sigmoid(tl.load(v0_ptr + c) + v_l)
    row = tl.load(rows_ptr + b).to(tl.int64)
    sp = state_ptr + row * (C * N) + h * (N * N) + n[:, None] * N + n[None, :]  # [value i, key j]
    S = tl.load(sp)
    sa = tl.sum(S * (-kk)[None, :], axis=1)
    S = S * w[None, :] + sa[:, None] * (kk * a)[None, :] + v[:, None] * k[None, :]
    tl.store(sp, S)
    y = tl.sum(S * r[None, :], axis=1)
    mean = tl.sum(y, axis=0) / N
    yc = y - mean
    var = tl.sum(yc * yc, axis=0) / N
    y = yc / tl.sqrt(var + eps) * tl.load(lnw_ptr + c) + tl.load(lnb_ptr + c)
    bonus = tl.sum(r * k * tl.load(rk_ptr + c), axis=0)
    y = (y + bonus * v) * g
    tl.store(out_ptr + b * C + c, y.to(out_ptr.dtype.element_ty))


@triton.jit
def _wkv7_token(S, t, r_ptr, w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, y_ptr, h, i, j, C, N: tl.constexpr):
    base = t.to(tl.int64) * C + h * N
    r = tl.load(r_ptr + base + j)
    w = tl.load(w_ptr + base + j)
    k = tl.load(k_ptr + base + j)
    a = tl.load(a_ptr + base + j)
    bb = tl.load(b_ptr + base + j)
    v = tl.load(v_ptr + base + i)
    sa = tl.sum(S * a[None, :], axis=1)
    S = S * w[None, :] + sa[:, None] * bb[None, :] + v[:, None] * k[None, :]
    tl.store(y_ptr + base + i, tl.sum(S * r[None, :], axis=1))
    return S


@triton.jit
def _wkv7_seq_kernel(r_ptr, w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, y_ptr, state_ptr, rows_ptr, starts_ptr, lens_ptr,
                     C, N: tl.constexpr, BV: tl.constexpr, INTERPRET: tl.constexpr):
    s = tl.program_id(0)
    h = tl.program_id(1)
    vb = tl.program_id(2)
    i = vb * BV + tl.arange(0, BV)  # value rows of the state held by this program
    j = tl.arange(0, N)  # key columns
    row = tl.load(rows_ptr + s).to(tl.int64)
    start = tl.load(starts_ptr + s)
    length = tl.load(lens_ptr + s)
    sp = state_ptr + row * (C * N) + h * (N * N) + i[:, None] * N + j[None, :]
    S = tl.load(sp)
    if INTERPRET:  # the interpreter cannot iterate a range with run-time bounds
        t = start
        while t < start + length:
            S = _wkv7_token(S, t, r_ptr, w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, y_ptr, h, i, j, C, N)
            t += 1
    else:
        for t in range(start, start + length):
            S = _wkv7_token(S, t, r_ptr, w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, y_ptr, h, i, j, C, N)
    tl.store(sp, S)


@triton.jit(do_not_specialize=["T", "S"])
def _shift_mix_kernel(xx_ptr, pool_ptr, rows_ptr, src_ptr, maa_ptr, out_ptr, T, S, C, M: tl.constexpr,
                      BLOCK_C: tl.constexpr):
    """Packed token shift: token t mixes with xx[src - S], or with pool[rows[src]] when src < S (a sequence's
    first token takes its state's x_prev)."""
    t = tl.program_id(0)
    offs = tl.arange(0, BLOCK_C)
    mask = offs < C
    src = tl.load(src_ptr + t)
    from_pool = src < S
    row = tl.load(rows_ptr + tl.minimum(src, S - 1)).to(tl.int64)
    prev_ptr = tl.where(from_pool, pool_ptr + row * C, xx_ptr + (src - S).to(tl.int64) * C)
    prev = tl.load(prev_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    xx = tl.load(xx_ptr + t.to(tl.int64) * C + offs, mask=mask, other=0.0).to(tl.float32)
    d = prev - xx
    for m in tl.static_range(M):
        mix = xx + d * tl.load(maa_ptr + m * C + offs, mask=mask, other=0.0)
        tl.store(out_ptr + (m * T + t).to(tl.int64) * C + offs, mix.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["TC"])
def _wkv7_prep_kernel(rkv_ptr, lora_ptr, vf_ptr, out_ptr, w0_ptr, a0_ptr, v0_ptr, kk_ptr, ka_ptr, TC, C,
                      decay_scale, LAYER0: tl.constexpr, N: tl.constexpr):
    """Per (token, head): the recurrence inputs from the raw products (RWKV-7), into out (6, T, C) float32 as
    r, w (decay factor), k, v, a = -kk, b = kk * rate. Layer 0 stores v_first."""
    t = tl.program_id(0)
    h = tl.program_id(1)
    c = h * N + tl.arange(0, N)
    base = t.to(tl.int64) * C
    r = tl.load(rkv_ptr + base + c).to(tl.float32)
    k = tl.load(rkv_ptr + TC + base + c).to(tl.float32)
    v = tl.load(rkv_ptr + 2 * TC + base + c).to(tl.float32)
    w_l = tl.load(lora_ptr + TC + base + c).to(tl.float32)
    a_l = tl.load(lora_ptr + 2 * TC + base + c).to(tl.float32)
    w = tl.exp(-decay_scale * _sigmoid(tl.load(w0_ptr + c) + w_l))
    rate = _sigmoid(tl.load(a0_ptr + c) + a_l)
    kk = k * tl.load(kk_ptr + c)
    kk = kk / tl.maximum(tl.sqrt(tl.sum(kk * kk, axis=0)), 1e-12)
    k = k * (1.0 + (rate - 1.0) * tl.load(ka_ptr + c))
    if LAYER0:
        tl.store(vf_ptr + base + c, v)
    else:
        vf = tl.load(vf_ptr + base + c)
        v_l = tl.load(lora_ptr + base + c).to(tl.float32)
        v = v + (vf - v) * _sigmoid(tl.load(v0_ptr + c) + v_l)
    tl.store(out_ptr + base + c, r)
    tl.store(out_ptr + TC + base + c, w)
    tl.store(out_ptr + 2 * TC + base + c, k)
    tl.store(out_ptr + 3 * TC + base + c, v)
    tl.store(out_ptr + 4 * TC + base + c, -kk)
    tl.store(out_ptr + 5 * TC + base + c, kk * rate)


@triton.jit(do_not_specialize=["TC"])
def _wkv7_post_kernel(y_ptr, prep_ptr, lora_ptr, out_ptr, rk_ptr, lnw_ptr, lnb_ptr, TC, C, eps,
                      N: tl.constexpr):
    """Per (token, head): group norm of the recurrence output, the r.k bonus and the gate -> out (T, C)."""
    t = tl.program_id(0)
    h = tl.program_id(1)
    c = h * N + tl.arange(0, N)
    base = t.to(tl.int64) * C
    y = tl.load(y_ptr + base + c)
    r = tl.load(prep_ptr + base + c)
    k = tl.load(prep_ptr + 2 * TC + base + c)
    v = tl.load(prep_ptr + 3 * TC + base + c)
    g = tl.load(lora_ptr + 3 * TC + base + c).to(tl.float32)
    mean = tl.sum(y, axis=0) / N
    yc = y - mean
    var = tl.sum(yc * yc, axis=0) / N
    y = yc / tl.sqrt(var + eps) * tl.load(lnw_ptr + c) + tl.load(lnb_ptr + c)
    y = (y + tl.sum(r * k * tl.load(rk_ptr + c), axis=0) * v) * g
    tl.store(out_ptr + base + c, y.to(out_ptr.dtype.element_ty))


@triton.jit
def _wkv6_decode_kernel(r_ptr, w_ptr, k_ptr, v_ptr, u_ptr, y_ptr, state_ptr, rows_ptr, C, N: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
    n = tl.arange(0, N)
    c = h * N + n
    r = tl.load(r_ptr + b * C + c)
    w = tl.load(w_ptr + b * C + c)
    k = tl.load(k_ptr + b * C + c)
    v = tl.load(v_ptr + b * C + c)
    u = tl.load(u_ptr + c)
    row = tl.load(rows_ptr + b).to(tl.int64)
    sp = state_ptr + row * (C * N) + h * (N * N) + n[:, None] * N + n[None, :]  # [key j, value i]
    S = tl.load(sp)
    y = tl.sum(r * u * k, axis=0) * v + tl.sum(S * r[:, None], axis=0)
    S = k[:, None] * v[None, :] + w[:, None] * S
    tl.store(sp, S)
    tl.store(y_ptr + b * C + c, y)


@triton.jit
def _wkv6_token(S, t, r_ptr, w_ptr, k_ptr, v_ptr, u, y_ptr, h, i, j, C, N: tl.constexpr):
    base = t.to(tl.int64) * C + h * N
    r = tl.load(r_ptr + base + j)
    w = tl.load(w_ptr + base + j)
    k = tl.load(k_ptr + base + j)
    v = tl.load(v_ptr + base + i)
    y = tl.sum(r * u * k, axis=0) * v + tl.sum(S * r[:, None], axis=0)
    S = k[:, None] * v[None, :] + w[:, None] * S
    tl.store(y_ptr + base + i, y)
    return S


@triton.jit
def _wkv6_seq_kernel(r_ptr, w_ptr, k_ptr, v_ptr, u_ptr, y_ptr, state_ptr, rows_ptr, starts_ptr, lens_ptr,
                     C, N: tl.constexpr, BV: tl.constexpr, INTERPRET: tl.constexpr):
    s = tl.program_id(0)
    h = tl.program_id(1)
    vb = tl.program_id(2)
    i = vb * BV + tl.arange(0, BV)  # value columns
    j = tl.arange(0, N)  # key rows
    row = tl.load(rows_ptr + s).to(tl.int64)
    start = tl.load(starts_ptr + s)
    length = tl.load(lens_ptr + s)
    u = tl.load(u_ptr + h * N + j)
    sp = state_ptr + row * (C * N) + h * (N * N) + j[:, None] * N + i[None, :]
    S = tl.load(sp)
    if INTERPRET:
        t = start
        while t < start + length:
            S = _wkv6_token(S, t, r_ptr, w_ptr, k_ptr, v_ptr, u, y_ptr, h, i, j, C, N)
            t += 1
    else:
        for t in range(start, start + length):
            S = _wkv6_token(S, t, r_ptr, w_ptr, k_ptr, v_ptr, u, y_ptr, h, i, j, C, N)
    tl.store(sp, S)


def _c(t: torch.Tensor) -> torch.Tensor:
    return t if t.is_contiguous() else t.contiguous()


def _ln_warps(C: int) -> int:
    return 4 if C <= 1024 else 8 if C <= 4096 else 16


class V7Ops:
    name = "triton"

    @staticmethod
    def add_ln_shift_mix(x, delta, ln_w, ln_b, prev_pool, rows, maa, out_dtype):
        B, C = x.shape
        M = maa.shape[0]
        out = torch.empty(M, B, C, dtype=out_dtype, device=x.device)
        _add_ln_shift_mix_kernel[(B,)](x, _c(delta) if delta is not None else x, ln_w, ln_b, prev_pool, rows, maa,
                                       out, B, C, 1e-5, HAS_DELTA=delta is not None, HAS_POOL=True, M=M,
                                       BLOCK_C=triton.next_power_of_2(C), num_warps=_ln_warps(C))
        return out

    @staticmethod
    def add_ln(x, delta, ln_w, ln_b, out_dtype):
        B, C = x.shape
        out = torch.empty(B, C, dtype=out_dtype, device=x.device)
        _add_ln_shift_mix_kernel[(B,)](x, _c(delta) if delta is not None else x, ln_w, ln_b, out, x, ln_w, out,
                                       B, C, 1e-5, HAS_DELTA=delta is not None, HAS_POOL=False, M=0,
                                       BLOCK_C=triton.next_power_of_2(C), num_warps=_ln_warps(C))
        return out

    @staticmethod
    def lora_act(h):
        h = _c(h)
        out = torch.empty_like(h)
        total = h.numel()
        _lora_act_kernel[(triton.cdiv(total, 1024),)](h, out, total // 4, total, BLOCK=1024)
        return out

    @staticmethod
    def relu_sq(x):
        x = _c(x)
        out = torch.empty_like(x)
        total = x.numel()
        _relu_sq_kernel[(triton.cdiv(total, 1024),)](x, out, total, BLOCK=1024)
        return out

    @staticmethod
    def wkv7_decode(layer_id, L, rkv, lora, v_first, kv_pool, rows, H, out_dtype):
        _, B, C = rkv.shape
        N = C // H
        out = torch.empty(B, C, dtype=out_dtype, device=rkv.device)
        _wkv7_decode_kernel[(B, H)](_c(rkv), _c(lora), v_first, kv_pool, rows, out,
                                    L["w0"], L["a0"], L["v0"], L["k_k"], L["k_a"], L["r_k"], L["lnx_w"], L["lnx_b"],
                                    B, C, DECAY_SCALE, GN_EPS, LAYER0=layer_id == 0, N=N, num_warps=4)
        return out

    @staticmethod
    def wkv_seq(r, w, k, v, a, b, kv_pool, packed: Packed, H):
        T, C = r.shape
        N = C // H
        y = torch.empty(T, C, dtype=torch.float32, device=r.device)
        BV = 16
        S = packed.rows.shape[0]
        _wkv7_seq_kernel[(S, H, N // BV)](_c(r), _c(w), _c(k), _c(v), _c(a), _c(b), y, kv_pool, packed.rows,
                                          packed.starts, packed.lens, C, N=N, BV=BV, INTERPRET=INTERPRET,
                                          num_warps=2)
        return y


    @staticmethod
    def shift_mix(xx, prev_pool, packed: Packed, maa, out_dtype):
        T, C = xx.shape
        M = maa.shape[0]
        S = packed.rows.shape[0]
        out = torch.empty(M, T, C, dtype=out_dtype, device=xx.device)
        _shift_mix_kernel[(T,)](xx, prev_pool, packed.rows, packed.shift_src, maa, out, T, S, C, M=M,
                                BLOCK_C=triton.next_power_of_2(C), num_warps=_ln_warps(C))
        prev_pool[packed.rows] = xx[packed.last]  # after the kernel: it reads the old x_prev of first tokens
        return out

    @staticmethod
    def wkv7_prefill(layer_id, L, rkv, lora, v_first, kv_pool, packed: Packed, H, out_dtype):
        """Three launches: inputs (per token and head), the recurrence (per sequence, head and block of value
        rows), then group norm + bonus + gate (per token and head)."""
        _, T, C = rkv.shape
        N = C // H
        rkv, lora = _c(rkv), _c(lora)
        prep = torch.empty(6, T, C, dtype=torch.float32, device=rkv.device)
        _wkv7_prep_kernel[(T, H)](rkv, lora, v_first, prep, L["w0"], L["a0"], L["v0"], L["k_k"], L["k_a"], T * C, C,
                                  DECAY_SCALE, LAYER0=layer_id == 0, N=N, num_warps=2)
        y = torch.empty(T, C, dtype=torch.float32, device=rkv.device)
        BV = min(PREFILL_BV, N)
        S = packed.rows.shape[0]
        _wkv7_seq_kernel[(S, H, N // BV)](prep[0], prep[1], prep[2], prep[3], prep[4], prep[5], y, kv_pool,
                                          packed.rows, packed.starts, packed.lens, C, N=N, BV=BV,
                                          INTERPRET=INTERPRET, num_warps=PREFILL_WARPS)
        out = torch.empty(T, C, dtype=out_dtype, device=rkv.device)
        _wkv7_post_kernel[(T, H)](y, prep, lora, out, L["r_k"], L["lnx_w"], L["lnx_b"], T * C, C, GN_EPS, N=N,
                                  num_warps=2)
        return out

class V6Ops:
    name = "triton"

    @staticmethod
    def wkv_decode(r, w, k, v, u, kv_pool, rows, H):
        B, C = r.shape
        y = torch.empty(B, C, dtype=torch.float32, device=r.device)
        _wkv6_decode_kernel[(B, H)](_c(r), _c(w), _c(k), _c(v), u, y, kv_pool, rows, C, N=C // H, num_warps=4)
        return y

    @staticmethod
    def wkv_seq(r, w, k, v, u, kv_pool, packed: Packed, H):
        T, C = r.shape
        N = C // H
        y = torch.empty(T, C, dtype=torch.float32, device=r.device)
        BV = 16
        S = packed.rows.shape[0]
        _wkv6_seq_kernel[(S, H, N // BV)](_c(r), _c(w), _c(k), _c(v), u, y, kv_pool, packed.rows, packed.starts,
                                          packed.lens, C, N=N, BV=BV, INTERPRET=INTERPRET, num_warps=2)
        return y
