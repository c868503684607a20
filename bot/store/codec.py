"""Exact bytes: RNN states as raw tensor bytes (zstd), token ids as int32, forward-call lengths run-length coded.

A state is a list of tensors (the `rwkv` package's layout: 3 per layer); it is stored exactly, so a state read
back is bit-identical to the one written.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import zstandard

State = list[torch.Tensor]
ZSTD_LEVEL = 3


@dataclass
class PackedState:
    header: list
    blob: bytes


def pack_state(state: State) -> PackedState:
    header, parts = [], []
    for t in state:
        t = t.detach().to("cpu").contiguous()
        header.append([str(t.dtype).removeprefix("torch."), list(t.shape)])
        parts.append(t.view(-1).view(torch.uint8).numpy().tobytes())
    return PackedState(header, zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(b"".join(parts)))


def unpack_state(header: Sequence, blob: bytes) -> State:
    raw = bytearray(zstandard.ZstdDecompressor().decompress(blob))
    state, offset = [], 0
    for dtype_name, shape in header:
        dtype = getattr(torch, dtype_name)
        count = 1
        for n in shape:
            count *= n
        size = count * torch.empty((), dtype=dtype).element_size()
        flat = torch.frombuffer(raw, dtype=torch.uint8, count=size, offset=offset).clone()
        state.append(flat.view(dtype).reshape(shape))
        offset += size
    if offset != len(raw):
        raise ValueError("state blob does not match its header")
    return state


def tokens_to_bytes(tokens: Sequence[int]) -> bytes:
    return torch.tensor(list(tokens), dtype=torch.int32).numpy().tobytes()


def tokens_from_bytes(data: bytes) -> list[int]:
    return torch.frombuffer(bytearray(data), dtype=torch.int32).tolist() if data else []


def run_length(lengths: Sequence[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for n in lengths:
        if out and out[-1][0] == n:
            out[-1][1] += 1
        else:
            out.append([n, 1])
    return out


def expand_runs(runs: Sequence[Sequence[int]]) -> list[int]:
    return [n for n, count in runs for _ in range(count)]


def split_by_lengths(tokens: Sequence[int], lengths: Sequence[int]) -> list[list[int]]:
    chunks, i = [], 0
    for n in lengths:
        chunks.append(list(tokens[i : i + n]))
        i += n
    if i != len(tokens):
        raise ValueError("feed lengths do not match the tokens")
    return chunks
