"""RWKV-6 ("x060") as plain functions over a weight dict, batched: the `rwkv` package's `att_one_v6_0`,
`att_seq_v6_0` and `ffn_one_v6`, for B sequences at once.

Same structure and state pool as `rwkv7` (see there): `decode_step` for one token per sequence (CUDA-graph safe),
`forward_packed` for prefill of sequences of different lengths. The kv state is [head, key, value] (package
layout). In fp16 the package halves the residual every 6 layers (and scales the output matrices to match) so the
residual cannot overflow; this does the same, so states and logits mean the same thing in both.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bot.engine.rwkv7 import GN_EPS, Packed, Pools, token_shift

MIX_ORDER = ("r", "k", "v", "g", "w")  # mix[:4] feed R, K, V, G; mix[4] the decay LoRA
_PACKAGE_ORDER = ("w", "k", "v", "r", "g")  # the order of time_maa_w2's five slices in the checkpoint
RESCALE_EVERY = 6  # fp16 only, as the package


def n_layers(raw) -> int:
    return 1 + max(int(k.split(".")[1]) for k in raw if k.startswith("blocks."))


def prepare(raw: dict[str, torch.Tensor], dtype: torch.dtype, device) -> dict:
    L, (V, C) = n_layers(raw), raw["emb.weight"].shape
    H, N = raw["blocks.0.att.time_faaaa"].shape[:2]
    rescale = RESCALE_EVERY if dtype == torch.float16 else 0
    f32 = lambda t: t.detach().to(device=device, dtype=torch.float32).reshape(-1).contiguous()
    mat = lambda t, scale=1.0: (t.detach().float().t() * scale).to(device=device, dtype=dtype).contiguous()
    emb = F.layer_norm(raw["emb.weight"].float(), (C,), raw["blocks.0.ln0.weight"].float(),
                       raw["blocks.0.ln0.bias"].float())
    z: dict = {"version": 6, "n_layer": L, "n_embd": C, "n_head": H, "head_size": N, "vocab": V, "dtype": dtype,
               "rescale": rescale, "emb": emb.to(device=device, dtype=dtype).contiguous(),
               "ln_out_w": f32(raw["ln_out.weight"]), "ln_out_b": f32(raw["ln_out.bias"]),
               "head": mat(raw["head.weight"]), "layers": []}
    perm = [_PACKAGE_ORDER.index(n) for n in MIX_ORDER]
    for i in range(L):
        p, a, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        scale = 1.0 / 2 ** (i // rescale) if rescale else 1.0
        D = raw[a + "time_maa_w2"].shape[1]
        layer = {
            "ln1_w": f32(raw[p + "ln1.weight"]), "ln1_b": f32(raw[p + "ln1.bias"]),
            "ln2_w": f32(raw[p + "ln2.weight"]), "ln2_b": f32(raw[p + "ln2.bias"]),
            "maa_x": f32(raw[a + "time_maa_x"]).reshape(1, C),
            "maa": torch.stack([f32(raw[a + "time_maa_" + n]) for n in MIX_ORDER]).contiguous(),
            # (C, 5D): the five D-column blocks reordered like time_maa_w2's slices, which they pair with
            "tm_w1": raw[a + "time_maa_w1"].float().view(C, 5, D)[:, perm].reshape(C, 5 * D).to(
                device=device, dtype=dtype).contiguous(),
            "tm_w2": raw[a + "time_maa_w2"].float()[perm].to(device=device, dtype=dtype).contiguous(),  # (5, D, C)
            "td_w1": raw[a + "time_decay_w1"].float().to(device=device, dtype=dtype).contiguous(),
            "td_w2": raw[a + "time_decay_w2"].float().to(device=device, dtype=dtype).contiguous(),
            "decay": f32(raw[a + "time_decay"]), "u": f32(raw[a + "time_faaaa"]),
            "rkvg": torch.stack([mat(raw[a + n + ".weight"]) for n in ("receptance", "key", "value", "gate")]),
            "O": mat(raw[a + "output.weight"], scale),
            "lnx_w": f32(raw[a + "ln_x.weight"]), "lnx_b": f32(raw[a + "ln_x.bias"]),
            "ffn_maa": torch.stack([f32(raw[f + "time_maa_k"]), f32(raw[f + "time_maa_r"])]).contiguous(),
            "ffn_K": mat(raw[f + "key.weight"]), "ffn_R": mat(raw[f + "receptance.weight"]),
            "ffn_V": mat(raw[f + "value.weight"], scale), "D": D,
        }
        z["layers"].append(layer)
    return z


def wkv6_step(state: torch.Tensor, r, w, k, v, u) -> tuple[torch.Tensor, torch.Tensor]:
    """One token for B sequences: state (B, H, N, N) [key, value] float32; r, w, k, v (B, H, N); u (H, N).
    y = r (u k v^T + S);  S = k v^T + w * S (w per key)."""
    kv = k.unsqueeze(-1) * v.unsqueeze(-2)
    y = (r.unsqueeze(-2) @ (u.unsqueeze(-1) * kv + state)).squeeze(-2)
    state = kv + w.unsqueeze(-1) * state
    return state, y


class TorchOps:
    name = "torch"

    @staticmethod
    def wkv_decode(r, w, k, v, u, kv_pool, rows, H):
        B, C = r.shape
        hv = lambda t: t.view(B, H, -1)
        state, y = wkv6_step(kv_pool[rows], hv(r), hv(w), hv(k), hv(v), u.view(H, -1))
        kv_pool[rows] = state
        return y.reshape(B, C)

    @staticmethod
    def wkv_seq(r, w, k, v, u, kv_pool, packed: Packed, H):
        T, C = r.shape
        state = kv_pool[packed.rows]
        y = torch.empty_like(r)
        for t in range(packed.max_len):
            alive = (packed.lens > t).nonzero().squeeze(1)
            pos = packed.starts[alive] + t
            hv = lambda q: q[pos].view(len(pos), H, -1)
            s, yt = wkv6_step(state[alive], hv(r), hv(w), hv(k), hv(v), u.view(H, -1))
            state[alive] = s
            y[pos] = yt.reshape(len(pos), C)
        kv_pool[packed.rows] = state
        return y


def _time_mix(z, L, xx, mix_x, mix_base, shifted_diff, wkv):
    """Shared by decode and prefill: xx, the LoRA mixes, the products, the recurrence (`wkv`), the output."""
    dtype, H, C = z["dtype"], z["n_head"], z["n_embd"]
    T = xx.shape[0]
    m = torch.tanh(mix_x.to(dtype) @ L["tm_w1"]).view(T, 5, -1).transpose(0, 1)
    m = torch.bmm(m, L["tm_w2"]).float()  # (5, T, C) in MIX_ORDER
    mixes = (mix_base + shifted_diff.unsqueeze(0) * m).to(dtype)
    rkvg = torch.bmm(mixes[:4], L["rkvg"])
    r, k, v = rkvg[0].float(), rkvg[1].float(), rkvg[2].float()
    g = F.silu(rkvg[3].float())
    w = L["decay"] + (torch.tanh(mixes[4] @ L["td_w1"]) @ L["td_w2"]).float()
    w = torch.exp(-torch.exp(w))
    y = wkv(r, w, k, v)
    y = F.group_norm(y, num_groups=H, weight=L["lnx_w"], bias=L["lnx_b"], eps=GN_EPS)
    return ((y * g).to(dtype) @ L["O"]).float()


def _channel_mix(L, mixes):
    r = torch.sigmoid((mixes[1] @ L["ffn_R"]).float())
    return r * (torch.relu(mixes[0] @ L["ffn_K"]) ** 2 @ L["ffn_V"]).float()


def _mixes(xx, prev, maa_x, maa):
    """xx (T, C) float32, prev (T, C): sx = prev - xx; mix_x = xx + sx * maa_x; base[j] = xx + sx * maa[j]."""
    sx = prev.float() - xx
    return xx + sx * maa_x, xx.unsqueeze(0) + sx.unsqueeze(0) * maa.unsqueeze(1), sx


def decode_step(z: dict, tokens, rows, pools: Pools, ops=TorchOps, v_first=None, x=None) -> torch.Tensor:
    dtype, H, C = z["dtype"], z["n_head"], z["n_embd"]
    x = z["emb"][tokens].float() if x is None else x.copy_(z["emb"][tokens])
    for i, L in enumerate(z["layers"]):
        xx = F.layer_norm(x, (C,), L["ln1_w"], L["ln1_b"]).to(dtype)
        prev = pools.att_x[i][rows]
        pools.att_x[i][rows] = xx
        mix_x, base, sx = _mixes(xx.float(), prev, L["maa_x"], L["maa"])
        wkv = lambda r, w, k, v: ops.wkv_decode(r, w, k, v, L["u"], pools.kv[i], rows, H)
        x += _time_mix(z, L, xx, mix_x, base, sx, wkv)
        xx = F.layer_norm(x, (C,), L["ln2_w"], L["ln2_b"]).to(dtype)
        prev = pools.ffn_x[i][rows]
        pools.ffn_x[i][rows] = xx
        _, base, _ = _mixes(xx.float(), prev, L["maa_x"], L["ffn_maa"])
        x += _channel_mix(L, base.to(dtype))
        if z["rescale"] and (i + 1) % z["rescale"] == 0:
            x /= 2
    x = F.layer_norm(x, (C,), z["ln_out_w"], z["ln_out_b"]).to(dtype)
    return (x @ z["head"]).float()


def forward_packed(z: dict, packed: Packed, pools: Pools, ops=TorchOps) -> torch.Tensor:
    dtype, H, C = z["dtype"], z["n_head"], z["n_embd"]
    x = z["emb"][packed.tokens].float()
    for i, L in enumerate(z["layers"]):
        xx = F.layer_norm(x, (C,), L["ln1_w"], L["ln1_b"]).to(dtype)
        prev = token_shift(xx, pools.att_x[i], packed)
        mix_x, base, sx = _mixes(xx.float(), prev, L["maa_x"], L["maa"])
        wkv = lambda r, w, k, v: ops.wkv_seq(r, w, k, v, L["u"], pools.kv[i], packed, H)
        x = x + _time_mix(z, L, xx, mix_x, base, sx, wkv)
        xx = F.layer_norm(x, (C,), L["ln2_w"], L["ln2_b"]).to(dtype)
        prev = token_shift(xx, pools.ffn_x[i], packed)
        _, base, _ = _mixes(xx.float(), prev, L["maa_x"], L["ffn_maa"])
        x = x + _channel_mix(L, base.to(dtype))
        if z["rescale"] and (i + 1) % z["rescale"] == 0:
            x = x / 2
    x = F.layer_norm(x[packed.last], (C,), z["ln_out_w"], z["ln_out_b"]).to(dtype)
    return (x @ z["head"]).float()
