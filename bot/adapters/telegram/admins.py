"""Who is an admin in a Telegram chat: everyone in their private chat; in groups the chat's administrators and
creator (asked with getChatMember), anonymous admins writing as the group, and the ids in telegram.admin_ids."""
from __future__ import annotations

import collections
import logging
import time

from telegram import Bot, ChatMember
from telegram.error import TelegramError

from bot.adapters.telegram.incoming import TelegramMessage

log = logging.getLogger(__name__)

REMEMBER_SECONDS = 30.0  # a promotion or demotion is seen within this time
REMEMBER_MAX = 10_000


class AdminCheck:
    def __init__(self, bot: Bot, admin_ids: list[int]):
        self.bot = bot
        self.admin_ids = frozenset(admin_ids)
        self._known: collections.OrderedDict[tuple[int, int], tuple[bool, float]] = collections.OrderedDict()

    async def is_admin(self, message: TelegramMessage) -> bool:
        if not message.target.is_group or message.sent_as_chat or message.user_id in self.admin_ids:
            return True
        key = (message.target.chat_id, message.user_id)
        known = self._known.get(key)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        try:
            member = await self.bot.get_chat_member(*key)
        except TelegramError as exc:  # cannot tell: refuse admin actions, answer the rest
            log.warning("telegram chat %s: cannot check whether user %s is an admin: %s", key[0], key[1], exc)
            return False
        admin = member.status in (ChatMember.ADMINISTRATOR, ChatMember.OWNER)
        self._known[key] = (admin, time.monotonic() + REMEMBER_SECONDS)
        self._known.move_to_end(key)
        while len(self._known) > REMEMBER_MAX:
            self._known.popitem(last=False)
        return admin
