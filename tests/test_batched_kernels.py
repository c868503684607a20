"""The Triton kernels compute the same function as the plain torch ops.

Runs where Triton is importable: on the CPU through Triton's interpreter (TRITON_INTERPRET=1, set here before the
import), on a GPU natively. Skipped where Triton is not installed (the project does not require it).
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")

from bot.engine import rwkv6, rwkv7  # noqa: E402
from bot.tools.demo_model import rwkv6_weights, rwkv7_weights  # noqa: E402
from bot.engine.kernels import triton_ops  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _pools(z, rows, seed):
    g = torch.Generator().manual_seed(seed)
    p = rwkv7.Pools.empty(z["n_layer"], rows, z["n_embd"], z["head_size"], z["dtype"], "cpu")
    p.att_x.copy_(torch.randn(p.att_x.shape, generator=g))
    p.ffn_x.copy_(torch.randn(p.ffn_x.shape, generator=g))
    p.kv.copy_(torch.randn(p.kv.shape, generator=g) * 0.3)
    return rwkv7.Pools(p.att_x.to(DEVICE), p.kv.to(DEVICE), p.ffn_x.to(DEVICE))


def _clone(p):
    return rwkv7.Pools(p.att_x.clone(), p.kv.clone(), p.ffn_x.clone())


def _close(a, b, tol=2e-4):
    err = float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-9))
    assert err < tol, err


@pytest.mark.parametrize("version", [7, 6])
def test_decode_step_kernels_match_torch(version):
    make, model = (rwkv7_weights, rwkv7) if version == 7 else (rwkv6_weights, rwkv6)
    raw = make(2, 128, vocab=512, seed=3, dtype=torch.float32)
    z = model.prepare(raw, torch.float32, DEVICE)
    ops = triton_ops.V7Ops if version == 7 else triton_ops.V6Ops
    pools = _pools(z, 6, seed=1)
    ref_pools = _clone(pools)
    tokens = torch.tensor([5, 77, 300, 1], device=DEVICE)
    rows = torch.tensor([3, 0, 5, 1], device=DEVICE)
    for step in range(3):
        ref = model.decode_step(z, tokens + step, rows, ref_pools, model.TorchOps)
        out = model.decode_step(z, tokens + step, rows, pools, ops)
        _close(out, ref)
    for a, b in ((pools.att_x, ref_pools.att_x), (pools.kv, ref_pools.kv), (pools.ffn_x, ref_pools.ffn_x)):
        _close(a, b)


@pytest.mark.parametrize("version", [7, 6])
def test_packed_prefill_kernel_matches_torch(version):
    make, model = (rwkv7_weights, rwkv7) if version == 7 else (rwkv6_weights, rwkv6)
    raw = make(2, 128, vocab=512, seed=4, dtype=torch.float32)
    z = model.prepare(raw, torch.float32, DEVICE)
    ops = triton_ops.V7Ops if version == 7 else triton_ops.V6Ops
    pools = _pools(z, 5, seed=2)
    ref_pools = _clone(pools)
    seqs = [[1, 2, 3, 4, 5, 6, 7], [9], [40, 41, 42]]
    packed = rwkv7.Packed.build(seqs, [4, 0, 2], DEVICE)
    ref = model.forward_packed(z, packed, ref_pools, model.TorchOps)
    out = model.forward_packed(z, packed, pools, ops)
    _close(out, ref)
    _close(pools.kv, ref_pools.kv)


def test_fused_ops_match_torch_in_half_precision():
    raw = rwkv7_weights(1, 128, vocab=256, seed=5, dtype=torch.float32)
    z = rwkv7.prepare(raw, torch.bfloat16, DEVICE)
    pools = _pools(z, 4, seed=3)
    ref_pools = _clone(pools)
    x = torch.randn(3, 128, device=DEVICE)
    delta = torch.randn(3, 128, device=DEVICE).to(torch.bfloat16)
    rows = torch.tensor([2, 0, 3], device=DEVICE)
    L = z["layers"][0]
    x_ref = x.clone()
    mix_ref = rwkv7.TorchOps.add_ln_shift_mix(x_ref, delta, L["ln1_w"], L["ln1_b"], ref_pools.att_x[0], rows, L["maa"],
                                             torch.bfloat16)
    mix = triton_ops.V7Ops.add_ln_shift_mix(x, delta, L["ln1_w"], L["ln1_b"], pools.att_x[0], rows, L["maa"],
                                            torch.bfloat16)
    _close(x, x_ref, 1e-6)
    _close(mix, mix_ref, 1e-2)
    _close(pools.att_x, ref_pools.att_x, 1e-2)
    h = torch.randn(4, 3, 32, device=DEVICE)
    _close(triton_ops.V7Ops.lora_act(h), rwkv7.TorchOps.lora_act(h), 1e-5)
    _close(triton_ops.V7Ops.relu_sq(h), rwkv7.TorchOps.relu_sq(h), 1e-6)


def test_fused_draw_matches_the_torch_sampler():
    """The default sampler's draw as one kernel (kernels.sampler) equals DeviceSampler's tensor operations: the
    same tokens from the same random numbers, the same Mirostat updates, min-p and the open-action rule included."""
    from bot.engine.kernels import sampler as fused
    from bot.engine.sampling import MIN_P, DeviceSampler, SamplingParams, TokenTable

    class Tok:
        def token_bytes(self, t):
            return "（".encode() if t == 5 else f"w{t}".encode()

    V, R = 3000, 12
    params = [SamplingParams(), SamplingParams(temperature=0.0), SamplingParams(temperature=0.7, min_p=0.05),
              SamplingParams(temperature=1.3, mirostat_tau=2.0)] * 3
    made = []
    for kernel in (None, fused.draw):
        dev = DeviceSampler(R, V, DEVICE, TokenTable(Tok(), V, DEVICE), draw_kernel=kernel)
        dev.begin(list(range(R)), params, list(range(R)), [-1] * R)
        dev.observe([9, 10, 11], [5, 5, 5])  # these replies now end with "（"
        made.append(dev)
    g = torch.Generator().manual_seed(8)
    slots = torch.arange(R, device=DEVICE)
    active = torch.ones(R, dtype=torch.bool, device=DEVICE)
    for step in range(4):
        logits = (torch.randn(R, V, generator=g) * 3).to(DEVICE)
        a, b = (dev.sample(logits, slots, active, (MIN_P, 0)).tolist() for dev in made)
        assert a == b
    assert torch.allclose(made[0].mu, made[1].mu, atol=1e-9, rtol=0)
