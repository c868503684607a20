"""Every command, permissions, flood control and arrival order: the only room the adapters talk to.

The boundary is plain data (bot/commands/messages.py): an adapter builds an `Incoming`, calls
`Commands.handle`, and shows the `Answer`'s outputs. Importing this package registers every command.
"""
from bot.commands import session, admin, chat, power, scenes, replymode, quit, swipes  # noqa: F401  (registers; /help first)
from bot.commands.base import EVERYWHERE, GROUP, PRIVATE, CommandSpec, Context, place_of
from bot.commands.dispatch import Commands
from bot.commands.intake import Arrival, attachment_argument, names_a_command, needs_admin, wants_attachment
from bot.commands.messages import (CANCELLED, DONE, DOWNLOAD_FAILED, EMPTY, ENGINE_ERROR, NOT_FOUND, TERMINAL,
                                   TOO_BIG, UNREADABLE, Answer, Attachment, AttachmentProblem, CharacterLine, Final,
                                   Goodbye, Incoming, MessageGone, Output, Partial, Reply, ReplyShown, ReplyStream,
                                   Retract, StreamEvent, event_from_dict, output_from_dict)
from bot.commands.messages import KEPT, STOPPED, Button, ButtonPress, Queued  # swipes and /stop
from bot.commands.parsing import ParsedCommand, parse_command
from bot.conversations import ChannelKey  # the key of a channel's order and of everything kept about it
from bot.conversations.characters import MAX_IMPORT_BYTES as MAX_ATTACHMENT_BYTES
from bot.engine.params import PARAM_NAMES

__all__ = ["KEPT", "Button", "ButtonPress", "Queued", "STOPPED", "Answer", "Arrival", "Attachment", "AttachmentProblem", "CANCELLED", "ChannelKey", "CharacterLine", "CommandSpec",
           "Commands", "Context", "DONE", "DOWNLOAD_FAILED", "EMPTY", "ENGINE_ERROR", "EVERYWHERE", "Final", "GROUP",
           "Goodbye", "Incoming", "MAX_ATTACHMENT_BYTES", "MessageGone", "NOT_FOUND", "Output", "PARAM_NAMES", "PRIVATE", "Partial",
           "ParsedCommand", "Reply", "ReplyShown", "ReplyStream", "Retract", "StreamEvent", "TERMINAL", "TOO_BIG", "UNREADABLE",
           "attachment_argument", "event_from_dict", "names_a_command", "needs_admin", "output_from_dict",
           "parse_command", "place_of", "wants_attachment"]
