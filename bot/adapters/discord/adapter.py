"""The Discord adapter: turns Discord messages and slash commands into `Incoming`s for `Commands.handle` and shows
the answers. No model logic here: which channel a message belongs to, who is an admin, what the user said.

- DMs: every message is a turn. In a server the command layer decides from the channel's reply mode: in a
  role-play channel (`/replymode all`, or where an admin picked a character with `/char use`) every member message
  is a turn, spoken by the author's display name; elsewhere the bot answers mentions and its typed commands. Each
  thread is its own conversation. Bots and webhooks (our own personas included) never speak.
- Admins: everyone in a DM; in a server, Manage Server or a role in `discord.admin_role_ids`.
- Shards: with `discord.shard_count` the client is discord.py's AutoShardedClient connecting `discord.shard_ids`
  (all when empty); several processes each take some shards, Discord sends a server's events to shard
  (server id >> 22) % shard_count and DMs to shard 0.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import discord
import yarl
from discord import app_commands

from bot.adapters.discord.buttons import PressedMessage, read_press
from bot.adapters.discord.personas import NONE, Persona, Personas, bold_speaker, can_send
from bot.adapters.discord.rewrites import posted, retract
from bot.adapters.discord.render import DiscordSurface, InteractionAnswer, describe, reply_to_message, send_to
from bot.adapters.discord.slash import Chinese, build_tree
from bot.adapters.discord.text import readable_text, t
from bot.adapters.painter import Painter
from bot.commands import (DOWNLOAD_FAILED, MAX_ATTACHMENT_BYTES, TOO_BIG, Answer, Attachment, AttachmentProblem,
                          CharacterLine, Incoming, MessageGone, Reply, ReplyShown, ReplyStream, Retract,
                          names_a_command)
from bot.i18n import normalize_lang

log = logging.getLogger(__name__)

PLATFORM = "discord"
CONVERSATION_MESSAGES = (discord.MessageType.default, discord.MessageType.reply)
FATAL = (discord.LoginFailure, discord.PrivilegedIntentsRequired)
CANCEL_WAIT = 3.0  # after cancelling replies at shutdown: time for their "(reply cancelled)" edits
QUICK_ANSWER = 1.0  # seconds a generic command may take before it is deferred (Discord's deadline is 3 s)


def title_of(channel, guild, user) -> str:
    """"Server #channel" (a thread: its name), or the DM's person, as the admin page lists the channel."""
    if guild is None:
        return f"DM {user.display_name}"
    name = getattr(channel, "name", None)
    return f"{guild.name} #{name}" if name else guild.name


class _Events:
    """What the bot listens to, the same for the plain client and the sharded one."""

    def __init__(self, adapter: "DiscordAdapter", **options):
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: enable it in the developer portal (see the README's Discord section)
        super().__init__(intents=intents, allowed_mentions=NONE, **options)
        self.adapter = adapter
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = adapter.on_command_error
        build_tree(self.tree, adapter)

    async def setup_hook(self) -> None:
        await self.adapter.sync_commands(self)

    async def on_ready(self) -> None:  # fires again after every re-IDENTIFY: only logs
        shards = self.adapter.shards_served()
        log.info("discord: connected as %s to %d server(s)%s", self.user, len(self.guilds),
                 f" (shards {', '.join(map(str, shards))} of {self.adapter.settings.shard_count})" if shards else "")

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.on_message(message)

    async def on_interaction(self, interaction: discord.Interaction) -> None:  # slash commands go to the tree
        await self.adapter.on_press(interaction)

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        await self.adapter.on_edit(payload.message)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await self.adapter.on_delete(payload.channel_id, payload.message_id)


class _Client(_Events, discord.Client):
    pass


class _ShardedClient(_Events, discord.AutoShardedClient):
    pass


def make_client(adapter: "DiscordAdapter") -> discord.Client:
    """The plain client, or with `discord.shard_count` the sharded one for this process's shards."""
    settings = adapter.settings
    if not settings.shard_count:
        return _Client(adapter)
    return _ShardedClient(adapter, shard_count=settings.shard_count, shard_ids=settings.shard_ids or None)


class DiscordAdapter:
    def __init__(self, app):
        self.commands = app.commands
        self.config = app.config
        self.settings = app.config.discord
        self.personas = Personas()
        self.closing = False
        self.client = make_client(self)
        self._busy: set[asyncio.Task] = set()  # handlers still showing something
        self._streams: set[ReplyStream] = set()

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
        """Log in and stay connected (discord.py resumes the gateway itself); retry while Discord is unreachable.
        Whatever else ends the client stops the whole process with one log line: a bot whose Discord side died
        must not run on as if it served."""
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
            except Exception as exc:
                log.error("discord: the client failed (%s); stopping", describe(exc))
                stop.set()
                return
            await self.client.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 300.0)
            self.client = make_client(self)  # a closed client cannot log in again

    async def shutdown(self) -> None:
        """Stop taking messages, let replies in progress finish (cancel the slow ones), then close the client."""
        self.closing = True
        grace = min(10.0, self.config.limits.shutdown_seconds * 0.6)
        busy = {task for task in self._busy if not task.done()}
        if busy:
            _, busy = await asyncio.wait(busy, timeout=grace)
        if busy:
            log.info("discord: cancelling %d reply(ies) still generating at shutdown", len(self._streams))
            for stream in list(self._streams):
                stream.cancel()
            await asyncio.wait(busy, timeout=CANCEL_WAIT)
        await self.client.close()

    def shards_served(self) -> list[int]:
        """The shards this process connects ([] = not sharded)."""
        count = self.settings.shard_count
        return (self.settings.shard_ids or list(range(count))) if count else []

    async def sync_commands(self, client: discord.Client) -> None:
        """Once per start (not in on_ready, which repeats after reconnects). A guild sync shows at once; a
        global one can take Discord up to an hour to reach every client. Of several sharded processes only the
        one with shard 0 syncs: the commands are the bot's, not a shard's."""
        await client.tree.set_translator(Chinese())
        if self.shards_served() and 0 not in self.shards_served():
            log.info("discord: slash commands are synced by the process with shard 0")
            return
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

    # ----- messages -----------------------------------------------------------------------------------------
    async def on_message(self, message: discord.Message) -> None:
        if self.closing or message.author.bot or message.webhook_id is not None:
            return  # bots and webhooks (our own personas too) never take a turn
        if message.type not in CONVERSATION_MESSAGES:
            return  # joins, pins, thread starters...
        incoming = self._incoming_of(message)
        if not incoming.text:
            return
        if not can_send(message.channel, message.guild.me if message.guild else None):
            if incoming.addressed:
                log.info("channel %s: addressed, but the bot may not post there (Send Messages); ignored",
                         message.channel.id)
            return
        arrival = self.commands.arrive(incoming)  # before any await: arrival order, flood control
        with self._tracked():
            try:
                if arrival.needs_admin:
                    incoming.is_admin = self.is_admin(message.author, message.guild is not None)
                if arrival.wants_attachment:  # an admin's /char import: others' files are never downloaded
                    await self._attach(message.attachments[0] if message.attachments else None, incoming)
                answer = await self.commands.handle(incoming, arrival)
                await self._show_for_message(message, answer)
            except discord.HTTPException as exc:
                log.warning("channel %s: Discord refused the answer: %s", message.channel.id, describe(exc))
            finally:
                arrival.placed()

    async def on_edit(self, message: discord.Message) -> None:
        """A member edited a message: the history follows (bot.commands.rewrites); a regenerated reply is
        painted into the messages that showed the old one. Raw events: the message need not be cached."""
        if self.closing or message.author.bot or message.webhook_id is not None:
            return  # our own streaming edits come back as edits too
        if message.type not in CONVERSATION_MESSAGES:
            return
        incoming = self._incoming_of(message)
        if not incoming.text:
            return
        arrival = self.commands.arrive(incoming)  # before any await: after the messages sent before it
        with self._tracked():
            try:
                answer = await self.commands.edited(incoming, arrival)
                for output in answer.outputs:
                    if isinstance(output, ReplyStream):
                        await self._speak(message.channel, output, answer.lang, reference=message)
            except discord.HTTPException as exc:
                log.warning("channel %s: Discord refused the regenerated reply: %s", message.channel.id,
                            describe(exc))
            finally:
                arrival.placed()

    async def on_delete(self, channel_id: int, message_id: int) -> None:
        """A message was deleted (by its author or a moderator; the bot's own deletes come back too, and
        change nothing): the history follows, and the bot deletes a reply whose exchange was undone."""
        if self.closing:
            return
        with self._tracked():
            answer = await self.commands.deleted(MessageGone(PLATFORM, str(channel_id), str(message_id)))
            channel = self.client.get_channel(channel_id) or self.client.get_partial_messageable(channel_id)
            for output in answer.outputs:
                if isinstance(output, Retract):
                    await retract(channel, output.message_ids, self.personas.known_hook(channel))

    def _incoming_of(self, message: discord.Message) -> Incoming:
        guild = message.guild
        reference = message.reference
        incoming = Incoming(
            platform=PLATFORM, channel_id=str(message.channel.id), user_id=str(message.author.id),
            user_name=message.author.display_name, text=self._text_of(message), message_id=str(message.id),
            is_group=guild is not None, language_code=str(guild.preferred_locale) if guild else None,
            reply_to=str(reference.message_id) if reference and reference.message_id else "",
            reply_to_speaker=self._speaker_of(reference.resolved if reference else None),
            is_bot_admin=self.is_bot_admin(message.author), chat_title=title_of(message.channel, guild, message.author))
        incoming.addressed = guild is None or self._mentions_me(message) or names_a_command(incoming)
        return incoming

    def _speaker_of(self, answered) -> str:
        """The character who spoke the message a user answers: a webhook message carries its name (a scene's
        cast member is matched by the command layer); the bot's own posts show it as `**Name**: `."""
        if not isinstance(answered, discord.Message):
            return ""
        if answered.webhook_id is not None:
            return answered.author.name
        me = self.client.user
        if me is not None and answered.author.id == me.id:
            return bold_speaker(answered.content)
        return ""

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

    async def _attach(self, file: discord.Attachment | None, incoming: Incoming) -> None:
        """The card file for /char import, or why it could not be had (the size is checked before downloading)."""
        if file is None:
            return  # the command layer asks for a file
        if file.size > MAX_ATTACHMENT_BYTES:
            incoming.attachment_problem = AttachmentProblem(TOO_BIG, file.size, MAX_ATTACHMENT_BYTES)
            return
        try:
            incoming.attachment = Attachment(file.filename, await file.read())
        except (discord.HTTPException, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.info("attachment %s: download failed: %s", file.filename, describe(exc))
            incoming.attachment_problem = AttachmentProblem(DOWNLOAD_FAILED)

    async def _show_for_message(self, message: discord.Message, answer: Answer) -> None:
        for output in answer.outputs:
            if isinstance(output, Reply) and output.private and message.guild is not None:
                await self._send_privately(message, output, answer.lang)
            elif isinstance(output, Reply):
                await reply_to_message(message, output)
            elif isinstance(output, (CharacterLine, ReplyStream)):
                await self._speak(message.channel, output, answer.lang, reference=message)

    async def _send_privately(self, message: discord.Message, reply: Reply, lang: str) -> None:
        """An answer for the sender's eyes only (a sign-in link), typed in a server: by DM; where the member does
        not take DMs from the server, the channel hears only that."""
        try:
            await send_to(message.author, reply)
        except discord.HTTPException as exc:
            log.info("channel %s: a private answer could not go to the sender (%s)", message.channel.id,
                     describe(exc))
            await reply_to_message(message, Reply(t("private_undeliverable", lang)))

    async def _speak(self, channel, output, lang: str, *, reference=None, interaction=None) -> None:
        """A character's line (greeting) or streamed reply, under its persona."""
        persona = Persona(output.speaker, output.avatar)  # CharacterLine and ReplyStream both carry these
        target = await self.personas.target(channel, persona, reference=reference, interaction=interaction)
        surface = DiscordSurface(target, f"discord channel {getattr(channel, 'id', '?')}",
                                 typing_in=channel if interaction is None else None)
        painter = Painter(surface, lang)
        if isinstance(output, CharacterLine):
            await painter.say(output.text)
            return
        if output.into:  # a reply regenerated after its line was edited: into the messages of the old one
            painter.reuse([(message, target) for message in posted(channel, output.into, getattr(target, "hook", None))])
        self._streams.add(output)
        try:
            final = await painter.paint(output)
        finally:
            self._streams.discard(output)
        if final.position and not painter.undeliverable:  # an edit or delete of these finds the reply
            await self.commands.shown(ReplyShown(PLATFORM, str(channel.id), final.position,
                                                 [str(handle[0].id) for handle in painter.message_handles()]))

    # ----- slash commands -----------------------------------------------------------------------------------
    async def slash(self, interaction: discord.Interaction, text: str, *, ephemeral: bool = False,
                    admin: bool = False, attachment: discord.Attachment | None = None, defer: bool = True) -> None:
        """One slash command: the command layer and its answers.

        Typed commands wait on the engine, so they are deferred at once with the visibility their answer needs
        (an admin command from someone else is not: its refusal comes at once). A generic command's answer may
        be private or public, which Discord fixes at the defer, so it is answered directly when it comes quickly
        and deferred only when it does not."""
        in_server = interaction.guild_id is not None
        locale = interaction.locale or interaction.guild_locale
        incoming = Incoming(platform=PLATFORM, channel_id=str(interaction.channel_id),
                            user_id=str(interaction.user.id), user_name=interaction.user.display_name, text=text,
                            is_group=in_server, language_code=str(locale) if locale else None,
                            is_bot_admin=self.is_bot_admin(interaction.user),
                            chat_title=title_of(interaction.channel, interaction.guild, interaction.user))
        if self.closing:
            await self._refuse(interaction, incoming, "shutting_down")
            return
        arrival = self.commands.arrive(incoming)  # before any await: arrival order, flood control
        try:
            if arrival.needs_admin:
                incoming.is_admin = self.is_admin(interaction.user, in_server, interaction.permissions)
            answer = InteractionAnswer(interaction)
            refused = admin and not incoming.is_admin  # the refusal is quick: answered directly
            if defer and not refused:
                await answer.defer(ephemeral)
            with self._tracked():
                if arrival.wants_attachment:
                    await self._attach(attachment, incoming)
                handling = asyncio.ensure_future(self.commands.handle(incoming, arrival))
                if not defer and not refused and not (await asyncio.wait({handling}, timeout=QUICK_ANSWER))[0]:
                    await answer.defer(ephemeral)
                await self._show_for_interaction(interaction, answer, await handling)
        finally:
            arrival.placed()

    # ----- buttons under replies -----------------------------------------------------------------------------
    async def on_press(self, interaction: discord.Interaction) -> None:
        """A button under a character's reply (bot/adapters/discord/buttons.py)."""
        incoming = read_press(interaction, title_of(interaction.channel, interaction.guild, interaction.user))
        if incoming is None:
            return
        incoming.is_bot_admin = self.is_bot_admin(interaction.user)
        arrival = self.commands.arrive(incoming)
        try:
            if arrival.needs_admin:
                incoming.is_admin = self.is_admin(interaction.user, incoming.is_group, interaction.permissions)
            with self._tracked():
                answer = await self.commands.handle(incoming, arrival)
                refusal = next((o.text for o in answer.outputs if isinstance(o, Reply)), "")
                if refusal:
                    await interaction.response.send_message(refusal, ephemeral=True)
                else:
                    await interaction.response.defer()
                for output in answer.outputs:
                    if isinstance(output, ReplyStream):
                        await self._repaint(interaction, output, answer.lang)
        except discord.HTTPException as exc:
            log.warning("channel %s: a button press was not answered: %s", interaction.channel_id, describe(exc))
        finally:
            arrival.placed()

    async def _repaint(self, interaction: discord.Interaction, stream: ReplyStream, lang: str) -> None:
        """A swipe, painted into the message the pressed button is on."""
        channel = interaction.channel or self.client.get_partial_messageable(interaction.channel_id)
        target = await self.personas.target(channel, Persona(stream.speaker, stream.avatar))
        surface = DiscordSurface(target, f"discord channel {interaction.channel_id}")
        self._streams.add(stream)
        try:
            await Painter(surface, lang, into=(PressedMessage(interaction), target)).paint(stream)
        finally:
            self._streams.discard(stream)

    async def _refuse(self, interaction: discord.Interaction, incoming: Incoming, message_key: str) -> None:
        lang = await self.commands.language(incoming)
        log.info("channel %s: /%s refused for %s: %s", interaction.channel_id, interaction.command.qualified_name
                 if interaction.command else "?", interaction.user.id, message_key)
        await interaction.response.send_message(t(message_key, lang), ephemeral=True)

    async def _show_for_interaction(self, interaction: discord.Interaction, answer: InteractionAnswer,
                                    result: Answer) -> None:
        channel = interaction.channel or self.client.get_partial_messageable(interaction.channel_id)
        for output in result.outputs:
            if isinstance(output, Reply):
                await answer.reply(output)
            elif isinstance(output, (CharacterLine, ReplyStream)):
                await answer.release()  # the character's message replaces "thinking..."
                await self._speak(channel, output, result.lang, interaction=interaction)
        await answer.release()

    async def on_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """Every failed or unknown command gets a clear private answer; handled problems are one log line."""
        name = interaction.command.qualified_name if interaction.command else (interaction.data or {}).get("name")
        lang = normalize_lang(str(interaction.locale), self.config.ui.lang)
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
