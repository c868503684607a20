"""A card as the text an RNN reads: the opening prompt once, then a short note before each reply when one applies.

An RNN cannot rewrite its past, so nothing is ever inserted "above" the history. What a prompt-rebuilding UI places
at a fixed spot is placed here once, in the opening prompt (constant lorebook entries, by their position), and what
must sit next to the reply (keyed lorebook entries that the new message triggers, post_history_instructions) is
fed as a bracketed `System:` turn right after the user's message, before the character's cue.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from bot.cards.errors import CardError
from bot.cards.lorebook import TokenCounter, constant_entries, scanned_texts, triggered_entries
from bot.cards.macros import has_macros, render_macros
from bot.cards.model import BookEntry, Card
from bot.cards.turns import sanitize_name, sanitize_text, turn

_EXTRA_NEWLINES = re.compile(r"\n{3,}")
_START = re.compile(r"<start>", re.IGNORECASE)
_MACRO_SPEAKER = re.compile(r"^[ \t]*(?:\{\{\s*(user|char)\s*\}\}|<(user|bot)>)[ \t]*[:：][ \t]*", re.IGNORECASE)
_NOTE_SPEAKERS = ("System", "Narrator", "Note")


@dataclass
class Prompt:
    text: str  # everything fed before the first user message; ends with exactly "\n\n"
    greeting: str  # the greeting as shown to the user: macros rendered, no "Name:" prefix


@dataclass(frozen=True)
class _Speakers:
    char: str  # what {{char}} becomes
    user: str  # what {{user}} becomes
    char_label: str  # who speaks in turns
    user_label: str
    rng: random.Random

    def render(self, text: str) -> str:
        return render_macros(text, char=self.char, user=self.user, rng=self.rng).strip()


def select_greeting(card: Card, greeting_index: int | None) -> str:
    """0 or None: first_mes; 1..N: alternate_greetings[N-1]."""
    if not greeting_index:
        return card.first_mes
    if 1 <= greeting_index <= len(card.alternate_greetings):
        return card.alternate_greetings[greeting_index - 1]
    valid = f"0 to {len(card.alternate_greetings)}" if card.alternate_greetings else "only 0"
    raise CardError(f"{card.name} has no greeting {greeting_index} (valid: {valid})")


def build_prompt(
    card: Card,
    *,
    user: str,
    char_label: str | None = None,
    user_label: str | None = None,
    greeting_index: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    max_prompt_tokens: int | None = None,
    rng: random.Random | None = None,
) -> Prompt:
    """Context (system prompt, description, personality, scenario, constant lore), example dialogue, greeting.
    Over `max_prompt_tokens`, example blocks are dropped, oldest first; nothing else is cut."""
    greeting = select_greeting(card, greeting_index)
    speakers = _speakers(card, user, char_label, user_label, rng)
    context = _context_sections(card, speakers, count_tokens)
    examples = _example_blocks(card, speakers)
    greeting_turns, shown = _greeting(greeting, speakers)

    def assembled(dropped: int) -> str:
        return _assemble(context, examples[dropped:], greeting_turns, speakers)

    text = assembled(0)
    if count_tokens and max_prompt_tokens and examples and count_tokens(text) > max_prompt_tokens:
        # The fewest dropped blocks that fit, by bisection: dropping more never adds tokens, and each try tokenizes
        # the whole prompt (one try per block made a large card cost minutes).
        low, high = 1, len(examples)
        while low < high:
            middle = (low + high) // 2
            if count_tokens(assembled(middle)) <= max_prompt_tokens:
                high = middle
            else:
                low = middle + 1
        text = assembled(low)
    return Prompt(text=text, greeting=shown)


def reply_preamble(
    card: Card,
    *,
    message: str,
    recent: Sequence[str],
    user: str,
    char_label: str | None = None,
    count_tokens: Callable[[str], int] | None = None,
    rng: random.Random | None = None,
) -> str:
    """What to feed after the user's turn and before the character's cue: "" or one bracketed System turn holding
    the lorebook entries `message` (and the last scan_depth `recent` messages) trigger, then the card's
    post_history_instructions."""
    speakers = _speakers(card, user, char_label, None, rng)
    notes = [speakers.render(entry.content) for entry in _triggered(card, message, recent, speakers, count_tokens)]
    notes.append(speakers.render(card.post_history_instructions))
    lines = [f"[{text}]" for text in map(sanitize_text, notes) if text]
    return turn(_note_speaker(speakers), "\n".join(lines)) if lines else ""


def _triggered(
    card: Card, message: str, recent: Sequence[str], speakers: _Speakers, count_tokens: TokenCounter
) -> list[BookEntry]:
    book = card.character_book
    if book is None:
        return []

    def key_renderer(key: str) -> str:  # keys may say {{char}}; a random key would be meaningless, so fixed seed
        return render_macros(key, char=speakers.char, user=speakers.user, rng=random.Random(0)) if has_macros(key) \
            else key

    texts = scanned_texts(book, message, recent)
    return triggered_entries(book, texts, key_renderer=key_renderer, count_tokens=count_tokens)


def _note_speaker(speakers: _Speakers) -> str:
    """"System", unless a participant is called that: the note must never pass for their line."""
    taken = {speakers.char_label.casefold(), speakers.user_label.casefold()}
    return next(name for name in _NOTE_SPEAKERS if name.casefold() not in taken)


def _speakers(
    card: Card, user: str, char_label: str | None, user_label: str | None, rng: random.Random | None
) -> _Speakers:
    return _Speakers(
        char=" ".join(card.display_name.split()),
        user=" ".join(user.split()),
        char_label=sanitize_name(card.display_name if char_label is None else char_label, fallback="Character"),
        user_label=sanitize_name(user if user_label is None else user_label),
        rng=rng or random.Random(),
    )


def _context_sections(card: Card, speakers: _Speakers, count_tokens: TokenCounter) -> list[str]:
    before, after = _constant_lore(card, speakers, count_tokens)
    personality, scenario = speakers.render(card.personality), speakers.render(card.scenario)
    sections = [
        speakers.render(card.system_prompt),  # {{original}} is "": the bot has no default system prompt to wrap
        *before,
        speakers.render(card.description),
        f"{speakers.char}'s personality: {personality}" if personality else "",
        f"Scenario: {scenario}" if scenario else "",
        *after,
    ]
    return [_EXTRA_NEWLINES.sub("\n\n", section) for section in sections if section]


def _constant_lore(card: Card, speakers: _Speakers, count_tokens: TokenCounter) -> tuple[list[str], list[str]]:
    if card.character_book is None:
        return [], []
    entries = constant_entries(card.character_book, count_tokens)
    before = [speakers.render(entry.content) for entry in entries if entry.position == "before_char"]
    after = [speakers.render(entry.content) for entry in entries if entry.position != "before_char"]
    return before, after


def _example_blocks(card: Card, speakers: _Speakers) -> list[str]:
    """Each `<START>` block as turns with the same labels the chat uses, so examples teach the real format."""
    blocks = [_dialogue(block, card, speakers) for block in _START.split(card.mes_example)]
    return [block for block in blocks if block]


def _dialogue(block: str, card: Card, speakers: _Speakers) -> str:
    utterances: list[tuple[str, list[str]]] = []
    for line in block.split("\n"):
        speaker, rest = _line_speaker(line, card)
        if speaker:
            utterances.append((speaker, [rest]))
        elif utterances and line.strip():
            utterances[-1][1].append(line)
        elif line.strip():
            utterances.append(("narration", [line]))
    labels = {"char": speakers.char_label, "user": speakers.user_label}
    out = []
    for speaker, lines in utterances:
        text = sanitize_text(speakers.render("\n".join(lines)))
        if text:
            out.append(turn(labels[speaker], text) if speaker in labels else f"{text}\n\n")
    return "".join(out)


def _line_speaker(line: str, card: Card) -> tuple[str | None, str]:
    """("char" | "user" | None, the line without its speaker prefix). Example lines may also use the card name."""
    match = _MACRO_SPEAKER.match(line)
    if match:
        who = (match[1] or match[2]).lower()
        return ("user" if who == "user" else "char"), line[match.end() :]
    for name in {card.name, card.display_name}:
        for colon in (":", "："):
            if line.startswith(name + colon):
                return "char", line[len(name) + 1 :].lstrip()
    return None, line


def _greeting(greeting: str, speakers: _Speakers) -> tuple[str, str]:
    """(the greeting as turns, as shown). Paragraphs starting `{{user}}:` are the user's lines; the rest are the
    character's, consecutive ones joined into one turn."""
    paragraphs = [p for p in _EXTRA_NEWLINES.sub("\n\n", greeting.strip()).split("\n\n") if p.strip()]
    parts: list[tuple[str, str]] = []
    for paragraph in paragraphs:
        match = _MACRO_SPEAKER.match(paragraph)
        is_user = bool(match) and (match[1] or match[2]).lower() == "user"
        text = speakers.render(paragraph[match.end() :] if match else paragraph)
        if text:
            parts.append(("user" if is_user else "char", text))
    shown = "\n\n".join(f"{speakers.user}: {text}" if who == "user" else text for who, text in parts)
    return _merged_turns(parts, speakers), shown


def _merged_turns(parts: list[tuple[str, str]], speakers: _Speakers) -> str:
    merged: list[tuple[str, list[str]]] = []
    for who, text in parts:
        if merged and merged[-1][0] == who:
            merged[-1][1].append(text)
        else:
            merged.append((who, [text]))
    labels = {"char": speakers.char_label, "user": speakers.user_label}
    bodies = [(labels[who], sanitize_text("\n".join(texts))) for who, texts in merged]
    return "".join(turn(label, body) for label, body in bodies if body)


def _assemble(context: list[str], examples: list[str], greeting_turns: str, speakers: _Speakers) -> str:
    head = "\n\n".join(context) + "\n\n" if context else ""
    text = head + "".join(examples) + greeting_turns
    # A card with nothing but a name still needs an opening the model can continue from.
    return text or f"The following is a conversation between {speakers.user} and {speakers.char}.\n\n"
