"""Random-weight RWKV checkpoints in the real key layout, for tests, demos and benchmarks.

The weights are scaled so that the model is a usable stand-in: greedy output depends on the whole history (the
state carries information from token to token), logits are spread wide enough that greedy decoding does not
repeat a single token, and the turn end "\n\n" wins often enough that replies end by themselves.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

TURN_END_TOKEN = 261  # "\n\n" in the World vocabulary
WORLD_VOCAB_USED = 65530  # ids 0..65529 exist in rwkv_vocab_v20230424; real models pad the head to 65536


def _lora_dim(n_embd: int, factor: float, power: float) -> int:
    # The RWKV-7 training code's sizing rule for its low-rank projections.
    return max(32, int(round(factor * (n_embd**power) / 32)) * 32)


def rwkv7_weights(n_layer: int, n_embd: int, vocab: int = 65536, head_size: int = 64, seed: int = 0,
                  dtype: torch.dtype = torch.bfloat16, device: str = "cpu") -> dict[str, torch.Tensor]:
    if n_embd % head_size:
        raise ValueError(f"--dim must be a multiple of {head_size}")
    C, H = n_embd, n_embd // head_size
    d_decay, d_aaa = _lora_dim(C, 1.8, 0.5), _lora_dim(C, 1.8, 0.5)
    d_mv, d_gate = _lora_dim(C, 1.3, 0.5), _lora_dim(C, 0.6, 0.8)
    normal, uniform = _random(seed, device)
    w = _embedding_and_norms(normal, vocab, C, n_layer, device)
    for i in range(n_layer):
        p = f"blocks.{i}."
        a = p + "att."
        for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            w[a + name] = uniform(1, 1, C)
        w[a + "w0"] = uniform(1, 1, C, low=-3.0, high=1.0)  # decays between ~0.55 and ~0.97 per token
        w[a + "w1"] = normal(C, d_decay, std=0.1)
        w[a + "w2"] = normal(d_decay, C, std=0.1)
        w[a + "a0"] = normal(1, 1, C)
        w[a + "a1"] = normal(C, d_aaa, std=0.1)
        w[a + "a2"] = normal(d_aaa, C, std=0.1)
        if i > 0:
            w[a + "v0"] = normal(1, 1, C)
            w[a + "v1"] = normal(C, d_mv, std=0.1)
            w[a + "v2"] = normal(d_mv, C, std=0.1)
        w[a + "g1"] = normal(C, d_gate, std=1 / math.sqrt(C))
        w[a + "g2"] = normal(d_gate, C, std=1 / math.sqrt(d_gate))
        w[a + "k_k"] = uniform(1, 1, C, low=0.5, high=1.5)
        w[a + "k_a"] = uniform(1, 1, C, low=0.5, high=1.5)
        w[a + "r_k"] = normal(H, head_size, std=0.1)
        for name in ("receptance", "key", "value", "output"):
            w[a + name + ".weight"] = normal(C, C, std=1 / math.sqrt(C))
        w[a + "ln_x.weight"] = torch.ones(C, device=device)
        w[a + "ln_x.bias"] = torch.zeros(C, device=device)
        f = p + "ffn."
        w[f + "x_k"] = uniform(1, 1, C)
        w[f + "key.weight"] = normal(4 * C, C, std=1 / math.sqrt(C))
        w[f + "value.weight"] = normal(C, 4 * C, std=0.5 / math.sqrt(4 * C))
    w["ln_out.weight"] = torch.ones(C, device=device)
    w["ln_out.bias"] = torch.zeros(C, device=device)
    w["head.weight"] = _head(vocab, C, normal)
    return {k: v.to(dtype) for k, v in w.items()}


def rwkv6_weights(n_layer: int, n_embd: int, vocab: int = 65536, head_size: int = 64, seed: int = 0,
                  dtype: torch.dtype = torch.bfloat16, device: str = "cpu") -> dict[str, torch.Tensor]:
    if n_embd % head_size:
        raise ValueError(f"--dim must be a multiple of {head_size}")
    C, H = n_embd, n_embd // head_size
    d_mix, d_decay = (32, 64) if C < 4096 else (64, 128)
    ffn_dim = int(3.5 * C) // 32 * 32
    normal, uniform = _random(seed, device)
    w = _embedding_and_norms(normal, vocab, C, n_layer, device)
    for i in range(n_layer):
        p = f"blocks.{i}."
        a = p + "att."
        # The package detects v6 from time_maa* keys seen before time_faaaa: keep this order.
        for name in ("x", "w", "k", "v", "r", "g"):
            w[a + "time_maa_" + name] = uniform(1, 1, C)
        w[a + "time_maa_w1"] = normal(C, 5 * d_mix, std=0.1)
        w[a + "time_maa_w2"] = normal(5, d_mix, C, std=0.1)
        w[a + "time_decay"] = uniform(1, 1, C, low=-3.0, high=0.5)  # decay exp(-exp(.)) in ~(0.19, 0.95)
        w[a + "time_decay_w1"] = normal(C, d_decay, std=0.1)
        w[a + "time_decay_w2"] = normal(d_decay, C, std=0.1)
        w[a + "time_faaaa"] = normal(H, head_size, std=0.5)
        for name in ("receptance", "key", "value", "gate", "output"):
            w[a + name + ".weight"] = normal(C, C, std=1 / math.sqrt(C))
        w[a + "ln_x.weight"] = torch.ones(C, device=device)
        w[a + "ln_x.bias"] = torch.zeros(C, device=device)
        f = p + "ffn."
        w[f + "time_maa_k"] = uniform(1, 1, C)
        w[f + "time_maa_r"] = uniform(1, 1, C)
        w[f + "key.weight"] = normal(ffn_dim, C, std=1 / math.sqrt(C))
        w[f + "receptance.weight"] = normal(C, C, std=1 / math.sqrt(C))
        w[f + "value.weight"] = normal(C, ffn_dim, std=0.5 / math.sqrt(ffn_dim))
    w["ln_out.weight"] = torch.ones(C, device=device)
    w["ln_out.bias"] = torch.zeros(C, device=device)
    w["head.weight"] = _head(vocab, C, normal)
    return {k: v.to(dtype) for k, v in w.items()}


def _random(seed: int, device: str):
    """normal(*shape, std) and uniform(*shape, low, high) drawing from one seeded generator."""
    gen = torch.Generator(device=device).manual_seed(seed)

    def normal(*shape, std=1.0):
        return torch.randn(*shape, generator=gen, device=device) * std

    def uniform(*shape, low=0.0, high=1.0):
        return torch.rand(*shape, generator=gen, device=device) * (high - low) + low

    return normal, uniform


def _embedding_and_norms(normal, vocab: int, n_embd: int, n_layer: int, device: str) -> dict[str, torch.Tensor]:
    """The keys both versions share: embedding, ln0, each block's ln1/ln2 (identity layer norms)."""
    w = {"emb.weight": normal(vocab, n_embd)}
    for prefix in ["blocks.0.ln0"] + [f"blocks.{i}.{ln}" for i in range(n_layer) for ln in ("ln1", "ln2")]:
        w[prefix + ".weight"] = torch.ones(n_embd, device=device)
        w[prefix + ".bias"] = torch.zeros(n_embd, device=device)
    return w


def _head(vocab: int, n_embd: int, normal) -> torch.Tensor:
    # Logit spread ~3 so greedy picks vary; "\n\n" scaled up so it is the argmax at roughly one step in twenty
    # (max of ~65k N(0,s) logits is ~4.3s; a row scaled by 2.6 exceeds that ~5% of the time).
    head = normal(vocab, n_embd, std=3.0 / math.sqrt(n_embd))
    head[0] = 0.0
    if vocab > TURN_END_TOKEN:
        head[TURN_END_TOKEN] *= 2.6
    head[WORLD_VOCAB_USED:] = 0.0  # ids the tokenizer cannot decode
    return head


def write_demo_model(path: str | Path, version: int = 7, layers: int = 2, dim: int = 128, vocab: int = 65536,
                     seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write a checkpoint; returns the path with its `.pth` suffix."""
    path = Path(path)
    if path.suffix != ".pth":
        path = path.with_name(path.name + ".pth")
    make = rwkv7_weights if version == 7 else rwkv6_weights
    weights = make(layers, dim, vocab=vocab, seed=seed, dtype=dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(weights, tmp)
    tmp.replace(path)
    return path


def demo_model_command(args: argparse.Namespace) -> int:
    if args.layers < 1 or args.dim < 64 or args.dim % 64:
        print("rwkv-bot demo-model: --layers must be >= 1 and --dim a positive multiple of 64", file=sys.stderr)
        return 2
    path = write_demo_model(args.path, version=args.version, layers=args.layers, dim=args.dim,
                            vocab=args.vocab, seed=args.seed)
    print(f"wrote random-weight RWKV-{args.version} model {path} ({args.layers} layers x {args.dim}); "
          "its output is noise, for tests and demos only")
    return 0
