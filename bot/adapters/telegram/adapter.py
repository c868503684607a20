"""The Telegram adapter: a python-telegram-bot 22 `Application` polling for updates (or, with `[telegram]
webhook_url`, receiving them on PTB's webhook server), one channel per private chat, group and forum topic, replies
streamed by editing messages.

Adapters hold no model logic: a message becomes an `Incoming` for `Commands.handle`, and the answer's outputs are
shown. PTB hands each update to `_on_message`, which only reads it and starts a task; so one slow chat never
holds up another, and PTB's own dispatch can stay sequential, which keeps each chat's arrival order exact.
"""
from __future__ import annotations

import asyncio
import logging
import re
from urllib.parse import urlsplit

from telegram import BotCommand, BotCommandScopeAllGroupChats, ChatMember, Update
from telegram.error import BadRequest, InvalidToken, TelegramError
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder, BaseHandler, CallbackQueryHandler, \
    ChatMemberHandler, ContextTypes, MessageHandler, filters

from bot.adapters.painter import Painter
from bot.adapters.telegram import ptb_logs
from bot.adapters.telegram.admins import AdminCheck
from bot.adapters.telegram.incoming import TelegramMessage, Target, read_message
from bot.adapters.telegram.outgoing import DeliveryDeferred, DeliveryFailed, Pacer, Sender, brief
from bot.adapters.telegram.presses import read_press
from bot.adapters.telegram.surface import TelegramSurface
from bot.adapters.telegram.text import MAX_MESSAGE_CHARS
from bot.commands import (DOWNLOAD_FAILED, GROUP, PRIVATE, TOO_BIG, Answer, Arrival, Attachment, AttachmentProblem,
                          CharacterLine, Output, Reply, ReplyShown, ReplyStream, Retract)
from bot.i18n import t
from bot.libraries import import_optional

log = logging.getLogger(__name__)
ptb_logs.install()

COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")  # what setMyCommands accepts
MAX_MENU_COMMANDS = 100
MENU_LANGUAGES = (("en", None), ("zh", "zh"))  # (our language, Telegram language_code; None = everyone else)
# (where, the menu's scope): private chats get the default menu, groups their own (with /replymode).
MENU_SCOPES = ((PRIVATE, None), (GROUP, BotCommandScopeAllGroupChats()))
START_RETRY_MAX = 60.0
CUT_OFF_SECONDS = 5.0  # after the shutdown wait: time for cut-off replies to say so
# Bot API timeouts (s). The pool wait is long: under load a request waiting for a free connection is better than
# one that fails.
CONNECT_TIMEOUT, READ_TIMEOUT, WRITE_TIMEOUT, POOL_TIMEOUT = 10.0, 10.0, 20.0, 30.0
UPDATE_TYPES = [Update.MESSAGE, Update.EDITED_MESSAGE, Update.MY_CHAT_MEMBER, Update.CALLBACK_QUERY]
# Telegram's connections at once to the webhook (its default); fronts behind a load balancer share them.
WEBHOOK_MAX_CONNECTIONS = 40
WEBHOOK_LIBRARY = "telegram.webhook_url (python-telegram-bot[webhooks])"


class TelegramAdapter:
    def __init__(self, app, *, message_limit: int = MAX_MESSAGE_CHARS):
        self.commands = app.commands
        self.config = app.config
        self.settings = app.config.telegram
        if self.settings.webhook_url:  # PTB's webhook server is tornado's, an optional part of PTB
            import_optional("tornado", WEBHOOK_LIBRARY)
        self.pacer = Pacer(self.settings.edit_interval, self.settings.requests_per_second)
        self.application = self._build_application()
        self.sender = Sender(self.application.bot, self.pacer, message_limit=message_limit)
        self.admins = AdminCheck(self.application.bot, self.settings.admin_ids)
        self.ready = asyncio.Event()  # polling, or the webhook server, has started
        self.messages_done = 0  # messages fully handled: answered (reply final), refused or ignored
        self.bot_id = 0
        self.bot_username = ""
        self._tasks: set[asyncio.Task] = set()
        self._streams: set[ReplyStream] = set()
        self._cutting_off = False

    # ----- set-up -----------------------------------------------------------------------------------------
    def _build_application(self) -> Application:
        s = self.settings
        # 429s reach our Sender (max_retries=0), which waits them out and slows streaming edits down.
        limiter = AIORateLimiter(overall_max_rate=s.requests_per_second, group_max_rate=s.group_requests_per_minute,
                                 max_retries=0)
        builder = (ApplicationBuilder().token(s.token).rate_limiter(limiter)
                   .concurrent_updates(False)  # our handler returns at once; the work runs in our own tasks
                   .connection_pool_size(s.connections).pool_timeout(POOL_TIMEOUT).connect_timeout(CONNECT_TIMEOUT)
                   .read_timeout(READ_TIMEOUT).write_timeout(WRITE_TIMEOUT))
        if s.base_url:
            builder = builder.base_url(s.base_url).base_file_url(s.base_file_url or file_url_for(s.base_url))
        elif s.base_file_url:
            builder = builder.base_file_url(s.base_file_url)
        application = builder.build()
        for handler in self._handlers():
            application.add_handler(handler)
        application.add_error_handler(self._on_error)
        return application

    def _handlers(self) -> list[BaseHandler]:
        """What the bot reacts to. Commands are not separate handlers: the command layer parses every text."""
        return [
            MessageHandler(filters.UpdateType.MESSAGE & (filters.TEXT | filters.CAPTION), self._on_message),
            MessageHandler(filters.UpdateType.EDITED_MESSAGE & (filters.TEXT | filters.CAPTION), self._on_edit),
            ChatMemberHandler(self._on_membership, ChatMemberHandler.MY_CHAT_MEMBER),
            CallbackQueryHandler(self._on_press),
        ]

    # ----- running ----------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Receive updates until `stop` is set, then stop receiving (polling or the webhook server), finish the
        replies in progress and close."""
        if not await self._start(stop):
            return
        try:
            await stop.wait()
        finally:
            await self._stop()

    async def _start(self, stop: asyncio.Event) -> bool:
        """Start receiving; while the Bot API cannot be reached, try again with backoff until `stop`."""
        delay = 1.0
        while not stop.is_set():
            starting = asyncio.create_task(self._start_receiving())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not starting.done():
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
                break
            problem = starting.exception()
            if problem is None:
                return True
            if isinstance(problem, InvalidToken):
                log.error("telegram: the Bot API refused the token (telegram.token); Telegram stays off")
                await self._close_quietly()
                return False
            if isinstance(problem, BadRequest) and self.settings.webhook_url:  # setWebhook: trying again won't help
                log.error("telegram: Telegram refused the webhook %s (%s); Telegram stays off",
                          self.settings.webhook_url, brief(problem))
                await self._close_quietly()
                return False
            if isinstance(problem, OSError):  # the webhook server's port: taken, or not ours to bind
                log.error("telegram: the webhook server cannot listen on %s:%s (%s); Telegram stays off",
                          self.settings.webhook_listen, self.settings.webhook_port, problem.strerror or problem)
                await self._close_quietly()
                return False
            if not isinstance(problem, TelegramError):
                await self._close_quietly()
                raise problem
            log.warning("telegram: cannot start (%s: %s); retrying in %gs", type(problem).__name__, brief(problem),
                        delay)
            await self._close_quietly()
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(START_RETRY_MAX, delay * 2)
        await self._close_quietly()
        return False

    async def _start_receiving(self) -> None:
        await self.application.initialize()  # getMe
        self.bot_id, self.bot_username = self.application.bot.id, self.application.bot.username
        await self._publish_commands()
        await self.application.start()
        s = self.settings
        if s.webhook_url:
            # setWebhook, then PTB's server: it refuses (403) a request without Telegram's secret header. Stopping
            # leaves the webhook set: other fronts behind the same URL go on receiving.
            await self.application.updater.start_webhook(
                listen=s.webhook_listen, port=s.webhook_port, url_path=webhook_path(s.webhook_url, s.webhook_path),
                webhook_url=s.webhook_url, secret_token=s.webhook_secret, allowed_updates=UPDATE_TYPES,
                max_connections=WEBHOOK_MAX_CONNECTIONS)
            self.ready.set()
            log.info("telegram: @%s receives updates on its webhook (listening on %s:%s)", self.bot_username,
                     s.webhook_listen, s.webhook_port)
            return
        await self.application.updater.start_polling(allowed_updates=UPDATE_TYPES,
                                                     error_callback=self._on_polling_error)
        self.ready.set()
        log.info("telegram: @%s is polling for updates", self.bot_username)

    async def _stop(self) -> None:
        await self._close_quietly(stop_polling_only=True)
        await self._finish_replies(self.config.limits.shutdown_seconds)
        await self._close_quietly()
        log.info("telegram: stopped")

    async def _close_quietly(self, *, stop_polling_only: bool = False) -> None:
        """Undo whatever part of the start happened; a platform error here is one log line."""
        try:
            if self.application.updater.running:
                await self.application.updater.stop()
            if self.application.running:
                await self.application.stop()  # dispatches updates already fetched (each starts a task)
            if not stop_polling_only:
                await self.application.shutdown()
        except (TelegramError, RuntimeError) as exc:
            log.warning("telegram: while stopping: %s: %s", type(exc).__name__, exc)

    async def _finish_replies(self, timeout: float) -> None:
        """Let replies in progress finish within `timeout`; cut off the rest (their channels stay unchanged)."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        if not pending:
            return
        log.info("telegram: %d message(s) still in progress at shutdown; cutting their replies off", len(pending))
        self._cutting_off = True
        for stream in list(self._streams):
            stream.cancel()
        _, pending = await asyncio.wait(pending, timeout=CUT_OFF_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _publish_commands(self) -> None:
        """The command menus: English by default, Chinese for users whose Telegram is in Chinese; private chats
        and groups each get the commands offered there."""
        for lang, language_code in MENU_LANGUAGES:
            for place, scope in MENU_SCOPES:
                menu = [BotCommand(spec.name, describe_command(spec, lang)) for spec in self.commands.commands(place)
                        if COMMAND_NAME.fullmatch(spec.name)][:MAX_MENU_COMMANDS]
                try:
                    await self.sender.call("setMyCommands", lambda: self.application.bot.set_my_commands(
                        menu, scope=scope, language_code=language_code))
                except DeliveryFailed as exc:  # the bot works without a menu
                    log.warning("telegram: command menu (%s, %s) not set: %s", lang, place, exc)

    # ----- updates ----------------------------------------------------------------------------------------
    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = read_message(update.message, self.bot_id, self.bot_username)
        if message is None:
            self.messages_done += 1
            return
        # The owner's configured ids are the bot's admins (the shared library); an anonymous group admin is not.
        message.incoming.is_bot_admin = not message.sent_as_chat and message.user_id in self.admins.admin_ids
        arrival = self.commands.arrive(message.incoming)  # before any await: arrival order, flood control
        task = asyncio.create_task(self._serve(message, arrival))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        read = read_press(query)
        if read is None:
            task = asyncio.create_task(self._answer_press(query.id, ""))
        else:
            message, into = read
            message.incoming.is_bot_admin = message.user_id in self.admins.admin_ids
            arrival = self.commands.arrive(message.incoming)
            task = asyncio.create_task(self._serve_press(query.id, message, into, arrival))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_press(self, query_id: str, message: TelegramMessage, into: int, arrival: Arrival) -> None:
        """A button: answered as soon as the command layer has decided (a refusal is the answer's text), then
        the swipe painted into the message the button is on."""
        try:
            answer = await self._answer(message, arrival)
            refusal = next((o.text for o in answer.outputs if isinstance(o, Reply)), "")
            await self._answer_press(query_id, refusal)
            for output in answer.outputs:
                if isinstance(output, ReplyStream):
                    await self._render_stream(output, message, answer.lang, into=into)
        except Exception:
            log.exception("telegram chat %s: failed to handle a button", message.target.chat_id)
        finally:
            arrival.placed()
            self.messages_done += 1

    async def _answer_press(self, query_id: str, text: str) -> None:
        try:
            await self.sender.answer_press(query_id, text)
        except (DeliveryFailed, DeliveryDeferred) as exc:  # the spinner stops by itself after a while
            log.info("telegram: a button press was not answered: %s", exc)

    async def _on_edit(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A user edited a message: the history follows (bot.commands.rewrites); a regenerated reply is painted
        into the bot's messages that showed the old one."""
        message = read_message(update.edited_message, self.bot_id, self.bot_username)
        if message is None:
            return
        message.incoming.is_bot_admin = not message.sent_as_chat and message.user_id in self.admins.admin_ids
        arrival = self.commands.arrive(message.incoming)  # before any await: after the messages sent before it
        task = asyncio.create_task(self._serve(message, arrival, edit=True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, message: TelegramMessage, arrival: Arrival, *, edit: bool = False) -> None:
        """One message, from arrival to its final reply. Handled problems are one log line; a traceback is a bug."""
        try:
            answer = (await self.commands.edited(message.incoming, arrival) if edit
                      else await self._answer(message, arrival))
            for output in answer.outputs:
                await self._render(output, message, answer.lang)
        except DeliveryFailed as exc:
            log.warning("telegram chat %s: answer not delivered: %s (the conversation is kept)",
                        message.target.chat_id, exc)
        except Exception:
            log.exception("telegram chat %s: failed to handle a message", message.target.chat_id)
        finally:
            arrival.placed()
            self.messages_done += 1

    async def _answer(self, message: TelegramMessage, arrival: Arrival) -> Answer:
        """What Telegram must be asked first (only what the arrival says matters), then the command layer."""
        incoming = message.incoming
        if arrival.needs_admin:
            incoming.is_admin = await self.admins.is_admin(message)
        if arrival.wants_attachment:  # an admin's /char import: non-admins' files are never downloaded
            await self._fetch_card(message)
        return await self.commands.handle(incoming, arrival)

    async def _fetch_card(self, message: TelegramMessage) -> None:
        """The document for /char import, or why it could not be had. Sizes are checked before the download,
        from what Telegram says about the file, and again after it."""
        document, incoming = message.document, message.incoming
        if document is None:
            return  # the command layer asks for a file
        limit = self.settings.max_card_bytes
        if document.file_size and document.file_size > limit:
            incoming.attachment_problem = AttachmentProblem(TOO_BIG, document.file_size, limit)
            return
        try:
            file = await self.sender.call("getFile", document.get_file)
            data = bytes(await self.sender.call("download", file.download_as_bytearray))
        except DeliveryFailed as exc:
            log.warning("telegram chat %s: card download failed: %s", message.target.chat_id, exc)
            incoming.attachment_problem = AttachmentProblem(DOWNLOAD_FAILED)
            return
        if len(data) > limit:
            incoming.attachment_problem = AttachmentProblem(TOO_BIG, len(data), limit)
            return
        incoming.attachment = Attachment(document.file_name or "card", data)

    async def _render(self, output: Output, message: TelegramMessage, lang: str) -> None:
        target = message.target
        if isinstance(output, ReplyStream):
            await self._render_stream(output, message, lang)
        elif isinstance(output, Retract):
            for message_id in output.message_ids:
                await self.sender.delete(target, int(message_id))
        elif isinstance(output, Reply) and output.private and target.is_group:
            await self._send_privately(message, output, lang)
        elif isinstance(output, Reply):
            await self._send_reply(target, output)
        elif isinstance(output, CharacterLine):
            await Painter(TelegramSurface(self.sender, target, output.speaker if output.named else ""),
                          lang).say(output.text)

    async def _send_reply(self, target: Target, reply: Reply) -> None:
        if reply.file:
            await self.sender.send_file(target, reply.file[0], reply.file[1], reply.text)
        else:
            await self.sender.send_long(target, reply.text)

    async def _send_privately(self, message: TelegramMessage, reply: Reply, lang: str) -> None:
        """An answer for the sender's eyes only (a sign-in link), in their private chat with the bot; where Telegram
        will not deliver it there (they never started the bot), the group hears only that."""
        try:
            await self._send_reply(Target(message.user_id, None, None, False), reply)
        except DeliveryFailed as exc:
            log.info("telegram chat %s: a private answer could not go to the sender (%s)", message.target.chat_id,
                     exc)
            await self.sender.send_long(message.target, t("private_undeliverable", lang))

    async def _render_stream(self, stream: ReplyStream, message: TelegramMessage, lang: str,
                             into: int | None = None) -> None:
        self._streams.add(stream)
        if self._cutting_off:  # a turn that got its start during the shutdown's cut-off
            stream.cancel()
        painter = Painter(TelegramSurface(self.sender, message.target, stream.speaker if stream.named else ""),
                          lang, into=into)
        painter.reuse([int(message_id) for message_id in stream.into])
        try:
            final = await painter.paint(stream)
        finally:
            self._streams.discard(stream)
        # An edit or delete of these finds the reply. A swipe (`into`) repaints only the pressed message: the
        # turn keeps the messages reported when it was first shown.
        if final.position and into is None and not painter.undeliverable:
            await self.commands.shown(ReplyShown(message.incoming.platform, message.incoming.channel_id,
                                                 final.position, [str(m) for m in painter.message_handles()]))

    async def _on_membership(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        change = update.my_chat_member
        status = change.new_chat_member.status
        if status in (ChatMember.LEFT, ChatMember.BANNED):
            log.info("telegram chat %s: the bot was removed (%s); its conversation is kept", change.chat.id, status)
        else:
            log.info("telegram chat %s: the bot is now %s", change.chat.id, status)

    # ----- errors -----------------------------------------------------------------------------------------
    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        error = context.error
        if isinstance(error, TelegramError):
            log.warning("telegram: %s: %s", type(error).__name__, brief(error))
        else:
            log.error("telegram: error while handling an update", exc_info=error)

    def _on_polling_error(self, error: TelegramError) -> None:
        # PTB retries polling itself, waiting longer after each failure (up to 30 s).
        log.warning("telegram: polling for updates failed (%s: %s); retrying", type(error).__name__, brief(error))


async def run_telegram(app, stop: asyncio.Event) -> None:
    """Serve Telegram for `app` until `stop` is set (SIGTERM/SIGINT in `bot.app.serve`)."""
    await TelegramAdapter(app).run(stop)


def describe_command(spec, lang: str) -> str:
    try:
        text = t(spec.help_key, lang)
    except KeyError:
        text = ""
    return (text.strip() or spec.name)[:256]


def webhook_path(webhook_url: str, path: str) -> str:
    """The path PTB's webhook server answers on: the one configured, else the public URL's own (what a reverse
    proxy that passes the path on forwards)."""
    return "/" + (path or urlsplit(webhook_url).path).lstrip("/")


def file_url_for(base_url: str) -> str:
    """The file URL of a Bot API server given as `.../bot` (as Telegram's own and self-hosted servers lay out)."""
    root = base_url.rstrip("/")
    return root[: -len("bot")] + "file/bot" if root.endswith("/bot") else root + "/file/bot"
