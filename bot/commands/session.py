"""/help: the commands offered where it is asked (and in the terminal, how to import a file and leave)."""
from __future__ import annotations

from bot.commands.base import TERMINAL, Context, Reply, command
from bot.i18n import t


@command("help", aliases=("commands",))
async def help_(cmds, ctx: Context, args: str):
    lines = [t("help_title", ctx.lang)]
    for spec in cmds.commands(ctx.place):
        lines.append(f"/{spec.name} - {t(spec.help_key, ctx.lang)}")
    lines.append("")
    if ctx.place == TERMINAL:
        lines.append(t("help_terminal_import", ctx.lang))
    lines.append(t("help_footer", ctx.lang))
    return [Reply("\n".join(lines), ephemeral=True)]
