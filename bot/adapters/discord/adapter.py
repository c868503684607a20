"""The Discord adapter: turns Discord messages and slash commands into `Commands.handle` calls and shows what
comes back. No model logic here: which channel a message belongs to, who is an admin, what the user said.

- DMs: every message is a turn. In a server, a channel or thread where `/char use` was run is a role-play channel:
  every member message there is a turn, spoken by the author's display name; elsewhere the bot answers only when
  mentioned. Each thread is its own conversation. Bots and webhooks (our own personas included) never speak.
- Admins: everyone in a DM; in a server, Manage Server or a role in `discord.admin_role_ids`.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import discord
import yarl
from discord import app_commands

from bot.adapters.discord.personas import NONE, Persona, Personas, can_send
from bot.adapters.discord.render import InteractionAnswer, PersonaWriter, describe, reply_to_message
from bot.adapters.discord.slash import Chinese, build_tree
from bot.adapters.discord.text import readable_text, t
from bot.commands import CharacterLine, Context, Reply, parse_command
from bot.commands.audit import succeeded
from bot.commands.base import first_arg
from bot.conversations import ChannelKey, TurnStream
from bot.i18n import normalize_lang
from bot.conversations.characters import MAX_IMPORT_BYTES

log = logging.getLogger(__name__)

PLATFORM = "discord"
CONVERSATION_MESSAGES = (discord.MessageType.default, discord.MessageType.reply)
FATAL = (discord.LoginFailure, discord.PrivilegedIntentsRequired)
CANCEL_WAIT = 3.0  # after cancelling replies at shutdown: time for their "(reply cancelled)" edits
QUICK_ANSWER = 1.0  # seconds a generic command may take before it is deferred (Discord's deadline is 3 s)


def channel_key(channel_id: int) -> ChannelKey:
    return ChannelKey(PLATFORM, str(channel_id))


def marks_roleplay(text: str) -> bool:
    """`/char use NAME` (or its shorthand `/char NAME`) makes a server channel a role-play channel."""
    parsed = parse_command(text)
    if parsed is None or parsed.name != "char":
        return False
    action, _ = first_arg(parsed.args)
    return action.lower() not in ("", "list", "show", "import")


def title_of(channel, guild, user) -> str:
    """"Server #channel" (a thread: its name), or the DM's person, as the admin page lists the channel."""
    if guild is None:
        return f"DM {user.display_name}"
    name = getattr(channel, "name", None)
    return f"{guild.name} #{name}" if name else guild.name


class _Client(discord.Client):
    def __init__(self, adapter: "DiscordAdapter"):
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: enable it in the developer portal (see the README's Discord section)
        super().__init__(intents=intents, allowed_mentions=NONE)
        self.adapter = adapter
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = adapter.on_command_error
        build_tree(self.tree, adapter)

    async def setup_hook(self) -> None:
        await self.adapter.sync_commands(self)

    async def on_ready(self) -> None:  # fires again after every re-IDENTIFY: only logs
        log.info("discord: connected as %s to %d server(s)", self.user, len(self.guilds))

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.on_message(message)


class DiscordAdapter:
    def __init__(self, app):
        self.app = app
        self.settings = app.config.discord
        self.personas = Personas()
        self.closing = False
        self.client = _Client(self)
        self._busy: set[asyncio.Task] = set()  # handlers still showing something
        self._streams: set[TurnStream] = set()
        self._arrivals: dict[ChannelKey, asyncio.Lock] = {}

    # ----- lifecycle ---------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Connect and serve until `stop` is set; then finish or cancel replies in progress and close."""
        apply_endpoints(self.settings)
        client_task = asyncio.create_task(self._connect(stop), name="discord-client")
        stop_task = asyncio.create_task(stop.wait())
        await asyncio.wait({client_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        await self.shutdown()
        client_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await client_task

    async def _connect(self, stop: asyncio.Event) -> None:
        """Log in and stay connected (discord.py resumes the gateway itself); retry while Discord is unreachable."""
        delay = 5.0
        while not stop.is_set():
            try:
                await self.client.start(self.settings.token)
                return
            except FATAL as exc:
                log.error("discord: %s; stopping (check discord.token and, in the developer portal, the Message "
                          "Content intent)", describe(exc))
                stop.set()
                return
            except (OSError, aiohttp.ClientError, discord.HTTPException, discord.GatewayNotFound,
                    asyncio.TimeoutError) as exc:
                log.warning("discord: cannot connect (%s); retrying in %.0f s", describe(exc), delay)
            await self.client.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 300.0)
            self.client = _Client(self)  # a closed client cannot log in again

    async def shutdown(self) -> None:
        """Stop taking messages, let replies in progress finish (cancel the slow ones), then close the client."""
        self.closing = True
        grace = min(10.0, self.app.config.limits.shutdown_seconds * 0.6)
        busy = {task for task in self._busy if not task.done()}
        if busy:
            _, busy = await asyncio.wait(busy, timeout=grace)
        if busy:
            log.info("discord: cancelling %d reply(ies) still generating at shutdown", len(self._streams))
            for stream in list(self._streams):
                stream.cancel()
            await asyncio.wait(busy, timeout=CANCEL_WAIT)
        await self.client.close()

    async def sync_commands(self, client: _Client) -> None:
        """Once per start (not in on_ready, which repeats after reconnects). A guild sync shows at once; a
        global one can take Discord up to an hour to reach every client."""
        await client.tree.set_translator(Chinese())
        guild = discord.Object(self.settings.dev_guild_id) if self.settings.dev_guild_id else None
        try:
            if guild:
                client.tree.copy_global_to(guild=guild)
            synced = await client.tree.sync(guild=guild)
        except discord.HTTPException as exc:
            log.warning("discord: slash commands not synced (%s); the previous set stays", describe(exc))
            return
        log.info("discord: %d slash commands synced %s", len(synced), f"to server {guild.id}" if guild else "globally")

    @contextlib.contextmanager
    def _tracked(self):
        task = asyncio.current_task()
        self._busy.add(task)
        try:
            yield
        finally:
            self._busy.discard(task)

    # ----- who, where ---------------------------------------------------------------------------------------
    def is_bot_admin(self, user) -> bool:
        """One of the bot's configured admins (discord.admin_ids anywhere; discord.admin_role_ids in a server)."""
        roles = {role.id for role in getattr(user, "roles", ())}
        return user.id in self.settings.admin_ids or bool(roles & set(self.settings.admin_role_ids))

    def is_admin(self, user, in_server: bool, permissions: discord.Permissions | None = None) -> bool:
        if not in_server or self.is_bot_admin(user):
            return True
        perms = permissions or getattr(user, "guild_permissions", None)
        if perms is not None and (perms.manage_guild or perms.administrator):
            return True
        roles = {role.id for role in getattr(user, "roles", ())}
        return bool(roles & set(self.settings.admin_role_ids))

    async def language(self, key: ChannelKey, locale) -> str:
        return await self.app.commands.lang_for(key, str(locale) if locale else None, self.app.config.ui.lang)

    def _arrival(self, key: ChannelKey) -> asyncio.Lock:
        return self._arrivals.setdefault(key, asyncio.Lock())

    async def _handle_in_order(self, ctx: Context, text: str) -> list:
        """`Commands.handle` queued on the channel in the order the messages arrived.

        Work before handle (settings, downloads) awaits, so two quick messages could overtake each other there;
        the arrival lock (FIFO) keeps that part in order, and the yield lets handle reach the channel's own queue
        (it does so without awaiting anything else) before the next message starts."""
        async with self._arrival(ctx.key):
            task = asyncio.create_task(self.app.commands.handle(ctx, text))
            await asyncio.sleep(0)
        return await task

    # ----- messages -----------------------------------------------------------------------------------------
    async def on_message(self, message: discord.Message) -> None:
        if self.closing or message.author.bot or message.webhook_id is not None:
            return  # bots and webhooks (our own personas too) never take a turn
        if message.type not in CONVERSATION_MESSAGES:
            return  # joins, pins, thread starters...
        with self._tracked():
            try:
                await self._on_message(message)
            except discord.HTTPException as exc:
                log.warning("channel %s: Discord refused the answer: %s", message.channel.id, describe(exc))

    async def _on_message(self, message: discord.Message) -> None:
        key = channel_key(message.channel.id)
        async with self._arrival(key):
            text = self._text_of(message)
            if not text or not await self._addressed(message, key):
                return
            if not self._may_answer(message):
                return
            lang = await self.language(key, message.guild.preferred_locale if message.guild else None)
            ctx = Context(key=key, user_id=str(message.author.id), user_name=message.author.display_name,
                          is_admin=self.is_admin(message.author, message.guild is not None), lang=lang,
                          is_group=message.guild is not None, attachment=await self._attachment_of(message, text),
                          is_bot_admin=self.is_bot_admin(message.author),
                          chat_title=title_of(message.channel, message.guild, message.author))
            task = asyncio.create_task(self.app.commands.handle(ctx, text))
            await asyncio.sleep(0)  # see _handle_in_order: queue on the channel before the next message
        outputs = await task
        if message.guild is not None and marks_roleplay(text) and succeeded(outputs):
            await self.app.conversations.set_setting(key, "roleplay", True)
        await self._show_for_message(message, outputs, lang)

    def _text_of(self, message: discord.Message) -> str:
        me = self.client.user
        guild = message.guild
        return readable_text(
            message.content, bot_id=me.id if me else 0,
            bot_role_id=guild.self_role.id if guild and guild.self_role else None,
            names={m.id: m.display_name for m in message.mentions},
            roles={r.id: r.name for r in message.role_mentions},
            channels={c.id: getattr(c, "name", "channel") for c in message.channel_mentions})

    def _mentions_me(self, message: discord.Message) -> bool:
        me = self.client.user
        if me is not None and any(user.id == me.id for user in message.mentions):
            return True
        role = message.guild.self_role if message.guild else None
        return role is not None and role in message.role_mentions

    async def _addressed(self, message: discord.Message, key: ChannelKey) -> bool:
        """DMs always; role-play channels always; elsewhere only when mentioned."""
        if message.guild is None or self._mentions_me(message):
            return True
        mode = await self.app.conversations.setting(key, "reply_mode")  # if a /replymode command set one
        if mode in ("all", "mention"):
            return mode == "all"
        return bool(await self.app.conversations.setting(key, "roleplay", False))

    def _may_answer(self, message: discord.Message) -> bool:
        if can_send(message.channel, message.guild.me if message.guild else None):
            return True
        log.info("channel %s: addressed, but the bot may not post there (Send Messages); ignored",
                 message.channel.id)
        return False

    async def _attachment_of(self, message: discord.Message, text: str) -> tuple[str, bytes] | None:
        """The first attachment, downloaded only for `/char import` typed with a file."""
        parsed = parse_command(text)
        if not message.attachments or parsed is None or parsed.name != "char":
            return None
        if first_arg(parsed.args)[0].lower() != "import":
            return None
        file = message.attachments[0]
        if file.size > MAX_IMPORT_BYTES:
            return None  # the command answers "attach a card"; the size is said by the slash version
        return file.filename, await file.read()

    async def _show_for_message(self, message: discord.Message, outputs: list, lang: str) -> None:
        for output in outputs:
            if isinstance(output, Reply):
                await reply_to_message(message, output)
            else:
                await self._speak(message.channel, output, lang, reference=message)

    async def _speak(self, channel, output, lang: str, *, reference=None, interaction=None) -> None:
        """A character's line (greeting) or streamed reply, under its persona."""
        persona = Persona(output.speaker, output.avatar)  # CharacterLine and TurnStream both carry these
        target = await self.personas.target(channel, persona, reference=reference, interaction=interaction)
        writer = PersonaWriter(target, lang)
        if isinstance(output, CharacterLine):
            await writer.say(output.text)
            return
        self._streams.add(output)
        try:
            await writer.stream(output, typing_in=channel if interaction is None else None)
        finally:
            self._streams.discard(output)

    # ----- slash commands -----------------------------------------------------------------------------------
    async def slash(self, interaction: discord.Interaction, text: str, *, ephemeral: bool = False,
                    admin: bool = False, attachment: discord.Attachment | None = None, roleplay: bool = False,
                    defer: bool = True) -> None:
        """One slash command: the permission check, the command layer, the answers.

        Typed commands wait on the engine, so they are deferred at once with the visibility their answer needs.
        A generic command's answer may be private or public, which Discord fixes at the defer, so it is answered
        directly when it comes quickly and deferred only when it does not."""
        key = channel_key(interaction.channel_id)
        in_server = interaction.guild_id is not None
        is_admin = self.is_admin(interaction.user, in_server, interaction.permissions)
        if self.closing or (admin and not is_admin):
            await self._refuse(interaction, key, "shutting_down" if self.closing else "not_admin")
            return
        answer = InteractionAnswer(interaction)
        if defer:
            await answer.defer(ephemeral)
        with self._tracked():
            lang = await self.language(key, interaction.locale or interaction.guild_locale)
            data = await self._download(attachment, answer, lang) if attachment else None
            if attachment and data is None:
                return
            ctx = Context(key=key, user_id=str(interaction.user.id), user_name=interaction.user.display_name,
                          is_admin=is_admin, lang=lang, is_group=in_server, attachment=data,
                          is_bot_admin=self.is_bot_admin(interaction.user),
                          chat_title=title_of(interaction.channel, interaction.guild, interaction.user))
            handling = asyncio.ensure_future(self._handle_in_order(ctx, text))
            if not defer and not (await asyncio.wait({handling}, timeout=QUICK_ANSWER))[0]:
                await answer.defer(ephemeral)
            outputs = await handling
            if roleplay and in_server and succeeded(outputs):
                await self.app.conversations.set_setting(key, "roleplay", True)
            await self._show_for_interaction(interaction, answer, outputs, lang)

    async def _refuse(self, interaction: discord.Interaction, key: ChannelKey, message_key: str) -> None:
        lang = await self.language(key, interaction.locale)
        log.info("channel %s: /%s refused for %s: %s", key, interaction.command.qualified_name
                 if interaction.command else "?", interaction.user.id, message_key)
        await interaction.response.send_message(t(message_key, lang), ephemeral=True)

    async def _download(self, attachment: discord.Attachment, answer: InteractionAnswer,
                        lang: str) -> tuple[str, bytes] | None:
        if attachment.size > MAX_IMPORT_BYTES:
            await answer.send(t("file_too_big", lang, size=attachment.size >> 20, limit=MAX_IMPORT_BYTES >> 20))
            return None
        try:
            return attachment.filename, await attachment.read()
        except (discord.HTTPException, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.info("attachment %s: download failed: %s", attachment.filename, describe(exc))
            await answer.send(t("download_failed", lang))
            return None

    async def _show_for_interaction(self, interaction: discord.Interaction, answer: InteractionAnswer,
                                    outputs: list, lang: str) -> None:
        channel = interaction.channel or self.client.get_partial_messageable(interaction.channel_id)
        for output in outputs:
            if isinstance(output, Reply):
                await answer.reply(output)
            else:
                await answer.release()  # the character's message replaces "thinking..."
                await self._speak(channel, output, lang, interaction=interaction)
        await answer.release()

    async def on_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Every failed or unknown command gets a clear private answer; handled problems are one log line."""
        name = interaction.command.qualified_name if interaction.command else (interaction.data or {}).get("name")
        lang = normalize_lang(str(interaction.locale), self.app.config.ui.lang)
        original = getattr(error, "original", None)
        if isinstance(error, app_commands.CommandNotFound):
            log.info("unknown command /%s (not in this bot's tree; Discord has an old command list)", error.name)
            text = t("unknown_command", lang, name=error.name[:32])
        elif isinstance(error, app_commands.CommandSignatureMismatch):
            log.info("/%s: Discord's copy of the command is out of date", name)
            text = t("commands_outdated", lang)
        elif isinstance(error, app_commands.TransformerError):
            log.info("/%s: bad option value %r", name, error.value)
            text = t("bad_option", lang, option=name)
        elif isinstance(original, discord.HTTPException):
            log.warning("/%s: Discord refused a call: %s", name, describe(original))
            text = t("command_failed", lang)
        else:
            log.error("/%s failed", name, exc_info=original or error)  # a bug: keep the traceback
            text = t("command_failed", lang)
        await self._tell_privately(interaction, text)

    async def _tell_privately(self, interaction: discord.Interaction, text: str) -> None:
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True, allowed_mentions=NONE)
            else:
                await interaction.response.send_message(text, ephemeral=True, allowed_mentions=NONE)
        except discord.HTTPException as exc:
            log.info("could not answer the failed command (%s)", describe(exc))


def apply_endpoints(settings) -> None:
    """`discord.api_base` / `discord.gateway_url`: a proxy or a test server instead of discord.com."""
    if settings.api_base:
        discord.http.Route.BASE = settings.api_base.rstrip("/")
    if settings.gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)


async def run_discord(app, stop: asyncio.Event) -> None:
    await DiscordAdapter(app).run(stop)
