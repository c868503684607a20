"""RWKV-7 ("x070") as plain functions over a weight dict, batched over many sequences.

The math is BlinkDL's reference (the `rwkv` package's `RWKV_x070_TMix_one/seq` and `CMix`), written for a batch:

* `decode_step` feeds one token to each of B sequences: x is (B, C). No host synchronisation and no shapes that
  depend on data, so a whole step can be captured in a CUDA graph.
* `forward_packed` feeds several sequences of different lengths at once (prefill): their tokens are packed into
  one (T, C) matrix, every matrix product runs over all T tokens, and only the time-mix recurrence walks each
  sequence in order.

States live in a `Pools` object: per layer, rows of [att x_prev (C), kv (H, N, N) fp32 as [head, value, key],
ffn x_prev (C)] (the package's layout), indexed by pool row, so a step reads and writes only the rows it serves.

The element-wise glue comes from an `ops` object: `TorchOps` (plain torch, the CPU path and the reference) or the
Triton kernels in `bot.engine.kernels` (fused, GPU only). Both compute the same function.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from bot.engine.backend import to_device

MIX_ORDER = ("x_r", "x_k", "x_v", "x_w", "x_a", "x_g")  # mix[:3] feed R, K, V; mix[2:] feed the LoRAs
LORA_ORDER = ("v", "w", "a", "g")  # = mix[2:]: value residual, decay, in-context rate, gate
DECAY_SCALE = 0.606531  # exp(-0.5): w = exp(-exp(-0.5) * sigmoid(w0 + lora))
GN_EPS = 64e-5


@dataclass
class Pools:
    """Per-sequence states of every layer, one row per pool slot."""

    att_x: torch.Tensor  # (L, S, C) activation dtype
    kv: torch.Tensor  # (L, S, H, N, N) float32
    ffn_x: torch.Tensor  # (L, S, C) activation dtype

    @classmethod
    def empty(cls, n_layer: int, rows: int, n_embd: int, head_size: int, dtype, device) -> "Pools":
        H = n_embd // head_size
        return cls(torch.zeros(n_layer, rows, n_embd, dtype=dtype, device=device),
                   torch.zeros(n_layer, rows, H, head_size, head_size, dtype=torch.float32, device=device),
                   torch.zeros(n_layer, rows, n_embd, dtype=dtype, device=device))

    def write(self, row: int, state: Sequence[torch.Tensor]) -> None:
        """Copy a package-layout state (list of 3 per layer) into pool row `row`."""
        L = self.att_x.shape[0]
        self.att_x[:, row] = torch.stack([state[3 * i] for i in range(L)]).to(self.att_x)
        self.kv[:, row] = torch.stack([state[3 * i + 1] for i in range(L)]).to(self.kv)
        self.ffn_x[:, row] = torch.stack([state[3 * i + 2] for i in range(L)]).to(self.ffn_x)


@dataclass
class Packed:
    """Several sequences' tokens packed into one list, for prefill."""

    tokens: torch.Tensor  # (T,) long
    rows: torch.Tensor  # (S,) long: pool row of each sequence
    starts: torch.Tensor  # (S,) long: index of each sequence's first token
    lens: torch.Tensor  # (S,) long
    last: torch.Tensor  # (S,) long: index of each sequence's last token
    shift_src: torch.Tensor  # (T,) long: index of each token's predecessor in cat(prev_rows (S), tokens (T))
    max_len: int

    @classmethod
    def build(cls, seqs: Sequence[Sequence[int]], rows: Sequence[int], device) -> "Packed":
        lens = [len(s) for s in seqs]
        if min(lens) < 1:
            raise ValueError("every sequence needs at least one token")
        starts, shift, pos = [], [], 0
        for s, n in enumerate(lens):
            starts.append(pos)
            shift.append(s)  # the first token's predecessor is the state's x_prev
            shift.extend(len(lens) + pos + t for t in range(n - 1))
            pos += n
        flat = [t for s in seqs for t in s]
        as_long = lambda v: to_device(v, torch.long, device)
        return cls(tokens=as_long(flat), rows=as_long(list(rows)), starts=as_long(starts), lens=as_long(lens),
                   last=as_long([a + n - 1 for a, n in zip(starts, lens)]), shift_src=as_long(shift),
                   max_len=max(lens))


# ----------------------------------------------------------------------------------------------------------------
# Weights


def n_layers(raw: dict[str, torch.Tensor]) -> int:
    return 1 + max(int(k.split(".")[1]) for k in raw if k.startswith("blocks."))


def prepare(raw: dict[str, torch.Tensor], dtype: torch.dtype, device) -> dict:
    """Checkpoint tensors -> the weight dict the functions below use. Matrices are stored (in, out) for x @ W, in
    `dtype`; small vectors in float32. Products that share an input shape are stacked for one batched product."""
    L, (V, C) = n_layers(raw), raw["emb.weight"].shape
    H, N = raw["blocks.0.att.r_k"].shape
    f32 = lambda t: t.detach().to(device=device, dtype=torch.float32).reshape(-1).contiguous()
    mat = lambda t: t.detach().to(dtype=torch.float32).t().to(device=device, dtype=dtype).contiguous()
    emb = F.layer_norm(raw["emb.weight"].float(), (C,), raw["blocks.0.ln0.weight"].float(),
                       raw["blocks.0.ln0.bias"].float())
    z: dict = {"version": 7, "n_layer": L, "n_embd": C, "n_head": H, "head_size": N, "vocab": V, "dtype": dtype,
               "emb": emb.to(device=device, dtype=dtype).contiguous(),
               "ln_out_w": f32(raw["ln_out.weight"]), "ln_out_b": f32(raw["ln_out.bias"]),
               "head": mat(raw["head.weight"]), "layers": []}
    for i in range(L):
        p, a, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        lo1 = [raw[a + n + "1"].float() if a + n + "1" in raw else None for n in LORA_ORDER]
        lo2 = [raw[a + n + "2"].float() if a + n + "2" in raw else None for n in LORA_ORDER]
        D = max(t.shape[1] for t in lo1 if t is not None)
        lora1 = torch.zeros(4, C, D)
        lora2 = torch.zeros(4, D, C)
        for j, (m1, m2) in enumerate(zip(lo1, lo2)):
            if m1 is not None:  # layer 0 has no value-residual LoRA: its rows stay zero (and unused)
                lora1[j, :, : m1.shape[1]] = m1
                lora2[j, : m2.shape[0]] = m2
        zero = torch.zeros(C)
        layer = {
            "ln1_w": f32(raw[p + "ln1.weight"]), "ln1_b": f32(raw[p + "ln1.bias"]),
            "ln2_w": f32(raw[p + "ln2.weight"]), "ln2_b": f32(raw[p + "ln2.bias"]),
            "maa": torch.stack([f32(raw[a + n]) for n in MIX_ORDER]).contiguous(),
            "rkv": torch.stack([mat(raw[a + n + ".weight"]) for n in ("receptance", "key", "value")]).contiguous(),
            "lora1": lora1.to(device=device, dtype=dtype).contiguous(),
            "lora2": lora2.to(device=device, dtype=dtype).contiguous(),
            "w0": f32(raw[a + "w0"]), "a0": f32(raw[a + "a0"]),
            "v0": f32(raw[a + "v0"]) if a + "v0" in raw else f32(zero),
            "k_k": f32(raw[a + "k_k"]), "k_a": f32(raw[a + "k_a"]), "r_k": f32(raw[a + "r_k"]),
            "lnx_w": f32(raw[a + "ln_x.weight"]), "lnx_b": f32(raw[a + "ln_x.bias"]),
            "O": mat(raw[a + "output.weight"]),
            "ffn_maa": f32(raw[f + "x_k"]).reshape(1, C),
            "ffn_K": mat(raw[f + "key.weight"]), "ffn_V": mat(raw[f + "value.weight"]),
        }
        z["layers"].append(layer)
    return z


# ----------------------------------------------------------------------------------------------------------------
# The element-wise glue in plain torch


def time_mix_inputs(layer_id: int, L: dict, rkv: torch.Tensor, lora: torch.Tensor, v_first: torch.Tensor, H: int):
    """From the products to the recurrence's inputs, per token (rows of any leading shape (..., C)), float32.
    Returns r, w (decay factor), k, v, a (= -kk), b (= kk * rate), g, and v_first."""
    r, k, v = rkv[0].float(), rkv[1].float(), rkv[2].float()
    v_l, w_l, a_l, g = lora[0].float(), lora[1].float(), lora[2].float(), lora[3].float()
    shape = r.shape
    w = torch.exp(-DECAY_SCALE * torch.sigmoid(L["w0"] + w_l))
    rate = torch.sigmoid(L["a0"] + a_l)
    kk = F.normalize((k * L["k_k"]).view(*shape[:-1], H, -1), dim=-1, p=2.0).view(shape)
    k = k * (1 + (rate - 1) * L["k_a"])
    if layer_id == 0:
        v_first = v
    else:
        v = v + (v_first - v) * torch.sigmoid(L["v0"] + v_l)
    return r, w, k, v, -kk, kk * rate, g, v_first


def time_mix_output(L: dict, y: torch.Tensor, r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                    H: int) -> torch.Tensor:
    """Group norm per head, the "bonus" r.k term, and the gate (float32 in, float32 out)."""
    shape = y.shape
    y = F.group_norm(y.reshape(-1, shape[-1]), num_groups=H, weight=L["lnx_w"], bias=L["lnx_b"], eps=GN_EPS)
    y = y.view(shape)
    bonus = (r * k * L["r_k"]).view(*shape[:-1], H, -1).sum(dim=-1, keepdim=True) * v.view(*shape[:-1], H, -1)
    return (y + bonus.view(shape)) * g


def wkv7_step(state: torch.Tensor, r, w, k, v, a, b) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of the recurrence for B sequences: state (B, H, N, N) [value, key] float32, the rest (B, H, N).
    S = S * w (per key) + (S a) b^T + v k^T;  y = S r."""
    sa = (state @ a.unsqueeze(-1))  # (B, H, N, 1)
    state = state * w.unsqueeze(-2) + sa * b.unsqueeze(-2) + v.unsqueeze(-1) * k.unsqueeze(-2)
    y = (state @ r.unsqueeze(-1)).squeeze(-1)
    return state, y


class TorchOps:
    """Plain torch implementations of the fused operations (CPU, and the reference for the kernels)."""

    name = "torch"

    @staticmethod
    def add_ln_shift_mix(x: torch.Tensor, delta, ln_w, ln_b, prev_pool: torch.Tensor, rows: torch.Tensor,
                         maa: torch.Tensor, out_dtype) -> torch.Tensor:
        """x += delta (in place, x float32 (B, C)); xx = LN(x); mix[m] = xx + (x_prev - xx) * maa[m];
        the pool's x_prev of each row becomes xx. Returns (M, B, C) in out_dtype."""
        if delta is not None:
            x += delta.float()
        xx = F.layer_norm(x, (x.shape[-1],), ln_w, ln_b).to(prev_pool.dtype)
        prev = prev_pool[rows]
        prev_pool[rows] = xx
        xx = xx.float()
        d = prev.float() - xx
        return (xx.unsqueeze(0) + d.unsqueeze(0) * maa.unsqueeze(1)).to(out_dtype)

    @staticmethod
    def add_ln(x: torch.Tensor, delta, ln_w, ln_b, out_dtype) -> torch.Tensor:
        if delta is not None:
            x += delta.float()
        return F.layer_norm(x, (x.shape[-1],), ln_w, ln_b).to(out_dtype)

    @staticmethod
    def lora_act(h: torch.Tensor) -> torch.Tensor:
        """(4, B, D) in the LORA_ORDER: tanh on the decay LoRA, sigmoid on the gate LoRA."""
        h = h.clone()
        h[1] = torch.tanh(h[1])
        h[3] = torch.sigmoid(h[3])
        return h

    @staticmethod
    def relu_sq(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) ** 2

    @staticmethod
    def wkv7_decode(layer_id: int, L: dict, rkv, lora, v_first: torch.Tensor, kv_pool: torch.Tensor,
                    rows: torch.Tensor, H: int, out_dtype) -> torch.Tensor:
        """The whole time-mix between the products for one token per row: returns (B, C) in out_dtype and
        updates kv_pool's rows; v_first (B, C) float32 is written at layer 0 and read after."""
        r, w, k, v, a, b, g, vf = time_mix_inputs(layer_id, L, rkv, lora, v_first, H)
        if layer_id == 0:
            v_first.copy_(vf)
        B, C = r.shape
        hv = lambda t: t.view(B, H, -1)
        state, y = wkv7_step(kv_pool[rows], hv(r), hv(w), hv(k), hv(v), hv(a), hv(b))
        kv_pool[rows] = state
        return time_mix_output(L, y.reshape(B, C), r, k, v, g, H).to(out_dtype)

    @staticmethod
    def wkv7_seq(r, w, k, v, a, b, kv_pool: torch.Tensor, packed: Packed, H: int) -> torch.Tensor:
        """The recurrence over packed sequences (T, C) float32; returns y (T, C) float32."""
        T, C = r.shape
        state = kv_pool[packed.rows]  # (S, H, N, N)
        y = torch.empty_like(r)
        lens = packed.lens
        for t in range(packed.max_len):
            alive = (lens > t).nonzero().squeeze(1)
            pos = packed.starts[alive] + t
            hv = lambda u: u[pos].view(len(pos), H, -1)
            s, yt = wkv7_step(state[alive], hv(r), hv(w), hv(k), hv(v), hv(a), hv(b))
            state[alive] = s
            y[pos] = yt.reshape(len(pos), C)
        kv_pool[packed.rows] = state
        return y

    wkv_seq = wkv7_seq

    @staticmethod
    def shift_mix(xx: torch.Tensor, prev_pool: torch.Tensor, packed: Packed, maa: torch.Tensor, out_dtype):
        return token_shift_mix(xx, prev_pool, packed, maa, out_dtype)

    @staticmethod
    def wkv7_prefill(layer_id: int, L: dict, rkv, lora, v_first: torch.Tensor, kv_pool: torch.Tensor,
                     packed: Packed, H: int, out_dtype) -> torch.Tensor:
        """wkv7_decode over packed sequences: the whole time mix between the products, (T, C) out_dtype."""
        r, w, k, v, a, b, g, vf = time_mix_inputs(layer_id, L, rkv, lora, v_first, H)
        if layer_id == 0:
            v_first.copy_(vf)
        y = TorchOps.wkv7_seq(r, w, k, v, a, b, kv_pool, packed, H)
        return time_mix_output(L, y, r, k, v, g, H).to(out_dtype)


# ----------------------------------------------------------------------------------------------------------------
# The model


def decode_step(z: dict, tokens: torch.Tensor, rows: torch.Tensor, pools: Pools, ops=TorchOps,
                v_first: torch.Tensor | None = None, x: torch.Tensor | None = None) -> torch.Tensor:
    """One token for each of B sequences: tokens (B,), rows (B,) pool rows. Returns logits (B, V) float32.
    `v_first` and `x` are (B, C) float32 scratch buffers (allocated when not given)."""
    dtype, H = z["dtype"], z["n_head"]
    B, C = tokens.shape[0], z["n_embd"]
    x = z["emb"][tokens].float() if x is None else x.copy_(z["emb"][tokens])
    v_first = torch.empty(B, C, dtype=torch.float32, device=x.device) if v_first is None else v_first
    delta = None
    for i, L in enumerate(z["layers"]):
        mix = ops.add_ln_shift_mix(x, delta, L["ln1_w"], L["ln1_b"], pools.att_x[i], rows, L["maa"], dtype)
        rkv = torch.bmm(mix[:3], L["rkv"])
        lora = torch.bmm(ops.lora_act(torch.bmm(mix[2:], L["lora1"])), L["lora2"])
        y = ops.wkv7_decode(i, L, rkv, lora, v_first, pools.kv[i], rows, H, dtype)
        delta = y @ L["O"]
        kin = ops.add_ln_shift_mix(x, delta, L["ln2_w"], L["ln2_b"], pools.ffn_x[i], rows, L["ffn_maa"], dtype)[0]
        delta = ops.relu_sq(kin @ L["ffn_K"]) @ L["ffn_V"]
    x = ops.add_ln(x, delta, z["ln_out_w"], z["ln_out_b"], dtype)
    return (x @ z["head"]).float()


def token_shift(xx: torch.Tensor, prev_pool: torch.Tensor, packed: Packed) -> torch.Tensor:
    """Packed token shift: each token's predecessor (the state's x_prev for a sequence's first token); the pool
    then keeps each sequence's last xx. xx is in the pool's dtype."""
    prev = torch.cat([prev_pool[packed.rows], xx])[packed.shift_src]
    prev_pool[packed.rows] = xx[packed.last]
    return prev


def token_shift_mix(xx: torch.Tensor, prev_pool: torch.Tensor, packed: Packed, maa: torch.Tensor, out_dtype):
    """mix[m] = xx + (prev - xx) * maa[m] over packed tokens (see token_shift)."""
    xx = xx.to(prev_pool.dtype)
    prev = token_shift(xx, prev_pool, packed)
    xx = xx.float()
    d = prev.float() - xx
    return (xx.unsqueeze(0) + d.unsqueeze(0) * maa.unsqueeze(1)).to(out_dtype)


def forward_packed(z: dict, packed: Packed, pools: Pools, ops=TorchOps) -> torch.Tensor:
    """Feed every packed sequence all its tokens; returns the logits after each sequence's last token (S, V).
    The same layer structure as decode_step, over T packed tokens instead of B rows."""
    dtype, H, sdt = z["dtype"], z["n_head"], pools.att_x.dtype
    x = z["emb"][packed.tokens].float()
    v_first = torch.empty_like(x)
    delta = None
    for i, L in enumerate(z["layers"]):
        xx = ops.add_ln(x, delta, L["ln1_w"], L["ln1_b"], sdt)
        mix = ops.shift_mix(xx, pools.att_x[i], packed, L["maa"], dtype)
        rkv = torch.bmm(mix[:3], L["rkv"])
        lora = torch.bmm(ops.lora_act(torch.bmm(mix[2:], L["lora1"])), L["lora2"])
        y = ops.wkv7_prefill(i, L, rkv, lora, v_first, pools.kv[i], packed, H, dtype)
        delta = y @ L["O"]
        xx = ops.add_ln(x, delta, L["ln2_w"], L["ln2_b"], sdt)
        kin = ops.shift_mix(xx, pools.ffn_x[i], packed, L["ffn_maa"], dtype)[0]
        delta = ops.relu_sq(kin @ L["ffn_K"]) @ L["ffn_V"]
    x = ops.add_ln(x[packed.last], delta[packed.last], z["ln_out_w"], z["ln_out_b"], dtype)
    return (x @ z["head"]).float()
