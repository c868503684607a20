"""/replymode mention|all: whether the bot answers every message of a group chat, forum topic or server channel,
or only messages addressed to it (mentions, replies to it, commands). Offered only in groups: a private chat, a DM
and the terminal always answer everything.

On Discord a server channel where an admin picks a character with `/char use`, and that has no reply mode yet,
becomes a role-play channel (mode `all`): that is how Discord servers use the bot. A member's `/char use` changes
the character only. `/replymode mention` (admins) is the way back, `/replymode all` the way there.
"""
from __future__ import annotations

from bot.commands.audit import succeeded
from bot.commands.base import GROUP, Context, Reply, command, first_arg
from bot.commands.messages import Incoming
from bot.commands.parsing import ParsedCommand
from bot.i18n import t

REPLY_MODE = "reply_mode"  # the per-channel setting
LEGACY_ROLEPLAY = "roleplay"  # what the Discord adapter once wrote for a role-play channel: means ALL
MENTION, ALL = "mention", "all"
REPLY_MODES = (MENTION, ALL)
ROLEPLAY_ON_CHAR_USE = frozenset({"discord"})  # platforms where an admin's /char use makes a role-play channel


def reply_mode_of(settings: dict) -> str:
    mode = settings.get(REPLY_MODE)
    if mode in REPLY_MODES:
        return mode
    return ALL if settings.get(LEGACY_ROLEPLAY) else MENTION


def answers(incoming: Incoming, settings: dict) -> bool:
    """Whether the bot answers this message: addressed to it, or said where it answers everything."""
    return incoming.addressed or not incoming.is_group or reply_mode_of(settings) == ALL


def picks_character(parsed: ParsedCommand) -> bool:
    """`/char use NAME` or its shorthand `/char NAME`."""
    action, _ = first_arg(parsed.args)
    return parsed.name == "char" and action.lower() not in ("", "list", "show", "import")


def starts_roleplay(ctx: Context, parsed: ParsedCommand, outputs: list) -> bool:
    """An admin's successful `/char use` in a server channel that has no reply mode yet (see the module text)."""
    return (ctx.key.platform in ROLEPLAY_ON_CHAR_USE and ctx.is_group and ctx.is_admin and picks_character(parsed)
            and succeeded(outputs) and REPLY_MODE not in ctx.settings and not ctx.settings.get(LEGACY_ROLEPLAY))


@command("replymode", admin=True, usage=" | ".join(REPLY_MODES), places=(GROUP,))
async def replymode(cmds, ctx: Context, args: str):
    choice = args.strip().lower()
    if not choice:  # show the current mode
        mode = reply_mode_of(ctx.settings)
        return [Reply(t("replymode_set", ctx.lang, mode=t(f"replymode_{mode}", ctx.lang)), ephemeral=True)]
    if choice not in REPLY_MODES:
        return [Reply(t("bad_usage", ctx.lang, name="replymode", usage=" | ".join(REPLY_MODES)), ephemeral=True)]
    await cmds.conversations.set_setting(ctx.key, REPLY_MODE, choice)
    return [Reply(t("replymode_set", ctx.lang, mode=t(f"replymode_{choice}", ctx.lang)))]
