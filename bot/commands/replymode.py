"""/replymode mention|all: whether the bot answers every message of a group (or forum topic) or only mentions
and replies. The same on every platform with groups (Telegram groups and topics, Discord servers)."""
from __future__ import annotations

from bot.commands.base import Context, Reply, command
from bot.i18n import t

REPLY_MODE = "reply_mode"  # the per-channel setting
MENTION, ALL = "mention", "all"
REPLY_MODES = (MENTION, ALL)


async def reply_mode(conversations, key) -> str:
    return await conversations.setting(key, REPLY_MODE, MENTION)


@command("replymode", admin=True, usage=" | ".join(REPLY_MODES))
async def replymode(cmds, ctx: Context, args: str):
    choice = args.strip().lower()
    if not choice:  # show the current mode; a private chat always answers everything
        mode = await reply_mode(cmds.conversations, ctx.key) if ctx.is_group else ALL
        return [Reply(t("replymode_set", ctx.lang, mode=t(f"replymode_{mode}", ctx.lang)), ephemeral=True)]
    if choice not in REPLY_MODES:
        return [Reply(t("bad_usage", ctx.lang, name="replymode", usage=" | ".join(REPLY_MODES)), ephemeral=True)]
    await cmds.conversations.set_setting(ctx.key, REPLY_MODE, choice)
    return [Reply(t("replymode_set", ctx.lang, mode=t(f"replymode_{choice}", ctx.lang)))]
