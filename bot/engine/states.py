"""States stay where they are used: one slab of rows on the device for every state the engine works on.

* Rows of active jobs are read and written in place by the model (indexed by row, never copied per step).
* A job's start state is copied into its row in one batched gather per step: from a row that still holds it (a
  state the engine returned earlier: the next turn of a channel, an undo, a card's prompt state), from the zero
  state's row, or uploaded from host memory when it was never on the device or has been evicted.
* A finished job's state is gathered into a staging buffer in one batched copy and brought to host memory on a side
  stream (pinned buffers, so the copy runs without the CPU), off the step's critical path; its row stays as a cache
  of that state (least recently used rows are reused first) until the slab needs it.

A state returned by the engine is a `CachedState`: a list of CPU tensors in the package's layout (what the
conversation layer and the store see), plus the weak link that lets the engine find its device copy again. It is
read-only: the engine never changes it, and a caller that did would make the cached copy stale.
"""
from __future__ import annotations

import collections
import threading
import weakref
from dataclasses import dataclass, field

import torch

from bot.engine.backend import State, to_device
from bot.engine.rwkv7 import Pools


PREWARM_BYTES = 4 << 30  # pinned host buffers made at start (12.6 MiB took 13 ms on the H200 machine; reuse is free)


class HostBlocks:
    """Host buffers of one size for states coming off the device, pinned on CUDA (so the copy is a DMA that runs
    beside the GPU's work) and reused: a block is free again once no tensor views it (a state's tensors are views
    of its block), which the storage's use count tells. Making a pinned block is slow, so some are made at start;
    past `limit` blocks a state gets plain memory (a slower, synchronous copy)."""

    def __init__(self, nbytes: int, pinned: bool, limit: int, prewarm: int = 0):
        self.nbytes, self.pinned, self.limit = nbytes, pinned, limit
        self._blocks: list[torch.Tensor] = []
        self._next = 0
        for _ in range(min(prewarm, limit) if pinned else 0):
            self._blocks.append(self._make())
        self._base = _views(self._blocks[0]) if self._blocks else None

    def _make(self) -> torch.Tensor:
        return torch.empty(self.nbytes, dtype=torch.uint8, pin_memory=self.pinned)

    def take(self) -> torch.Tensor:
        if not self.pinned:
            return self._make()
        n = len(self._blocks)
        for k in range(n):  # from where the last search stopped: the oldest blocks free first
            block = self._blocks[(self._next + k) % n]
            if _views(block) <= self._base:
                self._next = (self._next + k + 1) % n
                return block
        if n < self.limit:
            block = self._make()
            self._blocks.append(block)
            if self._base is None:
                self._base = _views(block)
            return block
        return torch.empty(self.nbytes, dtype=torch.uint8)  # every pinned block is in use


def _views(block: torch.Tensor) -> int:
    return torch._C._storage_Use_Count(block.untyped_storage()._cdata)


class CachedState(list):
    """A state (list of CPU tensors, read-only) whose copy the engine may still hold on its device."""

    __slots__ = ("__weakref__", "flat")

    def __init__(self, tensors=(), flat: torch.Tensor | None = None):
        super().__init__(tensors)
        self.flat = flat  # the one host buffer the tensors are views of (pinned on CUDA), for a single upload


@dataclass
class PendingSave:
    """States on their way to host memory; `ready()` once the copy has landed."""

    states: list[CachedState]
    event: object = None  # torch.cuda.Event on CUDA; None when the copy was synchronous
    keep: list = field(default_factory=list)  # buffers the copy still reads

    def ready(self) -> bool:
        return self.event is None or self.event.query()

    def wait(self) -> None:
        if self.event is not None:
            self.event.synchronize()


class StateSlab:
    def __init__(self, n_layer: int, n_embd: int, head_size: int, dtype, device, rows: int, initial: State):
        """`rows` for active jobs and cached states; two more are added: the initial state's and a scratch row
        (padded rows of a step read and write there)."""
        self.device = torch.device(device)
        self.dtype = dtype
        self.L, self.C, self.N = n_layer, n_embd, head_size
        self.H = n_embd // head_size
        self.pools = Pools.empty(n_layer, rows + 2, n_embd, head_size, dtype, self.device)
        self.rows = rows
        self.initial_row, self.scratch_row = rows, rows + 1
        self.pools.write(self.initial_row, initial)
        self._initial = [t.clone() for t in initial]
        self._free = list(range(rows - 1, -1, -1))
        self._cache: collections.OrderedDict[int, weakref.ref] = collections.OrderedDict()  # row -> state
        self._row_of: dict[int, int] = {}  # id(state) -> row (cached rows and the initial row)
        self._dead: list[int] = []  # rows of cached states that were collected (appended from any thread)
        self._lock = threading.Lock()
        self.cuda = self.device.type == "cuda"
        self._copy_stream = torch.cuda.Stream(self.device) if self.cuda else None
        e = torch.empty((), dtype=dtype).element_size()
        self._parts = (n_layer * n_embd * e, n_layer * self.H * head_size * head_size * 4, n_layer * n_embd * e)
        self.state_bytes = sum(self._parts)
        self.host = HostBlocks(self.state_bytes, self.cuda, limit=rows, prewarm=PREWARM_BYTES // self.state_bytes)

    # ----- states handed out --------------------------------------------------------------------------------
    def initial_state(self) -> CachedState:
        """A fresh copy of the initial (zero or state-file) state, known to be on the device already."""
        state = CachedState([t.clone() for t in self._initial])
        self._remember(state, self.initial_row)
        return state

    def _remember(self, state: CachedState, row: int) -> None:
        key = id(state)
        with self._lock:
            self._row_of[key] = row
        if row != self.initial_row:
            self._cache[row] = weakref.ref(state)
        weakref.finalize(state, self._forget, key, row)

    def _forget(self, key: int, row: int) -> None:
        with self._lock:
            if self._row_of.get(key) == row:
                del self._row_of[key]
                if row != self.initial_row:
                    self._dead.append(row)

    def cached_row(self, state) -> int | None:
        """The row holding this exact state object, if it is still there."""
        with self._lock:
            row = self._row_of.get(id(state))
        if row is None:
            return None
        if row == self.initial_row:
            return row
        ref = self._cache.get(row)
        return row if ref is not None and ref() is state else None

    # ----- rows -----------------------------------------------------------------------------------------------
    def acquire(self) -> int:
        self._reclaim()
        if self._free:
            return self._free.pop()
        while self._cache:  # the least recently used cached state gives up its row
            row, ref = self._cache.popitem(last=False)
            state = ref()
            if state is not None:
                with self._lock:
                    if self._row_of.get(id(state)) == row:
                        del self._row_of[id(state)]
            return row
        raise RuntimeError(f"state slab: all {self.rows} rows are in use")

    def release(self, row: int) -> None:
        self._free.append(row)

    def _reclaim(self) -> None:
        with self._lock:
            dead, self._dead = self._dead, []
        for row in dead:
            if row in self._cache and self._cache[row]() is None:
                del self._cache[row]
                self._free.append(row)

    # ----- moving states ------------------------------------------------------------------------------------
    def load(self, rows: list[int], states: list[State]) -> None:
        """Copy each state into its row: device copies gathered in one batch, uploads for the rest."""
        src, dst = [], []
        for row, state in zip(rows, states):
            cached = self.cached_row(state)
            if cached is not None:
                if cached in self._cache:
                    self._cache.move_to_end(cached)
                src.append(cached)
                dst.append(row)
            else:
                self._upload(row, state)
        if src:
            s, d = to_device(src, torch.long, self.device), to_device(dst, torch.long, self.device)
            for pool in (self.pools.att_x, self.pools.kv, self.pools.ffn_x):
                pool.index_copy_(1, d, pool.index_select(1, s))

    def _upload(self, row: int, state: State) -> None:
        self.check(state)
        flat = getattr(state, "flat", None)
        if flat is not None and flat.numel() == self.state_bytes:  # one copy of the whole buffer
            staged = flat.to(self.device, non_blocking=True)
            att, kv, ffn = self._views(staged.unsqueeze(0))
            self.pools.att_x[:, row] = att[0]
            self.pools.kv[:, row] = kv[0]
            self.pools.ffn_x[:, row] = ffn[0]
        else:
            self.pools.write(row, state)

    def check(self, state: State) -> None:
        if len(state) != 3 * self.L or tuple(state[1].shape) != (self.H, self.N, self.N):
            raise ValueError("state does not match this model's shape")

    def _views(self, staging: torch.Tensor):
        """(R, state_bytes) uint8 -> att (R, L, C), kv (R, L, H, N, N) float32, ffn (R, L, C)."""
        R = staging.shape[0]
        a, k, _ = self._parts
        att = staging[:, :a].view(self.dtype).view(R, self.L, self.C)
        kv = staging[:, a : a + k].view(torch.float32).view(R, self.L, self.H, self.N, self.N)
        ffn = staging[:, a + k :].view(self.dtype).view(R, self.L, self.C)
        return att, kv, ffn

    def save(self, rows: list[int]) -> PendingSave:
        """Bring these rows' states to host memory (asynchronously on CUDA); each row then caches its state."""
        if not rows:
            return PendingSave([])
        idx = to_device(rows, torch.long, self.device)
        staging = torch.empty(len(rows), self.state_bytes, dtype=torch.uint8, device=self.device)
        for part, pool in zip(self._views(staging), (self.pools.att_x, self.pools.kv, self.pools.ffn_x)):
            part.copy_(pool.index_select(1, idx).transpose(0, 1))
        hosts = [self.host.take() for _ in rows]
        event = None
        if self.cuda:
            gathered = torch.cuda.Event()
            gathered.record()
            with torch.cuda.stream(self._copy_stream):
                self._copy_stream.wait_event(gathered)
                for i, host in enumerate(hosts):
                    host.copy_(staging[i], non_blocking=host.is_pinned())
                event = torch.cuda.Event()
                event.record()
            staging.record_stream(self._copy_stream)
        else:
            for i, host in enumerate(hosts):
                host.copy_(staging[i])
        states = []
        for row, host in zip(rows, hosts):
            att, kv, ffn = (t[0] for t in self._views(host.unsqueeze(0)))
            state = CachedState([x for i in range(self.L) for x in (att[i], kv[i], ffn[i])], flat=host)
            self._remember(state, row)
            states.append(state)
        return PendingSave(states, event, [staging])
