"""Cards on disk: one file, a directory of them, and finding one by name."""
from __future__ import annotations

import stat
from importlib import resources
from pathlib import Path
from typing import Sequence

from bot.cards.errors import CardError
from bot.cards.formats import parse_card
from bot.cards.limits import MAX_AVATAR_BYTES, MAX_FILE_BYTES, MAX_TEXT_BYTES, MIB
from bot.cards.model import Card
from bot.cards.png import check_png

CARD_SUFFIXES = (".json", ".png", ".charx", ".yaml", ".yml", ".txt")
_TEXT_SUFFIXES = (".json", ".yaml", ".yml", ".txt")  # capped at the text limit before they are read
_SELF_CONTAINED = ("png_", "charx_")  # formats that carry their own avatar


def sample_cards_dir() -> Path:
    """The sample characters shipped inside the package (package data, so `pip install` users have them too)."""
    return Path(str(resources.files("bot.cards") / "samples"))


def read_capped(path: Path, limit: int, what: str = "file") -> bytes:
    """The file's bytes, refused by its size before reading and again if it grew past the cap while being read."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise CardError(f"{what} is not a regular file")
        if info.st_size > limit:
            raise CardError(f"{what} is too large ({info.st_size / MIB:.1f} MiB; the limit is {limit // MIB} MiB)")
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise CardError(f"{what} does not exist") from None
    except OSError as error:
        raise CardError(f"{what} cannot be read: {error.strerror or error}") from None
    if len(data) > limit:
        raise CardError(f"{what} is too large (over {limit // MIB} MiB)")
    return data


def load_card_file(path: str | Path) -> Card:
    """A card from disk. Text and JSON cards take their avatar from NAME.png beside them (the file stem or the
    character's name), the original web UI's convention."""
    path = Path(path)
    limit = MAX_TEXT_BYTES if path.suffix.lower() in _TEXT_SUFFIXES else MAX_FILE_BYTES
    card = parse_card(read_capped(path, limit), path.name)
    if not carries_own_avatar(card):
        avatar_path = sibling_avatar(path, card)
        if avatar_path is not None:
            card.avatar = _read_avatar(avatar_path)
    return card


def carries_own_avatar(card: Card) -> bool:
    return card.source_format.startswith(_SELF_CONTAINED)


def sibling_avatar(path: Path, card: Card) -> Path | None:
    for stem in (path.stem, card.name):
        if stem and "/" not in stem and "\\" not in stem and not stem.startswith("."):
            candidate = path.with_name(f"{stem}.png")
            if candidate != path and candidate.is_file():
                return candidate
    return None


def _read_avatar(path: Path) -> bytes:
    try:
        return check_png(read_capped(path, MAX_AVATAR_BYTES, "the avatar"))
    except CardError as error:
        raise CardError(f"avatar {path.name}: {error}") from None


def scan_directory(path: str | Path) -> tuple[list[tuple[Card, Path]], list[tuple[Path, str]]]:
    """Every card in a directory (not recursive), and one error line per file refused; never raises for one file.
    A PNG named like a text card (its stem or its character) is that card's avatar, not a card."""
    directory = Path(path)
    if not directory.is_dir():
        return [], [(directory, "not a directory")]
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in CARD_SUFFIXES and not p.name.startswith("."))
    cards: list[tuple[Card, Path]] = []
    errors: list[tuple[Path, str]] = []
    text_files = [p for p in files if p.suffix.lower() != ".png"]
    _load_each(text_files, cards, errors)
    avatar_stems = {p.stem for p in text_files} | {card.name for card, _ in cards}
    _load_each([p for p in files if p.suffix.lower() == ".png" and p.stem not in avatar_stems], cards, errors)
    cards.sort(key=lambda pair: pair[1].name)
    return cards, errors


def _load_each(files: list[Path], cards: list[tuple[Card, Path]], errors: list[tuple[Path, str]]) -> None:
    for file in files:
        try:
            cards.append((load_card_file(file), file))
        except CardError as error:
            errors.append((file, str(error)))
        except Exception as error:  # one bad file must not stop the bot from starting
            errors.append((file, f"unexpected {type(error).__name__} while reading the card: {error}"))


def find_card(cards: Sequence[Card], name: str) -> Card | None:
    """The card whose name matches case-insensitively, else the one whose file stem does."""
    wanted = name.strip().casefold()
    if not wanted:
        return None
    for card in cards:
        if card.name.casefold() == wanted:
            return card
    return next((card for card in cards if card.stem and card.stem.casefold() == wanted), None)
