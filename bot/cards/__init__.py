"""Character cards: every format people share, read into one normalized `Card`, and turned into RNN prompts.

Parsing never touches the model or the database; `rwkv-bot card ...` imports only this package.
"""
from bot.cards.errors import CardError
from bot.cards.formats import parse_card
from bot.cards.files import find_card, load_card_file, sample_cards_dir, scan_directory
from bot.cards.macros import render_macros
from bot.cards.model import BookEntry, Card, CharacterBook
from bot.cards.png import embed_card
from bot.cards.prompt import Prompt, build_prompt, reply_preamble, select_greeting

__all__ = [
    "BookEntry",
    "Card",
    "CardError",
    "CharacterBook",
    "Prompt",
    "build_prompt",
    "embed_card",
    "find_card",
    "load_card_file",
    "parse_card",
    "render_macros",
    "reply_preamble",
    "sample_cards_dir",
    "scan_directory",
    "select_greeting",
]
