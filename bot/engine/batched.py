"""The batched engine: every active sequence in one forward call, states in a device pool.

`BatchedBackend` implements the `Backend` protocol (bot.engine.backend) for RWKV-7 and RWKV-6 checkpoints:

* Per-slot states live in a preallocated pool on the device (`rwkv7.Pools`); `load`/`save` are copies into and out
  of one pool row, and a step reads and writes only the rows it serves (gathered by row index).
* A step's rows that feed one token run through `decode_step`; on CUDA that is a captured CUDA graph per bucketed
  batch size (1, 2, 4, 8, 16, 24, 32, 48, 64, ...), with padded rows pointed at a scratch pool row. Rows that feed
  several tokens (prefill chunks of different lengths) are packed into one `forward_packed` call.
* Weights in fp16/bf16 (fp32 on the CPU), recurrent state in fp32. On CUDA the element-wise glue and the
  recurrences are Triton kernels (`bot.engine.kernels`), compiled at first use; the CPU path is plain torch.
* `sample()` samples all rows on the device with per-row parameters (greedy, nucleus, Mirostat, the open-action
  rule, penalties and bans) and brings the tokens back in one small transfer.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import torch

from bot.config import SCHEMA
from bot.engine import rwkv6, rwkv7
from bot.engine.backend import ModelInfo, State
from bot.engine.model import (STRATEGY, ModelError, checkpoint_path, detect_version, file_id, load_state_file,
                              read_checkpoint)
from bot.engine.sampling import BatchSampler, ReplySampler

log = logging.getLogger(__name__)

DTYPES = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}
MAX_BATCH = SCHEMA["model"]["max_batch"].default
BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)


def parse_strategy(strategy: str) -> tuple[torch.device, torch.dtype]:
    m = STRATEGY.match(strategy.strip())
    if not m:
        raise ModelError(f"model.strategy {strategy!r}: the batched engine supports 'cuda|cpu fp16|fp32|bf16'")
    device = torch.device(m.group(1))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("model.strategy asks for CUDA but torch sees no GPU")
    return device, DTYPES[m.group(3)]


def pick_ops(version: int, device: torch.device):
    """Triton kernels on CUDA when they import (RWKV_BOT_KERNELS=torch forces plain torch)."""
    if device.type != "cuda" or os.environ.get("RWKV_BOT_KERNELS", "") == "torch":
        return rwkv7.TorchOps if version == 7 else rwkv6.TorchOps
    try:
        from bot.engine.kernels import triton_ops
    except Exception as exc:  # no triton: still correct, just slower
        log.warning("Triton kernels unavailable (%s); using plain torch ops", exc)
        return rwkv7.TorchOps if version == 7 else rwkv6.TorchOps
    return triton_ops.V7Ops if version == 7 else triton_ops.V6Ops


class BatchedBackend:
    def __init__(self, path: str | Path, strategy: str, state_file: str | None = None, max_batch: int = MAX_BATCH,
                 progress=None, cuda_graphs: bool | None = None, weights: dict[str, torch.Tensor] | None = None):
        """`weights`: checkpoint tensors already in memory (benchmarks); `path` then only names the model."""
        self.device, self.dtype = parse_strategy(strategy)
        if weights is None:
            ckpt = checkpoint_path(path)
            if progress:
                progress("reading weights")
            raw, fid = read_checkpoint(ckpt), file_id(ckpt)
        else:
            ckpt, raw, fid = Path(path), weights, "in-memory"
        version = detect_version(raw)
        self.model = rwkv7 if version == 7 else rwkv6
        if progress:
            progress("preparing weights")
        with torch.no_grad():
            self.z = self.model.prepare(raw, self.dtype, self.device)
        del raw
        z = self.z
        self.info = ModelInfo(version=version, n_layer=z["n_layer"], n_embd=z["n_embd"], n_head=z["n_head"],
                              head_size=z["head_size"], vocab_size=z["vocab"], path=str(ckpt),
                              strategy=strategy, backend="batched", file_id=fid)
        self.max_batch = max_batch
        self.scratch_row = max_batch  # padded rows of a bucketed step read and write here
        self.pools = rwkv7.Pools.empty(z["n_layer"], max_batch + 1, z["n_embd"], z["head_size"], self.dtype,
                                       self.device)
        self._rows: dict[int, int] = {}  # slot -> pool row
        self._free = list(range(max_batch - 1, -1, -1))
        self.ops = pick_ops(version, self.device)
        self._initial = (load_state_file(state_file, version, z["n_layer"], z["n_embd"], self.dtype)
                         if state_file else None)
        self.use_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        self._graphs: dict[int, _DecodeGraph] = {}
        self._graph_pool = None
        self.sampler = BatchSampler(self.device)

    # ----- Backend protocol ---------------------------------------------------------------------------------
    def zero_state(self) -> State:
        if self._initial is not None:
            return [t.clone() for t in self._initial]
        z, state = self.z, []
        H, N, C = z["n_head"], z["head_size"], z["n_embd"]
        for _ in range(z["n_layer"]):
            state += [torch.zeros(C, dtype=self.dtype), torch.zeros(H, N, N, dtype=torch.float32),
                      torch.zeros(C, dtype=self.dtype)]
        return state

    def load(self, slot: int, state: State) -> None:
        row = self._rows.get(slot)
        if row is None:
            if not self._free:
                raise RuntimeError(f"batched backend: all {self.max_batch} pool rows are in use")
            row = self._rows[slot] = self._free.pop()
        self._check_state(state)
        with torch.no_grad():
            self.pools.write(row, state)

    def save(self, slot: int) -> State:
        return self.pools.read(self._rows[slot])

    def release(self, slot: int) -> None:
        row = self._rows.pop(slot, None)
        if row is not None:
            self._free.append(row)

    def forward(self, rows: Sequence[tuple[int, Sequence[int]]]) -> torch.Tensor:
        if not rows:
            return torch.empty(0, self.info.vocab_size, device=self.device)
        for slot, tokens in rows:
            if slot not in self._rows:
                raise KeyError(f"slot {slot} was not loaded")
            if len(tokens) == 0:
                raise ValueError(f"slot {slot}: no tokens to feed")
        one = [i for i, (_, t) in enumerate(rows) if len(t) == 1]
        many = [i for i, (_, t) in enumerate(rows) if len(t) > 1]
        with torch.no_grad():
            if not many:
                return self._decode([rows[i] for i in one])
            if not one:
                return self._prefill([rows[i] for i in many])
            out = torch.empty(len(rows), self.info.vocab_size, device=self.device)
            out[torch.tensor(one, device=self.device)] = self._decode([rows[i] for i in one])
            out[torch.tensor(many, device=self.device)] = self._prefill([rows[i] for i in many])
            return out

    # ----- sampling -----------------------------------------------------------------------------------------
    def sample(self, logits: torch.Tensor, samplers: list[ReplySampler], banned: list[set[int]],
               texts: list[str]) -> list[int]:
        return self.sampler.sample(logits, samplers, banned, texts)

    # ----- internals ----------------------------------------------------------------------------------------
    def _check_state(self, state: State) -> None:
        z = self.z
        if len(state) != 3 * z["n_layer"] or tuple(state[1].shape) != (z["n_head"], z["head_size"], z["head_size"]):
            raise ValueError("state does not match this model's shape")

    def _decode(self, rows: Sequence[tuple[int, Sequence[int]]]) -> torch.Tensor:
        B = len(rows)
        tokens = [t[0] for _, t in rows]
        pool_rows = [self._rows[s] for s, _ in rows]
        if self.use_graphs and B <= self.max_batch:
            bucket = next(b for b in BUCKETS + (self.max_batch,) if b >= B)
            graph = self._graphs.get(bucket)
            if graph is None:
                graph = self._graphs[bucket] = self._capture(bucket)
            return graph.run(tokens, pool_rows, self.scratch_row)
        tok = torch.tensor(tokens, dtype=torch.long).to(self.device)
        idx = torch.tensor(pool_rows, dtype=torch.long).to(self.device)
        return self.model.decode_step(self.z, tok, idx, self.pools, self.ops)

    def _prefill(self, rows: Sequence[tuple[int, Sequence[int]]]) -> torch.Tensor:
        packed = rwkv7.Packed.build([list(t) for _, t in rows], [self._rows[s] for s, _ in rows], self.device)
        return self.model.forward_packed(self.z, packed, self.pools, self.ops)

    def _capture(self, bucket: int) -> "_DecodeGraph":
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        return _DecodeGraph(self, bucket, self._graph_pool)

    def warmup(self, buckets: Sequence[int] = ()) -> None:
        """Capture the decode graphs for these batch sizes now (the first step at a new size otherwise pays)."""
        if not self.use_graphs:
            return
        with torch.no_grad():
            for b in buckets:
                bucket = next(x for x in BUCKETS + (self.max_batch,) if x >= b)
                if bucket not in self._graphs and bucket <= self.max_batch:
                    self._graphs[bucket] = self._capture(bucket)


class _DecodeGraph:
    """A CUDA graph of one decode step at a fixed batch size, over static token/row buffers."""

    def __init__(self, backend: BatchedBackend, bucket: int, pool):
        dev, z = backend.device, backend.z
        self.bucket = bucket
        self.inputs = torch.zeros(2, bucket, dtype=torch.long, device=dev)  # tokens, pool rows
        self.inputs[1].fill_(backend.scratch_row)
        self.tokens, self.rows = self.inputs[0], self.inputs[1]
        self.x = torch.zeros(bucket, z["n_embd"], dtype=torch.float32, device=dev)
        self.v_first = torch.zeros(bucket, z["n_embd"], dtype=torch.float32, device=dev)
        self.host = torch.zeros(2, bucket, dtype=torch.long).pin_memory()
        self.copied: torch.cuda.Event | None = None
        step = lambda: backend.model.decode_step(z, self.tokens, self.rows, backend.pools, backend.ops,
                                                 v_first=self.v_first, x=self.x)
        # Warm up on a side stream (kernel compilation, cuBLAS handles), on the scratch row only.
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(2):
                step()
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.logits = step()

    def run(self, tokens: Sequence[int], rows: Sequence[int], scratch_row: int) -> torch.Tensor:
        B = len(tokens)
        if self.copied is not None:
            self.copied.synchronize()  # the last step's copy out of the pinned buffer is done: reuse it
        self.host.zero_()
        self.host[1].fill_(scratch_row)
        self.host[0, :B] = torch.tensor(tokens, dtype=torch.long)
        self.host[1, :B] = torch.tensor(rows, dtype=torch.long)
        self.inputs.copy_(self.host, non_blocking=True)
        self.copied = torch.cuda.Event()
        self.copied.record()
        self.graph.replay()
        return self.logits[:B].clone()
