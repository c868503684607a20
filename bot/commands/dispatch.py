"""`Commands.handle`: one entry point for every adapter, for commands and plain chat alike."""
from __future__ import annotations

import logging

from bot.commands.admin import Titles
from bot.commands.audit import record_command
from bot.commands.flood import RateLimiter
from bot.commands.base import REGISTRY, CommandSpec, Context, Output, Reply, parse_command, with_notice
from bot.conversations import Busy, ConversationError, Conversations, acting_for
from bot.engine.params import ParamError
from bot.i18n import normalize_lang, t
from bot.logs import current_channel

log = logging.getLogger(__name__)


class Commands:
    def __init__(self, conversations: Conversations, library, *, status=None, user_per_minute: float = 30,
                 channel_per_minute: float = 60, metrics=None):
        from bot.metrics import NO_METRICS

        self.conversations = conversations
        self.library = library
        self.status = status  # callable -> dict for /status (the app provides it)
        self.user_limiter = RateLimiter(user_per_minute)
        self.channel_limiter = RateLimiter(channel_per_minute)
        self.busy_notices = RateLimiter(60, notice_every=10.0)  # only its notice cooldown is used
        self.metrics = metrics or NO_METRICS
        self.signins = None  # bot.commands.signin.SignInLinks when the admin page is on
        self.titles = Titles(conversations.store)

    async def handle(self, ctx: Context, text: str) -> list[Output]:
        """A message from a user: a command, or a line said to the channel's character."""
        acting = acting_for.set((ctx.user_key, ctx.is_bot_admin))  # whose quota a new channel counts against
        try:
            return await self._handle(ctx, text)
        finally:
            acting_for.reset(acting)

    async def _handle(self, ctx: Context, text: str) -> list[Output]:
        current_channel.set(str(ctx.key))
        if ctx.flood_control and not self._allowed(ctx):
            self.metrics.error("rate_limited")
            log.info("channel %s: message from %s dropped: rate limit", ctx.key, ctx.user_id)
            if self.user_limiter.should_notice((ctx.key.platform, ctx.user_id)):
                return [Reply(t("rate_limited", ctx.lang), ephemeral=True)]
            return []
        parsed = parse_command(text)
        if parsed is None:
            outputs = await self._guarded(ctx, "chat", self._chat(ctx, text))
        else:
            spec = REGISTRY.get(parsed.name)
            if spec is None:
                return [Reply(t("unknown_command", ctx.lang, name=parsed.name[:32]), ephemeral=True)]
            if spec.admin and not (ctx.is_admin or ctx.is_bot_admin):
                log.info("channel %s: /%s refused: %s is not an admin", ctx.key, spec.name, ctx.user_id)
                return [Reply(t("not_admin", ctx.lang), ephemeral=True)]
            outputs = await self._guarded(ctx, spec.name, spec.handler(self, ctx, parsed.args))
            await record_command(self.conversations.store, ctx, spec.name, parsed.args, outputs)
        await self.titles.note(ctx)  # after the work: a message reaches its channel's queue before any await here
        return outputs

    def _allowed(self, ctx: Context) -> bool:
        return self.user_limiter.allow((ctx.key.platform, ctx.user_id)) and self.channel_limiter.allow(ctx.key)

    async def lang_for(self, key, platform_code: str | None, default: str = "en") -> str:
        """The language to answer in: the chat's /lang setting, else the user's platform language, else default."""
        chosen = await self.conversations.setting(key, "lang")
        return chosen or normalize_lang(platform_code, default)

    def commands(self) -> list[CommandSpec]:
        """Each command once, in registration order (for /help and platform menus)."""
        seen, out = set(), []
        for spec in REGISTRY.values():
            if spec.name not in seen and not spec.hidden:
                seen.add(spec.name)
                out.append(spec)
        return out

    async def _chat(self, ctx: Context, text: str) -> list[Output]:
        return with_notice(await self.conversations.say(ctx.key, ctx.user_name, text), ctx.lang)

    async def _guarded(self, ctx: Context, what: str, work) -> list[Output]:
        """Handled problems become one clear reply and one log line (no traceback: a traceback means a bug)."""
        from bot.cards import CardError

        try:
            return await work
        except Busy:
            self.metrics.error("busy")
            log.info("channel %s: %s refused: busy", ctx.key, what)
            if self.busy_notices.should_notice(ctx.key):
                return [Reply(t("busy", ctx.lang), ephemeral=True)]
            return []
        except ConversationError as exc:
            log.info("channel %s: %s refused: %s", ctx.key, what, exc.key)
            return [Reply(t(exc.key, ctx.lang, **exc.args_), ephemeral=True)]
        except ParamError as exc:
            log.info("channel %s: %s refused: %s", ctx.key, what, exc)
            return [Reply(t("param_error", ctx.lang, problem=str(exc)), ephemeral=True)]
        except CardError as exc:
            log.info("channel %s: %s refused: bad card: %s", ctx.key, what, exc)
            return [Reply(t("card_error", ctx.lang, problem=str(exc)), ephemeral=True)]
