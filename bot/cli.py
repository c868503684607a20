"""Command line: `rwkv-bot run|chat|demo-model|card|db|bench`.

stdout carries only what the user should see (replies, command answers, JSON); logs, progress bars and the
banners that the `rwkv` package prints go to stderr.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Each subcommand lives in the module that owns its concept; the module exposes register(subparsers)
# and run(args) -> exit code. Imported lazily so `card` never pays for torch.
SUBCOMMANDS = {
    "run": "bot.app",
    "chat": "bot.app",
    "demo-model": "bot.engine.demo_model",
    "card": "bot.cards.cli",
    "db": "bot.engine.store_cli",
    "bench": "bot.engine.bench",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rwkv-bot", description="RWKV role-play bot for Discord and Telegram")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("bot"):
                continue  # subcommand not built yet
            raise
        module.register(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
