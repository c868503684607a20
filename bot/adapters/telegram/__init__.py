"""Telegram: python-telegram-bot 22, long polling, streamed replies. `run_telegram(app, stop)` is the entry point."""
from bot.adapters.telegram.adapter import TelegramAdapter, run_telegram

__all__ = ["TelegramAdapter", "run_telegram"]
