"""Reading a Telegram message: its channel, whether it is meant for the bot, who says it and what.

A private chat is one channel; a group is one channel; each forum topic is its own channel ("chat:thread").
"""
from __future__ import annotations

from dataclasses import dataclass

from telegram import Document, Message, MessageEntity

from bot.commands.base import REGISTRY, ParsedCommand, parse_command
from bot.conversations import ChannelKey

from bot.adapters.telegram.text import strip_mention

PLATFORM = "telegram"


@dataclass(frozen=True)
class Target:
    """Where the answer to a message goes."""
    chat_id: int
    thread_id: int | None  # the forum topic, or None
    quote_id: int | None  # the user's message to reply to (groups), or None
    is_group: bool


@dataclass
class Incoming:
    key: ChannelKey
    target: Target
    user_id: int
    user_name: str  # the speaker's display name, as the model reads it in group turns
    language_code: str | None
    text: str  # what is said (the bot's @mention removed) or the command as written
    command: ParsedCommand | None
    addressed: bool  # a private chat, a command, an @mention or a reply to the bot
    sent_as_chat: bool  # an anonymous group admin, writing as the group itself
    document: Document | None  # sent with the message or in the message it replies to (/char import)
    chat_title: str = ""  # the group's title, or the private chat's person (the admin page lists it)

    @property
    def is_group(self) -> bool:
        return self.target.is_group

    @property
    def imports_card(self) -> bool:
        return (self.command is not None and self.command.name == "char"
                and self.command.args.split(maxsplit=1)[:1] == ["import"])


def read_message(message: Message, bot_id: int, bot_username: str) -> Incoming | None:
    """The message as the bot sees it; None when it is not for the bot at all (no text, another bot wrote it, a
    command for another bot, an unknown command in a group that did not name this bot)."""
    raw = message.text or message.caption or ""
    chat = message.chat
    sent_as_chat = message.sender_chat is not None and message.sender_chat.id == chat.id
    user = message.from_user
    if not raw.strip() or user is None or chat.type not in ("private", "group", "supergroup"):
        return None
    if user.is_bot and not sent_as_chat:  # other bots (and our own echoes) never start a turn: no bot loops
        return None
    is_group = chat.type != "private"
    command = parse_command(raw)
    replied_to_bot = _replies_to(message, bot_id)
    if command is not None and not _command_is_ours(command, bot_username, is_group, replied_to_bot):
        return None
    thread_id = message.message_thread_id if message.is_topic_message else None
    key = ChannelKey(PLATFORM, f"{chat.id}:{thread_id}" if thread_id else str(chat.id))
    target = Target(chat.id, thread_id, message.message_id if is_group else None, is_group)
    mentioned = _mentions(message, bot_id, bot_username)
    text = raw if command is not None else strip_mention(raw, bot_username)
    reply = message.reply_to_message
    return Incoming(
        key=key, target=target, user_id=user.id,
        user_name=(message.sender_chat.title or "Admin") if sent_as_chat else user.full_name,
        language_code=user.language_code, text=text, command=command,
        addressed=not is_group or command is not None or mentioned or replied_to_bot,
        sent_as_chat=sent_as_chat,
        document=message.document or (reply.document if reply is not None else None),
        chat_title=chat.effective_name or "")


def _command_is_ours(command: ParsedCommand, bot_username: str, is_group: bool, replied_to_bot: bool) -> bool:
    if command.target is not None:
        return command.target.lower() == bot_username.lower()
    # "/foo" without @name in a group may be for another bot: only commands we know are answered there.
    return not is_group or command.name in REGISTRY or replied_to_bot


def _replies_to(message: Message, bot_id: int) -> bool:
    reply = message.reply_to_message
    if reply is None or reply.from_user is None or reply.from_user.id != bot_id:
        return False
    # In a forum every topic message "replies" to the topic's opening service message; that is not a reply.
    return reply.forum_topic_created is None and not (message.is_topic_message
                                                      and reply.message_id == message.message_thread_id)


def _mentions(message: Message, bot_id: int, bot_username: str) -> bool:
    kinds = [MessageEntity.MENTION, MessageEntity.TEXT_MENTION]
    entities = message.parse_entities(kinds) if message.text else message.parse_caption_entities(kinds)
    for entity, value in entities.items():
        if entity.type == MessageEntity.TEXT_MENTION and entity.user is not None and entity.user.id == bot_id:
            return True
        if entity.type == MessageEntity.MENTION and value[1:].lower() == bot_username.lower():
            return True
    return False
