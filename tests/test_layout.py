"""The house's shape: every import in bot/ points down the arrows of the README's "How the code is laid out".

adapters -> commands -> conversations -> {cards, store, engine}. Rooms below never import rooms above; adapters
speak only to commands (through plain data), and commands never import a platform library.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parents[1] / "bot"
ROOMS = ("adapters", "commands", "conversations", "cards", "store", "engine", "tools")
# Rooms at the adapters' level that other work adds (NATS fronts and workers, the admin web page): like the
# adapters they speak to commands only. They may or may not exist yet.
FRONT_ROOMS = ("cluster", "dashboard")
PLATFORM_LIBRARIES = {"discord", "telegram", "aiohttp", "nats", "uvicorn", "starlette"}

FRONTS = {"adapters", *FRONT_ROOMS}
BELOW_COMMANDS = {"conversations", "store", "engine", "cards", "tools", "app", "cli"}
# room -> rooms (and top-level modules) it must never import
FORBIDDEN = {
    "engine": {*FRONTS, "commands", "conversations", "cards", "store", "tools", "app", "cli"},
    "store": {*FRONTS, "commands", "conversations", "cards", "engine", "tools", "app", "cli"},
    "cards": {*FRONTS, "commands", "conversations", "store", "engine", "tools", "app", "cli"},
    "conversations": {*FRONTS, "commands", "tools", "app", "cli"},
    "commands": {*FRONTS, "tools", "app", "cli"},
    "tools": {*FRONTS, "commands", "app", "cli"},
    "adapters": BELOW_COMMANDS | {"cluster", "dashboard"},
    "dashboard": BELOW_COMMANDS | {"cluster", "adapters"},
    # A cluster front speaks to the workers through plain data, as an adapter speaks to commands; the worker side
    # (worker, fences, leases, cli, bench) composes the whole bot, as app.py does.
    "cluster": BELOW_COMMANDS - {"app"},
}
CLUSTER_COMPOSITION = {"worker.py", "fences.py", "leases.py", "cli.py", "bench.py"}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in a file, relative imports resolved, inside functions too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(BOT.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def room_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "bot" or len(parts) < 2:
        return None
    return parts[1]


def crossings() -> list[str]:
    bad = []
    for path in sorted(BOT.rglob("*.py")):
        here = room_of(".".join(path.relative_to(BOT.parent).with_suffix("").parts))
        if here not in FORBIDDEN or (here == "cluster" and path.name in CLUSTER_COMPOSITION):
            continue
        for line, module in imports_of(path):
            target = room_of(module)
            where = f"{path.relative_to(BOT.parent)}:{line}"
            if target in FORBIDDEN[here]:
                bad.append(f"{where}: {here} imports bot.{target}")
            if here == "commands" and module.split(".")[0] in PLATFORM_LIBRARIES:
                bad.append(f"{where}: commands import the platform library {module}")
    return sorted(set(bad))


def test_no_import_crosses_a_forbidden_arrow():
    assert crossings() == []


def test_the_tree_is_the_documented_one():
    rooms = {p.name for p in BOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert set(ROOMS) <= rooms <= set(ROOMS) | set(FRONT_ROOMS)


@pytest.mark.parametrize("room, source, expected", [
    ("engine", "from bot.conversations import ChannelKey\n", "bot/engine/x.py:1: engine imports bot.conversations"),
    ("engine", "def f():\n    from ..commands import base\n", "bot/engine/x.py:2: engine imports bot.commands"),
    ("dashboard", "from bot.store import Store\n", "bot/dashboard/x.py:1: dashboard imports bot.store"),
    ("commands", "import telegram\n", "bot/commands/x.py:1: commands import the platform library telegram"),
    ("cluster", "from bot.engine import Engine\n", "bot/cluster/x.py:1: cluster imports bot.engine"),
    ("adapters", "from bot.cluster.front import RemoteCommands\n", "bot/adapters/x.py:1: adapters imports bot.cluster"),
])
def test_the_checker_sees_a_crossing(tmp_path, monkeypatch, room, source, expected):
    """The check itself can fail: a planted import (also a lazy, relative one) is reported."""
    fake = tmp_path / "bot"
    (fake / room).mkdir(parents=True)
    (fake / room / "__init__.py").write_text("")
    (fake / room / "x.py").write_text(source)
    monkeypatch.setattr(__import__(__name__, fromlist=["BOT"]), "BOT", fake)
    assert crossings() == [expected]
