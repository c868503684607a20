"""`rwkv-bot front`, `rwkv-bot worker`, `rwkv-bot cluster status`: the configuration checked in one place, then
one of the roles. Every problem the owner can fix is one line and exit code 2."""
from __future__ import annotations

import argparse
import asyncio
import sys

from bot.config import ConfigError, load_config
from bot.libraries import MissingLibrary, import_optional


class ClusterSetupError(Exception):
    """A setting a front or worker cannot start with."""


def _config(args: argparse.Namespace, role: str):
    from bot.cluster.wire import NAME

    config = load_config(args.config)
    import_optional("nats", f"rwkv-bot {role} (cluster.nats_url)")
    section = config.cluster
    for key in ("name", "worker_id"):
        value = getattr(section, key)
        if value and not NAME.fullmatch(value):
            raise ClusterSetupError(f"cluster.{key} {value!r}: use 1-64 letters, digits, - and _")
    return config


def _run(args: argparse.Namespace, role: str, start) -> int:
    from bot.logs import setup_logging
    from bot.store.errors import StoreError

    try:
        config = _config(args, role)
    except (ConfigError, MissingLibrary, ClusterSetupError) as exc:
        print(f"rwkv-bot: {exc}", file=sys.stderr)
        return 2
    setup_logging(secrets=config.secrets)
    from bot.app import StartError
    from bot.engine.model import ModelError

    try:
        return asyncio.run(start(config))
    except (ModelError, MissingLibrary, StoreError, StartError, ClusterSetupError) as exc:
        print(f"rwkv-bot: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the broker cannot be reached at all
        print(f"rwkv-bot: cannot reach the broker {config.cluster.nats_url}: {exc}", file=sys.stderr)
        return 2


def front_command(args: argparse.Namespace) -> int:
    async def start(config) -> int:
        from bot.adapters import enabled_platforms
        from bot.cluster.front import run_front

        if not enabled_platforms(config):
            raise ClusterSetupError("a front serves Discord and/or Telegram: set telegram.token or discord.token")
        return await run_front(config)

    return _run(args, "front", start)


def worker_command(args: argparse.Namespace) -> int:
    async def start(config) -> int:
        from bot.app import check_characters_dir
        from bot.cluster.worker import run_worker

        check_characters_dir(config)
        backend = None
        if getattr(args, "simulate", 0):
            from bot.cluster.bench import SimulatedBackend

            backend = SimulatedBackend(args.simulate)
        return await run_worker(config, backend=backend)

    return _run(args, "worker", start)


def status_command(args: argparse.Namespace) -> int:
    async def start(config) -> int:
        from bot.cluster.status import cluster_status, format_status

        status = await cluster_status(config.cluster.nats_url, config.cluster.partitions)
        if args.json:
            import json

            print(json.dumps(status, indent=2))
        else:
            print(format_status(status))
        return 0

    return _run(args, "cluster status", start)
