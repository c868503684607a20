"""Telegram: python-telegram-bot 22, long polling, streamed replies. `run_telegram(app, stop)` is the entry point.

Importing this package also registers the Telegram-only command /replymode with the command layer.
"""
from bot.adapters.telegram import replymode  # noqa: F401  (registers /replymode)
from bot.adapters.telegram.adapter import TelegramAdapter, run_telegram

__all__ = ["TelegramAdapter", "run_telegram"]
