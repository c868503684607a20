"""Which worker serves which partition: leases in a JetStream key-value bucket.

A lease is the key `partition.<P>` holding the worker's id. It is taken with a create (only if absent), renewed
by a revision-checked update every heartbeat, and dies with the bucket's TTL when its worker stops renewing it.
Its revision when taken is the fence the database checks (fences.py). Workers also publish their load in a
second bucket with the same TTL: the live workers, what `cluster status` lists, and whom a free partition goes to.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass

import nats.js.errors as js_errors

from bot.cluster.wire import LEASE_BUCKET, WORKER_BUCKET, lease_key

log = logging.getLogger(__name__)


@dataclass
class Held:
    epoch: int  # the revision it was taken at: the fence
    revision: int  # the latest renewal's
    valid_until: float  # time.monotonic(): past it, this worker no longer counts on the lease


async def open_bucket(js, bucket: str, ttl: float):
    """The bucket (created with `ttl` when missing). An existing bucket keeps the TTL it was made with; the
    returned seconds are the ones that apply."""
    try:
        kv = await js.key_value(bucket)
        status = await kv.status()
        return kv, (status.ttl or ttl)
    except js_errors.BucketNotFoundError:
        return await js.create_key_value(bucket=bucket, ttl=ttl, history=1), ttl


def plan(me: str, partitions: int, owners: dict[int, str], active: dict[str, int]) -> tuple[list[int], list[int]]:
    """(partitions `me` should take, partitions it should give up), the same rule on every worker: shares end
    within one partition of each other. A free partition goes to a worker holding the fewest, the least loaded
    of those (fewest active channels); a worker holding two or more beyond the fewest gives half the difference
    back, which then goes to the fewest (never back to it: it still holds more)."""
    live = set(active) | {me}
    share = math.ceil(partitions / len(live))
    count = {w: 0 for w in live}
    for owner in owners.values():
        if owner in count:
            count[owner] += 1
    fewest = min(count.values())
    free = [p for p in range(partitions) if p not in owners]
    take: list[int] = []
    if free and count[me] < share:
        chosen = min(live, key=lambda w: (count[w] > fewest, active.get(w, 0), count[w], w))
        if chosen == me:
            take = free[:share - count[me]]
    mine = sorted(p for p, owner in owners.items() if owner == me)
    # Not while partitions are free: the counts are about to change (we may just have given some up).
    give = mine[len(mine) - (count[me] - fewest) // 2:] if count[me] - fewest > 1 and not free else []
    return take, give


class Leases:
    def __init__(self, js, worker_id: str, partitions: int, seconds: float):
        self.js = js
        self.worker_id = worker_id
        self.partitions = partitions
        self.seconds = seconds
        self.held: dict[int, Held] = {}
        self.kv = self.loads = None

    async def open(self) -> None:
        self.kv, self.seconds = await open_bucket(self.js, LEASE_BUCKET, self.seconds)
        self.loads, _ = await open_bucket(self.js, WORKER_BUCKET, self.seconds)

    def _valid_for(self) -> float:
        """Trust a renewal for less than the TTL: the server may expire the key a little early by our clock."""
        return self.seconds * 0.75

    def holds(self, partition: int) -> bool:
        held = self.held.get(partition)
        return held is not None and time.monotonic() < held.valid_until

    async def renew(self) -> list[int]:
        """Renew every lease; the partitions lost (taken over, or not renewed in time)."""
        async def renew_one(partition: int, held: Held) -> bool:
            started = time.monotonic()
            try:
                held.revision = await self.kv.update(lease_key(partition), self.worker_id.encode(), last=held.revision)
                held.valid_until = started + self._valid_for()
                return True
            except js_errors.KeyWrongLastSequenceError:
                log.warning("partition %d: lease taken over by another worker", partition)
                return False
            except Exception as exc:  # the broker is away: keep serving while the lease is still ours for sure
                if time.monotonic() >= held.valid_until:
                    log.warning("partition %d: lease not renewed in time (%s)", partition, type(exc).__name__)
                    return False
                return True

        held = list(self.held.items())
        kept = await asyncio.gather(*(renew_one(partition, h) for partition, h in held))
        lost = [partition for (partition, _), ok in zip(held, kept) if not ok]
        for partition in lost:
            self.held.pop(partition, None)
        return lost

    async def report(self, load: dict) -> None:
        await self.loads.put(self.worker_id, json.dumps(dict(load, worker=self.worker_id)).encode())

    async def workers(self) -> dict[str, dict]:
        """Live workers (their load reports), this one included once it has reported."""
        return await read_all(self.loads)

    async def owners(self) -> dict[int, str]:
        return await read_owners(self.kv, self.partitions)

    async def take(self, partition: int) -> int | None:
        """The lease's revision (the fence to record), or None when someone was quicker."""
        started = time.monotonic()
        try:
            revision = await self.kv.create(lease_key(partition), self.worker_id.encode())
        except js_errors.KeyWrongLastSequenceError:
            return None
        self.held[partition] = Held(revision, revision, started + self._valid_for())
        return revision

    async def release(self, partition: int) -> None:
        held = self.held.pop(partition, None)
        if held is not None:
            try:
                await self.kv.delete(lease_key(partition), last=held.revision)
            except Exception as exc:  # it expires by itself
                log.info("partition %d: lease not deleted (%s)", partition, type(exc).__name__)

    async def release_all(self) -> None:
        for partition in list(self.held):
            await self.release(partition)
        try:
            await self.loads.delete(self.worker_id)
        except Exception:
            pass


async def read_all(kv) -> dict[str, dict]:
    try:
        keys = await kv.keys()
    except js_errors.NoKeysError:
        return {}
    out = {}
    for key in keys:
        try:
            entry = await kv.get(key)
        except js_errors.KeyNotFoundError:
            continue
        if entry.value:
            out[key] = json.loads(entry.value)
    return out


async def read_owners(kv, partitions: int) -> dict[int, str]:
    """The live lease of each partition that has one."""
    owners = {}
    for partition in range(partitions):
        try:
            entry = await kv.get(lease_key(partition))
        except js_errors.KeyNotFoundError:  # KeyDeletedError is one too
            continue
        if entry.value:
            owners[partition] = entry.value.decode()
    return owners
