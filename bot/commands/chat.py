"""The everyday commands: /start /char /reset /undo /regen /params /format /lang."""
from __future__ import annotations

from bot.commands.base import CharacterLine, Context, Reply, command, first_arg, parse_number, split_args
from bot.conversations import ConversationError
from bot.engine.params import PARAM_NAMES, SPECS, ParamError
from bot.i18n import LANGS, param_help, t


@command("start")
async def start(cmds, ctx: Context, args: str):
    view = await cmds.conversations.view(ctx.key)
    card = view.character
    if card is None:
        raise ConversationError("no_character")
    greeting = view.settings.get("greeting")
    if greeting is None:  # a channel's first contact: start it with the default character
        greeting = await cmds.conversations.use_character(ctx.key, card, 0,
                                                          user_label=None if ctx.is_group else ctx.user_name)
    return [CharacterLine(card.display_name, greeting, card.avatar)] if greeting else []


@command("char", usage="list | show [NAME] | use NAME [GREETING#] | import | delete NAME")
async def char(cmds, ctx: Context, args: str):
    action, rest = first_arg(args)
    action = action.lower()
    if action in ("", "list"):
        return [_char_list(cmds, ctx)]
    if action == "show":
        return [await _char_show(cmds, ctx, rest)]
    if action == "use":
        return await _char_use(cmds, ctx, rest)
    if action == "import":
        return [await _char_import(cmds, ctx)]
    if action == "delete":
        return [await _char_delete(cmds, ctx, rest)]
    # `/char NAME` is shorthand for `/char use NAME`
    return await _char_use(cmds, ctx, args)


def _find(cmds, ctx: Context, name: str):
    """A card this user may see: the shared library and their own (a bot admin sees everyone's)."""
    card = cmds.library.find(name, ctx.user_key, everything=ctx.is_bot_admin)
    if card is None:
        raise ConversationError("unknown_character", name=name[:64])
    return card


def _char_list(cmds, ctx: Context) -> Reply:
    listed = cmds.library.visible(ctx.user_key, everything=ctx.is_bot_admin)
    if not listed:
        return Reply(t("no_character", ctx.lang), ephemeral=True)
    lines = [t("char_list", ctx.lang, count=len(listed))]
    for entry in listed:
        card = entry.card
        owner = "" if entry.owner is None else " " + (t("char_yours", ctx.lang) if entry.owner == ctx.user_key
                                                      else t("char_owned_by", ctx.lang, owner=entry.owner))
        lines.append(f"- {card.name}" + (f" ({len(card.alternate_greetings) + 1} greetings)"
                                         if card.alternate_greetings else "") + owner)
    return Reply("\n".join(lines), ephemeral=True)


async def _char_show(cmds, ctx: Context, name: str) -> Reply:
    if name:
        card = _find(cmds, ctx, name)
        context_line = ""
    else:
        view = await cmds.conversations.view(ctx.key)
        card = view.character
        if card is None:
            raise ConversationError("no_character")
        context_line = t("params_context", ctx.lang, used=view.context_tokens, limit=view.max_context,
                         percent=round(100 * view.context_tokens / view.max_context))
    parts = [f"{card.name}" + (f" ({t('card_by', ctx.lang)} {card.creator})" if card.creator else "")]
    if card.tags:
        parts.append(f"{t('card_tags', ctx.lang)}: " + ", ".join(card.tags))
    for label, text in (("card_description", card.description), ("card_personality", card.personality),
                        ("card_scenario", card.scenario)):
        if text:
            parts.append(f"{t(label, ctx.lang)}: {text}")
    greetings = 1 + len(card.alternate_greetings)
    parts.append(t("card_greetings", ctx.lang, count=greetings, name=card.name, high=greetings - 1))
    if card.character_book and card.character_book.entries:
        parts.append(t("card_lorebook", ctx.lang, count=len(card.character_book.entries)))
    if context_line:
        parts.append(context_line)
    return Reply("\n\n".join(parts), ephemeral=True)


async def _char_use(cmds, ctx: Context, args: str):
    words = split_args(args)
    greeting_index = parse_number(words[-1]) if len(words) > 1 else None
    if greeting_index is not None:
        name = args.strip().rsplit(None, 1)[0].strip().strip("'\"")
    else:
        greeting_index = 0
        name = args.strip().strip("'\"")
    if not name:
        return [Reply(t("bad_usage", ctx.lang, name="char", usage="use NAME [GREETING#]"), ephemeral=True)]
    card = _find(cmds, ctx, name)
    high = len(card.alternate_greetings)
    if not 0 <= greeting_index <= high:
        raise ConversationError("bad_greeting", name=card.name, high=high)
    greeting = await cmds.conversations.use_character(ctx.key, card, greeting_index,
                                                      user_label=None if ctx.is_group else ctx.user_name)
    out = [Reply(t("char_using", ctx.lang, name=card.name))]
    if greeting:
        out.append(CharacterLine(card.display_name, greeting, card.avatar))
    return out


def may_import(library, ctx: Context) -> bool:
    """Whether `/char import` can take this user's file (adapters ask before downloading it): bot admins into
    the shared library; anyone into their own cards where the owner allows it."""
    return ctx.is_bot_admin or library.user_imports


async def _char_import(cmds, ctx: Context) -> Reply:
    if not may_import(cmds.library, ctx):
        return Reply(t("not_bot_admin", ctx.lang), ephemeral=True)
    if ctx.attachment is None:
        return Reply(t("import_needs_file", ctx.lang), ephemeral=True)
    filename, data = ctx.attachment
    owner = None if ctx.is_bot_admin else ctx.user_key
    card, is_new = await cmds.library.import_card(filename, data, owner=owner)
    if not is_new:
        return Reply(t("char_already", ctx.lang, name=card.name))
    return Reply(t("char_imported" if owner is None else "char_imported_own", ctx.lang, name=card.name,
                   format=card.source_format))


async def _char_delete(cmds, ctx: Context, name: str) -> Reply:
    name = name.strip().strip("'\"")
    if not name:
        return Reply(t("bad_usage", ctx.lang, name="char", usage="delete NAME"), ephemeral=True)
    deleted = await cmds.library.delete(name, ctx.user_key, bot_admin=ctx.is_bot_admin)
    return Reply(t("char_deleted", ctx.lang, name=deleted.card.name))


@command("reset")
async def reset(cmds, ctx: Context, args: str):
    greeting = await cmds.conversations.reset(ctx.key)
    view = await cmds.conversations.view(ctx.key)
    out = [Reply(t("reset_done", ctx.lang))]
    if greeting and view.character:
        out.append(CharacterLine(view.character.display_name, greeting, view.character.avatar))
    return out


@command("undo", usage="[N]")
async def undo(cmds, ctx: Context, args: str):
    words = split_args(args)
    count = parse_number(words[0]) if len(words) == 1 else 1 if not words else None
    if count is None or count < 1:
        raise ConversationError("bad_count", low=1)
    removed = await cmds.conversations.undo(ctx.key, count)
    return [Reply(t("undo_done", ctx.lang, count=removed) if removed else t("undo_nothing", ctx.lang))]


@command("regen", aliases=("retry",))
async def regen(cmds, ctx: Context, args: str):
    return [await cmds.conversations.regen(ctx.key)]


@command("params", usage="show | set NAME VALUE [NAME VALUE ...] | reset", aliases=("param",))
async def params(cmds, ctx: Context, args: str):
    action, rest = first_arg(args)
    action = action.lower()
    if action in ("", "show"):
        return [await _params_show(cmds, ctx)]
    if action in ("set", "reset") and not ctx.is_admin:
        return [Reply(t("not_admin", ctx.lang), ephemeral=True)]
    if action == "set":
        words = split_args(rest)
        if not words or len(words) % 2:
            names = ", ".join(PARAM_NAMES)
            return [Reply(t("bad_usage", ctx.lang, name="params", usage=f"set NAME VALUE [NAME VALUE ...]; NAME: {names}"),
                          ephemeral=True)]
        changes = {}
        for name, value in zip(words[::2], words[1::2]):
            if name.lower() not in SPECS:
                raise ParamError(f"unknown parameter {name[:40]!r}; valid: {', '.join(PARAM_NAMES)}")
            changes[name.lower()] = value
        new = await cmds.conversations.set_params(ctx.key, changes)
        shown = ", ".join(f"{k} = {getattr(new, k)}" for k in changes)
        return [Reply(t("params_set", ctx.lang, changes=shown))]
    if action == "reset":
        await cmds.conversations.reset_params(ctx.key)
        return [Reply(t("params_reset", ctx.lang))]
    return [Reply(t("bad_usage", ctx.lang, name="params", usage="show | set NAME VALUE ... | reset"), ephemeral=True)]


async def _params_show(cmds, ctx: Context) -> Reply:
    view = await cmds.conversations.view(ctx.key)
    lines = [t("params_title", ctx.lang)]
    for name in PARAM_NAMES:
        mark = "*" if name in view.overrides else " "
        spec = SPECS[name]
        lines.append(f"{mark} {name} = {getattr(view.params, name)}  ({spec.low:g}..{spec.high:g}; "
                     f"{param_help(name, ctx.lang)})")
    lines.append(t("params_format", ctx.lang, format=view.chat_format))
    lines.append(t("params_context", ctx.lang, used=view.context_tokens, limit=view.max_context,
                   percent=round(100 * view.context_tokens / view.max_context)))
    return Reply("\n".join(lines), ephemeral=True)


@command("format", admin=True, usage="names | user-assistant")
async def format_(cmds, ctx: Context, args: str):
    chat_format = args.strip().lower()
    greeting = await cmds.conversations.set_chat_format(ctx.key, chat_format)
    out = [Reply(t("format_set", ctx.lang, format=chat_format))]
    view = await cmds.conversations.view(ctx.key)
    if greeting and view.character:
        out.append(CharacterLine(view.character.display_name, greeting, view.character.avatar))
    return out


@command("lang", usage="en | zh")
async def lang(cmds, ctx: Context, args: str):
    choice = args.strip().lower()
    if choice not in LANGS:
        return [Reply(t("bad_usage", ctx.lang, name="lang", usage=" | ".join(LANGS)), ephemeral=True)]
    await cmds.conversations.set_setting(ctx.key, "lang", choice)
    return [Reply(t("lang_set", choice))]
