"""/quit and /exit: leave the terminal chat (Ctrl-D and Ctrl-C leave too). Only the terminal offers them."""
from __future__ import annotations

from bot.commands.base import TERMINAL, Context, Goodbye, command
from bot.i18n import t


@command("quit", aliases=("exit",), places=(TERMINAL,))
async def quit_(cmds, ctx: Context, args: str):
    return [Goodbye(t("bye", ctx.lang))]
