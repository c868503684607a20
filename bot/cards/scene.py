"""Cards in a scene: how a character who joins a channel is introduced to the model, and how often it speaks.

The channel's first character is read the usual way (its whole opening prompt). A character added later cannot be
written "above" the history an RNN has already read, so its card is fed once, as a bracketed note turn, right
before the next line: the part of the card that says who it is (description, personality), with its macros
rendered for this scene. Greetings and example dialogue stay out: they would be turns of a conversation that never
happened.
"""
from __future__ import annotations

import random

from bot.cards.macros import render_macros
from bot.cards.model import Card
from bot.cards.turns import sanitize_text

DEFAULT_TALKATIVENESS = 0.5  # SillyTavern's default for a card that does not say


def talkativeness(card: Card) -> float:
    """How eager the character is to answer a line nobody addressed to anyone (Tavern V2
    `extensions.talkativeness`, 0..1; strings such as "0.8" too, as the web UI writes them)."""
    value = (card.extensions or {}).get("talkativeness", DEFAULT_TALKATIVENESS)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return DEFAULT_TALKATIVENESS
    if number != number:  # NaN
        return DEFAULT_TALKATIVENESS
    return min(1.0, max(0.0, number))


def introduction(card: Card, *, char_label: str, user: str) -> str:
    """The note body that introduces `card` to a scene: one line per part, never a blank line (a note is one
    turn). Macros are rendered with a generator seeded by the card, so the same card reads the same every time."""
    rng = random.Random(card.content_hash())
    char = " ".join(card.display_name.split())

    def render(text: str) -> str:
        return sanitize_text(render_macros(text, char=char, user=user, rng=rng))

    parts = [f"{char_label} joins the scene."]
    description, personality = render(card.description), render(card.personality)
    if description:
        parts.append(description)
    if personality:
        parts.append(f"{char}'s personality: {personality}")
    return "\n".join(f"[{part}]" for part in parts)


def names_of(card: Card) -> tuple[str, ...]:
    """The names a user may call the character by: its name and its nickname."""
    return tuple(dict.fromkeys(n for n in (card.name.strip(), card.nickname.strip()) if n))
