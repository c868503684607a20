"""Text for Discord: the 2000-character limit, a user's message as the model should read it, and the few strings
only this adapter says."""
from __future__ import annotations

import re

from bot.i18n import t as core_t

LIMIT = 2000  # Discord's content limit per message

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_CHANNEL_MENTION = re.compile(r"<#(\d+)>")
_WEBHOOK_BANNED = re.compile(r"discord|clyde", re.IGNORECASE)


def readable_text(content: str, *, bot_id: int, bot_role_id: int | None, names: dict[int, str],
                  roles: dict[int, str], channels: dict[int, str]) -> str:
    """A message as the model should read it: the bot's own mention removed, other mentions as @name / #name
    (raw `<@123>` ids mean nothing to the model and would be copied back as pings)."""
    def user(match: re.Match) -> str:
        uid = int(match.group(1))
        return "" if uid == bot_id else "@" + names.get(uid, "someone")

    def role(match: re.Match) -> str:
        rid = int(match.group(1))
        return "" if rid == bot_role_id else "@" + roles.get(rid, "role")

    text = _USER_MENTION.sub(user, content)
    text = _ROLE_MENTION.sub(role, text)
    text = _CHANNEL_MENTION.sub(lambda m: "#" + channels.get(int(m.group(1)), "channel"), text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def webhook_username(name: str) -> str:
    """A persona name Discord accepts for a webhook message: 1-80 characters, without "discord"/"clyde"
    (refused outright), not "everyone"/"here"."""
    name = _WEBHOOK_BANNED.sub(lambda m: m.group(0)[0] + "\u200b" + m.group(0)[1:], name.strip())[:80]
    if not name or name.lower() in ("everyone", "here"):
        return "Character"
    return name


# The adapter's own strings (the platform-neutral ones live in bot.i18n).
MESSAGES: dict[str, dict[str, str]] = {
    "command_failed": {"en": "Something went wrong with that command; it was logged. Please try again.",
                       "zh": "该命令出错了，已记录日志。请重试。"},
    "commands_outdated": {"en": "This command has changed; Discord is updating it. Try again in a minute.",
                          "zh": "该命令已更新，Discord 正在同步。请稍后再试。"},
    "bad_option": {"en": "That value is not valid for {option}.", "zh": "{option} 的值无效。"},
    "cannot_post": {"en": "I can't post in this channel: I need the {permission} permission here.",
                    "zh": "我无法在此频道发言：需要“{permission}”权限。"},
    "done": {"en": "Done.", "zh": "完成。"},
}


def t(key: str, lang: str = "en", **args) -> str:
    """This adapter's strings first, then the shared ones."""
    entry = MESSAGES.get(key)
    if entry is None:
        return core_t(key, lang, **args)
    return entry.get(lang, entry["en"]).format(**args)
