"""Matrix products with few rows (decode at small batches): y = act(x @ W) for x (G, M, K), M <= 16.

At batch 1 a decode step is a stream of weight reads; cuBLAS's matrix-vector path leaves bandwidth unused on the
smaller matrices of a layer. This kernel streams W (G, K, N) (fp16/bf16, or int8 with a per-column scale) once in
(BLOCK_K, BLOCK_N) tiles through the tensor cores with the rows padded to 16, and splits K over several programs
when N alone gives too few. The split-K partial sums are added by the last program of each column block in a fixed
order, so the result is deterministic (no float atomics); a per-block counter says which program is last and is
reset by it, so the kernel is safe to capture in a CUDA graph.

`act`: "none", "relu2" (squared ReLU, RWKV-7's channel mix) or "lora" (RWKV-7's four LoRA inputs: tanh on group 1,
sigmoid on group 3).
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
MAX_ROWS = 16  # rows padded to one tensor-core tile; larger batches use cuBLAS
ACTS = {"none": 0, "relu2": 1, "lora": 2}


@triton.jit
def _act(y, g, ACT: tl.constexpr):
    if ACT == 1:
        y = tl.maximum(y, 0.0)
        y = y * y
    elif ACT == 2:
        t = 2.0 / (1.0 + tl.exp(-2.0 * y)) - 1.0
        s = 1.0 / (1.0 + tl.exp(-y))
        y = tl.where(g == 1, t, tl.where(g == 3, s, y))
    return y


@triton.jit
def _skinny_kernel(x_ptr, w_ptr, scale_ptr, out_ptr, part_ptr, count_ptr, M, K: tl.constexpr, N: tl.constexpr,
                   K_PER: tl.constexpr,
                   HAS_SCALE: tl.constexpr, ACT: tl.constexpr, SPLIT_K: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    g = tl.program_id(2)
    BM: tl.constexpr = 16
    m = tl.arange(0, BM)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < N
    x_base = x_ptr + g.to(tl.int64) * M * K
    w_base = w_ptr + g.to(tl.int64) * K * N
    acc = tl.zeros((BM, BLOCK_N), dtype=tl.float32)
    k_start = pid_k * K_PER
    for kk in range(0, K_PER, BLOCK_K):
        k = k_start + kk + tl.arange(0, BLOCK_K)
        k_ok = k < K
        x = tl.load(x_base + m[:, None] * K + k[None, :], mask=(m[:, None] < M) & k_ok[None, :], other=0.0)
        w = tl.load(w_base + k[:, None].to(tl.int64) * N + n[None, :], mask=k_ok[:, None] & n_ok[None, :],
                    other=0.0)
        if HAS_SCALE:
            w = w.to(x.dtype)
        acc += tl.dot(x.to(w.dtype), w, out_dtype=tl.float32)
    mask = (m[:, None] < M) & n_ok[None, :]
    out_offs = g.to(tl.int64) * M * N + m[:, None] * N + n[None, :]
    if SPLIT_K == 1:
        if HAS_SCALE:
            acc = acc * tl.load(scale_ptr + g.to(tl.int64) * N + n, mask=n_ok, other=0.0)[None, :]
        tl.store(out_ptr + out_offs, _act(acc, g, ACT).to(out_ptr.dtype.element_ty), mask=mask)
    else:
        blocks = tl.num_programs(0)
        slot = g * blocks + pid_n
        part = part_ptr + (slot.to(tl.int64) * SPLIT_K) * (BM * BLOCK_N) + m[:, None] * BLOCK_N \
            + tl.arange(0, BLOCK_N)[None, :]
        tl.store(part + pid_k * (BM * BLOCK_N), acc)
        arrived = tl.atomic_add(count_ptr + slot, 1)  # acq_rel: our partial is visible before we count
        if arrived == SPLIT_K - 1:  # the last program of this column block adds the partials in order
            total = tl.zeros((BM, BLOCK_N), dtype=tl.float32)
            for s in range(SPLIT_K):
                total += tl.load(part + s * (BM * BLOCK_N), cache_modifier=".cg")
            if HAS_SCALE:
                total = total * tl.load(scale_ptr + g.to(tl.int64) * N + n, mask=n_ok, other=0.0)[None, :]
            tl.store(out_ptr + out_offs, _act(total, g, ACT).to(out_ptr.dtype.element_ty), mask=mask)
            tl.atomic_xchg(count_ptr + slot, 0)


def _config(G: int, K: int, N: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_K, SPLIT_K): enough programs to cover the GPU's multiprocessors a few times over."""
    block_n, block_k = 64, 128
    blocks = G * triton.cdiv(N, block_n)
    split = 1
    while blocks * split < 512 and K // (split * 2) >= 4 * block_k:
        split *= 2
    return block_n, block_k, split


PARTIAL_FLOATS = 4 << 20  # split-K scratch (16 MiB): fixed, because a CUDA graph keeps the addresses it captured
COUNTERS = 1 << 16


class Skinny:
    """Scratch buffers (partials, counters) for the split-K products of one device; reused by every call."""

    def __init__(self, device):
        self.device = torch.device(device)
        self._parts = torch.empty(PARTIAL_FLOATS, dtype=torch.float32, device=self.device)
        self._counts = torch.zeros(COUNTERS, dtype=torch.int32, device=self.device)

    def __call__(self, x: torch.Tensor, w: torch.Tensor, act: str = "none", scale: torch.Tensor | None = None,
                 out_dtype=None) -> torch.Tensor:
        squeeze = x.dim() == 2
        if squeeze:
            x, w = x.unsqueeze(0), w.unsqueeze(0)
            scale = scale.unsqueeze(0) if scale is not None else None
        G, M, K = x.shape
        N = w.shape[-1]
        assert M <= MAX_ROWS and w.shape == (G, K, N)
        x = x.contiguous()
        out = torch.empty(G, M, N, dtype=out_dtype or (x.dtype if scale is None else x.dtype), device=x.device)
        block_n, block_k, split = _config(G, K, N)
        k_per = triton.cdiv(triton.cdiv(K, split), block_k) * block_k
        blocks = triton.cdiv(N, block_n)
        if split > 1 and (G * blocks * split * 16 * block_n > PARTIAL_FLOATS or G * blocks > COUNTERS):
            raise ValueError(f"skinny product {G}x{K}x{N} needs more split-K scratch than is reserved")
        _skinny_kernel[(blocks, split, G)](x, w, scale if scale is not None else w, out, self._parts, self._counts,
                                           M, K, N, k_per, HAS_SCALE=scale is not None, ACT=ACTS[act],
                                           SPLIT_K=split, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4,
                                           num_stages=1 if INTERPRET else 4)
        return out[0] if squeeze else out


def reference(x: torch.Tensor, w: torch.Tensor, act: str = "none", scale: torch.Tensor | None = None) -> torch.Tensor:
    """The same function in plain torch (float32), for tests."""
    wf = w.float() * (scale.float().unsqueeze(-2) if scale is not None else 1.0)
    y = torch.matmul(x.float(), wf)
    if act == "relu2":
        y = torch.relu(y) ** 2
    elif act == "lora":
        y = y.clone()
        y[1] = torch.tanh(y[1])
        y[3] = torch.sigmoid(y[3])
    return y


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight-only int8, symmetric per output column: w (..., K, N) -> (int8 (..., K, N), scale (..., N) float32)."""
    wf = w.float()
    scale = wf.abs().amax(dim=-2).clamp(min=1e-12) / 127.0
    q = torch.round(wf / scale.unsqueeze(-2)).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scale.contiguous()
