"""Plain-text cards: Chub-style `Section:` files, W++ and PList bracket cards, and Glow-style free prose.

A text file is read as sections only when its first non-blank line is a known section header; otherwise the whole
text is the description and the file stem is the name (W++, PList and prose differ only in `source_format`).
"""
from __future__ import annotations

import re
from pathlib import PurePath

from bot.cards.errors import CardError
from bot.cards.fields import checked_text
from bot.cards.limits import MAX_LIST_ITEMS, MAX_NAME_CHARS
from bot.cards.model import Card

# Header words, as people write them in English and Chinese, to the card field they fill.
_SECTION_FIELDS = {
    "name": "name", "character name": "name", "char name": "name",
    "名字": "name", "名称": "name", "姓名": "name", "角色名": "name",
    "description": "description", "persona": "description", "character description": "description",
    "描述": "description", "简介": "description", "人设": "description", "角色设定": "description",
    "personality": "personality", "personality summary": "personality", "性格": "personality",
    "scenario": "scenario", "场景": "scenario", "情景": "scenario",
    "first message": "first_mes", "first_mes": "first_mes", "greeting": "first_mes",
    "开场白": "first_mes", "问候语": "first_mes",
    "alternate greeting": "alternate_greetings", "alternate greetings": "alternate_greetings",
    "example dialogue": "mes_example", "example dialogues": "mes_example", "example dialog": "mes_example",
    "example messages": "mes_example", "examples of dialogue": "mes_example", "mes_example": "mes_example",
    "对话示例": "mes_example", "示例对话": "mes_example",
    "system prompt": "system_prompt", "系统提示": "system_prompt",
    "post history instructions": "post_history_instructions",
    "creator notes": "creator_notes", "creator's notes": "creator_notes",
    "tags": "tags", "标签": "tags",
    "creator": "creator", "author": "creator", "作者": "creator",
    "character version": "character_version", "version": "character_version",
}
_HEADER_WORDS = "|".join(sorted((re.escape(word) for word in _SECTION_FIELDS), key=len, reverse=True))
# "Name: X", "**Name:** X", "**Name**: X", "## Personality" (a Markdown heading needs no colon), "性格：" ...
# The blanks before the word are taken whole, never given back (`(?=(?P<b>..))(?P=b)` is an atomic group, which
# Python 3.10 lacks): what follows them never starts with a blank, so nothing is lost, and a line of blanks costs
# linear time to refuse instead of one try per way of splitting it (this runs on every line of an uploaded file,
# and a regex holds the interpreter while it runs). After the word the rest of the line always matches.
_BLANKS = r"(?=(?P<{0}>[ \t]*))(?P={0})"
_HEADER = re.compile(
    rf"^{_BLANKS.format('b1')}(?:(?P<hashes>\#{{1,6}}){_BLANKS.format('b2')})?(?:(?:\*\*|__){_BLANKS.format('b3')})?"
    rf"(?P<word>{_HEADER_WORDS})(?!\w)"
    rf"[ \t]*(?:(?:\*\*|__)[ \t]*)?(?P<colon>[:：])?[ \t]*(?:(?:\*\*|__)[ \t]*)?(?P<rest>.*)$",
    re.IGNORECASE,
)
# W++: `[character("Mira") {` or `Mind("kind" + "curious")`. The word must start at a word boundary: tried at every
# position inside a long word, `\w+` would backtrack through the rest of it each time (quadratic).
_WPP = re.compile(r"\[\s*\w+\s*\(\s*\"[^\"\n]*\"\s*\)\s*\{|\b\w+\s*\(\s*\"[^\"\n]*\"(?:\s*\+\s*\"[^\"\n]*\")+\s*\)")
# PList: a bracketed group `[Mira: kind, curious; Mira's clothes: ...]`, read group by group (linear) and checked in
# code: a ':' within its first 200 characters and on its first line, then a ';' after it.
_BRACKET_GROUP = re.compile(r"\[([^\[\]]*)\]")
_PLIST_NAME_CHARS = 200
# Only the start of a text decides its kind (the markers open a card); the rest of a 100,000-character field is
# never scanned for them.
_KIND_SCAN_CHARS = 16 * 1024


def card_from_text(text: str, filename: str) -> Card:
    if not text.strip():
        raise CardError("the file is empty")
    first_line = next(line for line in text.split("\n") if line.strip())
    if _header(first_line):
        return _card_from_sections(text, filename)
    return Card(
        name=_name_from_filename(filename),
        description=checked_text(text.strip(), "description"),
        source_format=_prose_kind(text),
    )


def _prose_kind(text: str) -> str:
    start = text[:_KIND_SCAN_CHARS]
    if _WPP.search(start):
        return "text_wpp"
    if any(_is_plist_group(group[1]) for group in _BRACKET_GROUP.finditer(start)):
        return "text_plist"
    return "text_prose"


def _is_plist_group(inside: str) -> bool:
    colon = inside.find(":", 1, _PLIST_NAME_CHARS + 1)
    return colon != -1 and "\n" not in inside[:colon] and ";" in inside[colon + 1 :]


def _header(line: str) -> tuple[str, str] | None:
    """(field, text after the header) when `line` is a section header."""
    match = _HEADER.match(line)
    if not match or not (match["colon"] or match["hashes"]):
        return None
    return _SECTION_FIELDS[match["word"].lower()], match["rest"]


def _card_from_sections(text: str, filename: str) -> Card:
    sections = _split_sections(text)
    fields: dict = {"alternate_greetings": []}
    for field, body in sections:
        _store(fields, field, body)
    if len(fields["alternate_greetings"]) > MAX_LIST_ITEMS:
        count = len(fields["alternate_greetings"])
        raise CardError(f"too many alternate greetings ({count}; the limit is {MAX_LIST_ITEMS})")
    name = _split_name(fields) or _name_from_filename(filename)
    if len(name) > MAX_NAME_CHARS:
        raise CardError(f"the character name is too long ({len(name)} characters; the limit is {MAX_NAME_CHARS})")
    tags = [tag.strip() for tag in fields.pop("tags", "").split(",") if tag.strip()]
    return Card(name=name, tags=tags[:MAX_LIST_ITEMS], **fields, source_format="text_sections")


def _split_name(fields: dict) -> str:
    """The name is the first line of its section; lines under it that are not a header belong to the description."""
    name, _, rest = fields.pop("name", "").partition("\n")
    if rest.strip():
        fields["description"] = "\n\n".join(part for part in (rest.strip(), fields.get("description", "")) if part)
    return name.strip()


def _split_sections(text: str) -> list[tuple[str, str]]:
    sections: list[tuple[str, list[str]]] = []
    for line in text.split("\n"):
        header = _header(line)
        if header:
            sections.append((header[0], [header[1]]))
        elif sections:
            sections[-1][1].append(line)
    return [(field, "\n".join(lines).strip()) for field, lines in sections]


def _store(fields: dict, field: str, body: str) -> None:
    """A repeated greeting header adds an alternate greeting; other repeats continue the same field."""
    body = checked_text(body, field)
    if field == "alternate_greetings" or (field == "first_mes" and "first_mes" in fields):
        if body:
            fields["alternate_greetings"].append(body)
    elif field in fields and body:
        fields[field] = checked_text(f"{fields[field]}\n\n{body}".strip(), field)
    elif field not in fields:
        fields[field] = body


def _name_from_filename(filename: str) -> str:
    """Prose and bracket cards have no name field; the file is named after the character."""
    stem = PurePath(filename.replace("\\", "/")).stem.strip() if filename else ""
    if not stem:
        raise CardError("a text card without a 'Name:' line needs a file name to take the character's name from")
    return stem[:MAX_NAME_CHARS]
