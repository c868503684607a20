"""Command line: `rwkv-bot run|chat|demo-model|card|db|bench|front|worker|cluster|bench-cluster`.

stdout carries only what the user should see (replies, command answers, JSON); logs, progress bars and the
banners that the `rwkv` package prints go to stderr. Every subcommand's handler is imported only when it runs,
so `rwkv-bot card ...` never imports torch or loads a model.
"""
from __future__ import annotations

import argparse
import importlib
import sys


def _lazy(target: str):
    """A handler named "module:function", imported when called."""
    module_name, func_name = target.split(":")

    def call(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module_name), func_name)(args)

    return call


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rwkv-bot", description="RWKV role-play bot for Discord and Telegram")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="start the bot: Discord/Telegram when tokens are configured, else terminal chat")
    p.add_argument("--config", metavar="PATH", help="config file (default: ./rwkv-bot.toml if present)")
    p.set_defaults(func=_lazy("bot.app:run_command"))

    p = sub.add_parser("chat", help="chat in the terminal (reads stdin; works piped)")
    p.add_argument("--config", metavar="PATH", help="config file (default: ./rwkv-bot.toml if present)")
    p.add_argument("--character", metavar="NAME", help="character to start with")
    p.add_argument("--channel", metavar="ID", default="terminal", help="conversation id (default: terminal)")
    p.set_defaults(func=_lazy("bot.app:chat_command"))

    p = sub.add_parser("demo-model", help="write a random-weight RWKV checkpoint for tests and demos")
    p.add_argument("path", metavar="PATH", help="output file (.pth added when missing)")
    p.add_argument("--version", type=int, choices=(6, 7), default=7)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dim", type=int, default=128, help="embedding size, a multiple of 64")
    p.add_argument("--vocab", type=int, default=65536)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_lazy("bot.tools.demo_model:demo_model_command"))

    p = sub.add_parser("card", help="inspect or import character cards (never loads the model)")
    card_sub = p.add_subparsers(dest="card_command", required=True, metavar="ACTION")
    c = card_sub.add_parser("show", help="print a card normalized")
    c.add_argument("file", metavar="FILE")
    c.add_argument("--json", action="store_true", help="print the normalized card as one JSON document")
    c.set_defaults(func=_lazy("bot.cards.cli:show_command"))
    c = card_sub.add_parser("import", help="add a card to the character library")
    c.add_argument("file", metavar="FILE")
    c.add_argument("--config", metavar="PATH")
    c.set_defaults(func=_lazy("bot.cards.cli:import_command"))

    p = sub.add_parser("db", help="database maintenance")
    db_sub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    c = db_sub.add_parser("upgrade", help="apply migrations up to the newest")
    c.add_argument("--config", metavar="PATH")
    c.add_argument("--revision", default="head")
    c.set_defaults(func=_lazy("bot.store.cli:upgrade_command"))
    c = db_sub.add_parser("downgrade", help="revert migrations (says what it deletes; does it only with --yes)")
    c.add_argument("--config", metavar="PATH")
    c.add_argument("--revision", default="-1")
    c.add_argument("--yes", action="store_true", help="delete what the downgrade deletes")
    c.set_defaults(func=_lazy("bot.store.cli:downgrade_command"))
    c = db_sub.add_parser("check", help="integrity check of the database")
    c.add_argument("--config", metavar="PATH")
    c.set_defaults(func=_lazy("bot.store.cli:check_command"))
    c = db_sub.add_parser("bench", help="time saving and loading one state through the store")
    c.add_argument("--layers", type=int, default=24)
    c.add_argument("--dim", type=int, default=2048)
    c.add_argument("--repeat", type=int, default=5)
    c.add_argument("--url", help="database URL (default: a temporary SQLite file)")
    c.set_defaults(func=_lazy("bot.store.cli:bench_command"))

    p = sub.add_parser("front", help="cluster: run only the platform adapters, forwarding to workers over NATS")
    p.add_argument("--config", metavar="PATH")
    p.set_defaults(func=_lazy("bot.cluster.cli:front_command"))
    p = sub.add_parser("worker", help="cluster: run commands and the model for the partitions this worker leases")
    p.add_argument("--config", metavar="PATH")
    p.add_argument("--simulate", type=float, default=0, metavar="STEPS_PER_S",
                   help="no model: a simulated one that takes 1/STEPS_PER_S per step (bench-cluster)")
    p.set_defaults(func=_lazy("bot.cluster.cli:worker_command"))
    p = sub.add_parser("cluster", help="cluster maintenance")
    cluster_sub = p.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    c = cluster_sub.add_parser("status", help="workers, their partitions, queue depths and tokens/s")
    c.add_argument("--config", metavar="PATH")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_lazy("bot.cluster.cli:status_command"))
    p = sub.add_parser("bench-cluster", help="replies/s with 1, 2, 4 workers of a simulated model, over NATS")
    p.add_argument("--config", metavar="PATH")
    p.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--turns", type=int, default=4, help="turns per channel per measurement")
    p.add_argument("--steps-per-second", type=float, default=50.0, help="each simulated worker's model speed")
    p.add_argument("--max-batch", type=int, default=4,
                   help="channels each worker generates at once (few: each worker is bound by its model)")
    p.add_argument("--partitions", type=int, default=16)
    p.add_argument("--database", metavar="URL",
                   help="PostgreSQL server (postgresql+asyncpg://...; a fresh database per worker count, dropped "
                        "after); default: the config's database.url")
    p.add_argument("--nats-server", metavar="PATH", help="the nats-server binary (default: from PATH)")
    p.add_argument("--logs", metavar="DIR", help="keep the workers' and nats-server's logs under DIR")
    p.add_argument("--json", metavar="OUT", help="write results as JSON")
    p.set_defaults(func=_lazy("bot.cluster.bench:bench_cluster_command"))

    p = sub.add_parser("bench", help="benchmark the engine against the plain rwkv package")
    p.add_argument("--preset", default="0.1b", help="model shape preset (0.1b 0.4b 1.5b 2.9b 7.2b v6-3b)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--channels", default="1,16,64,256", help="comma-separated channel counts")
    p.add_argument("--json", metavar="OUT", help="write results as JSON")
    p.add_argument("--precision", choices=("fp16", "bf16", "fp32"), default=None,
                   help="weights (default fp16 on cuda, fp32 on cpu)")
    p.add_argument("--seconds", type=float, default=2.0, help="time per decode measurement")
    p.add_argument("--max-steps", type=int, default=2000, help="most decode steps per measurement")
    p.add_argument("--card-tokens", type=int, default=2000, help="prefill length")
    p.add_argument("--prefill-repeats", type=int, default=3)
    p.add_argument("--no-workload", action="store_true", help="skip the bot workload")
    p.add_argument("--no-baseline", action="store_true", help="skip the plain rwkv package")
    p.add_argument("--capacity", action="store_true",
                   help="also find the most channels that each still stream >= 20 tokens/s with p95 first token <= 1 s")
    p.add_argument("--baseline-max-channels", type=int, default=16,
                   help="largest channel count measured on the package (it serves one at a time)")
    p.add_argument("--agreement-sequences", type=int, default=2)
    p.add_argument("--agreement-tokens", type=int, default=300)
    p.add_argument("--profile", metavar="DIR", help="write torch profiler tables of eager steps here")
    p.set_defaults(func=_lazy("bot.tools.bench:bench_command"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # python -m bot.cli (python -m bot works too)
    raise SystemExit(main())
