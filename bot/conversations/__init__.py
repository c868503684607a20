"""Conversations: each channel's character, turns, undo/regen/edit, saves and rebases, and its exact RNN state.

The layer between the commands and the machinery below it: it assembles prompts with `bot.cards`, keeps history
and states with `bot.store`, and hands token work to `bot.engine`.
"""
from bot.conversations.characters import Library
from bot.conversations.conversations import (Busy, ChannelKey, ChannelView, ConversationError, Conversations,
                                             Quotas, TurnResult, TurnStream, acting_for)
from bot.conversations.swipes import BACK, FORWARD, Swiped, TurnStopped

__all__ = ["BACK", "FORWARD", "Swiped", "TurnStopped", "Busy", "ChannelKey", "ChannelView", "ConversationError", "Conversations", "Library", "Quotas",
           "TurnResult", "TurnStream", "acting_for"]
