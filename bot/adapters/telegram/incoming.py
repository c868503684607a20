"""Reading a Telegram message: its channel, whether it is meant for the bot, who says it and what.

A private chat is one channel; a group is one channel; each forum topic is its own channel ("chat:thread").
"""
from __future__ import annotations

from dataclasses import dataclass

from telegram import Document, Message, MessageEntity

from bot.commands import Incoming, ParsedCommand
from bot.commands.base import REGISTRY

from bot.adapters.telegram.text import speaker_of, strip_mention

PLATFORM = "telegram"


@dataclass(frozen=True)
class Target:
    """Where the answer to a message goes."""
    chat_id: int
    thread_id: int | None  # the forum topic, or None
    quote_id: int | None  # the user's message to reply to (groups), or None
    is_group: bool


@dataclass
class TelegramMessage:
    """A message as the adapter keeps it: the platform-neutral Incoming, and what only Telegram needs."""
    incoming: Incoming
    target: Target
    user_id: int
    sent_as_chat: bool  # an anonymous group admin, writing as the group itself
    document: Document | None  # sent with the message or in the message it replies to (/char import)
    chat_title: str = ""  # the group's title, or the private chat's person (the admin page lists it)


def read_message(message: Message, bot_id: int, bot_username: str) -> TelegramMessage | None:
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
    thread_id = message.message_thread_id if message.is_topic_message else None
    reply = message.reply_to_message
    incoming = Incoming(
        platform=PLATFORM, channel_id=f"{chat.id}:{thread_id}" if thread_id else str(chat.id), user_id=str(user.id),
        user_name=(message.sender_chat.title or "Admin") if sent_as_chat else user.full_name, text=raw,
        message_id=str(message.message_id), is_group=is_group, language_code=user.language_code,
        reply_to=str(reply.message_id) if reply is not None else "", chat_title=chat.effective_name or "")
    command = incoming.command
    replied_to_bot = _replies_to(message, bot_id)
    if replied_to_bot:  # a scene's character line starts with its speaker's name
        incoming.reply_to_speaker = speaker_of(reply.text or "")
    if command is not None and not _command_is_ours(command, bot_username, is_group, replied_to_bot):
        return None
    if command is None:
        incoming.text = strip_mention(raw, bot_username)
    incoming.addressed = (not is_group or command is not None or replied_to_bot
                          or _mentions(message, bot_id, bot_username))
    return TelegramMessage(incoming, Target(chat.id, thread_id, message.message_id if is_group else None, is_group),
                           user.id, sent_as_chat, message.document or (reply.document if reply is not None else None))


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
