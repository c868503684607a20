"""The admin web page's window on the bot: `bot.dashboard` calls only this module.

Reads are plain data across channels, the library and the audit log. Changes are made by running the very command
a platform admin types (`/params set ...`, `/char import`, `/char delete ...`) with the Context the platform
verified when the admin asked for their sign-in link, so the page has the same validation, limits, refusals,
permissions and audit trail as the chat, and nothing here decides them a second time.

Who sees what: a link asked for in a chat covers that chat; signing in with links from several chats covers all
of them; the local terminal user (who runs the bot) covers every channel.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import shlex
from dataclasses import dataclass

from bot.commands.audit import record, succeeded
from bot.commands.base import Context, Reply, command
from bot.commands.signin import LINK_SECONDS
from bot.conversations import ChannelKey
from bot.conversations.characters import MAX_IMPORT_BYTES, too_big  # noqa: F401  (too_big: for the page)
from bot.engine.params import PARAM_NAMES, SPECS
from bot.i18n import param_help, t

MAX_CARD_BYTES = MAX_IMPORT_BYTES  # what /char import takes (the page reads no more than this)
LOCAL_PLATFORM = "terminal"  # its user runs the bot: they see every channel
DASHBOARD = "dashboard"  # the surface named in the audit log
TRANSCRIPT_TURNS = 200  # the latest turns shown on a channel's page
AUDIT_ROWS = 200
HIDDEN_SETTINGS = frozenset({"greeting", "prompt_hash"})  # internal bookkeeping, not settings an admin chose
MAX_TITLE = 256


# ----- /dashboard ---------------------------------------------------------------------------------------------
@command("dashboard", admin=True)
async def dashboard(cmds, ctx: Context, args: str):
    links = cmds.signins
    if links is None:
        return [Reply(t("dashboard_off", ctx.lang), ephemeral=True)]
    url = links.issue(dataclasses.replace(ctx, attachment=None))
    return [Reply(t("dashboard_link", ctx.lang, url=url, minutes=LINK_SECONDS // 60), ephemeral=True, private=True)]


# ----- who may see and change what ----------------------------------------------------------------------------
def sees_every_channel(grants: list[Context]) -> bool:
    return any(g.key.platform == LOCAL_PLATFORM for g in grants)


def visible_channels(grants: list[Context]) -> set[str] | None:
    """The channels these sign-ins cover (None: every channel)."""
    return None if sees_every_channel(grants) else {str(g.key) for g in grants}


def acting_context(grants: list[Context], channel: str) -> Context | None:
    """The Context in which the signed-in admin acts on `channel`, or None when their sign-ins do not cover it."""
    for grant in reversed(grants):
        if str(grant.key) == channel:
            return _for_page(grant)
    if sees_every_channel(grants):
        local = next(g for g in reversed(grants) if g.key.platform == LOCAL_PLATFORM)
        return _for_page(dataclasses.replace(local, key=parse_channel(channel)))
    return None


def library_context(grants: list[Context]) -> Context:
    """The Context for changes to the shared library: the latest sign-in (the command decides what it allows)."""
    return _for_page(grants[-1])


def _for_page(ctx: Context) -> Context:
    return dataclasses.replace(ctx, surface=DASHBOARD, attachment=None)


def parse_channel(channel: str) -> ChannelKey:
    """ "platform:external_id" (as `str(ChannelKey)` writes it) -> the key."""
    platform, sep, external_id = channel.partition(":")
    if not sep or not platform or not external_id:
        raise ValueError(f"not a channel: {channel[:80]!r}")
    return ChannelKey(platform, external_id)


# ----- reads ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChannelRow:
    channel: str  # "platform:external_id"
    platform: str
    title: str
    character: str
    turns: int
    last_activity: dt.datetime
    tokens: int


@dataclass(frozen=True)
class ParamRow:
    name: str
    value: float | int
    low: float
    high: float
    integer: bool
    help: str
    overridden: bool


@dataclass(frozen=True)
class Line:
    speaker: str
    text: str
    time: dt.datetime | None  # None for the character's greeting


@dataclass(frozen=True)
class ChannelDetail:
    row: ChannelRow
    params: list[ParamRow]
    chat_format: str
    settings: dict[str, str]
    transcript: list[Line]
    earlier_turns: int  # turns before the ones in `transcript`


@dataclass(frozen=True)
class CardView:
    content_hash: str
    name: str
    creator: str
    tags: list[str]
    source_format: str
    description: str
    personality: str
    scenario: str
    first_message: str
    greetings: int
    lorebook_entries: int
    has_avatar: bool


@dataclass(frozen=True)
class AuditRow:
    time: dt.datetime
    surface: str
    user: str
    channel: str
    action: str
    detail: str


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str


async def channels(cmds, only: set[str] | None = None) -> list[ChannelRow]:
    """Channels the bot knows, the most recently active first (`only`: these, by "platform:external_id")."""
    rows = [_row(cmds, ch, tokens) for ch, tokens in await cmds.conversations.store.channels_with_tokens()]
    return rows if only is None else [r for r in rows if r.channel in only]


async def channel(cmds, channel: str, lang: str = "en") -> ChannelDetail | None:
    """One channel's page: its parameters as /params shows them, its settings and the latest turns. Reading it
    creates nothing and starts nothing (None: no such channel)."""
    key = parse_channel(channel)
    conv = cmds.conversations
    found = await conv.store.channels_with_tokens(key.platform, key.external_id)
    if not found:
        return None
    ch, tokens = found[0]
    params = conv.params_of(ch)
    overrides = ch.params or {}
    rows = [ParamRow(name, getattr(params, name), SPECS[name].low, SPECS[name].high, SPECS[name].kind is int,
                     param_help(name, lang), name in overrides) for name in PARAM_NAMES]
    settings = {k: _shown(v) for k, v in sorted((ch.settings or {}).items()) if k not in HIDDEN_SETTINGS}
    first = max(0, ch.head - TRANSCRIPT_TURNS)
    transcript = []
    greeting = (ch.settings or {}).get("greeting")
    card = _card_of(cmds, ch)
    if first == 0 and greeting and card is not None:
        transcript.append(Line(card.display_name, greeting, None))
    for turn in await conv.store.turns(ch.id, after=first):
        if turn.in_text is not None:
            transcript.append(Line(turn.in_speaker or "", turn.in_text, turn.created))
        transcript.append(Line(turn.out_speaker, turn.out_text, turn.created))
    return ChannelDetail(_row(cmds, ch, tokens), rows, ch.chat_format, settings, transcript, first)


def cards(cmds) -> list[CardView]:
    return [_card_view(card) for card in cmds.library.cards()]


def avatar(cmds, content_hash: str) -> bytes | None:
    card = cmds.library.get(content_hash)
    return card.avatar if card is not None else None


async def audit_log(cmds, only: set[str] | None = None, limit: int = AUDIT_ROWS) -> list[AuditRow]:
    entries = await cmds.conversations.store.audit_entries(sorted(only) if only is not None else None, limit)
    return [AuditRow(e.created, e.surface, f"{e.user_name} ({e.user_id})", e.channel, e.action, e.detail)
            for e in entries]


def now(cmds) -> dict[str, float | None]:
    """The live numbers, from the same source as /status: tokens/s, active channels, queue, batch, GPU memory."""
    info = cmds.status() if cmds.status else {}
    return {name: info.get(name) for name in ("tps", "active", "queue", "batch", "gpu_mb")}


# ----- changes, through the commands themselves --------------------------------------------------------------
async def set_params(cmds, ctx: Context, values: dict[str, str]) -> Outcome:
    """The parameters whose submitted value differs from the channel's, as one `/params set` (all or nothing)."""
    detail = await channel(cmds, str(ctx.key), ctx.lang)
    if detail is None:
        return Outcome(False, t("dashboard_no_channel", ctx.lang))
    current = {p.name: p.value for p in detail.params}
    changes = [(name, values[name].strip()) for name in PARAM_NAMES
               if values.get(name, "").strip() and not _same_number(values[name], current[name])]
    if not changes:
        return Outcome(True, t("dashboard_nothing_changed", ctx.lang))
    return await _run(cmds, ctx, "/params set " + " ".join(f"{n} {shlex.quote(v)}" for n, v in changes))


async def reset_params(cmds, ctx: Context) -> Outcome:
    return await _run(cmds, ctx, "/params reset")


async def import_card(cmds, ctx: Context, filename: str, data: bytes) -> Outcome:
    return await _run(cmds, dataclasses.replace(ctx, attachment=(filename, data)), "/char import")


async def delete_card(cmds, ctx: Context, content_hash: str) -> Outcome:
    card = cmds.library.get(content_hash)
    if card is None or cmds.library.find(card.name) is not card:
        return Outcome(False, t("dashboard_no_card", ctx.lang))
    return await _run(cmds, ctx, f"/char delete {card.name}")


async def signed_in(cmds, ctx: Context) -> None:
    await record(cmds.conversations.store, _for_page(ctx), "dashboard sign-in")


async def _run(cmds, ctx: Context, text: str) -> Outcome:
    outputs = await cmds.execute(ctx, text)
    message = "\n".join(o.text for o in outputs if isinstance(o, Reply))
    return Outcome(succeeded(outputs), message)


# ----- chat titles -------------------------------------------------------------------------------------------
class Titles:
    """Remembers each channel's title as its platform shows it, writing only when it changed."""

    def __init__(self, store, limit: int = 100_000):
        self.store = store
        self.limit = limit
        self._known: dict[ChannelKey, str] = {}

    async def note(self, ctx: Context) -> None:
        title = ctx.chat_title[:MAX_TITLE]
        if not title or self._known.get(ctx.key) == title:
            return
        if await self.store.set_title(ctx.key.platform, ctx.key.external_id, title):
            if len(self._known) >= self.limit:
                self._known.clear()
            self._known[ctx.key] = title


# ----- helpers -----------------------------------------------------------------------------------------------
def _row(cmds, ch, tokens: int | None) -> ChannelRow:
    card = _card_of(cmds, ch)
    return ChannelRow(f"{ch.platform}:{ch.external_id}", ch.platform, ch.title or "",
                      card.name if card is not None else "", ch.head, ch.updated, tokens or 0)


def _card_of(cmds, ch):
    return cmds.library.get(ch.character) if ch.character else None


def _card_view(card) -> CardView:
    book = card.character_book
    return CardView(card.content_hash(), card.name, card.creator, list(card.tags), card.source_format,
                    card.description, card.personality, card.scenario, card.first_mes,
                    1 + len(card.alternate_greetings), len(book.entries) if book else 0, card.avatar is not None)


def _same_number(text: str, value: float | int) -> bool:
    try:
        return float(text) == float(value)
    except ValueError:
        return False


def _shown(value) -> str:
    return value if isinstance(value, str) else repr(value)
