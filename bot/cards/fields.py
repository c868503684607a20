"""Typed reads from a card's JSON object, each failure a CardError naming the field."""
from __future__ import annotations

from bot.cards.decoding import normalize_newlines
from bot.cards.errors import CardError, json_type_name
from bot.cards.limits import MAX_FIELD_CHARS, MAX_LIST_ITEMS, MAX_NAME_CHARS


def text_field(obj: dict, key: str, where: str = "", *, numbers_ok: bool = False) -> str:
    """A text field; absent or null reads as ""."""
    value = obj.get(key)
    if value is None:
        return ""
    if numbers_ok and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise CardError(f"field '{where}{key}' must be text, got {json_type_name(value)}")
    return checked_text(value, f"{where}{key}")


def checked_text(value: str, label: str) -> str:
    if len(value) > MAX_FIELD_CHARS:
        raise CardError(f"field '{label}' is too long ({len(value)} characters; the limit is {MAX_FIELD_CHARS})")
    return normalize_newlines(value)


def name_field(obj: dict, key: str) -> str:
    """The character's name: required, text, not blank. Surrounding spaces are dropped; it is an identifier."""
    if key not in obj or obj[key] is None:
        raise CardError(f"the card has no character name (field '{key}' is missing)")
    value = obj[key]
    if not isinstance(value, str):
        raise CardError(f"the character name (field '{key}') must be text, got {json_type_name(value)}")
    name = normalize_newlines(value).strip()
    if not name:
        raise CardError(f"the character name (field '{key}') is empty")
    if len(name) > MAX_NAME_CHARS:
        raise CardError(f"the character name is too long ({len(name)} characters; the limit is {MAX_NAME_CHARS})")
    return name


def text_list_field(obj: dict, key: str, where: str = "", *, comma_text_ok: bool = False) -> list[str]:
    """A list of text; null reads as []. `comma_text_ok`: "a, b" is accepted for lists people write by hand."""
    value = obj.get(key)
    label = f"{where}{key}"
    if value is None:
        return []
    if comma_text_ok and isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list):
        raise CardError(f"field '{label}' must be a list, got {json_type_name(value)}")
    if len(value) > MAX_LIST_ITEMS:
        raise CardError(f"field '{label}' has too many items ({len(value)}; the limit is {MAX_LIST_ITEMS})")
    items = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise CardError(f"field '{label}[{index}]' must be text, got {json_type_name(item)}")
        items.append(checked_text(item, f"{label}[{index}]"))
    return items


def bool_field(obj: dict, key: str, default: bool, where: str = "") -> bool:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise CardError(f"field '{where}{key}' must be true or false, got {json_type_name(value)}")
    return value


def int_field(obj: dict, key: str, default: int | None, where: str = "") -> int | None:
    """Whole numbers; 3.0 is accepted as 3 because JavaScript editors write numbers that way."""
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CardError(f"field '{where}{key}' must be a whole number, got {json_type_name(value)}")
    return value


def object_field(obj: dict, key: str, where: str = "") -> dict:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CardError(f"field '{where}{key}' must be an object, got {json_type_name(value)}")
    return value


def object_list_field(obj: dict, key: str, where: str = "", limit: int = MAX_LIST_ITEMS) -> list[dict]:
    value = obj.get(key)
    label = f"{where}{key}"
    if value is None:
        return []
    if not isinstance(value, list):
        raise CardError(f"field '{label}' must be a list, got {json_type_name(value)}")
    if len(value) > limit:
        raise CardError(f"field '{label}' has too many items ({len(value)}; the limit is {limit})")
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise CardError(f"field '{label}[{index}]' must be an object, got {json_type_name(item)}")
    return value
