"""The slash-command tree. Every command becomes the text the command layer already understands
(`/params set temperature 0.5`, `/char use "Mira" 1`) and goes through `Commands.handle`, so the logic lives in
one place. Commands registered in bot.commands without a typed signature here appear with one optional `args`
string, so a command added there shows up on Discord without touching this file."""
from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Optional

import discord
from discord import app_commands
from discord.app_commands import locale_str

from bot.commands import GROUP, PARAM_NAMES, PRIVATE
from bot.i18n import LANGS, MESSAGES, t

if TYPE_CHECKING:
    from bot.adapters.discord.adapter import DiscordAdapter

log = logging.getLogger(__name__)

MAX_CHOICES = 25  # Discord refuses an autocomplete answer with more
MAX_DESCRIPTION = 100
_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")
TYPED = {"char", "reset", "undo", "regen", "params", "help", "lang"}
# Answers only the caller needs: deferred ephemerally, so they never clutter the channel.
CALLER_ONLY = {"help", "char list", "char show", "params show", "saves", "debug", "status", "suggest", "export"}

# (English, Chinese) for the parts of the typed commands that bot.i18n does not describe.
TEXTS = {
    "char": ("Characters: list, show, use, import", "角色：列出、查看、使用、导入"),
    "char_use": ("Talk with a character in this channel (restarts the conversation)", "在此频道与角色对话（重新开始对话）"),
    "char_use_name": ("The character", "角色"),
    "char_use_greeting": ("Which greeting (0 = the main one)", "开场白编号（0 = 默认）"),
    "char_list": ("List the characters", "列出角色"),
    "char_show": ("Show a character's card", "查看角色卡"),
    "char_show_name": ("The character (default: the one in this channel)", "角色（默认：本频道的角色）"),
    "char_import": ("Import a character card (admins)", "导入角色卡（管理员）"),
    "char_import_file": ("A PNG, JSON, YAML, TXT or CHARX card", "PNG、JSON、YAML、TXT 或 CHARX 角色卡"),
    "undo_n": ("How many exchanges to take back", "撤回的轮数"),
    "params": ("Sampling parameters of this channel", "本频道的采样参数"),
    "params_show": ("Show the sampling parameters", "查看采样参数"),
    "params_set": ("Set a sampling parameter (admins)", "设置采样参数（管理员）"),
    "params_set_name": ("The parameter", "参数"),
    "params_set_value": ("The new value", "新值"),
    "params_reset": ("Back to the defaults (admins)", "恢复默认（管理员）"),
    "lang_language": ("The language", "语言"),
    "args": ("Arguments, as typed after the command", "参数，与文字命令相同"),
}


def text(key: str) -> locale_str:
    english, chinese = TEXTS[key]
    return locale_str(english[:MAX_DESCRIPTION], zh=chinese[:MAX_DESCRIPTION])


def help_text(help_key: str, fallback: str = "") -> locale_str:
    if help_key not in MESSAGES:  # a command added without its help text yet
        return locale_str((fallback or "-")[:MAX_DESCRIPTION])
    return locale_str(t(help_key, "en")[:MAX_DESCRIPTION] or "-", zh=t(help_key, "zh")[:MAX_DESCRIPTION])


class Chinese(app_commands.Translator):
    """Chinese command descriptions for Discord clients set to Chinese (each string carries its translation)."""

    async def translate(self, string: locale_str, locale: discord.Locale, context) -> Optional[str]:
        if locale in (discord.Locale.chinese, discord.Locale.taiwan_chinese):
            return string.extras.get("zh")
        return None


def quoted(name: str) -> str:
    """A name as one argument of the text command (a name may contain spaces or end in a number)."""
    return f"'{name}'" if '"' in name else f'"{name}"'


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def build_tree(tree: app_commands.CommandTree, adapter: "DiscordAdapter") -> None:
    tree.add_command(char_group(adapter))
    tree.add_command(params_group(adapter))
    add_conversation_commands(tree, adapter)
    for spec in adapter.commands.commands():
        if spec.name not in TYPED and (PRIVATE in spec.places or GROUP in spec.places):  # not the terminal's own
            add_generic(tree, adapter, spec)


def character_choices(adapter: "DiscordAdapter", current: str, user_id: str = "") -> list[app_commands.Choice[str]]:
    """Names the user can see (the shared library and their own cards) containing what was typed, those starting
    with it first; at most 25."""
    typed = current.casefold().strip()
    names = [n for n in adapter.commands.character_names(f"discord:{user_id}" if user_id else None) if len(n) <= 100 and typed in n.casefold()]
    names.sort(key=lambda n: (not n.casefold().startswith(typed), n.casefold()))
    return [app_commands.Choice(name=n, value=n) for n in names[:MAX_CHOICES]]


def char_group(adapter: "DiscordAdapter") -> app_commands.Group:
    group = app_commands.Group(name="char", description=text("char"))

    async def complete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        try:
            return character_choices(adapter, current, str(interaction.user.id))
        except Exception as exc:  # an autocomplete error only shows the user an empty list: log, don't raise
            log.warning("character autocomplete failed: %s", exc)
            return []

    @group.command(name="use", description=text("char_use"))
    @app_commands.describe(name=text("char_use_name"), greeting=text("char_use_greeting"))
    @app_commands.autocomplete(name=complete)
    async def use(interaction: discord.Interaction, name: str,
                  greeting: Optional[app_commands.Range[int, 0, 1000]] = None) -> None:
        command = f"/char use {quoted(name)}" + (f" {greeting}" if greeting is not None else "")
        await adapter.slash(interaction, command)

    @group.command(name="list", description=text("char_list"))
    async def list_(interaction: discord.Interaction) -> None:
        await adapter.slash(interaction, "/char list", ephemeral=True)

    @group.command(name="show", description=text("char_show"))
    @app_commands.describe(name=text("char_show_name"))
    @app_commands.autocomplete(name=complete)
    async def show(interaction: discord.Interaction, name: Optional[str] = None) -> None:
        await adapter.slash(interaction, f"/char show {name or ''}".strip(), ephemeral=True)

    @group.command(name="import", description=text("char_import"))
    @app_commands.describe(file=text("char_import_file"))
    async def import_(interaction: discord.Interaction, file: discord.Attachment) -> None:
        # Who may import is the command layer's rule (bot admins; anyone where own cards are allowed).
        await adapter.slash(interaction, "/char import", attachment=file, ephemeral=True)

    return group


def params_group(adapter: "DiscordAdapter") -> app_commands.Group:
    group = app_commands.Group(name="params", description=text("params"))

    @group.command(name="show", description=text("params_show"))
    async def show(interaction: discord.Interaction) -> None:
        await adapter.slash(interaction, "/params show", ephemeral=True)

    @group.command(name="set", description=text("params_set"))
    @app_commands.describe(name=text("params_set_name"), value=text("params_set_value"))
    @app_commands.choices(name=[app_commands.Choice(name=n, value=n) for n in PARAM_NAMES])
    async def set_(interaction: discord.Interaction, name: app_commands.Choice[str], value: float) -> None:
        await adapter.slash(interaction, f"/params set {name.value} {number(value)}", admin=True)

    @group.command(name="reset", description=text("params_reset"))
    async def reset(interaction: discord.Interaction) -> None:
        await adapter.slash(interaction, "/params reset", admin=True)

    return group


def add_conversation_commands(tree: app_commands.CommandTree, adapter: "DiscordAdapter") -> None:
    @tree.command(name="reset", description=help_text("help_reset"))
    async def reset(interaction: discord.Interaction) -> None:
        await adapter.slash(interaction, "/reset")

    @tree.command(name="undo", description=help_text("help_undo"))
    @app_commands.describe(n=text("undo_n"))
    async def undo(interaction: discord.Interaction, n: app_commands.Range[int, 1, 1000] = 1) -> None:
        await adapter.slash(interaction, f"/undo {n}")

    @tree.command(name="regen", description=help_text("help_regen"))
    async def regen(interaction: discord.Interaction) -> None:
        await adapter.slash(interaction, "/regen")

    @tree.command(name="help", description=help_text("help_help"))
    async def help_(interaction: discord.Interaction) -> None:
        await adapter.slash(interaction, "/help", ephemeral=True)

    @tree.command(name="lang", description=help_text("help_lang"))
    @app_commands.describe(language=text("lang_language"))
    @app_commands.choices(language=[app_commands.Choice(name=code, value=code) for code in LANGS])
    async def lang(interaction: discord.Interaction, language: app_commands.Choice[str]) -> None:
        await adapter.slash(interaction, f"/lang {language.value}")


def add_generic(tree: app_commands.CommandTree, adapter: "DiscordAdapter", spec) -> None:
    """`/name [args]` for a command without a typed signature here."""
    if not _COMMAND_NAME.match(spec.name) or spec.name != spec.name.lower():
        log.warning("command /%s cannot be a Discord slash command (name rules); type it as text instead", spec.name)
        return
    name, admin = spec.name, spec.admin

    async def callback(interaction: discord.Interaction, args: Optional[str] = None) -> None:
        await adapter.slash(interaction, f"/{name} {args or ''}".strip(), admin=admin, ephemeral=name in CALLER_ONLY,
                            defer=False)

    usage = locale_str(spec.usage[:MAX_DESCRIPTION]) if spec.usage else text("args")
    callback = app_commands.describe(args=usage)(callback)
    description = help_text(spec.help_key, fallback=spec.usage or name)
    slash_command = app_commands.Command(name=name, description=description, callback=callback)
    if PRIVATE not in spec.places:  # e.g. /replymode: servers only, not offered in DMs
        slash_command = app_commands.guild_only(slash_command)
    tree.add_command(slash_command)
