"""Logging: one line per event on stderr, the channel of the turn on every line, secrets never written.

The channel is a context variable set where a message enters (`Commands.handle`); asyncio tasks copy the context,
so every line logged while serving that message (engine, database, adapter) carries it.
"""
from __future__ import annotations

import contextvars
import logging
import sys

current_channel: contextvars.ContextVar[str] = contextvars.ContextVar("current_channel", default="-")


class _ChannelAndSecrets(logging.Filter):
    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        record.channel = current_channel.get()
        if self.secrets:
            message = record.getMessage()
            if any(s in message for s in self.secrets):
                record.msg, record.args = self._redact(message), ()
            if record.exc_info and not record.exc_text:  # tracebacks quote URLs with tokens in them
                record.exc_text = self._redact(_FORMATTER.formatException(record.exc_info))
        return True

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return text


_FORMATTER = logging.Formatter()


def setup_logging(level: int = logging.INFO, secrets: list[str] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(channel)s] %(message)s"))
    handler.addFilter(_ChannelAndSecrets(secrets or []))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that log request URLs at INFO (httpx writes the Telegram token in them) stay at WARNING.
    for noisy in ("httpx", "httpcore", "aiosqlite", "alembic", "discord.gateway", "discord.client", "discord.http",
                  "telegram.ext.Updater", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
