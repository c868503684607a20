"""Discord: slash commands, role-play channels, character personas by webhook, streamed replies.

`run_discord(app, stop)` is what `bot.app.serve` starts when `discord.token` is set.
"""
from bot.adapters.discord.adapter import DiscordAdapter, run_discord

__all__ = ["DiscordAdapter", "run_discord"]
