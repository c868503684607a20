"""What the scheduler needs from a model: sequences in slots, fed a batch at a time.

A *state* is the RNN state of one conversation in the `rwkv` package's layout: a list of 3 tensors per layer,
[att x_prev (C), att kv (H, N, N) float32, ffn x_prev (C)]. States move between the scheduler and a backend as
CPU tensors; a backend keeps the states of the sequences it is serving wherever it computes (the GPU).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import torch

State = list[torch.Tensor]


@dataclass(frozen=True)
class ModelInfo:
    version: int  # 6 or 7
    n_layer: int
    n_embd: int
    n_head: int
    head_size: int
    vocab_size: int
    path: str
    strategy: str
    backend: str  # "rwkv-pip" or "batched"
    file_id: str = field(default="")  # cheap content id of the checkpoint (size + sampled bytes)

    @property
    def fingerprint(self) -> str:
        """Identifies the model and numeric format a state belongs to: a state is only reused under an equal
        fingerprint. The backend is left out on purpose: both compute the same model in the same layout."""
        key = f"v{self.version}|{self.n_layer}x{self.n_embd}|{self.file_id}|{self.strategy}"
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    @property
    def state_bytes(self) -> int:
        return self.n_layer * (2 * self.n_embd * 4 + self.n_head * self.head_size * self.head_size * 4)


class Backend(Protocol):
    """A model serving many sequences. Not thread-safe: the scheduler calls it from its one worker thread."""

    info: ModelInfo

    def zero_state(self) -> State:
        """A fresh state (CPU), or the state-tuning file's state when one is configured."""

    def load(self, slot: int, state: State) -> None:
        """Start serving a sequence in `slot` from `state` (copied; the caller's tensors are never changed)."""

    def forward(self, rows: Sequence[tuple[int, Sequence[int]]]) -> torch.Tensor:
        """Feed each (slot, tokens) row its tokens (all rows in one step); return float32 logits of each row's
        last token, shape (len(rows), vocab), on the CPU or the backend's device."""

    def save(self, slot: int) -> State:
        """A CPU copy of the slot's current state."""

    def release(self, slot: int) -> None:
        """Forget the slot."""


def clone_state(state: State) -> State:
    return [t.detach().clone() for t in state]


def states_equal(a: State, b: State) -> bool:
    return len(a) == len(b) and all(x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(a, b))


def to_device(values, dtype, device) -> torch.Tensor:
    """A small host list as a device tensor without making the host wait for the device's queue: on CUDA through
    pinned memory (an upload from pageable memory may block until the stream is idle, which would undo running
    a step ahead)."""
    t = torch.tensor(values, dtype=dtype)
    device = torch.device(device)
    if device.type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)
