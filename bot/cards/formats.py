"""parse_card: any supported card file, recognized by its content (and its name, for YAML and text cards)."""
from __future__ import annotations

import zipfile
from pathlib import PurePath

from bot.cards import charx, png
from bot.cards.decoding import decode_text, load_json, load_yaml
from bot.cards.errors import CardError
from bot.cards.limits import MAX_FILE_BYTES, MIB
from bot.cards.model import Card
from bot.cards.schemas import card_from_value
from bot.cards.text import card_from_text

_YAML_SUFFIXES = (".yaml", ".yml")
_ZIP_SUFFIXES = (".charx", ".zip")


def parse_card(data: bytes, filename: str) -> Card:
    """The normalized card in `data`; `filename` gives text cards their name and the card its stem."""
    if len(data) > MAX_FILE_BYTES:
        raise CardError(f"the file is too large ({len(data) / MIB:.1f} MiB; the limit is {MAX_FILE_BYTES // MIB} MiB)")
    try:
        card = _parse(data, filename)
    except RecursionError:
        raise CardError("the card is nested too deeply") from None
    card.stem = PurePath(filename.replace("\\", "/")).stem if filename else ""
    return card


def _parse(data: bytes, filename: str) -> Card:
    suffix = PurePath(filename.replace("\\", "/")).suffix.lower() if filename else ""
    if png.is_png(data):
        return _from_png(data)
    if charx.is_zip(data):
        return _from_charx(data)
    if suffix == ".png":
        raise CardError("the file is named .png but is not a PNG image")
    if suffix in _ZIP_SUFFIXES:
        raise CardError(f"the file is named {suffix} but is not a zip archive")
    text = decode_text(data)
    if suffix in _YAML_SUFFIXES:
        return _with_container(card_from_value(load_yaml(text)), suffix="_yaml")
    return _from_text(text, filename, strict_json=suffix == ".json")


def _from_text(text: str, filename: str, strict_json: bool) -> Card:
    """JSON when it looks like JSON; a text card starting with '[' (W++, PList) that is not JSON stays text."""
    stripped = text.lstrip()
    if stripped.startswith("{") or (strict_json and stripped):
        return card_from_value(load_json(text))
    if stripped.startswith("["):
        try:
            value = load_json(text)
        except CardError:
            return card_from_text(text, filename)
        return card_from_value(value)
    return card_from_text(text, filename)


def _from_png(data: bytes) -> Card:
    card_json, image = png.card_json_from_png(data)
    what = "the PNG's card data"
    card = card_from_value(load_json(decode_text(card_json.encode("utf-8"), what), what))
    card.avatar = image
    return _with_container(card, prefix="png_")


def _from_charx(data: bytes) -> Card:
    archive, raw = charx.card_json_from_charx(data)
    with archive:
        card = card_from_value(load_json(decode_text(raw, "card.json"), "card.json"))
        icon_path = charx.main_icon_path(card.assets)
        if icon_path:
            card.avatar = _charx_avatar(archive, icon_path)
    return _with_container(card, prefix="charx_")


def _charx_avatar(archive: zipfile.ZipFile, icon_path: str) -> bytes | None:
    """The main icon when it is a PNG; other image types stay in the archive (Card.avatar holds PNG bytes only)."""
    icon = charx.read_icon(archive, icon_path)
    if not png.is_png(icon):
        return None
    try:
        return png.check_png(icon)
    except CardError as error:
        raise CardError(f"the CHARX icon {icon_path}: {error}") from None


def _with_container(card: Card, prefix: str = "", suffix: str = "") -> Card:
    card.source_format = f"{prefix}{card.source_format}{suffix}"
    return card
