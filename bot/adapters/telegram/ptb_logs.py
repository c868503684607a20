"""PTB logs some errors with a traceback before raising them to us: a 429 passed on by its rate limiter, an error
page from the Bot API that is not JSON (a 502 from Telegram's nginx), and any Bot API error of the start's
deleteWebhook / setWebhook (its retry loop, which we run with no retries). The adapter handles them all (it waits,
retries with backoff, or says in one line why Telegram stays off), so here they become one line at INFO: a
traceback in the log means a bug."""
from __future__ import annotations

import logging

from telegram.error import RetryAfter, TelegramError

# logger -> the errors it logs that the adapter handles. ValueError: the JSON decoder's, on an HTML error page;
# "telegram.ext" is PTB's network retry loop (the start's deleteWebhook / setWebhook), raised on to our _start.
LOGGERS = {"telegram.ext.AIORateLimiter": (RetryAfter, ValueError), "telegram.request.BaseRequest": (RetryAfter,
           ValueError), "telegram.ext": (TelegramError,)}
MAX_CHARS = 200


class HandledErrorInOneLine(logging.Filter):
    def __init__(self, handled: tuple[type[BaseException], ...]):
        super().__init__()
        self.handled = handled

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, self.handled):
            summary = " ".join(record.getMessage().split())[:MAX_CHARS]
            record.msg, record.args = "%s (handled: %s)", (summary, type(error).__name__)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def install() -> None:
    for name, handled in LOGGERS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, HandledErrorInOneLine) for f in logger.filters):
            logger.addFilter(HandledErrorInOneLine(handled))
