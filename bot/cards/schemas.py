"""JSON objects (from a .json file, a PNG chunk, a CHARX archive or YAML) to cards, for every JSON schema we know."""
from __future__ import annotations

from typing import Callable

from bot.cards.errors import CardError, json_type_name
from bot.cards.fields import (
    bool_field,
    int_field,
    name_field,
    object_field,
    object_list_field,
    text_field,
    text_list_field,
)
from bot.cards.limits import MAX_BOOK_ENTRIES, MAX_BOOK_KEYS
from bot.cards.model import BookEntry, Card, CharacterBook

V1_KEYS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
_WEBUI_KEYS = ("bot_persona", "greeting", "example_message", "user", "use_qa")
_POSITIONS_BY_NUMBER = {0: "before_char", 1: "after_char"}


def card_from_value(value: object) -> Card:
    """A parsed JSON/YAML document to a card; `source_format` is the schema name (v1, v2, v3, pygmalion, ...)."""
    if isinstance(value, list):
        raise CardError("the file holds a list, not a character card (expected one object)")
    if not isinstance(value, dict):
        raise CardError(f"the file holds {json_type_name(value)}, not a character card (expected an object)")
    return _READERS[detect_schema(value)](value)


def detect_schema(obj: dict) -> str:
    if "spec" in obj:
        return _schema_from_spec(obj["spec"])
    if "char_name" in obj:
        return "pygmalion"
    if "bot" in obj and any(key in obj for key in _WEBUI_KEYS):
        return "rwkv_webui"
    if "name" in obj and ("context" in obj or "greeting" in obj) and not ("description" in obj or "first_mes" in obj):
        return "ooba"
    if "name" in obj:
        return "v1"
    if isinstance(obj.get("data"), dict):
        return "v2"
    raise CardError("the card has no character name (no 'name', 'char_name' or 'bot' field)")


def _schema_from_spec(spec: object) -> str:
    if not isinstance(spec, str):
        raise CardError(f"field 'spec' must be text, got {json_type_name(spec)}")
    schemas = {"chara_card_v1": "v1", "chara_card_v2": "v2", "chara_card_v3": "v3"}
    if spec not in schemas:
        raise CardError(f"unsupported card spec '{spec[:60]}' (expected chara_card_v2 or chara_card_v3)")
    return schemas[spec]


def _v1_fields(obj: dict, where: str = "") -> dict:
    return {
        "name": name_field(obj, "name"),
        **{key: text_field(obj, key, where) for key in V1_KEYS[1:]},
    }


def _read_v1(obj: dict) -> Card:
    return Card(**_v1_fields(obj), source_format="v1")


def _spec_data(obj: dict) -> dict:
    """V2/V3 content lives in `data`; old top-level V1 fields fill only what `data` leaves out."""
    if "data" not in obj:
        raise CardError("the card has no 'data' object (required by chara_card_v2/v3)")
    data = object_field(obj, "data")
    legacy = {key: obj[key] for key in V1_KEYS if key in obj}
    return {**legacy, **data}


def _v2_fields(data: dict) -> dict:
    where = "data."
    return {
        **_v1_fields(data, where),
        "creator_notes": text_field(data, "creator_notes", where),
        "system_prompt": text_field(data, "system_prompt", where),
        "post_history_instructions": text_field(data, "post_history_instructions", where),
        "alternate_greetings": text_list_field(data, "alternate_greetings", where),
        "tags": text_list_field(data, "tags", where, comma_text_ok=True),
        "creator": text_field(data, "creator", where),
        "character_version": text_field(data, "character_version", where, numbers_ok=True),
        "extensions": object_field(data, "extensions", where),
        "character_book": read_book(data.get("character_book")),
    }


def _read_v2(obj: dict) -> Card:
    return Card(**_v2_fields(_spec_data(obj)), source_format="v2")


def _read_v3(obj: dict) -> Card:
    data = _spec_data(obj)
    where = "data."
    return Card(
        **_v2_fields(data),
        nickname=text_field(data, "nickname", where).strip(),
        group_only_greetings=text_list_field(data, "group_only_greetings", where),
        assets=object_list_field(data, "assets", where),
        creator_notes_multilingual=_text_map(data, "creator_notes_multilingual", where),
        source=text_list_field(data, "source", where),
        creation_date=int_field(data, "creation_date", None, where),
        modification_date=int_field(data, "modification_date", None, where),
        source_format="v3",
    )


def _text_map(obj: dict, key: str, where: str) -> dict:
    mapping = object_field(obj, key, where)
    for language in mapping:
        text_field(mapping, language, f"{where}{key}.")
    return mapping


def _read_pygmalion(obj: dict) -> Card:
    return Card(
        name=name_field(obj, "char_name"),
        description=text_field(obj, "char_persona"),
        scenario=text_field(obj, "world_scenario"),
        first_mes=text_field(obj, "char_greeting"),
        mes_example=text_field(obj, "example_dialogue"),
        source_format="pygmalion",
    )


def _read_ooba(obj: dict) -> Card:
    return Card(
        name=name_field(obj, "name"),
        description=text_field(obj, "context"),
        first_mes=text_field(obj, "greeting"),
        mes_example=text_field(obj, "example_dialogue"),
        source_format="ooba",
    )


def _read_rwkv_webui(obj: dict) -> Card:
    """The original RWKV role-play web UI's own card. Its `{{char}}` was the bot name cut at the first '-'."""
    name = name_field(obj, "bot")
    short_name = name.split("-", 1)[0].strip()
    settings = {"user": text_field(obj, "user").strip()} if "user" in obj else {}
    if "use_qa" in obj:
        settings["use_qa"] = bool_field(obj, "use_qa", False)
    return Card(
        name=name,
        nickname=short_name if short_name and short_name != name else "",
        description=text_field(obj, "bot_persona"),
        first_mes=text_field(obj, "greeting"),
        mes_example=text_field(obj, "example_message"),
        extensions={"rwkv_webui": settings} if settings else {},
        source_format="rwkv_webui",
    )


_READERS: dict[str, Callable[[dict], Card]] = {
    "v1": _read_v1,
    "v2": _read_v2,
    "v3": _read_v3,
    "pygmalion": _read_pygmalion,
    "ooba": _read_ooba,
    "rwkv_webui": _read_rwkv_webui,
}


def read_book(value: object) -> CharacterBook | None:
    if value is None:
        return None
    where = "character_book."
    if not isinstance(value, dict):
        raise CardError(f"field 'character_book' must be an object, got {json_type_name(value)}")
    book = dict(value)
    # SillyTavern's stand-alone world files key entries by id; the embedded form is a list. Accept both.
    if isinstance(book.get("entries"), dict):
        book["entries"] = list(book["entries"].values())
    entries = [_read_entry(entry, f"{where}entries[{index}].")
               for index, entry in enumerate(object_list_field(book, "entries", where, limit=MAX_BOOK_ENTRIES))]
    keys = sum(len(entry.keys) + len(entry.secondary_keys) for entry in entries)
    if keys > MAX_BOOK_KEYS:
        raise CardError(f"the lorebook has too many keys ({keys} in all its entries; the limit is {MAX_BOOK_KEYS})")
    return CharacterBook(
        name=text_field(book, "name", where),
        description=text_field(book, "description", where),
        entries=entries,
        scan_depth=_non_negative(book, "scan_depth", where),
        token_budget=_non_negative(book, "token_budget", where),
        recursive_scanning=bool_field(book, "recursive_scanning", False, where),
        extensions=object_field(book, "extensions", where),
    )


def _non_negative(obj: dict, key: str, where: str) -> int | None:
    value = int_field(obj, key, None, where)
    if value is not None and value < 0:
        raise CardError(f"field '{where}{key}' must not be negative")
    return value


def _read_entry(entry: dict, where: str) -> BookEntry:
    return BookEntry(
        keys=text_list_field(entry, "keys", where, comma_text_ok=True),
        secondary_keys=text_list_field(entry, "secondary_keys", where, comma_text_ok=True),
        content=text_field(entry, "content", where),
        enabled=bool_field(entry, "enabled", True, where),
        insertion_order=int_field(entry, "insertion_order", 0, where),
        case_sensitive=bool_field(entry, "case_sensitive", False, where),
        constant=bool_field(entry, "constant", False, where),
        selective=bool_field(entry, "selective", False, where),
        position=_position(entry, where),
        priority=int_field(entry, "priority", 0, where),
        name=text_field(entry, "name", where),
        comment=text_field(entry, "comment", where),
        extensions=object_field(entry, "extensions", where),
        use_regex=bool_field(entry, "use_regex", False, where),
    )


def _position(entry: dict, where: str) -> str:
    value = entry.get("position")
    if value is None or value == "":
        return "before_char"
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value in _POSITIONS_BY_NUMBER:
        return _POSITIONS_BY_NUMBER[value]
    raise CardError(f"field '{where}position' must be 'before_char' or 'after_char', got {json_type_name(value)}")
