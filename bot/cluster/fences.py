"""Fencing: a worker writes a partition's channels only while the database still names its lease.

A worker that takes partition P's lease (revision R in the lease bucket; revisions only grow) first records R in
`cluster_fences`; every write transaction it makes while serving P locks that row and checks R inside the same
transaction. A worker paused past its lease (SIGSTOP, a long GC, a partition of the network) and resumed finds a
newer revision there and its write is refused: it stops instead of committing beside the new owner.
"""
from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
from typing import Callable

from sqlalchemy import select

from bot.store import Store
from bot.store.errors import StoreError
from bot.store.models import ClusterFence, ClusterHandled

# (partition, lease revision) of the event the current task serves; None: a write for no partition (the shared
# character library, a prompt's initial state), which needs no fence.
serving: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("serving", default=None)


class FenceLost(StoreError):
    """Another worker holds this partition now: nothing was written."""

    def __init__(self, partition: int):
        super().__init__(f"partition {partition}: the lease was taken over; nothing written")
        self.partition = partition


class FencedStore(Store):
    """The store of a cluster worker: every write transaction made while serving a partition checks its fence.
    `on_lost(partition)` is told when a write is refused."""

    def __init__(self, url: str, snapshots: int = 10, on_lost: Callable[[int], None] | None = None):
        super().__init__(url, snapshots)
        self.on_lost = on_lost or (lambda partition: None)

    async def open(self, migrate: bool = True, revision: str = "head") -> None:
        await super().open(migrate, revision)
        self.sessions = _FencedSessions(self.sessions, self)

    async def take_fence(self, partition: int, revision: int, worker: str) -> bool:
        """Record a newly taken lease; False when the database already names a newer one (a lease taken from
        under us between acquiring and fencing)."""
        async with self.sessions.unfenced() as s:
            row = (await s.execute(select(ClusterFence).where(ClusterFence.partition == partition)
                                   .with_for_update())).scalar_one_or_none()
            if row is None:
                s.add(ClusterFence(partition=partition, revision=revision, worker=worker))
                return True
            if row.revision > revision:
                return False
            row.revision, row.worker, row.taken = revision, worker, dt.datetime.now(dt.timezone.utc)
            return True

    async def fences(self) -> dict[int, tuple[int, str]]:
        async with self.sessions() as s:
            return {r.partition: (r.revision, r.worker) for r in (await s.execute(select(ClusterFence))).scalars()}

    async def handled(self, key: str) -> dict | None:
        """The recorded answer of an event handled before (a redelivery), else None."""
        async with self.sessions() as s:
            row = await s.get(ClusterHandled, key)
            return None if row is None else row.answer

    async def record_handled(self, key: str, answer: dict) -> None:
        """Fenced like the event's other writes: a worker that lost its lease records nothing."""
        async with self.sessions.begin() as s:
            if await s.get(ClusterHandled, key) is None:
                s.add(ClusterHandled(key=key, answer=answer))

    async def forget_handled(self, older_than: dt.timedelta) -> int:
        from sqlalchemy import delete

        cutoff = dt.datetime.now(dt.timezone.utc) - older_than
        async with self.sessions.unfenced() as s:
            return (await s.execute(delete(ClusterHandled).where(ClusterHandled.handled < cutoff))).rowcount or 0


class _FencedSessions:
    """The store's sessions, with `begin()` checking the serving partition's fence first."""

    def __init__(self, inner, store: FencedStore):
        self._inner = inner
        self._store = store

    def __call__(self):
        return self._inner()

    def unfenced(self):
        return self._inner.begin()

    @contextlib.asynccontextmanager
    async def begin(self):
        current = serving.get()
        async with self._inner.begin() as session:
            if current is not None:
                partition, revision = current
                held = (await session.execute(select(ClusterFence.revision).where(ClusterFence.partition == partition)
                                              .with_for_update())).scalar_one_or_none()
                if held != revision:
                    self._store.on_lost(partition)
                    raise FenceLost(partition)
            yield session
