"""`rwkv-bot db upgrade|downgrade|check|bench`."""
from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import time

from bot.config import ConfigError, load_config
from bot.libraries import MissingLibrary
from bot.store.errors import StoreError

# What stops a db command with one line on stderr and exit code 2.
_ONE_LINE_ERRORS = (MissingLibrary, StoreError)


def _one_line_errors(command):
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except _ONE_LINE_ERRORS as exc:
            print(f"rwkv-bot: {exc}", file=sys.stderr)
            return 2

    return run


def _configured(command):
    """A command on the configured database: `command(args, url)`; a config error is one line and exit code 2."""
    @_one_line_errors
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            url = load_config(args.config).database.url
        except ConfigError as exc:
            print(f"rwkv-bot: config: {exc}", file=sys.stderr)
            return 2
        return command(args, url)

    return run


def _with_store(url: str, work, **open_args):
    """asyncio.run(work(store)) on an opened Store."""
    from bot.store import Store

    async def run():
        store = Store(url)
        await store.open(**open_args)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


@_configured
def upgrade_command(args: argparse.Namespace, url: str) -> int:
    revision = _with_store(url, lambda store: store.revision(), revision=args.revision)
    print(f"database at revision {revision or 'base'}")
    return 0


@_configured
def downgrade_command(args: argparse.Namespace, url: str) -> int:
    """Says what the downgrade deletes (rows counted), and does it only with --yes."""
    from bot.store.migrate import downgrade_database, downgrade_losses, downgrade_steps

    async def plan(store):
        current = await store.revision()
        steps = downgrade_steps(current, args.revision)
        losses = downgrade_losses(steps)
        return current, steps, losses, await store.row_counts([name.split(".")[0] for name, _ in losses if name])

    current, steps, losses, counts = _with_store(url, plan, migrate=False)
    if not steps:
        print(f"nothing to downgrade: the database is at revision {current or 'base'}")
        return 0
    target = steps[-1].down_revision or "base"
    print(f"downgrading from revision {current} to {target} deletes:")
    for name, what in losses:
        if name:
            print(f"  {name}: {counts.get(name.split('.')[0], 0)} rows ({what})")  # "table" or "table.column"
        else:
            print(f"  whatever migration {what} added (it does not say)")
    if not args.yes:
        print("nothing was changed; run again with --yes to downgrade", file=sys.stderr)
        return 1
    downgrade_database(url, args.revision)
    print(f"database downgraded to {target}")
    return 0


@_configured
def check_command(args: argparse.Namespace, url: str) -> int:
    problems = _with_store(url, lambda store: store.check(), migrate=False)
    for problem in problems:
        print(problem)
    if not problems:
        print("database consistent")
    return 1 if problems else 0


@_one_line_errors
def bench_command(args: argparse.Namespace) -> int:
    """Save and load one state of a given shape through the store (default: 1.5B, 24 x 2048)."""
    import tempfile

    import torch

    from bot.store import Store, pack_state, unpack_state

    layers, dim = args.layers, args.dim
    heads = dim // 64
    state = []
    for _ in range(layers):  # kv values of a used state are spread out, not zeros: compress honestly
        state += [torch.randn(dim).half(), torch.randn(heads, 64, 64), torch.randn(dim).half()]
    raw = sum(t.numel() * t.element_size() for t in state)

    async def run() -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            url = args.url or f"sqlite+aiosqlite:///{tmp}/bench.db"
            store = Store(url)
            await store.open()
            channel = await store.get_or_create_channel("bench", "1")
            timings = {"pack_s": [], "unpack_s": [], "save_s": [], "load_s": []}
            for i in range(args.repeat):
                t0 = time.perf_counter()
                packed = pack_state(state)
                t1 = time.perf_counter()
                unpack_state(packed.header, packed.blob)
                t2 = time.perf_counter()
                await store.put_state(channel.id, i, state, "bench", 0)
                t3 = time.perf_counter()
                loaded = await store.nearest_state(channel.id, i)
                t4 = time.perf_counter()
                assert all(torch.equal(a, b) for a, b in zip(loaded.state, state))
                for key, value in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                    timings[key].append(value)
            await store.close()
            return {"layers": layers, "dim": dim, "raw_bytes": raw, "stored_bytes": len(packed.blob),
                    **{k: sorted(v)[len(v) // 2] for k, v in timings.items()}}

    result = asyncio.run(run())
    print(json.dumps(result, indent=2))
    return 0
