"""Button presses on Telegram: a callback query from the inline keyboard under a character's reply.

The query becomes an `Incoming` with its `ButtonPress` (decoded from the callback data; no message ids are kept)
and is answered at once: a refusal as the answer's text, which only the presser sees; anything else with an empty
answer, and the work (a swipe) is painted into the message the keyboard is on."""
from __future__ import annotations

from telegram import CallbackQuery

from bot.adapters.telegram.incoming import PLATFORM, TelegramMessage, Target
from bot.commands import ButtonPress, Incoming


def read_press(query: CallbackQuery) -> tuple[TelegramMessage, int] | None:
    """(the press as a message, the id of the message its keyboard is on); None when it is not one of ours (or
    its message is too old for Telegram to say where it is)."""
    press = ButtonPress.decode(query.data)
    message = query.message
    if press is None or message is None or not hasattr(message, "chat"):
        return None
    chat, user = message.chat, query.from_user
    thread_id = message.message_thread_id if getattr(message, "is_topic_message", False) else None
    is_group = chat.type != "private"
    incoming = Incoming(
        platform=PLATFORM, channel_id=f"{chat.id}:{thread_id}" if thread_id else str(chat.id), user_id=str(user.id),
        user_name=user.full_name, text="", is_group=is_group, language_code=user.language_code, button=press,
        chat_title=chat.effective_name or "")
    return TelegramMessage(incoming, Target(chat.id, thread_id, None, is_group), user.id, False, None), \
        message.message_id
