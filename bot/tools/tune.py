"""Measure launch choices on the GPU: `python -m bot.tools.tune [--dim 2048] [--tokens 2000]`.

1. Matrix-product layouts at decode batch sizes: x @ W with W stored (in, out) against F.linear with W stored
   (out, in), for every product shape of an RWKV-7 layer.
2. The prefill recurrence (`wkv7_prefill`): value rows per program and warps, for one long sequence and for 64
   sequences of 60 tokens.
Prints one line per measurement (median milliseconds, CUDA events via triton.testing.do_bench).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--no-gemm", action="store_true", help="only the prefill recurrence")
    args = ap.parse_args()
    import triton.testing

    from bot.engine import rwkv7
    from bot.tools.demo_model import rwkv7_weights
    from bot.engine.kernels import triton_ops

    C, dev, dt = args.dim, "cuda", torch.float16
    bench = lambda fn: triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    D = max(32, int(round(0.6 * C ** 0.8 / 32)) * 32)
    for B in () if args.no_gemm else (1, 4, 64, 256):
        for name, G, K, N in (("rkv", 3, C, C), ("lora1", 4, C, D), ("lora2", 4, D, C), ("O", 1, C, C),
                              ("ffnK", 1, C, 4 * C), ("ffnV", 1, 4 * C, C)):
            x = torch.randn(G, B, K, device=dev, dtype=dt)
            w = torch.randn(G, K, N, device=dev, dtype=dt) / K ** 0.5
            wt = w.transpose(1, 2).contiguous()
            a = bench(lambda: torch.bmm(x, w))
            b = bench(lambda: torch.bmm(x, wt.transpose(1, 2)))
            c = bench(lambda: F.linear(x[0], wt[0])) if G == 1 else float("nan")
            gb = G * K * N * 2 / 1e9
            print(f"gemm B={B:<4}{name:<6} (in,out) {a * 1000:8.1f} us {gb / a * 1e3:6.0f} GB/s | (out,in) bmm "
                  f"{b * 1000:8.1f} us | linear {c * 1000:8.1f} us")
    raw = rwkv7_weights(1, C, vocab=1024, seed=0, dtype=torch.float32, device=dev)
    z = rwkv7.prepare(raw, dt, dev)
    L = z["layers"][0]
    H = C // 64
    for label, seqs in (("1x%d" % args.tokens, [args.tokens]), ("64x60", [60] * 64)):
        T = sum(seqs)
        packed = rwkv7.Packed.build([[1] * n for n in seqs], list(range(len(seqs))), dev)
        pools = rwkv7.Pools.empty(1, len(seqs), C, 64, dt, dev)
        rkv = torch.randn(3, T, C, device=dev, dtype=dt)
        lora = torch.randn(4, T, C, device=dev, dtype=dt)
        vf = torch.randn(T, C, device=dev)
        for bv in (8, 16, 32, 64):
            for warps in (1, 2, 4):
                triton_ops.PREFILL_BV, triton_ops.PREFILL_WARPS = bv, warps
                try:
                    ms = bench(lambda: triton_ops.V7Ops.wkv7_prefill(1, L, rkv, lora, vf, pools.kv[0], packed, H, dt))
                except Exception as exc:  # a shape Triton refuses
                    print(f"prefill {label} BV={bv} warps={warps}: {exc.__class__.__name__}")
                    continue
                print(f"prefill {label:<8} BV={bv:<3} warps={warps}: {ms:7.3f} ms per layer "
                      f"({ms * 1000 / max(seqs):.3f} us per token step)")
        prep = torch.randn(6, T, C, device=dev)
        y = torch.empty(T, C, device=dev)
        post = bench(lambda: triton_ops._wkv7_post_kernel[(T, H)](
            y, prep, lora, y, L["r_k"], L["lnx_w"], L["lnx_b"], T * C, C, 64e-5, N=64, num_warps=2))
        print(f"post kernel {label}: {post:.3f} ms")


if __name__ == "__main__":
    main()
