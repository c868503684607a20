"""The platform adapters (Telegram, Discord, the terminal): platform I/O only, speaking to `Commands` (or, on a
cluster front, `RemoteCommands`) through the boundary's plain data.

Which platforms run is the configuration's doing: every platform with a token."""
from __future__ import annotations

from bot.libraries import import_optional

PLATFORMS = ("telegram", "discord")


def enabled_platforms(config) -> list[tuple[str, object]]:
    """(name, adapter module) of every platform with a token; a missing platform library is MissingLibrary."""
    return [(name, import_optional(f"bot.adapters.{name}", f"{name}.token"))
            for name in PLATFORMS if getattr(config, name).token]


def platform_runners(app) -> list:
    """A runner(stop) per enabled platform; the adapters take `app.config` and `app.commands`."""
    return [lambda stop, run=getattr(adapter, f"run_{name}"): run(app, stop)
            for name, adapter in enabled_platforms(app.config)]
