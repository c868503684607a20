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

# What stops a db command with one line on stderr and exit code 2.
_ONE_LINE_ERRORS = (MissingLibrary,)


def _one_line_errors(command):
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except _ONE_LINE_ERRORS as exc:
            print(f"rwkv-bot: {exc}", file=sys.stderr)
            return 2

    return run


def _url(args: argparse.Namespace) -> str | None:
    try:
        return load_config(args.config).database.url
    except ConfigError as exc:
        print(f"rwkv-bot: config: {exc}", file=sys.stderr)
        return None


@_one_line_errors
def upgrade_command(args: argparse.Namespace) -> int:
    from bot.store import upgrade_database

    return _migrate(args, upgrade_database, "database at revision {}")


@_one_line_errors
def downgrade_command(args: argparse.Namespace) -> int:
    from bot.store import downgrade_database

    return _migrate(args, downgrade_database, "database downgraded to {}")


def _migrate(args: argparse.Namespace, migrate, done: str) -> int:
    url = _url(args)
    if url is None:
        return 2
    migrate(url, args.revision)
    print(done.format(args.revision))
    return 0


@_one_line_errors
def check_command(args: argparse.Namespace) -> int:
    from bot.store import Store

    url = _url(args)
    if url is None:
        return 2

    async def check() -> list[str]:
        store = Store(url)
        await store.open(migrate=False)
        try:
            return await store.check()
        finally:
            await store.close()

    problems = asyncio.run(check())
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
