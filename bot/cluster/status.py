"""`rwkv-bot cluster status`: the live workers, the partitions each holds, queue depths and tokens/s."""
from __future__ import annotations

import contextlib

import nats.js.errors as js_errors

from bot.cluster.broker import connect
from bot.cluster.leases import read_all, read_owners
from bot.cluster.wire import IN_STREAM, LEASE_BUCKET, WORKER_BUCKET, consumer_name


async def cluster_status(nats_url: str, partitions: int) -> dict:
    nc = await connect(nats_url, "cluster-status")
    try:
        js = nc.jetstream()
        try:
            workers = await read_all(await js.key_value(WORKER_BUCKET))
            owners = await read_owners(await js.key_value(LEASE_BUCKET), partitions)
        except js_errors.BucketNotFoundError:
            workers, owners = {}, {}
        waiting = {}
        for partition in range(partitions):
            with contextlib.suppress(js_errors.NotFoundError):
                info = await js.consumer_info(IN_STREAM, consumer_name(partition))
                waiting[partition] = info.num_pending + info.num_ack_pending
        return {"workers": [dict(load, partitions=sorted(p for p, w in owners.items() if w == worker))
                            for worker, load in sorted(workers.items())],
                "unserved": [p for p in range(partitions) if p not in owners],
                "waiting": waiting}
    finally:
        await nc.close()


def format_status(status: dict) -> str:
    lines = [f"{'worker':<24} {'partitions':<24} {'active':>6} {'queue':>6} {'working':>7} {'tok/s':>8}"]
    for w in status["workers"]:
        parts = ",".join(map(str, w["partitions"])) or "-"
        lines.append(f"{w['worker']:<24} {parts:<24} {w.get('active', 0):>6} {w.get('queue', 0):>6} "
                     f"{w.get('working', 0):>7} {w.get('tps', 0):>8}")
    if not status["workers"]:
        lines.append("(no live workers)")
    if status["unserved"]:
        lines.append("partitions without a worker: " + ",".join(map(str, status["unserved"])))
    waiting = {p: n for p, n in status["waiting"].items() if n}
    lines.append("events waiting: " + (", ".join(f"p{p}={n}" for p, n in sorted(waiting.items())) or "none"))
    return "\n".join(lines)
