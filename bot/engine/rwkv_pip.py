"""The plain `rwkv` package as a backend: one sequence at a time, as the original web UI served it.

It is the reference for exactness and the fallback when the batched engine cannot run a checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from bot.engine.backend import ModelInfo, State, clone_state
from bot.engine.model import (ModelError, check_strategy, checkpoint_path, detect_version, file_id,
                              import_rwkv_package, load_state_file, read_checkpoint, stdout_to_stderr)


class RwkvPipBackend:
    def __init__(self, path: str | Path, strategy: str, state_file: str | None = None, progress=None):
        ckpt = checkpoint_path(path)
        weights = read_checkpoint(ckpt)
        version = detect_version(weights)
        check_strategy(version, strategy)
        n_embd = weights["emb.weight"].shape[1]
        vocab = weights["emb.weight"].shape[0]
        n_layer = 1 + max(int(k.split(".")[1]) for k in weights if k.startswith("blocks."))
        head_size = weights["blocks.0.att.r_k"].shape[1] if version == 7 else weights["blocks.0.att.time_faaaa"].shape[1]
        del weights
        if progress:
            progress("importing rwkv")
        package = import_rwkv_package(version, use_cuda_kernel=strategy.startswith("cuda"))
        if progress:
            progress("loading weights")
        with stdout_to_stderr():
            if version == 7:  # the v7 class appends ".pth" itself
                if ckpt.suffix != ".pth":
                    raise ModelError(f"the rwkv package reads RWKV-7 checkpoints only from .pth files: rename {ckpt}")
                self.model = package.RWKV_x070(str(ckpt)[: -len(".pth")], strategy)
            else:
                self.model = package.RWKV(str(ckpt), strategy, verbose=False)
        self.device = torch.device(strategy.split()[0])
        self.info = ModelInfo(version=version, n_layer=n_layer, n_embd=n_embd, n_head=n_embd // head_size,
                              head_size=head_size, vocab_size=vocab, path=str(ckpt), strategy=strategy,
                              backend="rwkv-pip", file_id=file_id(ckpt))
        self._activation_dtype = self._zero_state_from_package()[0].dtype
        self._initial = (load_state_file(state_file, version, n_layer, n_embd, self._activation_dtype)
                         if state_file else None)
        self._slots: dict[int, State] = {}

    def _zero_state_from_package(self) -> State:
        if self.info.version == 7:
            state = self.model.generate_zero_state()
        else:
            _, state = self.model.forward([0], None)  # v6 builds its zero state inside forward
            state = [torch.zeros_like(t) for t in state]
        return [t.cpu() for t in state]

    def zero_state(self) -> State:
        return clone_state(self._initial) if self._initial is not None else self._zero_state_from_package()

    def load(self, slot: int, state: State) -> None:
        # The package updates state tensors in place (v6 always, v7 CUDA prefill): never hand it the caller's.
        self._slots[slot] = [t.to(self.device, copy=True) for t in state]

    def forward(self, rows: Sequence[tuple[int, Sequence[int]]]) -> torch.Tensor:
        out = []
        for slot, tokens in rows:
            logits, self._slots[slot] = self.model.forward(list(tokens), self._slots[slot])
            out.append(logits.float())
        return torch.stack(out).cpu()

    def save(self, slot: int) -> State:
        return [t.to("cpu", copy=True) for t in self._slots[slot]]

    def release(self, slot: int) -> None:
        self._slots.pop(slot, None)
