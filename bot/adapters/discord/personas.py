"""Where a character's lines are posted: under its name and avatar through the channel's webhook, or, where the
bot may not manage webhooks (DMs, missing permission), as the bot itself with the name shown in bold.

One webhook per channel (threads use their parent's, since Discord refuses webhooks on threads), created on first
use and reused. Its avatar is set from the character's PNG, because a per-message avatar needs a public URL and a
card's picture has none.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from dataclasses import dataclass

import discord

from bot.adapters.discord.text import LIMIT, webhook_username

log = logging.getLogger(__name__)

HOOK_NAME = "RWKV persona"
NONE = discord.AllowedMentions.none()  # the model must never ping anyone
RETRY_AFTER_FAILURE = 600.0  # seconds before trying again to make a webhook where it failed


_BOLD_SPEAKER = re.compile(r"^\*\*((?:\\.|[^*\\\n])+)\*\*: ")


def bold_speaker(content: str) -> str:
    """The name a line posted as the bot starts with (`**Name**: `, as BotTarget and FollowupTarget write it)."""
    match = _BOLD_SPEAKER.match(content)
    return re.sub(r"\\(.)", r"\1", match[1]) if match else ""


@dataclass
class Persona:
    name: str
    avatar: bytes | None = None


class Target:
    """Posts a character's lines somewhere; `fallback` is where to go when Discord refuses this place."""

    prefix = ""
    fallback: "Target | None" = None

    @property
    def limit(self) -> int:
        return LIMIT - len(self.prefix)

    def render(self, index: int, chunk: str) -> str:
        return (self.prefix if index == 0 else "") + chunk

    async def post(self, content: str, view=discord.utils.MISSING):
        """`view`: the buttons under the message (bot.adapters.discord.buttons.view_of)."""
        raise NotImplementedError

    def refused(self, exc: discord.HTTPException) -> None:
        """Discord refused a post here (e.g. the webhook was deleted): forget what is cached."""


class WebhookTarget(Target):
    def __init__(self, personas: "Personas", hook: discord.Webhook, thread: discord.Thread | None, name: str,
                 fallback: Target):
        self.personas, self.hook, self.thread, self.name, self.fallback = personas, hook, thread, name, fallback

    async def post(self, content: str, view=discord.utils.MISSING):
        return await self.hook.send(content, username=self.name, wait=True, allowed_mentions=NONE,
                                    thread=self.thread or discord.utils.MISSING, view=view)

    def refused(self, exc: discord.HTTPException) -> None:
        self.personas.forget(self.hook)


class BotTarget(Target):
    """As the bot, `**Name**: text`; the first chunk answers the user's message as a reply."""

    def __init__(self, channel, name: str, reference: discord.Message | None = None, fallback: Target | None = None):
        self.channel, self.reference, self.fallback = channel, reference, fallback
        self.prefix = f"**{discord.utils.escape_markdown(name)}**: " if name else ""

    async def post(self, content: str, view=discord.utils.MISSING):
        reference = self.reference.to_reference(fail_if_not_exists=False) if self.reference else None
        self.reference = None  # only the first message answers the user's
        return await self.channel.send(content, allowed_mentions=NONE, reference=reference, mention_author=False,
                                       view=view or None)


class FollowupTarget(Target):
    """As interaction followups: works where the bot may not post in the channel at all."""

    def __init__(self, interaction: discord.Interaction, name: str):
        self.interaction = interaction
        self.prefix = f"**{discord.utils.escape_markdown(name)}**: " if name else ""

    async def post(self, content: str, view=discord.utils.MISSING):
        return await self.interaction.followup.send(content, wait=True, allowed_mentions=NONE, view=view)


def can_send(channel, me) -> bool:
    """Whether the bot may post in `channel` (a guild channel or thread; DMs always)."""
    if me is None or not hasattr(channel, "permissions_for"):
        return True
    perms = channel.permissions_for(me)
    needed = perms.send_messages_in_threads if isinstance(channel, discord.Thread) else perms.send_messages
    return perms.view_channel and needed


class Personas:
    def __init__(self):
        self._hooks: dict[int, discord.Webhook] = {}  # channel id (thread parent) -> our webhook
        self._avatars: dict[int, str | None] = {}  # webhook id -> sha256 of the avatar it has
        self._failed: dict[int, float] = {}  # channel id -> when making a webhook there failed
        self._locks: dict[int, asyncio.Lock] = {}

    async def target(self, channel, persona: Persona, *, reference: discord.Message | None = None,
                     interaction: discord.Interaction | None = None) -> Target:
        """The best place for `persona`'s lines in `channel`."""
        last_resort = FollowupTarget(interaction, persona.name) if interaction else None
        me = getattr(getattr(channel, "guild", None), "me", None)
        as_bot = BotTarget(channel, persona.name, reference, fallback=last_resort)
        if not can_send(channel, me):
            return last_resort or as_bot
        hook = await self._webhook(channel, me)
        if hook is None:
            return as_bot
        await self._set_avatar(hook, persona.avatar)
        thread = channel if isinstance(channel, discord.Thread) else None
        return WebhookTarget(self, hook, thread, webhook_username(persona.name), fallback=as_bot)

    def known_hook(self, channel) -> discord.Webhook | None:
        """The webhook already in use in `channel` (a thread: its parent's), if any; nothing is asked of Discord."""
        home = channel.parent if isinstance(channel, discord.Thread) else channel
        return self._hooks.get(getattr(home, "id", None))

    def forget(self, hook: discord.Webhook) -> None:
        for channel_id, known in list(self._hooks.items()):
            if known.id == hook.id:
                del self._hooks[channel_id]
        self._avatars.pop(hook.id, None)

    async def _webhook(self, channel, me) -> discord.Webhook | None:
        home = channel.parent if isinstance(channel, discord.Thread) else channel
        if me is None or home is None or not hasattr(home, "create_webhook"):
            return None  # a DM, or a thread whose parent is not cached
        if not home.permissions_for(me).manage_webhooks:
            return None
        if home.id in self._hooks:
            return self._hooks[home.id]
        if time.monotonic() - self._failed.get(home.id, -RETRY_AFTER_FAILURE) < RETRY_AFTER_FAILURE:
            return None
        async with self._locks.setdefault(home.id, asyncio.Lock()):
            if home.id not in self._hooks:
                await self._find_or_create(home, me)
        return self._hooks.get(home.id)

    async def _find_or_create(self, home, me) -> None:
        try:
            ours = [h for h in await home.webhooks() if h.name == HOOK_NAME and h.token
                    and h.user is not None and h.user.id == me.id]
            hook = ours[0] if ours else await home.create_webhook(name=HOOK_NAME, reason="character personas")
        except discord.HTTPException as exc:
            self._failed[home.id] = time.monotonic()
            log.warning("channel %s: cannot use a webhook (%s %s); posting as the bot", home.id, exc.status,
                        exc.text or exc.__class__.__name__)
            return
        self._hooks[home.id] = hook
        self._avatars.setdefault(hook.id, "unknown")  # a found webhook may carry any avatar

    async def _set_avatar(self, hook: discord.Webhook, avatar: bytes | None) -> None:
        wanted = hashlib.sha256(avatar).hexdigest() if avatar else None
        if self._avatars.get(hook.id) == wanted:
            return
        async with self._locks.setdefault(hook.id, asyncio.Lock()):
            if self._avatars.get(hook.id) == wanted:
                return
            try:
                await hook.edit(avatar=avatar, reason="character persona")
            except (discord.HTTPException, ValueError) as exc:  # ValueError: not a PNG/JPEG/GIF/WebP
                log.info("webhook %s: avatar not changed (%s); the name is still shown", hook.id, exc)
            self._avatars[hook.id] = wanted  # also after a failure: do not retry on every message
