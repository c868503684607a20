"""`Commands`: the one entry point of every adapter, for commands and plain chat alike.

    answer = await commands.handle(incoming)          # Incoming in, Answer (lang, outputs) out

Commands run in-process for someone already verified (the admin page acting for a signed-in admin) go through
`Commands.execute(ctx, text)`, past the platform-side steps.

An adapter that must ask its platform something first (is the sender an admin, the attached file) takes the
message's place at arrival and asks only what the arrival says is needed:

    arrival = commands.arrive(incoming)               # synchronously, when the message arrives
    if arrival.needs_admin: incoming.is_admin = ...   # the platform's answer
    if arrival.wants_attachment: incoming.attachment = ... (or incoming.attachment_problem = ...)
    answer = await commands.handle(incoming, arrival)
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging

from bot.commands.admin import Titles
from bot.commands.audit import record_command
from bot.commands.base import REGISTRY, CommandSpec, Context, offered_commands, with_notice
from bot.commands.flood import FloodControl, RateLimiter
from bot.commands import rewrites
from bot.commands.intake import Arrival, ArrivalOrder, imports_card
from bot.commands.parsing import ParsedCommand, parse_command
from bot.commands.messages import (CANCELLED, DONE, DOWNLOAD_FAILED, EMPTY, ENGINE_ERROR, NOT_FOUND, STOPPED,
                                   TERMINAL, TOO_BIG, Answer, AttachmentProblem, Final, Incoming, MessageGone,
                                   Output, Partial, Queued, Reply, ReplyShown, ReplyStream, stop_buttons,
                                   swipe_buttons)
from bot.commands.replymode import REPLY_MODE, ALL, answers, starts_roleplay
from bot.commands.scenes import name_the_speakers
from bot.conversations import Busy, ChannelKey, ConversationError, Conversations, TurnStopped, TurnStream, acting_for
from bot.engine.params import ParamError
from bot.engine.outputs import GenerationCancelled
from bot.i18n import normalize_lang, t
from bot.logs import current_channel

log = logging.getLogger(__name__)


class Commands:
    def __init__(self, conversations: Conversations, library, *, status=None, user_per_minute: float = 30,
                 channel_per_minute: float = 60, metrics=None, lang: str = "en"):
        from bot.metrics import NO_METRICS

        self.conversations = conversations
        self.library = library
        self.status = status  # callable -> dict for /status (the app provides it)
        self.lang = lang  # when neither the chat (/lang) nor the user's platform says
        self.flood = FloodControl(user_per_minute, channel_per_minute)
        self.busy_notices = RateLimiter(60, notice_every=10.0)  # only its notice cooldown is used
        self.metrics = metrics or NO_METRICS
        self.order = ArrivalOrder()
        self.signins = None  # bot.commands.signin.SignInLinks when the admin page is on
        self.titles = Titles(conversations.store)

    # ----- the boundary -----------------------------------------------------------------------------------
    def arrive(self, incoming: Incoming) -> Arrival:
        """The message's place in its channel's order, and flood control for a message addressed to the bot.
        Call synchronously when it arrives, before awaiting anything."""
        key = ChannelKey(incoming.platform, incoming.channel_id)
        admitted, notice = (self._admit(incoming) if incoming.addressed else (None, False))
        before, placed = self.order.take(key)
        return Arrival(incoming, key, before, placed, self.order, admitted, notice,
                       user_imports=self.library.user_imports)

    async def handle(self, incoming: Incoming, arrival: Arrival | None = None) -> Answer:
        """Everything the bot does with one message: whether it answers, in which language, and what it says."""
        arrival = arrival or self.arrive(incoming)
        key = ChannelKey(incoming.platform, incoming.channel_id)
        current_channel.set(str(key))
        try:
            # The one read of the channel for this message; before waiting for the message ahead, so a burst of
            # messages is read at once instead of one after the other.
            settings = await self.conversations.settings(key)
            await arrival.wait_turn()
            lang = settings.get("lang") or normalize_lang(incoming.language_code, self.lang)
            if not answers(incoming, settings):
                return Answer([], lang, answered=False)
            if arrival.admitted is None:
                arrival.admitted, arrival.notice = self._admit(incoming)
            if not arrival.admitted:
                self.metrics.error("rate_limited")
                log.info("channel %s: message from %s dropped: rate limit", key, incoming.user_id)
                return Answer([Reply(t("rate_limited", lang), ephemeral=True)] if arrival.notice else [], lang)
            ctx = Context(key=key, user_id=incoming.user_id, user_name=incoming.user_name,
                          is_admin=bool(incoming.is_admin) or incoming.is_bot_admin, lang=lang,
                          is_group=incoming.is_group, is_bot_admin=incoming.is_bot_admin,
                          attachment=((incoming.attachment.filename, incoming.attachment.data)
                                      if incoming.attachment else None), settings=settings,
                          chat_title=incoming.chat_title, surface=incoming.surface,
                          message_id=incoming.message_id, reply_to_speaker=incoming.reply_to_speaker)
            if incoming.button is not None:
                working = asyncio.ensure_future(self._press(ctx, incoming.button))
            else:
                working = asyncio.ensure_future(self._dispatch(ctx, incoming.text, incoming.command,
                                                               incoming.attachment_problem))
            # One loop step lets the command run up to the conversation's queue (a turn queues there before its
            # first await); only then may the channel's next message go. Waiting for the command to return would
            # hold the next message back until this turn started, and the conversation could not see (and
            # refuse) a flood.
            await asyncio.sleep(0)
            arrival.placed()
            return Answer([self._boundary(output) for output in await working], lang)
        finally:
            arrival.placed()

    async def execute(self, ctx: Context, text: str) -> list[Output]:
        """A command for someone the caller has verified (the admin page acting with the Context of an admin's
        sign-in): the command itself, its permissions and audit, without arrival order, flood control or reply
        mode. Outputs as the boundary gives them."""
        current_channel.set(str(ctx.key))
        return [self._boundary(output) for output in await self._dispatch(ctx, text, parse_command(text))]

    # ----- edits and deletes on the platform (bot.commands.rewrites) -------------------------------------------
    async def edited(self, incoming: Incoming, arrival: Arrival | None = None) -> Answer:
        """A message edited on the platform (`incoming` carries its id and new text); call `arrive` first, as
        for a message, or let this do it before its first await."""
        return await rewrites.edited(self, incoming, arrival)

    async def deleted(self, gone: MessageGone) -> Answer:
        """A message deleted on the platform."""
        return await rewrites.deleted(self, gone)

    async def shown(self, report: ReplyShown) -> None:
        """Which of the bot's messages show a committed reply (after painting it)."""
        await rewrites.shown(self, report)

    async def start_session(self, incoming: Incoming, character: str | None = None) -> Answer:
        """The opening of an interactive session (the terminal): `/char use CHARACTER` when the channel talks
        with another character, else the greeting of a channel that has none yet, else nothing."""
        view = await self.conversations.view(ChannelKey(incoming.platform, incoming.channel_id))
        if character and (view.character is None or view.character.name.casefold() != character.casefold()):
            text = f"/char use {character}"
        elif view.settings.get("greeting") is None:
            text = "/start"
        else:
            return Answer([], normalize_lang(view.settings.get("lang") or incoming.language_code, self.lang))
        return await self.handle(dataclasses.replace(incoming, text=text))

    async def language(self, incoming: Incoming) -> str:
        """The language to answer in, for what an adapter says on its own (e.g. "shutting down")."""
        chosen = (await self.conversations.settings(ChannelKey(incoming.platform, incoming.channel_id))).get("lang")
        return chosen or normalize_lang(incoming.language_code, self.lang)

    def commands(self, place: str | None = None) -> list[CommandSpec]:
        """Each command once, in registration order, offered in `place` (all when None): /help, platform menus."""
        return offered_commands(place)

    def character_names(self, who: str | None = None) -> list[str]:
        """The character names `who` ("platform:user id") can use: the shared library and their own cards (for
        autocompletion)."""
        return self.library.names(who)

    # ----- inside -----------------------------------------------------------------------------------------
    def _admit(self, incoming: Incoming) -> tuple[bool, bool]:
        if incoming.platform == TERMINAL:  # the owner at their own terminal is not a spammer
            return True, False
        return self.flood.admit((incoming.platform, incoming.user_id),
                                ChannelKey(incoming.platform, incoming.channel_id))

    async def _dispatch(self, ctx: Context, text: str, parsed: ParsedCommand | None,
                        attachment_problem: AttachmentProblem | None = None) -> list[Output]:
        acting = acting_for.set((ctx.user_key, ctx.is_bot_admin))  # whose quota a new channel counts against
        try:
            return await self._dispatch_as(ctx, text, parsed, attachment_problem)
        finally:
            acting_for.reset(acting)

    async def _dispatch_as(self, ctx: Context, text: str, parsed: ParsedCommand | None,
                           attachment_problem: AttachmentProblem | None) -> list[Output]:
        if parsed is None:
            outputs = await self._guarded(ctx, "chat", self._chat(ctx, text))
        else:
            spec = REGISTRY.get(parsed.name)
            if spec is None or ctx.place not in spec.places:
                return [Reply(t("unknown_command", ctx.lang, name=parsed.name[:32]), ephemeral=True)]
            if spec.admin and not (ctx.is_admin or ctx.is_bot_admin):
                log.info("channel %s: /%s refused: %s is not an admin", ctx.key, spec.name, ctx.user_id)
                return [Reply(t("not_admin", ctx.lang), ephemeral=True)]
            if attachment_problem is not None and imports_card(parsed):
                problem = describe_problem(attachment_problem, ctx.key.platform)
                log.info("channel %s: /char import refused: %s", ctx.key, problem)
                return [Reply(t("card_error", ctx.lang, problem=problem), ephemeral=True)]
            outputs = await name_the_speakers(self.conversations, ctx,
                                              await self._guarded(ctx, spec.name, spec.handler(self, ctx, parsed.args)))
            await record_command(self.conversations.store, ctx, spec.name, parsed.args, outputs)
            if starts_roleplay(ctx, parsed, outputs):
                await self.conversations.set_setting(ctx.key, REPLY_MODE, ALL)
                log.info("channel %s: now a role-play channel (an admin's /char use)", ctx.key)
        await self.titles.note(ctx)  # after the work: a message reaches its channel's queue before any await here
        return outputs

    async def _press(self, ctx: Context, button) -> list[Output]:
        """A button under a reply (swipes, ⏹): bot/commands/swipes.py."""
        from bot.commands.swipes import press

        acting = acting_for.set((ctx.user_key, ctx.is_bot_admin))
        try:
            return [self._boundary(output) for output in await self._guarded(ctx, "button", press(self, ctx, button))]
        finally:
            acting_for.reset(acting)

    async def _chat(self, ctx: Context, text: str) -> list[Output]:
        return with_notice(await self.conversations.say(ctx.key, ctx.user_name, text, message_id=ctx.message_id,
                                                        who=ctx.user_key, addressed_to=ctx.reply_to_speaker),
                           ctx.lang)

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

    @staticmethod
    def _boundary(output) -> Output:
        """A reply being generated leaves as a stream of plain events; everything else is plain already."""
        if isinstance(output, TurnStream):
            return reply_stream(output, output.owner.partition(":")[2])
        return output


def reply_stream(turn: TurnStream, owner: str) -> ReplyStream:
    """A turn as the boundary gives it: ⏹ while it is written, its swipes once it is done, for `owner` (the user id
    whose line it answers)."""
    return ReplyStream(turn.speaker, turn.avatar, turn_events(turn, owner), turn.cancel, stop_buttons(owner),
                       named=turn.named)


async def turn_events(turn: TurnStream, owner: str = ""):
    """A turn's place in the GPU's queue while it waits, its text as it grows, then how it ended (every failure
    of the turn is one of the outcomes)."""
    latest, queued = "", 0
    async for text in turn:
        if turn.queued != queued:
            queued = turn.queued
            if queued:
                yield Queued(queued - 1)
        if text != latest:
            latest = text
            yield Partial(text)
    try:
        result = await turn.result()
    except TurnStopped:
        yield Final(latest, STOPPED)
    except GenerationCancelled:
        yield Final(latest, CANCELLED)
    except Exception:  # EngineError, or whatever else failed the turn (the conversation logged it)
        yield Final(latest, ENGINE_ERROR)
    else:
        yield Final(result.text, DONE if result.text.strip() else EMPTY,
                    swipe_buttons(result.turn_id, *result.label, owner), result.position)


def size_text(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB" if size >= 1 << 20 else f"{size} bytes"


def describe_problem(problem: AttachmentProblem, platform: str) -> str:
    """Why a card file did not arrive, for the `card_error` refusal."""
    if problem.kind == TOO_BIG:
        return f"the file is {size_text(problem.size)}; the limit is {size_text(problem.limit)}"
    if problem.kind == DOWNLOAD_FAILED:
        return f"the file could not be downloaded from {platform.capitalize()}; send it again"
    if problem.kind == NOT_FOUND:
        return f"no file at {problem.detail}"
    return f"the file could not be read ({problem.detail})"
