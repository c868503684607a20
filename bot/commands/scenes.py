"""Scenes: /cast (several characters in one channel) and /persona (who you are in it)."""
from __future__ import annotations

from bot.commands.base import CharacterLine, Context, Reply, command, first_arg
from bot.commands.chat import _find
from bot.i18n import t

CAST_USAGE = "add NAME | remove NAME | list"
PERSONA_USAGE = "NAME [description] | clear"


@command("cast", usage=CAST_USAGE)
async def cast(cmds, ctx: Context, args: str):
    action, rest = first_arg(args)
    action = action.lower()
    name = rest.strip().strip("'\"")
    if action in ("", "list"):
        return [_cast_list(cmds, ctx, await cmds.conversations.cast(ctx.key))]
    if action in ("add", "remove") and not name:
        return [Reply(t("bad_usage", ctx.lang, name="cast", usage=f"{action} NAME"), ephemeral=True)]
    if action == "add":
        card = _find(cmds, ctx, name)
        members = await cmds.conversations.cast_add(ctx.key, card)
        return [Reply(t("cast_added", ctx.lang, name=members[-1].label)), _cast_list(cmds, ctx, members)]
    if action == "remove":
        member = await cmds.conversations.cast_remove(ctx.key, name)
        return [Reply(t("cast_removed", ctx.lang, name=member.label))]
    return [Reply(t("bad_usage", ctx.lang, name="cast", usage=CAST_USAGE), ephemeral=True)]


def _cast_list(cmds, ctx: Context, members) -> Reply:
    lines = [t("cast_list", ctx.lang, count=len(members), limit=cmds.conversations.max_cast)]
    for index, member in enumerate(members):
        lines.append(f"- {member.label}" + (f" ({t('cast_own', ctx.lang)})" if index == 0 else ""))
    return Reply("\n".join(lines), ephemeral=True)


@command("persona", usage=PERSONA_USAGE)
async def persona(cmds, ctx: Context, args: str):
    name, description = first_arg(args)
    if not name:
        shown = await cmds.conversations.persona(ctx.key, ctx.user_key)
        if shown is None:
            return [Reply(t("persona_none", ctx.lang, name=cmds.conversations.speaker_name(ctx.user_name)),
                          ephemeral=True)]
        return [Reply(t("persona_is", ctx.lang, name=shown["name"], description=shown["description"] or "-"),
                      ephemeral=True)]
    if name.lower() == "clear" and not description:
        await cmds.conversations.clear_persona(ctx.key, ctx.user_key)
        return [Reply(t("persona_cleared", ctx.lang, name=cmds.conversations.speaker_name(ctx.user_name)))]
    chosen = await cmds.conversations.set_persona(ctx.key, ctx.user_key, name, description)
    return [Reply(t("persona_set", ctx.lang, name=chosen["name"]))]


async def name_the_speakers(conversations, ctx: Context, outputs: list) -> list:
    """A greeting said in a scene shows its speaker's name like every line there (Telegram, the terminal)."""
    if any(isinstance(o, CharacterLine) for o in outputs) and len(await conversations.cast(ctx.key)) > 1:
        for output in outputs:
            if isinstance(output, CharacterLine):
                output.named = True
    return outputs
