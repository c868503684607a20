"""Sending to Telegram: plain text only, retries with backoff, 429s honoured, and a pace for streaming edits.

Every call goes through `Sender.call`, which turns Telegram's answers into three outcomes: done, deferred (a
streaming edit that can simply be skipped: the next one carries newer text) and failed (Telegram refused: the bot
was removed or blocked, the chat or topic is gone). Callers log a failure once and stop writing to that chat; the
chat's conversation is never touched by a failed send.
"""
from __future__ import annotations

import asyncio
import datetime as dtm
import logging
import time
import warnings
from typing import Awaitable, Callable, TypeVar

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.warnings import PTBDeprecationWarning

from bot.adapters.painter import Gone, Skipped, Undeliverable
from bot.adapters.telegram.incoming import Target
from bot.adapters.telegram.text import MAX_CAPTION_CHARS, MAX_MESSAGE_CHARS
from bot.adapters.text import split_message

log = logging.getLogger(__name__)

T = TypeVar("T")

NETWORK_RETRIES = 5  # 0.5 + 1 + 2 + 4 + 8 s: rides out a short outage of the Bot API
RETRY_AFTER_RETRIES = 5
NO_PREVIEW = LinkPreviewOptions(is_disabled=True)  # model text with a URL in it should not grow a preview card


class DeliveryFailed(Undeliverable):
    """Telegram refused the call for good (bot removed or blocked, chat or message gone, bad request)."""


class DeliveryDeferred(Skipped):
    """An impatient call hit a rate limit or a network error; try again later with newer content."""


class MessageGone(DeliveryFailed, Gone):
    """The message to edit no longer exists (deleted by someone)."""


def brief(error: Exception, limit: int = 200) -> str:
    """An error on one short line: a 502's message quotes the whole HTML page."""
    return " ".join(str(error).split())[:limit] or type(error).__name__


def retry_after_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns that the type becomes timedelta; accept both
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


def keyboard(buttons) -> InlineKeyboardMarkup | None:
    """One row of inline buttons (bot.commands.Button), or None."""
    if not buttons:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(b.label, callback_data=b.data) for b in buttons]])


class Pacer:
    """Seconds a streaming message waits between edits.

    At least `edit_interval`; longer when many replies stream at once, so that together they use at most half of
    the request budget (the rest is for new messages); and, for a while after Telegram answered 429, at least
    the time it asked for, doubled on each further 429."""

    EDIT_SHARE = 0.5
    PENALTY_SECONDS = 30.0  # how long a 429 keeps the pace slow
    MAX_INTERVAL = 30.0

    def __init__(self, edit_interval: float, requests_per_second: float):
        self.edit_interval = edit_interval
        self.requests_per_second = requests_per_second
        self.streaming = 0  # replies being streamed now
        self._penalty = 0.0
        self._penalty_until = 0.0

    def interval(self) -> float:
        pace = self.edit_interval
        if self.requests_per_second:
            pace = max(pace, self.streaming / (self.requests_per_second * self.EDIT_SHARE))
        if time.monotonic() < self._penalty_until:
            pace = max(pace, self._penalty)
        return min(pace, self.MAX_INTERVAL)

    def slow_down(self, retry_after: float) -> None:
        penalised = time.monotonic() < self._penalty_until
        self._penalty = min(self.MAX_INTERVAL, max(retry_after, self._penalty * 2 if penalised else self.edit_interval * 2))
        self._penalty_until = time.monotonic() + self.PENALTY_SECONDS


class Sender:
    def __init__(self, bot: Bot, pacer: Pacer, *, message_limit: int = MAX_MESSAGE_CHARS):
        self.bot = bot
        self.pacer = pacer
        self.message_limit = message_limit

    async def call(self, what: str, request: Callable[[], Awaitable[T]], *, patient: bool = True) -> T | None:
        """Run `request`; None when Telegram says an edit changed nothing. Patient calls wait out 429s and retry
        network errors and 5xx with backoff; impatient ones raise DeliveryDeferred instead."""
        network_failures = rate_limits = 0
        while True:
            try:
                return await request()
            except RetryAfter as exc:
                wait = retry_after_seconds(exc)
                self.pacer.slow_down(wait)
                rate_limits += 1
                if not patient:
                    raise DeliveryDeferred(f"{what}: rate limited for {wait:g}s") from None
                if rate_limits > RETRY_AFTER_RETRIES:
                    raise DeliveryFailed(f"{what}: still rate limited after {rate_limits} waits") from None
                log.info("telegram: %s rate limited; retrying in %gs as asked", what, wait)
                await asyncio.sleep(wait + 0.1)
            except BadRequest as exc:  # a NetworkError subclass in PTB: test it first
                text = str(exc).lower()
                if "not modified" in text:
                    return None
                if "message to edit not found" in text:
                    raise MessageGone(f"{what}: {exc}") from None
                raise DeliveryFailed(f"{what}: {exc}") from None
            except (Forbidden, ChatMigrated) as exc:
                raise DeliveryFailed(f"{what}: {exc}") from None
            except NetworkError as exc:  # connection errors, timeouts and 5xx
                network_failures += 1
                if not patient:
                    raise DeliveryDeferred(f"{what}: {brief(exc)}") from None
                if network_failures > NETWORK_RETRIES:
                    raise DeliveryFailed(f"{what}: {brief(exc)} (after {NETWORK_RETRIES} retries)") from None
                delay = 0.5 * 2 ** (network_failures - 1)
                log.info("telegram: %s failed (%s); retrying in %gs", what, brief(exc), delay)
                await asyncio.sleep(delay)
            except TelegramError as exc:
                raise DeliveryFailed(f"{what}: {exc}") from None

    # ----- the calls the adapter makes ---------------------------------------------------------------------
    async def send_text(self, target: Target, text: str, *, quote: bool = True, patient: bool = True,
                        buttons=()) -> int:
        """Send one message (at most the limit, not blank), with a row of `buttons` under it; returns its id."""
        reply = (ReplyParameters(target.quote_id, allow_sending_without_reply=True)
                 if quote and target.quote_id else None)
        message = await self.call("sendMessage", lambda: self.bot.send_message(
            target.chat_id, text, message_thread_id=target.thread_id, reply_parameters=reply,
            link_preview_options=NO_PREVIEW, reply_markup=keyboard(buttons)), patient=patient)
        return message.message_id

    async def edit_text(self, target: Target, message_id: int, text: str, *, patient: bool, buttons=()) -> None:
        """Without `buttons` the message's inline keyboard goes away."""
        await self.call("editMessageText", lambda: self.bot.edit_message_text(
            text, chat_id=target.chat_id, message_id=message_id, link_preview_options=NO_PREVIEW,
            reply_markup=keyboard(buttons)), patient=patient)

    async def answer_press(self, query_id: str, text: str = "") -> None:
        """Answer a button press (at once: the button shows a spinner until then); `text` shows to the presser
        alone."""
        await self.call("answerCallbackQuery", lambda: self.bot.answer_callback_query(
            query_id, text=text or None, show_alert=bool(text)), patient=False)

    async def delete(self, target: Target, message_id: int) -> None:
        await self.call("deleteMessage", lambda: self.bot.delete_message(target.chat_id, message_id))

    async def typing(self, target: Target) -> None:
        await self.call("sendChatAction", lambda: self.bot.send_chat_action(
            target.chat_id, ChatAction.TYPING, message_thread_id=target.thread_id), patient=False)

    async def send_long(self, target: Target, text: str) -> list[int]:
        """Text of any length as one or more messages; only the first quotes the user's message."""
        return [await self.send_text(target, piece, quote=index == 0)
                for index, piece in enumerate(split_message(text, self.message_limit))]

    async def send_file(self, target: Target, name: str, data: bytes, text: str) -> None:
        """A document; the text becomes its caption when it fits, else it goes first as messages."""
        caption = text.strip()
        if len(caption) > MAX_CAPTION_CHARS:
            await self.send_long(target, caption)
            caption = ""
        reply = ReplyParameters(target.quote_id, allow_sending_without_reply=True) if target.quote_id else None
        await self.call("sendDocument", lambda: self.bot.send_document(
            target.chat_id, document=data, filename=name, caption=caption or None,
            message_thread_id=target.thread_id, reply_parameters=reply))
