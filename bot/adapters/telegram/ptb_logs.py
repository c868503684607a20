"""PTB logs two kinds of errors with a traceback before raising them to us: a 429 passed on by its rate limiter,
and an error page from the Bot API that is not JSON (a 502 from Telegram's nginx). The adapter handles both (it
waits, or retries with backoff), so here they become one line at INFO: a traceback in the log means a bug."""
from __future__ import annotations

import logging

from telegram.error import RetryAfter

LOGGERS = ("telegram.ext.AIORateLimiter", "telegram.request.BaseRequest")
MAX_CHARS = 200


class HandledErrorInOneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (RetryAfter, ValueError)):  # ValueError: the JSON decoder's, on an HTML error page
            summary = " ".join(record.getMessage().split())[:MAX_CHARS]
            record.msg, record.args = "%s (handled: %s)", (summary, type(error).__name__)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def install() -> None:
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, HandledErrorInOneLine) for f in logger.filters):
            logger.addFilter(HandledErrorInOneLine())
