"""The one error a conversation operation raises when it cannot do what was asked."""
from __future__ import annotations


class ConversationError(Exception):
    """A request that cannot be done as asked; `key` names a message in bot.i18n, `args` fill it in."""

    def __init__(self, key: str, **args):
        super().__init__(key)
        self.key = key
        self.args_ = args
