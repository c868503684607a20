"""Platform-neutral command handlers; importing this package registers them all."""
from bot.commands import admin, chat, power, replymode  # noqa: F401  (registers commands)
from bot.commands.base import CharacterLine, Context, Reply, parse_command
from bot.commands.dispatch import Commands

__all__ = ["CharacterLine", "Commands", "Context", "Reply", "parse_command"]
