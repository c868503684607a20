"""The batched engine: every active sequence in one forward call, states in a device slab.

`BatchedBackend` serves RWKV-7 and RWKV-6 checkpoints:

* States live in one `StateSlab` on the device (bot.engine.states): rows for active sequences, rows that cache
  states handed out, the initial state's row and a scratch row. A step reads and writes only the rows it serves.
* Rows that feed one token run through `decode_step`; on CUDA that is a captured CUDA graph per bucketed batch size
  (`BUCKETS`), with padded rows pointed at the scratch row. Rows that feed several tokens (prefill chunks of
  different lengths) are packed into one `forward_packed` call.
* Weights in fp16/bf16 (fp32 on the CPU), recurrent state in fp32. On CUDA the element-wise glue and the
  recurrences are Triton kernels (`bot.engine.kernels`), compiled at first use; the CPU path is plain torch.

It implements the `Backend` protocol (load/forward/save/release by slot), which tests and benchmarks use; the
engine's `BatchedRunner` drives it through the slab and `StepGraph` directly, with sampling on the device.
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
from bot.engine.states import CachedState, StateSlab

log = logging.getLogger(__name__)

DTYPES = {"fp16": torch.float16, "fp32": torch.float32, "bf16": torch.bfloat16}
MAX_BATCH = SCHEMA["model"]["max_batch"].default
BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 1024, 1280,
           1536, 2048, 2560, 3072, 4096)
CACHE_ROWS = 1.0  # rows that cache returned states, per row of max_batch (the next turn then needs no upload)


def bucket_of(batch: int, limit: int) -> int:
    """The graph size a step of `batch` rows runs at."""
    return next((b for b in BUCKETS if b >= batch and b <= limit), limit)


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
                 progress=None, cuda_graphs: bool | None = None, weights: dict[str, torch.Tensor] | None = None,
                 cache_rows: int | None = None):
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
        self.ops = pick_ops(version, self.device)
        initial = (load_state_file(state_file, version, z["n_layer"], z["n_embd"], self.dtype)
                   if state_file else self._zeros())
        cache_rows = int(CACHE_ROWS * max_batch) if cache_rows is None else cache_rows
        self.slab = StateSlab(z["n_layer"], z["n_embd"], z["head_size"], self.dtype, self.device,
                              max_batch + cache_rows, initial)
        self.pools = self.slab.pools
        self.scratch_row = self.slab.scratch_row
        self._rows: dict[int, int] = {}  # slot -> slab row, for the Backend protocol
        self.use_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        self._graphs: dict[int, StepGraph] = {}
        self.graph_pool = torch.cuda.graph_pool_handle() if self.use_graphs else None

    def _zeros(self) -> State:
        z, state = self.z, []
        H, N, C = z["n_head"], z["head_size"], z["n_embd"]
        for _ in range(z["n_layer"]):
            state += [torch.zeros(C, dtype=self.dtype), torch.zeros(H, N, N, dtype=torch.float32),
                      torch.zeros(C, dtype=self.dtype)]
        return state

    # ----- Backend protocol ---------------------------------------------------------------------------------
    def zero_state(self) -> CachedState:
        return self.slab.initial_state()

    def load(self, slot: int, state: State) -> None:
        self.slab.check(state)
        row = self._rows.get(slot)
        if row is None:
            row = self._rows[slot] = self.slab.acquire()
        with torch.no_grad():
            self.slab.load([row], [state])

    def save(self, slot: int) -> State:
        """A copy of the slot's state (it stays loaded)."""
        row = self.slab.acquire()
        idx = lambda r: torch.tensor([r], device=self.device)
        for pool in (self.pools.att_x, self.pools.kv, self.pools.ffn_x):
            pool.index_copy_(1, idx(row), pool.index_select(1, idx(self._rows[slot])))
        pending = self.slab.save([row])
        pending.wait()
        return pending.states[0]

    def release(self, slot: int) -> None:
        row = self._rows.pop(slot, None)
        if row is not None:
            self.slab.release(row)

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
            decode = lambda: self.decode([t[0] for _, t in (rows[i] for i in one)],
                                         [self._rows[rows[i][0]] for i in one])
            prefill = lambda: self.prefill([list(rows[i][1]) for i in many], [self._rows[rows[i][0]] for i in many])
            if not many:
                return decode()
            if not one:
                return prefill()
            out = torch.empty(len(rows), self.info.vocab_size, device=self.device)
            out[torch.tensor(one, device=self.device)] = decode()
            out[torch.tensor(many, device=self.device)] = prefill()
            return out

    # ----- by slab row --------------------------------------------------------------------------------------
    def decode(self, tokens: Sequence[int], rows: Sequence[int]) -> torch.Tensor:
        """One token for each row (the graph of its bucket on CUDA); float32 logits (B, V)."""
        B = len(tokens)
        if self.use_graphs and B <= self.max_batch:
            bucket = bucket_of(B, self.max_batch)
            graph = self._graphs.get(bucket)
            if graph is None:
                graph = self._graphs[bucket] = self.capture(bucket, 2, self.decode_fn)
            return graph.run([list(tokens), list(rows)], [0, self.scratch_row])[:B].clone()
        tok = torch.tensor(list(tokens), dtype=torch.long).to(self.device)
        idx = torch.tensor(list(rows), dtype=torch.long).to(self.device)
        return self.model.decode_step(self.z, tok, idx, self.pools, self.ops)

    def decode_fn(self, inputs: torch.Tensor, scratch: dict) -> torch.Tensor:
        """The decode step over static inputs (tokens, rows), for graph capture."""
        if "x" not in scratch:
            B, C = inputs.shape[1], self.z["n_embd"]
            scratch["x"] = torch.zeros(B, C, dtype=torch.float32, device=self.device)
            scratch["v_first"] = torch.zeros(B, C, dtype=torch.float32, device=self.device)
        return self.model.decode_step(self.z, inputs[0], inputs[1], self.pools, self.ops, v_first=scratch["v_first"],
                                      x=scratch["x"])

    def prefill(self, seqs: Sequence[Sequence[int]], rows: Sequence[int]) -> torch.Tensor:
        """Several sequences of any lengths in one packed call; float32 logits after each one's last token."""
        packed = rwkv7.Packed.build([list(s) for s in seqs], list(rows), self.device)
        return self.model.forward_packed(self.z, packed, self.pools, self.ops)

    def capture(self, bucket: int, fields: int, fn, fill: Sequence[int] | None = None) -> "StepGraph":
        return StepGraph(self, bucket, fields, fn, self.graph_pool,
                         fill if fill is not None else [0, self.scratch_row] + [0] * (fields - 2))

    def warmup(self, buckets: Sequence[int] = ()) -> None:
        """Capture the decode graphs for these batch sizes now (the first step at a new size otherwise pays)."""
        if not self.use_graphs:
            return
        with torch.no_grad():
            for b in buckets:
                bucket = bucket_of(b, self.max_batch)
                if bucket not in self._graphs:
                    self._graphs[bucket] = self.capture(bucket, 2, self.decode_fn)


class StepGraph:
    """A CUDA graph of `fn(inputs, scratch)` at a fixed batch size over a static (fields, bucket) long input
    buffer, refilled from pinned host memory before each replay. `fill` is each field's value for padded columns
    (they point at the scratch row), also used while warming up and capturing."""

    def __init__(self, backend: BatchedBackend, bucket: int, fields: int, fn, pool, fill: Sequence[int]):
        dev = backend.device
        self.bucket, self.fill = bucket, list(fill)
        self.inputs = torch.tensor(self.fill, dtype=torch.long, device=dev).unsqueeze(1).repeat(1, bucket)
        self.host = torch.zeros(fields, bucket, dtype=torch.long).pin_memory()
        self.copied: torch.cuda.Event | None = None
        # Buffers the step makes for itself (made on the first warm-up call): the graph writes them at every
        # replay, so they live as long as the graph.
        self.scratch: dict = {}
        step = lambda: fn(self.inputs, self.scratch)
        # Warm up on a side stream (kernel compilation, cuBLAS handles), on padding only.
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(2):
                step()
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.output = step()

    def run(self, columns: Sequence[Sequence[int]], fill: Sequence[int] | None = None):
        """Replay with these input columns (each field a list of length B <= bucket); returns the static output."""
        B = len(columns[0])
        if self.copied is not None:
            self.copied.synchronize()  # the last replay's copy out of the pinned buffer is done: reuse it
        for f, values in enumerate(columns):
            self.host[f, B:] = self.fill[f] if fill is None else fill[f]
            self.host[f, :B] = torch.tensor(values, dtype=torch.long)
        self.inputs.copy_(self.host, non_blocking=True)
        self.copied = torch.cuda.Event()
        self.copied.record()
        self.graph.replay()
        return self.output
