"""Text rules of Telegram messages: the 4096-character limit and the bot's @mention in group messages."""
from __future__ import annotations

import re

MAX_MESSAGE_CHARS = 4096  # Telegram's limit, after leading/trailing whitespace is trimmed
MAX_CAPTION_CHARS = 1024


def strip_mention(text: str, bot_username: str) -> str:
    """The message without the bot's @username (and a comma or colon right after it): "@bot, hello" -> "hello"."""
    if not bot_username:
        return text.strip()
    pattern = re.compile(rf"(?<![\w@])@{re.escape(bot_username)}(?!\w)[,:]?[ \t]*", re.IGNORECASE)
    return pattern.sub("", text).strip()


SPEAKER_MARK = ": "


def speaker_prefix(speaker: str) -> str:
    """How a scene's character line starts on Telegram (a bot has one name there: the speaker's is in the text)."""
    return speaker + SPEAKER_MARK


def speaker_of(text: str, max_chars: int = 128) -> str:
    """The speaker's name a scene's message starts with ("" when it has none)."""
    name, mark, _ = text.partition(SPEAKER_MARK)
    return name if mark and name.strip() and "\n" not in name and len(name) <= max_chars else ""
