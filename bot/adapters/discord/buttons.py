"""Buttons under a character's reply on Discord (◀ n/m ▶, ⏹ while it is written), and their presses.

A button's custom id is the press itself (`ButtonPress.encode`): a press needs no message bookkeeping. A press is
acknowledged at once: a refusal as an ephemeral answer (only the presser sees it), anything else as a deferred
update; a swipe is then painted into the message the button is on, through the interaction's `@original`, which is
that message (a webhook's too)."""
from __future__ import annotations

import discord

from bot.commands import ButtonPress, Incoming

PLATFORM = "discord"


def view_of(buttons) -> discord.ui.View | discord.utils._MissingSentinel:
    """One row of buttons (bot.commands.Button), or MISSING. The view is finished at once: discord.py never
    dispatches its presses (the adapter reads every press itself, also after a restart)."""
    if not buttons:
        return discord.utils.MISSING
    view = discord.ui.View(timeout=None)
    for button in buttons:
        view.add_item(discord.ui.Button(label=button.label, custom_id=button.data,
                                        style=discord.ButtonStyle.secondary))
    view.stop()
    return view


def read_press(interaction: discord.Interaction, title: str) -> Incoming | None:
    """The press as the command layer reads it; None for a component that is not one of ours."""
    if interaction.type != discord.InteractionType.component:
        return None
    press = ButtonPress.decode((interaction.data or {}).get("custom_id"))
    if press is None:
        return None
    locale = interaction.locale or interaction.guild_locale
    return Incoming(platform=PLATFORM, channel_id=str(interaction.channel_id), user_id=str(interaction.user.id),
                    user_name=interaction.user.display_name, text="", is_group=interaction.guild_id is not None,
                    language_code=str(locale) if locale else None, chat_title=title, button=press)


class PressedMessage:
    """The message a button is on, edited through the press's interaction (a persona's webhook message cannot be
    edited by the bot otherwise)."""

    def __init__(self, interaction: discord.Interaction):
        self.interaction = interaction

    async def edit(self, *, content: str, allowed_mentions, view):
        await self.interaction.edit_original_response(content=content, allowed_mentions=allowed_mentions,
                                                      view=view)
        return self

    async def delete(self) -> None:
        await self.interaction.delete_original_response()
